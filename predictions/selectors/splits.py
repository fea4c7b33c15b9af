"""The train / validation split of a training set, which never separates near-duplicates.

A copy of an image on each side (the same photo resized, re-compressed, slightly
cropped) makes the validation score measure memory, not generalisation. So each
image's side is decided by its near-duplicate group (images.duplicates: perceptual
hashes), or by the image alone when it has none:

- the group's key is its first (lowest) image id;
- a SHA-256 of ``"<seed>:<key>"``, read as a number in [0, 1), below
  ``validation_fraction`` sends the whole group to validation.

Every image of a group lands on the same side; an image lands on the same side
in every export while its group keeps its first image; another seed gives
another split. About ``validation_fraction`` of the groups (not exactly of the
images) go to validation: a small set can have a class with no validation image.

The training-set exports write it as their ``split`` column
(predictions.selectors.exports, predictions.services.exports); retraining from
reviews takes its validation set from the same function (predictions.services.training).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from images.duplicates import duplicates_find

TRAIN = "train"
VALIDATION = "validation"
VALIDATION_FRACTION = 0.2
SPLIT_SEED = 0


def training_split(
    *, image_ids: Iterable[int], validation_fraction: float = VALIDATION_FRACTION, seed: int = SPLIT_SEED
) -> dict[int, str]:
    """``image id -> "train" | "validation"``, a whole near-duplicate group always on one side."""
    keys = split_group_keys(image_ids=image_ids)
    return {pk: split_of_group(key, validation_fraction=validation_fraction, seed=seed) for pk, key in keys.items()}


def split_group_keys(*, image_ids: Iterable[int]) -> dict[int, int]:
    """``image id -> group key``: the first image of its near-duplicate group, else itself."""
    first_of = {pk: group.image_ids[0] for group in duplicates_find().groups for pk in group.image_ids}
    return {pk: first_of.get(pk, pk) for pk in image_ids}


def split_of_group(key: int, *, validation_fraction: float = VALIDATION_FRACTION, seed: int = SPLIT_SEED) -> str:
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return VALIDATION if int.from_bytes(digest[:8], "big") / 2**64 < validation_fraction else TRAIN
