"""Deterministic demo data set: five shapes on textured, noisy photos.

    python -m ml.demo_data --out demo_data --count 2000

Each image is drawn small (shapes, texture, distractor strokes), scaled up to a camera
size between 640x480 and 1600x1200 (4:3, some portrait), given film grain and saved as
a JPEG of realistic quality, one folder per class. The same seed gives the same files.

The demo checkpoint (``build_demo_checkpoint``, which the first run's demo task calls)
trains on 2,000 images (1,600 train, 400 held out for validation) with

    python -m ml.train --data demo_data --input-size 64 --epochs 16 --lr 3e-3 \
        --augment shapes --out weights/demo.pth

ResNet18 from random weights needs about a thousand optimizer steps to learn these
shapes, so the recipe buys steps cheaply: a 64 px input, each JPEG decoded once (draft
mode) and kept in memory, rotation/flip augmentation (the shapes have no up or down).
Measured (2 cores shared with other work, so wall times are upper bounds): the
checkpoint built by ``build_demo_checkpoint('demo_data', 'weights/demo.pth')`` reached
validation accuracy 0.9775 (macro-F1 0.977) on the 400 held-out images, in 308 s wall /
448 s CPU; an undisturbed epoch takes ~10 s wall / ~19 s CPU, so a quiet two-core
machine should need about 3 minutes. Generating the 2,000 images takes ~80 s.
"""

from __future__ import annotations

import argparse
import math
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from tqdm import tqdm

CLASS_NAMES = ("circle", "square", "triangle", "star", "cross")

# Settings for the demo checkpoint (see the module docstring for how well they do).
DEMO_COUNT = 2000
DEMO_EPOCHS = 16
DEMO_INPUT_SIZE = 64
DEMO_LR = 3e-3
DEMO_BATCH_SIZE = 32
DEMO_AUGMENT = "shapes"

_CANVAS_SHORT_SIDE = 240  # drawing resolution; shapes stay smooth after upscaling
_MIN_SIZE, _MAX_SIZE = (640, 480), (1600, 1200)
_PORTRAIT_SHARE = 0.2

Point = tuple[float, float]


def generate(out_dir: str | Path, *, count: int, seed: int = 0, progress: bool = True) -> list[tuple[Path, str]]:
    """Write ``count`` JPEGs (classes in turn) under ``out_dir/<class>/``."""
    out = Path(out_dir)
    for name in CLASS_NAMES:
        (out / name).mkdir(parents=True, exist_ok=True)
    written = []
    for index in tqdm(range(count), desc="demo images", unit="img", disable=not progress):
        label = CLASS_NAMES[index % len(CLASS_NAMES)]
        # One generator per image: the same file comes out whatever the count.
        rng = random.Random(f"{seed}:{index}")
        path = out / label / f"{label}_{index:05d}.jpg"
        _render(label, rng).save(path, format="JPEG", quality=rng.randint(80, 95))
        written.append((path, label))
    return written


def build_demo_checkpoint(
    data_dir: str | Path,
    out_path: str | Path,
    *,
    count: int = DEMO_COUNT,
    epochs: int = DEMO_EPOCHS,
    input_size: int = DEMO_INPUT_SIZE,
    device: str = "auto",
    progress: bool = True,
    on_epoch: Callable[[int, dict[str, list[float]]], None] | None = None,
) -> Path:
    """Generate the demo images unless already there, train, write the checkpoint.

    ``on_epoch(epoch, history)`` is called after each epoch (see ``ml.train.train_model``).
    """
    from ml.train import train_to_checkpoint  # torch is only needed from here on

    data_dir = Path(data_dir)
    if _existing_count(data_dir) < count:
        generate(data_dir, count=count, progress=progress)
    return train_to_checkpoint(
        data_dir,
        out_path,
        epochs=epochs,
        input_size=input_size,
        lr=DEMO_LR,
        batch_size=DEMO_BATCH_SIZE,
        device=device,
        augment=DEMO_AUGMENT,
        progress=progress,
        on_epoch=on_epoch,
    )


def _existing_count(data_dir: Path) -> int:
    return sum(len(list((data_dir / name).glob("*.jpg"))) for name in CLASS_NAMES)


# --- drawing ----------------------------------------------------------------------


def _render(label: str, rng: random.Random) -> Image.Image:
    final_size = _camera_size(rng)
    scale = _CANVAS_SHORT_SIDE / min(final_size)
    canvas_size = (round(final_size[0] * scale), round(final_size[1] * scale))
    background = _background(canvas_size, rng)
    image = background.copy()
    draw = ImageDraw.Draw(image)
    _draw_distractors(draw, canvas_size, rng)
    colour = _contrasting_colour(background.resize((1, 1)).getpixel((0, 0)), rng)
    draw.polygon(_shape(label, canvas_size, rng), fill=colour)
    image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0)))
    return _add_grain(image.resize(final_size, Image.Resampling.BICUBIC), rng)


def _camera_size(rng: random.Random) -> tuple[int, int]:
    width = rng.randint(_MIN_SIZE[0], _MAX_SIZE[0])
    height = round(width * 3 / 4)
    return (height, width) if rng.random() < _PORTRAIT_SHARE else (width, height)


def _background(size: tuple[int, int], rng: random.Random) -> Image.Image:
    """A tinted gradient with blotchy low-frequency texture."""
    base = _random_colour(rng)
    tint = _random_colour(rng)
    gradient = _rotated_gradient(rng.uniform(0, 360)).resize(size)
    image = Image.composite(Image.new("RGB", size, base), Image.new("RGB", size, tint), gradient)
    blotches = _noise((max(2, size[0] // 16), max(2, size[1] // 16)), 60, rng)
    blotches = blotches.resize(size, Image.Resampling.BICUBIC).convert("RGB")
    return Image.blend(image, blotches, rng.uniform(0.08, 0.18))


def _rotated_gradient(degrees: float) -> Image.Image:
    # The central square of a rotated gradient never shows the corners it lost.
    gradient = Image.linear_gradient("L").rotate(degrees, Image.Resampling.BILINEAR)
    inset = round(gradient.width * (1 - 1 / math.sqrt(2)) / 2)
    return gradient.crop((inset, inset, gradient.width - inset, gradient.height - inset))


def _draw_distractors(draw: ImageDraw.ImageDraw, size: tuple[int, int], rng: random.Random) -> None:
    """Thin strokes and specks, so the model must look for the shape, not any edge."""
    width, height = size
    for _ in range(rng.randint(0, 2)):
        start = (rng.uniform(0, width), rng.uniform(0, height))
        end = (rng.uniform(0, width), rng.uniform(0, height))
        draw.line([start, end], fill=_random_colour(rng), width=rng.randint(1, 2))
    for _ in range(rng.randint(0, 8)):
        x, y, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(1, 3)
        draw.ellipse([x - r, y - r, x + r, y + r], fill=_random_colour(rng))


def _shape(label: str, size: tuple[int, int], rng: random.Random) -> list[Point]:
    width, height = size
    short = min(size)
    radius = rng.uniform(0.24, 0.34) * short
    # Centre kept where a centre crop and a 60% random crop still see the shape.
    centre = (
        width / 2 + rng.uniform(-0.12, 0.12) * short,
        height / 2 + rng.uniform(-0.12, 0.12) * short,
    )
    rotation = rng.uniform(0, 2 * math.pi)
    return [_place(point, centre, radius, rotation) for point in _OUTLINES[label]()]


def _place(point: Point, centre: Point, radius: float, rotation: float) -> Point:
    x, y = point
    cos, sin = math.cos(rotation), math.sin(rotation)
    return (centre[0] + radius * (x * cos - y * sin), centre[1] + radius * (x * sin + y * cos))


def _regular(corners: int, inner: float | None = None) -> list[Point]:
    """Unit-radius regular polygon, or a star when ``inner`` radius is given."""
    steps = corners * (2 if inner else 1)
    points = []
    for step in range(steps):
        r = inner if inner and step % 2 else 1.0
        angle = 2 * math.pi * step / steps - math.pi / 2
        points.append((r * math.cos(angle), r * math.sin(angle)))
    return points


def _cross() -> list[Point]:
    arm = 0.33
    return [
        (-arm, -1), (arm, -1), (arm, -arm), (1, -arm), (1, arm), (arm, arm),
        (arm, 1), (-arm, 1), (-arm, arm), (-1, arm), (-1, -arm), (-arm, -arm),
    ]  # fmt: skip


_OUTLINES: dict[str, Callable[[], list[Point]]] = {
    "circle": lambda: _regular(48),
    "square": lambda: [(x * 0.8, y * 0.8) for x, y in _regular(4)],
    "triangle": lambda: _regular(3),
    "star": lambda: _regular(5, inner=0.45),
    "cross": _cross,
}


def _random_colour(rng: random.Random) -> tuple[int, int, int]:
    return (rng.randint(0, 255), rng.randint(0, 255), rng.randint(0, 255))


def _luminance(colour: tuple[int, ...]) -> float:
    r, g, b = colour[:3]
    return 0.299 * r + 0.587 * g + 0.114 * b


def _contrasting_colour(background: tuple[int, ...], rng: random.Random) -> tuple[int, int, int]:
    """A random colour clearly lighter or darker than the background."""
    for _ in range(100):
        colour = _random_colour(rng)
        if abs(_luminance(colour) - _luminance(background)) > 100:
            return colour
    return (0, 0, 0) if _luminance(background) > 128 else (255, 255, 255)


def _noise(size: tuple[int, int], sigma: float, rng: random.Random) -> Image.Image:
    """Grey gaussian noise around 128, reproducible (Pillow's effect_noise is not)."""
    values = np.random.default_rng(rng.getrandbits(64)).normal(128, sigma, (size[1], size[0]))
    return Image.fromarray(np.clip(values, 0, 255).astype(np.uint8))


def _add_grain(image: Image.Image, rng: random.Random) -> Image.Image:
    # Grain drawn at half resolution: cheap, and still looks like sensor noise.
    half = (max(1, image.width // 2), max(1, image.height // 2))
    grain = _noise(half, rng.uniform(20, 50), rng).resize(image.size)
    return Image.blend(image, Image.merge("RGB", [grain] * 3), rng.uniform(0.05, 0.15))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    parser.add_argument("--count", type=int, default=DEMO_COUNT, help="number of images")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    written = generate(args.out, count=args.count, seed=args.seed)
    print(f"wrote {len(written)} images to {args.out}")


if __name__ == "__main__":
    main()
