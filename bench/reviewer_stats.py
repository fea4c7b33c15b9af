"""Reviewer statistics at scale: /admin/predictions/review/stats/ at a small and a large review history.

Generated rows (bulk_create, no files), grown in place from the small size to the
large one: images with one prediction each and a review history as a team leaves
it over 45 days. Eight reviewers; most images have one screen decision; 12% are
overlap images with two independent decisions (15% of them disagree: half
adjudicated by the Lead, half waiting); 3% are gold images labelled by the Lead,
and 5% of the decisions are gold checks on them; 5% are bulk (grid) decisions; a
fifth as many images again wait unreviewed. The page is requested as the Lead
(everyone's lines, agreement between reviewers, the adjudication backlog) through
Django's test client in-process against a file SQLite database, measured as in
bench/admin_scale.py: warmed up once, the median of nine requests, and its SQL
queries counted on one more; each of that request's queries is then run again on its
own and timed with its rows fetched (query_times).

Targets: the same number of queries at both sizes, and time(large) / time(small) <= 3.
Not 1.5 like the queue pages: those read the head of an index (a LIMIT stops the scan),
while this page's lifetime numbers (model agreement, gold accuracy, overturned
decisions, Cohen's kappa and Krippendorff's alpha) aggregate every live review, so
its SQL work grows with the history. 3 at 100x the reviews says the aggregation, not
the rows, stays the cost: a page that reads reviews one by one, or a query per
reviewer or image, is 10x and more. For the large size the three slowest queries
and the slowest one's EXPLAIN QUERY PLAN go in the notes.
"""

from __future__ import annotations

import random
import sys
import time
from collections import Counter
from datetime import timedelta

from bench.admin_scale import Measurement, Page, explain, measure
from bench.common import (
    DEMO_CLASSES,
    Report,
    Row,
    _random_prediction,
    active_model_version,
    cli,
    django_project,
    log,
    staff_user,
    stopwatch,
)

SIZES = {
    "small": {"small_reviews": 1_000, "large_reviews": 10_000},
    "medium": {"small_reviews": 1_000, "large_reviews": 100_000},
    "large": {"small_reviews": 1_000, "large_reviews": 1_000_000},
}
TIME_RATIO_TARGET = 3.0
REVIEWERS = 8
HISTORY_DAYS = 45
OVERLAP_SHARE, GOLD_IMAGE_SHARE, GOLD_CHECK_SHARE, BULK_SHARE, OPEN_PER_REVIEW = 0.12, 0.03, 0.05, 0.05, 0.2
OVERLAP_DISAGREE, GOLD_RIGHT = 0.15, 0.9
CHUNK = 5_000  # images per bulk_create round

PAGE = Page("reviewer statistics (Lead)", "admin:predictions_review_stats", "lead")


def add_arguments(parser) -> None:
    parser.add_argument("--small-reviews", type=int)
    parser.add_argument("--large-reviews", type=int)
    parser.add_argument("--repeats", type=int, default=9)


def run(options) -> Report:
    with django_project():
        lead = staff_user("lead", "Leads")
        uploader = staff_user("uploader", "Uploaders")
        reviewers = [staff_user(f"reviewer{n}", "Reviewers") for n in range(REVIEWERS)]
        version = active_model_version(None)
        history = ReviewHistory(model_version=version, reviewers=reviewers, lead=lead, uploader=uploader)
        results: dict[int, Measurement] = {}
        for reviews in (options.small_reviews, options.large_reviews):
            with stopwatch() as watch:
                history.grow_to(reviews)
            log(f"{history.made['reviews']:,} reviews on {history.made['images']:,} images "
                f"({watch.seconds:.1f} s to create): {dict(history.made)}")  # fmt: skip
            results[reviews] = measure(PAGE, lead, repeats=options.repeats)
            log(f"  {PAGE.name}: {results[reviews].seconds * 1000:.1f} ms, {results[reviews].queries} queries")
        queries = query_times(PAGE, lead)
        plan = explain(queries[0][1], queries[0][2])
        made = dict(history.made)

    return _report(results, plan, queries, made, small=options.small_reviews, large=options.large_reviews)


class ReviewHistory:
    """Images, predictions and reviews as a team leaves them; grow_to() adds rows until the
    table holds that many reviews (in rounds of CHUNK images, one transaction each)."""

    def __init__(self, *, model_version, reviewers, lead, uploader, seed: int = 7) -> None:
        from predictions.models import Label

        self.version, self.reviewers, self.lead, self.uploader = model_version, reviewers, lead, uploader
        self.labels = list(Label.objects.filter(name__in=DEMO_CLASSES).order_by("order"))
        self.rng = random.Random(seed)
        self.gold: list[tuple[int, object, object]] = []  # (image id, its label, its prediction), saved ones
        self.made: Counter = Counter()
        self.numbered = 0

    def grow_to(self, reviews: int) -> None:
        while self.made["reviews"] < reviews:
            self._round(reviews - self.made["reviews"])

    def _round(self, wanted: int) -> None:
        from django.db import transaction
        from django.utils import timezone

        from images.models import Image, UploadBatch
        from predictions.models import Prediction, Review

        rng, now = self.rng, timezone.now()
        with transaction.atomic():
            batch = UploadBatch.objects.create(name=f"bench {self.made['images']}", created_by=self.uploader)
            images, plans, planned = [], [], 0
            while planned < wanted * (1 - GOLD_CHECK_SHARE) and len(images) < CHUNK:
                image, plan = self._unit(batch, now)
                images.append(image)
                plans.append(plan)
                planned += len(plan)
            for _ in range(int(len(images) * OPEN_PER_REVIEW)):
                images.append(self._image(batch, now))
                plans.append([])
            Image.objects.bulk_create(images)
            predictions = [_random_prediction(image, self.version, self.labels, rng) for image in images]
            Prediction.objects.bulk_create(predictions)
            rows = []
            for image, prediction, plan in zip(images, predictions, plans):
                for reviewer, label, source, order, created_at in plan:
                    rows.append(self._review(image.pk, prediction, reviewer, label, source, order, created_at))
            self.gold += [(i.pk, i.final_label, p) for i, p in zip(images, predictions) if i.is_gold]
            # Gold checks: on any gold image so far (a check's time is not tied to the label's).
            for _ in range(round(planned * GOLD_CHECK_SHARE / (1 - GOLD_CHECK_SHARE)) if self.gold else 0):
                image_id, label, prediction = rng.choice(self.gold)
                answer = label if rng.random() < GOLD_RIGHT else rng.choice(self.labels)
                when = now - timedelta(days=rng.uniform(0, HISTORY_DAYS))
                rows.append(self._review(image_id, prediction, rng.choice(self.reviewers), answer, "screen", "gold", when))
                self.made["gold checks"] += 1
            Review.objects.bulk_create(rows, batch_size=2000)
            self.made["images"] += len(images)
            self.made["reviews"] += len(rows)

    def _image(self, batch, now, **fields):
        from images.models import Image

        self.numbered += 1
        number = self.numbered
        sha = f"{number:064x}"
        return Image(
            file=f"images/{sha[:2]}/{sha[2:4]}/{sha}.jpg", thumbnail=f"thumbnails/{sha}.jpg", sha256=sha,
            original_name=f"photo_{number:07d}.jpg", width=1600, height=1200, format="JPEG", size_bytes=330_000,
            uploaded_by=self.uploader, batch=batch, uploaded_at=now - timedelta(days=HISTORY_DAYS + 1), **fields,
        )  # fmt: skip

    def _unit(self, batch, now):
        """One reviewed image and its decisions: (image, [(reviewer, label, source, queue order, when)])."""
        rng = self.rng
        when = now - timedelta(days=rng.uniform(0, HISTORY_DAYS))
        first, second = rng.sample(self.reviewers, 2)
        label = rng.choice(self.labels)
        kind = rng.random()
        if kind < OVERLAP_SHARE:
            other = label if rng.random() > OVERLAP_DISAGREE else rng.choice([x for x in self.labels if x != label])
            later = when + timedelta(minutes=rng.uniform(1, 600))
            plan = [(first, label, "screen", "overlap", when), (second, other, "screen", "overlap", later)]
            self.made["overlap images"] += 1
            if other == label:
                state = {"final_label": label, "reviewed_by": second, "reviewed_at": later, "label_source": "screen"}
            elif rng.random() < 0.5:
                final = rng.choice([label, other])
                plan.append((self.lead, final, "screen", "adjudication", later + timedelta(hours=1)))
                state = {"final_label": final, "reviewed_by": self.lead, "reviewed_at": later, "label_source": "screen"}
                self.made["adjudicated"] += 1
            else:
                state = {"label_source": "adjudication"}
                self.made["waiting for adjudication"] += 1
        elif kind < OVERLAP_SHARE + GOLD_IMAGE_SHARE:
            plan = [(self.lead, label, "screen", "uncertainty", when)]
            state = {"final_label": label, "reviewed_by": self.lead, "reviewed_at": when, "label_source": "screen",
                     "is_gold": True}  # fmt: skip
            self.made["gold images"] += 1
        elif kind < OVERLAP_SHARE + GOLD_IMAGE_SHARE + BULK_SHARE:
            plan = [(self.lead, label, "grid", "", when)]
            state = {"final_label": label, "reviewed_by": self.lead, "reviewed_at": when, "label_source": "grid"}
        else:
            plan = [(first, label, "screen", "uncertainty", when)]
            state = {"final_label": label, "reviewed_by": first, "reviewed_at": when, "label_source": "screen"}
        return self._image(batch, now, review_count=len(plan), **state), plan

    def _review(self, image_id, prediction, reviewer, label, source, order, created_at):
        from predictions.models import Review

        screen = source == "screen"
        return Review(
            image_id=image_id, reviewer=reviewer, label=label, prediction=prediction,
            agreed=label.pk == prediction.label_id, source=source, queue_order=order, created_at=created_at,
            seconds_spent=round(self.rng.lognormvariate(1.3, 0.6), 2) if screen else None,
        )  # fmt: skip


def query_times(page: Page, user, *, repeats: int = 3) -> list[tuple[float, str, tuple]]:
    """(seconds, SQL, params) of each query one request makes, slowest first.

    Each query is run again on its own, executed and all its rows fetched, the best of
    `repeats`: SQLite computes most of a result while it is fetched, so timing the
    execute call alone (as a connection's execute_wrapper sees it) misses most of it.
    """
    from django.db import connection
    from django.test import Client
    from django.urls import reverse

    client = Client()
    client.force_login(user)
    captured: list[tuple[str, tuple]] = []

    def capture(execute, sql, params, many, context):
        captured.append((sql, params))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(capture):
        client.get(reverse(page.url_name))
    queries = []
    with connection.cursor() as cursor:
        for sql, params in captured:
            times = []
            for _ in range(repeats):
                started = time.perf_counter()
                cursor.execute(sql, params)
                cursor.fetchall()
                times.append(time.perf_counter() - started)
            queries.append((min(times), sql, params))
    return sorted(queries, key=lambda query: query[0], reverse=True)


def _report(results, plan, queries, made, *, small: int, large: int) -> Report:
    before, after = results[small], results[large]
    slowest = queries[:3]
    report = Report(metrics={
        "made": made,
        **{str(reviews): {k: v for k, v in vars(m).items() if k != "slowest_params"} for reviews, m in results.items()},
        f"query_ms_at_{large}": [
            [round(seconds * 1000, 2), " ".join(sql.split())[:160]] for seconds, sql, _params in queries
        ],
    })  # fmt: skip
    report.rows.append(Row.versus(
        "11 reviewer stats", f"stats page (Lead): time at {large:,} / at {small:,} reviews",
        ours=after.seconds * 1000, reference=before.seconds * 1000, unit="ms",
        target_ratio=TIME_RATIO_TARGET, at_most=True,
    ))  # fmt: skip
    report.rows.append(Row(
        "11 reviewer stats", f"stats page (Lead): SQL queries at {large:,} / at {small:,} reviews",
        str(after.queries), str(before.queries), after.queries / before.queries, "same", after.queries == before.queries,
    ))  # fmt: skip
    report.notes.append(
        f"reviewer stats: target <= {TIME_RATIO_TARGET:g}, not 1.5: the page's lifetime numbers aggregate every "
        "live review (the queue pages read an index head); 3 at 100x the rows rules out per-row work."
    )
    top = "; ".join(f"{seconds * 1000:.1f} ms `{' '.join(sql.split())[:200]}`" for seconds, sql, _params in slowest)
    report.notes.append(
        f"reviewer stats at {large:,} reviews: slowest queries (execute + fetch): {top}; slowest one's plan: {plan}; "
        f"all {len(queries)} queries: {sum(seconds for seconds, _, _ in queries) * 1000:.1f} ms"
    )
    return report


if __name__ == "__main__":
    cli(sys.modules[__name__])
