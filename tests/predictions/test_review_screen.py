"""The keyboard review screen and its JSON endpoints, through the test client."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from images.models import Image
from predictions.models import Label, Review

SCREEN = "admin:predictions_review_screen"


def url(name: str, **query) -> str:
    from urllib.parse import urlencode

    base = reverse(f"admin:predictions_review_{name}")
    return f"{base}?{urlencode(query)}" if query else base


def screen_config(response) -> dict:
    import json
    import re

    match = re.search(r'<script id="review-config" type="application/json">(.*?)</script>', response.content.decode(), re.S)
    assert match, "the screen embeds its configuration"
    return json.loads(match.group(1))


@pytest.fixture
def queue(prediction_factory):
    """Five predictions, most uncertain first by margin: q1 (0.30) ... q5 (0.90)."""
    return [
        prediction_factory(confidence=confidence, label=label, name=f"q{n}.jpg")
        for n, (confidence, label) in enumerate(
            [(0.30, "circle"), (0.45, "square"), (0.60, "triangle"), (0.75, "star"), (0.90, "cross")], start=1
        )
    ]


def names(items: list[dict]) -> list[str]:
    return [item["image"]["name"] for item in items]


def test_screen_shows_the_two_most_uncertain_images_with_labels_and_counters(client_for, reviewer, queue):
    response = client_for(reviewer).get(reverse(SCREEN))

    assert response.status_code == 200
    config = screen_config(response)
    assert names(config["items"]) == ["q1.jpg", "q2.jpg"]
    first = config["items"][0]
    assert first["image"]["url"] == queue[0].image.file.url
    assert first["prediction"]["label"] == "circle"
    assert [bar["label"] for bar in first["prediction"]["top"]][0] == "circle"
    assert len(first["prediction"]["top"]) == 5
    assert config["left"] == 5 and config["more_left"] is False
    assert config["reviewed_today"] == 0
    assert [(label["name"], label["key"]) for label in config["labels"]] == [
        ("circle", "1"), ("square", "2"), ("triangle", "3"), ("star", "4"), ("cross", "5"),
    ]
    # The label buttons carry their keys for the script and the help overlay.
    assert b'data-key="1"' in response.content and b"<kbd>Enter</kbd>" in response.content
    # Shown images are claimed by this reviewer.
    claimed = Image.objects.filter(claimed_by=reviewer).values_list("original_name", flat=True)
    assert sorted(claimed) == ["q1.jpg", "q2.jpg"]


def test_label_without_key_gets_the_next_free_digit(client_for, reviewer, queue):
    Label.objects.filter(name="circle").update(key="c")
    Label.objects.filter(name="square").update(key="")

    config = screen_config(client_for(reviewer).get(reverse(SCREEN)))

    keys = {label["name"]: label["key"] for label in config["labels"]}
    assert keys["circle"] == "c"
    assert keys["square"] == "1"  # the first digit no other label claims


def test_next_claims_more_and_leaves_out_what_the_screen_holds(client_for, reviewer, queue):
    client = client_for(reviewer)
    first = screen_config(client.get(reverse(SCREEN)))["items"]
    held = [item["image"]["id"] for item in first]

    response = client.post(url("next"), {"count": 2, "exclude": held})

    assert response.status_code == 200
    assert names(response.json()["items"]) == ["q3.jpg", "q4.jpg"]


def test_decide_with_a_label_records_a_review_and_moves_the_queue(client_for, reviewer, queue):
    client = client_for(reviewer)
    square = Label.objects.get(name="square")

    response = client.post(
        url("decide"), {"image": queue[0].image_id, "prediction": queue[0].pk, "label": square.pk, "seconds": "2.5"}
    )

    assert response.status_code == 200
    body = response.json()
    assert body["reviewed_today"] == 1 and body["agreed"] is False
    review = Review.objects.get(pk=body["review"])
    assert (review.label, review.reviewer, review.prediction, review.source) == (square, reviewer, queue[0], "screen")
    assert review.seconds_spent == 2.5
    image = Image.objects.get(pk=queue[0].image_id)
    assert image.final_label == square and image.claimed_by is None
    assert "q1.jpg" not in names(client.post(url("next"), {"count": 5}).json()["items"])


def test_confirm_takes_the_model_label(client_for, reviewer, queue):
    response = client_for(reviewer).post(url("decide"), {"image": queue[1].image_id, "label": "confirm"})

    assert response.status_code == 200
    review = Review.objects.get(pk=response.json()["review"])
    assert review.label.name == "square" and review.agreed is True and review.prediction == queue[1]


def test_decide_refuses_bad_input_with_a_reason(client_for, reviewer, queue):
    client = client_for(reviewer)

    assert "label" in client.post(url("decide"), {"image": queue[0].image_id, "label": "nope"}).json()["error"]
    assert "image" in client.post(url("decide"), {"label": "confirm"}).json()["error"]
    missing = client.post(url("decide"), {"image": 999999, "label": "confirm"})
    assert missing.status_code == 400 and "999999" in missing.json()["error"]
    assert Review.objects.count() == 0


def test_decide_on_an_image_someone_else_reviewed_is_a_conflict(client_for, reviewer, second_reviewer, queue):
    client_for(second_reviewer).post(url("decide"), {"image": queue[0].image_id, "label": "confirm"})

    response = client_for(reviewer).post(url("decide"), {"image": queue[0].image_id, "label": "confirm"})

    assert response.status_code == 409
    assert "already reviewed" in response.json()["error"]
    assert Review.objects.count() == 1


def test_decide_on_an_image_another_reviewer_holds_is_a_conflict(client_for, reviewer, second_reviewer, queue):
    client_for(second_reviewer).get(reverse(SCREEN))  # claims q1 and q2

    response = client_for(reviewer).post(url("decide"), {"image": queue[0].image_id, "label": "confirm"})

    assert response.status_code == 409
    assert Review.objects.count() == 0


def test_skip_releases_the_claim_and_the_image_comes_back_last(client_for, reviewer, queue):
    client = client_for(reviewer)
    client.get(reverse(SCREEN))

    assert client.post(url("skip"), {"image": queue[0].image_id}).status_code == 200

    image = Image.objects.get(pk=queue[0].image_id)
    assert image.claimed_by is None
    order = names(client.post(url("next"), {"count": 5}).json()["items"])
    assert order == ["q2.jpg", "q3.jpg", "q4.jpg", "q5.jpg", "q1.jpg"]


def test_a_skipped_image_is_served_again_when_nothing_else_is_left(client_for, reviewer, prediction_factory):
    only = prediction_factory(name="only.jpg")
    client = client_for(reviewer)
    client.post(url("skip"), {"image": only.image_id})

    assert names(client.post(url("next"), {"count": 2}).json()["items"]) == ["only.jpg"]


def test_undo_restores_the_queue_and_keeps_the_history(client_for, reviewer, queue):
    client = client_for(reviewer)
    triangle = Label.objects.get(name="triangle")
    first = client.post(url("decide"), {"image": queue[0].image_id, "label": triangle.pk}).json()["review"]

    response = client.post(url("undo"), {"review": first})

    assert response.status_code == 200
    body = response.json()
    assert body["item"]["image"]["name"] == "q1.jpg" and body["reviewed_today"] == 0
    review = Review.objects.get(pk=first)
    assert review.undone_at is not None  # kept, marked
    image = Image.objects.get(pk=queue[0].image_id)
    assert image.final_label is None and image.review_count == 0
    assert image.claimed_by == reviewer  # back on this reviewer's screen at once
    assert names(client.post(url("next"), {"count": 1}).json()["items"]) == ["q1.jpg"]

    # Deciding again adds a row; nothing is overwritten.
    second = client.post(url("decide"), {"image": queue[0].image_id, "label": "confirm"}).json()["review"]
    history = Review.objects.filter(image=queue[0].image).order_by("id")
    assert [(r.pk, r.undone_at is None) for r in history] == [(first, False), (second, True)]
    assert Image.objects.get(pk=queue[0].image_id).final_label.name == "circle"


def test_undo_without_an_id_takes_back_the_latest_decision_only_of_this_reviewer(
    client_for, reviewer, second_reviewer, queue
):
    mine = client_for(reviewer).post(url("decide"), {"image": queue[0].image_id, "label": "confirm"}).json()["review"]
    theirs = client_for(second_reviewer).post(url("decide"), {"image": queue[1].image_id, "label": "confirm"})

    response = client_for(reviewer).post(url("undo"))

    assert response.json()["undone"] == mine
    assert client_for(reviewer).post(url("undo"), {"review": theirs.json()["review"]}).status_code == 404
    assert Review.objects.get(pk=theirs.json()["review"]).undone_at is None
    assert client_for(reviewer).post(url("undo")).status_code == 404


def test_keyboard_flow_label_confirm_skip_undo(client_for, reviewer, queue):
    """The sequence the screen's keys send: 2, Enter, S, Z, then Enter again."""
    client = client_for(reviewer)
    items = screen_config(client.get(reverse(SCREEN)))["items"]
    square = Label.objects.get(name="square")

    key_2 = client.post(url("decide"), {"image": items[0]["image"]["id"], "prediction": items[0]["prediction"]["id"], "label": square.pk})
    items = items[1:] + client.post(url("next"), {"count": 1, "exclude": [items[1]["image"]["id"]]}).json()["items"]
    enter = client.post(url("decide"), {"image": items[0]["image"]["id"], "prediction": items[0]["prediction"]["id"], "label": "confirm"})
    items = items[1:] + client.post(url("next"), {"count": 1, "exclude": [items[1]["image"]["id"]]}).json()["items"]
    skipped = items[0]
    assert client.post(url("skip"), {"image": skipped["image"]["id"]}).status_code == 200
    undo = client.post(url("undo"), {"review": enter.json()["review"]}).json()

    assert [key_2.status_code, enter.status_code] == [200, 200]
    assert undo["item"]["image"]["name"] == "q2.jpg"
    live = Review.objects.filter(undone_at__isnull=True)
    assert [(r.image.original_name, r.label.name) for r in live] == [("q1.jpg", "square")]
    assert skipped["image"]["name"] == "q3.jpg"
    again = client.post(url("decide"), {"image": undo["item"]["image"]["id"], "label": "confirm"})
    assert again.status_code == 200
    assert Review.objects.filter(undone_at__isnull=True).count() == 2


def test_screen_filters_come_from_the_querystring(client_for, reviewer, queue):
    star = Label.objects.get(name="star")
    client = client_for(reviewer)

    by_label = screen_config(client.get(reverse(SCREEN), {"label": star.pk}))
    confident = screen_config(client.get(reverse(SCREEN), {"order": "confidence", "confidence_min": "0.5"}))

    assert names(by_label["items"]) == ["q4.jpg"] and by_label["left"] == 1
    assert names(confident["items"]) == ["q5.jpg", "q4.jpg"]
    # The endpoints get the same querystring, so `next` serves the same queue.
    assert confident["urls"]["next"].endswith("order=confidence&confidence_min=0.5")


def test_invalid_filters_fall_back_to_the_default_queue_and_say_so(client_for, reviewer, queue):
    response = client_for(reviewer).get(reverse(SCREEN), {"confidence_min": "0.9", "confidence_max": "0.1"})

    assert response.status_code == 200
    assert b"Showing the default queue" in response.content
    assert names(screen_config(response)["items"]) == ["q1.jpg", "q2.jpg"]


def test_screen_without_an_active_model_version_says_there_is_nothing(client_for, reviewer, queue):
    from predictions.models import ModelVersion

    ModelVersion.objects.update(is_active=False)

    response = client_for(reviewer).get(reverse(SCREEN))

    assert response.status_code == 200
    assert screen_config(response)["items"] == []
    assert b"no active model version" in response.content


def test_endpoints_only_answer_post(client_for, reviewer, queue):
    client = client_for(reviewer)
    for name in ("next", "decide", "skip", "undo"):
        assert client.get(url(name)).status_code == 405


def test_endpoints_check_the_csrf_token(reviewer, queue):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(reviewer)

    assert client.post(url("next"), {"count": 1}).status_code == 403
    token = client.get(reverse(SCREEN)).cookies["csrftoken"].value
    assert client.post(url("next"), {"count": 1}, headers={"X-CSRFToken": token}).status_code == 200


def test_query_count_does_not_grow_with_the_queue(client_for, reviewer, prediction_factory):
    client = client_for(reviewer)

    def measure() -> tuple[int, int]:
        # A first request takes in the new predictions (one extra query, once).
        client.get(reverse(SCREEN))
        Image.objects.update(claimed_by=None, claimed_until=None)
        with CaptureQueriesContext(connection) as screen:
            assert client.get(reverse(SCREEN)).status_code == 200
        with CaptureQueriesContext(connection) as next_:
            assert len(client.post(url("next"), {"count": 2}).json()["items"]) == 2
        return len(screen), len(next_)

    for n in range(5):
        prediction_factory(confidence=0.3 + n / 100)
    client.get(reverse(SCREEN))  # the session exists from here on, as for a working reviewer
    with_5 = measure()
    for n in range(45):
        prediction_factory(confidence=0.4 + n / 100)
    with_50 = measure()

    assert with_5 == with_50
    # A guard against new per-request queries: next is 16 on PostgreSQL (its claim runs in
    # a savepoint; one query asks whether any upload batch sets its own overlap share).
    assert with_5[0] <= 25 and with_5[1] <= 16


# --- the strip of recent decisions, and undo across reloads (issue 17, items 3 and 4) -----------


def test_decide_answers_with_its_strip_entry_and_the_count_including_it(client_for, reviewer, queue):
    client = client_for(reviewer)
    square = Label.objects.get(name="square")

    corrected = client.post(url("decide"), {"image": queue[0].image_id, "prediction": queue[0].pk, "label": square.pk})
    confirmed = client.post(url("decide"), {"image": queue[1].image_id, "label": "confirm"})

    entry = corrected.json()["decision"]
    assert entry["review"] == corrected.json()["review"]
    assert entry["image"]["id"] == queue[0].image_id and entry["image"]["name"] == "q1.jpg"
    assert entry["image"]["thumbnail_url"]  # the image itself until the worker made a thumbnail
    assert (entry["label"], entry["outcome"], entry["predicted"]) == ("square", "corrected", "circle")
    second = confirmed.json()["decision"]
    assert (second["label"], second["outcome"], second["predicted"]) == ("square", "confirmed", None)
    assert [corrected.json()["reviewed_today"], confirmed.json()["reviewed_today"]] == [1, 2]


def test_the_page_renders_the_last_live_screen_decisions_of_this_reviewer_newest_first(
    client_for, reviewer, second_reviewer, prediction_factory
):
    from predictions.selectors.recent_decisions import RECENT_DECISIONS
    from predictions.services.reviews import reviews_grid_set_label

    count = RECENT_DECISIONS + 3
    predictions = [prediction_factory(name=f"r{n}.jpg", confidence=0.3 + n / 100) for n in range(count)]
    client = client_for(reviewer)
    reviews = [
        client.post(url("decide"), {"image": p.image_id, "label": "confirm"}).json()["review"]
        for p in predictions[: RECENT_DECISIONS + 1]
    ]
    client.post(url("undo"), {"review": reviews[3]})
    client_for(second_reviewer).post(url("decide"), {"image": predictions[-2].image_id, "label": "confirm"})
    # A grid action is undone as an operation, not from the screen's strip.
    reviews_grid_set_label(image_ids=[predictions[-1].image_id], label=Label.objects.get(name="star"), user=reviewer)

    recent = screen_config(client_for(reviewer).get(reverse(SCREEN)))["recent"]

    expected = [review for review in reversed(reviews) if review != reviews[3]][:RECENT_DECISIONS]
    assert [entry["review"] for entry in recent] == expected
    assert {entry["outcome"] for entry in recent} == {"confirmed"}


def test_undo_after_a_reload_takes_back_the_latest_decision_and_names_it(client_for, reviewer, queue):
    client = client_for(reviewer)
    square = Label.objects.get(name="square")
    client.post(url("decide"), {"image": queue[0].image_id, "label": "confirm"})
    latest = client.post(url("decide"), {"image": queue[1].image_id, "label": square.pk}).json()["review"]
    client.get(reverse(SCREEN), {"order": "confidence"})  # a reload with other filters: no history in the page

    response = client.post(url("undo", order="confidence"))

    assert response.status_code == 200
    body = response.json()
    assert body["undone"] == latest
    assert body["message"] == "Undid: square on q2.jpg"
    assert body["item"]["image"]["name"] == "q2.jpg"  # shown again, claimed by this reviewer
    assert Image.objects.get(pk=queue[1].image_id).claimed_by == reviewer
    assert body["reviewed_today"] == 1
    assert [entry["image"]["name"] for entry in body["recent"]] == ["q1.jpg"]


def test_undo_of_an_older_strip_entry_brings_that_image_back(client_for, reviewer, queue):
    client = client_for(reviewer)
    first = client.post(url("decide"), {"image": queue[0].image_id, "label": "confirm"}).json()["review"]
    second = client.post(url("decide"), {"image": queue[1].image_id, "label": "confirm"}).json()["review"]

    body = client.post(url("undo"), {"review": first}).json()

    assert body["undone"] == first and body["message"] == "Undid: circle on q1.jpg"
    assert body["item"]["image"]["name"] == "q1.jpg"
    assert [entry["review"] for entry in body["recent"]] == [second]
    assert Review.objects.get(pk=second).undone_at is None
    # Taken back once: a second undo of the same decision has nothing to take back.
    assert client.post(url("undo"), {"review": first}).status_code == 404


def test_undo_of_a_decision_a_later_one_replaced_says_so_and_brings_nothing_back(client_for, reviewer, lead, queue):
    from predictions.services.reviews import reviews_grid_set_label

    client = client_for(reviewer)
    decided = client.post(url("decide"), {"image": queue[0].image_id, "label": "confirm"}).json()["review"]
    cross = Label.objects.get(name="cross")
    reviews_grid_set_label(image_ids=[queue[0].image_id], label=cross, user=lead, overwrite_reviewed=True)

    body = client.post(url("undo"), {"review": decided}).json()

    assert body["undone"] == decided
    assert body["message"] == "Undid: circle on q1.jpg; the image keeps “cross”, given since"
    assert body["item"] is None  # not open again: the screen does not show it to be decided
    image = Image.objects.get(pk=queue[0].image_id)
    assert (image.final_label, image.claimed_by) == (cross, None)


def test_a_blind_decision_does_not_tell_in_the_strip_what_the_model_said(settings, reviewer, queue):
    from predictions.selectors.recent_decisions import review_recent_decisions
    from predictions.services.reviews import review_submit

    settings.REVIEW_BLIND = True
    settings.REVIEW_OVERLAP_SHARE = 1.0
    settings.REVIEW_OVERLAP_K = 2
    image = queue[0].image
    review_submit(image=image, reviewer=reviewer, label=Label.objects.get(name="star"), prediction=queue[0])

    (entry,) = review_recent_decisions(reviewer=reviewer)

    assert (entry["label"], entry["outcome"], entry["predicted"]) == ("star", "labelled", None)
