"""Two clusters on one PostgreSQL database and one Redis queue share an upload's work.

Needs the scale-out services: run with DATABASE_URL (PostgreSQL) and REDIS_URL,
as `make test` does when TEST_DATABASE_URL and TEST_REDIS_URL are set.
"""

import pytest
from django.conf import settings
from django.db import connection

from tests.integration.conftest import cluster_status, upload_images, wait_for

pytestmark = [
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
    pytest.mark.skipif(
        connection.vendor != "postgresql" or "redis" not in settings.Q_CLUSTER,
        reason="two clusters need the scale-out services: set DATABASE_URL to PostgreSQL and REDIS_URL "
        "(make test: TEST_DATABASE_URL and TEST_REDIS_URL)",
    ),
]

IMAGE_COUNT = 1000
CHUNK_SIZE = 25
TIMEOUT_SECONDS = 240


def test_two_clusters_predict_every_image_of_an_upload_once_and_both_do_work(
    start_qcluster, settings, uploader, active_model_version
):
    from django_q.models import Task

    from predictions.models import Prediction, PredictionFailure, PredictionJob

    settings.PREDICTION_CHUNK_SIZE = CHUNK_SIZE
    clusters = [start_qcluster(), start_qcluster()]
    for cluster in clusters:
        cluster.wait_until_running()
    # Both clusters publish their status where the other processes can read it.
    statuses = [cluster_status(cluster) for cluster in clusters]
    assert all(statuses), "a cluster's status is missing from the shared cache"
    workers = [set(status.workers) for status in statuses]

    batch = upload_images(user=uploader, count=IMAGE_COUNT, name="two clusters")

    def all_predicted():
        """every image of the upload predicted and its jobs done"""
        for cluster in clusters:
            cluster.assert_alive()
        predicted = Prediction.objects.filter(image__batch=batch).count()
        unfinished = PredictionJob.objects.filter(batch=batch).exclude(status=PredictionJob.Status.DONE)
        return predicted == IMAGE_COUNT and not unfinished.exists()

    wait_for(all_predicted, timeout=TIMEOUT_SECONDS, interval=1)

    rows = list(Prediction.objects.filter(image__batch=batch).values_list("image_id", "model_version_id"))
    assert len({image_id for image_id, _version in rows}) == len(rows) == IMAGE_COUNT
    assert {version for _image_id, version in rows} == {active_model_version.pk}
    assert not PredictionFailure.objects.exists()
    jobs = list(PredictionJob.objects.filter(batch=batch))
    assert sum(job.total for job in jobs) == sum(job.done for job in jobs) == IMAGE_COUNT

    # Each chunk task's result names the process that ran it (the task rows'
    # cluster name is the shared queue's, the same for both).
    chunk_workers = {
        task.result["worker"]["pid"] for task in Task.objects.filter(func="predictions.tasks.predict_chunk", success=True)
    }
    for number, pids in enumerate(workers, start=1):
        assert chunk_workers & pids, f"cluster {number} ran no chunk:\n{clusters[number - 1].log_tail()}"
