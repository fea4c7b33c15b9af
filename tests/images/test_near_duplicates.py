"""Near-duplicates: hashes stored at upload, reported, found in pairs and groups, shown in the admin.

The pictures are generated: smooth random patterns (a few random pixels scaled up),
so a resized and re-compressed copy looks alike and another seed does not.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from django.core.management import call_command
from PIL import Image as PILImage

from images.duplicates import EXACT, NEAR, HashIndex, clear_cache, duplicates_compute
from images.models import Image
from ml.hashing import hamming_distance

from .conftest import entries_by_file


@pytest.fixture(autouse=True)
def fresh_duplicates_cache():
    clear_cache()
    yield
    clear_cache()


def pattern(seed: int, size=(256, 192)) -> PILImage.Image:
    rng = np.random.default_rng(seed)
    small = PILImage.fromarray(rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8))
    return small.resize(size, PILImage.BICUBIC)


def jpeg(img: PILImage.Image, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def png(img: PILImage.Image) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, "PNG")
    return buffer.getvalue()


def copy_of(seed: int) -> bytes:
    """The picture of ``seed`` at half size, re-saved at JPEG quality 40."""
    img = pattern(seed)
    return jpeg(img.resize((img.width // 2, img.height // 2)), quality=40)


# --- pairs and groups, without a database ----------------------------------------------------


def test_pairs_are_exactly_the_hashes_within_the_distance_against_brute_force():
    """Random clusters of hashes (a few bits flipped from a few centres), 30 draws, distances 0..15."""
    rng = np.random.default_rng(11)
    for _ in range(30):
        centres = rng.integers(-(2**63), 2**63 - 1, size=int(rng.integers(1, 40)), dtype=np.int64).view(np.uint64)
        hashes = []
        for _ in range(int(rng.integers(2, 300))):
            value = centres[rng.integers(len(centres))]
            for bit in rng.choice(64, size=int(rng.integers(0, 14)), replace=False):
                value ^= np.uint64(1) << np.uint64(int(bit))
            hashes.append(value)
        hashes = np.array(hashes, dtype=np.uint64).view(np.int64)
        ids = rng.permutation(len(hashes)) + 1
        distance = int(rng.integers(0, 16))

        found = duplicates_compute(ids=ids, hashes=hashes, max_distance=distance)

        by_id = dict(zip(ids.tolist(), hashes.view(np.uint64).tolist()))
        within = {
            (a, b)
            for a in by_id
            for b in by_id
            if a > b and (by_id[a] ^ by_id[b]).bit_count() <= distance
        }
        listed = {(pair.image_id, pair.duplicate_of) for pair in found.pairs}
        assert listed <= within
        for pair in found.pairs:
            assert pair.distance == (by_id[pair.image_id] ^ by_id[pair.duplicate_of]).bit_count()
            assert pair.kind == (EXACT if pair.distance == 0 else NEAR)
        # The groups are the connected components of every pair within the distance.
        component = {pk: {pk} for pk in by_id}
        for a, b in within:
            if component[a] is not component[b]:
                merged = component[a] | component[b]
                for pk in merged:
                    component[pk] = merged
        expected = sorted({tuple(sorted(c)) for c in component.values() if len(c) > 1})
        assert sorted(group.image_ids for group in found.groups) == expected
        for group in found.groups:
            assert {pk for pair in group.pairs for pk in (pair.image_id, pair.duplicate_of)} == set(group.image_ids)


def test_equal_hashes_pair_with_the_first_image_and_distinct_hashes_once():
    found = duplicates_compute(ids=np.array([9, 3, 5, 7]), hashes=np.array([0, 0, 0, 0b111]), max_distance=3)

    assert [(p.image_id, p.duplicate_of, p.distance, p.kind) for p in found.pairs] == [
        (5, 3, 0, "exact"), (7, 3, 3, "near"), (9, 3, 0, "exact"),
    ]
    assert [group.image_ids for group in found.groups] == [(3, 5, 7, 9)]
    assert found.pairs[1].as_dict() == {"image_id": 7, "duplicate_of": 3, "distance": 3, "kind": "near"}


def test_the_upload_index_finds_the_closest_earlier_hash():
    index = HashIndex(np.array([1, 2, 3]), np.array([0b1111, 0b0, 0b1]))
    assert index.nearest(0b0) == (2, 0)
    assert index.nearest(0b0, exclude=2) == (3, 1)
    assert index.nearest(0b11, exclude=2) == (3, 1), "the lowest id among equally close ones"
    assert index.nearest(-1, max_distance=10) is None
    index.add(4, -1)
    index.add(2, 0)  # loaded already: not added twice
    assert index.nearest(-1, exclude=5) == (4, 0)
    assert len(index) == 4
    # Loaded and added hashes compete: the closer wins, then the lower id.
    index.add(5, 0b111)
    assert index.nearest(0b110) == (5, 1)
    index.add(6, 0b10)
    assert index.nearest(0b11, exclude=2) == (3, 1), "a loaded id below an added one at the same distance"
    assert index.nearest(0b1111111) == (1, 3), "a loaded hash closer than every added one"


# --- upload ------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_an_upload_stores_hashes_and_reports_near_duplicates_without_refusing_them(upload, uploader):
    first = upload([("original.jpg", jpeg(pattern(1))), ("other.jpg", jpeg(pattern(2)))], user=uploader)
    original = Image.objects.get(original_name="original.jpg")
    assert original.phash is not None and Image.objects.filter(phash__isnull=True).count() == 0
    assert "duplicate_of" not in entries_by_file(first)["other.jpg"]

    batch = upload([("copy.jpg", copy_of(1)), ("lossless.png", png(pattern(1))), ("new.jpg", jpeg(pattern(3)))],
                   user=uploader)  # fmt: skip

    entries = entries_by_file(batch)
    copy = entries["copy.jpg"]
    assert copy["status"] == "accepted" and Image.objects.filter(pk=copy["image_id"]).exists()
    assert copy["duplicate_of"] == original.pk
    assert copy["reason"] == f"looks like image #{original.pk} (original.jpg), distance {copy['distance']}"
    assert 0 <= copy["distance"] <= 10
    assert entries["lossless.png"]["duplicate_of"] == original.pk, "the closest: the original, not the copy"
    assert "duplicate_of" not in entries["new.jpg"]
    assert (batch.accepted_count, batch.duplicate_count) == (3, 0)


@pytest.mark.django_db
def test_a_near_duplicate_earlier_in_the_same_upload_is_found(upload):
    batch = upload([("a.jpg", jpeg(pattern(4))), ("b.jpg", copy_of(4))])

    entries = entries_by_file(batch)
    assert entries["b.jpg"]["duplicate_of"] == entries["a.jpg"]["image_id"]
    assert "duplicate_of" not in entries["a.jpg"]


@pytest.mark.django_db
def test_an_identical_file_is_still_a_duplicate_not_a_near_duplicate(upload):
    data = jpeg(pattern(5))
    batch = upload([("a.jpg", data), ("same.jpg", data)])

    entries = entries_by_file(batch)
    assert entries["same.jpg"]["status"] == "duplicate" and "duplicate_of" not in entries["same.jpg"]
    assert Image.objects.count() == 1


# --- the command --------------------------------------------------------------------------------


@pytest.mark.django_db
def test_find_duplicates_prints_pairs_as_json_and_backfills_missing_hashes(upload):
    upload([("a.jpg", jpeg(pattern(6))), ("b.jpg", copy_of(6)), ("c.jpg", jpeg(pattern(7)))])
    a, b = (Image.objects.get(original_name=name) for name in ("a.jpg", "b.jpg"))
    distance = hamming_distance(a.phash, b.phash)
    Image.objects.update(phash=None)  # stored before hashes were

    out = io.StringIO()
    call_command("find_duplicates", "--json", stdout=out)
    assert json.loads(out.getvalue()) == []

    out, err = io.StringIO(), io.StringIO()
    call_command("find_duplicates", "--json", "--backfill", stdout=out, stderr=err)
    pairs = json.loads(out.getvalue())
    assert Image.objects.filter(phash__isnull=True).count() == 0
    assert "Hashed 3 image(s)" in err.getvalue()
    assert pairs == [{"image_id": b.pk, "duplicate_of": a.pk, "distance": distance,
                      "kind": "exact" if distance == 0 else "near"}]  # fmt: skip

    out = io.StringIO()
    call_command("find_duplicates", stdout=out)
    assert f"image #{b.pk} b.jpg looks like image #{a.pk} a.jpg" in out.getvalue()
    assert "1 pair(s)." in out.getvalue()


# --- the admin ----------------------------------------------------------------------------------


@pytest.fixture
def look_alikes(upload):
    batch = upload([("a.jpg", jpeg(pattern(8))), ("b.jpg", copy_of(8)), ("c.jpg", jpeg(pattern(9)))])
    return batch, {image.original_name: image for image in Image.objects.all()}


@pytest.mark.django_db
@pytest.mark.parametrize("role", ["uploader", "reviewer"])
def test_who_may_view_images_sees_the_groups_page(request, role, client_for, look_alikes):
    _, images = look_alikes
    client = client_for(request.getfixturevalue(role))

    response = client.get("/admin/images/image/near-duplicates/")

    assert response.status_code == 200
    page = response.content.decode()
    assert "1 group of look-alike images (2 images)" in page
    assert f"#{images['b.jpg'].pk} looks like #{images['a.jpg'].pk}" in page
    assert "c.jpg" not in page
    assert "/admin/images/image/near-duplicates/" in client.get("/admin/images/image/").content.decode()


@pytest.mark.django_db
def test_the_groups_page_needs_the_view_permission(client_for, django_user_model):
    nobody = django_user_model.objects.create_user(username="staff", password="x", is_staff=True)
    assert client_for(nobody).get("/admin/images/image/near-duplicates/").status_code == 403


@pytest.mark.django_db
def test_the_changelist_filters_near_duplicates(client_for, reviewer, look_alikes):
    client = client_for(reviewer)

    flagged = client.get("/admin/images/image/", {"near_duplicates": "yes"})
    others = client.get("/admin/images/image/", {"near_duplicates": "no"})

    assert {row.original_name for row in flagged.context["cl"].result_list} == {"a.jpg", "b.jpg"}
    assert {row.original_name for row in others.context["cl"].result_list} == {"c.jpg"}


@pytest.mark.django_db
def test_the_batch_page_lists_its_near_duplicates(client_for, uploader, look_alikes):
    batch, images = look_alikes

    page = client_for(uploader).get(f"/admin/images/uploadbatch/{batch.pk}/change/").content.decode()

    assert f"looks like image #{images['a.jpg'].pk} (a.jpg)" in page
