"""Recording a chunk's outcome: its Prediction and PredictionFailure rows and its job's counters.

The broker may deliver a chunk more than once (a redelivery after a crash, a
chunk queued again by the sweep), and two jobs may hold the same image (an
upload and an activation). Recording is therefore split in two:

- ``chunk_plan``, pure (no database): from the chunk's ids, which of them still
  exist, what was recorded for them before (and by which job) and what the
  model made of them now, decide which rows to write and how the job's
  done / failed / total counters move. Every rule of "count each image once"
  lives there and is unit-tested without a database.
- ``chunk_record``, the write: reads that prior state and applies the plan in
  one transaction, with the job row locked, so concurrent chunks of one job
  never interleave their counts.

An embeddings job (reason ``embeddings``: predictions.services.jobs.embeddings_fill)
goes through the same plan. What it writes is an embedding, so its "prior
predictions" are the predictions that have one, and the images whose prediction
lacks only that are ``embed`` in the plan: their row gets the embedding and the
job's mark, nothing else (the label a reviewer was shown stays as it was). The
job's mark on the row is what tells a redelivery, as for a full prediction.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from django.db import transaction
from django.db.models import F
from django.db.models.functions import Greatest, Least
from django.utils import timezone

from images.models import Image
from predictions.models import Prediction, PredictionFailure, PredictionJob
from predictions.services.prediction_rows import embedding_bytes, prediction_rows_build

if TYPE_CHECKING:
    from images.storage import SavedFile

# PredictionJob.reason of a job that fills missing embeddings (predictions.services.jobs.embeddings_fill).
EMBEDDINGS_REASON = "embeddings"


@dataclass
class ChunkOutcome:
    """What the model made of a chunk (predictions.services.chunks): every image decoded is in one of the first two."""

    predictions: dict[int, object] = field(default_factory=dict)  # image id -> ml.predictor.Prediction
    failures: dict[int, str] = field(default_factory=dict)  # image id -> message
    thumbnails: dict[int, SavedFile] = field(default_factory=dict)  # image id -> SavedFile, for images lacking one
    inference_ms: float | None = None


@dataclass(frozen=True)
class ChunkPlan:
    predict: list[int]  # image ids to write a Prediction row for, in id order
    fail: dict[int, str]  # image id -> message: PredictionFailure rows to write
    done: int  # added to the job's done counter
    failed: int  # added to the job's failed counter (negative: a failure this job counted was predicted now)
    vanished: int  # images deleted since the job was queued: taken off its total
    embed: list[int] = field(default_factory=list)  # image ids whose existing row only gets its embedding

    @property
    def moves_counters(self) -> bool:
        return bool(self.done or self.failed or self.vanished)


def chunk_plan(
    *,
    job_id: int,
    image_ids: Collection[int],
    existing_ids: Collection[int],
    prior_predictions: Mapping[int, int | None],
    prior_failures: Mapping[int, int | None],
    outcome: ChunkOutcome,
    lacking_embedding: Collection[int] = (),
) -> ChunkPlan:
    """What recording ``outcome`` for the chunk ``image_ids`` of job ``job_id`` writes and counts.

    ``prior_predictions`` and ``prior_failures`` map each existing image that
    already has a prediction (a failure) from the job's version to the job that
    wrote it (None for a row without a job, as the JSON endpoint writes them).
    For an embeddings job, ``prior_predictions`` holds only the predictions that
    have an embedding, and ``lacking_embedding`` the images whose prediction has
    none: predicted now, they are planned as ``embed`` instead of ``predict``.
    """
    # A chunk's outcome commits in one transaction, so if any of its images
    # already carries this job's mark, this is a redelivery of a chunk that was
    # counted before.
    seen_before = job_id in prior_predictions.values() or job_id in prior_failures.values()
    predict: list[int] = []
    embed: list[int] = []
    fail: dict[int, str] = {}
    done = failed = 0
    for image_id in sorted(existing_ids):
        failed_here_before = prior_failures.get(image_id) == job_id
        if image_id in prior_predictions:
            # Predicted already: by this job's earlier delivery, or by another
            # job (an overlapping upload and activation). Either way it is done.
            if prior_predictions[image_id] != job_id and not seen_before:
                done += 1
            continue
        if image_id in outcome.predictions:
            (embed if image_id in lacking_embedding else predict).append(image_id)
            done += 1
            if failed_here_before:
                failed -= 1
        elif image_id in outcome.failures:
            fail[image_id] = outcome.failures[image_id]
            if not failed_here_before:
                failed += 1
    vanished = 0 if seen_before else len(set(image_ids) - set(existing_ids))
    return ChunkPlan(predict=predict, fail=fail, done=done, failed=failed, vanished=vanished, embed=embed)


@transaction.atomic
def chunk_record(*, job: PredictionJob, image_ids: Sequence[int], outcome: ChunkOutcome) -> dict | None:
    """Write the rows of one chunk's outcome and move its job's counters; counts for the task result.

    None when the job no longer exists (its model version was deleted meanwhile).
    """
    # Serialises the chunks of one job (a no-op on SQLite, whose immediate
    # transactions are serialised already).
    if PredictionJob.objects.select_for_update().filter(pk=job.pk).first() is None:
        # The job went with its model version, deleted while this chunk ran: nothing to record.
        return None
    model_version = job.model_version
    existing_ids = set(Image.objects.filter(pk__in=image_ids).values_list("pk", flat=True))
    priors = Prediction.objects.filter(model_version=model_version, image_id__in=existing_ids)
    lacking_embedding: set[int] = set()
    if job.reason == EMBEDDINGS_REASON:
        lacking_embedding = set(priors.filter(embedding__isnull=True).values_list("image_id", flat=True))
        priors = priors.filter(embedding__isnull=False)
    plan = chunk_plan(
        job_id=job.pk,
        image_ids=image_ids,
        existing_ids=existing_ids,
        prior_predictions=dict(priors.values_list("image_id", "job_id")),
        lacking_embedding=lacking_embedding,
        prior_failures=dict(
            PredictionFailure.objects.filter(model_version=model_version, image_id__in=existing_ids).values_list(
                "image_id", "job_id"
            )
        ),
        outcome=outcome,
    )

    now = timezone.now()
    predictions = prediction_rows_build(
        model_version=model_version,
        results={image_id: outcome.predictions[image_id] for image_id in plan.predict},
        inference_ms=outcome.inference_ms,
        job=job,
        created_at=now,
    )
    Prediction.objects.bulk_create(
        predictions,
        update_conflicts=True,
        unique_fields=["image", "model_version"],
        update_fields=[
            "label", "confidence", "margin", "probabilities", "inference_ms", "embedding", "job", "created_at",
        ],
    )
    for image_id in plan.embed:
        # Only a row still without one: the label and scores a reviewer saw stay as they were.
        Prediction.objects.filter(model_version=model_version, image_id=image_id, embedding__isnull=True).update(
            embedding=embedding_bytes(outcome.predictions[image_id]), job=job
        )
    if plan.predict or plan.embed:
        PredictionFailure.objects.filter(
            model_version=model_version, image_id__in=[*plan.predict, *plan.embed]
        ).delete()
    PredictionFailure.objects.bulk_create(
        [
            PredictionFailure(image_id=image_id, model_version=model_version, job=job, message=message, created_at=now)
            for image_id, message in plan.fail.items()
        ],
        update_conflicts=True,
        unique_fields=["image", "model_version"],
        update_fields=["job", "message", "created_at"],
    )

    if plan.moves_counters:
        PredictionJob.objects.filter(pk=job.pk).update(
            total=Greatest(F("total") - plan.vanished, 0),
            # Capped, so a counter can never run past the total.
            done=Least(F("done") + plan.done, Greatest(F("total") - plan.vanished, 0)),
            failed=Greatest(F("failed") + plan.failed, 0),
            progressed_at=now,
        )
    PredictionJob.objects.filter(
        pk=job.pk,
        status__in=[PredictionJob.Status.QUEUED, PredictionJob.Status.RUNNING],
        total__lte=F("done") + F("failed"),
    ).update(status=PredictionJob.Status.DONE, finished_at=timezone.now())
    counts = {"predicted": len(plan.predict), "failed": len(plan.fail), "vanished": plan.vanished}
    return {**counts, "embedded": len(plan.embed)} if job.reason == EMBEDDINGS_REASON else counts
