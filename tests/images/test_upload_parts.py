"""One upload in several parts: one batch, one prediction job, and a part sent again stores nothing twice.

The upload page's script sends a large selection as several requests into one
batch (images/upload_views.py); a large upload is stored a part at a time
(images.services.UPLOAD_FIRST_FLUSH, then doubling up to UPLOAD_FLUSH_EVERY). django-q2 runs in sync mode here: a
queued chunk runs when the on_commit callbacks are executed.
"""

import io
import json
from unittest import mock

import pytest
from django.contrib.messages import get_messages
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client, override_settings

from images.models import Image, UploadBatch
from images.services import RESENT_REASON, batch_add_files, batch_create, image_create, upload_files

from .conftest import make_zip

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fresh_predictor_cache")]

PART_URL = "/admin/images/image/upload/part/"


@pytest.fixture
def fresh_predictor_cache():
    from predictions.inference import clear_cache

    clear_cache()
    yield
    clear_cache()


def as_files(files: list[tuple[str, bytes]]):
    return [(name, io.BytesIO(data)) for name, data in files]


def photos(make_image, numbers) -> list[tuple[str, bytes]]:
    return [(f"photo-{number}.jpg", make_image(seed=number)) for number in numbers]


def test_a_zip_stored_in_several_flushes_is_one_prediction_job(
    monkeypatch, make_image, uploader, active_model_version, django_capture_on_commit_callbacks
):
    """The 402-image zip that made three jobs (200 + 200 + 2), scaled down: 5 images, 2 per flush."""
    from predictions.models import Prediction, PredictionJob

    monkeypatch.setattr("images.services.UPLOAD_FLUSH_EVERY", 2)
    archive = make_zip(photos(make_image, range(5)))
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        batch = upload_files(files=as_files([("many.zip", archive)]), user=uploader)

    assert len(callbacks) >= 3  # three flushes queued their images
    job = PredictionJob.objects.get()
    assert (job.batch, job.reason, job.total, job.done, job.status) == (batch, "upload", 5, 5, PredictionJob.Status.DONE)
    assert Prediction.objects.filter(job=job).count() == 5


def test_parts_of_one_upload_extend_its_one_job_also_after_it_finished(
    make_image, uploader, active_model_version, django_capture_on_commit_callbacks
):
    from predictions.models import PredictionJob
    from predictions.services.chunks import predict_chunk_run

    batch = batch_create(user=uploader, name="two parts")
    with django_capture_on_commit_callbacks(execute=True):
        batch_add_files(batch=batch, files=as_files(photos(make_image, [1, 2])), user=uploader)
    job = PredictionJob.objects.get()
    assert (job.total, job.done, job.status) == (2, 2, PredictionJob.Status.DONE)

    queued = []
    with mock.patch("predictions.services.jobs.async_task", lambda *args, **kwargs: queued.append(args)):
        with django_capture_on_commit_callbacks(execute=True):
            batch_add_files(batch=batch, files=as_files(photos(make_image, [3])), user=uploader)
    job.refresh_from_db()
    # Opened again for the new part, until its chunk runs.
    assert (job.total, job.done, job.status, job.finished_at) == (3, 2, PredictionJob.Status.RUNNING, None)
    assert [(job_id, len(ids)) for _, job_id, ids in queued] == [(job.pk, 1)]
    for _, job_id, ids in queued:
        predict_chunk_run(job_id=job_id, image_ids=ids)

    job.refresh_from_db()
    assert PredictionJob.objects.count() == 1
    assert (job.total, job.done, job.failed, job.status) == (3, 3, 0, PredictionJob.Status.DONE)
    assert job.finished_at is not None
    assert (batch.accepted_count, batch.duplicate_count, batch.rejected_count) == (3, 0, 0)


def test_another_upload_and_a_retry_of_failures_get_jobs_of_their_own(
    make_image, uploader, active_model_version, django_capture_on_commit_callbacks
):
    from predictions.models import PredictionJob

    with django_capture_on_commit_callbacks(execute=True):
        first = upload_files(files=as_files(photos(make_image, [1])), user=uploader)
        second = upload_files(files=as_files(photos(make_image, [2])), user=uploader)
    assert sorted(PredictionJob.objects.values_list("batch", "total")) == [(first.pk, 1), (second.pk, 1)]


def test_a_part_sent_again_stores_and_counts_nothing_twice(
    make_image, uploader, active_model_version, django_capture_on_commit_callbacks
):
    from predictions.models import PredictionJob

    part = [*photos(make_image, [1, 2]), ("notes.txt", b"not a picture at all\n")]
    batch = batch_create(user=uploader)
    with django_capture_on_commit_callbacks(execute=True):
        batch_add_files(batch=batch, files=as_files(part), user=uploader)
    report_before = list(batch.report)

    answered = []
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        batch_add_files(batch=batch, files=as_files(part), user=uploader, on_file=answered.append)

    assert callbacks == []  # nothing new to queue
    by_file = {entry["file"]: entry for entry in answered}
    for name in ("photo-1.jpg", "photo-2.jpg"):
        assert by_file[name]["status"] == "accepted" and by_file[name]["resent"] is True
        assert by_file[name]["reason"] == RESENT_REASON == "already stored in this upload"
    assert by_file["notes.txt"]["status"] == "rejected" and by_file["notes.txt"]["resent"] is True
    batch.refresh_from_db()
    assert (batch.accepted_count, batch.duplicate_count, batch.rejected_count) == (2, 0, 1)
    assert batch.report == report_before
    assert Image.objects.count() == 2
    assert PredictionJob.objects.get().total == 2


def test_within_one_request_a_repeated_file_is_still_a_duplicate(make_image, uploader):
    """Only an earlier request's files count as sent again; one request reports each file it holds."""
    data = make_image(seed=4)
    batch = upload_files(files=as_files([("a.jpg", data), ("a.jpg", data)]), user=uploader)
    assert [entry["status"] for entry in batch.report] == ["accepted", "duplicate"]
    assert (batch.accepted_count, batch.duplicate_count) == (1, 1)


def test_an_image_stored_by_a_cut_off_attempt_is_recorded_and_queued_when_sent_again(
    make_image, uploader, active_model_version, django_capture_on_commit_callbacks
):
    """The attempt stored the image and died before recording it: not a duplicate of itself, and predicted."""
    from predictions.models import Prediction

    data = make_image(seed=7)
    batch = batch_create(user=uploader)
    image_create(data=data, name="photo-7.jpg", user=uploader, batch=batch)  # stored, never recorded

    with django_capture_on_commit_callbacks(execute=True):
        batch_add_files(batch=batch, files=as_files([("photo-7.jpg", data)]), user=uploader)

    assert [entry["status"] for entry in batch.report] == ["accepted"]
    assert batch.accepted_count == 1
    assert Prediction.objects.filter(image__batch=batch).count() == 1


def test_a_retry_recorded_while_the_first_attempt_was_storing_is_not_counted_twice(make_image, uploader):
    """Two requests fill one batch at once (the retry of an attempt the server was still storing)."""
    files = photos(make_image, [1, 2])
    batch = batch_create(user=uploader)
    first_attempt = UploadBatch.objects.get(pk=batch.pk)
    retry = UploadBatch.objects.get(pk=batch.pk)

    batch_add_files(batch=retry, files=as_files(files), user=uploader)
    batch_add_files(batch=first_attempt, files=as_files(files), user=uploader)  # read the batch before the retry wrote

    batch.refresh_from_db()
    assert (batch.accepted_count, batch.duplicate_count, batch.rejected_count) == (2, 0, 0)
    assert sorted(entry["file"] for entry in batch.report) == ["photo-1.jpg", "photo-2.jpg"]


# --- the endpoint the upload page's script sends parts to ---------------------------------------


def csrf_client(user) -> Client:
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    assert client.get("/admin/images/image/upload/").status_code == 200
    return client


def post_part(client, files, **fields):
    data = {"csrfmiddlewaretoken": client.cookies["csrftoken"].value, **fields}
    data["files"] = [SimpleUploadedFile(name, content) for name, content in files]
    return client.post(PART_URL, data)


def test_the_page_offers_its_script_the_endpoints_and_part_sizes(client_for, uploader):
    html = client_for(uploader).get("/admin/images/image/upload/").content.decode()
    assert f'data-part-url="{PART_URL}"' in html
    assert 'data-finish-url="/admin/images/image/upload/0/finish/"' in html
    assert "data-part-files=" in html and "data-part-bytes=" in html
    assert "images/upload.js" in html


def test_parts_go_into_one_batch_and_finish_says_the_summary(
    uploader, make_image, active_model_version, django_capture_on_commit_callbacks
):
    from predictions.models import PredictionJob

    client = csrf_client(uploader)
    with django_capture_on_commit_callbacks(execute=True):
        first = post_part(client, photos(make_image, [1, 2]), name="Field trip", upload_key="k1")
    assert first.status_code == 200, first.content
    answer = first.json()
    batch = UploadBatch.objects.get()
    assert answer["batch"] == batch.pk
    assert [(entry["file"], entry["status"]) for entry in answer["entries"]] == [
        ("photo-1.jpg", "accepted"), ("photo-2.jpg", "accepted"),
    ]
    with django_capture_on_commit_callbacks(execute=True):
        second = post_part(client, [("broken.jpg", b"no picture")], batch=batch.pk, upload_key="k1")
    assert second.json()["counts"] == {"accepted": 2, "duplicate": 0, "rejected": 1}

    token = client.cookies["csrftoken"].value
    finish = client.post(f"/admin/images/image/upload/{batch.pk}/finish/", {"csrfmiddlewaretoken": token})
    assert finish.json() == {"url": f"/admin/images/uploadbatch/{batch.pk}/change/"}
    assert [str(m) for m in get_messages(finish.wsgi_request)] == [
        "Field trip: 2 accepted, 0 duplicate(s), 1 rejected. Thumbnails and predictions are made in the background."
    ]
    assert UploadBatch.objects.count() == 1
    assert PredictionJob.objects.get().total == 2


def test_a_first_part_sent_again_finds_its_batch_by_the_upload_key(uploader, make_image):
    """Its answer was lost, so the page does not know the batch: the key it made for the upload finds it."""
    client = csrf_client(uploader)
    files = photos(make_image, [1])
    post_part(client, files, upload_key="lost-answer")
    again = post_part(client, files, upload_key="lost-answer").json()

    assert UploadBatch.objects.count() == 1
    assert again["entries"][0]["reason"] == "already stored in this upload"
    assert again["counts"] == {"accepted": 1, "duplicate": 0, "rejected": 0}
    post_part(client, files, upload_key="another-upload")
    assert UploadBatch.objects.count() == 2


def test_folder_paths_sent_with_the_files_become_their_names(uploader, make_image):
    client = csrf_client(uploader)
    data = {"csrfmiddlewaretoken": client.cookies["csrftoken"].value, "paths": ["site_a/DSC_505.jpg", "site_b/DSC_505.jpg"]}
    data["files"] = [SimpleUploadedFile("DSC_505.jpg", make_image(seed=1)), SimpleUploadedFile("DSC_505.jpg", make_image(seed=2))]
    answer = client.post(PART_URL, data).json()

    assert [entry["file"] for entry in answer["entries"]] == ["site_a/DSC_505.jpg", "site_b/DSC_505.jpg"]
    assert sorted(Image.objects.values_list("original_name", flat=True)) == ["site_a/DSC_505.jpg", "site_b/DSC_505.jpg"]


def test_a_path_that_leaves_its_folder_is_reduced_to_its_base_name(uploader, make_image):
    client = csrf_client(uploader)
    data = {"csrfmiddlewaretoken": client.cookies["csrftoken"].value, "paths": ["../../etc/x.jpg"]}
    data["files"] = [SimpleUploadedFile("x.jpg", make_image(seed=1))]
    entry = client.post(PART_URL, data).json()["entries"][0]

    assert entry["status"] == "accepted"
    assert entry["reason"] == "unsafe path '../../etc/x.jpg' reduced to 'x.jpg'"
    assert Image.objects.get().original_name == "x.jpg"


def test_nobody_adds_files_to_another_users_batch(uploader, lead, make_image):
    other = batch_create(user=lead, name="not yours")
    client = csrf_client(uploader)
    response = post_part(client, photos(make_image, [1]), batch=other.pk)
    assert response.status_code == 404
    assert not Image.objects.exists()


def test_parts_check_csrf_and_permission(uploader, reviewer, make_image):
    client = Client(enforce_csrf_checks=True)
    client.force_login(uploader)
    response = client.post(PART_URL, {"files": [SimpleUploadedFile("a.jpg", make_image(seed=1))]})
    assert response.status_code == 403

    not_an_uploader = Client()
    not_an_uploader.force_login(reviewer)
    assert not_an_uploader.post(PART_URL, {"files": [SimpleUploadedFile("a.jpg", make_image(seed=1))]}).status_code == 403
    assert not UploadBatch.objects.exists()


def test_a_part_over_the_limits_is_a_json_error(uploader, make_image):
    client = csrf_client(uploader)
    with override_settings(UPLOAD_MAX_FILES=2, DATA_UPLOAD_MAX_NUMBER_FILES=2):
        response = post_part(client, photos(make_image, [1, 2, 3]))
    assert response.status_code == 400
    assert "Too many files in one upload: the limit is 2 files." in json.loads(response.content)["error"]
    assert not UploadBatch.objects.exists()


def test_each_answered_entry_names_the_position_of_the_file_it_came_from(uploader, make_image):
    """The page shows each entry beside its file by this index; files are read ahead of the one being
    stored (images.uploads.iter_inspected), so the order of reading cannot tell it."""
    archive = make_zip(photos(make_image, [10, 11, 12]))
    sent = [*photos(make_image, [1, 2]), ("three.zip", archive), ("notes.txt", b"not a picture\n"), *photos(make_image, [3])]

    answer = post_part(csrf_client(uploader), sent, name="Mixed", upload_key="k9").json()

    assert [(entry["index"], entry["file"], entry["status"]) for entry in answer["entries"]] == [
        (0, "photo-1.jpg", "accepted"), (1, "photo-2.jpg", "accepted"),
        (2, "three.zip/photo-10.jpg", "accepted"), (2, "three.zip/photo-11.jpg", "accepted"),
        (2, "three.zip/photo-12.jpg", "accepted"), (3, "notes.txt", "rejected"), (4, "photo-3.jpg", "accepted"),
    ]  # fmt: skip
    assert all("sent_index" not in entry for entry in answer["entries"])
    assert all("sent_index" not in entry for entry in UploadBatch.objects.get().report)
