"""Reviewer decisions. A Review row is never overwritten: undo marks it, a new
decision adds a row, and the image's denormalised current label follows the
latest decision that is not undone."""

from django.db import transaction
from django.utils import timezone

from images.models import Image
from predictions.models import Label, Prediction, Review


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
