"""Exports written in the cluster: large label CSVs and training-set zips.

The admin starts an ExportJob with the image ids it would have exported (in
changelist order) and the task writes the file chunk by chunk into a local
temporary file, then hands it to the default storage under `exports/`; memory
stays flat whatever the row count. Each label row is made by the same
`export_row_function` of the `predictions.resources` resource as the admin's
immediate export.
"""

import csv
import io
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Sequence

from django.core.files import File
from django.core.files.storage import default_storage
from django.db import transaction
from django.utils import timezone
from django_q.tasks import async_task

from images.models import Image
from predictions.models import ExportJob
from predictions.resources import EXPORT_RESOURCES, ImageLabelResource
from predictions.selectors.exports import export_job_images
from predictions.selectors.versions import model_version_active_id, model_version_or_active
from reviewtool.batching import id_chunks

EXPORTS_FOLDER = "exports"
LABELS_CSV = "labels_csv"
TRAINING_ZIP = "training_zip"
EXPORT_CHUNK_SIZE = 2000

_TASKS = {
    LABELS_CSV: "predictions.tasks.export_csv",
    TRAINING_ZIP: "predictions.tasks.export_training_zip",
}


@transaction.atomic
def export_job_start(*, kind: str, image_ids: Sequence[int], user, params: dict | None = None) -> ExportJob:
    """Record an export of these images and queue its task once the job is committed."""
    if kind not in _TASKS:
        raise ValueError(f"Unknown export kind {kind!r}; expected one of {', '.join(_TASKS)}.")
    job = ExportJob.objects.create(
        kind=kind,
        params={**(params or {}), "image_ids": list(image_ids)},
        total=len(image_ids),
        created_by=user,
    )
    transaction.on_commit(lambda: async_task(_TASKS[kind], job.pk, task_name=f"export-{job.pk}"))
    return job


def labels_csv_export_start(
    *,
    image_ids: Sequence[int],
    user,
    resource_key: str = ImageLabelResource.export_key,
    fields: Sequence[str] | None = None,
    base_url: str = "",
) -> ExportJob:
    """A label CSV of these images in the background, with the columns the export form chose.

    The model version is fixed now (the active one), so a version activated
    while the job waits does not change what the file reports.
    """
    if resource_key not in EXPORT_RESOURCES:
        raise ValueError(f"Unknown export resource {resource_key!r}.")
    version_id = model_version_active_id()
    return export_job_start(
        kind=LABELS_CSV,
        image_ids=image_ids,
        user=user,
        params={
            "resource": resource_key,
            "fields": list(fields or []),
            "base_url": base_url,
            "model_version_id": version_id,
        },
    )


def training_zip_export_start(*, image_ids: Sequence[int], user) -> ExportJob:
    """A zip of these images' files, one folder per final label (unreviewed images are left out)."""
    return export_job_start(kind=TRAINING_ZIP, image_ids=image_ids, user=user)


def _job_begin(*, job_id: int) -> ExportJob | None:
    """The job to run, marked running; None when it is already done (a redelivered task)."""
    with transaction.atomic():
        job = ExportJob.objects.select_for_update().get(pk=job_id)
        if job.status == ExportJob.Status.DONE:
            return None
        job.status = ExportJob.Status.RUNNING
        job.done = 0
        job.error = ""
        job.save(update_fields=["status", "done", "error"])
    return job


def _job_progress(*, job: ExportJob, done: int) -> None:
    job.done = done
    ExportJob.objects.filter(pk=job.pk).update(done=done)


def _job_finish(*, job: ExportJob, temporary_file, name: str, note: str = "") -> None:
    """Store the written file under `name` (replacing a previous attempt's) and mark the job done."""
    if job.file:
        default_storage.delete(job.file.name)
    if default_storage.exists(name):
        default_storage.delete(name)
    temporary_file.seek(0)
    stored_name = default_storage.save(name, File(temporary_file, name=os.path.basename(name)))
    ExportJob.objects.filter(pk=job.pk).update(
        status=ExportJob.Status.DONE, file=stored_name, error=note, finished_at=timezone.now()
    )


def _job_fail(*, job_id: int, error: Exception) -> None:
    ExportJob.objects.filter(pk=job_id).update(
        status=ExportJob.Status.FAILED, error=f"{type(error).__name__}: {error}", finished_at=timezone.now()
    )


def labels_csv_write(*, job_id: int) -> None:
    """Write a label CSV job's file, EXPORT_CHUNK_SIZE images per query; idempotent."""
    job = _job_begin(job_id=job_id)
    if job is None:
        return
    try:
        params = job.params
        version_id = params.get("model_version_id")
        resource = EXPORT_RESOURCES[params.get("resource", ImageLabelResource.export_key)](
            base_url=params.get("base_url", ""),
            model_version=model_version_or_active(version_id=version_id) if version_id else None,
        )
        selected = params.get("fields") or None
        row = resource.export_row_function(selected)
        with tempfile.TemporaryFile() as raw:
            text = io.TextIOWrapper(raw, encoding="utf-8", newline="")
            writer = csv.writer(text)
            writer.writerow(resource.get_export_headers(selected_fields=selected))
            done = 0
            for chunk in id_chunks(export_job_images(job=job), EXPORT_CHUNK_SIZE):
                # In the chunk's (the changelist's) order, not the table's.
                rows = resource.filter_export(Image.objects.filter(pk__in=chunk).order_by())
                values_by_id = {values["id"]: values for values in rows}
                # An image deleted since the export started is left out.
                writer.writerows(row(values_by_id[pk]) for pk in chunk if pk in values_by_id)
                done += len(chunk)
                _job_progress(job=job, done=done)
            text.flush()
            text.detach()
            _job_finish(job=job, temporary_file=raw, name=f"{EXPORTS_FOLDER}/{job.pk}-labels.csv")
    except Exception as exc:
        _job_fail(job_id=job_id, error=exc)
        raise


_UNSAFE_FOLDER_CHARACTERS = re.compile(r'[\\/:*?"<>|\x00-\x1f]')


def label_folder_name(label: str) -> str:
    """A label as a folder name: no path separators or characters Windows refuses, never '.' or '..'."""
    name = _UNSAFE_FOLDER_CHARACTERS.sub("_", label).strip()
    return name if name.strip(".") else f"label_{name.replace('.', '_') or 'empty'}"


def training_zip_write(*, job_id: int) -> None:
    """Write a training zip job's file: `<label>/<sha256>.<ext>` plus a `labels.csv` (path,label).

    `python -m ml.train --data` takes the unpacked folder (one folder per class)
    or its labels.csv (paths relative to the CSV). Image files that have gone
    missing from the storage are left out and named in the job's note.
    """
    job = _job_begin(job_id=job_id)
    if job is None:
        return
    try:
        missing: list[str] = []
        with tempfile.TemporaryFile() as raw:
            # Images are already compressed: storing them is as small and much faster.
            with zipfile.ZipFile(raw, "w", compression=zipfile.ZIP_STORED) as archive:
                index = io.StringIO()
                index_writer = csv.writer(index)
                index_writer.writerow(["path", "label"])
                done = 0
                for chunk in id_chunks(export_job_images(job=job), EXPORT_CHUNK_SIZE):
                    reviewed = (
                        Image.objects.filter(pk__in=chunk, final_label__isnull=False)
                        .select_related("final_label")
                        .only("file", "sha256", "format", "original_name", "final_label__name")
                        .order_by("pk")
                    )
                    for image in reviewed:
                        extension = os.path.splitext(image.file.name)[1].lower() or f".{image.format.lower()}"
                        member = f"{label_folder_name(image.final_label.name)}/{image.sha256}{extension}"
                        try:
                            with default_storage.open(image.file.name, "rb") as source:
                                with archive.open(member, "w") as target:
                                    shutil.copyfileobj(source, target, 1024 * 1024)
                        except FileNotFoundError:
                            missing.append(image.original_name)
                            continue
                        index_writer.writerow([member, image.final_label.name])
                    done += len(chunk)
                    _job_progress(job=job, done=done)
                archive.writestr("labels.csv", index.getvalue())
            note = ""
            if missing:
                shown = ", ".join(missing[:20]) + (" …" if len(missing) > 20 else "")
                note = f"{len(missing)} image file(s) missing from storage were left out: {shown}"
            _job_finish(job=job, temporary_file=raw, name=f"{EXPORTS_FOLDER}/{job.pk}-training.zip", note=note)
    except Exception as exc:
        _job_fail(job_id=job_id, error=exc)
        raise


@transaction.atomic
def export_job_delete(*, job: ExportJob) -> None:
    """Delete a job and its file."""
    name = job.file.name if job.file else ""
    job.delete()
    if name:
        transaction.on_commit(lambda: default_storage.delete(name))
