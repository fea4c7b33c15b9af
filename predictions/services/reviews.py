"""Reviewer decisions. A Review row is never overwritten: undo marks it, a new
decision adds a row, and the image's denormalised current label follows the
latest decision that is not undone."""

import random
from collections.abc import Collection, Iterable
from contextlib import nullcontext
from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from images.models import Image
from predictions.models import Label, ModelVersion, Prediction, Review
from predictions.selectors.queue import (
    QueueFilters,
    QueueOrder,
    queue_model_version,
    review_queue,
    review_queue_head,
    review_queue_starts_invalidate,
)


def image_review_state_refresh(*, image: Image) -> None:
    """Recompute the image's current label from its reviews (latest non-undone wins)."""
    live = Review.objects.filter(image=image, undone_at__isnull=True).order_by("-created_at", "-id")
    latest = live.first()
    Image.objects.filter(pk=image.pk).update(
        final_label=latest.label_id if latest else None,
        reviewed_by=latest.reviewer_id if latest else None,
        reviewed_at=latest.created_at if latest else None,
        review_count=live.count(),
    )


@transaction.atomic
def review_submit(
    *,
    image: Image,
    reviewer,
    label: Label,
    prediction: Prediction | None = None,
    source: str = Review.Source.SCREEN,
    seconds_spent: float | None = None,
) -> Review:
    """Record one decision and make it the image's current label."""
    review = Review.objects.create(
        image=image,
        reviewer=reviewer,
        label=label,
        prediction=prediction,
        agreed=None if prediction is None else prediction.label_id == label.pk,
        source=source,
        seconds_spent=seconds_spent,
    )
    Image.objects.filter(pk=image.pk).update(
        final_label=label,
        reviewed_by=reviewer,
        reviewed_at=review.created_at,
        review_count=Review.objects.filter(image=image, undone_at__isnull=True).count(),
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
    `exclude_image_ids` are the images the screen already holds; skipped images
    come back only when nothing else is left.

    PostgreSQL: the candidates are locked with SKIP LOCKED, so concurrent
    reviewers pass over each other's rows instead of waiting. SQLite has no row
    locks, but its IMMEDIATE transactions serialise writers; either way each
    claim is a conditional UPDATE that only succeeds while the image is free.
    """
    now = now or timezone.now()
    until = now + timedelta(seconds=settings.REVIEW_CLAIM_SECONDS)
    model_version = queue_model_version(filters=filters)
    if model_version is None or count < 1:
        return []
    lock_rows = connection.features.has_select_for_update_skip_locked
    held = set(exclude_image_ids)
    claimed: list[Prediction] = []
    passes = [held | set(skipped_image_ids), held] if skipped_image_ids else [held]
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
                if lock_rows:
                    queue = queue.select_for_update(skip_locked=True, of=("image",))
                random_start = random.random() if filters.order == QueueOrder.RANDOM else None
                candidates = review_queue_head(queue, limit=wanted, random_start=random_start)
                if not candidates:
                    break
                for prediction in candidates:
                    won = (
                        Image.objects.filter(pk=prediction.image_id, final_label__isnull=True)
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
) -> Review:
    """A decision from the review screen: a label, or (label_id None) the model's label confirmed.

    The prediction shown is the given one, else the image's prediction from
    `model_version`. Refused with ReviewConflict when the image already has a
    live review or another reviewer holds it, so a decision made after one's
    claim ran out never silently replaces someone else's.
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
        if image.final_label_id is not None:
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
        )


def review_undo_last(*, reviewer, review_id: int | None = None) -> Review | None:
    """Undo this reviewer's given (else latest) live decision from the review screen.

    The image goes back to the queue, claimed by this reviewer so that the
    screen can show it again at once. Returns the undone review, or None when
    there is nothing to undo.
    """
    reviews = Review.objects.filter(reviewer=reviewer, undone_at__isnull=True, source=Review.Source.SCREEN)
    if review_id is not None:
        reviews = reviews.filter(pk=review_id)
    with transaction.atomic():
        review = reviews.select_related("image", "prediction").order_by("-created_at", "-id").first()
        if review is None:
            return None
        review_undo(review=review)
        Image.objects.filter(pk=review.image_id, final_label__isnull=True).update(
            claimed_by=reviewer,
            claimed_until=timezone.now() + timedelta(seconds=settings.REVIEW_CLAIM_SECONDS),
        )
    return review


def _predictions_by_image(*, images: Iterable[Image], model_version: ModelVersion | None) -> dict[int, Prediction]:
    if model_version is None:
        return {}
    predictions = Prediction.objects.filter(
        model_version=model_version, image_id__in=[image.pk for image in images]
    ).select_related("label")
    return {prediction.image_id: prediction for prediction in predictions}


@transaction.atomic
def reviews_set_label(
    *, images: Iterable[Image], label: Label, reviewer, model_version: ModelVersion | None = None
) -> int:
    """Label many images at once (the changelist's "Set label…"); each gets a Review row.

    The active version's prediction is recorded as the one shown, so the
    agreement rate counts grid decisions too.
    """
    images = list(images)
    model_version = model_version or ModelVersion.objects.filter(is_active=True).first()
    shown = _predictions_by_image(images=images, model_version=model_version)
    for image in images:
        review_submit(
            image=image, reviewer=reviewer, label=label, prediction=shown.get(image.pk), source=Review.Source.GRID
        )
    return len(images)


@transaction.atomic
def reviews_confirm_predictions(
    *, images: Iterable[Image], reviewer, model_version: ModelVersion | None = None
) -> tuple[int, int]:
    """Accept the model's label for each image that has a prediction: (confirmed, without a prediction)."""
    images = list(images)
    model_version = model_version or ModelVersion.objects.filter(is_active=True).first()
    predictions = _predictions_by_image(images=images, model_version=model_version)
    for image in images:
        prediction = predictions.get(image.pk)
        if prediction is not None:
            review_submit(
                image=image,
                reviewer=reviewer,
                label=prediction.label,
                prediction=prediction,
                source=Review.Source.GRID,
            )
    return len(predictions), len(images) - len(predictions)
