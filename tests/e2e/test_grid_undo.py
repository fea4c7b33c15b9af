"""A grid action in a real browser: "Set label…" leaves a reviewed image alone and says so,
and the Undo link in its message takes the whole change back."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from tests.e2e.test_workflow import sign_in
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


def test_set_label_skips_a_reviewed_image_and_undo_from_the_message(
    live_server, new_page, reviewer, second_reviewer, prediction_factory
):
    from images.models import Image
    from predictions.models import Label, LabelOperation
    from predictions.services.reviews import review_submit

    free = prediction_factory(name="free.jpg", label="circle").image
    taken = prediction_factory(name="taken.jpg", label="circle").image
    star, square = Label.objects.get(name="star"), Label.objects.get(name="square")
    review_submit(image=taken, reviewer=second_reviewer, label=star)

    page = new_page()
    sign_in(page, reviewer.username)
    changelist = reverse("admin:images_image_changelist")
    page.goto(changelist)
    for image in (free, taken):
        page.check(f"input.action-select[value='{image.pk}']")
    page.select_option("select[name=action]", "set_label")
    page.click("button[name=index]")

    page.check(f"input[name=label][value='{square.pk}']")
    page.click("input[type=submit][value='Set label']")
    page.wait_for_url(re.compile(re.escape(changelist) + "$"))
    message = page.inner_text("ul.messagelist")
    assert "Labelled 1 image(s) “square”; 1 skipped (1 already reviewed)" in message, message
    assert Image.objects.get(pk=free.pk).final_label == square
    assert Image.objects.get(pk=taken.pk).final_label == star

    page.click("ul.messagelist a.undo-operation")
    page.click("input[type=submit][value='Yes, undo it']")
    page.wait_for_url(re.compile(re.escape(changelist) + "$"))

    assert "1 image(s) have their previous label back" in page.inner_text("ul.messagelist")
    assert Image.objects.get(pk=free.pk).final_label is None
    assert Image.objects.get(pk=taken.pk).final_label == star
    assert LabelOperation.objects.get().undone_by == reviewer
