"""The prediction sweep: find the chunks a crash lost and queue their images again.

Run every minute by the django-q2 schedule ``predictions.tasks.sweep_predictions``
(migration 0003). A chunk may be lost, never duplicated in effect: a worker only
fills what is missing and counts each image once (predictions.services.chunks),
so queueing again is always safe. The real crashes (kill -9 of a worker and of
a whole cluster) are tested in tests/integration/test_crash_recovery.py.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, F, OuterRef
from django.db.models.functions import Greatest
from django.utils import timezone
from django_q.brokers import get_broker

from images.models import Image
from predictions.models import ModelVersion, Prediction, PredictionFailure, PredictionJob
from predictions.services.chunk_record import EMBEDDINGS_REASON
from predictions.services.jobs import UPLOAD_REASON, chunks_queue_on_commit

logger = logging.getLogger(__name__)


def _images_lacking_outcome(*, job: PredictionJob):
    """The images a job was queued for that have neither a prediction nor a failure from its version.

    A job does not record its image ids, so its images are taken to be those
    uploaded before it was queued: in its upload batch, or anywhere for a job
    without one (activation, retry); an upload's job, extended by each part of
    its upload, holds every image of its batch. Images a job did not hold but
    that lack an outcome need one anyway, and a chunk only fills what is missing.
    """
    model_version_id = job.model_version_id
    images = Image.objects.all()
    if job.batch_id is not None:
        images = images.filter(batch_id=job.batch_id)
    if job.batch_id is None or job.reason != UPLOAD_REASON:
        # An upload's job holds its whole batch, also the parts added after it was made.
        images = images.filter(uploaded_at__lte=job.created_at)
    if job.reason == EMBEDDINGS_REASON:
        # Its images have a prediction; what some may lack is the embedding.
        lacking = Prediction.objects.filter(image=OuterRef("pk"), model_version_id=model_version_id, embedding__isnull=True)
        return images.filter(
            Exists(lacking),
            ~Exists(PredictionFailure.objects.filter(image=OuterRef("pk"), model_version_id=model_version_id)),
        ).order_by("pk")
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
            chunks_queue_on_commit(job=job, image_ids=missing, label="swept chunk")
            summary["requeued_jobs"] += 1
            summary["requeued_images"] += len(missing)
            logger.warning(
                "Prediction job %s made no progress for %s: %d images lacking a prediction queued again",
                job.pk, stale_after, len(missing),
            )
    return summary
