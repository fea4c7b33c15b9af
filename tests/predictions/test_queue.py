"""The review queue (predictions.selectors.queue) and claims (services.reviews.review_claim_next)."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from images.models import Image, UploadBatch
from predictions.models import Label
from predictions.selectors.queue import (
    QueueFilters,
    QueueOrder,
    review_queue,
    review_queue_size_estimate,
)
from predictions.selectors.versions import model_version_or_active
from predictions.services.reviews import review_claim_next, review_claim_release, review_submit


def queue_names(reviewer, filters: QueueFilters = QueueFilters(), **kwargs) -> list[str]:
    version = model_version_or_active(version_id=filters.model_version_id)
    return [p.image.original_name for p in review_queue(reviewer=reviewer, filters=filters, model_version=version, **kwargs)]


def claim_names(reviewer, filters: QueueFilters = QueueFilters(), **kwargs) -> list[str]:
    return [p.image.original_name for p in review_claim_next(reviewer=reviewer, filters=filters, **kwargs)]


@pytest.fixture
def mixed(prediction_factory):
    """Four predictions, uploaded a, b, c, d, whose orders all differ: by margin, by confidence, by upload."""
    batch = UploadBatch.objects.create(name="second batch")
    rows = [
        # name, confidence, runner-up (so margin), label
        ("a.jpg", 0.50, 0.45, "circle"),  # margin 0.05
        ("b.jpg", 0.95, 0.03, "square"),  # margin 0.92
        ("c.jpg", 0.40, 0.20, "circle"),  # margin 0.20
        ("d.jpg", 0.70, 0.25, "star"),  # margin 0.45
    ]
    return {
        name: prediction_factory(
            name=name,
            confidence=confidence,
            runner_up=runner_up,
            label=label,
            batch=batch if name in ("c.jpg", "d.jpg") else None,
        )
        for name, confidence, runner_up, label in rows
    }


def test_uncertainty_order_is_by_margin(reviewer, mixed):
    assert queue_names(reviewer) == ["a.jpg", "c.jpg", "d.jpg", "b.jpg"]


def test_confidence_order_is_most_confident_first(reviewer, mixed):
    assert queue_names(reviewer, QueueFilters(order=QueueOrder.CONFIDENCE)) == ["b.jpg", "d.jpg", "a.jpg", "c.jpg"]


def test_upload_order_is_oldest_first(reviewer, mixed):
    assert queue_names(reviewer, QueueFilters(order=QueueOrder.UPLOAD)) == ["a.jpg", "b.jpg", "c.jpg", "d.jpg"]


def test_random_order_starts_anywhere_wraps_around_and_never_sorts_by_random(reviewer, mixed, monkeypatch):
    import predictions.services.reviews as reviews

    monkeypatch.setattr(reviews.random, "random", lambda: 0.3)  # between c (0.20) and d (0.45)
    with CaptureQueriesContext(connection) as queries:
        picked = claim_names(reviewer, QueueFilters(order=QueueOrder.RANDOM), count=4)

    assert picked == ["d.jpg", "b.jpg", "a.jpg", "c.jpg"]
    assert not any("RANDOM" in query["sql"].upper() for query in queries.captured_queries)


def test_random_order_reaches_every_image(reviewer, mixed):
    seen = set()
    for _ in range(40):
        seen.update(claim_names(reviewer, QueueFilters(order=QueueOrder.RANDOM), count=1))
        Image.objects.update(claimed_by=None, claimed_until=None)
    assert len(seen) >= 3  # each start point is uniform over margins; a, c and d are all reachable


def test_size_estimate_is_exact_up_to_the_cap_and_says_more_beyond(reviewer, mixed):
    version = model_version_or_active(version_id=None)
    queue = review_queue(reviewer=reviewer, filters=QueueFilters(), model_version=version)

    assert review_queue_size_estimate(queue=queue) == (4, False)
    assert review_queue_size_estimate(queue=queue, cap=4) == (4, False)
    assert review_queue_size_estimate(queue=queue, cap=3) == (3, True)  # shown as "3+"


def test_filters_batch_label_and_confidence(reviewer, mixed):
    batch = UploadBatch.objects.get(name="second batch")
    circle = Label.objects.get(name="circle")

    assert queue_names(reviewer, QueueFilters(batch_id=batch.pk)) == ["c.jpg", "d.jpg"]
    assert queue_names(reviewer, QueueFilters(label_id=circle.pk)) == ["a.jpg", "c.jpg"]
    assert queue_names(reviewer, QueueFilters(confidence_min=0.5, confidence_max=0.9)) == ["a.jpg", "d.jpg"]


def test_queue_is_the_chosen_model_version_default_active(reviewer, mixed, stub_model_version_factory, prediction_factory):
    other = stub_model_version_factory("stub-v0", active=False)
    prediction_factory(model_version=other, image=mixed["b.jpg"].image, confidence=0.5)
    prediction_factory(model_version=other, name="old-only.jpg", confidence=0.5)

    assert queue_names(reviewer, QueueFilters(model_version_id=other.pk)) == ["b.jpg", "old-only.jpg"]
    assert "old-only.jpg" not in queue_names(reviewer)


def test_reviewed_images_leave_the_queue_and_undone_ones_come_back(reviewer, mixed):
    from predictions.services.reviews import review_undo

    review = review_submit(image=mixed["a.jpg"].image, reviewer=reviewer, label=mixed["a.jpg"].label)
    assert "a.jpg" not in queue_names(reviewer)

    review_undo(review=review)
    assert queue_names(reviewer)[0] == "a.jpg"


def test_images_without_a_prediction_are_not_queued(reviewer, mixed, image_factory):
    image_factory(name="unpredicted.jpg")
    assert "unpredicted.jpg" not in queue_names(reviewer)


def test_claim_holds_images_for_the_claim_time(reviewer, mixed, settings):
    settings.REVIEW_CLAIM_SECONDS = 120
    before = timezone.now()

    assert claim_names(reviewer, count=2) == ["a.jpg", "c.jpg"]

    image = Image.objects.get(original_name="a.jpg")
    assert image.claimed_by == reviewer
    assert timedelta(seconds=119) < image.claimed_until - before < timedelta(seconds=125)


def test_two_reviewers_interleaved_never_get_the_same_image(reviewer, second_reviewer, prediction_factory):
    """Each reviewer works as the screen does: hold two, decide the first, ask for one more."""
    for n in range(10):
        prediction_factory(name=f"i{n}.jpg", confidence=0.3 + n * 0.05)
    shown = {reviewer.pk: [], second_reviewer.pk: []}
    hand = {reviewer.pk: [], second_reviewer.pk: []}
    for _ in range(6):
        for user in (reviewer, second_reviewer):
            held = [p.image_id for p in hand[user.pk]]
            fresh = review_claim_next(reviewer=user, filters=QueueFilters(), count=2 - len(held), exclude_image_ids=held)
            shown[user.pk] += [p.image.original_name for p in fresh]
            hand[user.pk] += fresh
            if hand[user.pk]:
                current = hand[user.pk].pop(0)
                review_submit(image=current.image, reviewer=user, label=current.label, prediction=current)

    first, second = shown[reviewer.pk], shown[second_reviewer.pk]
    assert not set(first) & set(second)
    assert len(first) == len(set(first)) and len(second) == len(set(second))
    assert set(first) | set(second) == {f"i{n}.jpg" for n in range(10)}
    assert Image.objects.filter(review_count=1).count() == 10


def test_excluding_held_images_hands_out_the_next_ones(reviewer, second_reviewer, prediction_factory):
    for n in range(10):
        prediction_factory(name=f"i{n}.jpg", confidence=0.3 + n * 0.05)
    held = {reviewer.pk: [], second_reviewer.pk: []}
    for _ in range(5):
        for user in (reviewer, second_reviewer):
            claimed = review_claim_next(reviewer=user, filters=QueueFilters(), count=1, exclude_image_ids=held[user.pk])
            held[user.pk] += [p.image_id for p in claimed]

    assert len(held[reviewer.pk]) == 5 and len(held[second_reviewer.pk]) == 5
    assert not set(held[reviewer.pk]) & set(held[second_reviewer.pk])


def test_expired_claims_go_back_to_the_queue(reviewer, second_reviewer, mixed, settings):
    settings.REVIEW_CLAIM_SECONDS = 60
    claim_names(reviewer, count=2)
    assert claim_names(second_reviewer, count=1) == ["d.jpg"]

    later = timezone.now() + timedelta(seconds=61)
    Image.objects.filter(claimed_by=second_reviewer).update(claimed_by=None, claimed_until=None)
    assert claim_names(second_reviewer, count=2, now=later) == ["a.jpg", "c.jpg"]
    assert set(Image.objects.filter(claimed_by=second_reviewer).values_list("original_name", flat=True)) == {
        "a.jpg",
        "c.jpg",
    }


def test_expired_claims_go_back_with_the_clock_moved(reviewer, second_reviewer, mixed, settings, monkeypatch):
    settings.REVIEW_CLAIM_SECONDS = 60
    claim_names(reviewer, count=4)
    assert claim_names(second_reviewer, count=1) == []

    later = timezone.now() + timedelta(seconds=61)
    monkeypatch.setattr(timezone, "now", lambda: later)
    assert claim_names(second_reviewer, count=1) == ["a.jpg"]


def test_release_gives_back_only_my_claims(reviewer, second_reviewer, mixed):
    claim_names(reviewer, count=1)
    claim_names(second_reviewer, count=1)
    mine, theirs = (Image.objects.get(original_name=name) for name in ("a.jpg", "c.jpg"))

    review_claim_release(reviewer=reviewer, image_ids=[mine.pk, theirs.pk])

    assert Image.objects.get(pk=mine.pk).claimed_by is None
    assert Image.objects.get(pk=theirs.pk).claimed_by == second_reviewer


def test_skipped_images_come_after_the_rest(reviewer, mixed):
    skipped = [mixed["a.jpg"].image_id]
    assert claim_names(reviewer, count=4, skipped_image_ids=skipped) == ["c.jpg", "d.jpg", "b.jpg", "a.jpg"]


def test_no_active_version_means_an_empty_queue(reviewer, mixed):
    from predictions.models import ModelVersion

    ModelVersion.objects.update(is_active=False)
    assert claim_names(reviewer, count=2) == []
    assert queue_names(reviewer) == []


def test_queue_query_is_bounded_and_driven_from_predictions(reviewer, mixed):
    with CaptureQueriesContext(connection) as queries:
        claim_names(reviewer, count=2)
    selects = [q["sql"] for q in queries.captured_queries if q["sql"].lstrip().upper().startswith("SELECT")]
    queue_sql = [sql for sql in selects if "predictions_prediction" in sql and "LIMIT" in sql.upper()]
    assert queue_sql and all('FROM "predictions_prediction"' in sql for sql in queue_sql)


def test_claims_lock_rows_with_skip_locked_where_the_database_can(reviewer, mixed):
    with CaptureQueriesContext(connection) as queries:
        claim_names(reviewer, count=2)
    locked = [q["sql"] for q in queries.captured_queries if "SKIP LOCKED" in q["sql"].upper()]
    assert bool(locked) == connection.features.has_select_for_update_skip_locked


@pytest.mark.skipif(
    not connection.features.has_select_for_update_skip_locked,
    reason="row-locking claims need a server database; SQLite's conditional-update claims under "
    "concurrent reviewers are covered by tests/integration/test_sqlite_load.py",
)
@pytest.mark.django_db(transaction=True)
def test_concurrent_claims_from_threads_never_overlap(django_user_model, prediction_factory):
    from concurrent.futures import ThreadPoolExecutor

    from django.db import close_old_connections

    for n in range(24):
        prediction_factory(name=f"c{n}.jpg", confidence=0.3 + n * 0.02)
    users = [django_user_model.objects.create_user(username=f"r{n}", is_staff=True) for n in range(4)]

    def work(user) -> list[int]:
        try:
            got: list[int] = []
            for _ in range(3):
                got += [p.image_id for p in review_claim_next(reviewer=user, filters=QueueFilters(), count=2, exclude_image_ids=got)]
            return got
        finally:
            close_old_connections()

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(work, users))

    claimed = [image_id for got in results for image_id in got]
    assert len(claimed) == 24 and len(set(claimed)) == 24
    for user, got in zip(users, results, strict=True):
        assert set(Image.objects.filter(claimed_by=user).values_list("pk", flat=True)) == set(got)


def test_new_predictions_ahead_of_the_remembered_start_are_served(reviewer, mixed, prediction_factory):
    for name in ("a.jpg", "c.jpg"):
        review_submit(image=mixed[name].image, reviewer=reviewer, label=mixed[name].label)
    assert queue_names(reviewer) == ["d.jpg", "b.jpg"]  # the queue now remembers it starts at d

    prediction_factory(name="new.jpg", confidence=0.5, runner_up=0.49)  # margin 0.01, before d

    assert queue_names(reviewer) == ["new.jpg", "d.jpg", "b.jpg"]
    assert queue_names(reviewer, QueueFilters(order=QueueOrder.CONFIDENCE))[-1] == "new.jpg"


def test_remembered_start_is_recomputed_after_the_claim_time(reviewer, mixed, monkeypatch, settings):
    import time

    from predictions.models import Review

    settings.REVIEW_CLAIM_SECONDS = 60
    review = review_submit(image=mixed["a.jpg"].image, reviewer=reviewer, label=mixed["a.jpg"].label)
    assert queue_names(reviewer)[0] == "c.jpg"
    # Reopened without the undo service (as another process's undo looks from here).
    Review.objects.filter(pk=review.pk).update(undone_at=timezone.now())
    Image.objects.filter(pk=review.image_id).update(final_label=None, review_count=0)
    assert queue_names(reviewer)[0] == "c.jpg"

    later = time.monotonic() + 61
    monkeypatch.setattr(time, "monotonic", lambda: later)
    assert queue_names(reviewer)[0] == "a.jpg"


def test_a_reviewer_claiming_in_a_loop_holds_at_most_the_cap_and_releases_the_oldest(
    reviewer, second_reviewer, prediction_factory, settings
):
    """As a client calling "next" over and over, passing every image it holds as held."""
    settings.REVIEW_MAX_OPEN_CLAIMS = 3
    for n in range(8):
        prediction_factory(name=f"i{n}.jpg", confidence=0.3 + n * 0.05)
    start = timezone.now()
    held: list[int] = []
    for step in range(5):
        claimed = review_claim_next(
            reviewer=reviewer,
            filters=QueueFilters(),
            count=2,
            exclude_image_ids=held,
            now=start + timedelta(seconds=step),
        )
        held += [p.image_id for p in claimed]

    assert len(held) == 8  # it was handed images each time...
    mine = Image.objects.filter(claimed_by=reviewer, claimed_until__gte=start + timedelta(seconds=4))
    assert mine.count() == 3  # ...but holds only the cap, the newest ones
    assert set(mine.values_list("pk", flat=True)) <= set(held[-3:])
    # What was released is in the others' queues again.
    others = review_claim_next(
        reviewer=second_reviewer, filters=QueueFilters(), count=3, now=start + timedelta(seconds=5)
    )
    assert len(others) == 3 and {p.image_id for p in others} <= set(held[:-3])


def test_one_claim_request_never_takes_more_than_the_cap(reviewer, mixed, settings):
    settings.REVIEW_MAX_OPEN_CLAIMS = 2
    assert len(claim_names(reviewer, count=4)) == 2
    assert Image.objects.filter(claimed_by=reviewer).count() == 2
