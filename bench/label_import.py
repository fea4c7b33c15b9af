"""7. A large label import: dry run and apply of an N-row CSV, and how long it holds the write lock.

N generated images (with predictions, a tenth reviewed) and a CSV naming every one
by ``original_name`` with a random label (a few unknown names among them would make
the file invalid, so all are real). Both steps run as the cluster runs them:
``predictions.services.label_import_jobs.label_import_job_run`` for a dry-run
LabelImportJob, then for the apply job a Lead starts from it.

Measured: each step's time, and every write transaction's duration on the import's
database connection (from BEGIN to COMMIT for atomic blocks, the statement itself
for a write in autocommit), the longest of which is the longest a reviewer's
decision could wait for SQLite's write lock. A second process probes that wait
directly: it takes and releases the write lock every 20 ms during the apply and
records its longest wait.

Targets: dry run and apply each < 30 s at 100k rows; longest write transaction < 1 s.
Before this service, the admin's django-import-export import took 153 s for the
dry run of 100k rows alone, in one transaction.
"""

from __future__ import annotations

import csv
import io
import random
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from bench.common import (
    DEMO_CLASSES,
    PYTHON,
    REPO_ROOT,
    Report,
    Row,
    active_model_version,
    cli,
    cpu_clock,
    django_project,
    log,
    reviewed_images_create,
    staff_user,
    stopwatch,
)

SIZES = {"small": {"rows": 10_000}, "medium": {"rows": 100_000}, "large": {"rows": 300_000}}
STEP_TARGET_SECONDS = 30.0
LOCK_TARGET_SECONDS = 1.0
PROBE_INTERVAL = 0.02


def add_arguments(parser) -> None:
    parser.add_argument("--rows", type=int, help="rows of the CSV (one image each)")


def run(options) -> Report:
    with django_project() as root:
        from django.conf import settings

        users = {name: staff_user(name, group) for name, group in (("lead", "Leads"), ("reviewer", "Reviewers"))}
        version = active_model_version(None)
        with stopwatch() as watch:
            reviewed_images_create(images=options.rows, reviews=options.rows // 10, model_version=version,
                                   reviewer=users["reviewer"], uploader=users["lead"])  # fmt: skip
        log(f"{options.rows} images with predictions ({watch.seconds:.1f} s to create)")
        text = _csv(options.rows)
        database = settings.DATABASES["default"]["NAME"]

        with _write_transactions() as dry_run_holds, stopwatch() as dry_watch, cpu_clock() as dry_clock:
            dry_run = _run_dry_run(text, user=users["lead"])
        dry_cpu = dry_clock.seconds
        log(f"dry run: {dry_watch.seconds:.1f} s ({dry_cpu:.1f} s CPU), {dry_run.report['change']} rows to change")
        with (
            _lock_probe(database, root) as probe,
            _write_transactions() as apply_holds,
            stopwatch() as apply_watch,
            cpu_clock() as apply_clock,
        ):
            applied = _run_apply(dry_run, user=users["lead"])
        apply_cpu = apply_clock.seconds
        log(f"apply: {apply_watch.seconds:.1f} s ({apply_cpu:.1f} s CPU), {applied.report['applied']}")

    longest = max(dry_run_holds + apply_holds)
    waits = probe.waits()
    report = Report(metrics={
        "rows": options.rows, "dry_run_seconds": dry_watch.seconds, "apply_seconds": apply_watch.seconds,
        "dry_run_cpu_seconds": dry_cpu, "apply_cpu_seconds": apply_cpu,
        "write_transactions": len(dry_run_holds) + len(apply_holds), "longest_write_seconds": longest,
        "probe_samples": len(waits), "probe_longest_wait_seconds": max(waits, default=None),
        "report": applied.report,
    })  # fmt: skip
    report.rows += [
        Row("7 label import", f"{options.rows:,}-row CSV: dry run (cluster job)", f"{dry_watch.seconds:.1f} s",
            "153 s before (import-export, one transaction)", None, f"< {STEP_TARGET_SECONDS:g} s",
            dry_watch.seconds < STEP_TARGET_SECONDS),
        Row("7 label import", f"{options.rows:,}-row CSV: apply (cluster job)", f"{apply_watch.seconds:.1f} s",
            "-", None, f"< {STEP_TARGET_SECONDS:g} s", apply_watch.seconds < STEP_TARGET_SECONDS),
        Row("7 label import", "longest write transaction (SQLite write lock held)", f"{longest * 1000:.0f} ms",
            "whole import before", None, f"< {LOCK_TARGET_SECONDS:g} s", longest < LOCK_TARGET_SECONDS),
    ]  # fmt: skip
    report.notes.append(
        f"label import: CPU time of the importing process: dry run {dry_cpu:.1f} s, apply {apply_cpu:.1f} s "
        f"(the wall times include waiting for other processes on a shared machine); "
        f"{len(dry_run_holds) + len(apply_holds)} write transactions; a second process taking the "
        f"write lock every {PROBE_INTERVAL * 1000:.0f} ms during the apply waited at most "
        f"{max(waits, default=0) * 1000:.0f} ms ({len(waits)} samples); "
        f"{applied.report['applied']['changed']:,} labels changed, skipped {applied.report['skipped']}."
    )
    return report


def _csv(rows: int) -> bytes:
    from images.models import Image

    rng = random.Random(rows)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["original_name", "label"])
    for name in Image.objects.order_by("pk").values_list("original_name", flat=True).iterator(chunk_size=5000):
        writer.writerow([name, rng.choice(DEMO_CLASSES)])
    return out.getvalue().encode("utf-8")


def _run_dry_run(text: bytes, *, user):
    from django.core.files.base import ContentFile

    from predictions.models import LabelImportJob
    from predictions.services.label_import_jobs import label_import_job_run, label_import_job_start

    job = label_import_job_start(file=ContentFile(text, name="bench-labels.csv"), user=user, dry_run=True)
    label_import_job_run(job_id=job.pk)
    return _finished(LabelImportJob.objects.get(pk=job.pk))


def _run_apply(dry_run, *, user):
    from predictions.models import LabelImportJob
    from predictions.services.label_import_jobs import label_import_job_apply_start, label_import_job_run

    job = label_import_job_apply_start(job=dry_run, user=user)
    label_import_job_run(job_id=job.pk)
    return _finished(LabelImportJob.objects.get(pk=job.pk))


def _finished(job):
    if job.status != job.Status.DONE:
        raise RuntimeError(f"{job} ended {job.status}: {job.error}")
    return job


class _write_transactions:
    """Durations of the write transactions on Django's default connection while the block runs.

    An atomic block is timed from the start of its transaction (SQLite's BEGIN
    IMMEDIATE takes the write lock) to its commit or rollback; a write statement
    outside one (autocommit) for as long as it runs.
    """

    WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE")

    def __enter__(self) -> list[float]:
        from django.db import connection

        self.connection = connection
        self.holds: list[float] = []
        self.began: float | None = None
        wrapper = connection
        original = {name: getattr(wrapper, name) for name in ("_start_transaction_under_autocommit", "commit", "rollback")}
        self.original = original

        def start():
            self.began = time.perf_counter()
            return original["_start_transaction_under_autocommit"]()

        def end(name):
            def finish():
                try:
                    return original[name]()
                finally:
                    if self.began is not None:
                        self.holds.append(time.perf_counter() - self.began)
                        self.began = None

            return finish

        wrapper._start_transaction_under_autocommit = start
        wrapper.commit = end("commit")
        wrapper.rollback = end("rollback")
        self.wrapper_context = connection.execute_wrapper(self._autocommit_write)
        self.wrapper_context.__enter__()
        return self.holds

    def _autocommit_write(self, execute, sql, params, many, context):
        if self.connection.in_atomic_block or not sql.lstrip().upper().startswith(self.WRITES):
            return execute(sql, params, many, context)
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            self.holds.append(time.perf_counter() - started)

    def __exit__(self, *exc) -> None:
        self.wrapper_context.__exit__(*exc)
        for name in self.original:
            delattr(self.connection, name)


class _lock_probe:
    """A separate process that takes SQLite's write lock every PROBE_INTERVAL and records each wait."""

    def __init__(self, database: str, root: Path):
        self.database, self.out = database, root / "lock-probe.txt"

    def __enter__(self):
        self.stop = self.out.with_suffix(".stop")
        code = f"import bench.label_import as m; m.probe({self.database!r}, {str(self.out)!r}, {str(self.stop)!r})"
        self.process = subprocess.Popen([PYTHON, "-c", code], cwd=REPO_ROOT)
        deadline = time.monotonic() + 30
        while not self.out.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.stop.touch()
        self.process.wait(timeout=60)
        self.recorded = [float(line) for line in self.out.read_text().split()]

    def waits(self) -> list[float]:
        return self.recorded


def probe(database: str, out: str, stop: str) -> None:
    """In the probe process: BEGIN IMMEDIATE / ROLLBACK in a loop until `stop` exists; one wait per line."""
    connection = sqlite3.connect(database, timeout=60, isolation_level=None)
    stop_path = Path(stop)
    with open(out, "w") as handle:
        handle.flush()
        while not stop_path.exists():
            started = time.perf_counter()
            connection.execute("BEGIN IMMEDIATE")
            waited = time.perf_counter() - started
            connection.execute("ROLLBACK")
            handle.write(f"{waited:.6f}\n")
            handle.flush()
            time.sleep(PROBE_INTERVAL)


if __name__ == "__main__":
    cli(sys.modules[__name__])
