"""Shared benchmark helpers: results, the command line, a temp project, data, processes.

Every benchmark module runs in its own process (``python -m bench.<name>``), so a
temp project (database, media, weights) lives exactly as long as one benchmark and
memory or thread settings of one never leak into the next.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from ml.cores import usable_cores

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "bench" / "results"
CACHE_DIR = RESULTS_DIR / "cache"
PYTHON = sys.executable
DEMO_CLASSES = ["circle", "square", "triangle", "star", "cross"]
SIZE_NAMES = ("small", "medium", "large")
DEFAULT_SIZE = "medium"


# --- results ---------------------------------------------------------------------


@dataclass
class Row:
    """One line of the results table: our number against its reference."""

    benchmark: str
    comparison: str
    ours: str
    reference: str
    ratio: float | None
    target: str
    met: bool | None  # None: no target, or not measurable here

    @classmethod
    def versus(
        cls, benchmark: str, comparison: str, *, ours: float, reference: float, unit: str,
        target_ratio: float | None = None, at_most: bool = False,
    ) -> Row:
        """``ours / reference`` checked against ``target_ratio`` (a floor, or a ceiling with at_most)."""
        ratio = ours / reference if reference else None
        met = None
        target = "-"
        if target_ratio is not None and ratio is not None:
            met = ratio <= target_ratio if at_most else ratio >= target_ratio
            target = f"{'<=' if at_most else '>='} {target_ratio:g}"
        return cls(benchmark, comparison, f"{ours:.4g} {unit}", f"{reference:.4g} {unit}", ratio, target, met)


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)  # raw numbers, for the JSON file
    notes: list[str] = field(default_factory=list)  # what was measured how, and why a target is missed

    def to_dict(self) -> dict[str, Any]:
        return {"rows": [asdict(row) for row in self.rows], "metrics": self.metrics, "notes": self.notes}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        return cls([Row(**row) for row in data["rows"]], data["metrics"], data["notes"])


def markdown_table(rows: list[Row]) -> str:
    lines = [
        "| benchmark | comparison | ours | reference | ratio | target | met |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        ratio = "-" if row.ratio is None else f"{row.ratio:.3g}"
        met = {True: "yes", False: "**no**", None: "-"}[row.met]
        lines.append(
            f"| {row.benchmark} | {row.comparison} | {row.ours} | {row.reference} | {ratio} | {row.target} | {met} |"
        )
    return "\n".join(lines)


def machine_info() -> dict[str, Any]:
    import torch

    cpu_model = platform.processor() or "unknown"
    flags: set[str] = set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and cpu_model == (platform.processor() or "unknown"):
                cpu_model = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    # bf16 speed hangs on these: AMX tiles are several times faster than AVX512-BF16.
    bf16_units = [name for flag, name in (("amx_bf16", "AMX-BF16"), ("avx512_bf16", "AVX512-BF16")) if flag in flags]
    cuda = torch.cuda.is_available()
    return {
        "cpu": cpu_model,
        "cores": usable_cores(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_bf16": ", ".join(bf16_units) or "none",
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
    }


def describe_machine(info: dict[str, Any]) -> str:
    return (
        f"{info['cpu']}, {info['cores']} cores ({info['cpu_capability']}; bf16: {info.get('cpu_bf16', '?')}), "
        f"load {info['load_average_1min']}; "
        f"Python {info['python']}, torch {info['torch']} ({info['torch_threads']} threads); device {info['device']}"
    )


# --- the command line of one benchmark module --------------------------------------


def cli(module: ModuleType) -> None:
    """``python -m bench.<name> [--size S] [--<count> N] [--json-out PATH]``.

    The module defines ``SIZES`` (size name -> option defaults), ``add_arguments(parser)``
    for its count options (default None, so the size fills them) and ``run(options) -> Report``.
    """
    name = module.__name__.rpartition(".")[2] if module.__name__ != "__main__" else Path(module.__file__).stem
    parser = argparse.ArgumentParser(prog=f"python -m bench.{name}", description=module.__doc__)
    parser.add_argument("--size", choices=SIZE_NAMES, default=DEFAULT_SIZE)
    parser.add_argument("--json-out", type=Path, help="also write the report here")
    module.add_arguments(parser)
    options = parser.parse_args()
    for option, value in module.SIZES[options.size].items():
        if getattr(options, option, None) is None:
            setattr(options, option, value)
    report = module.run(options)
    print()
    print(markdown_table(report.rows))
    for note in report.notes:
        print(f"- {note}")
    if options.json_out:
        options.json_out.write_text(json.dumps(report.to_dict(), indent=2))


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- timing ---------------------------------------------------------------------------


class Stopwatch:
    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self._clock = clock
        self.started = clock()
        self.stopped: float | None = None

    @property
    def seconds(self) -> float:
        return (self._clock() if self.stopped is None else self.stopped) - self.started

    def stop(self) -> None:
        self.stopped = self._clock()


@contextlib.contextmanager
def stopwatch() -> Iterator[Stopwatch]:
    """The wall time spent inside the block (``.seconds``)."""
    watch = Stopwatch()
    try:
        yield watch
    finally:
        watch.stop()


@contextlib.contextmanager
def cpu_clock() -> Iterator[Stopwatch]:
    """The CPU time this process spends inside the block, every thread counted (``.seconds``)."""
    watch = Stopwatch(time.process_time)
    try:
        yield watch
    finally:
        watch.stop()


def median_seconds(fn: Callable[[], Any], *, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        with stopwatch() as watch:
            fn()
        times.append(watch.seconds)
    return statistics.median(times)


def wait_for(predicate: Callable[[], bool], *, timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


# --- a temp project ---------------------------------------------------------------------


@contextlib.contextmanager
def django_project(*, keep: bool = False) -> Iterator[Path]:
    """Point the settings at a fresh temp folder, set Django up and migrate; yields the folder.

    The variables stay in ``os.environ``, so subprocesses started inside see the same project.
    """
    root = Path(tempfile.mkdtemp(prefix="reviewtool-bench-"))
    os.environ["DJANGO_SETTINGS_MODULE"] = "bench.settings"
    os.environ["REVIEWTOOL_BENCH_ROOT"] = str(root)
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    try:
        yield root
    finally:
        from django.db import connections

        connections.close_all()
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


def staff_user(username: str, group: str | None = None, *, superuser: bool = False):
    from django.contrib.auth.models import Group, User

    user = User.objects.create_user(username=username, is_staff=True, is_superuser=superuser)
    if group:
        user.groups.add(Group.objects.get(name=group))
    return user


def random_checkpoint(dest: Path, *, input_size: int = 224, seed: int = 0) -> Path:
    """The product's default model (ResNet18 + custom head, five classes) with random weights."""
    import torch

    from ml.checkpoints import CheckpointMetadata, save_checkpoint
    from ml.models import DEFAULT_ARCH, build_model

    torch.manual_seed(seed)
    model = build_model(DEFAULT_ARCH, len(DEMO_CLASSES))
    metadata = CheckpointMetadata(arch=DEFAULT_ARCH, class_names=list(DEMO_CLASSES), input_size=input_size)
    dest.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(dest, model=model, metadata=metadata)
    return dest


def active_model_version(checkpoint: Path | None, *, name: str = "bench", input_size: int = 224):
    """An active, validated ModelVersion (and its Labels), as the admin's register-and-activate leaves it.

    Without a checkpoint file the row names one that does not exist: enough for pages that
    never load the model.
    """
    from django.core.files import File

    from predictions.models import ModelVersion
    from predictions.services.labels import labels_ensure

    labels_ensure(names=DEMO_CLASSES)
    version = ModelVersion(
        name=name,
        class_names=list(DEMO_CLASSES),
        input_size=input_size,
        mean=[0.485, 0.456, 0.406],
        std=[0.229, 0.224, 0.225],
        is_active=True,
        validation_status=ModelVersion.Validation.VALID,
    )
    if checkpoint is None:
        version.checkpoint.name = f"{name}.pth"
    else:
        with checkpoint.open("rb") as fp:
            version.checkpoint.save(checkpoint.name, File(fp), save=False)
    version.save()
    return version


# --- data ---------------------------------------------------------------------------------


def realistic_photos(count: int, *, size: tuple[int, int] = (1600, 1200), seed: int = 0) -> list[Path]:
    """``count`` distinct camera-like JPEGs (smooth colour fields, shapes, sensor noise; ~330 kB).

    Cached under bench/results/cache, since generating one costs a quarter of a second.
    """
    folder = CACHE_DIR / f"photos-{size[0]}x{size[1]}-seed{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"photo_{index:05d}.jpg" for index in range(count)]
    missing = [path for path in paths if not path.exists()]
    if missing:
        log(f"generating {len(missing)} photos of {size[0]}x{size[1]} in {folder}")
    for path in missing:
        index = int(path.stem.rpartition("_")[2])
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(_photo_bytes(size, seed=(seed, index)))
        tmp.rename(path)
    return paths


def _photo_bytes(size: tuple[int, int], *, seed: tuple[int, int]) -> bytes:
    import numpy as np
    from PIL import Image, ImageDraw, ImageFilter

    rng = np.random.default_rng(seed)
    width, height = size
    colours = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    img = Image.fromarray(colours).resize(size, Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(img)
    for _ in range(12):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        box = [x0, y0, x0 + int(rng.integers(50, 600)), y0 + int(rng.integers(50, 600))]
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=fill)
    img = img.filter(ImageFilter.GaussianBlur(2))
    noise = rng.standard_normal((height, width, 3), dtype=np.float32) * 5
    pixels = np.clip(np.asarray(img, dtype=np.float32) + noise, 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=90)
    return out.getvalue()


def reviewed_images_create(*, images: int, reviews: int, model_version, reviewer, uploader) -> None:
    """Add ``images`` Image rows (fake file names, no files), one Prediction each, and a
    Review on ``reviews`` of them (spread evenly) with the denormalised review state filled in.
    Numbering continues after the rows already there, so a table can be grown in steps."""
    import hashlib
    import random
    from datetime import timedelta

    from django.db import transaction
    from django.utils import timezone

    from images.models import Image, UploadBatch
    from predictions.models import Label, Prediction, Review

    rng = random.Random(images)
    labels = list(Label.objects.filter(name__in=DEMO_CLASSES).order_by("order"))
    start = Image.objects.count()
    now = timezone.now()
    review_every = images / reviews if reviews else None
    step = 5000
    with transaction.atomic():
        for offset in range(0, images, step):
            batch = UploadBatch.objects.create(name=f"bench {start + offset}", created_by=uploader)
            new_images, decisions = [], []
            for index in range(offset, min(offset + step, images)):
                number = start + index
                sha = hashlib.sha256(str(number).encode()).hexdigest()
                reviewed = review_every is not None and int(index % review_every) == 0
                decision = rng.choice(labels) if reviewed else None
                decisions.append(decision)
                new_images.append(Image(
                    file=f"images/{sha[:2]}/{sha[2:4]}/{sha}.jpg", thumbnail=f"thumbnails/{sha}.jpg",
                    sha256=sha, original_name=f"photo_{number:07d}.jpg",
                    width=1600, height=1200, format="JPEG", size_bytes=330_000,
                    uploaded_by=uploader, batch=batch, uploaded_at=now - timedelta(seconds=number),
                    final_label=decision, reviewed_by=reviewer if reviewed else None,
                    reviewed_at=now if reviewed else None, review_count=int(reviewed),
                ))
            Image.objects.bulk_create(new_images)
            predictions = [_random_prediction(image, model_version, labels, rng) for image in new_images]
            Prediction.objects.bulk_create(predictions)
            Review.objects.bulk_create(
                Review(
                    image=image, reviewer=reviewer, label=decision, prediction=prediction,
                    agreed=decision == prediction.label, seconds_spent=3.0, created_at=now,
                )
                for image, prediction, decision in zip(new_images, predictions, decisions)
                if decision is not None
            )


def _random_prediction(image, model_version, labels, rng):
    from predictions.models import Prediction

    weights = [rng.random() for _ in labels]
    probabilities = [weight / sum(weights) for weight in weights]
    ranked = sorted(range(len(labels)), key=probabilities.__getitem__, reverse=True)
    return Prediction(
        image=image, model_version=model_version, label=labels[ranked[0]],
        confidence=probabilities[ranked[0]], margin=probabilities[ranked[0]] - probabilities[ranked[1]],
        probabilities=probabilities, inference_ms=30.0,
    )


# --- processes ------------------------------------------------------------------------------


def _stop(process: subprocess.Popen, *, timeout: float = 30) -> None:
    """SIGTERM (django-q2 and gunicorn shut down cleanly on it), then SIGKILL the process group."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # our own session: the process and its children
            process.wait()


@contextlib.contextmanager
def background_process(command: list[str], *, env: dict[str, str], log_path: Path) -> Iterator[subprocess.Popen]:
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(
            command, cwd=REPO_ROOT, env={**os.environ, **env},
            stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
        )
        try:
            yield process
        finally:
            _stop(process)


@contextlib.contextmanager
def qcluster(*, env: dict[str, str], log_path: Path) -> Iterator[subprocess.Popen]:
    """A real ``manage.py qcluster`` on the current project (not sync mode)."""
    with background_process([PYTHON, "manage.py", "qcluster"], env=env, log_path=log_path) as process:
        yield process


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def gunicorn(*, env: dict[str, str], log_path: Path, workers: int = 1) -> Iterator[str]:
    """The production WSGI server on the current project; yields its base URL once it answers."""
    import requests

    port = free_port()
    command = [
        PYTHON, "-m", "gunicorn", "reviewtool.wsgi:application", "--bind", f"127.0.0.1:{port}",
        "--workers", str(workers), "--timeout", "600",
    ]
    base_url = f"http://127.0.0.1:{port}"
    with background_process(command, env=env, log_path=log_path) as process:

        def answers() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {process.returncode}; see {log_path}")
            try:
                requests.get(base_url + "/admin/login/", timeout=5)
                return True
            except requests.ConnectionError:
                return False

        wait_for(answers, timeout=60, what="gunicorn to answer", interval=0.2)
        yield base_url
