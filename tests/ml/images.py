"""Small images built in memory for the ml tests."""

from __future__ import annotations

import colorsys
import io
import random

import numpy as np
from PIL import Image

TINY_SIZE = 32
HUE_CLASSES = ("red", "yellow", "green", "blue", "magenta")


def encode(image: Image.Image, fmt: str, **save_kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save_kwargs)
    return buffer.getvalue()


def noise_rgb(size: tuple[int, int], sigma: float = 60, seed: int = 0) -> Image.Image:
    """Busy content that JPEG cannot compress to nothing; reproducible."""
    values = np.random.default_rng(seed).normal(128, sigma, (size[1], size[0], 3))
    return Image.fromarray(np.clip(values, 0, 255).astype(np.uint8))


def hue_image(hue: float, rng: random.Random, size: int = 40) -> Image.Image:
    """A noisy patch of one hue: the class is the hue bucket, boundaries give hard cases."""
    saturation, value = rng.uniform(0.5, 1.0), rng.uniform(0.5, 1.0)
    colour = tuple(round(255 * c) for c in colorsys.hsv_to_rgb(hue, saturation, value))
    image = Image.new("RGB", (size, size), colour)
    noise = noise_rgb((size, size), seed=rng.getrandbits(32))
    return Image.blend(image, noise, rng.uniform(0.1, 0.3))


def hue_dataset(count: int, seed: int) -> list[tuple[Image.Image, int]]:
    """Images whose class is one of five equal hue buckets (red bucket centred on 0)."""
    rng = random.Random(seed)
    samples = []
    for _ in range(count):
        hue = rng.random()
        label = int(((hue + 0.1) % 1.0) * len(HUE_CLASSES))
        samples.append((hue_image(hue, rng), label))
    return samples
