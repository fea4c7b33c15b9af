"""The review screen's feedback in a real browser: the strip of recent decisions and the
"reviewed today" count follow each key press, and undo (Z, or a click on the strip) still
works after a reload, saying what it took back; an undo the server refuses leaves the strip as it was. The
panels beside the image (review_panels.js): the model's probabilities and "more like this" follow the current
image."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from tests.e2e.test_workflow import sign_in, wait_until_image_shown
from tests.predictions.conftest import (  # noqa: F401 (fixtures)
    image_factory,
    prediction_factory,
    stub_model_version_factory,
)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.integration,
    # serialized_rollback: the flush after a transactional test would otherwise
    # drop the role groups the data migration created.
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]

STRIP = "#review-recent .review-recent-entry"
# The strip after q1 corrected to square and q2 confirmed as circle, newest first.
BOTH = [("q2.jpg", "✓ circle"), ("q1.jpg", "✎ square")]


def strip(page) -> list[dict]:
    return page.eval_on_selector_all(
        STRIP,
        """entries => entries.map(entry => ({
            name: entry.querySelector("img").alt,
            caption: entry.querySelector("span").textContent,
            review: entry.dataset.review || null,
            thumbnail: entry.querySelector("img").complete && entry.querySelector("img").naturalWidth > 0,
        }))""",
    )


def wait_for_text(page, selector: str, text: str) -> None:
    page.wait_for_function(
        "([selector, text]) => document.querySelector(selector).textContent.trim() === text", arg=[selector, text]
    )


def test_strip_and_count_follow_each_decision_and_undo_survives_a_reload(
    live_server, new_page, reviewer, prediction_factory
):
    from images.models import Image
    from predictions.models import Review

    for n, confidence in enumerate([0.30, 0.45, 0.60, 0.75], start=1):
        prediction_factory(name=f"q{n}.jpg", label="circle", confidence=confidence)

    page = new_page()
    sign_in(page, reviewer.username)
    page.goto(reverse("admin:predictions_review_screen"))
    wait_until_image_shown(page)
    assert page.inner_text("#review-name") == "q1.jpg"
    assert page.inner_text("#review-today") == "0"
    assert page.locator("#review-recent").is_hidden()

    # --- 2 (square) on q1, its answer held: the strip and the count already show it
    decide_url = reverse("admin:predictions_review_decide")
    held = []
    page.route(f"**{decide_url}*", lambda route: held.append(route))
    page.keyboard.press("2")
    wait_for_text(page, "#review-today", "1")
    wait_for_text(page, "#review-name", "q2.jpg")
    assert [(entry["name"], entry["caption"]) for entry in strip(page)] == [("q1.jpg", "✎ square")]
    # Playwright hands the held request to its handler only while it is being called.
    for _ in range(100):
        if held:
            break
        page.wait_for_timeout(100)
    assert held, "the screen never posted the decision"
    with page.expect_response(lambda response: decide_url in response.url) as answer:
        held[0].continue_()
    assert answer.value.ok, answer.value.text()
    page.unroute(f"**{decide_url}*")
    page.wait_for_function(f"() => document.querySelector('{STRIP}').dataset.review")

    # --- Enter (confirm circle) on q2
    with page.expect_response(lambda response: decide_url in response.url) as answer:
        page.keyboard.press("Enter")
    assert answer.value.ok, answer.value.text()
    wait_for_text(page, "#review-name", "q3.jpg")
    page.wait_for_function(f"() => [...document.querySelectorAll('{STRIP}')].every(entry => entry.dataset.review)")
    assert [(entry["name"], entry["caption"]) for entry in strip(page)] == BOTH
    assert page.inner_text("#review-today") == "2"

    # --- a reload: the strip and the count come from the server
    page.reload()
    wait_until_image_shown(page)
    page.wait_for_function(f"() => [...document.querySelectorAll('{STRIP} img')].every(img => img.complete)")
    after_reload = strip(page)
    assert [(entry["name"], entry["caption"]) for entry in after_reload] == BOTH
    assert all(entry["thumbnail"] for entry in after_reload)
    assert page.inner_text("#review-today") == "2"

    # --- Z takes back the latest decision, says which, and shows its image again
    page.keyboard.press("z")
    wait_for_text(page, "#review-message", "Undid: circle on q2.jpg")
    wait_for_text(page, "#review-name", "q2.jpg")
    wait_for_text(page, "#review-today", "1")
    wait_until_image_shown(page)
    assert [entry["name"] for entry in strip(page)] == ["q1.jpg"]

    # --- a click on the strip takes back that decision and shows its image
    page.click(STRIP)
    wait_for_text(page, "#review-message", "Undid: square on q1.jpg")
    wait_for_text(page, "#review-name", "q1.jpg")
    wait_for_text(page, "#review-today", "0")
    wait_until_image_shown(page)
    assert page.locator("#review-recent").is_hidden()

    reviews = Review.objects.filter(reviewer=reviewer)
    assert reviews.count() == 2 and not reviews.filter(undone_at__isnull=True).exists()
    assert not Image.objects.exclude(final_label=None).exists()
    # Both images are back on this reviewer's screen, claimed for them.
    claimed = set(Image.objects.filter(claimed_by=reviewer).values_list("original_name", flat=True))
    assert {"q1.jpg", "q2.jpg"} <= claimed


def test_a_refused_undo_keeps_the_decision_in_the_strip(live_server, new_page, reviewer, prediction_factory):
    from predictions.services.quality import images_gold_set

    for n, confidence in enumerate([0.30, 0.45, 0.60], start=1):
        prediction_factory(name=f"q{n}.jpg", label="circle", confidence=confidence)
    page = new_page()
    sign_in(page, reviewer.username)
    page.goto(reverse("admin:predictions_review_screen"))
    wait_until_image_shown(page)
    decide_url = reverse("admin:predictions_review_decide")
    for then in ("q2.jpg", "q3.jpg"):  # q1, then q2 confirmed
        with page.expect_response(lambda response: decide_url in response.url):
            page.keyboard.press("Enter")
        wait_for_text(page, "#review-name", then)
    page.wait_for_function(f"() => [...document.querySelectorAll('{STRIP}')].every(entry => entry.dataset.review)")
    assert [entry["name"] for entry in strip(page)] == ["q2.jpg", "q1.jpg"]

    # A Lead makes q2's label the gold reference: taking it back is theirs now, and refused here.
    from images.models import Image

    images_gold_set(image_ids=[Image.objects.get(original_name="q2.jpg").pk], gold=True)
    page.keyboard.press("z")
    page.wait_for_function("() => document.getElementById('review-message').classList.contains('error')")
    # The decision stands, so its entry stays where it was, and the next Z is still about it.
    assert [entry["name"] for entry in strip(page)] == ["q2.jpg", "q1.jpg"]
    assert page.inner_text("#review-name") == "q3.jpg"
    assert page.inner_text("#review-today") == "2"


# --- the panels beside the image -------------------------------------------------------------

SIMILAR = "#review-similar [data-field=strip] a"


def with_embedding(prediction, vector: list[float]) -> None:
    import numpy as np

    from ml.features import embedding_to_bytes

    prediction.embedding = embedding_to_bytes(np.array(vector, dtype=np.float16))
    prediction.save(update_fields=["embedding"])


def test_probabilities_and_more_like_this_follow_the_current_image(live_server, new_page, reviewer, prediction_factory):
    from predictions.selectors.similar import clear_cache

    # Served least confident first: q1, then q2. q1 and q2 look alike, q3 looks like neither.
    q1 = prediction_factory(name="q1.jpg", label="circle", confidence=0.30)
    q2 = prediction_factory(name="q2.jpg", label="square", confidence=0.45)
    q3 = prediction_factory(name="q3.jpg", label="star", confidence=0.90)
    with_embedding(q1, [1.0, 0.0, 0.1, 0.0])
    with_embedding(q2, [0.9, 0.1, 0.2, 0.0])
    with_embedding(q3, [0.0, 1.0, 0.0, 0.0])
    clear_cache()  # the live server runs in this process: no vectors of an earlier test

    page = new_page()
    sign_in(page, reviewer.username)
    page.goto(reverse("admin:predictions_review_screen"))
    wait_until_image_shown(page)
    assert page.inner_text("#review-name") == "q1.jpg"

    bars = page.eval_on_selector_all(
        "#review-bars li", "rows => rows.map(row => [row.classList.contains('top'), row.innerText.replace(/\\s+/g, ' ')])"
    )
    assert bars[0] == [True, "circle 30.0%"], bars
    assert [top for top, _ in bars].count(True) == 1

    page.wait_for_selector(SIMILAR)
    titles = page.eval_on_selector_all(SIMILAR, "links => links.map(link => link.title)")
    assert titles[0].startswith("q2.jpg ("), titles  # the look-alike first, then the rest
    # Under each thumbnail its similarity, whole, whatever the length of the label above it.
    similarities = page.eval_on_selector_all(
        SIMILAR, "links => links.map(link => [link.lastElementChild.textContent, link.lastElementChild.scrollWidth <= link.lastElementChild.clientWidth])"
    )
    assert all(re.fullmatch(r"-?[01]\.\d\d", text) and whole for text, whole in similarities), similarities
    assert not any(title.startswith("q1.jpg") for title in titles)

    # Decided: the screen moves to q2, and both panels are q2's.
    page.keyboard.press("2")
    wait_for_text(page, "#review-name", "q2.jpg")
    page.wait_for_function(
        "() => { const top = document.querySelector('#review-bars li.top'); return top && top.innerText.includes('square'); }"
    )
    page.wait_for_function(
        "(selector) => { const first = document.querySelector(selector); return first && first.title.startsWith('q1.jpg ('); }",
        arg=SIMILAR,
    )
    titles = page.eval_on_selector_all(SIMILAR, "links => links.map(link => link.title)")
    assert not any(title.startswith("q2.jpg") for title in titles), titles
