"""Prediction jobs, the sender side: queue images for the model.

Every way of asking for predictions ends here: an upload (through the post-upload
hook images.hooks, registered in predictions.apps), a retry of failed images,
activating a version (``predict_missing``), a re-predict action, filling the
embeddings a version's older predictions lack (``embeddings_fill``). Each records a
PredictionJob (done/total progress in the admin) and, once the caller's
transaction commits, queues one ``predictions.tasks.predict_chunk`` task per
chunk of image ids.

What a worker does with a chunk is in predictions.services.chunks; chunks lost
to a crash are queued again by predictions.services.sweep, through
``chunks_queue_on_commit`` here.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F
from django.utils import timezone
from django_q.tasks import async_task

from images.models import Image, UploadBatch
from predictions.models import ModelVersion, Prediction, PredictionFailure, PredictionJob
from predictions.services.chunk_record import EMBEDDINGS_REASON
from predictions.selectors.versions import model_version_active
from reviewtool.batching import IN_QUERY_MAX_IDS, id_chunks

logger = logging.getLogger(__name__)

# PredictionJob.reason of an upload's job: one per batch and model version (_upload_job_extend).
UPLOAD_REASON = "upload"


def _ids_lacking_prediction(*, model_version: ModelVersion, image_ids: Iterable[int]) -> list[int]:
    """The existing images among ``image_ids`` without a prediction from ``model_version``, in id order."""
    missing: list[int] = []
    for ids in id_chunks(sorted(set(image_ids)), IN_QUERY_MAX_IDS):
        missing.extend(
            Image.objects.filter(pk__in=ids)
            .exclude(predictions__model_version=model_version)
            .order_by("pk")
            .values_list("pk", flat=True)
        )
    return missing


def _job_create_and_queue(
    *,
    model_version: ModelVersion,
    image_ids: list[int],
    batch: UploadBatch | None,
    reason: str,
    user,
) -> PredictionJob:
    job = PredictionJob.objects.create(
        model_version=model_version,
        batch=batch,
        reason=reason,
        total=len(image_ids),
        created_by=user if user is not None and user.is_authenticated else None,
    )
    job.queued_now = len(image_ids)
    chunk_count = chunks_queue_on_commit(job=job, image_ids=image_ids)
    logger.info(
        "Prediction job %s (%s): %d images with %s in %d chunks",
        job.pk, reason, job.total, model_version, chunk_count,
    )
    return job


def _upload_job_extend(*, model_version: ModelVersion, image_ids: list[int], batch: UploadBatch) -> PredictionJob | None:
    """Add ``image_ids`` to the upload job ``batch`` already has for ``model_version``; None when it has none.

    One upload is one job however it arrives: a large one is stored (and queued)
    a part at a time (32 files, then more, up to 200: images.services), and the admin's
    upload page sends a large selection as several requests into one batch. A
    job that finished meanwhile is opened again; a failed one is left as it is.
    """
    job = (
        PredictionJob.objects.select_for_update()
        .filter(batch=batch, model_version=model_version, reason=UPLOAD_REASON)
        .exclude(status=PredictionJob.Status.FAILED)
        .order_by("-created_at", "-pk")
        .first()
    )
    if job is None:
        return None
    reopened = PredictionJob.Status.RUNNING if job.started_at else PredictionJob.Status.QUEUED
    PredictionJob.objects.filter(pk=job.pk).update(
        total=F("total") + len(image_ids),
        status=reopened if job.status == PredictionJob.Status.DONE else job.status,
        finished_at=None,
        progressed_at=timezone.now(),
    )
    job.refresh_from_db()
    job.queued_now = len(image_ids)
    chunk_count = chunks_queue_on_commit(job=job, image_ids=image_ids, label="added chunk")
    logger.info("Prediction job %s (upload): %d more images in %d chunks", job.pk, len(image_ids), chunk_count)
    return job


def chunks_queue_on_commit(*, job: PredictionJob, image_ids: Sequence[int], label: str = "chunk") -> int:
    """Queue ``predict_chunk`` tasks for ``image_ids`` once the transaction commits; how many."""
    # As many chunks as PREDICTION_CHUNK_SIZE asks for, of equal size: 200
    # images at 64 a chunk make 4 x 50, not 64 + 64 + 64 + 8 (a short chunk pays
    # a whole task's overhead and never fills the model's batches).
    chunk_count = math.ceil(len(image_ids) / max(1, settings.PREDICTION_CHUNK_SIZE))
    chunk_size = math.ceil(len(image_ids) / chunk_count) if chunk_count else 1
    chunks = list(id_chunks(image_ids, chunk_size))

    def queue_chunks() -> None:
        for number, chunk_ids in enumerate(chunks, start=1):
            async_task(
                "predictions.tasks.predict_chunk",
                job.pk,
                chunk_ids,
                task_name=f"predict job {job.pk} {label} {number}/{len(chunks)}",
                group=f"prediction-job-{job.pk}",
                hook="predictions.tasks.predict_chunk_hook",
            )

    # The worker must find the job and the images committed.
    transaction.on_commit(queue_chunks)
    return len(chunks)


@transaction.atomic
def enqueue_predictions(
    *,
    image_ids: Iterable[int],
    model_version: ModelVersion | None = None,
    batch: UploadBatch | None = None,
    reason: str,
    user=None,
) -> PredictionJob | None:
    """Queue the images that still lack a prediction from ``model_version`` (default: the active one).

    Returns None when nothing is queued: there is no active, validated model
    version (logged as a warning), or every image already has a prediction. The
    job's ``queued_now`` says how many images this call queued: an upload's job
    (reason "upload" with a batch) is the batch's one job, extended by each part.
    """
    model_version = model_version or model_version_active()
    if model_version is None or model_version.validation_status != ModelVersion.Validation.VALID:
        logger.warning(
            "Not predicting %s: %s",
            reason or "images",
            "no active validated model version" if model_version is None else f"{model_version} is not validated",
        )
        return None
    missing = _ids_lacking_prediction(model_version=model_version, image_ids=image_ids)
    if not missing:
        return None
    if reason == UPLOAD_REASON and batch is not None:
        job = _upload_job_extend(model_version=model_version, image_ids=missing, batch=batch)
        if job is not None:
            return job
    return _job_create_and_queue(model_version=model_version, image_ids=missing, batch=batch, reason=reason, user=user)


def upload_predictions_enqueue(*, image_ids: list[int], batch: UploadBatch, user) -> set[int]:
    """The post-upload hook (images.hooks, registered in predictions.apps): queue an upload's new images.

    Every part of one upload (batch) goes into the batch's one upload job. Returns
    the ids the prediction worker will decode, and so thumbnail (the images app
    thumbnails the others itself). Only all or none: when some images are not
    queued (no active model, a prediction already there), the thumbnail task gets
    them all, and skips those a worker has thumbnailed by then.
    """
    job = enqueue_predictions(image_ids=image_ids, batch=batch, reason=UPLOAD_REASON, user=user)
    if job is None or job.queued_now < len(set(image_ids)):
        return set()
    return set(image_ids)


@transaction.atomic
def retry_failed_predictions(
    *, image_ids: Iterable[int] | None = None, batch: UploadBatch | None = None, user=None
) -> PredictionJob | None:
    """Forget the recorded failures of the active version (all, or those of some images or one batch) and queue them again."""
    model_version = model_version_active()
    if model_version is None:
        logger.warning("Not retrying failed predictions: no active validated model version")
        return None
    failures = PredictionFailure.objects.filter(model_version=model_version)
    if batch is not None:
        failures = failures.filter(image__batch=batch)
    if image_ids is not None:
        wanted = set(image_ids)
        failed_ids = [pk for pk in failures.values_list("image_id", flat=True) if pk in wanted]
    else:
        failed_ids = list(failures.values_list("image_id", flat=True))
    if not failed_ids:
        return None
    for ids in id_chunks(failed_ids, IN_QUERY_MAX_IDS):
        PredictionFailure.objects.filter(model_version=model_version, image_id__in=ids).delete()
    return enqueue_predictions(
        image_ids=failed_ids, model_version=model_version, batch=batch, reason="retry", user=user
    )


@transaction.atomic
def predict_missing(*, model_version: ModelVersion, user=None, reason: str) -> PredictionJob | None:
    """Queue every image without a prediction from ``model_version`` (activation).

    Images with a recorded failure for this version are left out: they have an
    outcome, and ``retry_failed_predictions`` is the way to try them again.
    """
    missing = list(
        Image.objects.exclude(predictions__model_version=model_version)
        .exclude(prediction_failures__model_version=model_version)
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    if not missing:
        return None
    return _job_create_and_queue(model_version=model_version, image_ids=missing, batch=None, reason=reason, user=user)


@transaction.atomic
def embeddings_fill(*, model_version: ModelVersion, user=None) -> PredictionJob | None:
    """Queue the images whose prediction from ``model_version`` has no embedding (made before they were stored).

    A job like any other (progress, sweep, idempotent chunks) whose chunks write
    only the missing embeddings (predictions.services.chunk_record); None when
    none is missing.
    """
    if model_version.validation_status != ModelVersion.Validation.VALID:
        raise ValidationError(f"{model_version.name} cannot compute embeddings: its checkpoint is not valid.")
    if not settings.STORE_EMBEDDINGS:
        raise ValidationError("Embeddings are switched off on this installation (STORE_EMBEDDINGS).")
    missing = list(
        Prediction.objects.filter(model_version=model_version, embedding__isnull=True)
        .order_by("image_id")
        .values_list("image_id", flat=True)
    )
    if not missing:
        return None
    return _job_create_and_queue(
        model_version=model_version, image_ids=missing, batch=None, reason=EMBEDDINGS_REASON, user=user
    )
