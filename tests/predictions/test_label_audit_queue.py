"""The "Suspected label errors" order: flagged labels of the latest audit, re-checked by another reviewer."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from predictions.statistics.label_errors import simulate_noisy_labels
from tests.predictions.test_label_audit import labelled_images
from tests.predictions.test_review_screen import screen_config, url

pytestmark = pytest.mark.django_db

SUSPECTS = "suspects"


@pytest.fixture
def audited(stub_model_version_factory, reviewer):
    """200 images labelled by `reviewer` an hour ago (Review rows and all), 8 % flipped, and a finished audit."""
    from predictions.models import Review
    from predictions.services.label_audit import label_audit_run_now

    version = stub_model_version_factory("queue-v1")
    data = simulate_noisy_labels(n=200, seed=7)
    earlier = timezone.now() - timedelta(hours=1)
    images = labelled_images(
        version=version, reviewer=reviewer, given=data.given, pred_probs=data.pred_probs, reviewed_at=earlier
    )
    Review.objects.bulk_create(
        Review(image=image, reviewer=reviewer, label_id=image.final_label_id, created_at=earlier) for image in images
    )
    audit = label_audit_run_now()
    assert audit.flagged >= 5
    return audit


def flagged_ids(audit) -> list[int]:
    from predictions.selectors.label_audit import label_suspicions_flagged

    return [suspicion.image_id for suspicion in label_suspicions_flagged(audit=audit)]


def claim(reviewer, count=10):
    from predictions.selectors.queue import QueueFilters
    from predictions.services.reviews import review_claim_next

    return review_claim_next(reviewer=reviewer, filters=QueueFilters(order=SUSPECTS), count=count)


def test_the_queue_serves_flagged_labels_most_doubtful_first_to_another_reviewer(audited, second_reviewer):
    claimed = claim(second_reviewer, count=5)
    assert [p.image_id for p in claimed] == flagged_ids(audited)[:5]


def test_the_queue_never_serves_an_image_to_the_reviewer_who_labelled_it(audited, reviewer, second_reviewer):
    from images.models import Image
    from predictions.selectors.queue import QueueFilters, review_queue
    from predictions.selectors.versions import model_version_active

    assert claim(reviewer) == []
    filters = QueueFilters(order=SUSPECTS)
    assert not review_queue(reviewer=reviewer, filters=filters, model_version=model_version_active()).exists()
    # Labels given by several people: each sees only the others' flagged labels.
    flagged = flagged_ids(audited)
    mine = flagged[::2]
    Image.objects.filter(pk__in=mine).update(reviewed_by=second_reviewer)
    served = [p.image_id for p in review_queue(reviewer=second_reviewer, filters=filters, model_version=model_version_active())]
    assert served == [pk for pk in flagged if pk not in mine]
    served_to_first = [p.image_id for p in review_queue(reviewer=reviewer, filters=filters, model_version=model_version_active())]
    assert served_to_first == mine


def test_a_second_decision_is_recorded_and_the_first_kept(audited, reviewer, second_reviewer, client_for):
    from images.models import Image
    from predictions.models import Label, Review

    client = client_for(second_reviewer)
    config = screen_config(client.get(reverse("admin:predictions_review_screen") + f"?order={SUSPECTS}"))
    item = config["items"][0]
    image_id = item["image"]["id"]
    assert image_id == flagged_ids(audited)[0]
    suspicion = item["suspicion"]
    image = Image.objects.get(pk=image_id)
    assert suspicion["given_label_id"] == image.final_label_id
    assert suspicion["given_label"] == image.final_label.name
    assert suspicion["suggested_label"] and 0.0 <= suspicion["score"] <= 1.0
    corrected = Label.objects.get(pk=suspicion["suggested_label_id"])

    response = client.post(url("decide", order=SUSPECTS), {"image": image_id, "label": corrected.pk, "seconds": "3"})

    assert response.status_code == 200, response.content
    reviews = list(Review.objects.filter(image_id=image_id).order_by("created_at"))
    assert [(r.reviewer, r.label_id, r.undone_at) for r in reviews] == [
        (reviewer, suspicion["given_label_id"], None),
        (second_reviewer, corrected.pk, None),
    ]
    assert reviews[1].queue_order == SUSPECTS and reviews[1].source == Review.Source.SCREEN
    image.refresh_from_db()
    assert (image.final_label, image.reviewed_by, image.review_count) == (corrected, second_reviewer, 2)
    # Re-checked: out of the queue, and a second try is refused.
    assert image_id not in [p.image_id for p in claim(second_reviewer)]
    again = client.post(url("decide", order=SUSPECTS), {"image": image_id, "label": corrected.pk})
    assert again.status_code == 409

    # Undo brings the flagged label back, and the image back to the queue.
    undone = client.post(url("undo", order=SUSPECTS), {"review": reviews[1].pk})
    assert undone.status_code == 200 and undone.json()["item"]["suspicion"]["given_label_id"] == suspicion["given_label_id"]
    image.refresh_from_db()
    assert (image.final_label_id, image.reviewed_by) == (suspicion["given_label_id"], reviewer)


def test_the_labeller_cannot_re_decide_and_other_labels_stay_closed(audited, reviewer, second_reviewer):
    from django.core.exceptions import ValidationError

    from images.models import Image
    from predictions.services.reviews import ReviewConflict, review_decide

    image_id = flagged_ids(audited)[0]
    label_id = Image.objects.get(pk=image_id).final_label_id
    with pytest.raises(ReviewConflict, match="another reviewer"):
        review_decide(reviewer=reviewer, image_id=image_id, label_id=label_id, queue_order=SUSPECTS)
    not_flagged = Image.objects.exclude(pk__in=flagged_ids(audited)).filter(final_label__isnull=False).first()
    with pytest.raises((ReviewConflict, ValidationError), match="already reviewed"):
        review_decide(reviewer=second_reviewer, image_id=not_flagged.pk, label_id=label_id, queue_order=SUSPECTS)
    # Another order does not reopen a flagged label.
    with pytest.raises(ReviewConflict, match="already reviewed"):
        review_decide(reviewer=second_reviewer, image_id=image_id, label_id=label_id, queue_order="uncertainty")


def test_gold_images_and_labels_changed_since_the_audit_are_not_served(audited, second_reviewer):
    from images.models import Image

    first, second, *rest = flagged_ids(audited)
    Image.objects.filter(pk=first).update(is_gold=True)
    Image.objects.filter(pk=second).update(reviewed_at=timezone.now())
    assert [p.image_id for p in claim(second_reviewer, count=3)] == rest[:3]


def test_only_the_latest_finished_audit_is_served_each_image_once(audited, second_reviewer):
    from predictions.models import LabelAudit
    from predictions.selectors.queue import QueueFilters, review_queue
    from predictions.selectors.versions import model_version_active
    from predictions.services.label_audit import label_audit_queue, label_audit_run_now

    latest = label_audit_run_now()
    label_audit_queue()  # queued, not finished: not served
    assert LabelAudit.objects.filter(status=LabelAudit.Status.QUEUED).exists()
    queue = review_queue(reviewer=second_reviewer, filters=QueueFilters(order=SUSPECTS), model_version=model_version_active())
    served = [p.image_id for p in queue]
    # Rows are the same images as before (deterministic audit), each once, in the latest audit's order.
    assert served == flagged_ids(latest) == flagged_ids(audited)
    assert len(served) == len(set(served))


def test_the_screen_offers_the_order(audited, second_reviewer, client_for):
    response = client_for(second_reviewer).get(reverse("admin:predictions_review_screen"))
    assert b'value="suspects"' in response.content and b"Suspected label errors" in response.content
    assert b'id="review-suspicion"' in response.content
