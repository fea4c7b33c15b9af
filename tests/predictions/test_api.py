"""The JSON prediction endpoint through Django's test client.

What a caller relies on: every file answered in the order sent, by token or by
session (with CSRF enforced for sessions only), a clear JSON error with the
right status for each way a request can be wrong, stored uploads entering the
review queue already predicted, and the model loaded once per process.
"""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client, override_settings
from django.urls import reverse

from predictions import inference
from predictions.services.tokens import api_token_create

# Seeds whose tiny images the random tiny model labels differently, with clear margins.
SEEDS = [0, 2, 4, 6]


@pytest.fixture
def api_url():
    return reverse("predictions:predict")


@pytest.fixture
def token_for(db):
    def create(user) -> str:
        return api_token_create(user=user, name="tests")[1]

    return create


@pytest.fixture
def images(make_image) -> list[tuple[str, bytes]]:
    return [(f"photo-{seed}.jpg", make_image(seed=seed)) for seed in SEEDS]


def uploads(named_files) -> list[SimpleUploadedFile]:
    return [SimpleUploadedFile(name, data, content_type="application/octet-stream") for name, data in named_files]


def each_alone(model_version, named_files) -> list[str]:
    """The label of each file predicted on its own: the answer a batch must agree with."""
    predictor = inference.get_predictor(model_version)
    return [next(predictor.predict_sources([(name, data)]))[1].label for name, data in named_files]


def post_with_token(client, url, token, files, **extra):
    return client.post(url, {"images": files}, headers={"Authorization": f"Bearer {token}"}, **extra)


# --- success -------------------------------------------------------------------


def test_token_request_answers_every_file_in_the_order_sent(active_model_version, reviewer, token_for, api_url, images):
    expected = each_alone(active_model_version, images)
    assert len(set(expected)) > 1, "the fixture images should get different labels"

    # A token request needs no CSRF token, even with CSRF checks enforced.
    client = Client(enforce_csrf_checks=True)
    response = post_with_token(client, api_url, token_for(reviewer), uploads(images))

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["labels"] == expected
    assert body["model_version"] == active_model_version.name
    assert body["errors"] == []
    assert [p["file"] for p in body["predictions"]] == [name for name, _ in images]
    assert [p["index"] for p in body["predictions"]] == list(range(len(images)))
    for prediction in body["predictions"]:
        top_k = prediction["top_k"]
        assert len(top_k) == 3
        assert top_k[0] == {"label": prediction["label"], "probability": prediction["confidence"]}
        assert [t["probability"] for t in top_k] == sorted((t["probability"] for t in top_k), reverse=True)
        assert "image_id" not in prediction
    assert "batch_id" not in body

    reversed_body = post_with_token(client, api_url, token_for(reviewer), uploads(images[::-1])).json()
    assert reversed_body["labels"] == expected[::-1]


def test_session_request_must_carry_the_csrf_token(active_model_version, reviewer, api_url, images):
    client = Client(enforce_csrf_checks=True)
    client.force_login(reviewer)

    refused = client.post(api_url, {"images": uploads(images)})
    assert refused.status_code == 403
    assert "CSRF" in refused.json()["error"]

    page = client.get(api_url)
    assert page.status_code == 200
    csrf_token = page.cookies["csrftoken"].value

    by_header = client.post(api_url, {"images": uploads(images)}, headers={"X-CSRFToken": csrf_token})
    assert by_header.status_code == 200, by_header.content
    assert by_header.json()["labels"] == each_alone(active_model_version, images)

    by_form_field = client.post(api_url, {"images": uploads(images[:1]), "csrfmiddlewaretoken": csrf_token})
    assert by_form_field.status_code == 200


def test_upload_page_has_a_multiple_file_form_for_staff(reviewer, client_for, client, api_url):
    page = client_for(reviewer).get(api_url)
    assert page.status_code == 200
    html = page.content.decode()
    assert 'type="file"' in html and 'name="images"' in html and "multiple" in html
    assert "csrfmiddlewaretoken" in html

    anonymous = client.get(api_url)
    assert anonymous.status_code == 302
    assert reverse("admin:login") in anonymous["Location"]


# --- who may call it ---------------------------------------------------------------


def test_no_credentials_is_401_with_a_bearer_challenge(active_model_version, client, api_url, images):
    response = client.post(api_url, {"images": uploads(images)})
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert "Bearer" in response.json()["error"]


@pytest.mark.parametrize("case", ["unknown token", "revoked token", "inactive user", "not bearer"])
def test_bad_token_is_401(case, active_model_version, reviewer, client, api_url, images):
    token, raw = api_token_create(user=reviewer, name="tests")
    if case == "unknown token":
        header = "Bearer " + raw[::-1]
    elif case == "revoked token":
        token.revoked = True
        token.save()
        header = f"Bearer {raw}"
    elif case == "inactive user":
        reviewer.is_active = False
        reviewer.save()
        header = f"Bearer {raw}"
    else:
        header = f"Token {raw}"

    response = client.post(api_url, {"images": uploads(images)}, headers={"Authorization": header})

    assert response.status_code == 401
    assert 'error="invalid_token"' in response["WWW-Authenticate"]
    assert response.json()["error"]


def test_a_bad_token_is_refused_even_with_a_valid_session(active_model_version, reviewer, client_for, api_url, images):
    response = client_for(reviewer).post(
        api_url, {"images": uploads(images)}, headers={"Authorization": "Bearer not-a-token"}
    )
    assert response.status_code == 401


def test_user_without_the_permission_is_403(active_model_version, django_user_model, token_for, client, client_for, api_url, images):
    outsider = django_user_model.objects.create_user(username="outsider", password="x", is_staff=True)

    by_token = post_with_token(client, api_url, token_for(outsider), uploads(images))
    by_session = client_for(outsider).post(api_url, {"images": uploads(images)})
    page = client_for(outsider).get(api_url)

    assert by_token.status_code == 403 and "outsider" in by_token.json()["error"]
    assert by_session.status_code == 403
    assert page.status_code == 403


def test_storing_needs_the_add_image_permission(active_model_version, reviewer, token_for, client, api_url, images):
    response = post_with_token(client, api_url + "?store=1", token_for(reviewer), uploads(images))
    assert response.status_code == 403
    assert "store" in response.json()["error"]


# --- bad requests ------------------------------------------------------------------


@pytest.mark.parametrize("method", ["put", "patch", "delete"])
def test_other_methods_are_405_in_json(method, reviewer, token_for, client, api_url):
    response = getattr(client, method)(api_url, headers={"Authorization": f"Bearer {token_for(reviewer)}"})
    assert response.status_code == 405
    assert "POST" in response["Allow"]
    assert method.upper() in response.json()["error"]


def test_no_files_is_400(active_model_version, reviewer, token_for, client, api_url, images):
    token = token_for(reviewer)
    nothing = client.post(api_url, {}, headers={"Authorization": f"Bearer {token}"})
    wrong_field = client.post(api_url, {"image": uploads(images)}, headers={"Authorization": f"Bearer {token}"})
    for response in (nothing, wrong_field):
        assert response.status_code == 400
        assert "'images'" in response.json()["error"]


@override_settings(API_MAX_FILES=3)
def test_more_files_than_allowed_is_413(active_model_version, reviewer, token_for, client, api_url, images):
    response = post_with_token(client, api_url, token_for(reviewer), uploads(images))
    assert response.status_code == 413
    assert "at most 3" in response.json()["error"]


def test_a_file_over_the_size_limit_is_413_and_named(active_model_version, reviewer, token_for, client, api_url, images):
    big = ("big.jpg", images[0][1] + b"\0" * 4000)
    with override_settings(IMAGE_MAX_BYTES=len(images[0][1]) + 100):
        response = post_with_token(client, api_url, token_for(reviewer), uploads([images[1], big]))
    assert response.status_code == 413
    assert [(e["index"], e["file"]) for e in response.json()["errors"]] == [(1, "big.jpg")]


@override_settings(API_MAX_FILES=10, DATA_UPLOAD_MAX_NUMBER_FILES=2)
def test_django_refusing_to_parse_the_body_is_413(active_model_version, reviewer, token_for, client, api_url, images):
    response = post_with_token(client, api_url, token_for(reviewer), uploads(images))
    assert response.status_code == 413
    assert "too many files" in response.json()["error"]


@override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=100)
def test_oversized_form_fields_are_413(active_model_version, reviewer, token_for, client, api_url, images):
    response = client.post(
        api_url,
        {"images": uploads(images[:1]), "note": "x" * 1000},
        headers={"Authorization": f"Bearer {token_for(reviewer)}"},
    )
    assert response.status_code == 413


def test_bad_files_are_422_and_the_good_ones_still_answered(active_model_version, reviewer, token_for, client, api_url, images):
    sent = [
        images[0],
        ("notes.txt", b"shopping list: milk, eggs\n"),
        images[1],
        ("cut.jpg", images[2][1][:200]),
        ("empty.png", b""),
    ]
    expected = each_alone(active_model_version, [images[0], images[1]])

    response = post_with_token(client, api_url, token_for(reviewer), uploads(sent))

    assert response.status_code == 422
    body = response.json()
    assert body["labels"] == [expected[0], None, expected[1], None, None]
    assert [(p["index"], p["file"]) for p in body["predictions"]] == [(0, images[0][0]), (2, images[1][0])]
    errors = {e["file"]: (e["index"], e["error"]) for e in body["errors"]}
    assert errors["notes.txt"] == (1, "not an image (looks like text)")
    assert errors["cut.jpg"][0] == 3 and "corrupt" in errors["cut.jpg"][1]
    assert errors["empty.png"] == (4, "empty file")


def test_no_active_model_is_503(db, reviewer, token_for, client, api_url, images):
    response = post_with_token(client, api_url, token_for(reviewer), uploads(images))
    assert response.status_code == 503
    assert "no model version is active" in response.json()["error"]


def test_a_checkpoint_that_will_not_load_is_503(model_version_factory, reviewer, token_for, client, api_url, images):
    model_version_factory("broken", checkpoint=b"not a checkpoint")
    response = post_with_token(client, api_url, token_for(reviewer), uploads(images))
    assert response.status_code == 503
    assert "'broken' could not be loaded" in response.json()["error"]


# --- storing -------------------------------------------------------------------------


def test_store_creates_images_with_their_predictions_and_no_prediction_job(
    active_model_version, lead, token_for, client, api_url, images, django_capture_on_commit_callbacks
):
    from images.models import Image, UploadBatch
    from predictions.models import Prediction, PredictionJob
    from predictions.services.jobs import enqueue_predictions

    sent = [images[0], ("notes.txt", b"not a picture"), images[1]]
    with django_capture_on_commit_callbacks(execute=True):
        response = post_with_token(client, api_url + "?store=1", token_for(lead), uploads(sent))

    assert response.status_code == 422
    body = response.json()
    batch = UploadBatch.objects.get(pk=body["batch_id"])
    assert batch.source == UploadBatch.Source.API
    assert batch.created_by == lead
    image_ids = [p["image_id"] for p in body["predictions"]]
    stored = {image.pk: image for image in Image.objects.filter(pk__in=image_ids)}
    assert [stored[pk].original_name for pk in image_ids] == [images[0][0], images[1][0]]
    for entry in body["predictions"]:
        row = Prediction.objects.get(image_id=entry["image_id"], model_version=active_model_version)
        assert row.label.name == entry["label"]
        assert row.confidence == pytest.approx(entry["confidence"], abs=1e-6)
        assert row.probabilities[active_model_version.class_names.index(entry["label"])] == pytest.approx(row.confidence, abs=1e-6)
        assert len(row.embedding) == 512 * 2, "the ResNet18 features of the same pass, float16"
    # The upload queued its prediction work on commit; there was nothing left to do.
    assert not PredictionJob.objects.exists()
    assert enqueue_predictions(image_ids=image_ids, reason="upload") is None

    with django_capture_on_commit_callbacks(execute=True):
        again = post_with_token(client, api_url + "?store=1", token_for(lead), uploads(images[:1])).json()
    assert again["predictions"][0]["image_id"] == image_ids[0]
    assert Prediction.objects.filter(image_id=image_ids[0]).count() == 1


def test_a_stored_batch_counts_and_reports_the_files_that_failed(
    active_model_version, lead, token_for, client, api_url, images
):
    from images.models import UploadBatch

    sent = [images[0], ("notes.txt", b"not a picture"), ("empty.jpg", b"")]
    body = post_with_token(client, api_url + "?store=1", token_for(lead), uploads(sent)).json()

    batch = UploadBatch.objects.get(pk=body["batch_id"])
    assert (batch.accepted_count, batch.rejected_count) == (1, 2)
    entries = {entry["file"]: entry for entry in batch.report}
    assert set(entries) == {images[0][0], "notes.txt", "empty.jpg"}
    assert entries["notes.txt"]["status"] == "rejected" and entries["notes.txt"]["reason"] == body["errors"][0]["error"]


def test_store_by_session_works_like_the_admin_upload(active_model_version, lead, client_for, api_url, images):
    from images.models import Image

    response = client_for(lead).post(api_url + "?store=1", {"images": uploads(images[:2])})
    assert response.status_code == 200
    assert Image.objects.filter(predictions__model_version=active_model_version).count() == 2


# --- the model in the process --------------------------------------------------------


def test_the_model_is_loaded_once_across_requests(active_model_version, reviewer, token_for, client, api_url, images):
    token = token_for(reviewer)
    first = post_with_token(client, api_url, token, uploads(images[:1]))
    assert first.status_code == 200
    loads = inference.load_count()

    answers = [post_with_token(client, api_url, token, uploads(images)).json()["labels"] for _ in range(5)]

    assert inference.load_count() == loads
    assert all(labels == answers[0] for labels in answers)


def test_activating_another_version_reloads_the_model_once(
    model_version_factory, tiny_checkpoint_bytes, reviewer, token_for, client, api_url, images
):
    model_version_factory("tiny-v1")
    token = token_for(reviewer)
    assert post_with_token(client, api_url, token, uploads(images)).json()["model_version"] == "tiny-v1"
    loads = inference.load_count()

    # Same weights, classes renamed: the answer must come from the new version.
    renamed = ["v2-circle", "v2-square", "v2-triangle", "v2-star", "v2-cross"]
    model_version_factory("tiny-v2", class_names=renamed)
    first = post_with_token(client, api_url, token, uploads(images)).json()
    second = post_with_token(client, api_url, token, uploads(images)).json()

    assert first["model_version"] == second["model_version"] == "tiny-v2"
    assert inference.load_count() == loads + 1
    assert set(first["labels"]) <= set(renamed)


# --- the import boundary ---------------------------------------------------------------


def test_torch_is_imported_by_the_first_prediction_not_before(tmp_path, tiny_checkpoint_bytes):
    """In a fresh interpreter: the upload page and the token admin leave torch alone; a POST loads it."""
    import json
    import os
    import subprocess
    import sys
    import textwrap

    from django.conf import settings

    checkpoint = tmp_path / "tiny.pth"
    checkpoint.write_bytes(tiny_checkpoint_bytes)
    code = textwrap.dedent(
        f"""
        import io, json, sys
        import django
        django.setup()
        from django.core.files.base import ContentFile
        from django.core.files.uploadedfile import SimpleUploadedFile
        from django.core.management import call_command
        from django.contrib.auth import get_user_model
        from django.test import Client
        from django.test.utils import setup_test_environment
        from PIL import Image
        from predictions.models import ModelVersion

        call_command("migrate", verbosity=0, interactive=False)
        setup_test_environment()
        version = ModelVersion(name="tiny", class_names=["a", "b", "c", "d", "e"], input_size=32,
                               is_active=True, validation_status="valid")
        version.checkpoint.save("tiny.pth", ContentFile(open({str(checkpoint)!r}, "rb").read()))
        client = Client()
        client.force_login(get_user_model().objects.create_superuser("boundary", password="unused-elsewhere"))
        statuses = [client.get(url).status_code for url in ("/api/predict/", "/admin/predictions/apitoken/")]
        before = "torch" in sys.modules
        buffer = io.BytesIO()
        Image.new("RGB", (40, 30), (10, 120, 200)).save(buffer, "JPEG")
        answer = client.post("/api/predict/", {{"images": [SimpleUploadedFile("a.jpg", buffer.getvalue())]}})
        print(json.dumps({{"statuses": statuses, "before": before, "post": answer.status_code,
                           "after": "torch" in sys.modules}}))
        """
    )
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "LANG": "C.UTF-8",
        "REVIEWTOOL_TEST_ROOT": str(tmp_path),
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "SQLITE_PATH": ":memory:",
    }
    completed = subprocess.run(
        [sys.executable, "-c", code], cwd=settings.BASE_DIR, env=env, capture_output=True, text=True, timeout=300
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result == {"statuses": [200, 200], "before": False, "post": 200, "after": True}


# --- body and pixel limits, checked before the body is read or an image decoded ---------------


class CountingStream:
    """A request body as a server hands it over: counts what the application reads."""

    def __init__(self, data: bytes = b"", *, endless: bool = False) -> None:
        self.data = data
        self.endless = endless
        self.read_bytes = 0

    def read(self, size: int = -1) -> bytes:
        if self.endless:
            chunk = b"x" * (size if size is not None and size >= 0 else 1 << 20)
        else:
            start = self.read_bytes
            chunk = self.data[start:] if size is None or size < 0 else self.data[start : start + size]
        self.read_bytes += len(chunk)
        return chunk

    def readline(self, size: int = -1) -> bytes:
        return self.read(size)


def multipart_body(named_files) -> tuple[bytes, str]:
    from django.test.client import BOUNDARY, MULTIPART_CONTENT, encode_multipart

    return encode_multipart(BOUNDARY, {"images": uploads(named_files)}), MULTIPART_CONTENT


def post_raw(client, url, token, stream, **environ):
    """A POST whose WSGI environ is exactly this (no CONTENT_LENGTH unless given)."""
    return client.generic(
        "POST", url, headers={"Authorization": f"Bearer {token}"}, **{"wsgi.input": stream, **environ}
    )


def test_a_body_over_the_limit_is_413_from_its_content_length_without_reading_it(
    active_model_version, reviewer, token_for, client, api_url, images
):
    body, content_type = multipart_body(images)
    stream = CountingStream(body)

    with override_settings(API_MAX_REQUEST_BYTES=len(body) - 1):
        response = post_raw(
            client, api_url, token_for(reviewer), stream, CONTENT_LENGTH=str(len(body)), CONTENT_TYPE=content_type
        )
        # Through the test client's own encoding too.
        encoded = post_with_token(client, api_url, token_for(reviewer), uploads(images))

    assert response.status_code == 413
    assert "API_MAX_REQUEST_BYTES" in response.json()["error"]
    assert stream.read_bytes == 0
    assert encoded.status_code == 413
    with override_settings(API_MAX_REQUEST_BYTES=len(body)):
        assert post_with_token(client, api_url, token_for(reviewer), uploads(images)).status_code == 200


def test_a_gigabyte_announced_is_refused_before_a_byte_is_read(active_model_version, reviewer, token_for, client, api_url):
    stream = CountingStream(endless=True)

    response = post_raw(
        client, api_url, token_for(reviewer), stream,
        CONTENT_LENGTH=str(1 << 30), CONTENT_TYPE="multipart/form-data; boundary=x",
    )  # fmt: skip

    assert response.status_code == 413
    assert stream.read_bytes == 0


@override_settings(API_MAX_REQUEST_BYTES=100_000)
def test_a_body_without_a_length_is_read_only_up_to_the_limit(active_model_version, reviewer, token_for, client, api_url):
    stream = CountingStream(endless=True)

    response = post_raw(
        client, api_url, token_for(reviewer), stream,
        CONTENT_TYPE="multipart/form-data; boundary=x", **{"wsgi.input_terminated": True},
    )  # fmt: skip

    assert response.status_code == 413
    assert "API_MAX_REQUEST_BYTES" in response.json()["error"]
    assert 100_000 < stream.read_bytes <= 100_000 + 1


def test_a_chunked_body_within_the_limit_is_answered(active_model_version, reviewer, token_for, client, api_url, images):
    """A server that ends the body itself (gunicorn sets wsgi.input_terminated) may omit CONTENT_LENGTH."""
    expected = each_alone(active_model_version, images)
    body, content_type = multipart_body(images)

    response = post_raw(
        client, api_url, token_for(reviewer), CountingStream(body),
        CONTENT_TYPE=content_type, **{"wsgi.input_terminated": True},
    )  # fmt: skip

    assert response.status_code == 200, response.content
    assert response.json()["labels"] == expected


def test_a_body_without_a_length_on_a_server_that_cannot_end_it_is_411(
    active_model_version, reviewer, token_for, client, api_url, images
):
    body, content_type = multipart_body(images)
    stream = CountingStream(body)

    response = post_raw(client, api_url, token_for(reviewer), stream, CONTENT_TYPE=content_type)

    assert response.status_code == 411
    assert "Content-Length" in response.json()["error"]
    assert stream.read_bytes == 0


def test_images_over_the_pixel_budget_are_413_before_any_decode(
    active_model_version, reviewer, token_for, client, api_url, make_image, monkeypatch
):
    """The budget is read from the image headers: nothing is decoded and the model is not even loaded."""
    from PIL import ImageFile

    import predictions.api

    sent = [(f"big-{seed}.png", make_image(seed=seed, fmt="PNG", size=(100, 80))) for seed in range(3)]

    def refuse(what):
        def fail(*args, **kwargs):
            raise AssertionError(f"{what} for a request over the budget")

        return fail

    monkeypatch.setattr(predictions.api, "_predictor", refuse("the model was loaded"))
    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse("pixels were decoded"))
    with override_settings(API_MAX_PIXELS_PER_REQUEST=3 * 100 * 80 - 1):
        response = post_with_token(client, api_url, token_for(reviewer), uploads(sent))

    assert response.status_code == 413
    error = response.json()["error"]
    assert "API_MAX_PIXELS_PER_REQUEST" in error and "24,000 pixels" in error


def test_images_within_the_pixel_budget_are_answered(active_model_version, reviewer, token_for, client, api_url, images):
    with override_settings(API_MAX_PIXELS_PER_REQUEST=len(images) * 64 * 48):
        response = post_with_token(client, api_url, token_for(reviewer), uploads(images))

    assert response.status_code == 200, response.content


def test_a_file_over_the_per_image_pixel_limit_is_left_to_its_own_error(
    active_model_version, reviewer, token_for, client, api_url, images
):
    """Refused from its header, it costs no decode: it does not count against the request's budget."""
    with override_settings(IMAGE_MAX_PIXELS=64 * 48 - 1, API_MAX_PIXELS_PER_REQUEST=64 * 48):
        response = post_with_token(client, api_url, token_for(reviewer), uploads(images[:2]))

    assert response.status_code == 422
    assert all("MP limit" in error["error"] for error in response.json()["errors"])
