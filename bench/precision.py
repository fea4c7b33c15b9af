"""3. Reduced precision against fp32: speed, and whether the answers change.

Reduced precision is bf16 on a CPU, fp16 on a GPU. The model is a trained one, so
top-1 agreement means something: weights/demo.pth when it exists, else one trained
with the same recipe (``ml.demo_data.build_demo_checkpoint``: ResNet18, 112 px, a few
minutes on two cores) and cached under bench/results.

- speed: ``Predictor.predict`` on already decoded photos at 224 px (decode is the
  same in both precisions and would only dilute the difference);
- agreement: top-1 of both precisions on held-out demo images at the model's own
  input size, plus each one's accuracy against the true labels.

No target is set by the issue; the numbers decide INFERENCE_PRECISION's default.
"""

from __future__ import annotations

import sys
from pathlib import Path

from bench.common import CACHE_DIR, REPO_ROOT, Report, Row, cli, log, realistic_photos, stopwatch

SIZES = {"small": {"images": 50}, "medium": {"images": 300}, "large": {"images": 1000}}
SPEED_BATCH_SIZE = 32
SPEED_PHOTOS = 128  # decoded photos held in memory at once


def add_arguments(parser) -> None:
    parser.add_argument(
        "--images", type=int, help=f"held-out demo images for agreement (photos for speed: at most {SPEED_PHOTOS})"
    )


def run(options) -> Report:
    import torch

    from ml.decode import open_image
    from ml.predictor import Predictor

    reduced = "fp16" if torch.cuda.is_available() else "bf16"
    checkpoint = trained_checkpoint()
    held_out = demo_images(CACHE_DIR / "demo-held-out", count=options.images, seed=1)
    photos = [
        open_image(path, name=path.name, draft_size=448)
        for path in realistic_photos(min(options.images, SPEED_PHOTOS))
    ]

    speed, predicted = {}, {}
    for precision in ("fp32", reduced):
        fast = Predictor.from_checkpoint(checkpoint, overrides={"input_size": 224}, precision=precision,
                                         batch_size=SPEED_BATCH_SIZE)  # fmt: skip
        fast.predict(photos[:SPEED_BATCH_SIZE])  # warm-up
        with stopwatch() as watch:
            fast.predict(photos)
        speed[precision] = len(photos) / watch.seconds
        own_size = Predictor.from_checkpoint(checkpoint, precision=precision, batch_size=SPEED_BATCH_SIZE)
        predicted[precision] = [
            result for _name, result in own_size.predict_sources((path.name, path) for path, _label in held_out)
        ]
        log(f"{precision}: {speed[precision]:.2f} img/s")

    truth = [label for _path, label in held_out]
    agreement = _share(a.label == b.label for a, b in zip(predicted["fp32"], predicted[reduced]))
    accuracy = {p: _share(r.label == t for r, t in zip(predicted[p], truth)) for p in predicted}
    max_probability_change = max(
        max(abs(x - y) for x, y in zip(a.probabilities, b.probabilities))
        for a, b in zip(predicted["fp32"], predicted[reduced])
    )
    report = Report(metrics={
        "checkpoint": str(checkpoint), "images": len(held_out), "images_per_s": speed, "top1_agreement": agreement,
        "accuracy": accuracy, "max_probability_change": max_probability_change,
    })  # fmt: skip
    report.rows += [
        Row.versus("3 precision", f"{reduced} / fp32 speed ({len(photos)} decoded photos, 224 px)",
                   ours=speed[reduced], reference=speed["fp32"], unit="img/s"),
        Row("3 precision", f"top-1 agreement {reduced} vs fp32 ({len(held_out)} held-out demo images)",
            f"{agreement:.1%}", "100%", agreement, "-", None),
        Row("3 precision", f"accuracy {reduced} vs fp32 (true labels)",
            f"{accuracy[reduced]:.1%}", f"{accuracy['fp32']:.1%}",
            accuracy[reduced] / accuracy["fp32"] if accuracy["fp32"] else None, "-", None),
    ]  # fmt: skip
    report.notes.append(
        f"precision: model {checkpoint.name}; largest change of any class probability {max_probability_change:.4f}."
    )
    chance = 1 / len(set(truth))
    if accuracy["fp32"] < 2 * chance:
        report.notes.append(
            f"precision: WARNING the model is near chance ({accuracy['fp32']:.0%} accurate): agreement says little. "
            f"Delete {checkpoint} to retrain it."
        )
    return report


def _share(flags) -> float:
    flags = list(flags)
    return sum(flags) / len(flags)


def trained_checkpoint() -> Path:
    """The project's demo checkpoint: weights/demo.pth if built, else the same recipe cached here."""
    demo = REPO_ROOT / "weights" / "demo.pth"
    if demo.exists():
        return demo
    cached = CACHE_DIR / "demo.pth"
    if not cached.exists():
        from ml.demo_data import build_demo_checkpoint

        log("training the demo checkpoint (ml.demo_data's recipe; cached for later runs)")
        build_demo_checkpoint(CACHE_DIR / "demo-train", cached, progress=False)
    return cached


def demo_images(folder: Path, *, count: int, seed: int) -> list[tuple[Path, str]]:
    """``count`` labelled demo images, generated once and cached (ml.demo_data's file layout)."""
    from ml.demo_data import CLASS_NAMES, generate

    labels = [CLASS_NAMES[index % len(CLASS_NAMES)] for index in range(count)]
    images = [(folder / label / f"{label}_{index:05d}.jpg", label) for index, label in enumerate(labels)]
    if not all(path.exists() for path, _label in images):
        log(f"generating {count} demo images in {folder}")
        generate(folder, count=count, seed=seed, progress=False)
    return images


if __name__ == "__main__":
    cli(sys.modules[__name__])
