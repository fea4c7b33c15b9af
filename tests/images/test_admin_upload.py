"""The admin upload page: multiple files and zips, clear messages at the limits, the batch page."""

import time

import pytest
from django.contrib.messages import get_messages
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client, override_settings

from images.models import Image, UploadBatch
from predictions.models import PredictionFailure

from .conftest import make_zip, tiny_png

pytestmark = pytest.mark.django_db
UPLOAD_URL = "/admin/images/image/upload/"


def files_field(files):
    return [SimpleUploadedFile(name, data) for name, data in files]


def csrf_client(user) -> Client:
    """A client that enforces CSRF like a browser session does, with a token from the page."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    assert client.get(UPLOAD_URL).status_code == 200
    return client


def test_upload_page_looks_like_the_admin_and_takes_several_files(client_for, uploader):
    response = client_for(uploader).get(UPLOAD_URL)
    html = response.content.decode()
    assert response.status_code == 200
    assert 'class="breadcrumbs"' in html and "Upload images" in html
    assert 'type="file"' in html and "multiple" in html and 'enctype="multipart/form-data"' in html
    assert ".zip" in html


def test_add_buttons_lead_to_the_upload_page(client_for, uploader):
    client = client_for(uploader)
    assert client.get("/admin/images/image/add/").url == UPLOAD_URL
    assert client.get("/admin/images/uploadbatch/add/").url == UPLOAD_URL


def test_reviewer_cannot_upload(client_for, reviewer, make_image):
    client = client_for(reviewer)
    assert client.get(UPLOAD_URL).status_code == 403
    response = client.post(UPLOAD_URL, {"files": files_field([("a.jpg", make_image(seed=1))])})
    assert response.status_code == 403
    assert not Image.objects.exists()


def test_upload_redirects_to_the_batch_with_a_summary(uploader, make_image):
    client = csrf_client(uploader)
    archive = make_zip([("z/one.jpg", make_image(seed=1)), ("notes.txt", b"hello there\n")])
    response = client.post(
        UPLOAD_URL,
        {
            "csrfmiddlewaretoken": client.cookies["csrftoken"].value,
            "name": "Monday photos",
            "files": files_field([("two.png", make_image(seed=2, fmt="PNG")), ("empty.jpg", b""), ("pack.zip", archive)]),
        },
    )
    batch = UploadBatch.objects.get()
    assert response.status_code == 302
    assert response.url == f"/admin/images/uploadbatch/{batch.pk}/change/"
    assert [str(m) for m in get_messages(response.wsgi_request)] == [
        "Monday photos: 2 accepted, 0 duplicate(s), 2 rejected. Thumbnails and predictions are made in the background."
    ]
    assert (batch.name, batch.created_by, batch.source) == ("Monday photos", uploader, UploadBatch.Source.ADMIN)

    page = client.get(response.url).content.decode()
    assert "empty file" in page and "pack.zip/notes.txt" in page and "not an image (looks like text)" in page
    assert f"?batch={batch.pk}" in page


def test_csrf_is_still_checked(uploader, make_image):
    client = csrf_client(uploader)
    response = client.post(UPLOAD_URL, {"files": files_field([("a.jpg", make_image(seed=1))])})
    assert response.status_code == 403
    assert not UploadBatch.objects.exists()


def test_five_hundred_tiny_images_in_one_request(client_for, uploader, make_image, django_capture_on_commit_callbacks):
    files = files_field([(f"tiny-{i:03d}.png", tiny_png(i)) for i in range(500)])
    client = client_for(uploader)
    with django_capture_on_commit_callbacks() as callbacks:
        started = time.perf_counter()
        response = client.post(UPLOAD_URL, {"files": files})
        elapsed = time.perf_counter() - started
    print(f"\n500 tiny images through the admin upload form: {elapsed:.2f}s")

    assert response.status_code == 302
    batch = UploadBatch.objects.get()
    assert (batch.accepted_count, batch.rejected_count) == (500, 0)
    assert Image.objects.count() == 500
    assert callbacks  # thumbnails and predictions are queued on commit


def test_too_many_files_for_the_request_parser_gets_a_message_not_a_bare_400(uploader, make_image):
    client = csrf_client(uploader)
    with override_settings(UPLOAD_MAX_FILES=3, DATA_UPLOAD_MAX_NUMBER_FILES=3):
        response = client.post(
            UPLOAD_URL,
            {
                "csrfmiddlewaretoken": client.cookies["csrftoken"].value,
                "files": files_field([(f"{i}.jpg", make_image(seed=i)) for i in range(5)]),
            },
        )
    assert response.status_code == 200
    assert "Too many files in one upload: the limit is 3 files." in response.content.decode()
    assert not UploadBatch.objects.exists()


def test_too_many_files_for_the_form_gets_a_message(client_for, uploader, make_image):
    with override_settings(UPLOAD_MAX_FILES=3):
        response = client_for(uploader).post(
            UPLOAD_URL, {"files": files_field([(f"{i}.jpg", make_image(seed=i)) for i in range(4)])}
        )
    assert response.status_code == 200
    assert "Too many files in one upload: the limit is 3 files." in response.content.decode()
    assert not UploadBatch.objects.exists()


def test_upload_over_the_total_size_gets_a_message(client_for, uploader, make_image):
    with override_settings(UPLOAD_MAX_TOTAL_BYTES=1000):
        response = client_for(uploader).post(
            UPLOAD_URL, {"files": files_field([(f"{i}.jpg", make_image(seed=i)) for i in range(3)])}
        )
    assert response.status_code == 200
    assert "The upload is too large" in response.content.decode()
    assert "the limit is 1000 bytes per upload" in response.content.decode()
    assert not UploadBatch.objects.exists()


def test_request_far_over_the_total_size_is_refused_before_it_is_parsed(client_for, uploader):
    with override_settings(UPLOAD_MAX_TOTAL_BYTES=1000):
        response = client_for(uploader).post(UPLOAD_URL, {"files": files_field([("huge.jpg", b"\0" * (1100 * 1024))])})
    assert response.status_code == 200
    assert "The upload is too large (1.1 MB sent): the limit is 1000 bytes per upload." in response.content.decode()
    assert not hasattr(response.wsgi_request, "_files")  # the body was never parsed


def test_no_file_selected(client_for, uploader):
    response = client_for(uploader).post(UPLOAD_URL, {"name": "nothing"})
    assert response.status_code == 200
    assert "This field is required." in response.content.decode()


# --- batch pages --------------------------------------------------------------------


def test_batch_pages_show_progress_and_failed_predictions(
    upload, make_image, client_for, uploader, model_version_factory
):
    version = model_version_factory()
    batch = upload([(f"{i}.jpg", make_image(seed=i)) for i in range(3)], user=uploader)
    failed_image = Image.objects.get(original_name="1.jpg")
    PredictionFailure.objects.create(image=failed_image, model_version=version, message="1.jpg: truncated or corrupt image data")

    client = client_for(uploader)
    changelist = client.get("/admin/images/uploadbatch/").content.decode()
    assert "0 / 3" in changelist and "1 failed" in changelist

    page = client.get(f"/admin/images/uploadbatch/{batch.pk}/change/").content.decode()
    assert "1.jpg: truncated or corrupt image data" in page
    assert 'name="_save"' not in page  # a batch is a record, not a form


def test_retry_failed_predictions_of_a_batch(
    upload, make_image, client_for, uploader, lead, active_model_version, django_capture_on_commit_callbacks
):
    from predictions.models import Prediction

    batch = upload([(f"{i}.jpg", make_image(seed=i)) for i in range(2)], user=uploader)
    image = Image.objects.get(original_name="0.jpg")
    PredictionFailure.objects.create(image=image, model_version=active_model_version, message="worker died")

    # Queueing a prediction job is for Leads; the uploader is not offered it.
    assert b"retry_batch_predictions" not in client_for(uploader).get("/admin/images/uploadbatch/").content
    with django_capture_on_commit_callbacks(execute=True):
        response = client_for(lead).post(
            "/admin/images/uploadbatch/",
            {"action": "retry_batch_predictions", "_selected_action": [batch.pk]},
        )
    assert response.status_code == 302
    assert not PredictionFailure.objects.exists()
    assert Prediction.objects.filter(image=image, model_version=active_model_version).exists()
