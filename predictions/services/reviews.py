"""Reviewer decisions. A Review row is never overwritten: undo marks it, a new
decision adds a row, and the image's denormalised current label follows the
latest decision that is not undone."""

import math
import random
from collections.abc import Collection
from contextlib import nullcontext
from datetime import datetime, timedelta
from functools import partial

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from images.models import Image
from predictions.models import Label, LabelOperation, ModelVersion, Prediction, Review
from predictions.selectors.queue import (
    QueueFilters,
    QueueOrder,
    queue_open_image_q,
    review_queue,
    review_queue_head,
    review_queue_sample_ids,
    review_queue_starts_invalidate,
)
from predictions.selectors.label_audit import label_suspect_is_open
from predictions.selectors.quality import (
    GOLD,
    NOT_LABELLING,
    gold_images_relabelled_by_undo,
    image_label_state,
    image_review_rows,
)
from predictions.selectors.versions import model_version_active, model_version_or_active
from predictions.services.label_audit import label_audit_due_check
from predictions.services.operations import LabelDecision, OperationResult, label_operation_apply
from predictions.services.quality import gold_draw_count, gold_mix_in, gold_pick, review_decision_order


def image_review_state_refresh(*, image: Image) -> None:
    """Recompute the image's current label from its live reviews (selectors.quality.image_label_state:
    the latest labelling decision wins; gold checks never count; overlap decisions by majority)."""
    rows = image_review_rows(image_ids=[image.pk]).get(image.pk, [])
    Image.objects.filter(pk=image.pk).update(**image_label_state(rows).as_update())


@transaction.atomic
def review_submit(
    *,
    image: Image,
    reviewer,
    label: Label,
    prediction: Prediction | None = None,
    source: str = Review.Source.SCREEN,
    seconds_spent: float | None = None,
    queue_order: str = "",
) -> Review:
    """Record one decision and make it the image's current label.

    `queue_order`: the review screen's order that served the image ("audit" puts
    the review in auto-accept's random sample); "gold" and "overlap" record the
    decision without making it the label (predictions/selectors/quality.py).
    """
    if seconds_spent is not None and not math.isfinite(seconds_spent):
        # float("inf") parses from a request; it would skew every time statistic.
        raise ValidationError(f"The time spent must be a finite number of seconds, not {seconds_spent}.")
    review = Review.objects.create(
        image=image,
        reviewer=reviewer,
        label=label,
        prediction=prediction,
        agreed=None if prediction is None else prediction.label_id == label.pk,
        source=source,
        seconds_spent=seconds_spent,
        queue_order=queue_order,
    )
    # The automatic label audit: a cached threshold compared with the new id; robust, so a
    # failing check is logged and never fails the decision (predictions.services.label_audit).
    transaction.on_commit(partial(label_audit_due_check, review_id=review.pk), robust=True)
    if queue_order in NOT_LABELLING:
        # A gold check leaves the label alone; an overlap decision counts towards the majority.
        if queue_order != GOLD:
            image_review_state_refresh(image=image)
        Image.objects.filter(pk=image.pk, claimed_by=reviewer).update(claimed_by=None, claimed_until=None)
        return review
    Image.objects.filter(pk=image.pk).update(
        final_label=label,
        reviewed_by=reviewer,
        reviewed_at=review.created_at,
        label_source=source,
        review_count=Review.objects.filter(image=image, undone_at__isnull=True).exclude(queue_order=GOLD).count(),
        claimed_by=None,
        claimed_until=None,
    )
    return review


@transaction.atomic
def review_undo(*, review: Review) -> None:
    """Take a decision back; it stays in the history, marked undone."""
    if review.undone_at is None:
        Review.objects.filter(pk=review.pk).update(undone_at=timezone.now())
        image_review_state_refresh(image=review.image)
        # The image is open again, maybe before where the queues remember they
        # start; forgotten now and once more after commit, so that no request
        # in between remembers a start that leaves it out.
        review_queue_starts_invalidate()
        transaction.on_commit(review_queue_starts_invalidate)


class ReviewConflict(Exception):
    """The image was reviewed or taken by someone else since it was shown."""


def _claim_free_q(*, reviewer, now) -> Q:
    return Q(claimed_until__isnull=True) | Q(claimed_until__lt=now) | Q(claimed_by=reviewer)


def review_claim_next(
    *,
    reviewer,
    filters: QueueFilters,
    count: int = 2,
    exclude_image_ids: Collection[int] = (),
    skipped_image_ids: Collection[int] = (),
    now: datetime | None = None,
) -> list[Prediction]:
    """Claim up to `count` images from the reviewer's queue and return their predictions.

    A claim lasts settings.REVIEW_CLAIM_SECONDS; two reviewers never hold the
    same image, and an expired claim puts the image back in everyone's queue.
    A reviewer holds at most settings.REVIEW_MAX_OPEN_CLAIMS open claims: claiming
    more releases their oldest, so no one can take the whole queue.
    `exclude_image_ids` are the images the screen already holds; skipped images
    come back only when nothing else is left.

    PostgreSQL: the candidates are locked with SKIP LOCKED, so concurrent
    reviewers pass over each other's rows instead of waiting. SQLite has no row
    locks, but its IMMEDIATE transactions serialise writers; either way each
    claim is a conditional UPDATE that only succeeds while the image is free.
    """
    now = now or timezone.now()
    until = now + timedelta(seconds=settings.REVIEW_CLAIM_SECONDS)
    model_version = model_version_or_active(version_id=filters.model_version_id)
    count = min(count, settings.REVIEW_MAX_OPEN_CLAIMS)
    if model_version is None or count < 1:
        return []
    # Gold images (settings.REVIEW_GOLD_RATE of the items, not claimed) fill some places.
    avoid = set(exclude_image_ids) | set(skipped_image_ids)
    gold_wanted = gold_draw_count(count=count, order=filters.order)
    gold = gold_pick(reviewer=reviewer, model_version=model_version, wanted=gold_wanted, avoid=avoid, filters=filters)
    claimed = _claim_more(
        reviewer=reviewer,
        filters=filters,
        model_version=model_version,
        count=count - len(gold),
        held=set(exclude_image_ids),
        skipped=set(skipped_image_ids),
        now=now,
        until=until,
    )
    if claimed:
        _claims_trim(reviewer=reviewer, now=now, keep=settings.REVIEW_MAX_OPEN_CLAIMS)
    return gold_mix_in(
        reviewer=reviewer, filters=filters, model_version=model_version, claimed=claimed, gold=gold, avoid=avoid
    )


def _claims_trim(*, reviewer, now, keep: int) -> None:
    """Release the reviewer's open claims beyond the newest ``keep`` (the ones just made are newest)."""
    beyond = list(
        Image.objects.filter(claimed_by=reviewer, claimed_until__gte=now)
        .order_by("-claimed_until", "-pk")
        .values_list("pk", flat=True)[keep:]
    )
    if beyond:
        Image.objects.filter(pk__in=beyond, claimed_by=reviewer).update(claimed_by=None, claimed_until=None)


def _claim_more(
    *, reviewer, filters: QueueFilters, model_version, count: int, held: set[int], skipped: set[int], now, until
) -> list[Prediction]:
    lock_rows = connection.features.has_select_for_update_skip_locked
    claimed: list[Prediction] = []
    passes = [held | skipped, held] if skipped else [held]
    for avoid in passes:
        for _attempt in range(3):
            wanted = count - len(claimed)
            if wanted <= 0:
                return claimed
            # SQLite: read outside the write lock (IMMEDIATE transactions would
            # hold it for the whole read); the conditional UPDATE decides.
            with transaction.atomic() if lock_rows else nullcontext():
                queue = review_queue(
                    reviewer=reviewer,
                    filters=filters,
                    model_version=model_version,
                    exclude_image_ids=avoid | {p.image_id for p in claimed},
                    now=now,
                )
                # The audit draw reads ids only; the rows it picked are then locked like any other.
                picked = review_queue_sample_ids(queue, limit=wanted) if filters.order == QueueOrder.AUDIT else None
                if lock_rows:
                    queue = queue.select_for_update(skip_locked=True, of=("image",))
                if picked is not None:
                    rows = queue.in_bulk(picked)
                    candidates = [rows[pk] for pk in picked if pk in rows]
                else:
                    random_start = random.random() if filters.order == QueueOrder.RANDOM else None
                    candidates = review_queue_head(queue, limit=wanted, random_start=random_start)
                if not candidates:
                    break
                for prediction in candidates:
                    won = (
                        Image.objects.filter(queue_open_image_q(filters=filters), pk=prediction.image_id)
                        .filter(_claim_free_q(reviewer=reviewer, now=now))
                        .update(claimed_by=reviewer, claimed_until=until)
                    )
                    if won:
                        prediction.image.claimed_by = reviewer
                        prediction.image.claimed_until = until
                        claimed.append(prediction)
                    else:
                        avoid = avoid | {prediction.image_id}
    return claimed


def review_claim_release(*, reviewer, image_ids: Collection[int]) -> int:
    """Give back this reviewer's claims on these images (someone else's are left alone)."""
    return Image.objects.filter(pk__in=list(image_ids), claimed_by=reviewer).update(
        claimed_by=None, claimed_until=None
    )


def review_decide(
    *,
    reviewer,
    image_id: int,
    label_id: int | None,
    prediction_id: int | None = None,
    model_version: ModelVersion | None = None,
    seconds_spent: float | None = None,
    queue_order: str = "",
    include_auto: bool = False,
) -> Review:
    """A decision from the review screen: a label, or (label_id None) the model's label confirmed.

    The prediction shown is the given one, else the image's prediction from
    `model_version`. Refused with ReviewConflict when the image already has a
    live review or another reviewer holds it, so a decision made after one's
    claim ran out never silently replaces someone else's. With `include_auto`
    (the queue's "Include auto-accepted" filter) an auto-accepted label is not
    such a review: the decision supersedes it. So with `queue_order` "suspects" for a
    label the latest audit flagged and nobody re-checked since: the decision is a
    second review (the first stays in the history), refused to the one who gave the label.
    """
    now = timezone.now()
    with transaction.atomic():
        images = Image.objects.filter(pk=image_id)
        if connection.features.has_select_for_update:
            images = images.select_for_update()
        image = images.first()
        if image is None:
            raise ValidationError(f"Image {image_id} does not exist.")
        predictions = Prediction.objects.select_related("label").filter(image=image)
        if prediction_id is not None:
            prediction = predictions.filter(pk=prediction_id).first()
        elif model_version is not None:
            prediction = predictions.filter(model_version=model_version).first()
        else:
            prediction = None
        if label_id is None:
            if prediction is None:
                raise ValidationError(f"{image}: there is no prediction to confirm.")
            label = prediction.label
        else:
            label = Label.objects.filter(pk=label_id).first()
            if label is None:
                raise ValidationError(f"Label {label_id} does not exist.")
        reopened = include_auto and image.label_source == Review.Source.AUTO
        if queue_order == QueueOrder.SUSPECTS and image.final_label_id is not None:
            # A flagged label re-checked: a second opinion, from anyone but the one who gave it.
            if image.reviewed_by_id == reviewer.pk:
                raise ReviewConflict(f"You gave {image} its label: another reviewer re-checks it.")
            reopened = reopened or label_suspect_is_open(image_id=image.pk)
        queue_order = review_decision_order(image=image, reviewer=reviewer, queue_order=queue_order, reopened=reopened)
        if image.final_label_id is not None and not reopened and queue_order != GOLD:
            raise ReviewConflict(f"{image} was already reviewed.")
        if image.claimed_by_id not in (None, reviewer.pk) and image.claimed_until and image.claimed_until >= now:
            raise ReviewConflict(f"{image} is being reviewed by someone else.")
        return review_submit(
            image=image,
            reviewer=reviewer,
            label=label,
            prediction=prediction,
            source=Review.Source.SCREEN,
            seconds_spent=seconds_spent,
            queue_order=queue_order,
        )


def review_undo_last(*, reviewer, review_id: int | None = None) -> Review | None:
    """Undo this reviewer's given (else latest) live decision from the review screen.

    The image goes back to the queue, claimed by this reviewer so that the
    screen can show it again at once. Returns the undone review, or None when
    there is nothing to undo. ReviewConflict when a Lead has since made the label
    this decision gave a gold image's reference (the message does not say gold: a
    reviewer is not told which images are).
    """
    reviews = Review.objects.filter(reviewer=reviewer, undone_at__isnull=True, source=Review.Source.SCREEN)
    if review_id is not None:
        reviews = reviews.filter(pk=review_id)
    with transaction.atomic():
        review = reviews.select_related("image", "label", "prediction").order_by("-created_at", "-id").first()
        if review is None:
            return None
        # Locked before the gold check: a Lead's mark committed first is seen; one
        # written after waits, then finds the label it read gone (images_gold_set).
        list(Image.objects.select_for_update().filter(pk=review.image_id).values_list("pk"))
        if gold_images_relabelled_by_undo(reviews=Review.objects.filter(pk=review.pk)):
            raise ReviewConflict(f"“{review.image}” can no longer be undone here: a Lead can change its label.")
        review_undo(review=review)
        Image.objects.filter(pk=review.image_id, final_label__isnull=True).update(
            claimed_by=reviewer,
            claimed_until=timezone.now() + timedelta(seconds=settings.REVIEW_CLAIM_SECONDS),
        )
    return review


# --- grid actions: a selection of images labelled at once, as one undoable operation --------


def _shown_predictions(*, image_ids: Collection[int], model_version: ModelVersion | None) -> dict[int, tuple[int, int]]:
    """image id -> (prediction id, predicted label id) of ``model_version``'s predictions of these images."""
    if model_version is None:
        return {}
    rows = Prediction.objects.filter(model_version=model_version, image_id__in=list(image_ids)).values_list(
        "image_id", "pk", "label_id"
    )
    return {image_id: (prediction_id, label_id) for image_id, prediction_id, label_id in rows}


def reviews_grid_set_label(
    *, image_ids: Collection[int], label: Label, user, overwrite_reviewed: bool = False
) -> OperationResult:
    """The image changelist's "Set label…": one operation, under operations' rule (unreviewed images only
    unless a Lead chose ``overwrite_reviewed``).

    The active version's prediction is recorded as the one shown, so the
    agreement rate counts grid decisions too.
    """
    shown = _shown_predictions(image_ids=image_ids, model_version=model_version_active())
    decisions = [
        LabelDecision(
            image_id=image_id,
            label_id=label.pk,
            prediction_id=shown[image_id][0] if image_id in shown else None,
            predicted_label_id=shown[image_id][1] if image_id in shown else None,
        )
        for image_id in image_ids
    ]
    return label_operation_apply(
        kind=LabelOperation.Kind.GRID_SET,
        decisions=decisions,
        user=user,
        source=Review.Source.GRID,
        description=f"Set label “{label}” on {len(decisions)} selected image(s)",
        params={"label": label.name, "overwrite_reviewed": overwrite_reviewed},
        overwrite_reviewed=overwrite_reviewed,
    )


def reviews_grid_confirm(
    *, image_ids: Collection[int], user, model_version: ModelVersion, overwrite_reviewed: bool = False
) -> tuple[OperationResult, int]:
    """The image changelist's "Confirm predictions": ``model_version``'s label for each image it predicted,
    as one operation; (the result, how many images had no prediction from it)."""
    shown = _shown_predictions(image_ids=image_ids, model_version=model_version)
    decisions = [
        LabelDecision(image_id=image_id, label_id=label_id, prediction_id=prediction_id, predicted_label_id=label_id)
        for image_id, (prediction_id, label_id) in shown.items()
    ]
    result = label_operation_apply(
        kind=LabelOperation.Kind.GRID_CONFIRM,
        decisions=decisions,
        user=user,
        source=Review.Source.GRID,
        description=f"Confirm the predictions of {model_version} on {len(decisions)} selected image(s)",
        params={"model_version": model_version.pk, "overwrite_reviewed": overwrite_reviewed},
        overwrite_reviewed=overwrite_reviewed,
    )
    return result, len(image_ids) - len(decisions)
