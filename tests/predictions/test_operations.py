"""Bulk label operations: the rule that protects human labels, and undo as a whole."""

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from images.models import Image
from predictions.models import Label, LabelOperation, Review
from predictions.services import operations
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
    image, other = image_factory(), image_factory()
    result = _apply([image, other], labels["circle"], reviewer)
    later = review_submit(image=Image.objects.get(pk=image.pk), reviewer=lead, label=labels["star"])

    # Counted: only the image that has its previous label (none) back.
    assert label_operation_undo(operation=result.operation, user=lead) == 1

    image.refresh_from_db()
    assert image.final_label == labels["star"]
    assert image.reviewed_at == later.created_at
    assert Image.objects.get(pk=other.pk).final_label is None


def test_undo_is_refused_while_it_would_change_a_gold_images_reference_label(image_factory, labels, reviewer, lead):
    """A Lead made an operation's label a gold reference: undoing the operation would leave a
    gold image with no label (every later gold check counted wrong) or another one."""
    from predictions.services.quality import images_gold_set

    gold, other = image_factory(name="ref.jpg"), image_factory()
    result = _apply([gold, other], labels["circle"], reviewer)
    assert images_gold_set(image_ids=[gold.pk], gold=True).changed == 1

    with pytest.raises(ValidationError, match=r"1 gold image.*ref\.jpg"):
        label_operation_undo(operation=result.operation, user=lead)
    with pytest.raises(ValidationError) as refused:  # its author, a reviewer, is not told which images are gold
        label_operation_undo(operation=result.operation, user=reviewer)
    assert "gold" not in str(refused.value) and "ref.jpg" not in str(refused.value)

    assert Image.objects.get(pk=gold.pk).final_label == labels["circle"]
    assert Image.objects.get(pk=other.pk).final_label == labels["circle"]
    assert LabelOperation.objects.get(pk=result.operation.pk).undone_at is None
    assert not Review.objects.filter(operation=result.operation, undone_at__isnull=False).exists()

    images_gold_set(image_ids=[gold.pk], gold=False)  # unmarked: the undo goes through
    assert label_operation_undo(operation=result.operation, user=reviewer) == 2
    assert Image.objects.get(pk=gold.pk).final_label is None


# Threads with their own connections: the data must be committed (serialized_rollback as in
# test_label_imports: a flush after another transactional test leaves no permissions).
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_lead_marking_gold_while_an_undo_checks_never_leaves_a_gold_image_relabelled(
    image_factory, labels, reviewer, a_lead_marks_gold_meanwhile
):
    """The mark comes right after the undo looked for gold images. Checked before the undo
    claimed the operation, the mark went through and the undo then took the gold image's label."""
    from predictions.services.quality import GoldSkip

    image = image_factory(name="ref.jpg")
    result = _apply([image], labels["circle"], reviewer)
    a_lead_marks_gold_meanwhile(operations, image_id=image.pk)

    assert label_operation_undo(operation=result.operation, user=reviewer) == 1

    skipped = a_lead_marks_gold_meanwhile.skipped()
    image.refresh_from_db()
    assert not image.is_gold and image.final_label is None
    # It waited for the undo's claim, then skipped the image (on SQLite it may come after the
    # undo's write, and find no label).
    assert skipped <= {GoldSkip.UNDOING, GoldSkip.UNREVIEWED}


def test_undo_goes_through_when_a_gold_images_label_came_later(image_factory, labels, reviewer, lead):
    from predictions.services.quality import images_gold_set

    image = image_factory()
    result = _apply([image], labels["circle"], reviewer)
    review_submit(image=Image.objects.get(pk=image.pk), reviewer=lead, label=labels["star"])
    images_gold_set(image_ids=[image.pk], gold=True)

    label_operation_undo(operation=result.operation, user=reviewer)

    image.refresh_from_db()
    assert image.is_gold and image.final_label == labels["star"]


def test_unchanged_labels_are_not_written_again(image_factory, labels, reviewer, lead):
    image = image_factory()
    review_submit(image=image, reviewer=reviewer, label=labels["circle"])
    result = _apply([image], labels["circle"], lead, overwrite_reviewed=True)
    assert result.changed == 0
    assert result.skipped == {SkipReason.UNCHANGED: 1}


def test_each_changed_image_gets_one_complete_review_in_the_operation_over_several_batches(
    monkeypatch, image_factory, prediction_factory, labels, reviewer, second_reviewer, lead
):
    monkeypatch.setattr(operations, "WRITE_BATCH", 3)
    agreeing = [prediction_factory(label="circle") for _ in range(3)]
    disagreeing = [prediction_factory(label="square") for _ in range(2)]
    plain = [image_factory() for _ in range(2)]  # no prediction shown: agreed stays unknown
    reviewed = image_factory()
    review_submit(image=reviewed, reviewer=second_reviewer, label=labels["star"])
    held = image_factory(claimed_by=lead, claimed_until=timezone.now() + timedelta(minutes=5))  # the user's own claim
    decisions = (
        [LabelDecision(image_id=p.image_id, label_id=labels["circle"].pk, prediction_id=p.pk,
                       predicted_label_id=p.label_id) for p in agreeing + disagreeing]
        + [LabelDecision(image_id=image.pk, label_id=labels["cross"].pk) for image in plain + [held, reviewed]]
    )  # fmt: skip

    result = label_operation_apply(
        kind=LabelOperation.Kind.GRID_SET, decisions=decisions, user=lead, source=Review.Source.GRID
    )

    operation = LabelOperation.objects.get(pk=result.operation.pk)
    changed = {d.image_id: d for d in decisions if d.image_id != reviewed.pk}
    assert result.changed == operation.image_count == len(changed) == 8
    assert result.skipped == {SkipReason.REVIEWED: 1}
    agreed = {p.image_id: True for p in agreeing} | {p.image_id: False for p in disagreeing}
    reviews = list(Review.objects.filter(operation=operation))
    assert sorted(r.image_id for r in reviews) == sorted(changed)  # one each, none for the reviewed image
    for review in reviews:
        decision = changed[review.image_id]
        assert (review.label_id, review.prediction_id) == (decision.label_id, decision.prediction_id)
        assert review.agreed == agreed.get(review.image_id)
        assert (review.reviewer, review.source, review.created_at) == (lead, Review.Source.GRID, operation.created_at)
        assert (review.undone_at, review.queue_order, review.seconds_spent) == (None, "", None)
    images = Image.objects.in_bulk(changed)
    for image_id, decision in changed.items():
        image = images[image_id]
        assert (image.final_label_id, image.reviewed_by, image.reviewed_at) == (
            decision.label_id, lead, operation.created_at
        )  # fmt: skip
        assert (image.label_source, image.review_count, image.claimed_by, image.claimed_until) == (
            Review.Source.GRID, 1, None, None
        )  # fmt: skip
    assert Image.objects.get(pk=reviewed.pk).final_label == labels["star"]

    assert label_operation_undo(operation=operation, user=lead) == 8
    assert not Image.objects.filter(pk__in=changed, final_label__isnull=False).exists()


def test_an_image_reviewed_after_the_rule_read_it_keeps_the_human_label_and_gets_no_review(
    monkeypatch, image_factory, labels, reviewer, lead
):
    """A reviewer's decision committed between the batch's read and its write (PostgreSQL allows it)."""
    images = [image_factory() for _ in range(4)]
    raced = images[1]
    rule = operations.label_decision_skip_reason

    def rule_then_a_reviewer_decides(*, image, decision, **kwargs):
        reason = rule(image=image, decision=decision, **kwargs)
        if decision.image_id == raced.pk:
            review_submit(image=Image.objects.get(pk=raced.pk), reviewer=reviewer, label=labels["star"])
        return reason

    monkeypatch.setattr(operations, "label_decision_skip_reason", rule_then_a_reviewer_decides)
    result = _apply(images, labels["circle"], lead)

    assert result.changed == 3
    assert result.skipped == {SkipReason.REVIEWED: 1}
    raced.refresh_from_db()
    assert (raced.final_label, raced.reviewed_by, raced.review_count) == (labels["star"], reviewer, 1)
    assert sorted(Review.objects.filter(operation=result.operation).values_list("image_id", flat=True)) == sorted(
        image.pk for image in images if image.pk != raced.pk
    )
    assert Image.objects.filter(final_label=labels["circle"], reviewed_by=lead).count() == 3


def test_a_batch_larger_than_one_insert_statement_writes_every_review(labels, lead):
    # SQLite takes 90 Review rows per INSERT (999 parameters), so one batch of 250 needs three.
    images = Image.objects.bulk_create(
        Image(file=f"images/many/{n}.jpg", sha256=f"{n:064x}", original_name=f"many-{n}.jpg", width=8, height=8,
              format="JPEG", size_bytes=1)
        for n in range(250)
    )  # fmt: skip
    result = _apply(images, labels["circle"], lead)

    assert result.changed == 250
    reviews = Review.objects.filter(operation=result.operation, label=labels["circle"], reviewer=lead)
    assert sorted(reviews.values_list("image_id", flat=True)) == sorted(image.pk for image in images)
