"""The review queue: predictions of one model version whose image has no live
review and is not claimed by another reviewer.

The queue is read from the Prediction side so that the (model_version, margin)
and (model_version, confidence) indexes give the order and a small LIMIT stops
the scan early; the image's denormalised review and claim fields (kept by
predictions.services.reviews) make each step a primary-key join, not a
subquery over Review.
"""

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from django.db import models
from django.db.models import Q, QuerySet
from django.utils import timezone

from predictions.models import Label, ModelVersion, Prediction

# Keys the review screen keeps for its own commands (skip, undo, help).
RESERVED_KEYS = frozenset({"s", "z", "?"})


class QueueOrder(models.TextChoices):
    UNCERTAINTY = "uncertainty", "Most uncertain first"
    CONFIDENCE = "confidence", "Most confident first"
    UPLOAD = "upload", "Oldest upload first"
    RANDOM = "random", "Random"


@dataclass(frozen=True)
class QueueFilters:
    """What a reviewer chose to work on. model_version_id None means the active version."""

    order: str = QueueOrder.UNCERTAINTY
    model_version_id: int | None = None
    batch_id: int | None = None
    label_id: int | None = None
    confidence_min: float | None = None
    confidence_max: float | None = None


def queue_model_version(*, filters: QueueFilters) -> ModelVersion | None:
    """The version whose predictions the queue shows: the chosen one, else the active one."""
    versions = ModelVersion.objects.all()
    if filters.model_version_id is not None:
        return versions.filter(pk=filters.model_version_id).first()
    return versions.filter(is_active=True).first()


def _order_by(order: str) -> tuple[str, ...]:
    if order == QueueOrder.CONFIDENCE:
        return ("-confidence", "-id")
    if order == QueueOrder.UPLOAD:
        return ("image__uploaded_at", "image_id")
    # Uncertainty, and random (which starts at a random margin, see review_queue_head).
    return ("margin", "id")


def review_queue(
    *,
    reviewer,
    filters: QueueFilters,
    model_version: ModelVersion | None,
    exclude_image_ids: Collection[int] = (),
    now: datetime | None = None,
) -> QuerySet[Prediction]:
    """Ordered predictions waiting for review that this reviewer may take.

    Images claimed by this reviewer stay in their queue (a reload shows them
    again); images another reviewer holds are left out until the claim ends.
    """
    if model_version is None:
        return Prediction.objects.none()
    now = now or timezone.now()
    queue = (
        Prediction.objects.filter(model_version=model_version, image__final_label__isnull=True)
        .filter(
            Q(image__claimed_until__isnull=True)
            | Q(image__claimed_until__lt=now)
            | Q(image__claimed_by=reviewer)
        )
        .select_related("image", "label")
    )
    if filters.batch_id is not None:
        queue = queue.filter(image__batch_id=filters.batch_id)
    if filters.label_id is not None:
        queue = queue.filter(label_id=filters.label_id)
    if filters.confidence_min is not None:
        queue = queue.filter(confidence__gte=filters.confidence_min)
    if filters.confidence_max is not None:
        queue = queue.filter(confidence__lte=filters.confidence_max)
    if exclude_image_ids:
        queue = queue.exclude(image_id__in=list(exclude_image_ids))
    return queue.order_by(*_order_by(filters.order))


def review_queue_head(
    queue: QuerySet[Prediction], *, limit: int, random_start: float | None = None
) -> list[Prediction]:
    """The first `limit` rows of a queue.

    With random_start (random order), the queue is read from that margin on and
    wraps around to the start, so a random pick costs an index seek, never an
    ORDER BY RANDOM() over the whole table.
    """
    if random_start is None:
        return list(queue[:limit])
    head = list(queue.filter(margin__gte=random_start)[:limit])
    if len(head) < limit:
        head += list(queue.filter(margin__lt=random_start)[: limit - len(head)])
    return head


def review_queue_size_estimate(*, queue: QuerySet[Prediction], cap: int = 10_000) -> tuple[int, bool]:
    """How many are left, counting at most `cap` rows: (count, more_than_cap).

    Computed once per page load; the screen keeps it current client-side.
    """
    count = queue.order_by()[: cap + 1].count()
    return min(count, cap), count > cap


@dataclass(frozen=True)
class LabelShortcut:
    label: Label
    key: str


def label_shortcuts() -> list[LabelShortcut]:
    """Every label with its key on the review screen: Label.key, else the next free digit 1-9.

    A label whose key the screen keeps for a command, or that another label has
    already taken, gets a digit instead; labels beyond the ninth digit get no key.
    """
    labels = list(Label.objects.all())
    taken = {label.key.lower() for label in labels if label.key and label.key.lower() not in RESERVED_KEYS}
    free_digits = (str(digit) for digit in range(1, 10) if str(digit) not in taken)
    shortcuts, used = [], set()
    for label in labels:
        key = label.key.lower()
        if not key or key in RESERVED_KEYS or key in used:
            key = next(free_digits, "")
        used.add(key)
        shortcuts.append(LabelShortcut(label=label, key=key))
    return shortcuts
