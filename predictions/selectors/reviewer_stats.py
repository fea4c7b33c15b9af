"""Reviewer statistics: pace, agreement with the model, gold accuracy, adjudication, and the
queue's time to empty. Read by the admin's statistics page
(predictions/admin/reviewer_stats_views.py), with the agreement between reviewers from
predictions/selectors/reviewer_agreement.py.

Every number is aggregated in the database: the page makes the same handful of
queries with 100 reviews or 100,000 (the overlap statistics read one row per
distinct pair of decisions an overlap image received, never per review).
Each query reads ranges of Review's partial indexes on live screen decisions
(predictions/models/reviews.py), per reviewer or per queue order, so what a query
reads grows with what it counts: only the lifetime agreement with the model reads
every live decision, and that from the narrowest index; the week's numbers read
the last 7 days, gold and adjudication counts the gold and overlap decisions. One
query is written in SQL (the medians), saying why.

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
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection
from django.db.models import Count, Exists, F, Func, IntegerField, OuterRef, Q, QuerySet, Subquery, Value
from django.db.models.expressions import RawSQL
from django.utils import timezone

from images.models import Image
from predictions.models import Prediction, Review
from predictions.models.reviews import SCREEN_LIVE
from predictions.selectors.dashboard import start_of_today
from predictions.selectors.quality import ADJUDICATION, GOLD, OVERLAP
from predictions.selectors.queue import QueueFilters, queue_open_image_q
from predictions.selectors.versions import model_version_active
from predictions.statistics.agreement import proportion_interval

CONFIDENCE = 0.95
PACE_DAYS = 7
CHART_DAYS = 30
# Reviewers per median query: within SQLite's limits (500 parts of a UNION, 999 parameters before 3.32).
MEDIAN_BATCH = 150


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
    """Live decisions made on the review screen: the rows of Review's partial indexes for these pages."""
    return Review.objects.filter(SCREEN_LIVE)


def review_columns(*names: str) -> dict[str, str]:
    """Review field name -> its quoted column, for the queries written in SQL."""
    quote = connection.ops.quote_name
    return {name: quote(Review._meta.get_field(name).column) for name in names}


def _adjudicated_image_ids() -> QuerySet:
    """Images with a live adjudication, for an IN-subquery.

    Uncorrelated, so the database builds the set once per query (a few hundred
    images), instead of an EXISTS evaluated again for every overlap decision.
    """
    return Review.objects.filter(queue_order=ADJUDICATION, undone_at__isnull=True).values("image_id")


def _count(decisions: QuerySet) -> Subquery:
    """COUNT(*) of `decisions` as a scalar subquery: no GROUP BY (one row, 0 when none), and
    no column named, so that PostgreSQL counts from the index alone (COUNT(id) reads the table)."""
    return Subquery(decisions.order_by().annotate(n=RawSQL("COUNT(*)", (), output_field=IntegerField())).values("n"))


def reviewer_lines(
    *,
    reviewer_ids: list[int] | None = None,
    now: dt.datetime | None = None,
    confidence: float = CONFIDENCE,
    gold_before: dt.datetime | None = None,
) -> list[ReviewerLine]:
    """One line per reviewer with screen decisions (only `reviewer_ids` when given), busiest this week first.

    Three queries: the counts per reviewer, the gold and adjudicated checks, and
    the medians. The counts are subqueries per reviewer (a user row), each a
    range of one of Review's partial indexes on live screen decisions: the
    lifetime shares read the reviewer's range of the narrow (reviewer, agreed)
    index, the week's numbers only the last 7 days of the (reviewer, created_at)
    one. Gold checks and overlap decisions on adjudicated images are found from
    those images (a few thousand rows), not by testing every decision. Gold
    accuracy counts the checks on images that are gold now, against their label
    now: a Lead who unmarks an image withdraws it as a reference. With
    `gold_before`, only the checks made before then: a reviewer's own line counts
    them up to the start of the day, so that reloading after each decision does not
    tell which one was a gold check.
    """
    now = now or timezone.now()
    week = now - dt.timedelta(days=PACE_DAYS)
    theirs = screen_decisions().filter(reviewer_id=OuterRef("pk"))
    this_week = theirs.filter(created_at__gte=week)
    reviewers = get_user_model().objects.filter(Exists(theirs))
    if reviewer_ids is not None:
        reviewers = reviewers.filter(pk__in=reviewer_ids)
    rows = list(
        reviewers.annotate(
            shown=_count(theirs.filter(agreed__isnull=False)),
            # Compared with a value, not tested as a bare boolean: SQLite then seeks the
            # agreed ones in the (reviewer, agreed) index instead of reading all of them.
            agreed_count=_count(theirs.filter(agreed=Value(True))),
            today=_count(theirs.filter(created_at__gte=start_of_today())),
            week=_count(this_week),
            timed=_count(this_week.filter(seconds_spent__isnull=False)),
            seconds=Subquery(this_week.order_by().annotate(s=Func(F("seconds_spent"), function="SUM")).values("s")),
        )
        .order_by("-week", "username")
        .values("pk", "username", "shown", "agreed_count", "today", "week", "timed", "seconds")
    )
    checks = _checked_decisions(gold_before=gold_before)
    medians = _median_seconds(since=week, sizes={row["pk"]: row["timed"] for row in rows})
    lines = []
    for row in rows:
        seconds = row["seconds"] or 0.0
        gold_n, gold_right, adjudicated_n, overturned_n = checks.get(row["pk"], (0, 0, 0, 0))
        lines.append(
            ReviewerLine(
                reviewer_id=row["pk"],
                username=row["username"],
                today=row["today"],
                week=row["week"],
                items_per_hour=3600.0 * row["timed"] / seconds if seconds > 0 else None,
                median_seconds=medians.get(row["pk"]),
                timed=row["timed"],
                model_agreement=Proportion.of(row["agreed_count"], row["shown"], confidence=confidence),
                gold=Proportion.of(gold_right, gold_n, confidence=confidence),
                overturned=Proportion.of(overturned_n, adjudicated_n, confidence=confidence),
            )
        )
    return lines


def _checked_decisions(*, gold_before: dt.datetime | None = None) -> dict[int, tuple[int, int, int, int]]:
    """reviewer id -> (gold checks, right ones, overlap decisions adjudicated, overturned ones), one query.

    Gold checks: on images that are gold now, right when equal to their label now.
    Overturned: an overlap decision on an image with a live adjudication whose label
    now differs from it (or that has no label now). Two parts joined with UNION ALL,
    each reading one queue order's range of the (queue_order, image) index.
    """
    matches = Q(label_id=F("image__final_label_id"))
    gold = screen_decisions().filter(queue_order=GOLD, image__is_gold=True)
    if gold_before is not None:
        gold = gold.filter(created_at__lt=gold_before)
    adjudicated = screen_decisions().filter(queue_order=OVERLAP, image_id__in=_adjudicated_image_ids())
    parts = [
        # Counted by label (never null) rather than id: a column of the index, so that
        # PostgreSQL need not read the table (Django refuses COUNT(*) with a filter).
        decisions.order_by()
        .values("reviewer_id")
        .annotate(kind=Value(kind), n=Count("*"), counted=Count("label", filter=q))
        for decisions, kind, q in ((gold, GOLD, matches), (adjudicated, OVERLAP, ~matches))
    ]
    checks: dict[int, dict[str, tuple[int, int]]] = defaultdict(dict)
    for reviewer_id, kind, n, counted in parts[0].union(parts[1], all=True).values_list(
        "reviewer_id", "kind", "n", "counted"
    ):
        checks[reviewer_id][kind] = (n, counted)
    return {
        reviewer_id: (*kinds.get(GOLD, (0, 0)), *kinds.get(OVERLAP, (0, 0))) for reviewer_id, kinds in checks.items()
    }


def _median_seconds(*, since: dt.datetime, sizes: dict[int, int]) -> dict[int, float]:
    """reviewer id -> median seconds of their timed screen decisions since `since`, given how
    many each has (`sizes`).

    One query (a batch per MEDIAN_BATCH reviewers): for each reviewer, the one or two
    middle values of time spent, picked by ORDER BY, LIMIT and OFFSET from their range
    of the (reviewer, created_at, seconds_spent) index, joined with UNION ALL, so only
    those come back. Written in SQL: Django refuses LIMIT inside a UNION on SQLite, and
    an OR of sliced subqueries took a millisecond per reviewer to build. The sizes come
    from reviewer_lines' counts a moment before; a timed decision landing in between
    moves the middle by half a rank at most.
    """
    quote = connection.ops.quote_name
    column = review_columns("reviewer", "seconds_spent", "created_at", "source", "undone_at")
    # Ties in time spent have the same value: the order among them does not change the median.
    middle = (
        f"SELECT * FROM (SELECT {column['reviewer']}, {column['seconds_spent']} FROM {quote(Review._meta.db_table)}"
        f" WHERE {column['source']} = %s AND {column['undone_at']} IS NULL AND {column['reviewer']} = %s"
        f" AND {column['created_at']} >= %s AND {column['seconds_spent']} IS NOT NULL"
        f" ORDER BY {column['seconds_spent']} LIMIT %s OFFSET %s) AS middle{{}}"
    )
    start_at = Review._meta.get_field("created_at").get_db_prep_value(since, connection)
    reviewers = [(reviewer_id, size) for reviewer_id, size in sizes.items() if size]
    values: dict[int, list[float]] = defaultdict(list)
    for start in range(0, len(reviewers), MEDIAN_BATCH):
        batch = reviewers[start : start + MEDIAN_BATCH]
        params = []
        for reviewer_id, size in batch:
            # 1-based ranks (size+1)//2 and (size+2)//2: the same one when size is odd.
            params += [Review.Source.SCREEN, reviewer_id, start_at, 2 - size % 2, (size - 1) // 2]
        with connection.cursor() as cursor:
            cursor.execute(" UNION ALL ".join(middle.format(n) for n in range(len(batch))), params)
            for reviewer_id, seconds in cursor.fetchall():
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
    """How long the queue takes to empty at the last 7 days' pace (two count queries).

    The open images are an IN-subquery read from the image index on open labels;
    SQLite then looks each one's prediction up in the (image, model_version) unique
    index instead of joining every prediction of the version to its image.
    """
    now = now or timezone.now()
    version = model_version_active()
    open_items = 0
    if version is not None:
        open_images = Image.objects.filter(queue_open_image_q(filters=QueueFilters())).values("pk")
        open_items = Prediction.objects.filter(model_version=version, image_id__in=open_images).count()
    share = settings.REVIEW_OVERLAP_SHARE
    needed = open_items * (1 + share * (settings.REVIEW_OVERLAP_K - 1))
    week = screen_decisions().filter(created_at__gte=now - dt.timedelta(days=PACE_DAYS)).exclude(queue_order=GOLD).count()
    per_hour = week / (PACE_DAYS * 24)
    return TeamPace(open_items, needed, week, per_hour, needed / per_hour if per_hour else None)


def decisions_per_day(
    *, reviewer_ids: list[int] | None = None, days: int = CHART_DAYS, now: dt.datetime | None = None
) -> list[tuple[dt.date, int]]:
    """(day, screen decisions) for each of the last `days` days in the site's time zone, oldest first, zeros included.

    One query: a count per local day, each a range of the created_at index (joined
    with UNION ALL), so each count reads only its own day's rows. Truncating each
    row's time to a date would run a function per review (on SQLite a Python one),
    and one pass with a filtered count per day tests every row against every day.
    """
    now = now or timezone.now()
    zone = timezone.get_current_timezone()
    today = timezone.localdate(now)
    first = today - dt.timedelta(days=days - 1)
    dates = [first + dt.timedelta(days=i) for i in range(days + 1)]
    bounds = [dt.datetime.combine(day, dt.time.min, tzinfo=zone) for day in dates]
    decisions = screen_decisions()
    if reviewer_ids is not None:
        decisions = decisions.filter(reviewer_id__in=reviewer_ids)
    per_day = [
        decisions.filter(created_at__gte=bounds[i], created_at__lt=bounds[i + 1])
        .order_by()
        .values(day=Value(i, output_field=IntegerField()))
        .annotate(n=Count("*"))
        for i in range(days)
    ]
    counts = dict.fromkeys(range(days), 0)
    if per_day:
        counts.update((row["day"], row["n"]) for row in per_day[0].union(*per_day[1:], all=True))
    return [(dates[i], counts[i]) for i in range(days)]


def adjudication_waiting_count() -> int:
    """Overlap images whose reviews disagreed, waiting for a Lead."""
    return Image.objects.filter(final_label__isnull=True, label_source=ADJUDICATION).count()
