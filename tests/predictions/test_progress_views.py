"""Live progress (issue 17, item 5): the JSON views the batch, job and index pages poll, and the pages' script.

The browser test (tests/e2e/test_upload_progress.py) watches a real cluster move a batch page's bar.
"""

import pytest
from django.urls import reverse

pytestmark = pytest.mark.django_db

SCRIPT = "predictions/progress.js"


@pytest.fixture
def batch_with_images(image_factory, stub_model_version_factory, uploader):
    from images.models import UploadBatch

    version = stub_model_version_factory()
    batch = UploadBatch.objects.create(name="three", created_by=uploader, accepted_count=3)
    images = [image_factory(batch=batch) for _ in range(3)]
    return batch, images, version


def test_a_running_jobs_page_polls_its_progress_and_a_finished_ones_does_not(
    client_for, uploader, stub_model_version_factory
):
    from predictions.models import PredictionJob

    version = stub_model_version_factory()
    job = PredictionJob.objects.create(model_version=version, reason="upload", total=4, done=1, status="running")
    client = client_for(uploader)
    url = reverse("admin:predictions_predictionjob_progress", args=[job.pk])

    page = client.get(reverse("admin:predictions_predictionjob_change", args=[job.pk])).content.decode()
    assert SCRIPT in page and f'data-progress-url="{url}"' in page

    answer = client.get(url).json()
    assert answer["finished"] is False
    assert '<progress value="1" max="4"' in answer["fields"]["progress"] and "1 / 4" in answer["fields"]["progress"]
    assert answer["fields"]["status"] == "Running"
    assert set(answer["fields"]) == {"status", "progress", "error", "started_at", "finished_at"}

    PredictionJob.objects.filter(pk=job.pk).update(done=3, failed=1, status="done")
    answer = client.get(url).json()
    assert answer["finished"] is True
    assert "3 / 4 (1 failed)" in answer["fields"]["progress"] and answer["fields"]["status"] == "Done"
    page = client.get(reverse("admin:predictions_predictionjob_change", args=[job.pk])).content.decode()
    assert SCRIPT not in page


def test_a_training_jobs_page_follows_its_epochs(client_for, lead, stub_model_version_factory):
    from predictions.models import TrainingJob

    job = TrainingJob.objects.create(base_version=stub_model_version_factory(), epochs=5, epochs_done=2, status="running")
    client = client_for(lead)
    page = client.get(reverse("admin:predictions_trainingjob_change", args=[job.pk])).content.decode()
    url = reverse("admin:predictions_trainingjob_progress", args=[job.pk])
    assert f'data-progress-url="{url}"' in page

    answer = client.get(url).json()
    assert answer["finished"] is False and "2 / 5" in answer["fields"]["progress"]
    assert "last_epoch" in answer["fields"]


def test_the_batch_page_follows_its_predictions_until_every_image_has_an_outcome(
    client_for, uploader, batch_with_images, prediction_factory
):
    from predictions.models import PredictionFailure, PredictionJob

    batch, images, version = batch_with_images
    PredictionJob.objects.create(model_version=version, batch=batch, reason="upload", total=3, status="running")
    client = client_for(uploader)
    url = reverse("admin:images_uploadbatch_progress", args=[batch.pk])
    page = client.get(reverse("admin:images_uploadbatch_change", args=[batch.pk])).content.decode()
    assert f'data-progress-url="{url}"' in page

    prediction_factory(image=images[0])
    answer = client.get(url).json()
    assert answer["finished"] is False
    assert '<progress value="1" max="3">' in answer["fields"]["progress"] and "1 / 3" in answer["fields"]["progress"]

    prediction_factory(image=images[1])
    PredictionFailure.objects.create(image=images[2], model_version=version, message="broken")
    answer = client.get(url).json()
    assert answer["finished"] is True
    assert "2 / 3" in answer["fields"]["progress"] and "1 failed" in answer["fields"]["progress"]
    assert "broken" in answer["fields"]["failed_predictions"]


def test_a_batch_whose_jobs_are_over_is_finished_even_without_every_outcome(
    client_for, uploader, batch_with_images
):
    """No active model, or a job that failed as a whole: nothing more is coming, the page stops asking."""
    batch, _images, _version = batch_with_images
    answer = client_for(uploader).get(reverse("admin:images_uploadbatch_progress", args=[batch.pk])).json()
    assert answer["finished"] is True


def test_progress_needs_the_view_permission(client_for, django_user_model, stub_model_version_factory):
    from predictions.models import PredictionJob

    job = PredictionJob.objects.create(model_version=stub_model_version_factory(), total=1)
    nobody = django_user_model.objects.create_user(username="staff-only", password="x", is_staff=True)
    response = client_for(nobody).get(reverse("admin:predictions_predictionjob_progress", args=[job.pk]))
    assert response.status_code == 403
    assert client_for(nobody).get(reverse("admin:predictions_predictionjob_progress", args=[job.pk + 99])).status_code == 404


def test_the_index_dashboard_polls_while_work_runs(client_for, reviewer, batch_with_images):
    from predictions.models import PredictionJob

    _batch, _images, version = batch_with_images
    client = client_for(reviewer)
    url = reverse("admin:predictions_dashboard_progress")
    page = client.get(reverse("admin:index")).content.decode()
    assert f'data-progress-url="{url}"' in page and 'data-live-field="dashboard"' in page
    assert "0 / 3" in page  # the predicted bar

    answer = client.get(url).json()
    assert answer["finished"] is True
    assert "Labeling at a glance" in answer["fields"]["dashboard"] and "0 / 3" in answer["fields"]["dashboard"]

    PredictionJob.objects.create(model_version=version, reason="upload", total=3, status="queued")
    assert client.get(url).json()["finished"] is False
