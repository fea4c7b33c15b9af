"""Reviewer statistics: pace, agreement with the model, gold accuracy, adjudication, agreement
between reviewers, and the queue's time to empty. Read by the admin's statistics page
(predictions/admin/reviewer_stats_views.py).

Every number is aggregated in the database: the page makes the same handful of
queries with 100 reviews or 100,000 (the overlap statistics read one row per
overlap image and label, or per reviewer pair and label pair, never per review).

What is counted: live (not undone) decisions made on the review screen (source
"screen"); grid actions, imports and auto-accept are bulk operations, not a
person's pace or accuracy. Intervals are two-sided 95% exact Clopper–Pearson
(predictions.statistics.agreement.proportion_interval): their coverage is at least
95% whatever the true rate and the sample size, assuming a reviewer's decisions are
independent with one common chance of being right.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field

from django.conf import settings
from django.db.models import Count, Exists, F, OuterRef, Q, Sum, Window
from django.db.models.functions import RowNumber
from django.utils import timezone

from images.models import Image
from predictions.models import Label, Prediction, Review
from predictions.selectors.dashboard import start_of_today
from predictions.selectors.quality import ADJUDICATION, GOLD, OVERLAP
from predictions.selectors.queue import QueueFilters, queue_open_image_q
from predictions.selectors.versions import model_version_active
from predictions.statistics.agreement import (
    cohen_kappa,
    krippendorff_alpha_nominal,
    krippendorff_alpha_per_class,
    proportion_interval,
)

CONFIDENCE = 0.95
PACE_DAYS = 7
CHART_DAYS = 30


@dataclass(frozen=True)
class Proportion:
    """successes of n, with its exact confidence interval (0..1 when n is 0)."""

    successes: int
    n: int
    low: float
    high: float

    @classmethod
    def of(cls, successes: int, n: int, *, confidence: float = CONFIDENCE) -> Proportion:
        low, high = proportion_interval(successes=successes, n=n, confidence=confidence, method="exact")
        return cls(successes, n, low, high)

    @property
    def rate(self) -> float | None:
        return self.successes / self.n if self.n else None


@dataclass(frozen=True)
class ReviewerLine:
    reviewer_id: int
    username: str
    today: int
    week: int
    items_per_hour: float | None  # timed decisions of the last 7 days per hour of recorded time
    median_seconds: float | None  # over the timed decisions of the last 7 days
    timed: int
    model_agreement: Proportion  # decisions equal to the model's label, of those shown one
    gold: Proportion  # gold checks equal to the gold label
    overturned: Proportion  # overlap decisions an adjudication went against, of those adjudicated

    @property
    def shares(self) -> tuple[Proportion, Proportion, Proportion]:
        """The three shares in the page's column order."""
        return self.model_agreement, self.gold, self.overturned


def gold_accuracy(*, reviewer_ids: list[int] | None = None, confidence: float = CONFIDENCE) -> dict[int, Proportion]:
    """reviewer id -> their gold checks that matched the gold label, with its exact interval (one query).

    Counted: live gold checks on images that are gold now, against their label now.
    """
    checks = screen_decisions().filter(queue_order=GOLD, image__is_gold=True)
    if reviewer_ids is not None:
        checks = checks.filter(reviewer_id__in=reviewer_ids)
    rows = checks.values("reviewer_id").annotate(
        n=Count("id"), right=Count("id", filter=Q(label_id=F("image__final_label_id")))
    )
    return {row["reviewer_id"]: Proportion.of(row["right"], row["n"], confidence=confidence) for row in rows}


def screen_decisions():
    """Live decisions made on the review screen."""
    return Review.objects.filter(undone_at__isnull=True, source=Review.Source.SCREEN)


def _adjudicated_q() -> Q:
    adjudication = Review.objects.filter(image_id=OuterRef("image_id"), queue_order=ADJUDICATION, undone_at__isnull=True)
    return Q(queue_order=OVERLAP) & Q(Exists(adjudication))


def reviewer_lines(
    *, reviewer_ids: list[int] | None = None, now: dt.datetime | None = None, confidence: float = CONFIDENCE
) -> list[ReviewerLine]:
    """One line per reviewer with screen decisions (only `reviewer_ids` when given), busiest this week first.

    Two queries: the counts per reviewer, and the medians. Gold accuracy counts
    the checks on images that are gold now, against their label now: a Lead who
    unmarks an image withdraws it as a reference.
    """
    now = now or timezone.now()
    week = now - dt.timedelta(days=PACE_DAYS)
    decisions = screen_decisions()
    if reviewer_ids is not None:
        decisions = decisions.filter(reviewer_id__in=reviewer_ids)
    gold = Q(queue_order=GOLD, image__is_gold=True)
    adjudicated = _adjudicated_q()
    rows = (
        decisions.values("reviewer_id", "reviewer__username")
        .annotate(
            today=Count("id", filter=Q(created_at__gte=start_of_today())),
            week=Count("id", filter=Q(created_at__gte=week)),
            timed=Count("id", filter=Q(created_at__gte=week, seconds_spent__isnull=False)),
            seconds=Sum("seconds_spent", filter=Q(created_at__gte=week)),
            shown=Count("id", filter=Q(agreed__isnull=False)),
            agreed_count=Count("id", filter=Q(agreed=True)),
            gold_n=Count("id", filter=gold),
            gold_right=Count("id", filter=gold & Q(label_id=F("image__final_label_id"))),
            adjudicated_n=Count("id", filter=adjudicated),
            overturned_n=Count("id", filter=adjudicated & ~Q(label_id=F("image__final_label_id"))),
        )
        .order_by("-week", "reviewer__username")
    )
    medians = _median_seconds(decisions.filter(created_at__gte=week))
    lines = []
    for row in rows:
        seconds = row["seconds"] or 0.0
        lines.append(
            ReviewerLine(
                reviewer_id=row["reviewer_id"],
                username=row["reviewer__username"],
                today=row["today"],
                week=row["week"],
                items_per_hour=3600.0 * row["timed"] / seconds if seconds > 0 else None,
                median_seconds=medians.get(row["reviewer_id"]),
                timed=row["timed"],
                model_agreement=Proportion.of(row["agreed_count"], row["shown"], confidence=confidence),
                gold=Proportion.of(row["gold_right"], row["gold_n"], confidence=confidence),
                overturned=Proportion.of(row["overturned_n"], row["adjudicated_n"], confidence=confidence),
            )
        )
    return lines


def _median_seconds(decisions) -> dict[int, float]:
    """reviewer id -> median seconds of their timed decisions, in one query.

    Each reviewer's decisions are ranked by time spent (a window function); only
    the one or two middle ranks come back, whatever the number of decisions.
    """
    ranked = decisions.filter(seconds_spent__isnull=False).annotate(
        position=Window(RowNumber(), partition_by=[F("reviewer_id")], order_by=[F("seconds_spent").asc(), F("id").asc()]),
        size=Window(Count("id"), partition_by=[F("reviewer_id")]),
    )
    # Ranks (size+1)//2 and (size+2)//2: the same one when size is odd. Integer division in SQL.
    middle = ranked.filter(position__gte=(F("size") + 1) / 2, position__lte=(F("size") + 2) / 2)
    values: dict[int, list[float]] = defaultdict(list)
    for reviewer_id, seconds in middle.values_list("reviewer_id", "seconds_spent"):
        values[reviewer_id].append(seconds)
    return {reviewer_id: sum(pair) / len(pair) for reviewer_id, pair in values.items()}


@dataclass(frozen=True)
class TeamPace:
    open_items: int  # the active version's images waiting in the queue
    decisions_needed: float  # open items, an overlap image counted k times
    week_decisions: int  # screen decisions of the last 7 days, gold checks left out
    items_per_hour: float  # week_decisions / (7 × 24 h): calendar pace, nights and weekends included
    hours_to_empty: float | None  # decisions_needed / items_per_hour; None when nobody decided anything

    @property
    def days_to_empty(self) -> float | None:
        return None if self.hours_to_empty is None else self.hours_to_empty / 24


def team_pace(*, now: dt.datetime | None = None) -> TeamPace:
    """How long the queue takes to empty at the last 7 days' pace (two count queries)."""
    now = now or timezone.now()
    version = model_version_active()
    open_items = 0
    if version is not None:
        open_items = Prediction.objects.filter(
            queue_open_image_q(filters=QueueFilters(), prefix="image__"), model_version=version
        ).count()
    share = settings.REVIEW_OVERLAP_SHARE
    needed = open_items * (1 + share * (settings.REVIEW_OVERLAP_K - 1))
    week = screen_decisions().filter(created_at__gte=now - dt.timedelta(days=PACE_DAYS)).exclude(queue_order=GOLD).count()
    per_hour = week / (PACE_DAYS * 24)
    return TeamPace(open_items, needed, week, per_hour, needed / per_hour if per_hour else None)


def decisions_per_day(
    *, reviewer_ids: list[int] | None = None, days: int = CHART_DAYS, now: dt.datetime | None = None
) -> list[tuple[dt.date, int]]:
    """(day, screen decisions) for each of the last `days` days in the site's time zone, oldest first, zeros included.

    One query of plain range comparisons, one count per local day: truncating each
    row's time to a date runs a function per review (on SQLite a Python one).
    """
    now = now or timezone.now()
    zone = timezone.get_current_timezone()
    today = timezone.localdate(now)
    first = today - dt.timedelta(days=days - 1)
    dates = [first + dt.timedelta(days=i) for i in range(days + 1)]
    bounds = [dt.datetime.combine(day, dt.time.min, tzinfo=zone) for day in dates]
    decisions = screen_decisions().filter(created_at__gte=bounds[0], created_at__lt=bounds[-1])
    if reviewer_ids is not None:
        decisions = decisions.filter(reviewer_id__in=reviewer_ids)
    counts = decisions.aggregate(
        **{f"d{i}": Count("id", filter=Q(created_at__gte=bounds[i], created_at__lt=bounds[i + 1])) for i in range(days)}
    )
    return [(dates[i], counts[f"d{i}"]) for i in range(days)]


# --- agreement between reviewers, on overlap images ------------------------------------


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


def overlap_agreement() -> Agreement:
    """Cohen's kappa per reviewer pair over the overlap images both decided, Krippendorff's
    alpha (nominal) over every overlap image with two or more decisions, overall and per class.

    Two queries: label-pair counts per reviewer pair (a self-join on the image), and
    label counts per image. Gold checks and adjudications are not independent
    overlap decisions and are left out.
    """
    overlap = screen_decisions().filter(queue_order=OVERLAP)
    other = "image__reviews__"
    pair_rows = (
        overlap.filter(
            **{f"{other}queue_order": OVERLAP, f"{other}undone_at__isnull": True, f"{other}source": Review.Source.SCREEN},
            **{f"{other}reviewer_id__gt": F("reviewer_id")},
        )
        .values_list("reviewer__username", f"{other}reviewer__username", "label_id", f"{other}label_id")
        .annotate(n=Count("id"))
    )
    tables: dict[tuple[str, str], list[tuple[int, int, int]]] = defaultdict(list)
    for first, second, label_a, label_b, n in pair_rows:
        tables[(first, second)].append((label_a, label_b, n))
    pairs = []
    for (first, second), cells in sorted(tables.items()):
        a = [label for label, _, n in cells for _ in range(n)]
        b = [label for _, label, n in cells for _ in range(n)]
        agreed = sum(n for label_a, label_b, n in cells if label_a == label_b)
        pairs.append(PairAgreement(first, second, len(a), agreed, cohen_kappa(a, b)))
    units: dict[int, list[int]] = defaultdict(list)
    for image_id, label_id, n in overlap.values_list("image_id", "label_id").annotate(n=Count("id")):
        units[image_id].extend([label_id] * n)
    pairable = {image_id: labels for image_id, labels in units.items() if len(labels) >= 2}
    names = dict(Label.objects.values_list("pk", "name"))
    per_class = krippendorff_alpha_per_class(pairable)
    return Agreement(
        pairs=pairs,
        alpha=krippendorff_alpha_nominal(pairable),
        alpha_per_class={names.get(label, str(label)): value for label, value in per_class.items()},
        images=len(pairable),
        decisions=sum(len(labels) for labels in pairable.values()),
    )


def adjudication_waiting_count() -> int:
    """Overlap images whose reviews disagreed, waiting for a Lead."""
    return Image.objects.filter(final_label__isnull=True, label_source=ADJUDICATION).count()
