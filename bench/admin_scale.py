"""4. The admin at scale: the same pages at a small and a large table.

Generated rows (bulk_create, no files): images with one prediction each and a
review on a fifth of them. Each page is requested through Django's test client
in-process against a file SQLite database, as the user who works there: warmed up
once, then the median of several requests, and its SQL queries counted on one more.
The table is grown from the small size to the large one in place.

Targets: the same number of queries at both sizes, and time(large) / time(small) <= 1.5.
For the large size the slowest query of each page and its EXPLAIN QUERY PLAN go in the notes.
"""

from __future__ import annotations

import statistics
import sys
import time
from dataclasses import dataclass

from bench.common import (
    Report,
    Row,
    active_model_version,
    cli,
    django_project,
    log,
    reviewed_images_create,
    staff_user,
    stopwatch,
)

SIZES = {
    "small": {"small_rows": 1_000, "large_rows": 10_000},
    "medium": {"small_rows": 1_000, "large_rows": 100_000},
    "large": {"small_rows": 1_000, "large_rows": 1_000_000},
}
REVIEWED_SHARE = 0.2
TIME_RATIO_TARGET = 1.5


def add_arguments(parser) -> None:
    parser.add_argument("--small-rows", type=int)
    parser.add_argument("--large-rows", type=int)
    parser.add_argument("--repeats", type=int, default=5)


@dataclass
class Page:
    name: str
    url_name: str
    user: str  # which of the users below asks for it
    method: str = "get"
    data: dict | None = None


PAGES = [
    Page("image changelist", "admin:images_image_changelist", "lead"),
    # A reviewer's list shows gold images as open ones (predictions/admin/gold.py): other columns.
    Page("image changelist (reviewer)", "admin:images_image_changelist", "reviewer"),
    Page("review screen", "admin:predictions_review_screen", "reviewer"),
    Page("review next (JSON)", "admin:predictions_review_next", "reviewer", "post", {"count": "1"}),
]


@dataclass
class Measurement:
    seconds: float
    queries: int
    slowest_sql: str
    slowest_params: tuple
    slowest_seconds: float


def run(options) -> Report:
    with django_project():
        users = {
            "lead": staff_user("lead", "Leads"),
            "reviewer": staff_user("reviewer", "Reviewers"),
            "uploader": staff_user("uploader", "Uploaders"),
        }
        version = active_model_version(None)
        results: dict[int, dict[str, Measurement]] = {}
        rows_so_far = 0
        for rows in (options.small_rows, options.large_rows):
            with stopwatch() as watch:
                reviewed_images_create(
                    images=rows - rows_so_far, reviews=int((rows - rows_so_far) * REVIEWED_SHARE),
                    model_version=version, reviewer=users["reviewer"], uploader=users["uploader"],
                )  # fmt: skip
            rows_so_far = rows
            log(f"{rows} images with predictions ({watch.seconds:.1f} s to create)")
            results[rows] = {page.name: measure(page, users[page.user], repeats=options.repeats) for page in PAGES}
            for name, measurement in results[rows].items():
                log(f"  {name}: {measurement.seconds * 1000:.1f} ms, {measurement.queries} queries")
        plans = {
            page.name: explain(results[options.large_rows][page.name].slowest_sql,
                               results[options.large_rows][page.name].slowest_params)
            for page in PAGES
        }  # fmt: skip

    return _report(results, plans, small=options.small_rows, large=options.large_rows)


def measure(page: Page, user, *, repeats: int) -> Measurement:
    from django.db import connection
    from django.test import Client
    from django.urls import reverse

    client = Client()
    client.force_login(user)
    url = reverse(page.url_name)

    def request() -> None:
        response = getattr(client, page.method)(url, page.data or {})
        if response.status_code != 200:
            raise RuntimeError(f"{page.name}: {url} answered {response.status_code}")

    request()  # warm-up: templates, caches, SQLite pages
    times = []
    for _ in range(repeats):
        with stopwatch() as watch:
            request()
        times.append(watch.seconds)
    # Django's query log rounds to milliseconds; time each query here instead.
    queries: list[tuple[float, str, tuple]] = []

    def timed(execute, sql, params, many, context):
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            queries.append((time.perf_counter() - started, sql, params))

    with connection.execute_wrapper(timed):
        request()
    seconds, sql, params = max(queries, key=lambda query: query[0])
    return Measurement(statistics.median(times), len(queries), sql, params, seconds)


def explain(sql: str, params) -> str:
    from django.db import connection

    if not sql.lstrip().upper().startswith("SELECT"):
        return "(not a SELECT)"
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN QUERY PLAN {sql}", params)
        return "; ".join(row[-1] for row in cursor.fetchall())


def _report(results, plans, *, small: int, large: int) -> Report:
    report = Report(metrics={
        str(rows): {name: _json_safe(m) for name, m in pages.items()} for rows, pages in results.items()
    })  # fmt: skip
    for page in PAGES:
        before, after = results[small][page.name], results[large][page.name]
        report.rows.append(Row.versus(
            "4 admin", f"{page.name}: time at {large:,} / at {small:,} rows",
            ours=after.seconds * 1000, reference=before.seconds * 1000, unit="ms",
            target_ratio=TIME_RATIO_TARGET, at_most=True,
        ))
        report.rows.append(Row(
            "4 admin", f"{page.name}: SQL queries at {large:,} / at {small:,} rows",
            str(after.queries), str(before.queries), after.queries / before.queries, "same",
            after.queries == before.queries,
        ))
        report.notes.append(
            f"admin: {page.name} at {large:,} rows: slowest query {after.slowest_seconds * 1000:.1f} ms: "
            f"`{after.slowest_sql[:300]}`; plan: {plans[page.name]}"
        )
    return report


def _json_safe(measurement: Measurement) -> dict:
    return {key: value for key, value in vars(measurement).items() if key != "slowest_params"}


if __name__ == "__main__":
    cli(sys.modules[__name__])
