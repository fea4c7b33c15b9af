"""Perceptual hashes for near-duplicate images: dHash, via the ``imagehash`` library.

A hash is 64 bits, stored as a *signed* 64-bit integer (a BigIntegerField holds
-2**63 .. 2**63-1); two images are near-duplicates when their hashes differ in at
most :data:`NEAR_DUPLICATE_DISTANCE` bits.

Which decode it expects: an oriented RGB image, as :func:`ml.decode.open_image`
gives, whose short side is at least :data:`HASH_DECODE_SIZE` when the file is
that big. Upload gets it from the decode that validates the file
(``inspect_image(..., with_hash=True)``, which decodes JPEGs at a reduced scale
that keeps that size). Other decodes of the same JPEG (full size, or the prediction
worker's at twice the model's input) give hashes 0-4 bits away (median 1, 92
files), which spends part of the threshold: compute every stored hash, backfills
included, with ``inspect_image(..., with_hash=True)``.

Why dHash (which neighbour is brighter, on a 9x8 greyscale) and this threshold:
``python -m bench.near_duplicates --table`` measures dHash and pHash on generated
images against the issue's targets (copies resized to 50 %, re-saved at JPEG
quality 40, cropped by up to 5 % or brightened by up to 10 % found >= 95 % of the
time; distinct images of the same class flagged <= 1 %). Both reach the recall;
at the same recall pHash flags three to four times as many distinct pairs (0.9 %
against 0.26 % at distance 10, too close to the 1 % limit), and dHash needs no scipy.
Crops are the hardest edit: they move every edge a little.

No torch and no Django: the web process hashes uploads.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

ALGORITHMS = ("dhash", "phash")
HASH_BITS = 64
HASH_DECODE_SIZE = 64
# bench/near_duplicates.py, 300 demo images at 400x300, 4 edits each, 8,850 same-class
# pairs; two data sets (seeds 7 and 3): recall 99.3 / 99.0 % (crops alone 97.3 / 96.0 %),
# same-class pairs flagged 0.26 / 0.18 % (the first 100 of seed 7 alone: 0.74 %, as 7
# of 950 pairs; a dark shape centred on a light ground looks alike at 9x8 pixels).
# At 8: recall 97.8 / 97.7 %, crops 91-93 %; at 12: 0.44 / 0.38 % flagged. 10 keeps
# both targets, and recall on each edit, with room on each side.
NEAR_DUPLICATE_DISTANCE = 10

_MASK = (1 << HASH_BITS) - 1
_SIGN = 1 << (HASH_BITS - 1)


def perceptual_hash(image: Image.Image, *, algorithm: str = "dhash") -> int:
    """dHash of ``image`` as a signed 64-bit int (see the module docstring for the decode).

    ``image`` is not modified. A big image is first box-reduced to about twice
    :data:`HASH_DECODE_SIZE`: the hash looks at 32x32 pixels anyway, and a full-size
    photo then costs about a millisecond instead of fifty. ``algorithm`` is there
    for the benchmark that chose dHash; stored hashes all use the default.
    """
    import imagehash  # only in the code that hashes

    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown hash algorithm {algorithm!r}: use one of {', '.join(ALGORITHMS)}")
    bits = getattr(imagehash, algorithm)(_reduced(image)).hash.reshape(-1)
    return int.from_bytes(np.packbits(bits).tobytes(), "big", signed=True)


def hash_to_signed(value: int) -> int:
    """The signed 64-bit int for a hash given as an unsigned one (or already signed)."""
    value &= _MASK
    return value - (1 << HASH_BITS) if value & _SIGN else value


def hash_to_unsigned(value: int) -> int:
    return value & _MASK


def hamming_distance(a: int, b: int) -> int:
    """Bits in which two hashes differ; signed and unsigned forms mix freely."""
    return ((a ^ b) & _MASK).bit_count()


def is_near_duplicate(a: int, b: int, *, distance: int = NEAR_DUPLICATE_DISTANCE) -> bool:
    return hamming_distance(a, b) <= distance


def _reduced(image: Image.Image) -> Image.Image:
    if image.mode not in ("RGB", "L"):  # palette and 16-bit images cannot be box-reduced
        image = image.convert("RGB")
    factor = min(image.size) // (2 * HASH_DECODE_SIZE)
    return image.reduce(factor) if factor >= 2 else image
