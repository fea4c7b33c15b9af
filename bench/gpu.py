"""The GPU run (``scripts/gpu_bench.sh``): pipeline, API, precision and JPEG decoding, one table.

    python -m bench.gpu                  # INFERENCE_DEVICE's device (cuda on a GPU machine), full size
    python -m bench.gpu --size smoke     # the same code paths on a few small photos (the CPU test)

Each row is measured against its reference in the same run, on the device INFERENCE_DEVICE
names (``auto``: cuda when there is one):

1. pipeline: bench.pipeline's in-process limit over batch sizes up to 256 and fp32/fp16/bf16,
   then its product run (upload + a one-worker qcluster) at the limit's best setting.
   Target: >= 0.8 of the limit.
2. API: bench.tutorial's JSON API (gunicorn, product defaults) and the background pipeline
   against the tutorial's view, all on the device.
3. precision: the Predictor's own forward pass (input already on the device, probabilities and
   embeddings back on the host) in fp16 and bf16 against fp32, at each batch size. Target: >= 3.
4. JPEG decoding: ``torchvision.io.decode_jpeg`` on the device (nvJPEG), then resize, crop and
   normalise there, against the product's Pillow decode (reduced-scale draft, decode threads),
   alone and followed by the model. Bench only: the product decodes with ml.decode.

``--agreement`` adds top-1 agreement of fp16 and bf16 with fp32 on held-out demo images, from
the trained demo checkpoint (bench.precision's; training it adds minutes where it is not cached).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import subprocess
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

from bench import common
from bench.common import RESULTS_DIR, Report, Row, log, markdown_table
from ml.cores import usable_cores

PIPELINE_TARGET = 0.8
PRECISION_TARGET = 3.0
STRICT_FP32 = "fp32, TF32 off"  # IEEE fp32: what a GPU's fp32 is without tensor cores
DECODE_ON = ("cpu", "cuda")
PRODUCT_SEEDS = (0, 2, 3)  # as bench.pipeline: an image uploaded twice is a duplicate, not work
WARMUP_SEED = 1


@dataclass(frozen=True)
class Size:
    photos: int  # per product run; the in-process limit and decoding use the first set
    product_runs: int
    photo_size: tuple[int, int]
    warmup_photos: int
    batch_sizes: tuple[int, ...]
    limit_precisions: tuple[str, ...]  # tried for the in-process limit
    precisions: tuple[str, ...]  # timed for the precision rows
    input_size: int  # the checkpoint's; the product run and the API use 224 (their model version's)
    min_calls: int  # each precision and batch size is timed over at least this many calls
    seconds_per_speed: float  # and at least this long
    api_photos: int
    api_batch: int
    tutorial_photos: int


# "full" took 3.2-3.3 minutes on an H200 with 16 cores (2026-11-30); most of it is photo
# generation, uploads and process starts, which the CPU does. "smoke" only runs the code.
SIZES = {
    "full": Size(
        photos=512, product_runs=3, photo_size=(1600, 1200), warmup_photos=32, batch_sizes=(32, 64, 128, 256),
        limit_precisions=("fp32", "fp16", "bf16"), precisions=("fp32", "fp16", "bf16"), input_size=224,
        min_calls=3, seconds_per_speed=1.0, api_photos=256, api_batch=64, tutorial_photos=32,
    ),
    "smoke": Size(
        photos=4, product_runs=1, photo_size=(320, 240), warmup_photos=2, batch_sizes=(2,),
        limit_precisions=("fp32",), precisions=("fp32", "fp16", "bf16"), input_size=32,
        min_calls=1, seconds_per_speed=0.0, api_photos=2, api_batch=2, tutorial_photos=1,
    ),
}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=SIZES, default="full")
    parser.add_argument("--agreement", action="store_true", help="also top-1 agreement on a trained model")
    parser.add_argument("--json-out", type=Path, default=RESULTS_DIR / "gpu-latest.json")
    options = parser.parse_args()
    size = SIZES[options.size]
    started = time.monotonic()

    # Photos first, in processes of their own, before this one touches CUDA.
    photo_sets = [photos(size.photos, size.photo_size, seed=seed) for seed in PRODUCT_SEEDS[: size.product_runs]]
    warmup = photos(size.warmup_photos, size.photo_size, seed=WARMUP_SEED)

    import torch

    from ml.predictor import resolve_device

    try:
        device = resolve_device(os.environ.get("INFERENCE_DEVICE", "auto"))
    except ValueError as exc:
        print(f"bench.gpu: {exc}", file=sys.stderr)
        return 2
    machine = {**common.machine_info(), **gpu_info(device)}
    title = f"GPU run ({options.size}; {describe(machine)})"
    print(f"{title}\n", flush=True)
    report = run(size, device=device, photo_sets=photo_sets, warmup=warmup, agreement=options.agreement)
    minutes = (time.monotonic() - started) / 60
    report.notes.append(f"Run took {minutes:.1f} min; torch {torch.__version__}, CUDA {torch.version.cuda}.")

    print(f"\n## {title}\n\n{markdown_table(report.rows)}\n")
    for note in report.notes:
        print(f"- {note}")
    options.json_out.parent.mkdir(parents=True, exist_ok=True)
    saved = {"size": options.size, "machine": machine, "minutes": round(minutes, 2),
             "table": markdown_table(report.rows), **report.to_dict()}  # fmt: skip
    options.json_out.write_text(json.dumps(saved, indent=2))
    return 0


def run(size: Size, *, device, photo_sets: list[list[Path]], warmup: list[Path], agreement: bool) -> Report:
    from bench import pipeline

    report = Report()
    decode_on = "cuda" if device.type == "cuda" else "cpu"
    with common.django_project() as root:
        checkpoint = common.random_checkpoint(root / "resnet18-random.pth", input_size=size.input_size)
        paths = photo_sets[0]
        trials = pipeline.in_process_trials(
            checkpoint, paths, batch_sizes=size.batch_sizes, precisions=size.limit_precisions
        )
        best = pipeline.in_process_limit(trials)
        log(f"in-process limit: {best}")
        limit = f"in-process limit ({best.method}, {best.precision}, batch {best.batch_size})"

        decoding = decode_section(checkpoint, paths, device=device, decode_on=decode_on, best=best)
        speeds = precision_section(checkpoint, paths, device=device, size=size)

        tutorial_paths = paths[: size.tutorial_photos]
        tutorial = tutorial_images_per_s(
            tutorial_paths, checkpoint=checkpoint, temp_dir=root / "tutorial", device=device
        )
        from bench.tutorial import api_images_per_s  # activates the model version the product run uses

        api = api_images_per_s(root, paths[: size.api_photos], checkpoint=checkpoint, per_request=size.api_batch)
        log(f"tutorial view {tutorial:.1f} img/s, JSON API {api:.1f} img/s")
        # A GPU deployment sets the chunk at least as large as the batch (an upload still
        # queues its first 32 files on their own, then doubling parts up to 200).
        os.environ["PREDICTION_CHUNK_SIZE"] = str(max(128, best.batch_size))
        product = pipeline.product_run(
            root, photo_sets, warmup, precision=best.precision, batch_size=best.batch_size
        )

    report.metrics = {"trials": [vars(t) for t in trials], "decoding": decoding, "precision": speeds,
                      "tutorial": tutorial, "api": api, "product": product}  # fmt: skip
    report.rows += [
        Row.versus("1 pipeline", f"qcluster (from upload end) / {limit}", ours=product["images_per_s_from_upload_end"],
                   reference=best.images_per_s, unit="img/s", target_ratio=PIPELINE_TARGET),
        Row.versus("1 pipeline", "qcluster end to end (upload start -> last row) / in-process limit",
                   ours=product["images_per_s_end_to_end"], reference=best.images_per_s, unit="img/s",
                   target_ratio=PIPELINE_TARGET),
        Row.versus("2 API", f"JSON API ({size.api_batch} per request, gunicorn) / tutorial view, both on {device.type}",
                   ours=api, reference=tutorial, unit="img/s"),
        Row.versus("2 API", "background pipeline (from upload end) / tutorial view",
                   ours=product["images_per_s_from_upload_end"], reference=tutorial, unit="img/s"),
    ]  # fmt: skip
    report.rows += precision_rows(speeds, size)
    decoder = "nvJPEG (decode_jpeg on cuda)" if decode_on == "cuda" else "decode_jpeg on cpu"
    report.rows += [
        Row.versus("4 decode", f"JPEG to model input: {decoder} / Pillow draft ({decoding['threads']} threads)",
                   ours=decoding["device_decode"], reference=decoding["pillow_decode"], unit="img/s"),
        Row.versus("4 decode", f"{decoder} + predict ({best.precision}, batch {best.batch_size}) / {limit}",
                   ours=decoding["device_decode_and_predict"], reference=best.images_per_s, unit="img/s"),
    ]  # fmt: skip
    if agreement:
        report.rows += agreement_rows(device=device, precisions=size.precisions)
    pipeline_notes = [  # they name bench.pipeline's own warm-up
        note.replace(f"{pipeline.WARMUP_PHOTOS} photos)", f"{len(warmup)} photos)")
        for note in pipeline._notes(product, trials, best)
    ]
    report.notes += pipeline_notes + _notes(decoding, speeds, size, device=device)
    return report


def precision_rows(speeds: dict, size: Size) -> list[Row]:
    """fp16 and bf16 against IEEE fp32 at each batch size (the target); on a GPU also against
    PyTorch's default fp32, whose convolutions run in TF32 on the tensor cores, at the largest."""
    device_rates = speeds["device"]
    fp32 = STRICT_FP32 if STRICT_FP32 in device_rates else "fp32"
    largest = max(size.batch_sizes)
    rows = []
    for precision in size.precisions:
        if precision == "fp32":
            continue
        for batch_size in size.batch_sizes:
            rows.append(Row.versus(
                "3 precision", f"{precision} / {fp32} model throughput, batch {batch_size}",
                ours=device_rates[precision][batch_size], reference=device_rates[fp32][batch_size],
                unit="img/s", target_ratio=PRECISION_TARGET,
            ))  # fmt: skip
        if fp32 == STRICT_FP32:
            rows.append(Row.versus(
                "3 precision", f"{precision} / fp32 as PyTorch runs it (TF32 convolutions), batch {largest}",
                ours=device_rates[precision][largest], reference=device_rates["fp32"][largest], unit="img/s",
            ))  # fmt: skip
    return rows


def _notes(decoding: dict, speeds: dict, size: Size, *, device) -> list[str]:
    largest = max(size.batch_sizes)
    host = ", ".join(f"{p} {rate:.0f}" for p, rate in speeds["host"].items())
    differences = ", ".join(f"{p} {diff:.1e}" for p, diff in speeds["max_difference"].items() if p != "fp32")
    return [
        f"Photos {size.photo_size[0]}x{size.photo_size[1]} JPEG, {size.photos} per set; model ResNet18 (random "
        f"weights, {size.input_size} px; 224 in the product run and the API), {device}. PREDICTION_CHUNK_SIZE "
        "is raised to the batch size for the product run.",
        f"precision: the Predictor's forward pass on inputs already on {device.type}; with the copy of fp32 inputs "
        f"from the host (as the product feeds it) at batch {largest}: {host} img/s. The product runs fp32 as "
        "PyTorch leaves it (TF32 convolutions on a GPU); on a GPU fp16 and bf16 keep their weights in that "
        f"dtype. Largest probability difference from fp32 on those inputs: {differences}.",
        f"decode: model inputs from the two paths differ by {decoding['mean_abs_difference']:.3f} on average "
        "(normalised units; Pillow decodes JPEGs at a reduced scale first). The device path reads EXIF "
        "orientation from the header and checks format and pixel count there; it is not the product's gate.",
    ]


# --- photos ---------------------------------------------------------------------------------


def photos(count: int, size: tuple[int, int], *, seed: int) -> list[Path]:
    """bench.common.realistic_photos, the missing ones generated in parallel (a quarter second each)."""
    folder = common.CACHE_DIR / f"photos-{size[0]}x{size[1]}-seed{seed}"
    missing = [index for index in range(count) if not (folder / f"photo_{index:05d}.jpg").exists()]
    workers = min(usable_cores(), 16)
    if len(missing) >= 16 and workers > 1:
        log(f"generating {len(missing)} photos of {size[0]}x{size[1]} in {workers} processes")
        folder.mkdir(parents=True, exist_ok=True)
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            list(pool.map(_write_photo, [(folder, size, seed, index) for index in missing], chunksize=8))
    return common.realistic_photos(count, size=size, seed=seed)  # fills whatever is still missing


def _write_photo(job: tuple[Path, tuple[int, int], int, int]) -> None:
    folder, size, seed, index = job
    path = folder / f"photo_{index:05d}.jpg"
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_bytes(common._photo_bytes(size, seed=(seed, index)))
    tmp.rename(path)


# --- decoding on the device -----------------------------------------------------------------


def decode_device(decode_on: str):
    """The torch device ``decode_on`` names; refused when it is not one or has no CUDA."""
    import torch

    if decode_on not in DECODE_ON:
        raise ValueError(f"decode_on must be one of {', '.join(DECODE_ON)}, got {decode_on!r}")
    if decode_on == "cuda" and not torch.cuda.is_available():
        raise ValueError("decode_on='cuda' needs a CUDA device, and torch sees none; decode on the cpu")
    return torch.device(decode_on)


def jpeg_inputs(files: list[tuple[str, bytes]], preprocessing, *, decode_on: str, max_pixels: int | None = None):
    """Model inputs (N, 3, S, S) on ``decode_on`` from JPEG bytes: decode_jpeg, then ml's eval preprocessing there.

    Before decoding, each header is read with Pillow: JPEG only, at most ``max_pixels``, EXIF
    orientation applied (decode_jpeg ignores it on cuda). Raises ImageDecodeError otherwise.
    """
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg
    from torchvision.transforms.v2 import functional as F

    from ml.decode import DEFAULT_MAX_PIXELS, ImageDecodeError

    device = decode_device(decode_on)
    orientations = [_checked_orientation(name, data, max_pixels or DEFAULT_MAX_PIXELS) for name, data in files]
    encoded = [torch.frombuffer(bytearray(data), dtype=torch.uint8) for _name, data in files]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision >= 0.29 points at TorchCodec on every call
        try:
            images = decode_jpeg(encoded, mode=ImageReadMode.RGB, device=device)
        except RuntimeError as exc:  # one corrupt file fails the batch
            raise ImageDecodeError(", ".join(name for name, _ in files), f"decode_jpeg failed: {exc}") from exc
    inputs = []
    for image, orientation in zip(images, orientations):
        image = _oriented(image, orientation)
        image = F.resize(image, [preprocessing.resize_size], antialias=True)
        inputs.append(F.center_crop(image, [preprocessing.input_size]))
    batch = torch.stack(inputs).to(torch.float32).div_(255)
    mean = torch.tensor(preprocessing.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(preprocessing.std, device=device).view(1, 3, 1, 1)
    return batch.sub_(mean).div_(std).contiguous(memory_format=torch.channels_last)


def _checked_orientation(name: str, data: bytes, max_pixels: int) -> int:
    from PIL import ExifTags, Image

    from ml.decode import ImageDecodeError

    try:
        with Image.open(io.BytesIO(data)) as img:  # the header only
            fmt, (width, height) = img.format, img.size
            orientation = img.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception as exc:
        raise ImageDecodeError(name, "truncated or corrupt image data") from exc
    if fmt != "JPEG":
        raise ImageDecodeError(name, f"{fmt} is not a JPEG: the device decoder takes JPEG only")
    if width * height > max_pixels:
        raise ImageDecodeError(name, f"image is too large ({width}x{height} pixels, at most {max_pixels:,})")
    return orientation if orientation in range(1, 9) else 1


def _oriented(image, orientation: int):
    """``image`` (C, H, W) as PIL's ImageOps.exif_transpose would turn it."""
    if orientation == 2:
        return image.flip(2)
    if orientation == 3:
        return image.flip((1, 2))
    if orientation == 4:
        return image.flip(1)
    if orientation == 5:
        return image.transpose(1, 2)
    if orientation == 6:
        return image.rot90(-1, (1, 2))
    if orientation == 7:
        return image.transpose(1, 2).flip((1, 2))
    if orientation == 8:
        return image.rot90(1, (1, 2))
    return image


def decode_section(checkpoint: Path, paths: list[Path], *, device, decode_on: str, best) -> dict:
    """Decode rates of both paths (to model inputs), and device decode + predict at the limit's best setting."""
    import torch

    from ml.decode import open_image
    from ml.predictor import Predictor
    from ml.preprocess import eval_transform

    predictor = Predictor.from_checkpoint(checkpoint, device=device, precision=best.precision,
                                          batch_size=best.batch_size)  # fmt: skip
    preprocessing = predictor.preprocessing
    transform = eval_transform(preprocessing)
    threads = predictor.decode_workers  # as Predictor.predict_sources decodes

    def pillow(path: Path):
        return transform(open_image(path, name=path.name, draft_size=2 * preprocessing.input_size))

    def chunks():
        for start in range(0, len(paths), best.batch_size):
            yield [(path.name, path.read_bytes()) for path in paths[start : start + best.batch_size]]

    def pillow_all() -> None:
        with ThreadPoolExecutor(threads) as pool:
            torch.stack(list(pool.map(pillow, paths)))

    def device_all() -> None:
        for files in chunks():
            jpeg_inputs(files, preprocessing, decode_on=decode_on)
        _synchronize(device)

    def device_and_predict() -> None:
        for files in chunks():
            predictor._predict_batch(jpeg_inputs(files, preprocessing, decode_on=decode_on))

    rates = {}
    for name, fn in (("pillow_decode", pillow_all), ("device_decode", device_all),
                     ("device_decode_and_predict", device_and_predict)):  # fmt: skip
        fn()  # warm-up: nvJPEG handles, kernels
        started = time.perf_counter()
        fn()
        rates[name] = len(paths) / (time.perf_counter() - started)
        log(f"decode: {name} {rates[name]:.1f} img/s")
    sample = paths[: min(len(paths), 16)]
    reference = torch.stack([pillow(path) for path in sample])
    ours = jpeg_inputs([(p.name, p.read_bytes()) for p in sample], preprocessing, decode_on=decode_on).cpu()
    return {**rates, "threads": threads, "mean_abs_difference": float((ours - reference).abs().mean())}


def _synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --- precision ------------------------------------------------------------------------------


def precision_section(checkpoint: Path, paths: list[Path], *, device, size: Size) -> dict:
    """Images per second of the model's forward pass by precision and batch size.

    ``device``: inputs already on the device; ``host``: fp32 inputs copied from the host at
    the largest batch size, as the product hands them over. On a GPU fp32 is timed twice: as
    PyTorch leaves it (TF32 convolutions) and as IEEE fp32 (STRICT_FP32). ``max_difference``:
    each precision's largest probability difference from fp32 on the host inputs.
    """
    import torch

    from ml.decode import open_image
    from ml.predictor import Predictor
    from ml.preprocess import eval_transform

    largest = max(size.batch_sizes)
    speeds: dict = {"device": {}, "host": {}, "max_difference": {}}
    host = None  # the same inputs for every precision
    reference = None  # fp32's probabilities on them
    for precision in size.precisions:
        predictor = Predictor.from_checkpoint(checkpoint, device=device, precision=precision, batch_size=largest)
        if host is None:
            transform = eval_transform(predictor.preprocessing)
            draft_size = 2 * predictor.preprocessing.input_size
            inputs = torch.stack([transform(open_image(p, name=p.name, draft_size=draft_size)) for p in paths])
            host = inputs[torch.arange(largest) % len(inputs)].contiguous()
        variants = [(precision, contextlib.nullcontext)]
        if precision == "fp32" and device.type == "cuda":
            variants.append((STRICT_FP32, _tf32_off))
        for name, context in variants:
            with context():
                speeds["device"][name] = {}
                for batch_size in size.batch_sizes:
                    batch = host[:batch_size].to(predictor.device, memory_format=torch.channels_last)
                    speeds["device"][name][batch_size] = _images_per_s(
                        lambda batch=batch: predictor._forward(batch), images=batch_size, size=size
                    )
                speeds["host"][name] = _images_per_s(lambda: predictor._forward(host), images=largest, size=size)
            log(f"precision {name}: " + ", ".join(
                f"batch {b} {rate:.0f}" for b, rate in speeds["device"][name].items()) + " img/s")  # fmt: skip
        probabilities = predictor._forward(host)[0]
        if reference is None:
            reference = probabilities
        speeds["max_difference"][precision] = float((probabilities - reference).abs().max())
    return speeds


@contextlib.contextmanager
def _tf32_off():
    """IEEE fp32 arithmetic in convolutions and matrix products while inside."""
    import torch

    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def _images_per_s(forward, *, images: int, size: Size) -> float:
    """Rate of ``forward`` (which returns host tensors, so the device is done) over enough calls."""
    forward()  # warm-up: kernel selection, lazy module loading
    calls, started = 0, time.perf_counter()
    while calls < size.min_calls or time.perf_counter() - started < size.seconds_per_speed:
        forward()
        calls += 1
    return calls * images / (time.perf_counter() - started)


def agreement_rows(*, device, precisions: tuple[str, ...]) -> list[Row]:
    from bench.precision import SIZES as PRECISION_SIZES
    from bench.precision import demo_images, trained_checkpoint

    count = PRECISION_SIZES["medium"]["images"]  # the held-out set of `make bench`, cached by it
    held_out = demo_images(common.CACHE_DIR / "demo-held-out", count=count, seed=1)
    shares = top1_agreement(trained_checkpoint(), held_out, device=device, precisions=precisions)
    return [
        Row("3 precision", f"top-1 agreement {precision} vs fp32 ({len(held_out)} held-out demo images, trained)",
            f"{share:.1%}", "100%", share, "-", None)
        for precision, share in shares.items()
    ]  # fmt: skip


def top1_agreement(checkpoint, labelled: list[tuple[Path, str]], *, device, precisions) -> dict[str, float]:
    """Share of images whose top-1 label in each reduced precision equals fp32's."""
    from ml.predictor import Predictor

    labels = {}
    for precision in precisions:
        predictor = Predictor.from_checkpoint(checkpoint, device=device, precision=precision)
        labels[precision] = [r.label for _n, r in predictor.predict_sources((p.name, p) for p, _label in labelled)]
    return {
        p: statistics.mean(a == b for a, b in zip(labels[p], labels["fp32"])) for p in precisions if p != "fp32"
    }


# --- the tutorial's view on the device --------------------------------------------------------


def tutorial_images_per_s(paths: list[Path], *, checkpoint: Path, temp_dir: Path, device) -> float:
    """bench.tutorial's baseline, one request per image, on ``device`` (the tutorial's view takes one)."""
    from bench.tutorial_baseline import tutorial_request

    uploads = [(path.name, path.read_bytes()) for path in paths]

    def one_request(upload) -> None:
        tutorial_request([upload], weights_path=checkpoint, temp_dir=temp_dir, class_names=common.DEMO_CLASSES,
                         device=str(device))  # fmt: skip

    one_request(uploads[0])  # warm-up, which a real server pays once
    started = time.perf_counter()
    for upload in uploads:
        one_request(upload)
    return len(uploads) / (time.perf_counter() - started)


# --- the machine ------------------------------------------------------------------------------


def gpu_info(device) -> dict:
    import torch

    if device.type != "cuda":
        return {"gpu": "none (cpu run)"}
    props = torch.cuda.get_device_properties(device)
    info = {"gpu": props.name, "gpu_memory_gib": round(props.total_memory / 2**30), "cuda": torch.version.cuda}
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30, check=True)  # fmt: skip
        info["driver"] = smi.stdout.split("\n")[0].strip()
    except (OSError, subprocess.SubprocessError):
        info["driver"] = "?"
    return info


def describe(machine: dict) -> str:
    if machine["gpu"].startswith("none"):
        gpu = "no GPU, device cpu"
    else:
        gpu = (
            f"GPU {machine['gpu']} ({machine['gpu_memory_gib']} GiB, driver {machine['driver']}, "
            f"CUDA {machine['cuda']})"
        )
    cpu = f"CPU {machine['cpu']}, {machine['cores']} cores"
    return f"{gpu}; {cpu}; Python {machine['python']}, torch {machine['torch']}"


if __name__ == "__main__":
    sys.exit(main())
