"""What each role may do across the admin: Uploaders (add and view images), Reviewers
(view and review; no deleting images, no model versions), Leads (everything).

Pages are addressed by URL name, whichever engineer's module serves them.
"""

import pytest
from django.urls import reverse

from images.models import Image
from predictions.models import Review

ROLES = ["uploader", "reviewer", "lead"]

# page (URL name) -> roles that may open it; the others get 403.
PAGES = {
    "admin:images_image_changelist": {"uploader", "reviewer", "lead"},
    "admin:images_image_upload": {"uploader", "lead"},
    "admin:predictions_review_screen": {"reviewer", "lead"},
    "admin:predictions_review_changelist": {"reviewer", "lead"},
    "admin:predictions_modelversion_changelist": {"lead"},
    "admin:predictions_modelversion_add": {"lead"},
    "admin:images_image_export": {"lead"},
    "admin:predictions_review_import": {"lead"},
}

REVIEW_ENDPOINTS = ["next", "decide", "skip", "undo"]


@pytest.fixture
def users(uploader, reviewer, lead):
    return {"uploader": uploader, "reviewer": reviewer, "lead": lead}


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("page", sorted(PAGES))
def test_pages_per_role(client_for, users, prediction_factory, role, page):
    prediction_factory()
    response = client_for(users[role]).get(reverse(page))
    expected = 200 if role in PAGES[page] else 403
    assert response.status_code == expected, f"{role} on {page}"


@pytest.mark.parametrize("role", ROLES)
def test_deleting_an_image_is_for_leads_only(client_for, users, prediction_factory, role):
    image = prediction_factory().image
    client = client_for(users[role])
    delete = reverse("admin:images_image_delete", args=[image.pk])

    page = client.get(delete)
    response = client.post(delete, {"post": "yes"})

    if role == "lead":
        assert page.status_code == 200 and response.status_code == 302
        assert not Image.objects.filter(pk=image.pk).exists()
    else:
        assert page.status_code == 403 and response.status_code == 403
        assert Image.objects.filter(pk=image.pk).exists()


@pytest.mark.parametrize("role", ROLES)
def test_delete_action_is_offered_to_leads_only(client_for, users, prediction_factory, role):
    prediction_factory()
    content = client_for(users[role]).get(reverse("admin:images_image_changelist")).content.decode()
    assert ('value="delete_selected"' in content) == (role == "lead")


@pytest.mark.parametrize("role", ROLES)
def test_review_endpoints_per_role(client_for, users, prediction_factory, role):
    prediction = prediction_factory()
    client = client_for(users[role])
    data = {"count": 1, "image": prediction.image_id, "label": "confirm"}

    codes = {name: client.post(reverse(f"admin:predictions_review_{name}"), data).status_code for name in REVIEW_ENDPOINTS}

    if role == "uploader":
        assert set(codes.values()) == {403}
        assert Review.objects.count() == 0
    else:
        assert codes["next"] == codes["decide"] == codes["skip"] == 200
        assert codes["undo"] == 200  # the decision just made
        assert Review.objects.get().undone_at is not None


@pytest.mark.parametrize("role", ROLES)
def test_model_version_changes_are_for_leads_only(client_for, users, stub_model_version_factory, role):
    version = stub_model_version_factory("roles-v1", active=False)
    client = client_for(users[role])

    change = client.get(reverse("admin:predictions_modelversion_change", args=[version.pk]))
    delete = client.post(reverse("admin:predictions_modelversion_delete", args=[version.pk]), {"post": "yes"})

    if role == "lead":
        assert change.status_code == 200 and delete.status_code == 302
    else:
        assert change.status_code == 403 and delete.status_code == 403


def test_export_action_is_offered_to_leads_only(client_for, users, prediction_factory):
    prediction_factory()
    for role in ROLES:
        content = client_for(users[role]).get(reverse("admin:images_image_changelist")).content.decode()
        assert ('value="export_admin_action"' in content) == (role == "lead"), role


def test_staff_without_a_role_and_anonymous_users_cannot_review(client, client_for, django_user_model, prediction_factory):
    prediction_factory()
    nobody = django_user_model.objects.create_user(username="nobody", password="pw-for-tests-only", is_staff=True)
    screen = reverse("admin:predictions_review_screen")
    next_url = reverse("admin:predictions_review_next")

    assert client_for(nobody).get(screen).status_code == 403
    assert client_for(nobody).post(next_url).status_code == 403
    anonymous = client.get(screen)
    assert anonymous.status_code == 302 and reverse("admin:login") in anonymous["Location"]
    assert client.post(next_url).status_code == 302
    assert not Image.objects.filter(claimed_by__isnull=False).exists()


# changelist (URL name) -> its actions that queue a prediction job: one rule for all of them.
PREDICT_ACTIONS = {
    "admin:images_image_changelist": ["retry_image_predictions", "repredict_images"],
    "admin:images_uploadbatch_changelist": ["retry_batch_predictions", "repredict_batches"],
    "admin:predictions_predictionjob_changelist": ["retry_failed_images_of_jobs"],
    "admin:predictions_predictionfailure_changelist": ["retry_selected_failures"],
}


@pytest.mark.parametrize("role", ROLES)
def test_queueing_predictions_is_offered_to_leads_only_on_every_list(client_for, users, prediction_factory, role):
    from images.models import UploadBatch
    from predictions.models import PredictionFailure, PredictionJob

    batch = UploadBatch.objects.create(name="roles")
    prediction = prediction_factory(batch=batch)
    job = PredictionJob.objects.create(model_version=prediction.model_version, batch=batch, total=1)
    PredictionFailure.objects.create(image=prediction.image, model_version=prediction.model_version, job=job, message="x")
    client = client_for(users[role])

    for page, actions in PREDICT_ACTIONS.items():
        response = client.get(reverse(page))
        content = response.content.decode() if response.status_code == 200 else ""
        for action in actions:
            assert (f'value="{action}"' in content) == (role == "lead"), (role, page, action)
