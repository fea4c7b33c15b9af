"""The django-q2 entry points of the prediction pipeline, called the way the cluster calls them."""

import os
import socket
from types import SimpleNamespace

import pytest

pytestmark = pytest.mark.django_db


def test_predict_chunk_runs_by_its_dotted_name_and_records_a_successful_task(image_factory, active_model_version):
    from django_q.models import Task
    from django_q.tasks import async_task

    from predictions.models import Prediction, PredictionJob

    images = [image_factory(), image_factory()]
    job = PredictionJob.objects.create(model_version=active_model_version, reason="upload", total=2)

    # tests/settings.py runs django-q2 in sync mode: the worker and monitor run inline.
    task_id = async_task("predictions.tasks.predict_chunk", job.pk, [i.pk for i in images])

    task = Task.objects.get(id=task_id)
    assert task.success, task.result
    assert task.result == {
        "job": job.pk, "predicted": 2, "failed": 0, "vanished": 0,
        # sync mode: the worker is this process
        "worker": {"host": socket.gethostname(), "pid": os.getpid()},
    }
    assert Prediction.objects.filter(job=job).count() == 2
    job.refresh_from_db()
    assert job.status == PredictionJob.Status.DONE


def test_a_chunk_of_a_deleted_job_writes_nothing(image_factory, active_model_version):
    from predictions.models import Prediction, PredictionJob
    from predictions.tasks import predict_chunk

    image = image_factory()
    job = PredictionJob.objects.create(model_version=active_model_version, reason="upload", total=1)
    job_id = job.pk
    job.delete()

    assert predict_chunk(job_id, [image.pk]) == {"job": job_id, "skipped": "job deleted"}
    assert not Prediction.objects.exists()


def test_the_result_hook_marks_the_job_failed_when_a_chunk_task_raised(image_factory, active_model_version):
    from predictions.models import PredictionJob
    from predictions.tasks import predict_chunk_hook

    job = PredictionJob.objects.create(model_version=active_model_version, reason="upload", total=1)
    predict_chunk_hook(SimpleNamespace(success=True, args=(job.pk, []), result={"job": job.pk}))
    job.refresh_from_db()
    assert job.status == PredictionJob.Status.QUEUED

    predict_chunk_hook(
        SimpleNamespace(success=False, args=(job.pk, []), result="bad head : Traceback (most recent call last):\n  File ...")
    )
    job.refresh_from_db()
    assert job.status == PredictionJob.Status.FAILED
    assert job.error == "bad head"
    assert job.finished_at is not None
