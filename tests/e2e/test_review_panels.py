"""The review screen's panels beside the image in a real browser (review_panels.js): the
model's probabilities and "more like this" show for the current image, and follow it when
the screen moves on."""

from __future__ import annotations

import numpy as np
import pytest
from django.urls import reverse

from tests.e2e.test_review_feedback import wait_for_text
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

SIMILAR = "#review-similar [data-field=strip] a"


def with_embedding(prediction, vector: list[float]) -> None:
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
