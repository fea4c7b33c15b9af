"""Agreement between reviewers on overlap images: Cohen's kappa per pair of reviewers and
Krippendorff's alpha over all of them. Read by the admin's statistics page, for Leads
(predictions/admin/reviewer_stats_views.py), beside predictions/selectors/reviewer_stats.py.

Counted: live screen decisions on overlap images (the same decisions as the reviewer
statistics); the statistics themselves are in predictions/statistics/agreement.py.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import combinations, groupby
from operator import itemgetter

from django.contrib.auth import get_user_model
from django.db import connection
from django.db.models import Case, Count, F, Max, Min, Value, When

from predictions.models import Label
from predictions.selectors.quality import OVERLAP
from predictions.selectors.reviewer_stats import screen_decisions
from predictions.statistics.agreement import (
    alpha_from_coincidences,
    alpha_per_class_from_coincidences,
    coincidences,
    cohen_kappa_from_table,
)

# One decision as one number, label × PACK + reviewer: see _decision_sets.
PACK = 2**31


@dataclass(frozen=True)
class PairAgreement:
    first: str
    second: str
    images: int  # overlap images both decided
    agreed: int
    kappa: float  # nan when undefined (no images, or no variation)


@dataclass
class Agreement:
    pairs: list[PairAgreement] = field(default_factory=list)
    alpha: float = float("nan")
    alpha_per_class: dict[str, float] = field(default_factory=dict)
    images: int = 0  # overlap images with at least two decisions
    decisions: int = 0  # the decisions on those images


def overlap_agreement(*, usernames: Mapping[int, str] | None = None) -> Agreement:
    """Cohen's kappa per reviewer pair over the overlap images both decided, Krippendorff's
    alpha (nominal) over every overlap image with two or more decisions, overall and per class.

    Both come from the same counts: how many overlap images received each set of
    (reviewer, label) decisions (_decision_sets). A pair of reviewers' contingency table
    sums the sets they both decided in; alpha needs only each set's labels. Gold checks
    and adjudications are not independent overlap decisions and are left out.
    `usernames` (reviewer id -> name) saves looking the names up when the caller has them.
    """
    names = dict(Label.objects.values_list("pk", "name"))
    packable = max(names, default=0) < 2**32 and get_user_model()._meta.pk.get_internal_type() == "AutoField"
    tables: dict[tuple[int, int], Counter] = defaultdict(Counter)
    lists: Counter = Counter()
    for decisions, images in _decision_sets(packable=packable).items():
        lists[tuple(label for _, label in decisions)] += images
        # Sorted by reviewer: the first of a pair is the one with the lower id.
        for (first, label_a), (second, label_b) in combinations(decisions, 2):
            if first != second:
                tables[(first, second)][(label_a, label_b)] += images
    reviewers = {reviewer for pair in tables for reviewer in pair}
    if usernames is None or not reviewers <= usernames.keys():
        usernames = dict(get_user_model().objects.filter(pk__in=reviewers).values_list("pk", "username"))
    pairs = [
        PairAgreement(
            usernames[first], usernames[second], images=sum(table.values()),
            agreed=sum(n for (label_a, label_b), n in table.items() if label_a == label_b),
            kappa=cohen_kappa_from_table(table),
        )  # fmt: skip
        for (first, second), table in tables.items()
    ]
    table = coincidences(lists)
    per_class = alpha_per_class_from_coincidences(table)
    return Agreement(
        pairs=sorted(pairs, key=lambda pair: (pair.first, pair.second)),
        alpha=alpha_from_coincidences(table),
        alpha_per_class={names.get(label, str(label)): value for label, value in per_class.items()},
        images=sum(lists.values()),
        decisions=sum(len(labels) * images for labels, images in lists.items()),
    )


def _decision_sets(*, packable: bool = True) -> Counter:
    """(reviewer, label) decisions sorted -> how many overlap images received exactly those,
    over the images with two or more live screen overlap decisions.

    Images with two decisions (all of them when REVIEW_OVERLAP_K is 2) are counted in
    the database, a row per distinct pair of decisions: each decision packed into one
    number, label × PACK + reviewer, so that an image's MIN and MAX are its two decisions
    whole. That needs reviewer ids below 2**31 (auth users', an AutoField) and label ids
    below 2**32, so that the number fits 64 bits: `packable` says so. Images with more
    decisions, or every image when the ids do not fit, come as their decisions, in a
    second query made only when there are any: a MIN and a MAX no longer hold them.
    """
    overlap = screen_decisions().filter(queue_order=OVERLAP).order_by()
    if not packable:
        return _decision_sets_from_rows(overlap, at_least=2)
    packed = F("label_id") * Value(PACK) + F("reviewer_id")
    per_image = (
        overlap.values("image_id")
        .annotate(
            decisions=Count("*"),
            low=Case(When(decisions=2, then=Min(packed))),
            high=Case(When(decisions=2, then=Max(packed))),
        )
        .filter(decisions__gte=2)
        .values("decisions", "low", "high")
    )
    sql, params = per_image.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT decisions, low, high, COUNT(*) FROM ({sql}) per_image GROUP BY decisions, low, high", params
        )
        counted = cursor.fetchall()
    sets: Counter = Counter()
    for decisions, low, high, images in counted:
        if decisions == 2:
            sets[tuple(sorted(divmod(value, PACK)[::-1] for value in (low, high)))] += images
    if any(decisions > 2 for decisions, *_ in counted):
        sets.update(_decision_sets_from_rows(overlap, at_least=3))
    return sets


def _decision_sets_from_rows(overlap, *, at_least: int) -> Counter:
    """_decision_sets over the images with `at_least` decisions, read as their decisions."""
    sets: Counter = Counter()
    many = overlap.values("image_id").annotate(n=Count("*")).filter(n__gte=at_least).values("image_id")
    rows = overlap.filter(image_id__in=many).order_by("image_id").values_list("image_id", "reviewer_id", "label_id")
    for _, decisions in groupby(rows, key=itemgetter(0)):
        sets[tuple(sorted((reviewer, label) for _, reviewer, label in decisions))] += 1
    return sets

