"""Reads behind auto-accept: the random audit sample of a version, and the images a threshold would accept.

The sample is the version's live review-screen decisions made in the "Audit
(random)" order (predictions.selectors.queue), which serves every unreviewed
image of the version with the same chance. Decisions from any other order,
grid actions, imports and auto-accept's own reviews are left out: they are not
a random sample (uncertainty order, for one, serves the hardest images first)
and a bound computed from them would promise what it cannot keep. Only reviews
whose prediction is this version's count: another version's audit says nothing
about this one's errors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from django.db.models import QuerySet

from predictions.models import AutoAcceptRun, LabelOperation, ModelVersion, Prediction, Review
from predictions.selectors.queue import QueueOrder


@dataclass(frozen=True)
class AuditSample:
    """One row per audited image: the model's confidence and whether its label was the reviewer's."""

    confidences: np.ndarray
    correct: np.ndarray

    @property
    def size(self) -> int:
        return int(self.confidences.size)

    @property
    def errors(self) -> int:
        return int((~self.correct).sum())


def audit_sample(*, model_version: ModelVersion) -> AuditSample:
    """The version's random audit sample (see the module docstring).

    An image audited, undone and audited again counts once, with its live
    decision; "correct" means the reviewer chose the label the version predicted.
    """
    rows = (
        Review.objects.filter(
            undone_at__isnull=True,
            source=Review.Source.SCREEN,
            queue_order=QueueOrder.AUDIT,
            prediction__model_version=model_version,
        )
        .order_by("image_id", "-created_at", "-id")
        .values_list("image_id", "label_id", "prediction__label_id", "prediction__confidence")
    )
    latest: dict[int, tuple[float, bool]] = {}
    for image_id, label_id, predicted_id, confidence in rows:
        latest.setdefault(image_id, (confidence, label_id == predicted_id))
    values = list(latest.values())
    return AuditSample(
        confidences=np.fromiter((confidence for confidence, _ in values), dtype=float, count=len(values)),
        correct=np.fromiter((right for _, right in values), dtype=bool, count=len(values)),
    )


def open_predictions(*, model_version: ModelVersion) -> QuerySet[Prediction]:
    """The version's predictions an auto-accept may label: image without a current label, not gold,
    and no decision in progress (an overlap image waiting for more reviewers or one waiting for a
    Lead's adjudication has a label_source but no label yet: people are deciding it).

    Images on someone's review screen are in here too; the run itself skips them
    (predictions.services.operations), so a preview's count is an upper bound.
    """
    return Prediction.objects.filter(
        model_version=model_version, image__final_label__isnull=True, image__label_source="", image__is_gold=False
    )


def open_confidences(*, model_version: ModelVersion) -> np.ndarray:
    """The confidences of `open_predictions`, ascending: how many a threshold accepts is one searchsorted."""
    values = open_predictions(model_version=model_version).values_list("confidence", flat=True)
    return np.sort(np.fromiter(values.iterator(chunk_size=10_000), dtype=float))


def accepted_count(*, confidences_ascending: np.ndarray, threshold: float | None) -> int:
    """How many of these confidences are at or above the threshold (0 for none)."""
    if threshold is None:
        return 0
    return int(confidences_ascending.size - np.searchsorted(confidences_ascending, threshold, side="left"))


def auto_accept_candidates(*, model_version: ModelVersion, threshold: float) -> list[tuple[int, int, int]]:
    """(image id, prediction id, predicted label id) of the version's open predictions at or above the threshold."""
    return list(
        open_predictions(model_version=model_version)
        .filter(confidence__gte=threshold)
        .order_by("image_id")
        .values_list("image_id", "pk", "label_id")
    )


def auto_accept_run_operation(*, run: AutoAcceptRun) -> LabelOperation | None:
    """The run's label operation; found by the run id it carries while the run is still writing."""
    if run.operation_id is not None:
        return run.operation
    return (
        LabelOperation.objects.filter(kind=LabelOperation.Kind.AUTO_ACCEPT, params__auto_accept_run=run.pk)
        .order_by("pk")
        .first()
    )


def auto_accept_run_progress(*, run: AutoAcceptRun) -> int:
    """Images accepted so far: the recorded count once the run is over, else its reviews written until now."""
    if run.status in (AutoAcceptRun.Status.DONE, AutoAcceptRun.Status.QUEUED) or run.operation_id is not None:
        return run.accepted
    operation = auto_accept_run_operation(run=run)
    return operation.reviews.count() if operation is not None else 0
