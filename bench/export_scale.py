"""5. The label CSV export at scale against a plain csv.writer.

N generated images (with predictions, a fifth reviewed) are exported to CSV by:
- ours: ``predictions.services.exports.labels_csv_write``, the background export
  task's function, for an ExportJob of all images in changelist order;
- plain: ``csv.writer`` over ``values_list(...).iterator()`` of the same columns
  (the same joins, from ``image_export_queryset``), into a temp file.

Each runs in a fresh process (so neither reuses memory the other or the data
generation left behind): once timed, with peak RSS growth read from /proc
(VmHWM reset through /proc/self/clear_refs), then once under tracemalloc for the
peak Python heap growth.

Targets: time(ours) <= 3 x time(plain); peak memory growth (RSS) of ours < 150 MB.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import (
    PYTHON,
    REPO_ROOT,
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

SIZES = {"small": {"rows": 10_000}, "medium": {"rows": 100_000}, "large": {"rows": 1_000_000}}
TIME_RATIO_TARGET = 3.0
MEMORY_TARGET_MB = 150
PLAIN_COLUMNS = (  # ImageLabelResource's columns, as plain values
    "id", "original_name", "sha256", "file", "batch__name", "uploaded_by__username", "uploaded_at",
    "export_predicted_label", "export_confidence", "final_label__name", "reviewed_by__username", "reviewed_at",
    "export_agreed", "review_count", "label_source",
)  # fmt: skip


def add_arguments(parser) -> None:
    parser.add_argument("--rows", type=int, help="images to export")


def run(options) -> Report:
    with django_project() as root:
        users = {name: staff_user(name, group) for name, group in (("lead", "Leads"), ("reviewer", "Reviewers"))}
        version = active_model_version(None)
        with stopwatch() as watch:
            reviewed_images_create(images=options.rows, reviews=options.rows // 5, model_version=version,
                                   reviewer=users["reviewer"], uploader=users["lead"])  # fmt: skip
        log(f"{options.rows} images with predictions ({watch.seconds:.1f} s to create)")
        results = {kind: _measure_in_fresh_process(kind, root, user=users["lead"]) for kind in ("ours", "plain")}
        for kind, result in results.items():
            log(f"{kind}: {result}")

    ours, plain = results["ours"], results["plain"]
    report = Report(metrics={"rows": options.rows, **results})
    report.rows += [
        Row.versus("5 export", f"CSV of {options.rows:,} rows: time ours / plain csv.writer",
                   ours=ours["seconds"], reference=plain["seconds"], unit="s",
                   target_ratio=TIME_RATIO_TARGET, at_most=True),
        Row("5 export", "peak RSS growth of ours (plain writer's as reference)",
            f"{ours['rss_growth_mb']:.1f} MB", f"{plain['rss_growth_mb']:.1f} MB", None,
            f"< {MEMORY_TARGET_MB} MB", ours["rss_growth_mb"] < MEMORY_TARGET_MB),
    ]  # fmt: skip
    report.notes.append(
        f"export: peak Python heap growth (tracemalloc) ours {ours['heap_peak_mb']:.1f} MB, "
        f"plain {plain['heap_peak_mb']:.1f} MB; files {ours['bytes'] / 1e6:.1f} MB and {plain['bytes'] / 1e6:.1f} MB."
    )
    return report


def _measure_in_fresh_process(kind: str, root: Path, *, user) -> dict:
    from images.models import Image
    from predictions.services.exports import labels_csv_export_start

    job_ids = []
    if kind == "ours":  # a job per run (a finished job is not written again): warm-up, timed, traced
        image_ids = list(Image.objects.order_by("-uploaded_at", "-id").values_list("id", flat=True))
        runs = (image_ids[:100], image_ids, image_ids)
        job_ids = [labels_csv_export_start(image_ids=ids, user=user).pk for ids in runs]
    out = root / f"export-{kind}.json"
    code = f"import bench.export_scale as m; m.child_measure({kind!r}, {job_ids!r}, {str(out)!r})"
    subprocess.run([PYTHON, "-c", code], cwd=REPO_ROOT, check=True)
    return json.loads(out.read_text())


# --- in the fresh process ---------------------------------------------------------------


def child_measure(kind: str, job_ids: list[int], out: str) -> None:
    import tracemalloc

    import django

    django.setup()
    export = _ours(job_ids) if kind == "ours" else _plain()
    export()  # warm-up on 100 rows: imports, first-query costs
    result = {}
    _reset_peak_rss()
    rss_before = _rss_mb("VmRSS")
    with stopwatch() as watch:
        size = export()
    result.update(seconds=watch.seconds, rss_growth_mb=_rss_mb("VmHWM") - rss_before, bytes=size)
    tracemalloc.start()
    export()
    result["heap_peak_mb"] = tracemalloc.get_traced_memory()[1] / 1e6
    tracemalloc.stop()
    Path(out).write_text(json.dumps(result))


def _ours(job_ids: list[int]):
    """Each call writes the next job's file and returns its size."""
    from django.core.files.storage import default_storage

    from predictions.models import ExportJob
    from predictions.services.exports import labels_csv_write

    jobs = iter(job_ids)

    def export() -> int:
        job_id = next(jobs)
        labels_csv_write(job_id=job_id)
        job = ExportJob.objects.get(pk=job_id)
        if job.status != ExportJob.Status.DONE:
            raise RuntimeError(f"export job {job_id} ended {job.status}: {job.error}")
        return default_storage.size(job.file.name)

    return export


def _plain():
    """Each call writes the whole CSV; the first call (the warm-up) only 100 rows."""
    import csv

    from django.conf import settings

    from images.models import Image
    from predictions.selectors.exports import image_export_queryset
    from predictions.selectors.versions import model_version_active

    limits = iter([100])

    def export() -> int:
        queryset = image_export_queryset(
            queryset=Image.objects.order_by("-uploaded_at", "-id"), model_version=model_version_active()
        )[: next(limits, None)]
        with tempfile.TemporaryFile("w+", newline="", encoding="utf-8") as out:
            writer = csv.writer(out)
            writer.writerow(PLAIN_COLUMNS)
            for row in queryset.values_list(*PLAIN_COLUMNS).iterator(chunk_size=2000):
                writer.writerow((*row[:3], settings.MEDIA_URL + row[3], *row[4:]))
            return out.tell()

    return export


def _reset_peak_rss() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    except OSError:
        pass  # then VmHWM is the process's peak so far: an overestimate of the growth


def _rss_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


if __name__ == "__main__":
    cli(sys.modules[__name__])
