"""Upload through the admin, predict in a real qcluster: the whole pipeline across processes."""

from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from tests.conftest import DEMO_CLASSES
from tests.integration.conftest import descendants, loads_torch, wait_for

# serialized_rollback: the flush after a transactional test would otherwise drop
# the role groups the data migration created.
pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True, serialized_rollback=True)]

IMAGE_COUNT = 5
PREDICTION_TIMEOUT_SECONDS = 120


def parent_pid(pid: int) -> int:
    # /proc/<pid>/stat: "pid (comm) state ppid ..."; comm may contain spaces.
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def test_uploaded_images_are_predicted_by_the_cluster_whose_parent_never_loads_torch(
    qcluster, settings, client_for, uploader, active_model_version, make_image
):
    from images.models import UploadBatch
    from predictions.models import Prediction, PredictionJob

    settings.PREDICTION_CHUNK_SIZE = 2  # several chunk tasks for one job
    files = [
        SimpleUploadedFile(f"photo-{seed}.jpg", make_image(seed=seed), content_type="image/jpeg")
        for seed in range(IMAGE_COUNT)
    ]
    response = client_for(uploader).post(
        reverse("admin:images_image_upload"), {"files": files, "name": "integration"}
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    batch = UploadBatch.objects.get(name="integration")
    image_ids = set(batch.images.values_list("pk", flat=True))
    assert len(image_ids) == IMAGE_COUNT

    def job_finished():
        """the upload's prediction job to finish"""
        finished = [PredictionJob.Status.DONE, PredictionJob.Status.FAILED]
        return PredictionJob.objects.filter(batch=batch, status__in=finished).first()

    job = wait_for(job_finished, timeout=PREDICTION_TIMEOUT_SECONDS, cluster=qcluster)
    assert job.status == PredictionJob.Status.DONE, f"{job.error}\n{qcluster.log_tail()}"

    predictions = list(Prediction.objects.filter(image__in=image_ids).select_related("label"))
    assert sorted(p.image_id for p in predictions) == sorted(image_ids)  # exactly one each
    assert {p.model_version_id for p in predictions} == {active_model_version.pk}
    assert all(p.label.name in DEMO_CLASSES for p in predictions)
    # The embeddings come from the same pass (ml.features): 512 ResNet18 features as float16.
    assert all(p.embedding is not None and len(p.embedding) == 512 * 2 for p in predictions)
    assert (job.total, job.done, job.failed) == (IMAGE_COUNT, IMAGE_COUNT, 0)

    # The worker that predicted loaded torch; the processes it was forked from did not.
    qcluster.assert_alive()
    with_torch = [pid for pid in descendants(qcluster.pid) if loads_torch(pid)]
    assert with_torch, "no cluster process has torch loaded, so the check below would prove nothing"
    assert not loads_torch(qcluster.pid), "the qcluster parent process loaded torch"
    for worker in with_torch:
        assert not loads_torch(parent_pid(worker)), "a process that forks workers loaded torch"
