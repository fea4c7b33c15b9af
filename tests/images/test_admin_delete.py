"""Deleting reviewed images: Leads (and superusers) may, after a confirmation that lists
what goes with them; the admin log records it; Reviewers and Uploaders may not."""

import pytest
from django.contrib.admin.models import DELETION, LogEntry
from django.urls import reverse

from images.models import Image
from predictions.models import Label, Prediction, Review
from predictions.services.reviews import review_submit
from tests.predictions.conftest import (  # noqa: F401 (fixtures)
    image_factory,
    prediction_factory,
    stub_model_version_factory,
)


@pytest.fixture
def reviewed_image(prediction_factory, reviewer):
    prediction = prediction_factory(label="circle", name="reviewed.jpg")
    review_submit(
        image=prediction.image, reviewer=reviewer, label=Label.objects.get(name="star"), prediction=prediction
    )
    return prediction.image


@pytest.mark.parametrize("who", ["lead", "superuser"])
def test_a_reviewed_image_is_deleted_with_its_predictions_and_reviews(request, client_for, reviewed_image, who):
    client = client_for(request.getfixturevalue(who))
    url = reverse("admin:images_image_delete", args=[reviewed_image.pk])

    page = client.get(url)

    assert page.status_code == 200
    assert not page.context["perms_lacking"]
    summary = dict(page.context["model_count"])
    assert (summary["images"], summary["predictions"], summary["reviews"]) == (1, 1, 1)
    assert "Yes, I’m sure" in page.content.decode()

    response = client.post(url, {"post": "yes"})

    assert response.status_code == 302
    assert not Image.objects.filter(pk=reviewed_image.pk).exists()
    assert not Review.objects.exists() and not Prediction.objects.exists()
    entry = LogEntry.objects.get(action_flag=DELETION)
    assert (entry.object_id, entry.object_repr) == (str(reviewed_image.pk), "reviewed.jpg")


def test_the_delete_action_takes_reviewed_images_too(client_for, lead, reviewed_image, image_factory):
    other = image_factory()
    data = {"action": "delete_selected", "_selected_action": [reviewed_image.pk, other.pk]}
    client = client_for(lead)

    confirmation = client.post(reverse("admin:images_image_changelist"), data)
    assert confirmation.status_code == 200 and not confirmation.context["perms_lacking"]
    client.post(reverse("admin:images_image_changelist"), {**data, "post": "yes"})

    assert not Image.objects.exists()
    assert LogEntry.objects.filter(action_flag=DELETION).count() == 2


@pytest.mark.parametrize("who", ["reviewer", "uploader"])
def test_reviewers_and_uploaders_still_cannot_delete(request, client_for, reviewed_image, who):
    client = client_for(request.getfixturevalue(who))
    url = reverse("admin:images_image_delete", args=[reviewed_image.pk])

    assert client.get(url).status_code == 403
    assert client.post(url, {"post": "yes"}).status_code == 403
    client.post(
        reverse("admin:images_image_changelist"),
        {"action": "delete_selected", "_selected_action": [reviewed_image.pk], "post": "yes"},
    )
    assert Image.objects.filter(pk=reviewed_image.pk).exists() and Review.objects.exists()
