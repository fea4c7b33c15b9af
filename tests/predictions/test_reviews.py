"""Decisions and their history: review services, grid labeling actions, the Review admin, the dashboard."""

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from images.models import Image
from predictions.models import Label, Review
from predictions.services.reviews import review_submit, review_undo

CHANGELIST = "admin:images_image_changelist"


# --- services ------------------------------------------------------------------


def test_submit_records_who_what_and_whether_the_model_agreed(reviewer, prediction_factory):
    prediction = prediction_factory(label="star", confidence=0.8)
    circle = Label.objects.get(name="circle")

    review = review_submit(image=prediction.image, reviewer=reviewer, label=circle, prediction=prediction, seconds_spent=3)

    assert (review.agreed, review.source, review.seconds_spent) == (False, Review.Source.SCREEN, 3)
    image = Image.objects.get(pk=prediction.image_id)
    assert (image.final_label, image.reviewed_by, image.review_count) == (circle, reviewer, 1)


@pytest.mark.parametrize("seconds", [float("inf"), float("-inf"), float("nan")])
def test_a_decision_with_a_non_finite_time_is_refused(reviewer, prediction_factory, seconds):
    """The review screen sends 'seconds' as text, and float("inf") parses."""
    from django.core.exceptions import ValidationError

    from predictions.services.reviews import review_decide

    prediction = prediction_factory(label="star", confidence=0.8)
    circle = Label.objects.get(name="circle")

    with pytest.raises(ValidationError, match="finite"):
        review_submit(image=prediction.image, reviewer=reviewer, label=circle, seconds_spent=seconds)
    with pytest.raises(ValidationError, match="finite"):
        review_decide(reviewer=reviewer, image_id=prediction.image_id, label_id=circle.pk, seconds_spent=seconds)

    assert not Review.objects.exists()
    assert Image.objects.get(pk=prediction.image_id).final_label is None


def test_the_current_label_is_the_latest_live_review(reviewer, second_reviewer, prediction_factory):
    prediction = prediction_factory(label="star")
    star, cross = Label.objects.get(name="star"), Label.objects.get(name="cross")
    first = review_submit(image=prediction.image, reviewer=reviewer, label=star, prediction=prediction)
    second = review_submit(image=prediction.image, reviewer=second_reviewer, label=cross, prediction=prediction)
    assert Image.objects.get(pk=prediction.image_id).final_label == cross

    review_undo(review=second)

    image = Image.objects.get(pk=prediction.image_id)
    assert (image.final_label, image.reviewed_by, image.review_count) == (star, reviewer, 1)
    assert Review.objects.filter(image=prediction.image).count() == 2  # history kept
    review_undo(review=first)
    assert Image.objects.get(pk=prediction.image_id).final_label is None


# --- grid labeling actions on the image changelist ---------------------------------


def post_action(client, action: str, images, **extra):
    data = {"action": action, ACTION_CHECKBOX_NAME: [image.pk for image in images], "index": 0, **extra}
    return client.post(reverse(CHANGELIST), data)


def test_set_label_asks_first_listing_the_images(client_for, reviewer, prediction_factory):
    predictions = [prediction_factory(name=f"grid{n}.jpg") for n in range(3)]
    images = [p.image for p in predictions]

    response = post_action(client_for(reviewer), "set_label", images)

    assert response.status_code == 200
    content = response.content.decode()
    assert "Set label" in content and "grid0.jpg" in content and "grid2.jpg" in content
    for image in images:
        assert f'name="{ACTION_CHECKBOX_NAME}" value="{image.pk}"' in content
    assert 'name="apply"' in content
    assert Review.objects.count() == 0


def test_set_label_applies_to_every_selected_image_as_grid_reviews(client_for, reviewer, prediction_factory):
    predictions = [prediction_factory(name=f"grid{n}.jpg", label="circle") for n in range(3)]
    square = Label.objects.get(name="square")
    client = client_for(reviewer)

    # The confirmation page posts back without "index", as Django's delete confirmation does.
    response = client.post(
        reverse(CHANGELIST),
        {
            "action": "set_label",
            ACTION_CHECKBOX_NAME: [p.image_id for p in predictions[:2]],
            "apply": "yes",
            "label": square.pk,
        },
        follow=True,
    )

    assert response.status_code == 200
    assert "Labelled 2 image(s)" in response.content.decode()
    reviews = Review.objects.all()
    assert len(reviews) == 2
    assert {(r.label, r.source, r.reviewer, r.agreed) for r in reviews} == {(square, "grid", reviewer, False)}
    assert {r.prediction_id for r in reviews} == {p.pk for p in predictions[:2]}
    assert Image.objects.filter(final_label=square).count() == 2


def test_set_label_without_a_choice_asks_again(client_for, reviewer, prediction_factory):
    image = prediction_factory().image
    response = post_action(client_for(reviewer), "set_label", [image], apply="yes")

    # With "index" in the post this is the changelist's first action submission again: the page reappears.
    assert response.status_code == 200 and b"Set label" in response.content
    assert Review.objects.count() == 0


def test_confirm_predictions_reports_images_without_one(client_for, reviewer, prediction_factory, image_factory):
    predicted = [prediction_factory(label="triangle"), prediction_factory(label="cross")]
    bare = image_factory(name="no-prediction.jpg")

    response = post_action(client_for(reviewer), "confirm_predictions", [p.image for p in predicted] + [bare])

    assert response.status_code == 302
    messages = [m.message for m in response.wsgi_request._messages]
    assert any("Confirmed 2 prediction(s)" in m for m in messages)
    assert any(m.startswith("1 selected image(s) have no prediction") for m in messages)
    reviews = Review.objects.order_by("id")
    assert sorted((r.label.name, r.agreed, r.source) for r in reviews) == [("cross", True, "grid"), ("triangle", True, "grid")]
    assert Image.objects.get(pk=bare.pk).final_label is None


def test_grid_actions_are_offered_only_to_reviewers(client_for, reviewer, uploader, prediction_factory):
    prediction_factory()
    reviewer_page = client_for(reviewer).get(reverse(CHANGELIST)).content.decode()
    uploader_page = client_for(uploader).get(reverse(CHANGELIST)).content.decode()

    assert 'value="set_label"' in reviewer_page and 'value="confirm_predictions"' in reviewer_page
    assert 'value="set_label"' not in uploader_page and 'value="confirm_predictions"' not in uploader_page


def test_uploader_cannot_run_grid_actions_by_posting(client_for, uploader, prediction_factory):
    image = prediction_factory().image
    post_action(client_for(uploader), "confirm_predictions", [image])
    assert Review.objects.count() == 0


# --- the Review admin (history) ------------------------------------------------


def test_review_changelist_lists_history_with_filters_and_no_edit_or_delete(
    client_for, reviewer, lead, prediction_factory
):
    prediction = prediction_factory(name="history.jpg")
    review = review_submit(image=prediction.image, reviewer=reviewer, label=prediction.label, prediction=prediction)
    review_undo(review=review)
    client = client_for(lead)

    response = client.get(reverse("admin:predictions_review_changelist"), {"q": "history"})

    assert response.status_code == 200
    content = response.content.decode()
    assert "history.jpg" in content and "Open the review screen" in content
    for filter_title in ("By reviewer", "By label", "By source", "By agreed", "By undone at"):
        assert filter_title in content
    assert 'value="delete_selected"' not in content
    assert client.get(reverse("admin:predictions_review_add")).status_code == 403
    assert client.post(reverse("admin:predictions_review_delete", args=[review.pk]), {"post": "yes"}).status_code == 403
    change = client.get(reverse("admin:predictions_review_change", args=[review.pk]))
    assert change.status_code == 200 and b'name="_save"' not in change.content
    undone = client.get(reverse("admin:predictions_review_changelist"), {"undone_at__isnull": "False"})
    assert "history.jpg" in undone.content.decode()


# --- the admin index dashboard --------------------------------------------------


def test_dashboard_counts_on_the_admin_index(client_for, lead, reviewer, prediction_factory, image_factory):
    agreed, disagreed, waiting = (prediction_factory(label="circle") for _ in range(3))
    image_factory()  # no prediction yet
    review_submit(image=agreed.image, reviewer=reviewer, label=agreed.label, prediction=agreed)
    review_submit(image=disagreed.image, reviewer=reviewer, label=Label.objects.get(name="star"), prediction=disagreed)

    response = client_for(lead).get(reverse("admin:index"))

    dashboard = response.context["dashboard"]
    assert (dashboard.images, dashboard.pending_predictions, dashboard.waiting_for_review, dashboard.reviewed) == (
        4,
        1,
        1,
        2,
    )
    assert dashboard.agreement_rate == 0.5
    assert dashboard.reviews_today == [{"reviewer__username": "reviewer", "count": 2}]
    content = response.content.decode()
    assert "Labeling at a glance" in content and "50%" in content
    # Above the app list, which the admin's own index still renders.
    assert content.index("Labeling at a glance") < content.index('class="app-images')


@pytest.mark.parametrize("extra", [0, 30])
def test_dashboard_query_count_does_not_grow(client_for, lead, reviewer, prediction_factory, extra):
    from predictions.selectors.dashboard import review_dashboard

    for _ in range(extra):
        prediction = prediction_factory()
        review_submit(image=prediction.image, reviewer=reviewer, label=prediction.label, prediction=prediction)
    with CaptureQueriesContext(connection) as queries:
        review_dashboard()
    assert len(queries) <= 8


def test_reviewer_sees_a_start_reviewing_link_uploader_does_not(client_for, reviewer, uploader):
    screen = reverse("admin:predictions_review_screen")
    assert screen in client_for(reviewer).get(reverse("admin:index")).content.decode()
    assert screen not in client_for(uploader).get(reverse("admin:index")).content.decode()
