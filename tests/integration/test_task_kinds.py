"""Every kind of cluster task, run by one real qcluster with two workers.

The unit tests run tasks inline (django-q2's sync mode); here each kind travels
through the broker to a separate ``manage.py qcluster`` (tests/integration/settings.py)
with ``Q_WORKERS=2``, started once for the module: prediction (two workers
sharing one job), validation, training, exports (CSV and training zip),
thumbnails, label import, auto-accept and the label audit. The others run in a
real cluster elsewhere: the prediction sweep in test_crash_recovery.py, the demo
model's training in test_first_run.py (``manage.py serve``'s own cluster).
"""

from __future__ import annotations

import csv
import io
import zipfile

import pytest
from django.core.files.base import ContentFile

from tests.conftest import DEMO_CLASSES, TINY_INPUT_SIZE
from tests.integration.conftest import _stop, cluster_start, cluster_status, module_queue, upload_images, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True, serialized_rollback=True)]

TIMEOUT_SECONDS = 180


@pytest.fixture(scope="module")
def cluster(django_db_setup, tmp_path_factory):
    """One qcluster with two workers for the whole module, on a queue of its own."""
    with module_queue() as name:
        running = cluster_start(
            name=name,
            log_path=tmp_path_factory.mktemp("task-kinds") / "qcluster.log",
            environment={"Q_WORKERS": "2", "Q_QUEUE_LIMIT": "4"},
        )
        try:
            running.wait_until_running()
            yield running
        finally:
            _stop(running.process)


@pytest.fixture(autouse=True)
def cluster_idle_afterwards(cluster):
    """Each test ends with the cluster idle: work a test queued and did not wait for (the
    predictions of the images it uploaded to export them, say) would still be writing while
    the test's tables are truncated, and on PostgreSQL the two deadlock.

    With the ORM broker a task leaves the queue only once its result is saved, so an empty
    queue (none waiting, none taken) is an idle cluster; with Redis the cluster's own
    published queues must be empty too.
    """
    yield
    from django_q.brokers import get_broker

    broker = get_broker()

    def idle():
        """the cluster to finish every task queued"""
        stat = cluster_status(cluster)
        return broker.queue_size() + (broker.lock_size() or 0) == 0 and (stat is None or stat.empty_queues())

    wait_for(idle, timeout=TIMEOUT_SECONDS, cluster=cluster)


def wait_done(rows, *, cluster, what: str, field="status", done_statuses=("done",), failed_statuses=("failed",)):
    """Until every row of ``rows`` (a queryset) has a final ``field``; fail with the errors otherwise."""
    final = {f"{field}__in": (*done_statuses, *failed_statuses)}

    def finished():
        return rows.exists() and not rows.exclude(**final).exists()

    finished.__doc__ = what
    wait_for(finished, timeout=TIMEOUT_SECONDS, cluster=cluster)
    failed = [(row.pk, getattr(row, "error", "")) for row in rows.filter(**{f"{field}__in": failed_statuses})]
    assert not failed, f"{what}: {failed}\n{cluster.log_tail()}"


def labelled(batch, names: list[str]) -> list:
    """The batch's images, given final labels from ``names`` in turn (as reviews would leave them)."""
    from images.models import Image
    from predictions.models import Label

    labels = [Label.objects.get(name=name) for name in names]
    images = list(Image.objects.filter(batch=batch).order_by("pk"))
    for number, image in enumerate(images):
        Image.objects.filter(pk=image.pk).update(final_label=labels[number % len(labels)])
    return images


def test_a_prediction_job_is_shared_by_two_workers_and_predicts_each_image_once(
    cluster, settings, uploader, active_model_version
):
    from django_q.models import Task

    from predictions.models import Prediction, PredictionFailure, PredictionJob

    settings.PREDICTION_CHUNK_SIZE = 2
    status = cluster_status(cluster)
    assert status is not None and len(status.workers) == 2
    batch = upload_images(user=uploader, count=8, name="two workers")
    wait_done(PredictionJob.objects.filter(batch=batch), cluster=cluster, what="the prediction job")

    image_ids = list(Prediction.objects.filter(image__batch=batch).values_list("image_id", flat=True))
    assert sorted(image_ids) == sorted(batch.images.values_list("pk", flat=True))  # each exactly once
    assert not PredictionFailure.objects.exists()
    job = PredictionJob.objects.get(batch=batch)
    assert (job.total, job.done, job.failed) == (8, 8, 0)
    chunk_workers = {
        task.result["worker"]["pid"] for task in Task.objects.filter(func="predictions.tasks.predict_chunk", success=True)
    }
    assert chunk_workers == set(status.workers), f"chunks ran in {chunk_workers}, workers {status.workers}"


def test_validation_records_a_registered_checkpoint_valid_or_invalid(cluster, lead, tiny_checkpoint_bytes):
    from predictions.models import ModelVersion
    from predictions.services.model_versions import model_version_register

    good = model_version_register(
        name="registered", checkpoint_file=ContentFile(tiny_checkpoint_bytes, name="registered.pth"), user=lead
    )
    bad = model_version_register(
        name="not a checkpoint", checkpoint_file=ContentFile(b"no weights here", name="bad.pth"), user=lead
    )
    wait_done(
        ModelVersion.objects.filter(pk__in=[good.pk, bad.pk]),
        cluster=cluster,
        what="both validations",
        field="validation_status",
        done_statuses=(ModelVersion.Validation.VALID, ModelVersion.Validation.INVALID),
        failed_statuses=(),
    )
    good.refresh_from_db()
    bad.refresh_from_db()
    assert good.validation_status == ModelVersion.Validation.VALID, good.validation_error
    assert (good.class_names, good.input_size) == (DEMO_CLASSES, TINY_INPUT_SIZE)  # read from the file
    assert bad.validation_status == ModelVersion.Validation.INVALID and bad.validation_error.startswith("bad")


def test_training_makes_a_new_valid_version_from_reviewed_labels(cluster, model_version_factory, uploader, lead):
    from predictions.models import ModelVersion, TrainingJob
    from predictions.services.training import training_job_create

    base = model_version_factory("base", active=False)
    labelled(upload_images(user=uploader, count=12, name="to learn from"), ["circle", "square"])
    job = training_job_create(base_version=base, epochs=1, learning_rate=1e-3, user=lead)
    wait_done(TrainingJob.objects.filter(pk=job.pk), cluster=cluster, what="the training job")

    job.refresh_from_db()
    assert (job.epochs_done, job.sample_count) == (1, 12)
    new = job.result_version
    assert new.validation_status == ModelVersion.Validation.VALID and not new.is_active
    assert new.class_names == base.class_names
    assert new.trained_images.count() == 12


def test_exports_write_a_label_csv_and_a_training_zip(cluster, active_model_version, uploader, lead):
    from django.core.files.storage import default_storage

    from predictions.models import ExportJob
    from predictions.services.exports import labels_csv_export_start, training_zip_export_start

    images = labelled(upload_images(user=uploader, count=4, name="to export"), ["circle", "square"])
    ids = [image.pk for image in images]
    jobs = [labels_csv_export_start(image_ids=ids, user=lead), training_zip_export_start(image_ids=ids, user=lead)]
    wait_done(ExportJob.objects.filter(pk__in=[job.pk for job in jobs]), cluster=cluster, what="both exports")

    csv_job, zip_job = (ExportJob.objects.get(pk=job.pk) for job in jobs)
    with default_storage.open(csv_job.file.name, "rb") as handle:
        rows = list(csv.DictReader(io.StringIO(handle.read().decode("utf-8-sig"))))
    assert len(rows) == 4
    assert sorted(row_value for row in rows for row_value in row.values() if row_value in ("circle", "square")) == [
        "circle", "circle", "square", "square",
    ]  # fmt: skip
    with default_storage.open(zip_job.file.name, "rb") as handle:
        names = zipfile.ZipFile(io.BytesIO(handle.read())).namelist()
    image_files = [name for name in names if "/" in name and not name.endswith("/")]
    assert sorted(name.split("/")[0] for name in image_files) == ["circle", "circle", "square", "square"]


def test_thumbnails_are_made_by_their_own_task_when_no_model_is_active(cluster, uploader):
    from django_q.models import Task

    from images.models import Image
    from predictions.models import ModelVersion

    assert not ModelVersion.objects.exists()
    batch = upload_images(user=uploader, count=3, name="no model")

    def thumbnailed():
        """every image's thumbnail"""
        return not Image.objects.filter(batch=batch, thumbnail="").exists()

    wait_for(thumbnailed, timeout=TIMEOUT_SECONDS, cluster=cluster)
    assert Task.objects.filter(func="images.tasks.make_thumbnails", success=True).exists()
    for image in Image.objects.filter(batch=batch):
        with image.thumbnail.open("rb") as handle:
            assert handle.read(3) == b"\xff\xd8\xff"  # a JPEG


def test_a_label_import_an_auto_accept_run_and_a_label_audit_run_in_the_cluster(
    cluster, active_model_version, uploader, lead
):
    from django_q.tasks import async_task

    from images.models import Image
    from predictions.models import AutoAcceptRun, LabelAudit, LabelImportJob, PredictionJob
    from predictions.services import auto_accept
    from predictions.services.label_audit import label_audit_queue
    from predictions.services.label_import_jobs import label_import_job_start

    batch = upload_images(user=uploader, count=8, name="to label")
    wait_done(PredictionJob.objects.filter(batch=batch), cluster=cluster, what="the prediction job")
    images = list(Image.objects.filter(batch=batch).order_by("pk"))
    imported, unlabelled = images[:4], images[4:]

    # Label import: a CSV applied in the cluster (as the admin does above LABEL_IMPORT_SYNC_MAX_ROWS rows).
    rows = "".join(f"{image.original_name},{'circle' if n % 2 else 'square'}\n" for n, image in enumerate(imported))
    job = label_import_job_start(
        file=ContentFile(f"original_name,label\n{rows}".encode(), name="labels.csv"), user=lead, dry_run=False
    )
    wait_done(LabelImportJob.objects.filter(pk=job.pk), cluster=cluster, what="the label import")
    job.refresh_from_db()
    assert job.rows_applied == 4 and job.operation is not None
    assert Image.objects.filter(pk__in=[i.pk for i in imported], final_label__isnull=False).count() == 4

    # Auto-accept: a run the way auto_accept_run_start records one for the task queue. Its
    # threshold is fixed here (the statistics that choose it: tests/predictions/test_auto_accept.py).
    run = AutoAcceptRun.objects.create(
        model_version=active_model_version, max_error=0.5, confidence=0.5, threshold=0.0, bound=0.0,
        total=len(unlabelled), created_by=lead,
    )  # fmt: skip
    async_task(auto_accept.TASK, run.pk, task_name=f"auto-accept-{run.pk}")
    wait_done(AutoAcceptRun.objects.filter(pk=run.pk), cluster=cluster, what="the auto-accept run")
    run.refresh_from_db()
    assert run.accepted == len(unlabelled), "every open prediction is above threshold 0"
    assert not Image.objects.filter(batch=batch, final_label__isnull=True).exists()

    # Label audit: scores the human labels (the imported ones; auto-accepted labels are the model's own).
    audit = label_audit_queue(user=lead)
    wait_done(LabelAudit.objects.filter(pk=audit.pk), cluster=cluster, what="the label audit")
    audit.refresh_from_db()
    assert (audit.total, audit.done) == (4, 4), audit.method
