"""Bulk label operations: the rule that protects human labels, and undo as a whole."""

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from images.models import Image
from predictions.models import Label, LabelOperation, Review
from predictions.services.operations import (
    LabelDecision,
    SkipReason,
    label_operation_apply,
    label_operation_undo,
)
from predictions.services.reviews import review_submit


def _apply(images, label, user, **kwargs):
    return label_operation_apply(
        kind=LabelOperation.Kind.GRID_SET,
        decisions=[LabelDecision(image_id=image.pk, label_id=label.pk) for image in images],
        user=user,
        source=Review.Source.GRID,
        **kwargs,
    )


@pytest.fixture
def labels(stub_model_version_factory):
    stub_model_version_factory()
    return {label.name: label for label in Label.objects.all()}


def test_only_unreviewed_unclaimed_non_gold_images_change_by_default(
    image_factory, labels, reviewer, second_reviewer, lead
):
    free = image_factory()
    reviewed = image_factory()
    review_submit(image=reviewed, reviewer=second_reviewer, label=labels["square"])
    claimed = image_factory(claimed_by=second_reviewer, claimed_until=timezone.now() + timedelta(minutes=5))
    gold = image_factory(is_gold=True)

    result = _apply([free, reviewed, claimed, gold], labels["circle"], reviewer)

    assert result.changed == 1
    assert result.skipped == {SkipReason.REVIEWED: 1, SkipReason.CLAIMED: 1, SkipReason.GOLD: 1}
    assert Image.objects.get(pk=free.pk).final_label == labels["circle"]
    assert Image.objects.get(pk=free.pk).label_source == Review.Source.GRID
    assert Image.objects.get(pk=reviewed.pk).final_label == labels["square"]
    assert Image.objects.get(pk=claimed.pk).final_label is None
    assert Image.objects.get(pk=gold.pk).final_label is None
    assert Review.objects.filter(operation=result.operation).count() == 1


def test_overwrite_changes_reviewed_images_and_undo_restores_them_exactly(image_factory, labels, reviewer, lead):
    images = [image_factory() for _ in range(3)]
    review_submit(image=images[0], reviewer=reviewer, label=labels["square"])
    review_submit(image=images[1], reviewer=reviewer, label=labels["star"])
    before = {image.pk: Image.objects.get(pk=image.pk) for image in images}

    result = _apply(images, labels["cross"], lead, overwrite_reviewed=True)
    assert result.changed == 3
    assert set(Image.objects.values_list("final_label__name", flat=True)) == {"cross"}

    assert label_operation_undo(operation=result.operation, user=lead) == 3
    for image in images:
        after = Image.objects.get(pk=image.pk)
        assert after.final_label_id == before[image.pk].final_label_id
        assert after.reviewed_by_id == before[image.pk].reviewed_by_id
        assert after.reviewed_at == before[image.pk].reviewed_at
        assert after.review_count == before[image.pk].review_count
        assert after.label_source == before[image.pk].label_source
    # History kept: the operation's reviews are marked undone, not deleted.
    assert Review.objects.filter(operation=result.operation, undone_at__isnull=False).count() == 3
    with pytest.raises(ValidationError):
        label_operation_undo(operation=result.operation, user=lead)


def test_undo_keeps_a_decision_made_after_the_operation(image_factory, labels, reviewer, lead):
    image = image_factory()
    result = _apply([image], labels["circle"], reviewer)
    later = review_submit(image=Image.objects.get(pk=image.pk), reviewer=lead, label=labels["star"])

    label_operation_undo(operation=result.operation, user=lead)

    image.refresh_from_db()
    assert image.final_label == labels["star"]
    assert image.reviewed_at == later.created_at


def test_unchanged_labels_are_not_written_again(image_factory, labels, reviewer, lead):
    image = image_factory()
    review_submit(image=image, reviewer=reviewer, label=labels["circle"])
    result = _apply([image], labels["circle"], lead, overwrite_reviewed=True)
    assert result.changed == 0
    assert result.skipped == {SkipReason.UNCHANGED: 1}
