"""The image list as a gallery in a real browser (issue 17, item 10): tiles selected with the mouse and
the keyboard get a label through the "Set label…" action and its rules; the table fits a 1400 px window."""

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

LONG_NAME = "survey-2026/site_a/north-field/transect-07/camera-trap-12/" + "DSC_" + "0" * 40 + "505.jpg"


def with_demo_pictures(images, tmp_path) -> None:
    """Give the images the demo shapes' pictures and their thumbnails (the README's gallery screenshot)."""
    from django.core.files.storage import default_storage

    from images.thumbnails import thumbnails_create
    from ml.demo_data import generate

    for image, (path, _label) in zip(images, generate(tmp_path / "demo", count=len(images), seed=3, progress=False)):
        default_storage.delete(image.file.name)
        default_storage.save(image.file.name, path.open("rb"))
    thumbnails_create(image_ids=[image.pk for image in images])


def tile_names(page, selector: str = ".image-tile") -> list[str]:
    return page.eval_on_selector_all(selector, "tiles => tiles.map(tile => tile.title)")


def test_select_tiles_with_mouse_and_keys_and_set_a_label_then_back_to_the_table(
    live_server, new_page, reviewer, second_reviewer, prediction_factory, screenshots_dir, tmp_path
):
    from images.models import Image
    from predictions.models import Label, LabelOperation
    from predictions.services.reviews import review_submit

    # The demo shapes, in generate()'s order, each predicted as what it shows.
    predicted = {"a.jpg": ("circle", 0.91), "b.jpg": ("square", 0.84), "c.jpg": ("triangle", 0.77), "d.jpg": ("star", 0.95)}
    images = {
        name: prediction_factory(name=name, label=label, confidence=confidence).image
        for name, (label, confidence) in predicted.items()
    }
    names = list(images)
    reviewed = prediction_factory(name="reviewed.jpg", label="cross", confidence=0.62).image
    cross = Label.objects.get(name="cross")
    review_submit(image=reviewed, reviewer=second_reviewer, label=cross)
    with_demo_pictures([*images.values(), reviewed], tmp_path)

    page = new_page()
    sign_in(page, reviewer.username)
    changelist = reverse("admin:images_image_changelist")
    page.goto(changelist + "?o=2")  # by name: the tiles' order is the table's
    page.click("#image-list-views button[data-view=gallery]")
    assert page.locator("#result_list").is_hidden()
    shown = tile_names(page)
    assert shown == sorted([*names, "reviewed.jpg"])
    assert "circle · 91%" in page.inner_text(".image-tile[title='a.jpg']")
    assert page.locator(".image-tile img").count() == 5  # the thumbnails, large
    assert "cross" in page.inner_text(".image-tile[title='reviewed.jpg'] .image-tile-label.decided")

    # Two tiles with clicks, one with the keyboard (→ moves, Space selects), and the reviewed one too.
    page.click(".image-tile[title='a.jpg'] .image-tile-picture")
    page.click(".image-tile[title='b.jpg'] .image-tile-picture")
    page.keyboard.press("ArrowRight")
    page.keyboard.press(" ")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    page.keyboard.press(" ")
    selected = tile_names(page, ".image-tile[aria-selected=true]")
    assert selected == ["a.jpg", "b.jpg", "c.jpg", "reviewed.jpg"]
    assert page.inner_text("#image-gallery-count") == "4 selected"
    assert "4 of 5 selected" in page.inner_text(".actions")  # the admin's own counter: the rows' checkboxes
    page.screenshot(path=screenshots_dir / "gallery.png")

    square = page.locator("#image-gallery-labels button", has_text="square")
    key = square.get_attribute("data-key")
    assert key
    page.keyboard.press(key)
    page.wait_for_url(re.compile(re.escape(changelist)))
    message = page.inner_text("ul.messagelist")
    assert "Labelled 3 image(s) “square”; 1 skipped (1 already reviewed)" in message, message

    # Back in the gallery, as left; the labels are the decisions now.
    assert page.locator("#image-gallery").is_visible()
    assert "square" in page.inner_text(".image-tile[title='a.jpg'] .image-tile-label.decided")
    page.click("#image-list-views button[data-view=table]")
    assert page.locator("#result_list").is_visible() and page.locator("#image-gallery").is_hidden()
    finals = page.eval_on_selector_all(
        "#result_list tbody tr",
        "rows => Object.fromEntries(rows.map(row => [row.querySelector('.field-original_name').innerText.trim(),"
        " row.querySelector('.field-final_label, .field-label_seen').innerText.trim()]))",
    )
    assert finals == {"a.jpg": "square", "b.jpg": "square", "c.jpg": "square", "d.jpg": "-", "reviewed.jpg": "cross"}

    labelled = {image.original_name: image.final_label.name for image in Image.objects.exclude(final_label=None)}
    assert labelled == {"a.jpg": "square", "b.jpg": "square", "c.jpg": "square", "reviewed.jpg": "cross"}
    assert images["d.jpg"].pk not in {i.pk for i in Image.objects.exclude(final_label=None)}
    assert (LabelOperation.objects.get().created_by, LabelOperation.objects.get().kind) == (reviewer, "grid_set")


@pytest.mark.parametrize("navigation_sidebar", ["closed", "open"])
def test_the_table_fits_a_1400_px_window(live_server, new_page, lead, prediction_factory, navigation_sidebar):
    prediction_factory(name=LONG_NAME, label="triangle", confidence=0.55)
    prediction_factory(name="short.jpg", label="circle", confidence=0.99)

    page = new_page()
    if navigation_sidebar == "open":
        page.context.add_init_script("localStorage.setItem('django.admin.navSidebarIsOpen', 'true')")
    sign_in(page, lead.username)
    page.goto(reverse("admin:images_image_changelist"))
    page.click("#image-list-views button[data-view=table]")
    assert page.viewport_size["width"] == 1400
    fit = page.evaluate(
        """() => {
            const results = document.querySelector('#changelist .results');
            const table = document.getElementById('result_list');
            const clipped = [...table.querySelectorAll('th, td')].filter(cell => cell.scrollWidth > cell.clientWidth + 1);
            return {
                overflow: results.scrollWidth - results.clientWidth,
                pageOverflow: document.documentElement.scrollWidth - document.documentElement.clientWidth,
                clipped: clipped.map(cell => cell.className),
                widths: [...table.querySelectorAll('thead th')].map(cell => [cell.className, cell.offsetWidth]),
                results: results.clientWidth,
            };
        }"""
    )
    assert (fit["overflow"], fit["pageOverflow"], fit["clipped"]) == (0, 0, []), fit
