"""Auto-accept: give the model's label to the images it is confident enough about, with a stated guarantee.

A Lead asks for a maximum error rate (say 2%) at a confidence level (say 95%)
for one model version. The promise: with probability at least that confidence,
the share of wrong labels among the images the run accepts is at most the
maximum error.

Method (predictions.statistics.acceptance): Learn-then-Test with fixed-sequence
testing. Candidate confidence thresholds are scanned from high to low; at each,
the one-sided Clopper–Pearson upper bound of the error rate among the audit
sample's images at or above it is compared with the maximum error; the scan
stops at the first threshold whose bound exceeds it, and the lowest threshold
that passed is chosen. Each test is at level 1 - confidence and their order is
fixed before the labels are looked at, so no correction for testing many
thresholds is needed.

The sample (predictions.selectors.auto_accept): the version's reviews made in
the review screen's "Audit (random)" order, which serves every unreviewed image
of the version with the same chance. Nothing else counts: reviews made in
uncertainty order over-represent the hardest images, grid and import decisions
are not random, and another version's audit says nothing about this one.

Assumptions, stated on the admin page too:
- the reviewers' labels are the truth, and they label what the audit serves
  (skipping hard images would make the bound optimistic);
- the images accepted come from the population the audit drew from: the
  version's unreviewed images. Images uploaded after the audit are assumed to be
  like those before it. Audit reviews made after a run drew only from the images
  it left open, which are usually the harder ones: the next bound is then
  conservative for the version's accepted images taken together;
- the audit is a small share of the version's images. The bound is on the error
  of all images above the threshold; the run accepts those not audited, which are
  a little worse than the whole when the sample passed. With a sample of 15% of
  the images the accepted rest exceeded the target in 4.2% of 2,000 simulated
  audits (1.8% for all images above): within 5%, with less room; at a few percent
  the two agree (tests/predictions/test_auto_accept.py, end to end);
- the model's confidence need not be calibrated; it only orders the images.
- one run is for one version: it labels that version's predictions only, and a
  newly activated version starts with no run and no sample of its own.

Each accepted image gets a Review with source "auto" through
predictions.services.operations (which never touches reviewed, claimed or gold
images); the run records who, when, the version, the promise asked for, the
threshold, the bound, the sample size and the count, and is undone as a whole.
Runs above settings.AUTO_ACCEPT_SYNC_MAX images go to the task queue
(predictions.tasks.auto_accept_run) and show their progress in the admin.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django_q.tasks import async_task

from predictions.models import AutoAcceptRun, LabelOperation, ModelVersion, Review
from predictions.selectors.auto_accept import (
    accepted_count,
    audit_sample,
    auto_accept_candidates,
    auto_accept_run_operation,
    open_confidences,
)
from predictions.selectors.queue import review_queue_starts_invalidate
from predictions.services.operations import LabelDecision, label_operation_apply, label_operation_undo
from predictions.statistics.acceptance import AcceptanceDecision, acceptance_threshold_choose

TASK = "predictions.tasks.auto_accept_run"


@dataclass(frozen=True)
class CurvePoint:
    """One candidate threshold: the open images it would accept and its guaranteed error (upper bound).

    `tested`: the scan reached it (at or above the chosen threshold); below that the
    sequence of tests has stopped and the bound is no guarantee.
    """

    threshold: float
    images: int
    bound: float
    tested: bool


@dataclass(frozen=True)
class AutoAcceptPreview:
    model_version: ModelVersion
    decision: AcceptanceDecision
    open_images: int  # the version's unreviewed, non-gold images with a prediction
    would_accept: int  # of those, at or above the threshold (0 without one)
    curve: list[CurvePoint]
    sample_errors: int  # audited images whose predicted label the reviewer changed

    @property
    def threshold(self) -> float | None:
        return self.decision.threshold


def auto_accept_preview(*, model_version: ModelVersion, max_error: float, confidence: float) -> AutoAcceptPreview:
    """What a run would do now: the decision on the current audit sample and the images it would accept."""
    sample = audit_sample(model_version=model_version)
    try:
        decision = acceptance_threshold_choose(
            confidences=sample.confidences, correct=sample.correct, max_error=max_error, confidence=confidence
        )
    except ValueError as exc:
        raise ValidationError(str(exc)) from exc
    confidences = open_confidences(model_version=model_version)
    chosen = decision.threshold
    curve = [
        CurvePoint(
            threshold=threshold,
            images=accepted_count(confidences_ascending=confidences, threshold=threshold),
            bound=bound,
            tested=chosen is not None and threshold >= chosen,
        )
        for threshold, _share, bound in decision.curve
    ]
    return AutoAcceptPreview(
        model_version=model_version,
        decision=decision,
        open_images=int(confidences.size),
        would_accept=accepted_count(confidences_ascending=confidences, threshold=chosen),
        curve=curve,
        sample_errors=sample.errors,
    )


def auto_accept_run_start(
    *,
    model_version: ModelVersion,
    max_error: float,
    confidence: float,
    user,
    background: bool | None = None,
) -> AutoAcceptRun:
    """Decide on the current sample, record the run and accept (now, or in the task queue).

    The threshold is chosen again here, not taken from an earlier preview: the
    sample may have changed since. With too small a sample the run is recorded
    with `needed` and accepts nothing. `background` None: the task queue when more
    than settings.AUTO_ACCEPT_SYNC_MAX images would be accepted.
    """
    preview = auto_accept_preview(model_version=model_version, max_error=max_error, confidence=confidence)
    decision = preview.decision
    run = AutoAcceptRun.objects.create(
        model_version=model_version,
        max_error=max_error,
        confidence=confidence,
        threshold=decision.threshold,
        bound=decision.bound,
        audit_sample=decision.sample_size,
        needed=decision.needed,
        total=preview.would_accept,
        created_by=user,
    )
    if decision.threshold is None:
        run.status, run.finished_at = AutoAcceptRun.Status.DONE, timezone.now()
        run.save(update_fields=["status", "finished_at"])
        return run
    if background is None:
        background = preview.would_accept > settings.AUTO_ACCEPT_SYNC_MAX
    if background:
        transaction.on_commit(lambda: async_task(TASK, run.pk, task_name=f"auto-accept-{run.pk}"))
        return run
    return auto_accept_run_execute(run_id=run.pk)


def auto_accept_run_execute(*, run_id: int) -> AutoAcceptRun | None:
    """Accept the run's images: its version's open predictions at or above its threshold.

    Runs once: a second delivery of the task finds the run started and does
    nothing. A failure is recorded on the run (with what it had written, which
    its undo takes back) and raised again for the task queue.
    """
    started = AutoAcceptRun.objects.filter(pk=run_id, status=AutoAcceptRun.Status.QUEUED).update(
        status=AutoAcceptRun.Status.RUNNING
    )
    run = AutoAcceptRun.objects.select_related("model_version", "created_by").filter(pk=run_id).first()
    if run is None or not started:
        return run
    try:
        if run.created_by is None:
            raise ValidationError("The user who started the run no longer exists.")
        candidates = auto_accept_candidates(model_version=run.model_version, threshold=run.threshold)
        run.total = len(candidates)
        AutoAcceptRun.objects.filter(pk=run.pk).update(total=run.total)
        result = label_operation_apply(
            kind=LabelOperation.Kind.AUTO_ACCEPT,
            decisions=[
                LabelDecision(image_id=image_id, label_id=label_id, prediction_id=prediction_id, predicted_label_id=label_id)
                for image_id, prediction_id, label_id in candidates
            ],
            user=run.created_by,
            source=Review.Source.AUTO,
            description=(
                f"Auto-accept #{run.pk}: {run.model_version.name} at confidence >= {run.threshold:.4f} "
                f"(error <= {run.max_error:.1%} with {run.confidence:.0%} confidence)"
            ),
            params={
                "auto_accept_run": run.pk,
                "model_version": run.model_version_id,
                "threshold": run.threshold,
                "bound": run.bound,
                "max_error": run.max_error,
                "confidence": run.confidence,
                "audit_sample": run.audit_sample,
            },
        )
    except Exception as exc:
        run.status, run.error, run.finished_at = AutoAcceptRun.Status.FAILED, str(exc), timezone.now()
        run.operation = auto_accept_run_operation(run=run)
        run.save(update_fields=["status", "error", "finished_at", "operation"])
        raise
    if result.skipped:  # why fewer than the preview's count were accepted, kept with the operation
        result.operation.params = {**result.operation.params, "skipped": dict(result.skipped)}
        LabelOperation.objects.filter(pk=result.operation.pk).update(params=result.operation.params)
    run.operation, run.accepted = result.operation, result.changed
    run.status, run.finished_at = AutoAcceptRun.Status.DONE, timezone.now()
    run.save(update_fields=["operation", "accepted", "status", "finished_at"])
    return run


def auto_accept_run_undo(*, run: AutoAcceptRun, user) -> int:
    """Take back every label the run gave (decisions made since stay); how many images it reopened."""
    if run.status in (AutoAcceptRun.Status.QUEUED, AutoAcceptRun.Status.RUNNING):
        raise ValidationError(f"{run} is still running: undo it when it has finished.")
    operation = auto_accept_run_operation(run=run)
    if operation is None:
        raise ValidationError(f"{run} accepted nothing: there is nothing to undo.")
    reopened = label_operation_undo(operation=operation, user=user)
    # The images are open again, maybe before where the queues remember they start.
    review_queue_starts_invalidate()
    transaction.on_commit(review_queue_starts_invalidate)
    return reopened
