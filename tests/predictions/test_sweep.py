"""The prediction sweep: chunks lost to a crash are queued again, nothing twice.

django-q2 runs in sync mode here (tests/settings.py): chunks queued by the
sweep run when its transaction's on_commit callbacks run. A "lost" chunk is one
whose task was recorded but never run. The real crashes (kill -9 of a worker and
of a whole cluster) are in tests/integration/test_crash_recovery.py.
"""

from datetime import timedelta
from functools import partial

import pytest

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fresh_predictor_cache")]

LONG_AGO = timedelta(hours=1)


@pytest.fixture
def batch(uploader):
    from images.models import UploadBatch

    return UploadBatch.objects.create(name="sweep", created_by=uploader)


def queue_and_lose(capture_on_commit, *, image_ids, batch=None, run_first: int = 0):
    """Queue a job whose chunk tasks are lost after the first ``run_first`` ran; call the others to deliver them late."""
    from predictions.models import PredictionJob
    from predictions.services.chunks import predict_chunk_run
    from predictions.services.jobs import enqueue_predictions

    chunks = []
    with pytest.MonkeyPatch.context() as patch, capture_on_commit(execute=True):
        patch.setattr(
            "predictions.services.jobs.async_task",
            lambda func, job_id, ids, **options: chunks.append(partial(predict_chunk_run, job_id=job_id, image_ids=ids)),
        )
        job = enqueue_predictions(image_ids=image_ids, batch=batch, reason="upload")
    for deliver in chunks[:run_first]:
        deliver()
    # Its last progress was long ago.
    PredictionJob.objects.filter(pk=job.pk).update(progressed_at=job.created_at - LONG_AGO)
    job.refresh_from_db()
    return job, chunks[run_first:]


def sweep(django_capture_on_commit_callbacks, **kwargs) -> dict:
    from predictions.services.sweep import predictions_sweep

    with django_capture_on_commit_callbacks(execute=True):
        return predictions_sweep(**kwargs)


def test_a_stalled_job_gets_its_lost_chunks_predicted_once_and_finishes(
    settings, image_factory, batch, active_model_version, django_capture_on_commit_callbacks
):
    from predictions.models import Prediction, PredictionJob

    settings.PREDICTION_CHUNK_SIZE = 2
    images = [image_factory(batch=batch) for _ in range(5)]
    job, _lost = queue_and_lose(
        django_capture_on_commit_callbacks, image_ids=[i.pk for i in images], batch=batch, run_first=1
    )
    assert (job.status, job.done) == (PredictionJob.Status.RUNNING, 2)

    summary = sweep(django_capture_on_commit_callbacks)

    assert summary == {"requeued_jobs": 1, "requeued_images": 3, "finished_jobs": 0}
    assert sorted(Prediction.objects.values_list("image_id", flat=True)) == sorted(i.pk for i in images)
    assert set(Prediction.objects.values_list("job", flat=True)) == {job.pk}
    job.refresh_from_db()
    assert (job.status, job.total, job.done, job.failed) == (PredictionJob.Status.DONE, 5, 5, 0)


def test_lost_chunks_delivered_after_the_sweep_write_and_count_nothing(
    settings, image_factory, batch, active_model_version, django_capture_on_commit_callbacks
):
    """The ORM broker hands a killed task out again after `retry`: after the sweep it finds nothing to do."""
    from predictions.models import Prediction, PredictionJob

    settings.PREDICTION_CHUNK_SIZE = 2
    images = [image_factory(batch=batch) for _ in range(4)]
    job, lost = queue_and_lose(django_capture_on_commit_callbacks, image_ids=[i.pk for i in images], batch=batch)
    sweep(django_capture_on_commit_callbacks)
    rows = list(Prediction.objects.order_by("pk").values_list("pk", "image_id", "created_at"))

    for deliver in lost:
        deliver()

    assert list(Prediction.objects.order_by("pk").values_list("pk", "image_id", "created_at")) == rows
    job.refresh_from_db()
    assert (job.status, job.total, job.done, job.failed) == (PredictionJob.Status.DONE, 4, 4, 0)


def test_a_lost_chunk_finishing_between_the_sweep_and_its_chunk_counts_once(
    settings, image_factory, batch, active_model_version, django_capture_on_commit_callbacks
):
    """A chunk thought lost was only slow: the sweep's chunk still counts the images nobody predicted."""
    from predictions.models import Prediction, PredictionJob
    from predictions.services.sweep import predictions_sweep

    settings.PREDICTION_CHUNK_SIZE = 2
    images = [image_factory(batch=batch) for _ in range(4)]
    job, (slow, _lost) = queue_and_lose(
        django_capture_on_commit_callbacks, image_ids=[i.pk for i in images], batch=batch
    )
    settings.PREDICTION_CHUNK_SIZE = 4  # the sweep's one chunk spans both original chunks
    with django_capture_on_commit_callbacks(execute=False) as swept:
        predictions_sweep()
    slow()  # the first original chunk records its two images
    for callback in swept:
        callback()  # the sweep's chunk: two already done by the job, two to predict

    assert Prediction.objects.count() == 4
    job.refresh_from_db()
    assert (job.status, job.total, job.done) == (PredictionJob.Status.DONE, 4, 4)


def test_a_job_making_progress_is_left_alone(
    image_factory, batch, active_model_version, django_capture_on_commit_callbacks
):
    from predictions.models import Prediction, PredictionJob

    images = [image_factory(batch=batch) for _ in range(2)]
    job, _lost = queue_and_lose(django_capture_on_commit_callbacks, image_ids=[i.pk for i in images], batch=batch)
    PredictionJob.objects.filter(pk=job.pk).update(progressed_at=job.created_at)  # just now

    assert sweep(django_capture_on_commit_callbacks, stale_after=timedelta(minutes=5))["requeued_jobs"] == 0
    assert not Prediction.objects.exists()


def test_nothing_is_swept_while_tasks_wait_in_the_queue(
    image_factory, batch, active_model_version, django_capture_on_commit_callbacks
):
    """A long queue delays jobs without losing them; the sweep waits until it has drained."""
    from django_q.tasks import async_task

    from predictions.models import Prediction

    images = [image_factory(batch=batch) for _ in range(2)]
    queue_and_lose(django_capture_on_commit_callbacks, image_ids=[i.pk for i in images], batch=batch)
    async_task("math.floor", 1.5, sync=False)  # into the broker, for a cluster that is busy elsewhere

    summary = sweep(django_capture_on_commit_callbacks)

    assert (summary["requeued_jobs"], summary["waiting_tasks"]) == (0, 1)
    assert not Prediction.objects.exists()


def test_a_batch_job_requeues_only_its_own_images(
    image_factory, batch, active_model_version, django_capture_on_commit_callbacks
):
    from predictions.models import Prediction

    mine = [image_factory(batch=batch) for _ in range(2)]
    elsewhere = image_factory()  # no prediction either, but not this job's
    queue_and_lose(django_capture_on_commit_callbacks, image_ids=[i.pk for i in mine], batch=batch)

    sweep(django_capture_on_commit_callbacks)

    assert sorted(Prediction.objects.values_list("image_id", flat=True)) == sorted(i.pk for i in mine)
    assert not Prediction.objects.filter(image=elsewhere).exists()


def test_an_activation_job_requeues_the_images_that_existed_when_it_was_queued(
    image_factory, active_model_version, django_capture_on_commit_callbacks
):
    from django.utils import timezone

    from predictions.models import Prediction
    from predictions.services.jobs import predict_missing

    older = [image_factory(), image_factory()]
    with django_capture_on_commit_callbacks(execute=False):
        job = predict_missing(model_version=active_model_version, reason="activation")
    type(job).objects.filter(pk=job.pk).update(progressed_at=job.created_at - LONG_AGO)
    newer = image_factory(uploaded_at=timezone.now() + timedelta(seconds=1))  # its own upload job's

    summary = sweep(django_capture_on_commit_callbacks)

    assert summary["requeued_images"] == 2
    assert sorted(Prediction.objects.values_list("image_id", flat=True)) == sorted(i.pk for i in older)
    assert not Prediction.objects.filter(image=newer).exists()


def test_images_with_a_recorded_failure_are_not_swept_again(
    image_factory, batch, active_model_version, django_capture_on_commit_callbacks
):
    from predictions.models import Prediction, PredictionFailure, PredictionJob

    good, corrupt = image_factory(batch=batch), image_factory(batch=batch, name="broken.jpg")
    with open(corrupt.file.path, "wb") as stored:
        stored.write(b"not an image")
    job, _lost = queue_and_lose(
        django_capture_on_commit_callbacks, image_ids=[good.pk, corrupt.pk], batch=batch
    )
    sweep(django_capture_on_commit_callbacks)
    PredictionJob.objects.filter(pk=job.pk).update(progressed_at=job.created_at - LONG_AGO)

    assert sweep(django_capture_on_commit_callbacks)["requeued_jobs"] == 0
    assert list(Prediction.objects.values_list("image_id", flat=True)) == [good.pk]
    assert list(PredictionFailure.objects.values_list("image_id", flat=True)) == [corrupt.pk]
    job.refresh_from_db()
    assert (job.status, job.done, job.failed) == (PredictionJob.Status.DONE, 1, 1)


def test_a_stalled_job_whose_images_another_job_predicted_is_marked_done(
    image_factory, batch, active_model_version, django_capture_on_commit_callbacks
):
    from predictions.models import Prediction, PredictionJob
    from predictions.services.jobs import enqueue_predictions

    images = [image_factory(batch=batch) for _ in range(3)]
    job, _lost = queue_and_lose(django_capture_on_commit_callbacks, image_ids=[i.pk for i in images], batch=batch)
    with django_capture_on_commit_callbacks(execute=True):
        enqueue_predictions(image_ids=[i.pk for i in images], reason="repredict")

    summary = sweep(django_capture_on_commit_callbacks)

    assert (summary["requeued_jobs"], summary["finished_jobs"]) == (0, 1)
    assert Prediction.objects.count() == 3
    job.refresh_from_db()
    assert (job.status, job.done, job.total) == (PredictionJob.Status.DONE, 3, 3)


def test_the_sweep_runs_every_minute_as_a_django_q2_schedule(
    image_factory, batch, active_model_version, django_capture_on_commit_callbacks
):
    """The schedule comes with `migrate`; its task runs by the dotted name the scheduler queues."""
    from django_q.models import Schedule, Task
    from django_q.tasks import async_task

    from predictions.models import Prediction

    schedule = Schedule.objects.get(func="predictions.tasks.sweep_predictions")
    assert (schedule.schedule_type, schedule.minutes, schedule.repeats) == (Schedule.MINUTES, 1, -1)

    images = [image_factory(batch=batch) for _ in range(2)]
    queue_and_lose(django_capture_on_commit_callbacks, image_ids=[i.pk for i in images], batch=batch)
    with django_capture_on_commit_callbacks(execute=True):
        task_id = async_task(schedule.func)

    task = Task.objects.get(id=task_id)
    assert task.success, task.result
    assert task.result["requeued_images"] == 2
    assert Prediction.objects.count() == 2
