"""Perceptual hashes: storage form, the upload decode, and near-duplicate quality."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from bench.near_duplicates import EDITS, demo_originals, measure
from ml.decode import inspect_image, open_image
from ml.hashing import (
    HASH_DECODE_SIZE,
    NEAR_DUPLICATE_DISTANCE,
    hamming_distance,
    hash_to_signed,
    hash_to_unsigned,
    is_near_duplicate,
    perceptual_hash,
)
from tests.ml.images import encode, noise_rgb

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def photo(size=(400, 300), seed=0) -> Image.Image:
    """Smooth structure (what hashes see) plus a little noise."""
    small = noise_rgb((8, 6), sigma=80, seed=seed).resize(size, Image.Resampling.BICUBIC)
    return Image.blend(small, noise_rgb(size, sigma=40, seed=seed + 1), 0.1)


def test_hashes_are_signed_64_bit_and_distances_ignore_the_sign_form():
    assert hash_to_signed(2**64 - 1) == -1
    assert hash_to_signed(2**63) == INT64_MIN
    assert hash_to_signed(5) == 5 and hash_to_signed(-5) == -5
    assert hash_to_unsigned(-1) == 2**64 - 1
    assert hamming_distance(-1, 0) == 64
    assert hamming_distance(-1, 2**64 - 1) == 0
    assert hamming_distance(0b1011, 0b0001) == 2
    assert is_near_duplicate(0, (1 << NEAR_DUPLICATE_DISTANCE) - 1)
    assert not is_near_duplicate(0, (1 << (NEAR_DUPLICATE_DISTANCE + 1)) - 1)


def test_perceptual_hash_is_a_stable_int64_and_leaves_the_image_alone():
    image = photo()
    before = image.tobytes()
    value = perceptual_hash(image)

    assert isinstance(value, int) and INT64_MIN <= value <= INT64_MAX
    assert perceptual_hash(image) == value
    assert image.tobytes() == before
    assert hamming_distance(value, perceptual_hash(photo(seed=10))) > NEAR_DUPLICATE_DISTANCE
    with pytest.raises(ValueError, match="unknown hash algorithm 'md5'"):
        perceptual_hash(image, algorithm="md5")


def test_inspect_image_hashes_from_its_own_decode_only_when_asked():
    data = encode(photo((1600, 1200)), "JPEG", quality=90)

    plain = inspect_image(data, name="a.jpg")
    hashed = inspect_image(data, name="a.jpg", with_hash=True)

    assert plain.phash is None
    assert (hashed.format, hashed.width, hashed.height) == (plain.format, plain.width, plain.height)
    # The same decode the worker could use gives the same hash; full size differs by a bit or two.
    assert hashed.phash == perceptual_hash(open_image(data, name="a.jpg", draft_size=HASH_DECODE_SIZE))
    assert hamming_distance(hashed.phash, perceptual_hash(open_image(data, name="a.jpg"))) <= 2


def test_the_hash_sees_the_image_as_displayed():
    image = photo()
    rotated = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways, shown after a 90-degree turn
    image.transpose(Image.Transpose.ROTATE_90).save(rotated, format="JPEG", quality=95, exif=exif)
    transparent = image.convert("RGBA")
    transparent.putalpha(128)

    shown = inspect_image(rotated.getvalue(), name="r.jpg", with_hash=True)
    assert hamming_distance(shown.phash, perceptual_hash(image)) <= 2
    png = encode(transparent, "PNG")
    assert inspect_image(png, name="t.png", with_hash=True).phash == perceptual_hash(open_image(png, name="t.png"))


def test_a_big_image_hashes_like_its_small_copy():
    big = photo((1500, 1000))  # box-reduced 5x before hashing
    assert hamming_distance(perceptual_hash(big), perceptual_hash(big.resize((150, 100)))) <= 2


@pytest.fixture(scope="module")
def demo_distances(tmp_path_factory):
    originals = demo_originals(tmp_path_factory.mktemp("demo"), count=40, seed=7)
    return measure(originals, seed=0)


def test_edited_copies_are_found_and_distinct_images_of_a_class_are_not(demo_distances):
    """40 demo originals x 4 edits (160 copies); 8 per class, 140 same-class pairs.

    Seeded, so it passes or fails the same way every run. How often another seed
    would fail (Binomial, from the benchmark's rates over 300 originals and two
    seeds: 0.7-1.0 % of copies missed, crops alone 2.7-4 %, 0.18-0.26 % of
    same-class pairs flagged): 9 or more of 160 copies missed 4e-5; 7 or more of
    40 crops missed 1e-3; 5 or more of 140 pairs flagged 7e-5. So about 1 in 1,000.
    The issue's own targets (95 %, 1 %) are the benchmark's to check.
    """
    assert sum(len(d) for d in demo_distances.copies.values()) == 160
    assert len(demo_distances.same_class) == 140
    assert demo_distances.recall(NEAR_DUPLICATE_DISTANCE) >= 0.94
    for edit in EDITS:
        assert demo_distances.recall(NEAR_DUPLICATE_DISTANCE, edit) >= 0.85, edit
    assert demo_distances.false_positive_rate(NEAR_DUPLICATE_DISTANCE) <= 0.03


@pytest.mark.parametrize("mode", ["P", "L", "RGBA", "I;16"])
def test_any_pillow_mode_hashes(mode):
    image = photo((600, 400)).convert(mode) if mode != "I;16" else photo((600, 400)).convert("L").convert("I;16")
    assert INT64_MIN <= perceptual_hash(image) <= INT64_MAX
