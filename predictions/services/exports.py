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
from predictions.selectors.exports import export_job_images, training_member_name
from predictions.selectors.splits import training_split
from predictions.selectors.versions import model_version_active_id, model_version_or_active
from reviewtool.batching import id_chunks

EXPORTS_FOLDER = "exports"
LABELS_CSV = "labels_csv"
TRAINING_ZIP = "training_zip"
# ExportJob.kind has no choices (the schema is frozen): the words the admin shows.
EXPORT_KIND_NAMES = {LABELS_CSV: "Labels CSV", TRAINING_ZIP: "Training zip"}
TRAINING_SET_STEM = "training-set"
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
    byte_order_mark: bool = False,
) -> ExportJob:
    """A label CSV of these images in the background, with the columns the export form chose.

    The model version is fixed now (the active one), so a version activated
    while the job waits does not change what the file reports. `byte_order_mark`:
    the file starts with UTF-8's, for Excel (the export form's "csv for Excel").
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
            "byte_order_mark": byte_order_mark,
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


def _job_file_name(*, job: ExportJob, filename: str) -> str:
    # A folder per job keeps names unique, so the file downloads under its own name
    # ("labels-2026-11-29.csv", the day the export was asked for).
    return f"{EXPORTS_FOLDER}/{job.pk}/{filename}"


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
        resource_class = EXPORT_RESOURCES[params.get("resource", ImageLabelResource.export_key)]
        resource = resource_class(
            base_url=params.get("base_url", ""),
            model_version=model_version_or_active(version_id=version_id) if version_id else None,
        )
        selected = params.get("fields") or None
        row = resource.export_row_function(selected)
        with tempfile.TemporaryFile() as raw:
            text = io.TextIOWrapper(raw, encoding="utf-8-sig" if params.get("byte_order_mark") else "utf-8", newline="")
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
            day = timezone.localdate(job.created_at)
            name = _job_file_name(job=job, filename=resource_class.export_filename(day=day))
            _job_finish(job=job, temporary_file=raw, name=name)
    except Exception as exc:
        _job_fail(job_id=job_id, error=exc)
        raise


def training_zip_write(*, job_id: int) -> None:
    """Write a training zip job's file: `<label>/<sha256>.<ext>` plus a `labels.csv` (path,label,split).

    `python -m ml.train --data` takes the unpacked folder (one folder per class)
    or its labels.csv (paths relative to the CSV). `split` (train/validation) keeps
    each near-duplicate group on one side (predictions.selectors.splits). Image
    files that have gone missing from the storage are left out and named in the job's note.
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
                index_writer.writerow(["path", "label", "split"])
                done = 0
                for chunk in id_chunks(export_job_images(job=job), EXPORT_CHUNK_SIZE):
                    reviewed = (
                        Image.objects.filter(pk__in=chunk, final_label__isnull=False)
                        .select_related("final_label")
                        .only("file", "sha256", "format", "original_name", "final_label__name")
                        .order_by("pk")
                    )
                    split = training_split(image_ids=chunk)
                    for image in reviewed:
                        member = training_member_name(
                            label=image.final_label.name, sha256=image.sha256, file_name=image.file.name,
                            image_format=image.format,
                        )
                        try:
                            with default_storage.open(image.file.name, "rb") as source:
                                with archive.open(member, "w") as target:
                                    shutil.copyfileobj(source, target, 1024 * 1024)
                        except FileNotFoundError:
                            missing.append(image.original_name)
                            continue
                        index_writer.writerow([member, image.final_label.name, split[image.pk]])
                    done += len(chunk)
                    _job_progress(job=job, done=done)
                archive.writestr("labels.csv", index.getvalue())
            note = ""
            if missing:
                shown = ", ".join(missing[:20]) + (" …" if len(missing) > 20 else "")
                note = f"{len(missing)} image file(s) missing from storage were left out: {shown}"
            day = timezone.localdate(job.created_at)
            name = _job_file_name(job=job, filename=f"{TRAINING_SET_STEM}-{day:%Y-%m-%d}.zip")
            _job_finish(job=job, temporary_file=raw, name=name, note=note)
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
