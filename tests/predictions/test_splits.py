"""The training split: near-duplicate groups never straddle train and validation; the exports carry it."""

from __future__ import annotations

import csv
import io

import pytest

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh_duplicates_cache():
    from images.duplicates import clear_cache

    clear_cache()
    yield
    clear_cache()


def grouped_images(image_factory, *, groups: int, size: int) -> list[list[int]]:
    """``groups`` groups of ``size`` images with near-equal hashes (distinct between groups), ids by group."""
    ids = []
    for group in range(groups):
        # Far apart: group numbers spread over the high bits; members differ in one low bit.
        base = (group * 0x9E3779B97F4A7C15) & ((1 << 63) - 1) & ~0xFF
        ids.append([image_factory(phash=base | member).pk for member in range(size)])
    return ids


def test_a_near_duplicate_group_is_never_split_and_about_a_fifth_goes_to_validation(image_factory):
    """60 groups of 3 and 60 single images, under 20 seeds: every group on one side each time.

    The validation share of 2,400 group draws (expected 20 %, standard deviation 0.8 %)
    must lie within 15-25 %: a false alarm for a correct hash is far below 1e-9.
    """
    from predictions.selectors.splits import VALIDATION, training_split

    groups = grouped_images(image_factory, groups=60, size=3)
    singles = [image_factory().pk for _ in range(60)]
    all_ids = [pk for group in groups for pk in group] + singles
    validation_keys = draws = 0
    for seed in range(20):
        split = training_split(image_ids=all_ids, seed=seed)
        for group in groups:
            assert len({split[pk] for pk in group}) == 1, (seed, group)
        keys = [group[0] for group in groups] + singles
        validation_keys += sum(split[pk] == VALIDATION for pk in keys)
        draws += len(keys)
    assert 0.15 < validation_keys / draws < 0.25
    assert training_split(image_ids=all_ids, seed=1) == training_split(image_ids=all_ids, seed=1)
    assert training_split(image_ids=all_ids, seed=1) != training_split(image_ids=all_ids, seed=2)


def test_an_images_side_does_not_depend_on_which_images_are_exported(image_factory):
    from predictions.selectors.splits import training_split

    groups = grouped_images(image_factory, groups=10, size=2)
    everything = training_split(image_ids=[pk for group in groups for pk in group])
    some = training_split(image_ids=[group[1] for group in groups])
    assert all(some[pk] == everything[pk] for pk in some)


def test_the_training_csv_and_zip_carry_the_split(
    client_for, lead, image_factory, reviewer, django_capture_on_commit_callbacks, stub_model_version_factory
):
    import zipfile

    from django.core.files.storage import default_storage

    from images.models import Image
    from predictions.models import ExportJob, Label
    from predictions.selectors.splits import training_split
    from predictions.services.reviews import review_submit

    stub_model_version_factory()
    circle = Label.objects.get(name="circle")
    groups = grouped_images(image_factory, groups=12, size=2)
    ids = [pk for group in groups for pk in group]
    for image in Image.objects.filter(pk__in=ids):
        review_submit(image=image, reviewer=reviewer, label=circle)
    expected = training_split(image_ids=ids)
    client = client_for(lead)

    response = client.post("/admin/images/image/", {"action": "export_training_csv", "_selected_action": ids})
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    by_sha = {image.sha256: image.pk for image in Image.objects.filter(pk__in=ids)}

    def image_of(path: str) -> int:  # stored and zipped names are both content-addressed
        return next(pk for sha, pk in by_sha.items() if sha in path)

    assert {image_of(row["path"]): row["split"] for row in rows} == expected

    with django_capture_on_commit_callbacks(execute=True):
        client.post("/admin/images/image/", {"action": "export_training_zip", "_selected_action": ids})
    job = ExportJob.objects.get(kind="training_zip")
    with default_storage.open(job.file.name, "rb") as handle:
        index = zipfile.ZipFile(io.BytesIO(handle.read())).read("labels.csv").decode()
    default_storage.delete(job.file.name)  # the export folder is shared by the suite
    zipped = {image_of(row["path"]): row["split"] for row in csv.DictReader(io.StringIO(index))}
    assert zipped == expected
    assert set(expected.values()) == {"train", "validation"}, "12 groups at 20 %: both sides (seed 0)"
