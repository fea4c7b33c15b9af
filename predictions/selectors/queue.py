"""The review queue: predictions of one model version whose image has no live
review and is not claimed by another reviewer.

The queue is read from the Prediction side so that the (model_version, margin)
and (model_version, confidence) indexes (and the (image, model_version) unique
index for upload order) give the order and a small LIMIT stops the scan early;
the image's denormalised review and claim fields (kept by
predictions.services.reviews) make each step a primary-key join, not a
subquery over Review.

Reviewed rows stay in those indexes, and the uncertainty queue reviews its
head first, so a plain scan would step over every reviewed row before the
first open one (0.4 s at 30k reviewed on SQLite). review_queue_start()
remembers where the open part of each queue begins.

The audit order is the one order whose draws feed a statistic: auto-accept's
bound (predictions.services.auto_accept) needs each open image of the version
equally likely at every draw, so it ignores the other filters and draws with
review_queue_sample_ids(), not from a random start.
"""

import hashlib
import random
import time
from collections.abc import Collection
from dataclasses import astuple, dataclass
from datetime import datetime

from django.conf import settings
from django.core.cache import cache
from django.db import models
from django.db.models import Max, Min, Q, QuerySet
from django.utils import timezone

from predictions.models import Label, ModelVersion, Prediction, Review
from predictions.selectors.label_audit import (
    SUSPECTS_ORDER_BY,
    label_audit_latest_finished,
    label_suspects_not_by_q,
    label_suspects_open_image_q,
)
from predictions.selectors.quality import ADJUDICATION, overlap_enabled, overlap_reviewed_by_q

# Keys the review screen keeps for its own commands (skip, undo, help).
RESERVED_KEYS = frozenset({"s", "z", "?"})


class QueueOrder(models.TextChoices):
    UNCERTAINTY = "uncertainty", "Most uncertain first"
    CONFIDENCE = "confidence", "Most confident first"
    UPLOAD = "upload", "Oldest upload first"
    RANDOM = "random", "Random"
    AUDIT = "audit", "Audit (random)"
    # Leads only: overlap images whose k independent reviews disagreed (predictions/selectors/quality.py).
    ADJUDICATION = ADJUDICATION, "Adjudication (Leads)"
    # Flagged labels of the latest label audit, re-checked by another reviewer (predictions/selectors/label_audit.py).
    SUSPECTS = "suspects", "Suspected label errors"


@dataclass(frozen=True)
class QueueFilters:
    """What a reviewer chose to work on. model_version_id None means the active version."""

    order: str = QueueOrder.UNCERTAINTY
    model_version_id: int | None = None
    batch_id: int | None = None
    label_id: int | None = None
    confidence_min: float | None = None
    confidence_max: float | None = None
    # Auto-accepted images have a label and so are out of the queue; this puts them back to re-review.
    include_auto: bool = False


def _order_by(order: str) -> tuple[str, ...]:
    if order == QueueOrder.SUSPECTS:
        return SUSPECTS_ORDER_BY  # most doubtful label first
    if order == QueueOrder.AUDIT:
        return ("id",)  # draws are made by review_queue_sample_ids; this only makes listings stable
    if order == QueueOrder.CONFIDENCE:
        return ("-confidence", "-id")
    if order in (QueueOrder.UPLOAD, QueueOrder.ADJUDICATION):
        # Image ids follow the upload sequence, and the (image, model_version)
        # unique index serves this order without a sort.
        return ("image_id",)
    # Uncertainty, and random (which starts at a random margin, see review_queue_head).
    return ("margin", "id")


# order -> (the order's leading field, whether it ascends)
_START_KEYS = {
    QueueOrder.UNCERTAINTY: ("margin", True),
    QueueOrder.CONFIDENCE: ("confidence", False),
    QueueOrder.UPLOAD: ("image_id", True),
}
_START_GENERATION_KEY = "review-queue-start-generation"


def queue_open_image_q(*, filters: QueueFilters, prefix: str = "") -> Q:
    """Which images a queue may serve: no current label, or (when asked) an auto-accepted one.

    An overlap image whose reviews disagreed waits for a Lead: only the adjudication order serves it.
    The suspects order serves labelled images: those its label audit flagged (selectors.label_audit).
    """
    if filters.order == QueueOrder.SUSPECTS:
        return label_suspects_open_image_q(audit=label_audit_latest_finished(), prefix=prefix)
    open_images = Q(**{f"{prefix}final_label__isnull": True})
    if filters.order == QueueOrder.ADJUDICATION:
        return open_images & Q(**{f"{prefix}label_source": ADJUDICATION})
    open_images &= ~Q(**{f"{prefix}label_source": ADJUDICATION})
    if filters.include_auto and filters.order != QueueOrder.AUDIT:
        open_images |= Q(**{f"{prefix}label_source": Review.Source.AUTO})
    return open_images


def _open_predictions(*, filters: QueueFilters, model_version: ModelVersion) -> QuerySet[Prediction]:
    """The version's predictions whose image has no live review, with the chosen filters.

    The audit order takes none of the filters: its reviews must be a uniform sample of
    every open image of the version, the population an auto-accept run accepts from.
    """
    predictions = Prediction.objects.filter(
        queue_open_image_q(filters=filters, prefix="image__"), model_version=model_version
    )
    return predictions_chosen(predictions, filters=filters)


def predictions_chosen(predictions: QuerySet[Prediction], *, filters: QueueFilters) -> QuerySet[Prediction]:
    """The predictions a reviewer's filters keep: batch, predicted label, confidence (none in the
    audit order). For the open images, and the gold ones mixed in among them."""
    if filters.order == QueueOrder.AUDIT:
        return predictions
    if filters.batch_id is not None:
        predictions = predictions.filter(image__batch_id=filters.batch_id)
    if filters.label_id is not None:
        predictions = predictions.filter(label_id=filters.label_id)
    if filters.confidence_min is not None:
        predictions = predictions.filter(confidence__gte=filters.confidence_min)
    if filters.confidence_max is not None:
        predictions = predictions.filter(confidence__lte=filters.confidence_max)
    return predictions


def review_queue_starts_invalidate() -> None:
    """Forget the remembered queue starts (an undone review reopens a row before them)."""
    try:
        cache.incr(_START_GENERATION_KEY)
    except ValueError:
        cache.set(_START_GENERATION_KEY, 1, None)


def review_queue_start(*, filters: QueueFilters, model_version: ModelVersion):
    """The order key where the open part of this queue begins, or None (start at the top).

    Every row before it had a live review when it was computed. Rows added
    since (new predictions) are checked on each call by primary key, which
    only reads the new rows; an undo in this process forgets the starts; and
    each start is recomputed from the top at least every
    min(REVIEW_CLAIM_SECONDS, 300) seconds, so an image reopened elsewhere is
    back before its undoer's claim on it ends.
    """
    if filters.order not in _START_KEYS:
        return None
    field, ascending = _START_KEYS[filters.order]
    generation = cache.get(_START_GENERATION_KEY, 0)
    identity = repr((model_version.pk, model_version.created_at.isoformat(), astuple(filters), generation))
    key = "review-queue-start:" + hashlib.sha256(identity.encode()).hexdigest()
    latest_id = Prediction.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
    open_rows = _open_predictions(filters=filters, model_version=model_version)
    refresh_seconds = min(settings.REVIEW_CLAIM_SECONDS, 300)
    remembered = cache.get(key)
    if remembered is None or time.monotonic() - remembered[2] > refresh_seconds:
        start = open_rows.order_by(*_order_by(filters.order)).values_list(field, flat=True).first()
        computed_at = time.monotonic()
    else:
        start, seen_id, computed_at = remembered
        if latest_id > seen_id:
            before = {f"{field}__{'lt' if ascending else 'gt'}": start}
            earliest = (Min if ascending else Max)(field)
            arrived = open_rows.filter(pk__gt=seen_id, **before).aggregate(value=earliest)["value"]
            if arrived is not None:
                start = arrived
    if start is None:
        # Nothing open: recompute next time rather than hide new arrivals.
        cache.delete(key)
        return None
    cache.set(key, (start, latest_id, computed_at), refresh_seconds * 2)
    return start


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
        _open_predictions(filters=filters, model_version=model_version)
        .filter(
            Q(image__claimed_until__isnull=True)
            | Q(image__claimed_until__lt=now)
            | Q(image__claimed_by=reviewer)
        )
        .select_related("image", "label")
    )
    start = review_queue_start(filters=filters, model_version=model_version)
    if start is not None:
        field, ascending = _START_KEYS[filters.order]
        queue = queue.filter(**{f"{field}__{'gte' if ascending else 'lte'}": start})
    if exclude_image_ids:
        queue = queue.exclude(image_id__in=list(exclude_image_ids))
    if filters.order == QueueOrder.SUSPECTS:
        queue = queue.filter(label_suspects_not_by_q(reviewer=reviewer, prefix="image__"))
    if overlap_enabled():
        # Each of an overlap image's k reviews comes from a different reviewer.
        queue = queue.exclude(overlap_reviewed_by_q(reviewer=reviewer, prefix="image__"))
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


# Random ids tried per query by the audit draw, and rounds before it reads the queue's ids instead.
SAMPLE_DRAWS = 256
SAMPLE_ROUNDS = 2


def review_queue_sample_ids(
    queue: QuerySet[Prediction], *, limit: int, rng: random.Random | None = None
) -> list[int]:
    """Up to `limit` prediction ids of `queue` drawn uniformly at random, without replacement.

    Every row of the queue is equally likely (the random order's random start is
    not: a row after a wide gap in margins comes up more often). Method: rejection
    sampling over the Prediction id range. Ids are drawn uniformly from [min id,
    max id] and kept, in the order drawn, when they are rows of the queue and not
    kept yet; whatever the rows kept so far, the next one kept is uniform over the
    others, since every remaining row is hit with the same chance. A round of
    draws is one indexed primary-key query. When the queue is a small share of the
    id range (other versions' rows, mostly reviewed), SAMPLE_ROUNDS rounds may not
    find enough; the rest is then picked uniformly from the queue's ids, read in
    full. The switch depends only on how many draws missed, never on which rows
    were kept, so each pick is still uniform over the rows not yet picked.
    """
    rng = rng or random
    if limit < 1:
        return []
    ids = queue.order_by().values_list("pk", flat=True)
    chosen: list[int] = []
    bounds = Prediction.objects.aggregate(low=Min("pk"), high=Max("pk"))
    for _round in range(SAMPLE_ROUNDS if bounds["low"] is not None else 0):
        draws = [rng.randint(bounds["low"], bounds["high"]) for _ in range(SAMPLE_DRAWS)]
        found = set(ids.filter(pk__in=set(draws)))
        for pk in draws:
            if pk in found and pk not in chosen:
                chosen.append(pk)
                if len(chosen) == limit:
                    return chosen
    rest = sorted(set(ids) - set(chosen))
    return chosen + rng.sample(rest, min(limit - len(chosen), len(rest)))


def review_queue_size_estimate(*, queue: QuerySet[Prediction], cap: int = 500) -> tuple[int, bool]:
    """How many are left, counting at most `cap` rows: (count, more_than_cap).

    Computed once per page load; the screen keeps it current client-side and
    shows "500+" beyond the cap. Counting walks the queue's rows one by one
    (two lookups each, ~6 us a row at 100k predictions on SQLite), so the cap
    bounds the page's cost: 10,000 made the screen 3-4 times slower at 100k
    than at 1k, 1,000 still ~1.5 times; past a few hundred, the exact number
    changes no reviewer's plans.
    """
    count = queue.order_by()[: cap + 1].count()
    return min(count, cap), count > cap


@dataclass(frozen=True)
class LabelShortcut:
    label: Label
    key: str


def label_shortcuts() -> list[LabelShortcut]:
    """Every label with its key on the review screen: Label.key, else the next free digit 1-9.

    A label whose key the screen keeps for a command, or that an older label
    already has, gets a digit instead; labels beyond the ninth digit get no key.
    Keys are handed out oldest label first, so a label added later, wherever it
    sorts, never moves an existing label's key (predictions.services.labels).
    """
    labels = list(Label.objects.all())
    taken = {label.key.lower() for label in labels if label.key and label.key.lower() not in RESERVED_KEYS}
    free_digits = (str(digit) for digit in range(1, 10) if str(digit) not in taken)
    keys, used = {}, set()
    for label in sorted(labels, key=lambda label: label.pk):
        key = label.key.lower()
        if not key or key in RESERVED_KEYS or key in used:
            key = next(free_digits, "")
        used.add(key)
        keys[label.pk] = key
    return [LabelShortcut(label=label, key=keys[label.pk]) for label in labels]
