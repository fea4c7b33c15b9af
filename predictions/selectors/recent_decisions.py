"""A reviewer's latest decisions on the review screen, as the strip beside the image shows them.

The strip is the screen's undo history: the page renders it from here, so a reload (or
new filters) keeps it, and Z or a click takes back a decision the server knows. Only
live screen decisions: grid actions, imports and auto-accept are undone as operations.
"""

from django.conf import settings
from django.urls import reverse

from images.models import Image
from predictions.models import Review
from predictions.selectors.quality import image_in_overlap, overlap_enabled

RECENT_DECISIONS = 8

CONFIRMED = "confirmed"
CORRECTED = "corrected"
# No prediction was shown (none, or hidden for an independent review): neither confirmed nor corrected.
LABELLED = "labelled"


def _outcome(review: Review) -> str:
    # A blind review's strip entry must not tell, on the way back to it, what the model said.
    blind = settings.REVIEW_BLIND and overlap_enabled() and image_in_overlap(review.image_id)
    if review.agreed is None or blind:
        return LABELLED
    return CONFIRMED if review.agreed else CORRECTED


def review_decision_entry(*, review: Review) -> dict:
    """One strip entry (image, label and prediction loaded on ``review``, as review_decide returns it)."""
    image = review.image
    outcome = _outcome(review)
    return {
        "review": review.pk,
        "image": {
            "id": image.pk,
            "name": image.original_name,
            # Before the worker made one, the image itself (the strip shows it small).
            "thumbnail_url": image.thumbnail.url if image.thumbnail else image.file.url,
            "change_url": reverse("admin:images_image_change", args=[image.pk]),
        },
        "label": review.label.name,
        "outcome": outcome,
        "predicted": review.prediction.label.name if outcome == CORRECTED and review.prediction else None,
    }


def review_recent_decisions(*, reviewer, limit: int = RECENT_DECISIONS) -> list[dict]:
    """The reviewer's latest live screen decisions, newest first, as strip entries (one query)."""
    reviews = (
        Review.objects.filter(reviewer=reviewer, source=Review.Source.SCREEN, undone_at__isnull=True)
        .select_related("image", "label", "prediction__label")
        .order_by("-created_at", "-id")[:limit]
    )
    return [review_decision_entry(review=review) for review in reviews]


def image_label_given_since(*, review: Review) -> str | None:
    """The label a decision made after ``review`` gave its image, if one did (never said of a gold
    image, which comes back as any open one does): undoing ``review`` leaves that label, and the
    image is not open again."""
    return (
        Image.objects.filter(pk=review.image_id, is_gold=False, reviewed_at__gt=review.created_at)
        .values_list("final_label__name", flat=True)
        .first()
    )


def review_undone_message(*, review: Review, kept: str | None) -> str:
    """What the screen says after an undo: which decision it took back, and ``kept``, the label
    the image keeps when a decision made since gave it one (image_label_given_since)."""
    message = f"Undid: {review.label.name} on {review.image.original_name}"
    return f"{message}; the image keeps “{kept}”, given since" if kept else message
