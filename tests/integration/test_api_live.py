"""The prediction API over real HTTP: a live server, the ``requests`` client, several threads.

The live server runs in a thread of this process, so ``predictions.inference``'s
load counter seen here is the server's.
"""

from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from predictions import inference
from predictions.services.tokens import api_token_create
from tests.integration.conftest import admin_session

# serialized_rollback: the flush after a transactional test would otherwise drop
# the role groups the data migration created.
pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True, serialized_rollback=True)]

SEEDS = [0, 2, 4, 6]
PASSWORD = "pw-for-tests-only"  # tests/conftest.py's users
TIMEOUT = 60


@pytest.fixture
def api_url(live_server):
    return f"{live_server.url}/api/predict/"


@pytest.fixture
def images(make_image) -> list[tuple[str, bytes]]:
    return [(f"photo-{seed}.jpg", make_image(seed=seed)) for seed in SEEDS]


@pytest.fixture
def expected_labels(active_model_version, images) -> list[str]:
    """Each image predicted on its own, in this process: what every answer must agree with."""
    predictor = inference.get_predictor(active_model_version)
    return [next(predictor.predict_sources([image]))[1].label for image in images]


@pytest.fixture
def reviewer_token(reviewer) -> str:
    return api_token_create(user=reviewer, name="live tests")[1]


def multipart(named_files) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("images", (name, data, "image/jpeg")) for name, data in named_files]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_token_request_over_http(api_url, reviewer_token, images, expected_labels, active_model_version):
    response = requests.post(api_url, files=multipart(images), headers=bearer(reviewer_token), timeout=TIMEOUT)

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["labels"] == expected_labels
    assert [p["file"] for p in body["predictions"]] == [name for name, _ in images]
    assert body["model_version"] == active_model_version.name


def test_session_request_over_http_needs_the_csrf_token(live_server, api_url, reviewer, images, expected_labels):
    session = admin_session(live_server, reviewer)

    without_token = session.post(api_url, files=multipart(images), timeout=TIMEOUT)
    assert without_token.status_code == 403
    assert "CSRF" in without_token.json()["error"]

    page = session.get(api_url, timeout=TIMEOUT)
    assert page.status_code == 200 and 'name="images"' in page.text
    response = session.post(
        api_url, files=multipart(images), headers={"X-CSRFToken": session.cookies["csrftoken"]}, timeout=TIMEOUT
    )
    assert response.status_code == 200, response.text
    assert response.json()["labels"] == expected_labels


def test_every_error_status_over_http(settings, live_server, api_url, reviewer_token, django_user_model, images, active_model_version):
    outsider = django_user_model.objects.create_user(username="outsider", password=PASSWORD, is_staff=True)
    outsider_token = api_token_create(user=outsider, name="x")[1]
    good = multipart(images[:1])

    def status_of(response) -> tuple[int, str]:
        assert response.headers["Content-Type"] == "application/json"
        return response.status_code, response.json().get("error", "")

    assert status_of(requests.post(api_url, files=good, timeout=TIMEOUT))[0] == 401
    assert status_of(requests.post(api_url, files=good, headers=bearer("nope"), timeout=TIMEOUT))[0] == 401
    assert status_of(requests.post(api_url, files=good, headers=bearer(outsider_token), timeout=TIMEOUT))[0] == 403
    assert status_of(requests.put(api_url, headers=bearer(reviewer_token), timeout=TIMEOUT))[0] == 405
    no_files = requests.post(api_url, data={"note": "hi"}, headers=bearer(reviewer_token), timeout=TIMEOUT)
    assert status_of(no_files)[0] == 400

    # The live server thread reads the same settings object.
    limits = settings.API_MAX_FILES, settings.IMAGE_MAX_BYTES
    settings.API_MAX_FILES = 2
    too_many = requests.post(api_url, files=multipart(images), headers=bearer(reviewer_token), timeout=TIMEOUT)
    assert status_of(too_many)[0] == 413
    settings.API_MAX_FILES, settings.IMAGE_MAX_BYTES = limits[0], 100
    too_large = requests.post(api_url, files=good, headers=bearer(reviewer_token), timeout=TIMEOUT)
    assert status_of(too_large)[0] == 413
    settings.API_MAX_FILES, settings.IMAGE_MAX_BYTES = limits

    mixed = multipart([images[0], ("notes.txt", b"not a picture")])
    partly_bad = requests.post(api_url, files=mixed, headers=bearer(reviewer_token), timeout=TIMEOUT)
    assert partly_bad.status_code == 422
    assert partly_bad.json()["labels"][1] is None and partly_bad.json()["labels"][0] is not None

    active_model_version.is_active = False
    active_model_version.save()
    no_model = requests.post(api_url, files=good, headers=bearer(reviewer_token), timeout=TIMEOUT)
    assert status_of(no_model)[0] == 503


def test_model_loaded_once_and_concurrent_requests_all_answered(api_url, reviewer_token, images, expected_labels):
    """8 threads x 3 requests of the images in rotated orders: every answer matches its own order."""
    first = requests.post(api_url, files=multipart(images), headers=bearer(reviewer_token), timeout=TIMEOUT)
    assert first.status_code == 200
    loads = inference.load_count()

    def call(number: int) -> tuple[list[str], list[str]]:
        shift = number % len(images)
        order = list(range(len(images)))[shift:] + list(range(len(images)))[:shift]
        response = requests.post(
            api_url,
            files=multipart([images[i] for i in order]),
            headers=bearer(reviewer_token),
            timeout=TIMEOUT,
        )
        assert response.status_code == 200, response.text
        return response.json()["labels"], [expected_labels[i] for i in order]

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(call, range(24)))

    assert len(answers) == 24
    for got, expected in answers:
        assert got == expected
    assert inference.load_count() == loads
