"""Reviewer quality, the writes: gold images marked by Leads and mixed into the queue,
and which kind of decision (gold check, overlap review, adjudication) a screen decision is.

The rules (what counts, what an image's reviews decide) are in
predictions/selectors/quality.py; the statistics in predictions/selectors/reviewer_stats.py.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Collection
from dataclasses import dataclass, field

from django.conf import settings
from django.db import transaction

from images.models import Image
from predictions.models import LabelOperation, ModelVersion, Prediction, Review
from predictions.selectors.quality import ADJUDICATION, GOLD, OVERLAP, images_in_overlap
from predictions.selectors.queue import QueueFilters, QueueOrder, predictions_chosen, review_queue
from reviewtool.batching import IN_QUERY_MAX_IDS, id_chunks

# Who may mark gold images and adjudicate: Leads (predictions/roles.py).
LEAD_PERMISSION = "predictions.change_review"


class GoldSkip:
    UNREVIEWED = "no label yet"
    AUTO = "label not checked by a person (auto-accepted)"
    UNCHANGED = "already so"
    UNDOING = "label being undone"
    RELABELLED = "label changed meanwhile"


@dataclass
class GoldResult:
    changed: int = 0
    skipped: Counter = field(default_factory=Counter)

    def skipped_text(self) -> str:
        return ", ".join(f"{count} {reason}" for reason, count in self.skipped.most_common())


@transaction.atomic
def images_gold_set(*, image_ids: Collection[int], gold: bool) -> GoldResult:
    """Mark images gold (or unmark them). Only an image with a label a person gave can be gold:
    its label is the reference a reviewer's decision is compared with.

    The label marked is the one read here: an image relabelled before the mark is
    written (an undo from the review screen) is skipped, as is one whose label a bulk
    operation being undone gave (its undo would take it away: label_operation_undo).
    """
    result = GoldResult()
    image_ids = list(image_ids)
    rows = list(Image.objects.filter(pk__in=image_ids).values_list("pk", "is_gold", "final_label_id", "label_source"))
    undoing = _images_of_operations_being_undone(image_ids=image_ids) if gold else set()
    unmarking: list[int] = []
    marking: dict[int, list[int]] = defaultdict(list)  # by the label read
    for pk, is_gold, final_label_id, label_source in rows:
        if is_gold == gold:
            result.skipped[GoldSkip.UNCHANGED] += 1
        elif not gold:
            unmarking.append(pk)
        elif final_label_id is None:
            result.skipped[GoldSkip.UNREVIEWED] += 1
        elif label_source == Review.Source.AUTO:
            result.skipped[GoldSkip.AUTO] += 1
        elif pk in undoing:
            result.skipped[GoldSkip.UNDOING] += 1
        else:
            marking[final_label_id].append(pk)
    result.changed = Image.objects.filter(pk__in=unmarking).update(is_gold=False) if unmarking else 0
    for final_label_id, pks in marking.items():
        marked = Image.objects.filter(pk__in=pks, final_label_id=final_label_id).update(is_gold=True)
        result.changed += marked
        if marked < len(pks):
            result.skipped[GoldSkip.RELABELLED] += len(pks) - marked
    return result


def _images_of_operations_being_undone(*, image_ids: list[int]) -> set[int]:
    """Images with a live review from a bulk operation whose undo has begun.

    The operations' rows are locked first: an undo that has claimed one commits
    before this reads it, and one that has not waits for this transaction, then
    finds the images gold (label_operation_undo checks after its claim).
    """
    live = Review.objects.filter(image_id__in=image_ids, undone_at__isnull=True, operation__isnull=False)
    operations = LabelOperation.objects.select_for_update().filter(pk__in=live.values("operation_id"))
    undoing = [pk for pk, undone_at in operations.values_list("pk", "undone_at") if undone_at is not None]
    if not undoing:
        return set()
    return set(live.filter(operation_id__in=undoing).values_list("image_id", flat=True))


# --- the queue: gold images mixed in --------------------------------------------------


def gold_draw_count(*, count: int, order: str, rng: random.Random | None = None) -> int:
    """How many of `count` screen items are gold: each is, independently, with REVIEW_GOLD_RATE.

    None in the adjudication order (a Lead's queue of disagreements, not a measurement),
    nor in the suspects order (flagged labels, each item with its suspicion: a gold one
    would be the one without).
    """
    if order in (QueueOrder.ADJUDICATION, QueueOrder.SUSPECTS) or settings.REVIEW_GOLD_RATE <= 0:
        return 0
    rng = rng or random
    return sum(1 for _ in range(count) if rng.random() < settings.REVIEW_GOLD_RATE)


def gold_pick(
    *,
    reviewer,
    model_version: ModelVersion,
    wanted: int,
    avoid: Collection[int],
    filters: QueueFilters | None = None,
    rng: random.Random | None = None,
) -> list[Prediction]:
    """Up to `wanted` gold images (their `model_version` prediction) this reviewer never decided,
    among those the reviewer's `filters` keep (an item from another batch would stand out).

    "Never": no live decision of theirs on the image at all, a gold check or the
    decision that made its label, so nobody is measured on an image they remember.
    An undone gold check does not count, so the image may come back. Gold images
    are not claimed: several reviewers may look at one at the same time.
    """
    if wanted < 1:
        return []
    # From the gold images (a partial index holds them) outwards: the queue asks this on
    # every claim, and starting from the version's predictions read them all.
    avoid = set(avoid)
    gold_ids = [pk for pk in Image.objects.filter(is_gold=True).values_list("pk", flat=True) if pk not in avoid]
    candidates = []
    for chunk in id_chunks(gold_ids, IN_QUERY_MAX_IDS):
        decided = set(
            Review.objects.filter(image_id__in=chunk, reviewer=reviewer, undone_at__isnull=True).values_list(
                "image_id", flat=True
            )
        )
        predictions = Prediction.objects.filter(
            model_version=model_version, image_id__in=[pk for pk in chunk if pk not in decided]
        )
        if filters is not None:
            predictions = predictions_chosen(predictions, filters=filters)
        candidates += predictions.values_list("pk", flat=True)
    picked = (rng or random).sample(candidates, min(wanted, len(candidates)))
    rows = Prediction.objects.select_related("image", "label").in_bulk(picked)
    return [rows[pk] for pk in picked]


def gold_mix_in(
    *,
    reviewer,
    filters: QueueFilters,
    model_version: ModelVersion,
    claimed: list[Prediction],
    gold: list[Prediction],
    avoid: Collection[int],
    rng: random.Random | None = None,
) -> list[Prediction]:
    """The claimed items with the gold ones at random places; no gold once the queue is empty
    (a queue that keeps serving after "nothing left" would tell which images are gold)."""
    if not gold:
        return claimed
    if not claimed and not review_queue(
        reviewer=reviewer, filters=filters, model_version=model_version, exclude_image_ids=avoid
    ).exists():
        return []
    rng = rng or random
    mixed = list(claimed)
    for prediction in gold:
        mixed.insert(rng.randint(0, len(mixed)), prediction)
    return mixed


# --- a screen decision: which kind it is ------------------------------------------------


def review_decision_order(*, image: Image, reviewer, queue_order: str, reopened: bool = False) -> str:
    """The queue_order a screen decision on `image` is recorded with, or ReviewConflict.

    Read from the image, never from what the screen says: gold, adjudication and
    overlap are the server's knowledge. A gold image gives a gold check (once per
    reviewer while it stands); an image waiting for adjudication takes a Lead's
    decision from the adjudication order only; an open overlap image takes one
    decision per reviewer (whether it is one: its batch's overlap share, else the
    global one). Anything else keeps the order that served it.
    """
    from predictions.services.reviews import ReviewConflict

    def decided_before(**kinds) -> bool:
        return Review.objects.filter(image=image, reviewer=reviewer, undone_at__isnull=True, **kinds).exists()

    if image.is_gold:
        if decided_before():
            raise ReviewConflict(f"{image} was already reviewed.")  # as an open image's second decision
        return GOLD
    waiting = image.final_label_id is None and image.label_source == ADJUDICATION
    if queue_order == ADJUDICATION or waiting:
        if not (waiting and queue_order == ADJUDICATION and reviewer.has_perm(LEAD_PERMISSION)):
            raise ReviewConflict(
                f"{image} waits for a Lead's adjudication." if waiting else f"{image} is not waiting for adjudication."
            )
        return ADJUDICATION
    if image.final_label_id is None and not reopened and images_in_overlap(images=[image]):
        if decided_before(queue_order=OVERLAP):
            raise ReviewConflict(f"{image} was already reviewed by you; it waits for other reviewers.")
        return OVERLAP
    return queue_order
