"""Image preprocessing: the only place it is defined.

Training and serving both build their transforms from a :class:`Preprocessing`, which
the checkpoint records, so a model is always fed the way it was trained.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torchvision.transforms import v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Classic ImageNet evaluation: resize to input_size / 0.875 (256 for 224), centre crop.
_CENTRE_CROP_FRACTION = 0.875


@dataclass(frozen=True)
class Preprocessing:
    input_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    @property
    def resize_size(self) -> int:
        return round(self.input_size / _CENTRE_CROP_FRACTION)

    def to_dict(self) -> dict[str, Any]:
        return {"input_size": self.input_size, "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessing:
        defaults = cls()
        return cls(
            input_size=int(data.get("input_size", defaults.input_size)),
            mean=_triple(data.get("mean", defaults.mean)),
            std=_triple(data.get("std", defaults.std)),
        )


def _triple(values) -> tuple[float, float, float]:
    floats = tuple(float(v) for v in values)
    if len(floats) != 3:
        raise ValueError(f"expected 3 values (one per RGB channel), got {len(floats)}")
    return floats  # type: ignore[return-value]


def eval_transform(p: Preprocessing) -> v2.Compose:
    """PIL RGB image -> normalised float tensor (3, input_size, input_size)."""
    return v2.Compose(
        [
            v2.Resize(p.resize_size, antialias=True),
            v2.CenterCrop(p.input_size),
            *_to_normalised_tensor(p),
        ]
    )


AUGMENTATIONS = ("light", "shapes")


def train_transform(p: Preprocessing, *, augment: str = "light") -> v2.Compose:
    """Random augmentation that keeps the object recognisable, then as eval.

    ``"light"`` suits photos (upright world, left and right alike): crops, horizontal
    flips, mild colour jitter. ``"shapes"`` is for objects with no up or down, like the
    demo's drawn shapes: any rotation, both flips, stronger colour changes, and crops
    large enough to keep the whole object. Both end as :func:`eval_transform` does.
    """
    if augment == "light":
        geometry = [
            v2.RandomResizedCrop(p.input_size, scale=(0.6, 1.0), antialias=True),
            v2.RandomHorizontalFlip(),
        ]
        colour = [v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2)]
    elif augment == "shapes":
        # Corners uncovered by the rotation take the mean colour, which normalises to 0.
        fill = tuple(round(255 * m) for m in p.mean)
        geometry = [
            v2.RandomRotation(180, interpolation=v2.InterpolationMode.BILINEAR, fill=fill),
            # Near-square crops: a square stays a square, a circle a circle.
            v2.RandomResizedCrop(p.input_size, scale=(0.7, 1.0), ratio=(0.9, 1.1), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.RandomVerticalFlip(),
        ]
        # No hue jitter: it costs as much as the rest together, and colour is already
        # random in such data.
        colour = [
            v2.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.4),
            v2.RandomGrayscale(0.1),
        ]
    else:
        raise ValueError(f"unknown augmentation {augment!r}: use one of {', '.join(AUGMENTATIONS)}")
    return v2.Compose([*geometry, *colour, *_to_normalised_tensor(p)])


def _to_normalised_tensor(p: Preprocessing) -> list[v2.Transform]:
    return [
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=list(p.mean), std=list(p.std)),
    ]
