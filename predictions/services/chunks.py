"""Prediction jobs, the worker side: what a qcluster worker does with one chunk of image ids.

``predict_chunk_run`` (the ``predictions.tasks.predict_chunk`` task) reads the
chunk's images that still lack a prediction (for an embeddings job: a prediction
with an embedding), runs them through the process's
cached ``ml.Predictor`` (predictions.inference: loaded once per worker, torch
imported there, never in the cluster's parent), and records the outcome
(predictions.services.chunk_record). Each file is decoded once, for the model and
for its thumbnail: the decode threads write the thumbnail files
(images.thumbnails.thumbnail_file_save) while the model runs, and the images
point at them in one transaction before the predictions are recorded.

Inference runs outside any transaction: it is slow, and SQLite would hold its
write lock. A chunk is idempotent (a redelivery only fills what is missing and
counts nothing twice), so the broker may deliver it more than once; the sender
side is predictions.services.jobs, lost chunks are found by
predictions.services.sweep.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Iterator, Sequence

from django.conf import settings
from django.db import IntegrityError
from django.db.models import Exists, OuterRef
from django.utils import timezone

from images.models import Image
from images.storage import SavedFile
from images.thumbnails import thumbnail_file_save, thumbnails_queue, thumbnails_set
from ml.decode import ImageDecodeError, thumbnail_jpeg
from predictions.models import ModelVersion, Prediction, PredictionJob
from predictions.services.chunk_record import EMBEDDINGS_REASON, ChunkOutcome, chunk_record

logger = logging.getLogger(__name__)

MISSING_FILE = "missing file"


def predict_chunk_run(*, job_id: int, image_ids: Sequence[int]) -> dict:
    """Predict the images of one chunk of a job and record the outcome of each; the task's result."""
    job = PredictionJob.objects.select_related("model_version").filter(pk=job_id).first()
    if job is None:
        logger.warning("Prediction job %s no longer exists; chunk skipped", job_id)
        return {"job": job_id, "skipped": "job deleted"}
    model_version = job.model_version
    PredictionJob.objects.filter(pk=job.pk, status=PredictionJob.Status.QUEUED).update(
        status=PredictionJob.Status.RUNNING, started_at=timezone.now()
    )

    embeddings_job = job.reason == EMBEDDINGS_REASON
    todo = list(
        _images_to_run(model_version=model_version, image_ids=image_ids, embeddings_job=embeddings_job)
        .only("pk", "file", "original_name", "sha256", "thumbnail")
        .order_by("pk")
    )
    try:
        outcome = (
            _run_model(model_version=model_version, images=todo, embeddings_job=embeddings_job)
            if todo
            else ChunkOutcome()
        )
    except Exception:
        # These images were left to this chunk for their thumbnails too (the
        # upload queued no thumbnail task); a model that cannot run must not
        # cost them that.
        _thumbnails_queue_fallback(images=todo)
        if _job_gone(job):  # its version and checkpoint were deleted while the model loaded
            return _job_gone_result(job)
        raise
    # Before the predictions, so an image shown as predicted has its thumbnail.
    _thumbnails_set(thumbnails=outcome.thumbnails)
    try:
        counts = chunk_record(job=job, image_ids=image_ids, outcome=outcome)
    except IntegrityError:
        # A database that checks the version's foreign key before the job's lock
        # could tell (the version was deleted between the two).
        if not _job_gone(job):
            raise
        counts = None
    if counts is None:
        return _job_gone_result(job)
    logger.info("Prediction job %s: chunk of %d images: %s", job.pk, len(image_ids), counts)
    # Which process did the work, kept with the task's result: with several
    # clusters sharing one queue (one name), the task rows cannot tell them apart.
    return {"job": job.pk, **counts, "worker": {"host": socket.gethostname(), "pid": os.getpid()}}


def _job_gone(job: PredictionJob) -> bool:
    return not PredictionJob.objects.filter(pk=job.pk).exists()


def _job_gone_result(job: PredictionJob) -> dict:
    """A chunk whose job went with its deleted model version ends quietly: a log line, no traceback."""
    logger.warning(
        "Prediction job %s was deleted with model version %s while a chunk ran; its results are dropped",
        job.pk,
        job.model_version_id,
    )
    return {"job": job.pk, "skipped": "job deleted"}


def predict_chunk_failed(*, job_id: int, error: str) -> None:
    """A chunk task raised (a checkpoint that cannot load, a database error): show it on the job."""
    # django-q2 stores "<exception> : <traceback>"; the job shows the exception.
    message = (error or "").split(" : Traceback", 1)[0].strip() or "chunk task failed"
    PredictionJob.objects.filter(pk=job_id).exclude(status=PredictionJob.Status.DONE).update(
        status=PredictionJob.Status.FAILED, error=message[:2000], finished_at=timezone.now()
    )


def _images_to_run(*, model_version: ModelVersion, image_ids: Sequence[int], embeddings_job: bool):
    """The chunk's images that lack what the job writes: a prediction, or for an embeddings job an embedding."""
    images = Image.objects.filter(pk__in=image_ids)
    if not embeddings_job:
        return images.exclude(predictions__model_version=model_version)
    with_embedding = Prediction.objects.filter(
        image=OuterRef("pk"), model_version=model_version, embedding__isnull=False
    )
    return images.filter(~Exists(with_embedding))


def _run_model(*, model_version: ModelVersion, images: list[Image], embeddings_job: bool = False) -> ChunkOutcome:
    """Decode and predict ``images``; every image ends up in predictions or failures.

    Images without a thumbnail get one made from the image decoded for the
    model, so the worker decodes each file once. The decode threads also write
    the thumbnail files, in parallel with the model; the images point at them
    in one transaction afterwards (``_thumbnails_set``).
    """
    from predictions.inference import get_predictor  # loads torch and the checkpoint, once per worker

    outcome = ChunkOutcome()
    predictor = get_predictor(model_version)
    if embeddings_job and not predictor.has_embeddings:
        # Raised, so the job shows it as failed (predict_chunk_failed) instead of "done" with nothing stored.
        why = "STORE_EMBEDDINGS is off" if not settings.STORE_EMBEDDINGS else "no feature layer found (ml.features)"
        raise RuntimeError(f"{model_version} gives no embeddings: {why}")
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
    if not thumbnails:
        return
    try:
        thumbnails_set(saved=thumbnails)
    except Exception:
        logger.exception("Could not store the thumbnails of images %s", sorted(thumbnails))


def _thumbnails_queue_fallback(*, images: list[Image]) -> None:
    lacking = [image.pk for image in images if not image.thumbnail]
    if lacking:
        thumbnails_queue(image_ids=lacking)
