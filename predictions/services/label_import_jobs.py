"""Label imports in the cluster: a LabelImportJob checks (dry run) or applies a stored CSV.

The admin starts one for a file above settings.LABEL_IMPORT_SYNC_MAX_ROWS rows;
a clean dry run is applied by a second job on the same file
(``label_import_job_apply_start``). The work is predictions.services.label_imports';
this module keeps the job's status, its progress (rows checked, rows applied),
its report and the operation it made.
"""

from __future__ import annotations

import logging
import os

from django.core.exceptions import ValidationError
from django.core.files.base import File
from django.core.files.storage import default_storage
from django.db import transaction
from django.utils import timezone
from django_q.tasks import async_task

from predictions.models import LabelImportJob
from predictions.services.label_imports import (
    label_csv_read,
    label_csv_row_count,
    label_rows_apply,
    label_rows_check,
)
from predictions.services.operations import OperationResult

logger = logging.getLogger(__name__)

IMPORTS_FOLDER = "label-imports"


def label_import_job_start(*, file, user, dry_run: bool = True, overwrite_reviewed: bool = False) -> LabelImportJob:
    """Store an uploaded CSV and check (dry run) or apply it in the cluster; the job follows it."""
    name = os.path.basename(getattr(file, "name", "") or "labels.csv")
    total = label_csv_row_count(file=file)
    stored = default_storage.save(f"{IMPORTS_FOLDER}/{timezone.now():%Y%m%d-%H%M%S}-{name}", File(file, name=name))
    return _job_create(
        stored_name=stored, file_name=name, total=total, user=user, dry_run=dry_run,
        overwrite_reviewed=overwrite_reviewed,
    )  # fmt: skip


def label_import_job_apply_start(*, job: LabelImportJob, user) -> LabelImportJob:
    """Apply the file a finished dry run checked, with the same options, as a new job."""
    if not job.dry_run or job.status != LabelImportJob.Status.DONE:
        raise ValidationError(f"{job} is not a finished dry run.")
    if job.report.get("invalid"):
        raise ValidationError(f"{job} found invalid rows: correct the file and import it again.")
    return _job_create(
        stored_name=job.file.name, file_name=job.file_name, total=job.total_rows, user=user, dry_run=False,
        overwrite_reviewed=label_import_job_overwrites(job),
    )  # fmt: skip


def label_import_job_overwrites(job: LabelImportJob) -> bool:
    """Whether the job may change reviewed images (a Lead's choice, kept in its report's options)."""
    return bool((job.report or {}).get("options", {}).get("overwrite_reviewed"))


@transaction.atomic
def _job_create(*, stored_name: str, file_name: str, total: int, user, dry_run: bool, overwrite_reviewed: bool):
    job = LabelImportJob.objects.create(
        file=stored_name,
        file_name=file_name,
        dry_run=dry_run,
        total_rows=total,
        report={"options": {"overwrite_reviewed": overwrite_reviewed}},
        created_by=user,
    )
    transaction.on_commit(
        lambda: async_task("predictions.tasks.import_labels", job.pk, task_name=f"label-import-{job.pk}")
    )
    return job


def label_import_job_run(*, job_id: int) -> None:
    """The task: check the job's file, and apply it unless it is a dry run. Progress goes on the job.

    A job already DONE is left alone (a redelivered task). Applying is refused,
    nothing written, when a row is invalid at apply time.
    """
    job = LabelImportJob.objects.select_related("created_by").get(pk=job_id)
    if job.status == LabelImportJob.Status.DONE:
        return
    options = {"overwrite_reviewed": label_import_job_overwrites(job)}
    LabelImportJob.objects.filter(pk=job.pk).update(
        status=LabelImportJob.Status.RUNNING, rows_checked=0, rows_applied=0, error=""
    )
    try:
        with job.file.open("rb") as handle:
            header, rows = label_csv_read(file=handle)
        LabelImportJob.objects.filter(pk=job.pk).update(total_rows=len(rows))
        check = label_rows_check(
            header=header,
            rows=rows,
            user=job.created_by,
            overwrite_reviewed=options["overwrite_reviewed"],
            progress=lambda done: LabelImportJob.objects.filter(pk=job.pk).update(rows_checked=done),
        )
        report = {**check.report(), "options": options}
        if job.dry_run or not check.is_valid:
            _job_finish(job=job, report=report, error="" if job.dry_run else "Nothing applied: some rows are invalid.")
            return
        # What the apply is about to do shows on the job's page while it runs.
        LabelImportJob.objects.filter(pk=job.pk).update(report=report)

        def applied(result: OperationResult, done: int) -> None:
            LabelImportJob.objects.filter(pk=job.pk).update(rows_applied=done, operation=result.operation)

        result = label_rows_apply(
            check=check,
            user=job.created_by,
            file_name=job.file_name,
            overwrite_reviewed=options["overwrite_reviewed"],
            progress=applied,
        )
        if result is None:
            report["applied"] = {"changed": 0, "skipped": {}}
            _job_finish(job=job, report=report)
            return
        report["applied"] = {"changed": result.changed, "skipped": dict(result.skipped)}
        _job_finish(job=job, report=report, operation=result.operation)
    except Exception as exc:
        logger.exception("Label import job %s failed", job.pk)
        message = " ".join(exc.messages) if isinstance(exc, ValidationError) else f"{type(exc).__name__}: {exc}"
        LabelImportJob.objects.filter(pk=job.pk).update(
            status=LabelImportJob.Status.FAILED, error=message[:4000], finished_at=timezone.now()
        )


def _job_finish(*, job: LabelImportJob, report: dict, error: str = "", operation=None) -> None:
    status = LabelImportJob.Status.FAILED if error else LabelImportJob.Status.DONE
    fields = {"status": status, "report": report, "error": error, "finished_at": timezone.now()}
    if operation is not None:
        fields["operation"] = operation
    LabelImportJob.objects.filter(pk=job.pk).update(rows_checked=report["rows"], **fields)


def label_import_job_delete(*, job: LabelImportJob) -> None:
    """Delete a job, and its stored file once no other job (its dry run or apply) uses it."""
    name = job.file.name
    job.delete()
    if name and not LabelImportJob.objects.filter(file=name).exists():
        default_storage.delete(name)
