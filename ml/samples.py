"""Training samples: (image, class index) pairs from a folder or a CSV, their stratified
split, and the dataset that decodes each image once (safely, through ml.decode) and keeps
it for the next epochs. Used by ml.train; the web side exports CSVs this reads.
"""

from __future__ import annotations

import csv
import random
import warnings
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset, default_collate
from torchvision.datasets import ImageFolder
from torchvision.transforms import v2

from ml.decode import ImageDecodeError, ImageSource, open_image
from ml.preprocess import Preprocessing


def load_samples(data: str | Path) -> tuple[list[tuple[Path, int]], list[str]]:
    """(path, class index) pairs and sorted class names, from a directory or a CSV."""
    data = Path(data)
    if data.is_dir():
        folder = ImageFolder(str(data), allow_empty=True)
        return [(Path(path), index) for path, index in folder.samples], list(folder.classes)
    if data.suffix.lower() == ".csv":
        return _samples_from_csv(data)
    raise ValueError(f"{data}: expected a directory with one folder per class, or a .csv file")


def _samples_from_csv(csv_path: Path) -> tuple[list[tuple[Path, int]], list[str]]:
    with csv_path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or not {"path", "label"} <= set(reader.fieldnames):
            raise ValueError(f"{csv_path}: expected a header with 'path' and 'label' columns")
        rows = [(row["path"].strip(), row["label"].strip()) for row in reader]
    rows = [(path, label) for path, label in rows if path and label]
    class_names = sorted({label for _, label in rows})
    index = {name: i for i, name in enumerate(class_names)}
    # Relative paths are relative to the CSV; an absolute path stays as it is.
    return [(csv_path.parent / path, index[label]) for path, label in rows], class_names


def stratified_split(
    samples: Sequence[tuple[Any, int]], *, val_fraction: float, seed: int = 0
) -> tuple[list[tuple[Any, int]], list[tuple[Any, int]]]:
    """The same share of every class goes to validation (at least one where possible)."""
    by_class: dict[int, list[tuple[Any, int]]] = defaultdict(list)
    for sample in samples:
        by_class[sample[1]].append(sample)
    rng = random.Random(seed)
    train, val = [], []
    for label in sorted(by_class):
        members = by_class[label][:]
        rng.shuffle(members)
        n_val = round(len(members) * val_fraction)
        if val_fraction > 0 and len(members) > 1:
            n_val = min(max(n_val, 1), len(members) - 1)
        val.extend(members[:n_val])
        train.extend(members[n_val:])
    return train, val


def split_samples(
    samples: Sequence[tuple[Any, int]],
    *,
    validation: Sequence[bool] | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
) -> tuple[list[tuple[Any, int]], list[tuple[Any, int]]]:
    """(train, validation): the caller's split where ``validation`` marks each sample's side
    (one that keeps near-duplicates together, say), else :func:`stratified_split`. A caller's
    split that leaves either side empty (a tiny set, or one near-duplicate group) falls back to
    the stratified one."""
    if validation is not None:
        if len(validation) != len(samples):
            raise ValueError(f"validation marks {len(validation)} samples, there are {len(samples)}")
        val = [sample for sample, is_val in zip(samples, validation) if is_val]
        if 0 < len(val) < len(samples):
            return [sample for sample, is_val in zip(samples, validation) if not is_val], val
    return stratified_split(samples, val_fraction=val_fraction, seed=seed)


def check_labels(samples: Sequence[tuple[Any, int]], class_names: Sequence[str]) -> None:
    if len(class_names) < 2:
        raise ValueError("training needs at least two classes")
    if not samples:
        raise ValueError("no training samples")
    bad = {label for _, label in samples if not 0 <= label < len(class_names)}
    if bad:
        raise ValueError(f"labels {sorted(bad)} are outside 0..{len(class_names) - 1}")


class ImageSamplesDataset(Dataset):
    """(image source, label) pairs decoded safely; undecodable files are skipped.

    Each image is decoded once at reduced scale (JPEG draft mode, then resized to the
    preprocessing's ``resize_size`` short side: all that eval and the crops use) and
    kept while ``cache_bytes`` lasts, so later epochs only run the transform.
    """

    def __init__(
        self,
        samples: Sequence[tuple[ImageSource, int]],
        transform: Callable,
        preprocessing: Preprocessing,
        *,
        cache_bytes: int = 0,
    ) -> None:
        self.samples = list(samples)
        self.transform = transform
        self.resize_size = preprocessing.resize_size
        # JPEGs decode at reduced scale, still twice the model input: cheap and sharp.
        self.draft_size = 2 * preprocessing.input_size
        self.cache_bytes_left = cache_bytes
        self._cache: dict[int, Image.Image | None] = {}

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int] | None:
        image = self._decoded(index)
        if image is None:
            return None
        return self.transform(image), self.samples[index][1]

    def _decoded(self, index: int) -> Image.Image | None:
        if index in self._cache:
            return self._cache[index]
        source, _ = self.samples[index]
        name = str(source) if isinstance(source, (str, Path)) else f"sample {index}"
        try:
            image = open_image(source, name=name, draft_size=self.draft_size)
        except ImageDecodeError as exc:
            warnings.warn(f"skipping {exc}", stacklevel=1)
            image = None  # cached too: warned about once
        else:
            if min(image.size) > self.resize_size:
                # The same resize eval_transform starts with, so eval output is unchanged.
                image = v2.functional.resize(image, [self.resize_size], antialias=True)
        size = 3 * image.width * image.height if image is not None else 0
        if size <= self.cache_bytes_left:
            self._cache[index] = image
            self.cache_bytes_left -= size
        return image


def collate_decoded(batch: list[tuple[torch.Tensor, int] | None]):
    return default_collate([item for item in batch if item is not None])
