"""Prediction jobs: queue images for the model, and run one chunk of them in a worker.

``enqueue_predictions`` records a PredictionJob and, once the caller's
transaction commits, queues one ``predictions.tasks.predict_chunk`` task per
chunk of image ids. ``predict_chunk_run`` is what a worker does with a chunk:
it is idempotent (a redelivered chunk only fills what is missing and counts
nothing twice), so the broker may deliver a chunk more than once.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
from datetime import timedelta
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, F, OuterRef
from django.db.models.functions import Greatest, Least
from django.utils import timezone
from django_q.brokers import get_broker
from django_q.tasks import async_task

from images.models import Image, UploadBatch
from predictions.models import Label, ModelVersion, Prediction, PredictionFailure, PredictionJob

if TYPE_CHECKING:
    from images.services import SavedFile

logger = logging.getLogger(__name__)

# Keeps `pk IN (...)` lists well below every database's parameter limit.
_ID_QUERY_BATCH = 500
MISSING_FILE = "missing file"


def active_model_version() -> ModelVersion | None:
    """The version new images are predicted with: active and validated."""
    return ModelVersion.objects.filter(is_active=True, validation_status=ModelVersion.Validation.VALID).first()


def _batched(ids: Sequence[int], size: int) -> Iterator[Sequence[int]]:
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


def _ids_lacking_prediction(*, model_version: ModelVersion, image_ids: Iterable[int]) -> list[int]:
    """The existing images among ``image_ids`` without a prediction from ``model_version``, in id order."""
    unique_ids = sorted(set(image_ids))
    missing: list[int] = []
    for ids in _batched(unique_ids, _ID_QUERY_BATCH):
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
    chunk_count = _chunks_queue_on_commit(job=job, image_ids=image_ids)
    logger.info(
        "Prediction job %s (%s): %d images with %s in %d chunks",
        job.pk, reason, job.total, model_version, chunk_count,
    )
    return job


def _chunks_queue_on_commit(*, job: PredictionJob, image_ids: Sequence[int], label: str = "chunk") -> int:
    """Queue ``predict_chunk`` tasks for ``image_ids`` once the transaction commits; how many."""
    # As many chunks as PREDICTION_CHUNK_SIZE asks for, of equal size: 200
    # images at 64 a chunk make 4 x 50, not 64 + 64 + 64 + 8 (a short chunk pays
    # a whole task's overhead and never fills the model's batches).
    chunk_count = math.ceil(len(image_ids) / max(1, settings.PREDICTION_CHUNK_SIZE))
    chunk_size = math.ceil(len(image_ids) / chunk_count) if chunk_count else 1
    chunks = [list(ids) for ids in _batched(image_ids, chunk_size)]

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
    version (logged as a warning), or every image already has a prediction.
    """
    model_version = model_version or active_model_version()
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
    return _job_create_and_queue(model_version=model_version, image_ids=missing, batch=batch, reason=reason, user=user)


@transaction.atomic
def retry_failed_predictions(
    *, image_ids: Iterable[int] | None = None, batch: UploadBatch | None = None, user=None
) -> PredictionJob | None:
    """Forget the recorded failures of the active version (all, or those of some images or one batch) and queue them again."""
    model_version = active_model_version()
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
    for ids in _batched(failed_ids, _ID_QUERY_BATCH):
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


# --- the sweep: chunks lost to a crash ----------------------------------------------


def _images_lacking_outcome(*, job: PredictionJob):
    """The images a job was queued for that have neither a prediction nor a failure from its version.

    A job does not record its image ids, so its images are taken to be those
    uploaded before it was queued: in its upload batch, or anywhere for a job
    without one (activation, retry). Images a job did not hold but that lack an
    outcome need one anyway, and a chunk only fills what is missing.
    """
    model_version_id = job.model_version_id
    images = Image.objects.filter(uploaded_at__lte=job.created_at)
    if job.batch_id is not None:
        images = images.filter(batch_id=job.batch_id)
    return images.filter(
        ~Exists(Prediction.objects.filter(image=OuterRef("pk"), model_version_id=model_version_id)),
        ~Exists(PredictionFailure.objects.filter(image=OuterRef("pk"), model_version_id=model_version_id)),
    ).order_by("pk")


def _queued_task_count() -> int:
    """Tasks waiting in the broker's queue (not those a cluster has taken and holds)."""
    return get_broker().queue_size() or 0


def predictions_sweep(*, stale_after: timedelta | None = None) -> dict:
    """Queue again the images of unfinished jobs that have stopped making progress.

    A crash loses chunks: the Redis broker drops the tasks a cluster held, and
    the ORM broker hands a killed task out again only after ``retry`` seconds. A
    job without progress for ``PREDICTION_SWEEP_AFTER_SECONDS`` while nothing
    waits in the queue has lost some: its images still lacking an outcome are
    queued again under the same job. Safe to run any time and from several
    processes: a chunk only fills what is missing and counts each image once.
    A stale job with nothing missing is marked done (its images were predicted
    by other jobs, or its counting chunks were lost after their writes).
    Run every minute by the django-q2 schedule ``predictions.tasks.sweep_predictions``.
    """
    stale_after = stale_after or timedelta(seconds=settings.PREDICTION_SWEEP_AFTER_SECONDS)
    summary = {"requeued_jobs": 0, "requeued_images": 0, "finished_jobs": 0}
    waiting = _queued_task_count()
    if waiting:
        # Work still queued is not lost, and a busy queue is no sign of a crash.
        summary["waiting_tasks"] = waiting
        return summary
    unfinished = [PredictionJob.Status.QUEUED, PredictionJob.Status.RUNNING]
    stale_ids = list(
        PredictionJob.objects.filter(
            status__in=unfinished,
            progressed_at__lt=timezone.now() - stale_after,
            model_version__validation_status=ModelVersion.Validation.VALID,
        )
        .order_by("created_at")
        .values_list("pk", flat=True)
    )
    for job_id in stale_ids:
        with transaction.atomic():
            job = (
                PredictionJob.objects.select_for_update()
                .filter(pk=job_id, status__in=unfinished, progressed_at__lt=timezone.now() - stale_after)
                .first()
            )
            if job is None:  # progressed, finished or swept since the list was read
                continue
            missing = list(_images_lacking_outcome(job=job).values_list("pk", flat=True))
            now = timezone.now()
            if not missing:
                PredictionJob.objects.filter(pk=job.pk).update(
                    status=PredictionJob.Status.DONE,
                    done=Greatest(F("total") - F("failed"), 0),
                    progressed_at=now,
                    finished_at=now,
                )
                summary["finished_jobs"] += 1
                logger.warning("Prediction job %s had stopped with every image done; marked done", job.pk)
                continue
            PredictionJob.objects.filter(pk=job.pk).update(progressed_at=now)
            _chunks_queue_on_commit(job=job, image_ids=missing, label="swept chunk")
            summary["requeued_jobs"] += 1
            summary["requeued_images"] += len(missing)
            logger.warning(
                "Prediction job %s made no progress for %s: %d images lacking a prediction queued again",
                job.pk, stale_after, len(missing),
            )
    return summary


# --- the worker side ---------------------------------------------------------------


@dataclass
class _ChunkOutcome:
    predictions: dict[int, object] = field(default_factory=dict)  # image id -> ml.predictor.Prediction
    failures: dict[int, str] = field(default_factory=dict)  # image id -> message
    thumbnails: dict[int, SavedFile] = field(default_factory=dict)  # image id -> SavedFile, for images lacking one
    inference_ms: float | None = None


def _run_model(*, model_version: ModelVersion, images: list[Image]) -> _ChunkOutcome:
    """Decode and predict ``images``; every image ends up in predictions or failures.

    Images without a thumbnail get one made from the image decoded for the
    model, so the worker decodes each file once. The decode threads also write
    the thumbnail files, in parallel with the model; the images point at them
    in one transaction afterwards (``_thumbnails_set``).
    """
    from images.services import thumbnail_file_save
    from ml.decode import ImageDecodeError, thumbnail_jpeg

    from predictions.inference import get_predictor

    outcome = _ChunkOutcome()
    predictor = get_predictor(model_version)
    fed: list[tuple[Image, object]] = []

    def sources() -> Iterator[tuple[str, object]]:
        # Runs ahead of the results (decode overlaps inference), so files are
        # opened lazily and closed as each result comes back. No database
        # access here: the predictor may pull from another thread.
        for image in images:
            try:
                handle = image.file.storage.open(image.file.name, "rb")
            except (FileNotFoundError, OSError, ValueError):
                outcome.failures[image.pk] = f"{image.original_name}: {MISSING_FILE}"
                continue
            fed.append((image, handle))
            yield image.original_name, handle

    def make_thumbnail(index: int, _name: str, decoded) -> None:
        # Runs in the decode threads: fills outcome.thumbnails, no database access.
        image = fed[index][0]
        if image.thumbnail:
            return
        try:
            jpeg = thumbnail_jpeg(decoded, size=settings.THUMBNAIL_SIZE)
            outcome.thumbnails[image.pk] = thumbnail_file_save(sha256=image.sha256, jpeg=jpeg)
        except Exception:  # costs only the thumbnail (the changelist shows a placeholder)
            logger.exception("Could not store the thumbnail of image #%s (%s)", image.pk, image.original_name)

    started = time.perf_counter()
    results = 0
    try:
        for index, (_name, result) in enumerate(
            predictor.predict_sources(
                sources(),
                max_pixels=settings.IMAGE_MAX_PIXELS,
                on_decoded=make_thumbnail,
                min_decode_size=settings.THUMBNAIL_SIZE,
            )
        ):
            image, handle = fed[index]
            handle.close()
            results += 1
            if isinstance(result, ImageDecodeError):
                outcome.failures[image.pk] = str(result)
            else:
                outcome.predictions[image.pk] = result
    finally:
        for _image, handle in fed:
            handle.close()
    if results:
        outcome.inference_ms = (time.perf_counter() - started) * 1000 / results
    return outcome


def _thumbnails_set(*, thumbnails: dict[int, SavedFile]) -> None:
    """Point the images at the thumbnails saved while predicting; a failure only loses those (logged)."""
    from images.services import thumbnails_set

    if not thumbnails:
        return
    try:
        thumbnails_set(saved=thumbnails)
    except Exception:
        logger.exception("Could not store the thumbnails of images %s", sorted(thumbnails))


def _labels_for(class_names: Iterable[str], cache: dict[str, Label]) -> dict[str, Label]:
    for order, name in enumerate(class_names):
        if name not in cache:
            cache[name], _created = Label.objects.get_or_create(name=name, defaults={"order": order})
    return cache


def predict_chunk_run(*, job_id: int, image_ids: Sequence[int]) -> dict:
    """Predict the images of one chunk of a job and record the outcome of each.

    Inference runs outside any transaction (it is slow, and SQLite would hold
    its write lock). The writes and the job's counters then commit together,
    with the job row locked, so a chunk delivered twice counts each image once.
    """
    job = PredictionJob.objects.select_related("model_version").filter(pk=job_id).first()
    if job is None:
        logger.warning("Prediction job %s no longer exists; chunk skipped", job_id)
        return {"job": job_id, "skipped": "job deleted"}
    model_version = job.model_version
    PredictionJob.objects.filter(pk=job.pk, status=PredictionJob.Status.QUEUED).update(
        status=PredictionJob.Status.RUNNING, started_at=timezone.now()
    )

    todo = list(
        Image.objects.filter(pk__in=image_ids)
        .exclude(predictions__model_version=model_version)
        .only("pk", "file", "original_name", "sha256", "thumbnail")
        .order_by("pk")
    )
    try:
        outcome = _run_model(model_version=model_version, images=todo) if todo else _ChunkOutcome()
    except Exception:
        # These images were left to this chunk for their thumbnails too (the
        # upload queued no thumbnail task); a model that cannot run must not
        # cost them that.
        _thumbnails_queue_fallback(images=todo)
        raise
    # Before the predictions, so an image shown as predicted has its thumbnail.
    _thumbnails_set(thumbnails=outcome.thumbnails)
    counts = _chunk_record(job=job, image_ids=image_ids, outcome=outcome)
    logger.info("Prediction job %s: chunk of %d images: %s", job.pk, len(image_ids), counts)
    # Which process did the work, kept with the task's result: with several
    # clusters sharing one queue (one name), the task rows cannot tell them apart.
    return {"job": job.pk, **counts, "worker": {"host": socket.gethostname(), "pid": os.getpid()}}


def _thumbnails_queue_fallback(*, images: list[Image]) -> None:
    from images.services import thumbnails_queue

    lacking = [image.pk for image in images if not image.thumbnail]
    if lacking:
        thumbnails_queue(image_ids=lacking)


@transaction.atomic
def _chunk_record(*, job: PredictionJob, image_ids: Sequence[int], outcome: _ChunkOutcome) -> dict:
    # Serialises the chunks of one job (a no-op on SQLite, whose immediate
    # transactions are serialised already).
    PredictionJob.objects.select_for_update().filter(pk=job.pk).first()
    model_version = job.model_version
    existing_ids = set(Image.objects.filter(pk__in=image_ids).values_list("pk", flat=True))
    prior_prediction_job = dict(
        Prediction.objects.filter(model_version=model_version, image_id__in=existing_ids).values_list(
            "image_id", "job_id"
        )
    )
    prior_failure_job = dict(
        PredictionFailure.objects.filter(model_version=model_version, image_id__in=existing_ids).values_list(
            "image_id", "job_id"
        )
    )
    # The chunk's outcome commits in one transaction, so if any of its images
    # already carries this job's mark, this is a redelivery of a chunk that was
    # counted before.
    seen_before = job.pk in prior_prediction_job.values() or job.pk in prior_failure_job.values()

    now = timezone.now()
    labels: dict[str, Label] = {}
    new_predictions: list[Prediction] = []
    new_failures: list[PredictionFailure] = []
    done = failed = 0
    for image_id in sorted(existing_ids):
        failed_here_before = prior_failure_job.get(image_id) == job.pk
        if image_id in prior_prediction_job:
            # Predicted already: by this job's earlier delivery, or by another
            # job (an overlapping upload and activation). Either way it is done.
            if prior_prediction_job[image_id] != job.pk and not seen_before:
                done += 1
            continue
        if image_id in outcome.predictions:
            result = outcome.predictions[image_id]
            label = _labels_for(result.class_names, labels)[result.label]
            new_predictions.append(
                Prediction(
                    image_id=image_id,
                    model_version=model_version,
                    label=label,
                    confidence=float(result.confidence),
                    margin=float(result.margin),
                    probabilities=[round(float(p), 6) for p in result.probabilities],
                    inference_ms=outcome.inference_ms,
                    job=job,
                    created_at=now,
                )
            )
            done += 1
            if failed_here_before:
                failed -= 1
        elif image_id in outcome.failures:
            new_failures.append(
                PredictionFailure(
                    image_id=image_id,
                    model_version=model_version,
                    job=job,
                    message=outcome.failures[image_id],
                    created_at=now,
                )
            )
            if not failed_here_before:
                failed += 1

    Prediction.objects.bulk_create(
        new_predictions,
        update_conflicts=True,
        unique_fields=["image", "model_version"],
        update_fields=["label", "confidence", "margin", "probabilities", "inference_ms", "job", "created_at"],
    )
    if new_predictions:
        PredictionFailure.objects.filter(
            model_version=model_version, image_id__in=[p.image_id for p in new_predictions]
        ).delete()
    PredictionFailure.objects.bulk_create(
        new_failures,
        update_conflicts=True,
        unique_fields=["image", "model_version"],
        update_fields=["job", "message", "created_at"],
    )

    # Images deleted since the job was queued can never be done: take them off the total.
    vanished = 0 if seen_before else len(set(image_ids) - existing_ids)
    if done or failed or vanished:
        PredictionJob.objects.filter(pk=job.pk).update(
            total=Greatest(F("total") - vanished, 0),
            # Capped, so a counter can never run past the total.
            done=Least(F("done") + done, Greatest(F("total") - vanished, 0)),
            failed=Greatest(F("failed") + failed, 0),
            progressed_at=now,
        )
    PredictionJob.objects.filter(
        pk=job.pk,
        status__in=[PredictionJob.Status.QUEUED, PredictionJob.Status.RUNNING],
        total__lte=F("done") + F("failed"),
    ).update(status=PredictionJob.Status.DONE, finished_at=timezone.now())
    return {"predicted": len(new_predictions), "failed": len(new_failures), "vanished": vanished}


def predict_chunk_failed(*, job_id: int, error: str) -> None:
    """A chunk task raised (a checkpoint that cannot load, a database error): show it on the job."""
    # django-q2 stores "<exception> : <traceback>"; the job shows the exception.
    message = (error or "").split(" : Traceback", 1)[0].strip() or "chunk task failed"
    PredictionJob.objects.filter(pk=job_id).exclude(status=PredictionJob.Status.DONE).update(
        status=PredictionJob.Status.FAILED, error=message[:2000], finished_at=timezone.now()
    )
