"""Gold images and overlapping reviews: which images they are, and what an image's reviews decide.

Three kinds of screen decision measure reviewers instead of (only) labelling images;
each is a Review whose ``queue_order`` names it:

- ``gold``: a decision on a gold image (a Lead's verified label, mixed into the
  queue without telling). It never changes the image's label; it is compared with it.
- ``overlap``: one of the k independent decisions on an overlap image (a stable,
  hash-chosen share of the images: the upload batch's ``overlap_share`` where a
  Lead set one, else REVIEW_OVERLAP_SHARE). The image's label is the majority once k
  reviewers have decided; until then it stays open, and a tie goes to adjudication.
- ``adjudication``: a Lead's decision on an image the k reviewers disagreed about;
  final like any other labelling decision.

While an overlap image waits, ``Image.label_source`` says why it has no label:
``overlap`` (fewer than k decisions in) or ``adjudication`` (waiting for a Lead).
The queue reads that column, so no subquery over Review decides what is open.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from django.conf import settings
from django.db.models import Exists, OuterRef, Q, QuerySet

from images.models import Image, UploadBatch
from predictions.models import Review

GOLD = "gold"
OVERLAP = "overlap"
ADJUDICATION = "adjudication"
# Queue orders whose decisions never set the image's label directly.
NOT_LABELLING = frozenset({GOLD, OVERLAP})
# The label_source of an image without a label whose independent reviews are not settled
# (image_label_state): waiting for more overlap decisions, or for a Lead's adjudication.
PENDING_SOURCES = (OVERLAP, ADJUDICATION)


def image_in_overlap(image_id: int, *, share: float | None = None) -> bool:
    """Whether this image gets k independent reviews: a hash of its id below the share
    (REVIEW_OVERLAP_SHARE when none is given; images_in_overlap reads the batch's).

    A hash, not a random draw, so the choice is the same in every process and
    after every restart, and needs no column; raising the share adds images,
    never removes one chosen before.
    """
    share = settings.REVIEW_OVERLAP_SHARE if share is None else share
    if share <= 0:
        return False
    digest = hashlib.sha256(f"review-overlap:{image_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


def overlap_shares(*, batch_ids: Iterable[int | None]) -> dict[int | None, float]:
    """batch id -> the share of its images that get k reviews: the batch's own overlap_share
    when set, else REVIEW_OVERLAP_SHARE (also under None, for images without a batch). One query."""
    ids = {pk for pk in batch_ids if pk is not None}
    own = dict(UploadBatch.objects.filter(pk__in=ids, overlap_share__isnull=False).values_list("pk", "overlap_share"))
    default = settings.REVIEW_OVERLAP_SHARE
    return {None: default} | {pk: own.get(pk, default) for pk in ids}


def images_in_overlap(*, images: Iterable[Image]) -> set[int]:
    """The ids of these images that get k independent reviews, each under its batch's share (one query)."""
    images = list(images)
    shares = overlap_shares(batch_ids={image.batch_id for image in images})
    return {image.pk for image in images if image_in_overlap(image.pk, share=shares[image.batch_id])}


def overlap_enabled() -> bool:
    """Whether any image may get overlap reviews: a global share, or a batch's own (one small query).

    Images stay marked (label_source "overlap") once their first overlap decision is in,
    so this only gates work for images chosen while a share was set.
    """
    if settings.REVIEW_OVERLAP_K < 2:
        return False
    return settings.REVIEW_OVERLAP_SHARE > 0 or UploadBatch.objects.filter(overlap_share__gt=0).exists()


def overlap_reviewed_by_q(*, reviewer, prefix: str = "") -> Q:
    """Overlap images still waiting for decisions on which this reviewer has one (left out of their queue).

    ``prefix``: the path to the image ("image__" from Prediction). The Exists only
    matters for rows whose image waits for overlap decisions, and is one lookup
    in Review's (image, created_at) index.
    """
    mine = Review.objects.filter(
        image_id=OuterRef(f"{prefix}pk"),
        reviewer=reviewer,
        queue_order=OVERLAP,
        undone_at__isnull=True,
    )
    return Q(**{f"{prefix}label_source": OVERLAP}) & Q(Exists(mine))


@dataclass(frozen=True)
class ReviewRow:
    """What the current-label rule reads of one live review."""

    label_id: int
    reviewer_id: int
    created_at: object
    source: str
    queue_order: str


@dataclass(frozen=True)
class LabelState:
    """An image's denormalised review fields, as the rule computes them."""

    final_label_id: int | None
    reviewed_by_id: int | None
    reviewed_at: object
    label_source: str
    review_count: int

    def as_update(self) -> dict:
        return {
            "final_label_id": self.final_label_id,
            "reviewed_by_id": self.reviewed_by_id,
            "reviewed_at": self.reviewed_at,
            "label_source": self.label_source,
            "review_count": self.review_count,
        }


def image_label_state(reviews: Iterable[ReviewRow], *, k: int | None = None) -> LabelState:
    """The current label from an image's live reviews, newest first.

    The rule: gold checks are ignored. The latest labelling decision (screen,
    grid, import, auto-accept, similar, adjudication) wins. Without one, the
    overlap decisions decide: each reviewer's latest counts once; with k or more
    in, a label chosen by more than half of them is the label (the newest such
    decision gives its reviewer and time); with k or more and no majority, the
    image waits for adjudication; with fewer, for more overlap decisions.
    ``review_count`` counts every live decision but gold checks.
    """
    k = settings.REVIEW_OVERLAP_K if k is None else k
    counted = [review for review in reviews if review.queue_order != GOLD]
    labelling = next((review for review in counted if review.queue_order != OVERLAP), None)
    if labelling is not None:
        return LabelState(labelling.label_id, labelling.reviewer_id, labelling.created_at, labelling.source, len(counted))
    latest_by_reviewer: dict[int, ReviewRow] = {}
    for review in counted:
        latest_by_reviewer.setdefault(review.reviewer_id, review)
    votes = list(latest_by_reviewer.values())
    if not votes:
        return LabelState(None, None, None, "", 0)
    if len(votes) < k:
        return LabelState(None, None, None, OVERLAP, len(counted))
    label_id, count = Counter(vote.label_id for vote in votes).most_common(1)[0]
    if count * 2 <= len(votes):
        return LabelState(None, None, None, ADJUDICATION, len(counted))
    newest = next(vote for vote in votes if vote.label_id == label_id)
    return LabelState(label_id, newest.reviewer_id, newest.created_at, newest.source, len(counted))


def image_review_rows(*, image_ids: Iterable[int], leaving_out: Q | None = None) -> dict[int, list[ReviewRow]]:
    """image id -> its live reviews as ReviewRow, newest first (one query); without the
    reviews `leaving_out` matches: as they would be once those are undone."""
    rows: dict[int, list[ReviewRow]] = {}
    live = Review.objects.filter(image_id__in=list(image_ids), undone_at__isnull=True)
    if leaving_out is not None:
        live = live.exclude(leaving_out)
    live = live.order_by("image_id", "-created_at", "-id").values_list(
        "image_id", "label_id", "reviewer_id", "created_at", "source", "queue_order"
    )
    for image_id, *fields in live:
        rows.setdefault(image_id, []).append(ReviewRow(*fields))
    return rows


def gold_images_relabelled_by_undo(*, reviews: QuerySet[Review]) -> list[str]:
    """The names of the images gold now whose label would change if these reviews were undone.

    A gold image's label is the reference reviewers are measured against, set by a
    Lead: undoing the decision it came from would leave it with another label or none
    (every later gold check then counted wrong). Both undos (an operation, a screen
    decision) ask this first and refuse.
    """
    live = reviews.filter(undone_at__isnull=True)
    gold = {
        image_id: (final_label_id, name)
        for image_id, final_label_id, name in live.filter(image__is_gold=True).values_list(
            "image_id", "image__final_label_id", "image__original_name"
        )
    }
    if not gold:
        return []
    after = image_review_rows(image_ids=gold, leaving_out=Q(pk__in=live.values("pk")))
    return sorted(
        name
        for image_id, (label_id, name) in gold.items()
        if image_label_state(after.get(image_id, [])).final_label_id != label_id
    )


def overlap_votes(*, image_ids: Iterable[int]) -> dict[int, Counter]:
    """image id -> Counter of label names its live overlap decisions gave (what a Lead adjudicates)."""
    votes: dict[int, Counter] = {}
    live = Review.objects.filter(image_id__in=list(image_ids), undone_at__isnull=True, queue_order=OVERLAP)
    for image_id, label in live.values_list("image_id", "label__name"):
        votes.setdefault(image_id, Counter())[label] += 1
    return votes


def review_items_quality(*, items: list[dict], predictions: list) -> list[dict]:
    """What gold, overlap and adjudication change in the screen's items (one per prediction, image loaded).

    A gold image's item is any open image's item: the model's suggestion, no label,
    no mark. With settings.REVIEW_BLIND, every image the overlap hash picks (under its
    batch's share; gold ones too, so they still look alike) is shown without the model's suggestion, so
    independent reviewers do not anchor on it; the decision then records the
    version's prediction server-side. An image waiting for adjudication (only
    Leads are served one) carries the reviewers' votes instead.
    """
    blind = settings.REVIEW_BLIND and overlap_enabled()
    overlap_ids = images_in_overlap(images=[p.image for p in predictions]) if blind else set()
    waiting = {
        p.image_id for p in predictions if p.image.final_label_id is None and p.image.label_source == ADJUDICATION
    }
    votes = overlap_votes(image_ids=waiting) if waiting else {}
    for item, prediction in zip(items, predictions, strict=True):
        image_id = prediction.image_id
        if image_id in waiting:
            item["votes"] = [{"label": label, "count": count} for label, count in votes[image_id].most_common()]
        elif image_id in overlap_ids:
            item["prediction"] = {
                "id": None, "blind": True, "label_id": None, "label": "", "confidence": None, "margin": None, "top": [],
            }
    return items


def gold_hidden_from(user) -> bool:
    """Whether gold images must look like open ones to ``user``: to everyone but the Leads who
    choose them. Reviewers are measured on them without being told which they are, so no list
    may show a gold image's label (nor sort or filter by it)."""
    return not user.has_perm("predictions.change_review")


def image_label_seen_id(*, image: Image, user) -> int | None:
    """The image's label as ``user`` sees it: none on a gold image for those gold_hidden_from."""
    return None if image.is_gold and gold_hidden_from(user) else image.final_label_id


def reviews_visible_to(*, user, reviews):
    """The review history a user may read: a Lead all of it; anyone else not the others' gold
    checks, nor the others' decisions on images gold now (the one that gave the reference
    label among them), nor the others' decisions on overlap images still waiting (they would
    anchor the next independent decision)."""
    if not gold_hidden_from(user):
        return reviews
    waiting = Q(image__final_label__isnull=True, image__label_source__in=[OVERLAP, ADJUDICATION])
    others = ~Q(reviewer=user)
    hidden = Q(queue_order=GOLD) | Q(image__is_gold=True) | (Q(queue_order=OVERLAP) & waiting)
    return reviews.exclude(others & hidden)
