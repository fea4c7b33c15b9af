"""Reviewer quality in a real browser: a gold image served on the review screen like any other
(decided, its label unchanged), a Lead's adjudication of a disagreement, and the statistics page."""

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


def key_of(page) -> dict[str, str]:
    import json

    return {label["name"]: label["key"] for label in json.loads(page.text_content("#review-config"))["labels"]}


def test_a_gold_image_is_served_and_decided_without_changing_its_label(
    live_server, new_page, settings, lead, reviewer, prediction_factory
):
    from images.models import Image
    from predictions.models import Label, Review
    from predictions.services.quality import images_gold_set
    from predictions.services.reviews import review_submit

    settings.REVIEW_GOLD_RATE = 1.0  # every place the draw can give to gold does
    gold = prediction_factory(name="gold.jpg", label="circle", confidence=0.6).image
    review_submit(image=gold, reviewer=lead, label=Label.objects.get(name="square"))
    images_gold_set(image_ids=[gold.pk], gold=True)
    for n in range(3):
        prediction_factory(name=f"open{n}.jpg", label="triangle", confidence=0.3 + 0.1 * n)

    page = new_page()
    sign_in(page, reviewer.username)
    page.goto(reverse("admin:predictions_review_screen"))
    keys = key_of(page)
    decide_url = reverse("admin:predictions_review_decide")
    for _ in range(4):
        wait_until_image_shown(page)
        shown = page.inner_text("#review-name")
        if shown == "gold.jpg":
            # Shown as any open image: the model's suggestion, nothing about gold or its label.
            assert page.inner_text("#review-predicted") == "circle"
            assert "gold" not in page.inner_text(".review-panel").replace("gold.jpg", "").lower()
        with page.expect_response(lambda response: decide_url in response.url) as answer:
            page.keyboard.press(keys["star"])
        assert answer.value.ok, answer.value.text()
        if shown == "gold.jpg":
            break
    else:
        pytest.fail("the gold image was never served")

    check = Review.objects.get(image=gold, reviewer=reviewer)
    assert (check.queue_order, check.label.name) == ("gold", "star")
    gold.refresh_from_db()
    assert (gold.final_label.name, gold.reviewed_by, gold.is_gold) == ("square", lead, True)

    # The Lead sees it in the image's history as a gold check, and the reviewer's gold accuracy.
    lead_page = new_page()
    sign_in(lead_page, lead.username)
    lead_page.goto(reverse("admin:images_image_change", args=[gold.pk]))
    assert "gold check: the label stays" in lead_page.inner_text(".field-review_history")
    lead_page.goto(reverse("admin:predictions_review_stats"))
    gold_cell = lead_page.inner_text("tr[data-reviewer=reviewer] td.gold-accuracy")
    assert re.match(r"0%\s*\(0/1; 0\.00–0\.9\d\)", gold_cell), gold_cell
    assert Image.objects.get(pk=gold.pk).final_label.name == "square"


def test_a_lead_adjudicates_a_disagreement(
    live_server, new_page, settings, lead, reviewer, second_reviewer, prediction_factory, screenshots_dir
):
    from images.models import Image
    from predictions.models import Label, Review
    from predictions.selectors.versions import model_version_active
    from predictions.services.reviews import review_decide

    settings.REVIEW_GOLD_RATE = 0.0
    settings.REVIEW_OVERLAP_SHARE, settings.REVIEW_OVERLAP_K = 1.0, 2
    split = prediction_factory(name="split.jpg", label="circle").image
    version = model_version_active()
    for user, label in ((reviewer, "square"), (second_reviewer, "star")):
        review_decide(reviewer=user, image_id=split.pk, label_id=Label.objects.get(name=label).pk, model_version=version)
    assert Image.objects.get(pk=split.pk).label_source == "adjudication"

    # A reviewer is not offered the adjudication order.
    reviewer_page = new_page()
    sign_in(reviewer_page, reviewer.username)
    reviewer_page.goto(reverse("admin:predictions_review_screen"))
    assert reviewer_page.locator("#id_order option[value=adjudication]").count() == 0

    page = new_page()
    sign_in(page, lead.username)
    page.goto(reverse("admin:predictions_review_screen"))
    page.select_option("#id_order", "adjudication")
    page.click(".review-filters input[type=submit]")
    page.wait_for_url(re.compile(r"order=adjudication"))
    wait_until_image_shown(page)
    assert page.inner_text("#review-name") == "split.jpg"
    votes = page.inner_text("#review-votes")
    assert "square ×1" in votes and "star ×1" in votes, votes
    page.screenshot(path=screenshots_dir / "adjudication.png")
    with page.expect_response(lambda response: reverse("admin:predictions_review_decide") in response.url) as answer:
        page.keyboard.press(key_of(page)["star"])
    assert answer.value.ok, answer.value.text()

    split.refresh_from_db()
    assert (split.final_label.name, split.reviewed_by) == ("star", lead)
    orders = list(Review.objects.filter(image=split).order_by("created_at", "id").values_list("queue_order", flat=True))
    assert orders == ["overlap", "overlap", "adjudication"]

    page.goto(reverse("admin:predictions_review_stats"))
    assert "reviewer & reviewer2" in page.inner_text("#pair-kappa")
    assert "0 images waiting for adjudication" in page.inner_text("#content-main")
    page.screenshot(path=screenshots_dir / "reviewer-stats.png", full_page=True)
