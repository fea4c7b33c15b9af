"""Uploads in a real browser (issue 17, items 5 and 6).

- Dropped files go as several requests (the page's part size made small here)
  into ONE upload batch and ONE prediction job; a request whose answer is lost
  is sent again and stores nothing twice; the upload's bar reaches 100%.
- A folder keeps its paths as the images' names; a dropped folder is walked
  through every slice its reader gives, hidden files and folders left out.
- While a real cluster predicts an upload, the batch page's bar moves to
  done/total by itself, without a reload.
"""

from __future__ import annotations

import base64
import io
import random
import re

import pytest
from django.urls import reverse

from tests.e2e.test_workflow import sign_in

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.integration,
    # serialized_rollback: the flush after a transactional test would otherwise
    # drop the role groups the data migration created.
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]

PREDICTION_TIMEOUT_SECONDS = 120

DROP_FILES_JS = """
(files) => {
    const transfer = new DataTransfer();
    for (const {name, b64} of files) {
        const bytes = Uint8Array.from(atob(b64), (char) => char.charCodeAt(0));
        transfer.items.add(new File([bytes], name, {type: "image/jpeg"}));
    }
    const zone = document.getElementById("upload-drop");
    for (const type of ["dragenter", "dragover", "drop"]) {
        zone.dispatchEvent(new DragEvent(type, {dataTransfer: transfer, bubbles: true, cancelable: true}));
    }
}
"""


def noise_jpeg(seed: int, side: int = 64) -> bytes:
    """A JPEG of random pixels: unlike block patterns, no two are near-duplicates of each other."""
    from PIL import Image as PILImage

    pixels = random.Random(seed).randbytes(side * side * 3)
    buffer = io.BytesIO()
    PILImage.frombytes("RGB", (side, side), pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def drop_files(page, files: list[tuple[str, bytes]]) -> None:
    page.evaluate(DROP_FILES_JS, [{"name": name, "b64": base64.b64encode(data).decode()} for name, data in files])


def test_dropped_files_go_in_two_requests_into_one_batch_and_one_job_and_a_lost_answer_is_retried(
    cluster_name, live_server, new_page, model_version_factory, lead, screenshots_dir
):
    from images.models import Image, UploadBatch
    from predictions.models import PredictionJob

    model_version_factory("upload-v1")
    page = new_page()
    sign_in(page, lead.username)
    page.goto(reverse("admin:images_image_upload"))
    part_url = reverse("admin:images_image_upload_part")
    finish_url = re.compile(r"/admin/images/image/upload/\d+/finish/$")

    # Two files a request: three files make two requests.
    page.eval_on_selector("#upload_form", "form => { form.dataset.partFiles = '2'; }")
    files = [(f"shot-{number}.jpg", noise_jpeg(number)) for number in range(3)]
    drop_files(page, files)
    assert page.locator("#upload-files tbody tr").count() == 3
    page.fill("#id_name", "Dropped")

    # The second request reaches the server, which stores its file; its answer is lost on the way back.
    calls = []

    def lose_the_second_answer(route):
        calls.append(route.request.url)
        if len(calls) == 2:
            route.fetch()
            route.abort("connectionreset")
        else:
            route.continue_()

    page.route(f"**{part_url}", lose_the_second_answer)
    held = []
    page.route(finish_url, lambda route: held.append(route))  # held until the page is looked at

    page.click("input[name=_upload]")
    page.wait_for_function("() => document.getElementById('upload_form').dataset.state === 'finishing'")
    # Route handlers run only while Playwright is called (its sync API), not during a sleep:
    # wait through page.wait_for_timeout so the held request can reach its handler.
    for _ in range(60):
        if held:
            break
        page.wait_for_timeout(500)
    assert held, "the page never asked to finish the upload"

    assert len(calls) == 3  # two parts, the second sent twice
    assert page.eval_on_selector("#upload-total-bar", "bar => bar.value") == 1
    bars = page.eval_on_selector_all("#upload-files tbody progress", "bars => bars.map(bar => bar.value)")
    assert bars == [1, 1, 1]
    outcomes = page.eval_on_selector_all(
        "#upload-files tbody tr", "rows => rows.map(row => row.querySelector('.upload-file-outcome').innerText)"
    )
    assert outcomes == ["stored", "stored", "already stored in this upload"]
    assert "3 of 3 file(s) sent" in page.inner_text("#upload-total-text")
    assert "this upload: 3 stored, 0 duplicate(s), 0 rejected" in page.inner_text("#upload-total-text")
    page.screenshot(path=screenshots_dir / "upload-progress.png", full_page=True)

    held[0].continue_()
    page.wait_for_url(re.compile(r"/admin/images/uploadbatch/\d+/change/$"))
    assert "Dropped: 3 accepted, 0 duplicate(s), 0 rejected." in page.inner_text("ul.messagelist")

    batch = UploadBatch.objects.get()
    assert (batch.accepted_count, batch.duplicate_count, batch.rejected_count) == (3, 0, 0)
    assert sorted(Image.objects.filter(batch=batch).values_list("original_name", flat=True)) == [
        name for name, _ in files
    ]
    job = PredictionJob.objects.get()
    assert (job.batch_id, job.total) == (batch.pk, 3)


def test_a_chosen_folder_keeps_its_paths_as_the_images_names(cluster_name, live_server, new_page, lead, tmp_path):
    from images.models import Image

    for number, folder in enumerate(["site_a", "site_b"]):
        (tmp_path / "survey" / folder).mkdir(parents=True)
        (tmp_path / "survey" / folder / "DSC_505.jpg").write_bytes(noise_jpeg(number + 10))
    (tmp_path / "survey" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")

    page = new_page()
    sign_in(page, lead.username)
    page.goto(reverse("admin:images_image_upload"))
    page.set_input_files("#upload-folder-input", tmp_path / "survey")
    names = page.eval_on_selector_all("#upload-files tbody .upload-file-name", "cells => cells.map(c => c.innerText)")
    assert sorted(names) == ["survey/site_a/DSC_505.jpg", "survey/site_b/DSC_505.jpg"]

    page.click("input[name=_upload]")
    page.wait_for_url(re.compile(r"/admin/images/uploadbatch/\d+/change/$"))
    assert sorted(Image.objects.values_list("original_name", flat=True)) == names


# A dropped folder as the browser hands it over (FileSystemEntry objects): a
# DragEvent cannot carry such a folder, so upload_sources.js is called with them.
WALK_DROPPED_FOLDER_JS = """
async () => {
    const file = (fullPath) => ({
        isFile: true, isDirectory: false, fullPath,
        file: (resolve) => resolve(new File(["x"], fullPath.split("/").pop())),
    });
    // readEntries answers a slice at a time, then []: the walk must keep asking.
    const folder = (fullPath, slices) => ({
        isFile: false, isDirectory: true, fullPath,
        createReader: () => {
            const left = [...slices, []];
            return {readEntries: (resolve) => setTimeout(() => resolve(left.shift()), 0)};
        },
    });
    const survey = folder("/survey", [
        [folder("/survey/site_a", [[file("/survey/site_a/DSC_1.jpg")], [file("/survey/site_a/DSC_2.jpg")]])],
        [file("/survey/.DS_Store"), folder("/survey/.thumbs", [[file("/survey/.thumbs/t.jpg")]])],
        [file("/survey/top.jpg")],
    ]);
    const dropped = [survey, file("/loose.jpg")];
    const found = await uploadSources.fromDrop({
        items: dropped.map((entry) => ({kind: "file", webkitGetAsEntry: () => entry})),
        files: [],
    });
    return found.map(({file, path}) => [file.name, path]);
}
"""


def test_a_dropped_folder_is_walked_slice_by_slice_without_hidden_files(live_server, new_page, lead):
    page = new_page()
    sign_in(page, lead.username)
    page.goto(reverse("admin:images_image_upload"))
    assert page.evaluate(WALK_DROPPED_FOLDER_JS) == [
        ["DSC_1.jpg", "survey/site_a/DSC_1.jpg"],
        ["DSC_2.jpg", "survey/site_a/DSC_2.jpg"],
        ["top.jpg", "survey/top.jpg"],
        ["loose.jpg", ""],
    ]


def test_batch_job_and_index_pages_follow_a_real_cluster_without_a_reload(
    cluster_name, start_qcluster, live_server, new_page, model_version_factory, lead
):
    from predictions.models import PredictionJob
    from tests.integration.conftest import upload_images

    model_version_factory("live-v1")
    count = 6
    batch = upload_images(user=lead, count=count, name="watched")
    job = PredictionJob.objects.get(batch=batch)
    assert (job.status, job.done) == (PredictionJob.Status.QUEUED, 0)  # no cluster yet

    page = new_page()
    sign_in(page, lead.username)
    pages = [  # (where, what shows the progress there)
        (reverse("admin:images_uploadbatch_change", args=[batch.pk]), ".field-progress .readonly"),
        (reverse("admin:predictions_predictionjob_change", args=[job.pk]), ".field-progress .readonly"),
        (reverse("admin:index"), ".dashboard-predicted"),
    ]
    opened = []
    for url, selector in pages:
        tab = page if not opened else page.context.new_page()
        tab.goto(url)
        assert f"0 / {count}" in tab.inner_text(selector)
        tab.evaluate("() => { window.notReloaded = true; }")
        opened.append((tab, selector))

    cluster = start_qcluster()
    for tab, selector in opened:
        tab.wait_for_function(
            "([selector, text]) => document.querySelector(selector).innerText.includes(text)",
            arg=[selector, f"{count} / {count}"],
            timeout=PREDICTION_TIMEOUT_SECONDS * 1000,
        )
        assert tab.evaluate("() => window.notReloaded") is True, "the page was reloaded"
        tab.wait_for_function("() => document.documentElement.dataset.liveProgress === 'finished'")
        cluster.assert_alive()
    job_tab = opened[1][0]
    assert job_tab.inner_text(".field-status .readonly") == "Done"
    assert job_tab.eval_on_selector(".field-progress progress", "bar => [bar.value, bar.max]") == [count, count]
