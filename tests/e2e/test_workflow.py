"""The whole workflow in a real browser: sign in, upload, wait for the cluster's
predictions, review with the keyboard, export CSV; and what a reviewer may not open.

Along the way it takes the README's screenshots (docs/*.png with SCREENSHOTS_DIR=docs,
`make screenshots`).
"""

from __future__ import annotations

import csv
import io
import json
import re
import zipfile
from pathlib import Path

import pytest
from django.contrib import admin
from django.urls import reverse
from PIL import Image as PILImage

from tests.integration.conftest import wait_for

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.integration,
    # serialized_rollback: the flush after a transactional test would otherwise
    # drop the role groups the data migration created.
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]

PASSWORD = "pw-for-tests-only"  # tests/conftest.py's users
MODEL_VERSION_NAME = "demo-v1"
LOOSE_IMAGES = 6
ZIPPED_IMAGES = 3
BAD_FILE = "broken.jpg"
PREDICTION_TIMEOUT_SECONDS = 120
# Demo photos are camera-sized; small copies keep uploads, thumbnails and predictions quick.
IMAGE_SIDE = 480


@pytest.fixture(scope="module")
def demo_photos(tmp_path_factory) -> list[tuple[str, bytes]]:
    """(file name, JPEG bytes) of ml.demo_data's shapes, one class after another; the name starts with the class."""
    from ml.demo_data import generate

    out = tmp_path_factory.mktemp("demo-photos")
    photos = []
    for path, _label in generate(out, count=LOOSE_IMAGES + ZIPPED_IMAGES, seed=7, progress=False):
        with PILImage.open(path) as image:
            image.thumbnail((IMAGE_SIDE, IMAGE_SIDE))
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=88)
        photos.append((path.name, buffer.getvalue()))
    return photos


@pytest.fixture
def model_version(model_version_factory, screenshots_checkpoint, lead):
    """The active version: the suite's tiny checkpoint, or SCREENSHOTS_CHECKPOINT registered as `make run` does."""
    if screenshots_checkpoint is None:
        return model_version_factory(MODEL_VERSION_NAME)
    from ml.demo_data import CLASS_NAMES
    from predictions.models import Label
    from predictions.services.model_versions import model_version_activate, model_version_register

    for order, name in enumerate(CLASS_NAMES):
        Label.objects.get_or_create(name=name, defaults={"order": order, "key": str(order + 1)})
    version = model_version_register(
        name=MODEL_VERSION_NAME, checkpoint_path=screenshots_checkpoint, user=lead, validate_now=True
    )
    model_version_activate(version=version, user=lead, predict_missing=False)
    return version


def true_label(image_name: str) -> str:
    return image_name.split("_", 1)[0]


def zip_of(files: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files:
            archive.writestr(name, data)
    return buffer.getvalue()


def file_payload(name: str, data: bytes, mime_type: str) -> dict:
    return {"name": name, "mimeType": mime_type, "buffer": data}


def sign_in(page, username: str) -> None:
    page.goto(reverse("admin:login") + "?next=" + reverse("admin:index"))
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("#login-form [type=submit]")
    page.wait_for_url(re.compile(re.escape(reverse("admin:index")) + "$"))


def changelist_rows(page) -> dict[str, dict]:
    """The image changelist as {file name: {"predicted": ..., "final": ..., "thumbnail": bool}}."""
    return page.eval_on_selector_all(
        "#result_list tbody tr",
        """rows => Object.fromEntries(rows.map(row => [
            row.querySelector("td.field-original_name, th.field-original_name").innerText.trim(),
            {
                predicted: row.querySelector(".field-predicted_label").innerText.trim(),
                final: row.querySelector(".field-final_label").innerText.trim(),
                thumbnail: row.querySelector(".field-thumbnail_tag img") !== null,
            },
        ]))""",
    )


def screenshot_down_to(page, selector: str, *, path: Path, margin: int = 24) -> None:
    """The window's width, from the top down to `selector` (a short form leaves the rest of the window blank)."""
    box = page.locator(selector).bounding_box()
    height = min(box["y"] + box["height"] + margin, page.viewport_size["height"])
    page.screenshot(path=path, clip={"x": 0, "y": 0, "width": page.viewport_size["width"], "height": height})


def wait_until_image_shown(page) -> None:
    page.wait_for_function(
        "() => { const image = document.getElementById('review-image');"
        " return !image.hidden && image.complete && image.naturalWidth > 0; }"
    )


def test_upload_predict_review_export_in_the_browser(
    qcluster, live_server, new_page, screenshots_dir, model_version, lead, reviewer, demo_photos
):
    from images.models import Image
    from predictions.models import Prediction, Review
    from predictions.resources import ImageLabelResource

    page = new_page()
    sign_in(page, lead.username)

    # --- upload: loose photos and a zip with one bad file, through the admin form
    loose, zipped = demo_photos[:LOOSE_IMAGES], demo_photos[LOOSE_IMAGES:]
    archive = zip_of([*zipped, (BAD_FILE, b"these bytes are not a picture")])
    page.goto(reverse("admin:images_image_upload"))
    page.set_input_files(
        "#id_files",
        [file_payload(name, data, "image/jpeg") for name, data in loose]
        + [file_payload("more-shapes.zip", archive, "application/zip")],
    )
    page.fill("#id_name", "Shapes from the field")
    page.locator("#id_name").blur()
    screenshot_down_to(page, ".submit-row", path=screenshots_dir / "upload.png")
    page.click("input[name=_upload]")

    page.wait_for_url(re.compile(r"/admin/images/uploadbatch/\d+/"))
    summary = page.inner_text("ul.messagelist")
    assert f"{LOOSE_IMAGES + ZIPPED_IMAGES} accepted, 0 duplicate(s), 1 rejected" in summary
    rejected = page.inner_text(".field-rejected")
    assert re.search(rf"more-shapes\.zip\W+{re.escape(BAD_FILE)}\s+\S", rejected), rejected  # named, with a reason

    # --- the cluster predicts; the changelist shows every row's label and thumbnail
    names = sorted(name for name, _ in demo_photos)
    page.goto(reverse("admin:images_image_changelist"))

    def every_row_predicted():
        """every uploaded image's row to show a predicted label and a thumbnail"""
        page.reload()
        rows = changelist_rows(page)
        done = sorted(rows) == names and all(row["predicted"] != "–" and row["thumbnail"] for row in rows.values())
        return rows if done else None

    rows = wait_for(every_row_predicted, timeout=PREDICTION_TIMEOUT_SECONDS, interval=1, cluster=qcluster)
    predicted = {
        p.image.original_name: p.label.name
        for p in Prediction.objects.filter(model_version=model_version).select_related("image", "label")
    }
    assert {name: row["predicted"] for name, row in rows.items()} == predicted

    # --- review five images with the keyboard only, one of them corrected after an undo
    page.goto(reverse("admin:predictions_review_screen"))
    wait_until_image_shown(page)
    config = json.loads(page.text_content("#review-config"))
    key_of = {label["name"]: label["key"] for label in config["labels"]}
    name = page.locator("#review-name")
    expect_left = len(names)
    assert page.inner_text("#review-left") == str(expect_left)

    decide_url = reverse("admin:predictions_review_decide")

    def decide(key: str) -> str:
        """Press `key` on the image shown; return that image's name once it is recorded and the next one shown."""
        shown = name.inner_text()
        # One decision on its way at a time, as at a person's pace, so each
        # answer's "reviewed today" count is the latest.
        with page.expect_response(lambda response: decide_url in response.url) as answer:
            page.keyboard.press(key)
        assert answer.value.ok, answer.value.text()
        page.wait_for_function(
            "shown => { const now = document.getElementById('review-name').textContent;"
            " return now !== '' && now !== shown; }",
            arg=shown,
        )
        return shown

    final = {}
    first = decide(key_of[true_label(name.inner_text())])
    final[first] = true_label(first)

    model_said = page.inner_text("#review-predicted")
    confirmed = decide("Enter")
    final[confirmed] = model_said

    corrected = name.inner_text()
    wrong = next(label for label in key_of if label != true_label(corrected))
    decide(key_of[wrong])
    page.keyboard.press("z")
    page.wait_for_function(
        "([name, message]) => document.getElementById('review-name').textContent === name"
        " && document.getElementById('review-message').textContent === message",
        arg=[corrected, f"Undid: {wrong} on {corrected}"],
    )
    decide(key_of[true_label(corrected)])
    final[corrected] = true_label(corrected)

    for _ in range(2):
        shown = decide(key_of[true_label(name.inner_text())])
        final[shown] = true_label(shown)

    assert len(final) == 5
    page.wait_for_function("() => document.getElementById('review-today').textContent === '5'")
    assert page.inner_text("#review-left") == str(expect_left - 5)
    wait_until_image_shown(page)
    page.screenshot(path=screenshots_dir / "review.png")

    reviews = Review.objects.filter(reviewer=lead).select_related("image", "label")
    live = {review.image.original_name: review.label.name for review in reviews if review.undone_at is None}
    undone = [(review.image.original_name, review.label.name) for review in reviews if review.undone_at is not None]
    assert live == final
    assert undone == [(corrected, wrong)]
    current = {image.original_name: image.final_label.name for image in Image.objects.exclude(final_label=None)}
    assert current == final

    # --- the changelist with reviews, and the version's metrics against them
    page.goto(reverse("admin:images_image_changelist"))
    rows = changelist_rows(page)
    assert {name: row["final"] for name, row in rows.items()} == {
        name: final.get(name, admin.site.empty_value_display) for name in names
    }
    page.screenshot(path=screenshots_dir / "changelist.png", full_page=True)

    page.goto(reverse("admin:predictions_modelversion_metrics", args=[model_version.pk]))
    facts = page.inner_text("#content-main .module table")
    assert re.search(r"Reviewed images in the label space\s+5\b", facts), facts
    page.screenshot(path=screenshots_dir / "metrics.png", full_page=True)

    # --- export CSV through import-export's export page
    page.goto(reverse("admin:images_image_changelist"))
    page.click("a.export_link")
    page.wait_for_url(re.compile(re.escape(reverse("admin:images_image_export"))))
    # Plain CSV is chosen to begin with; "CSV for Excel" (with a byte order mark) is the other choice.
    assert page.locator("select[name=format]").input_value() == "0"
    assert "Excel" in page.inner_text("select[name=format]")
    page.select_option("select[name=resource]", label=ImageLabelResource.Meta.name)
    with page.expect_download() as download_info:
        page.click("#content form input[type=submit]")
    download = download_info.value
    assert download.suggested_filename.endswith(".csv")
    exported = list(csv.DictReader(io.StringIO(Path(download.path()).read_text(encoding="utf-8-sig"))))
    assert sorted(row["original_name"] for row in exported) == names
    for row in exported:
        assert row["predicted_label"] == predicted[row["original_name"]]
        assert row["model_version"] == MODEL_VERSION_NAME
        assert row["final_label"] == final.get(row["original_name"], "")
        assert row["reviewed_by"] == (lead.username if row["original_name"] in final else "")

    # --- a reviewer reviews, but neither exports nor sees model versions
    reviewer_page = new_page()
    sign_in(reviewer_page, reviewer.username)
    reviewer_page.goto(reverse("admin:images_image_changelist"))
    assert reviewer_page.locator("#result_list tbody tr").count() == len(names)
    assert reviewer_page.locator("a.export_link").count() == 0
    for url in (
        reverse("admin:images_image_export"),
        reverse("admin:predictions_modelversion_changelist"),
        reverse("admin:predictions_modelversion_change", args=[model_version.pk]),
        reverse("admin:predictions_modelversion_metrics", args=[model_version.pk]),
    ):
        assert reviewer_page.goto(url).status == 403, url
