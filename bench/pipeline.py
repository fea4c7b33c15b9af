"""1. The background pipeline against its in-process limit.

(a) The limit: one process, no Django, decode + forward pass of N camera-sized JPEGs
    with ``Predictor.predict_sources`` over batch sizes x precisions; the best setting
    is run three more times and the median of those passes taken. A plain loop (decode a
    batch, then predict it) runs at that setting too; the faster of the two is the limit.
(b) The product: the same photos uploaded as one batch (``upload_files``, source
    COMMAND) to a temp project with a real ``qcluster`` (one worker, the best batch size
    and precision of (a)), timed until every image has its Prediction row; then two more
    sets of photos like them, and the median of the three runs counts. The cluster
    is warmed first with other photos, so (b) is the steady state; the cold start
    (torch import + model load in the worker) is reported on its own.

Targets: (b) / (a) >= 0.9 from the upload's end, >= 0.8 from its start.

(c) A bound on the end-to-end row, from the same run: the upload alone (another set
    of photos, no cluster) costs U core-ms a photo, the limit L (CPU time of the
    process, all threads, over its passes). Sharing the machine's cores with nothing
    lost, upload and worker can at best finish cores / (U + L) photos a second; on a
    CPU-bound machine the end-to-end row cannot exceed that over the limit.
"""

from __future__ import annotations

import itertools
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

from bench.common import (
    Report,
    Row,
    active_model_version,
    cli,
    cpu_clock,
    django_project,
    log,
    qcluster,
    random_checkpoint,
    realistic_photos,
    staff_user,
    stopwatch,
    wait_for,
)
from ml.cores import usable_cores

SIZES = {"small": {"photos": 20}, "medium": {"photos": 200}, "large": {"photos": 1000}}
BATCH_SIZES = (16, 32, 64)
PRECISIONS = ("fp32", "bf16")
WARMUP_PHOTOS = 32  # enough for the worker to meet the batch shapes of the steady state
TARGET = 0.9
END_TO_END_TARGET = 0.8  # where a user waits: the upload's own work (validation decode, hash, storing) counts too
PRODUCT_EXTRA_SEEDS = (2, 3)
UPLOAD_ALONE_SEED = 4
LIMIT_METHODS = ("predict_sources, median of 3", "plain loop")


def add_arguments(parser) -> None:
    parser.add_argument("--photos", type=int, help="how many 1600x1200 JPEGs")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=BATCH_SIZES)
    parser.add_argument("--precisions", nargs="+", default=PRECISIONS)


@dataclass
class Trial:
    method: str
    precision: str
    batch_size: int
    images_per_s: float
    core_ms_per_image: float | None = None  # the process's CPU time (every thread) per image


def run(options) -> Report:
    photos = realistic_photos(options.photos)
    warmup_photos = realistic_photos(WARMUP_PHOTOS, seed=1)
    with django_project() as root:
        checkpoint = random_checkpoint(root / "resnet18-random.pth")
        trials = in_process_trials(checkpoint, photos, batch_sizes=options.batch_sizes, precisions=options.precisions)
        best = in_process_limit(trials)
        log(f"in-process limit: {best}")
        active_model_version(checkpoint)
        upload_core_ms = upload_alone_core_ms(realistic_photos(len(photos), seed=UPLOAD_ALONE_SEED))
        log(f"(c) upload alone: {upload_core_ms:.1f} core-ms a photo")
        # Three runs of different photos (an image uploaded twice is a duplicate, not work).
        photo_sets = [photos, *(realistic_photos(len(photos), seed=seed) for seed in PRODUCT_EXTRA_SEEDS)]
        product = product_run(
            root, photo_sets, warmup_photos, precision=best.precision, batch_size=best.batch_size
        )

    cores = usable_cores()
    bound = cores * 1000 / (upload_core_ms + best.core_ms_per_image)
    report = Report(metrics={
        "photos": len(photos), "trials": [vars(t) for t in trials], **product,
        "upload_alone_core_ms_per_image": upload_core_ms, "cores": cores, "end_to_end_bound_images_per_s": bound,
    })  # fmt: skip
    limit = f"in-process limit ({best.method}, {best.precision}, batch {best.batch_size})"
    report.rows.append(Row.versus(
        "1 pipeline", f"qcluster (from upload end) / {limit}",
        ours=product["images_per_s_from_upload_end"], reference=best.images_per_s, unit="img/s", target_ratio=TARGET,
    ))
    report.rows.append(Row.versus(
        "1 pipeline", "qcluster end to end (upload start -> last row) / in-process limit",
        ours=product["images_per_s_end_to_end"], reference=best.images_per_s, unit="img/s",
        target_ratio=END_TO_END_TARGET,
    ))
    # No target: what the row above could reach on this machine with nothing lost (module docstring, (c)).
    report.rows.append(Row.versus(
        "1 pipeline",
        f"bound on end to end: {cores} cores / (upload alone {upload_core_ms:.1f} + limit "
        f"{best.core_ms_per_image:.1f} core-ms a photo) / in-process limit",
        ours=bound, reference=best.images_per_s, unit="img/s",
    ))
    report.notes += _notes(product, trials, best)
    return report


def _notes(product: dict, trials: list[Trial], best: Trial) -> list[str]:
    delay = product["first_task_delay_seconds"]
    notes = [
        "pipeline (a): " + ", ".join(
            f"{t.method} {t.precision}/{t.batch_size} {t.images_per_s:.1f}" for t in trials
        ) + " img/s.",
        "pipeline (b): runs of " + ", ".join(f"{rate:.1f}" for rate in product["runs"]) + " img/s, the median's "
        f"numbers follow. Upload {product['upload_seconds']:.2f} s; cluster cold start (torch import, model load, "
        f"{WARMUP_PHOTOS} photos) {product['cold_start_seconds']:.2f} s, not counted; worker time by task: "
        + ", ".join(f"{func} x{stats['count']} {stats['seconds']:.2f} s" for func, stats in product["tasks"].items())
        + f" (one worker, in turn, queue pickup included); queue empty {product['idle_seconds']:.2f} s; "
        + f"first task queued {delay:+.2f} s from the upload's end (uploads queue work after 32 files, then at "
        + "doubling intervals up to every 200).",
    ]
    if product["mean_inference_ms"] is not None:
        notes.append(
            f"pipeline (b): inference_ms recorded per prediction {product['mean_inference_ms']:.1f} ms on average; "
            f"the limit spends {1000 / best.images_per_s:.1f} ms per image."
        )
    return notes


# --- (a) the in-process limit --------------------------------------------------------


def in_process_limit(trials: list[Trial]) -> Trial:
    """The limit among ``in_process_trials``: the faster of the best setting's median of 3 and the plain loop."""
    return max((trial for trial in trials if trial.method in LIMIT_METHODS), key=lambda trial: trial.images_per_s)


def in_process_trials(checkpoint: Path, photos: list[Path], *, batch_sizes, precisions) -> list[Trial]:
    from ml.decode import open_image
    from ml.predictor import Predictor

    def sources(paths):
        return ((path.name, path) for path in paths)

    def timed_pass(predictor) -> tuple[float, float]:
        """(images per second, core-ms per image) of one pass over the photos."""
        with cpu_clock() as cpu, stopwatch() as watch:
            results = list(predictor.predict_sources(sources(photos)))
        _check_all_predicted(results)
        return len(photos) / watch.seconds, 1000 * cpu.seconds / len(photos)

    trials = []
    for precision, batch_size in itertools.product(precisions, batch_sizes):
        predictor = Predictor.from_checkpoint(checkpoint, device="auto", precision=precision, batch_size=batch_size)
        list(predictor.predict_sources(sources(photos[:batch_size])))  # warm-up: oneDNN picks its kernels
        trials.append(Trial("predict_sources", predictor.precision, batch_size, *timed_pass(predictor)))
        log(f"(a) {trials[-1]}")

    best = max(trials, key=lambda trial: trial.images_per_s)
    predictor = Predictor.from_checkpoint(
        checkpoint, device="auto", precision=best.precision, batch_size=best.batch_size
    )
    # A single pass swings by 10-20% on a shared machine: the limit is the median of
    # three more passes at the best setting. Not counting the pass that chose it, which
    # won among noisy passes and so is likelier than not to be high.
    passes = [timed_pass(predictor) for _ in range(3)]
    trials.append(Trial(
        "predict_sources, median of 3", best.precision, best.batch_size,
        statistics.median(rate for rate, _ in passes), statistics.median(core_ms for _, core_ms in passes),
    ))  # fmt: skip
    log(f"(a) {trials[-1]} from {', '.join(f'{rate:.1f}' for rate, _ in passes)}")
    draft_size = 2 * predictor.preprocessing.input_size  # as predict_sources decodes

    def plain_loop(paths: list[Path]) -> None:
        for start in range(0, len(paths), best.batch_size):
            chunk = paths[start : start + best.batch_size]
            predictor.predict([open_image(path, name=path.name, draft_size=draft_size) for path in chunk])

    plain_loop(photos[: best.batch_size])  # warm-up
    with cpu_clock() as cpu, stopwatch() as watch:
        plain_loop(photos)
    trials.append(Trial(
        "plain loop", best.precision, best.batch_size, len(photos) / watch.seconds, 1000 * cpu.seconds / len(photos)
    ))
    log(f"(a) {trials[-1]}")
    return trials


def _check_all_predicted(results) -> None:
    failed = [str(result) for _name, result in results if isinstance(result, Exception)]
    if failed:
        raise RuntimeError(f"{len(failed)} photos failed to decode, e.g. {failed[0]}")


# --- (b) the product -----------------------------------------------------------------------


def product_run(
    root: Path, photo_sets: list[list[Path]], warmup_photos: list[Path], *, precision: str, batch_size: int
) -> dict:
    """Upload each set of photos in turn to a warmed-up one-worker qcluster and time their predictions.

    The project must have an active model version (``active_model_version``).
    The numbers are those of the median run (by images per second from the
    upload's end), with every run's rate in ``runs``.
    """
    uploader = staff_user("uploader", "Uploaders")
    env = {"INFERENCE_PRECISION": precision, "INFERENCE_BATCH_SIZE": str(batch_size), "Q_WORKERS": "1"}
    with qcluster(env=env, log_path=root / "qcluster.log"):
        with stopwatch() as cold_start:
            _upload_and_wait(warmup_photos, uploader, name="warm-up")
        log(f"(b) cluster warm after {cold_start.seconds:.2f} s")
        runs = [_timed_upload(photos, uploader, name=f"bench {number}") for number, photos in enumerate(photo_sets, 1)]

    rates = [run["images_per_s_from_upload_end"] for run in runs]
    median_run = sorted(runs, key=lambda run: run["images_per_s_from_upload_end"])[len(runs) // 2]
    return {**median_run, "runs": rates, "cold_start_seconds": cold_start.seconds, "settings": env}


def _timed_upload(photos: list[Path], uploader, *, name: str) -> dict:
    from django.db.models import Max
    from django.utils import timezone
    from django_q.models import OrmQ, Task

    from predictions.models import Prediction

    started_at = timezone.now()
    batch = _upload(photos, uploader, name=name)
    uploaded_at = timezone.now()
    _wait_for_predictions(batch, timeout=60 + 5 * len(photos))
    # The clock stops at the last row's creation time, as the worker recorded
    # it, so this process can poll slowly and stay out of the worker's way.
    last_row_at = Prediction.objects.filter(image__batch=batch).aggregate(last=Max("created_at"))["last"]
    after_upload = (last_row_at - uploaded_at).total_seconds()
    end_to_end = (last_row_at - started_at).total_seconds()
    log(f"(b) {name}: {len(photos)} photos predicted {after_upload:.2f} s after the upload ended")
    # The cluster records a task after its work is committed and then acks it: an
    # empty queue means every task of the run has its record.
    wait_for(lambda: not OrmQ.objects.exists(), timeout=60, what="the task queue to empty")
    tasks = list(Task.objects.filter(started__gte=started_at).order_by("started"))
    return {
        "images_per_s_from_upload_end": len(photos) / after_upload,
        "images_per_s_end_to_end": len(photos) / end_to_end,
        "upload_seconds": (uploaded_at - started_at).total_seconds(),
        **_worker_profile(tasks, uploaded_at=uploaded_at, batch=batch),
    }


def _upload(paths: list[Path], user, *, name: str):
    from images.models import UploadBatch
    from images.services import upload_files

    def opened():
        for path in paths:
            with path.open("rb") as fp:  # closed once the upload moves on to the next file
                yield path.name, fp

    batch = upload_files(files=opened(), user=user, source=UploadBatch.Source.COMMAND, name=name)
    if batch.accepted_count != len(paths):
        raise RuntimeError(f"upload accepted {batch.accepted_count} of {len(paths)} photos: {batch.report[:3]}")
    return batch


def upload_alone_core_ms(paths: list[Path]) -> float:
    """CPU time per photo of uploading ``paths`` with no cluster running, as (b) uploads them.

    What the upload queued is taken back (its tasks, its images), so the cluster
    started afterwards finds nothing of it.
    """
    from django_q.models import OrmQ

    from images.models import Image
    from images.services import images_delete

    user = staff_user("upload-alone", "Uploaders")
    _upload(paths[:4], user, name="upload alone, warm-up")  # imports, first queries
    with cpu_clock() as cpu:
        _upload(paths[4:], user, name="upload alone")
    OrmQ.objects.all().delete()
    images_delete(images=Image.objects.filter(uploaded_by=user))
    return 1000 * cpu.seconds / (len(paths) - 4)


def _upload_and_wait(paths: list[Path], user, *, name: str) -> None:
    _wait_for_predictions(_upload(paths, user, name=name), timeout=300)


def _wait_for_predictions(batch, *, timeout: float) -> None:
    from predictions.models import Prediction, PredictionFailure

    def all_done() -> bool:
        predicted = Prediction.objects.filter(image__batch=batch).count()
        failed = PredictionFailure.objects.filter(image__batch=batch).count()
        return predicted + failed >= batch.accepted_count

    wait_for(all_done, timeout=timeout, what=f"predictions of {batch.accepted_count} images", interval=0.5)
    failures = PredictionFailure.objects.filter(image__batch=batch)
    if failures.exists():
        raise RuntimeError(f"{failures.count()} predictions failed, e.g. {failures.first().message}")


def _worker_profile(tasks, *, uploaded_at, batch) -> dict:
    """Where the worker's time went, from django-q2's task records.

    django-q2 records when a task was queued (``started``) and when it finished
    (``stopped``); with one worker a task ran from the later of its queueing and the
    previous task's end, so that span is its run time (poll pickup included).
    """
    from predictions.models import Prediction

    tasks = sorted(tasks, key=lambda task: task.stopped)
    by_func: dict[str, dict] = {}
    previous_stop = None
    idle = 0.0
    for task in tasks:
        began = task.started if previous_stop is None else max(task.started, previous_stop)
        if previous_stop is not None and task.started > previous_stop:
            idle += (task.started - previous_stop).total_seconds()
        stats = by_func.setdefault(task.func, {"count": 0, "seconds": 0.0})
        stats["count"] += 1
        stats["seconds"] += (task.stopped - began).total_seconds()
        previous_stop = task.stopped
    inference_ms = list(
        Prediction.objects.filter(image__batch=batch, inference_ms__isnull=False).values_list("inference_ms", flat=True)
    )
    return {
        "tasks": by_func,
        "idle_seconds": idle,
        "first_task_delay_seconds": (tasks[0].started - uploaded_at).total_seconds() if tasks else 0.0,
        "mean_inference_ms": statistics.mean(inference_ms) if inference_ms else None,
    }


if __name__ == "__main__":
    cli(sys.modules[__name__])
