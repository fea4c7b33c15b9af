"""kill -9 in the middle of a prediction job: a worker, then a whole cluster.

Afterwards every image still has exactly one prediction, and each job counts
every image once. What brings the lost chunks back: the periodic sweep
(predictions.tasks.sweep_predictions), since the Redis broker drops the tasks a
cluster held; with the ORM broker the killed tasks also come back by
themselves after `retry`, and must then change nothing.

Runs on whatever the session uses: SQLite and the ORM broker by default,
PostgreSQL with DATABASE_URL, the Redis broker with REDIS_URL.
"""

import os
import signal

import pytest
from django.conf import settings

from tests.integration.conftest import cluster_status, upload_images, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True, serialized_rollback=True)]

IMAGE_COUNT = 300
CHUNK_SIZE = 50
SWEEP_AFTER_SECONDS = "5"
RECOVERY_TIMEOUT_SECONDS = 150
SWEEP_FUNC = "predictions.tasks.sweep_predictions"


@pytest.fixture(autouse=True)
def chunks(settings):
    settings.PREDICTION_CHUNK_SIZE = CHUNK_SIZE  # this process queues the jobs


def orm_broker() -> bool:
    return "redis" not in settings.Q_CLUSTER


def jobs_of(batch):
    from predictions.models import PredictionJob

    return PredictionJob.objects.filter(batch=batch)


def first_chunk_in_progress(batch):
    """A worker has started the first chunk and not recorded it yet: it imports torch and loads the model."""
    from predictions.models import PredictionJob

    return jobs_of(batch).filter(status=PredictionJob.Status.RUNNING, done=0).exists()


def some_chunks_done(batch):
    """the job to be part-way: some chunks recorded, not all"""
    from predictions.models import PredictionJob

    return jobs_of(batch).filter(status=PredictionJob.Status.RUNNING, done__gt=0).exists()


def every_image_predicted(batch, model_version) -> bool:
    from predictions.models import Prediction, PredictionJob

    predicted = Prediction.objects.filter(image__batch=batch, model_version=model_version).count()
    return predicted == IMAGE_COUNT and not jobs_of(batch).exclude(status=PredictionJob.Status.DONE).exists()


def sweep_results() -> list[dict]:
    from django_q.models import Task

    return [task.result for task in Task.objects.filter(func=SWEEP_FUNC, success=True)]


def assert_each_image_predicted_once(batch, model_version) -> None:
    from predictions.models import Prediction, PredictionFailure, PredictionJob

    image_ids = list(Prediction.objects.filter(image__batch=batch).values_list("image_id", flat=True))
    assert len(image_ids) == len(set(image_ids)) == IMAGE_COUNT
    assert set(batch.images.values_list("pk", flat=True)) == set(image_ids)
    assert set(Prediction.objects.filter(image__batch=batch).values_list("model_version", flat=True)) == {
        model_version.pk
    }
    assert not PredictionFailure.objects.exists()
    counts = [(job.status, job.done, job.failed, job.total) for job in jobs_of(batch)]
    assert all(status == PredictionJob.Status.DONE and done == total and failed == 0 for status, done, failed, total in counts), counts
    assert sum(total for _status, _done, _failed, total in counts) == IMAGE_COUNT


def test_a_worker_killed_mid_chunk_is_replaced_and_the_sweep_brings_its_chunk_back(
    start_qcluster, uploader, active_model_version
):
    from django_q.tasks import async_task

    cluster = start_qcluster(PREDICTION_SWEEP_AFTER_SECONDS=SWEEP_AFTER_SECONDS)
    cluster.wait_until_running()
    batch = upload_images(user=uploader, count=IMAGE_COUNT, name="worker crash")

    wait_for(lambda: first_chunk_in_progress(batch), timeout=RECOVERY_TIMEOUT_SECONDS, interval=0.05, cluster=cluster)
    status = cluster_status(cluster)
    assert status is not None and len(status.workers) == 1, "the cluster does not publish its status"
    [worker] = status.workers
    os.kill(worker, signal.SIGKILL)

    def worker_replaced():
        """the cluster to start a new worker"""
        status = cluster_status(cluster)
        return status is not None and status.workers and worker not in status.workers

    wait_for(worker_replaced, timeout=30, cluster=cluster)

    # The schedule queues the sweep every minute; here it is queued again as
    # soon as the last one finished, to keep the test short.
    sweeps_queued = 0

    def recovered():
        """every image predicted after the sweep"""
        nonlocal sweeps_queued
        if every_image_predicted(batch, active_model_version):
            return True
        if len(sweep_results()) == sweeps_queued:
            async_task(SWEEP_FUNC)
            sweeps_queued += 1
        return False

    wait_for(recovered, timeout=RECOVERY_TIMEOUT_SECONDS, interval=1, cluster=cluster)

    assert_each_image_predicted_once(batch, active_model_version)
    # The chunk the killed worker held came back through the sweep: the ORM
    # broker's own redelivery (after `retry`, 180 s) is far off.
    assert sum(result["requeued_images"] for result in sweep_results()) >= 1, sweep_results()
    cluster.assert_alive()


def test_a_cluster_killed_mid_job_loses_nothing_once_a_cluster_runs_again(
    start_qcluster, uploader, active_model_version
):
    from django_q.models import OrmQ, Schedule

    assert Schedule.objects.filter(func=SWEEP_FUNC).exists(), "migration 0003 makes the sweep's schedule"
    # The ORM broker hands the killed cluster's tasks out again 45 s after it took them.
    timeouts = {"Q_TIMEOUT": "40", "Q_RETRY": "45", "PREDICTION_SWEEP_AFTER_SECONDS": SWEEP_AFTER_SECONDS}
    crashed = start_qcluster(**timeouts)
    crashed.wait_until_running()
    batch = upload_images(user=uploader, count=IMAGE_COUNT, name="cluster crash")

    wait_for(lambda: some_chunks_done(batch), timeout=RECOVERY_TIMEOUT_SECONDS, interval=0.05, cluster=crashed)
    crashed.kill()
    assert not every_image_predicted(batch, active_model_version)

    restarted = start_qcluster(**timeouts)

    def recovered():
        """every image predicted, a sweep run by the cluster's own scheduler, no task left in the broker"""
        return (
            every_image_predicted(batch, active_model_version)
            and sweep_results()
            and (not orm_broker() or not OrmQ.objects.exists())
        )

    wait_for(recovered, timeout=RECOVERY_TIMEOUT_SECONDS, interval=1, cluster=restarted)

    assert_each_image_predicted_once(batch, active_model_version)
    restarted.assert_alive()
