"""Grid actions ("Set label…", "Confirm predictions") never overwrite a human label silently,
and each is one operation undone from its message, the image history or the operation list."""

import html
import re
from datetime import timedelta

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.urls import reverse
from django.utils import timezone

from images.models import Image
from predictions.models import Label, LabelOperation, Review
from predictions.services.reviews import review_submit

def changelist() -> str:
    return reverse("admin:images_image_changelist")


def apply_set_label(client, images, label, **extra):
    """The confirmation page's post (no "index"), as the browser sends it."""
    data = {"action": "set_label", ACTION_CHECKBOX_NAME: [i.pk for i in images], "apply": "yes", "label": label.pk}
    return client.post(changelist(), {**data, **extra})


def messages_of(response) -> list[str]:
    """The messages as text (links kept as markup, entities decoded)."""
    return [html.unescape(str(m.message)) for m in response.wsgi_request._messages]


def undo_link(message: str) -> str:
    match = re.search(r'href="([^"]+)"[^>]*>Undo<', message)
    assert match, message
    return match.group(1)


@pytest.fixture
def labels(stub_model_version_factory):
    stub_model_version_factory()
    return {label.name: label for label in Label.objects.all()}


@pytest.fixture
def mixed(image_factory, labels, second_reviewer):
    """Four images: free, reviewed by someone else, open on someone's review screen, gold."""
    reviewed = image_factory(name="reviewed.jpg")
    review_submit(image=reviewed, reviewer=second_reviewer, label=labels["star"])
    return {
        "free": image_factory(name="free.jpg"),
        "reviewed": reviewed,
        "claimed": image_factory(
            name="claimed.jpg", claimed_by=second_reviewer, claimed_until=timezone.now() + timedelta(minutes=5)
        ),
        "gold": image_factory(name="gold.jpg", is_gold=True),
    }


def final_labels(images) -> dict[str, str | None]:
    return {
        name: (Image.objects.get(pk=image.pk).final_label.name if Image.objects.get(pk=image.pk).final_label else None)
        for name, image in images.items()
    }


# --- Set label… -------------------------------------------------------------------


def test_set_label_changes_only_free_images_and_says_what_it_skipped(client_for, reviewer, mixed, labels):
    response = apply_set_label(client_for(reviewer), mixed.values(), labels["square"])

    assert response.status_code == 302
    [message] = messages_of(response)
    assert "Labelled 1 image(s) “square”; 3 skipped" in message
    # Claimed and gold are one reason to a reviewer: which images are gold is not theirs to know.
    for reason in ("1 already reviewed", "2 reserved for the review screen"):
        assert reason in message
    assert "gold" not in message
    assert final_labels(mixed) == {"free": "square", "reviewed": "star", "claimed": None, "gold": None}
    operation = LabelOperation.objects.get()
    assert (operation.kind, operation.image_count, operation.created_by) == (LabelOperation.Kind.GRID_SET, 1, reviewer)
    assert undo_link(message).startswith(reverse("admin:predictions_labeloperation_undo", args=[operation.pk]))


def test_a_reviewer_cannot_overwrite_even_by_posting_the_option(client_for, reviewer, mixed, labels):
    client = client_for(reviewer)
    page = client.post(changelist(), {"action": "set_label", ACTION_CHECKBOX_NAME: [mixed["reviewed"].pk], "index": 0})
    assert 'name="overwrite"' not in page.content.decode()

    apply_set_label(client, [mixed["reviewed"]], labels["square"], overwrite="on", overwrite_confirmed="yes")

    assert final_labels({"reviewed": mixed["reviewed"]}) == {"reviewed": "star"}


def test_a_lead_sees_old_to_new_before_overwriting_then_undo_restores(client_for, lead, mixed, labels):
    client = client_for(lead)
    first = client.post(
        changelist(), {"action": "set_label", ACTION_CHECKBOX_NAME: [i.pk for i in mixed.values()], "index": 0}
    )
    assert "Also change images that already have a label" in first.content.decode()

    # Ticked: a page listing each labelled image old → new, and nothing changed yet.
    asked = apply_set_label(client, mixed.values(), labels["square"], overwrite="on")
    assert asked.status_code == 200
    [row] = asked.context["relabelled"]
    assert (row.name, row.old_label, row.reviewed_by, row.new_label) == ("reviewed.jpg", "star", "reviewer2", "square")
    content = asked.content.decode()
    assert "reviewed.jpg" in content and 'name="overwrite_confirmed"' in content
    assert "free.jpg" not in content.split("relabel-table")[1]  # only labelled images are listed
    assert not LabelOperation.objects.exists()

    done = apply_set_label(client, mixed.values(), labels["square"], overwrite="on", overwrite_confirmed="yes")

    [message] = messages_of(done)
    assert "Labelled 3 image(s) “square”; 1 skipped (1 gold image)" in message
    assert final_labels(mixed) == {"free": "square", "reviewed": "square", "claimed": "square", "gold": None}

    client.post(undo_link(message))
    assert final_labels(mixed) == {"free": None, "reviewed": "star", "claimed": None, "gold": None}
    reviewed = Image.objects.get(pk=mixed["reviewed"].pk)
    assert (reviewed.reviewed_by.username, reviewed.label_source, reviewed.review_count) == ("reviewer2", "screen", 1)


def test_a_lead_without_the_tick_is_held_to_the_default_rule(client_for, lead, mixed, labels):
    apply_set_label(client_for(lead), mixed.values(), labels["square"])
    assert final_labels(mixed) == {"free": "square", "reviewed": "star", "claimed": None, "gold": None}


def test_nothing_to_change_is_a_warning_without_undo(client_for, reviewer, mixed, labels):
    response = apply_set_label(client_for(reviewer), [mixed["reviewed"]], labels["square"])
    [message] = messages_of(response)
    assert message == "No image was labelled; 1 skipped (1 already reviewed)."


# --- Confirm predictions ---------------------------------------------------------------


@pytest.fixture
def predicted(prediction_factory, reviewer, second_reviewer):
    """Three predicted images: free (model: circle), reviewed 'star' by reviewer2 (model: circle), agreed one."""
    free = prediction_factory(label="circle", name="p-free.jpg")
    disputed = prediction_factory(label="circle", name="p-disputed.jpg")
    review_submit(image=disputed.image, reviewer=second_reviewer, label=Label.objects.get(name="star"))
    return {"free": free.image, "disputed": disputed.image}


def confirm(client, images, **extra):
    return client.post(
        changelist(), {"action": "confirm_predictions", ACTION_CHECKBOX_NAME: [i.pk for i in images], **extra}
    )


def test_confirm_by_a_reviewer_skips_reviewed_images(client_for, reviewer, predicted):
    response = confirm(client_for(reviewer), predicted.values(), index=0)

    assert response.status_code == 302
    [message] = messages_of(response)
    assert "Confirmed 1 prediction(s) of stub-v1; 1 skipped (1 already reviewed)" in message and ">Undo<" in message
    assert final_labels(predicted) == {"free": "circle", "disputed": "star"}
    review = Review.objects.get(operation__kind=LabelOperation.Kind.GRID_CONFIRM)
    assert (review.agreed, review.source, review.prediction.image_id) == (True, "grid", predicted["free"].pk)


def test_confirm_by_a_lead_asks_first_and_overwrites_only_when_ticked(client_for, lead, predicted):
    client = client_for(lead)
    asked = confirm(client, predicted.values(), index=0)
    assert asked.status_code == 200
    [row] = asked.context["relabelled"]
    assert (row.name, row.old_label, row.new_label) == ("p-disputed.jpg", "star", "circle")
    assert not LabelOperation.objects.exists()

    confirm(client, predicted.values(), apply="yes")  # not ticked: the default rule
    assert final_labels(predicted) == {"free": "circle", "disputed": "star"}

    done = confirm(client, predicted.values(), apply="yes", overwrite="on")
    assert final_labels(predicted) == {"free": "circle", "disputed": "circle"}
    client.post(undo_link(messages_of(done)[-1]))  # the earlier confirm's message was never shown
    assert final_labels(predicted) == {"free": "circle", "disputed": "star"}


# --- undo: who may, and from where ----------------------------------------------------


def test_undo_asks_on_get_and_undoes_on_post_for_its_author_or_a_lead(
    client_for, reviewer, second_reviewer, lead, image_factory, labels
):
    images = {"a": image_factory(), "b": image_factory()}
    message = messages_of(apply_set_label(client_for(reviewer), images.values(), labels["cross"]))[0]
    url = undo_link(message)
    operation = LabelOperation.objects.get()

    page = client_for(reviewer).get(url)
    assert page.status_code == 200 and b"Yes, undo it" in page.content
    assert final_labels(images) == {"a": "cross", "b": "cross"}  # a GET changes nothing
    assert client_for(second_reviewer).post(url).status_code == 403
    assert final_labels(images) == {"a": "cross", "b": "cross"}

    back = client_for(reviewer).post(url)
    assert back.status_code == 302 and back.url == changelist()  # back where the action was run
    assert final_labels(images) == {"a": None, "b": None}
    operation.refresh_from_db()
    assert operation.undone_by == reviewer and operation.undone_at is not None

    again = client_for(lead).post(url)
    assert any("undone already" in m for m in messages_of(again))


def test_a_lead_may_undo_anyones_operation_and_next_must_be_local(client_for, reviewer, lead, image_factory, labels):
    image = image_factory()
    apply_set_label(client_for(reviewer), [image], labels["cross"])
    url = reverse("admin:predictions_labeloperation_undo", args=[LabelOperation.objects.get().pk])

    response = client_for(lead).post(url + "?next=https://evil.example/")

    assert response.url == reverse("admin:predictions_labeloperation_changelist")
    assert Image.objects.get(pk=image.pk).final_label is None


def test_operations_list_and_image_history_link_the_undo(client_for, reviewer, lead, image_factory, labels):
    image = image_factory(name="history.jpg")
    apply_set_label(client_for(reviewer), [image], labels["cross"])
    operation = LabelOperation.objects.get()
    undo = reverse("admin:predictions_labeloperation_undo", args=[operation.pk])

    for user in (reviewer, lead):
        listing = client_for(user).get(reverse("admin:predictions_labeloperation_changelist"))
        assert listing.status_code == 200
        assert undo in listing.content.decode() and "Set label “cross” on 1 selected image(s)" in listing.content.decode()
        assert 'value="delete_selected"' not in listing.content.decode()
    history = client_for(lead).get(reverse("admin:images_image_change", args=[image.pk])).content.decode()
    assert f"{operation}" in history and undo in history

    client_for(lead).post(undo)
    listing = client_for(lead).get(reverse("admin:predictions_labeloperation_changelist")).content.decode()
    assert undo not in listing
