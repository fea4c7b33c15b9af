"""Bulk label changes as one undoable operation.

Grid actions, label imports, auto-accept runs and "label similar" all write
through :func:`label_operation_apply`: one LabelOperation row, one Review per
changed image pointing at it, and the images' current labels updated in short
batched transactions (SQLite's write lock is never held for long, so reviewers
working at the same time see no error).

The rule that protects human work lives here, once: an operation changes only
images that have no current label, no independent reviews waiting to be settled
(an overlap image short of its k decisions, or waiting for a Lead's adjudication)
and that nobody holds on the review screen, and never gold images, unless the
caller passes ``overwrite_reviewed=True`` (a Lead's explicit choice; the admin
checks the permission). Each skipped image is counted with its reason.

Undo (:func:`label_operation_undo`) marks the operation's reviews undone and
recomputes each image's current label from its latest live review, which is
exactly the label it had before, or a decision made since.

On SQLite a writer waiting for the lock retries every 100 ms or so once it has
waited a little, while a bulk change would start its next batch right after each
commit: a reviewer's decision could miss every gap (6.5 s measured during a 100k
label import). So after about a second of batches an operation leaves the lock
free for longer than one retry interval (``_LockYield``).
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from images.models import Image
from predictions.models import LabelOperation, Review
from predictions.selectors.quality import (
    PENDING_SOURCES,
    gold_hidden_from,
    gold_images_relabelled_by_undo,
    image_label_state,
    image_review_rows,
)
from predictions.selectors.queue import review_queue_starts_invalidate
from predictions.services.label_audit import label_audit_due_check
from reviewtool.batching import id_chunks

# Images per write transaction: about 0.3 s of SQLite's write lock each at 500 in
# bench/label_import.py (less on a quiet machine); 1,000 halves the statements per
# image and keeps a hold well under a second.
WRITE_BATCH = 1000
# What the rule reads of an image (label_decision_skip_reason).
DECISION_IMAGE_FIELDS = ("pk", "final_label_id", "label_source", "claimed_by_id", "claimed_until", "is_gold")
YIELD_EVERY = 1.0  # seconds of batches before SQLite's write lock is left free...
YIELD_PAUSE = 0.12  # ...for this long
GOLD_NAMES_SHOWN = 5  # in the message refusing an undo that would change gold labels


class _LockYield:
    """Between batches on SQLite, leave the write lock free now and then (see the module docstring)."""

    def __init__(self) -> None:
        self.last = time.monotonic()

    def __call__(self) -> None:
        if connection.vendor == "sqlite" and time.monotonic() - self.last >= YIELD_EVERY:
            time.sleep(YIELD_PAUSE)
            self.last = time.monotonic()


class SkipReason:
    REVIEWED = "already reviewed"
    CLAIMED = "open on someone's review screen"
    GOLD = "gold image"
    PENDING = "waiting for independent reviews or adjudication"
    # Claimed, gold or pending, to those not told which are gold: pending would tell that
    # others decided the image, which independent reviewers are not told either.
    RESERVED = "reserved for the review screen"
    UNCHANGED = "label unchanged"
    MISSING = "image no longer exists"


@dataclass(frozen=True)
class LabelDecision:
    """The label one image should get, and the prediction it was shown with (if any)."""

    image_id: int
    label_id: int
    prediction_id: int | None = None
    predicted_label_id: int | None = None


@dataclass
class OperationResult:
    operation: LabelOperation
    changed: int = 0
    skipped: Counter = field(default_factory=Counter)  # reason -> count

    def skipped_text(self, *, gold_hidden: bool = False) -> str:
        return skipped_text(self.skipped, gold_hidden=gold_hidden)


def skipped_text(skipped: Mapping[str, int], *, gold_hidden: bool = False) -> str:
    """"3 already reviewed, 1 gold image" of skip reasons and counts (empty when nothing was
    skipped). With ``gold_hidden`` (predictions.selectors.quality.gold_hidden_from), gold images,
    claimed ones and ones waiting for independent reviews are one reason, true of all three:
    reserved for the review screen."""
    skipped = Counter(skipped)
    hidden = (SkipReason.GOLD, SkipReason.CLAIMED, SkipReason.PENDING)
    if gold_hidden and any(reason in skipped for reason in hidden):
        skipped[SkipReason.RESERVED] = sum(skipped.pop(reason, 0) for reason in hidden)
    return ", ".join(f"{count} {reason}" for reason, count in skipped.most_common())


def label_operation_apply(
    *,
    kind: str,
    decisions: Sequence[LabelDecision],
    user,
    source: str,
    description: str = "",
    params: dict | None = None,
    overwrite_reviewed: bool = False,
    now=None,
    progress: Callable[[OperationResult, int], None] | None = None,
) -> OperationResult:
    """Give each image its decided label as one operation; see the module docstring for the rule.

    ``progress(result, images_done)`` is called after each committed batch
    (a label import's job records how far it got).
    """
    now = now or timezone.now()
    operation = LabelOperation.objects.create(
        kind=kind, description=description[:300], params=params or {}, created_by=user, created_at=now
    )
    result = OperationResult(operation=operation)
    by_image = {decision.image_id: decision for decision in decisions}
    done = 0
    lock_yield = _LockYield()
    for chunk in id_chunks(sorted(by_image), WRITE_BATCH):
        lock_yield()
        _apply_chunk(
            [by_image[image_id] for image_id in chunk],
            operation=operation,
            user=user,
            source=source,
            overwrite_reviewed=overwrite_reviewed,
            now=now,
            result=result,
        )
        done += len(chunk)
        if progress is not None:
            progress(result, done)
    LabelOperation.objects.filter(pk=operation.pk).update(image_count=result.changed)
    operation.image_count = result.changed
    if result.changed:
        # New reviews count towards the automatic label audit (one cheap check per operation).
        transaction.on_commit(label_audit_due_check, robust=True)
    return result


@transaction.atomic
def _apply_chunk(
    decisions: list[LabelDecision],
    *,
    operation: LabelOperation,
    user,
    source: str,
    overwrite_reviewed: bool,
    now,
    result: OperationResult,
) -> None:
    images = {
        row["pk"]: row
        for row in Image.objects.filter(pk__in=[d.image_id for d in decisions]).values(*DECISION_IMAGE_FIELDS)
    }
    writable = []
    for decision in decisions:
        reason = label_decision_skip_reason(
            image=images.get(decision.image_id), decision=decision, user=user, now=now,
            overwrite_reviewed=overwrite_reviewed,
        )
        if reason:
            result.skipped[reason] += 1
        else:
            writable.append(decision)
    if not writable:
        return
    # The same rule as a condition on the rows, so an image reviewed or claimed
    # since it was read above is left alone.
    guard = Q(is_gold=False) if overwrite_reviewed else (
        Q(is_gold=False, final_label__isnull=True)
        & ~Q(label_source__in=PENDING_SOURCES)
        & (Q(claimed_until__isnull=True) | Q(claimed_until__lt=now) | Q(claimed_by=user))
    )
    by_label: dict[int, list[int]] = defaultdict(list)
    for decision in writable:
        by_label[decision.label_id].append(decision.image_id)
    written: set[int] = set()
    for label_id, image_ids in by_label.items():
        changes = {"final_label_id": label_id, "reviewed_by": user, "reviewed_at": now, "label_source": source}
        count = Image.objects.filter(guard, pk__in=image_ids).update(
            **changes, review_count=F("review_count") + 1, claimed_by=None, claimed_until=None
        )
        if count == len(image_ids):
            written.update(image_ids)
        else:
            # Some were reviewed or claimed since the read above (PostgreSQL; on SQLite the
            # immediate transaction holds the write lock from that read on): the written ones
            # are those that now carry this operation's label, user and time.
            written.update(Image.objects.filter(pk__in=image_ids, **changes).values_list("pk", flat=True))
    lost = len(writable) - len(written)
    if lost:
        result.skipped[SkipReason.REVIEWED] += lost
    _reviews_insert(
        rows=[
            (
                decision.image_id,
                decision.label_id,
                decision.prediction_id,
                None if decision.predicted_label_id is None else decision.predicted_label_id == decision.label_id,
            )
            for decision in writable
            if decision.image_id in written
        ],
        user=user,
        source=source,
        operation=operation,
        now=now,
    )
    result.changed += len(written)


# Review's columns that differ from row to row in an operation, in _reviews_insert's row order.
_REVIEW_ROW_FIELDS = ("image", "label", "prediction", "agreed")


def _reviews_insert(*, rows: list[tuple], user, source: str, operation: LabelOperation, now) -> None:
    """Add one Review per row (image id, label id, prediction id, agreed), all by ``user`` at ``now`` in ``operation``.

    What ``Review.objects.bulk_create`` writes, without building a model instance
    and preparing each of its fields per row: that took 9.4 of the 16 s of an
    auto-accept run over 100k predictions on SQLite. The values every row shares
    (user, source, operation, time, and the model's defaults for the rest) are
    prepared once through the model's own fields, and the rows go in multi-row
    INSERTs as large as the database's parameter limit allows (bulk_create's
    batch size). The per-row values are bound as given: Python ints, a bool or
    None, as LabelDecision declares them. Like bulk_create, no signals are sent.
    """
    if not rows:
        return
    meta = Review._meta
    per_row = [meta.get_field(name) for name in _REVIEW_ROW_FIELDS]
    shared = [field for field in meta.concrete_fields if not field.primary_key and field not in per_row]
    template = Review(reviewer=user, source=source, operation=operation, created_at=now)
    shared_values = tuple(field.get_db_prep_save(field.pre_save(template, True), connection) for field in shared)
    fields = per_row + shared
    quote = connection.ops.quote_name
    head = f"INSERT INTO {quote(meta.db_table)} ({', '.join(quote(field.column) for field in fields)}) VALUES "
    one_row = f"({', '.join(['%s'] * len(fields))})"
    size = connection.ops.bulk_batch_size(fields, rows)
    with connection.cursor() as cursor:
        for start in range(0, len(rows), size):
            part = rows[start : start + size]
            cursor.execute(
                head + ", ".join([one_row] * len(part)), [value for row in part for value in row + shared_values]
            )


def label_decision_skip_reason(
    *, image: dict | None, decision: LabelDecision, user, now, overwrite_reviewed: bool = False
) -> str:
    """Why the rule leaves this image alone ('' when it does not): applied to each batch here,
    and to previews (a label import's dry run). ``image``: its values of DECISION_IMAGE_FIELDS."""
    if image is None:
        return SkipReason.MISSING
    if image["is_gold"]:
        return SkipReason.GOLD
    if image["final_label_id"] is not None:
        if not overwrite_reviewed:
            return SkipReason.REVIEWED
        if image["final_label_id"] == decision.label_id:
            return SkipReason.UNCHANGED
    elif image["label_source"] in PENDING_SOURCES and not overwrite_reviewed:
        # Reviewers' decisions are in, not yet a label: settling them is the k-th
        # reviewer's or a Lead's adjudication, not a bulk change's.
        return SkipReason.PENDING
    held = image["claimed_until"] is not None and image["claimed_until"] >= now
    if held and image["claimed_by_id"] not in (None, user.pk) and not overwrite_reviewed:
        return SkipReason.CLAIMED
    return ""


def label_operation_undo(*, operation: LabelOperation, user) -> int:
    """Undo a whole operation; how many images it gave back their previous label (not
    counted: those whose label was decided again since, which keep that decision).

    Refused (ValidationError) when it was undone already, and while it would change
    the label of an image that is gold now: a Lead made that label the reference
    reviewers are measured against (unmarking it first is theirs to decide). Reviews
    stay in the history, marked undone.
    """
    now = timezone.now()
    with transaction.atomic():
        # Claimed first, then checked: a Lead marking gold meanwhile either committed
        # before the check, or waits for this claim and then skips these images
        # (predictions.services.quality.images_gold_set).
        claimed = LabelOperation.objects.filter(pk=operation.pk, undone_at__isnull=True).update(
            undone_at=now, undone_by=user
        )
        if not claimed:
            raise ValidationError(f"{operation} was undone already.")
        _refuse_relabelling_gold(operation=operation, user=user)
    image_ids = list(
        Review.objects.filter(operation=operation, undone_at__isnull=True).values_list("image_id", flat=True)
    )
    lock_yield = _LockYield()
    relabelled = 0
    for chunk in id_chunks(image_ids, WRITE_BATCH):
        lock_yield()
        with transaction.atomic():
            Review.objects.filter(operation=operation, image_id__in=chunk, undone_at__isnull=True).update(undone_at=now)
            relabelled += images_review_state_refresh(image_ids=chunk)
    # The images are open again, maybe before where the queues remember they start.
    review_queue_starts_invalidate()
    operation.undone_at, operation.undone_by = now, user
    return relabelled


def _refuse_relabelling_gold(*, operation: LabelOperation, user) -> None:
    gold = gold_images_relabelled_by_undo(reviews=Review.objects.filter(operation=operation))
    if gold and gold_hidden_from(user):  # in the words the screen's undo uses: which images are gold is not said
        raise ValidationError(f"{operation} can no longer be undone here: a Lead can undo it.")
    if gold:
        names = ", ".join(gold[:GOLD_NAMES_SHOWN]) + (", …" if len(gold) > GOLD_NAMES_SHOWN else "")
        raise ValidationError(
            f"{operation} was not undone: it would change the reference label of {len(gold)} gold image(s) ({names}). "
            "Unmark them first (the image page's Gold row, or the image list's “Unmark gold” action); "
            "then undo again."
        )


def images_review_state_refresh(*, image_ids: Iterable[int]) -> int:
    """Recompute the current label of many images from their reviews (predictions.selectors.quality's
    rule: the latest labelling review wins; gold checks never count; overlap reviews by majority);
    how many of them it gave another label (or took theirs away)."""
    image_ids = list(image_ids)
    labels_before = dict(Image.objects.filter(pk__in=image_ids).values_list("pk", "final_label_id"))
    rows = image_review_rows(image_ids=image_ids)
    # One UPDATE per distinct state: undoing a bulk change mostly leaves many
    # images in the same one (no label), which then costs one statement.
    by_state: dict[tuple, list[int]] = defaultdict(list)
    for image_id in image_ids:
        by_state[tuple(image_label_state(rows.get(image_id, [])).as_update().items())].append(image_id)
    relabelled = 0
    for state, ids in by_state.items():
        Image.objects.filter(pk__in=ids).update(**dict(state))
        label_id = dict(state)["final_label_id"]
        relabelled += sum(1 for image_id in ids if image_id in labels_before and labels_before[image_id] != label_id)
    return relabelled
