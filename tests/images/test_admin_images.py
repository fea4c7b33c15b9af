"""The Image changelist and change page: active-version predictions, status, filters, bounded queries."""

import pytest
from django.core.files.storage import default_storage
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from images.models import Image
from predictions.models import Label, ModelVersion, Prediction, PredictionFailure, Review
from tests.conftest import DEMO_CLASSES

from .conftest import tiny_png

pytestmark = pytest.mark.django_db
CHANGELIST = "/admin/images/image/"


@pytest.fixture
def images(upload, uploader):
    """images(n) -> n stored images of one batch."""

    def create(count: int, *, start: int = 0):
        batch = upload([(f"img-{i:04d}.png", tiny_png(i)) for i in range(start, start + count)], user=uploader)
        return list(Image.objects.filter(batch=batch).order_by("pk"))

    return create


def make_version(name: str, *, active: bool = True) -> ModelVersion:
    """A version row without a checkpoint file: the admin pages only read its rows."""
    for order, class_name in enumerate(DEMO_CLASSES):
        Label.objects.get_or_create(name=class_name, defaults={"order": order})
    return ModelVersion.objects.create(
        name=name,
        checkpoint=f"{name}.pth",
        class_names=list(DEMO_CLASSES),
        is_active=active,
        validation_status=ModelVersion.Validation.VALID,
    )


def predict(image, version, label_name: str, confidence: float) -> Prediction:
    names = version.class_names
    rest = (1 - confidence) / (len(names) - 1)
    probabilities = [confidence if name == label_name else rest for name in names]
    return Prediction.objects.create(
        image=image,
        model_version=version,
        label=Label.objects.get(name=label_name),
        confidence=confidence,
        margin=confidence - rest,
        probabilities=probabilities,
    )


def review(image, reviewer, label_name: str, *, undone: bool = False) -> Review:
    label = Label.objects.get(name=label_name)
    row = Review.objects.create(
        image=image, reviewer=reviewer, label=label, undone_at=timezone.now() if undone else None
    )
    if not undone:
        Image.objects.filter(pk=image.pk).update(
            final_label=label, reviewed_by=reviewer, reviewed_at=timezone.now(), review_count=1
        )
    return row


def populate(images, version, old_version, reviewer):
    """A mix of every status, thumbnails on half of them, an older version's predictions too."""
    for number, image in enumerate(images):
        if number % 2:
            Image.objects.filter(pk=image.pk).update(thumbnail=f"thumbnails/x/{image.sha256}.jpg")
        predict(image, old_version, "square", 0.5)
        kind = number % 4
        if kind == 1:
            predict(image, version, "circle", 0.9)
        elif kind == 2:
            PredictionFailure.objects.create(image=image, model_version=version, message="decode failed")
        elif kind == 3:
            predict(image, version, "star", 0.7)
            review(image, reviewer, "cross")


def changelist_queries(client, url=CHANGELIST) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200
    return len(queries)


def test_changelist_query_count_does_not_grow_with_rows(
    images, client_for, reviewer, lead
):
    old_version = make_version("old", active=False)
    version = make_version("current")
    client = client_for(lead)

    populate(images(5), version, old_version, reviewer)
    few = changelist_queries(client)
    populate(images(45, start=100), version, old_version, reviewer)
    many = changelist_queries(client)

    assert few == many
    assert many <= 15
    filtered = changelist_queries(client, CHANGELIST + "?status=predicted&q=img")
    assert filtered == many


def test_changelist_shows_the_active_versions_prediction_and_status(
    images, client_for, reviewer
):
    old_version = make_version("old", active=False)
    version = make_version("current")
    pending, predicted, failed, reviewed = images(4)
    Image.objects.filter(pk=predicted.pk).update(thumbnail="thumbnails/ab/cd/thumb.jpg")
    for image in (pending, predicted, failed, reviewed):
        predict(image, old_version, "square", 0.55)
    predict(predicted, version, "circle", 0.91)
    PredictionFailure.objects.create(image=failed, model_version=version, message="decode failed")
    predict(reviewed, version, "star", 0.7)
    review(reviewed, reviewer, "cross")

    response = client_for(reviewer).get(CHANGELIST)
    rows = {image.original_name: image for image in response.context["cl"].result_list}
    assert rows[pending.original_name].review_status == "pending"
    assert rows[predicted.original_name].review_status == "predicted"
    assert rows[failed.original_name].review_status == "failed"
    assert rows[reviewed.original_name].review_status == "reviewed"
    assert rows[predicted.original_name].predicted_label_name == "circle"  # not the old version's "square"
    assert rows[pending.original_name].predicted_label_name is None
    html = response.content.decode()
    assert "91%" in html and "Prediction failed" in html
    assert 'src="/media/thumbnails/ab/cd/thumb.jpg"' in html
    assert 'title="Thumbnail not made yet"' in html  # placeholder for the others


@pytest.mark.parametrize(
    "query, expected",
    [
        ("status=pending", {"img-0000.png"}),
        ("status=predicted", {"img-0001.png"}),
        ("status=failed", {"img-0002.png"}),
        ("status=reviewed", {"img-0003.png"}),
        ("predicted_label={circle}", {"img-0001.png"}),
        ("predicted_label={square}", set()),  # only the old version predicted squares
        ("final_label__id__exact={cross}", {"img-0003.png"}),
        ("model_version={old}", {"img-0000.png", "img-0001.png", "img-0002.png", "img-0003.png"}),
        ("model_version={current}", {"img-0001.png", "img-0003.png"}),
        ("q=img-0002", {"img-0002.png"}),
        ("q={sha}", {"img-0001.png"}),
    ],
)
def test_changelist_filters_and_search(images, client_for, reviewer, query, expected):
    old_version = make_version("old", active=False)
    version = make_version("current")
    pending, predicted, failed, reviewed = images(4)
    images(1, start=50)  # another batch
    for image in (pending, predicted, failed, reviewed):
        predict(image, old_version, "square", 0.55)
    predict(predicted, version, "circle", 0.91)
    PredictionFailure.objects.create(image=failed, model_version=version, message="decode failed")
    predict(reviewed, version, "star", 0.7)
    review(reviewed, reviewer, "cross")

    labels = dict(Label.objects.values_list("name", "pk"))
    url = CHANGELIST + "?" + query.format(
        old=old_version.pk, current=version.pk, sha=predicted.sha256, **labels
    ) + f"&batch={pending.batch_id}"
    response = client_for(reviewer).get(url)
    assert response.status_code == 200
    assert {image.original_name for image in response.context["cl"].result_list} == expected


def test_changelist_sorts_by_the_active_versions_confidence(images, client_for, reviewer):
    old_version = make_version("old", active=False)
    version = make_version("current")
    unsure, sure, unpredicted = images(3)
    predict(unsure, version, "circle", 0.4)
    predict(sure, version, "star", 0.9)
    predict(unpredicted, old_version, "square", 0.99)  # not the active version: no confidence shown

    response = client_for(reviewer).get(CHANGELIST + "?o=-4")  # the confidence column, descending

    names = [image.original_name for image in response.context["cl"].result_list]
    # Where the image without a confidence goes (first or last) is the database's choice.
    assert [name for name in names if name != unpredicted.original_name] == [sure.original_name, unsure.original_name]
    assert len(names) == 3


def test_change_page_shows_image_predictions_failure_and_review_history(
    images, client_for, reviewer, second_reviewer
):
    old_version = make_version("old", active=False)
    version = make_version("current")
    (image,) = images(1)
    predict(image, old_version, "square", 0.6)
    predict(image, version, "circle", 0.8)
    PredictionFailure.objects.create(image=image, model_version=old_version, message="img-0000.png: truncated")
    review(image, reviewer, "star", undone=True)
    review(image, second_reviewer, "circle")

    response = client_for(reviewer).get(f"/admin/images/image/{image.pk}/change/")
    html = response.content.decode()
    assert response.status_code == 200
    assert f'src="/media/{image.file.name}"' in html
    assert "current</strong> (active)" in html and "old</strong>" in html
    assert "width: 80.0%" in html and "width: 60.0%" in html  # top-k bars
    assert "img-0000.png: truncated" in html
    assert "line-through" in html  # the undone review is still in the history
    assert html.count("<td>reviewer</td>") == 1 and html.count("<td>reviewer2</td>") == 1
    assert image.sha256 in html


def test_reviewer_can_view_but_not_delete_images(images, client_for, reviewer, lead):
    (image,) = images(1)
    client = client_for(reviewer)
    assert client.get(f"/admin/images/image/{image.pk}/change/").status_code == 200
    assert client.get(f"/admin/images/image/{image.pk}/delete/").status_code == 403
    response = client.post(CHANGELIST, {"action": "delete_selected", "_selected_action": [image.pk], "post": "yes"})
    assert Image.objects.filter(pk=image.pk).exists()
    actions = [name for name, _ in client.get(CHANGELIST).context["action_form"].fields["action"].choices]
    assert "delete_selected" not in actions
    assert response.status_code in (200, 302)
    assert "delete_selected" in [
        name for name, _ in client_for(lead).get(CHANGELIST).context["action_form"].fields["action"].choices
    ]


def test_retry_failed_predictions_of_selected_images(
    images, client_for, lead, active_model_version, django_capture_on_commit_callbacks
):
    failed, fine = images(2)
    PredictionFailure.objects.create(image=failed, model_version=active_model_version, message="worker died")

    with django_capture_on_commit_callbacks(execute=True):
        response = client_for(lead).post(
            CHANGELIST, {"action": "retry_image_predictions", "_selected_action": [failed.pk, fine.pk]}
        )
    assert response.status_code == 302
    assert not PredictionFailure.objects.exists()
    assert Prediction.objects.filter(image=failed, model_version=active_model_version).exists()


def test_only_leads_queue_predictions_from_the_list(images, client_for, uploader, reviewer, lead):
    """Retrying and predicting again queue a prediction job (predictions.add_predictionjob: Leads)."""
    images(1)
    for user, offered in ((uploader, False), (reviewer, False), (lead, True)):
        action_form = client_for(user).get(CHANGELIST).context["action_form"]  # None: no action at all
        actions = [name for name, _ in action_form.fields["action"].choices] if action_form else []
        assert ("retry_image_predictions" in actions) == offered, user
        assert ("repredict_images" in actions) == offered, user


def test_changelist_add_button_is_the_upload_page(images, client_for, uploader, reviewer):
    images(1)
    assert 'href="/admin/images/image/upload/" class="addlink">Upload images' in client_for(uploader).get(CHANGELIST).content.decode()
    assert "Upload images" not in client_for(reviewer).get(CHANGELIST).content.decode()


def test_lead_can_delete_unreviewed_images_and_their_files(
    images, client_for, lead, django_capture_on_commit_callbacks
):
    first, second = images(2)
    predict(first, make_version("current"), "circle", 0.9)
    with django_capture_on_commit_callbacks(execute=True):
        response = client_for(lead).post(
            CHANGELIST, {"action": "delete_selected", "_selected_action": [first.pk, second.pk], "post": "yes"}
        )
    assert response.status_code == 302
    assert not Image.objects.exists()
    assert not default_storage.exists(first.file.name) and not default_storage.exists(second.file.name)


def test_status_without_an_active_version(images, client_for, reviewer):
    pending, reviewed = images(2)
    make_version("retired", active=False)
    review(reviewed, reviewer, "cross")
    client = client_for(reviewer)
    names = lambda status: {i.original_name for i in client.get(f"{CHANGELIST}?status={status}").context["cl"].result_list}  # noqa: E731
    assert names("pending") == {pending.original_name}
    assert names("reviewed") == {reviewed.original_name}
    assert names("predicted") == names("failed") == set()
