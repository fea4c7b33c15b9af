"""SQLite, the embedded default, with every kind of writer at once.

A live web server, a real qcluster predicting a few hundred images, two
reviewers deciding through the review screen's JSON endpoints and an upload
through the admin form, all at the same time: no request fails and no process
logs "database is locked" (WAL, immediate transactions and a busy timeout in
reviewtool/settings.py).
"""

import logging
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from django.db import connection
from django.urls import reverse

from tests.integration.conftest import admin_session, tiny_jpeg, upload_images, wait_for

pytestmark = [
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
    pytest.mark.skipif(connection.vendor != "sqlite", reason="'database is locked' is SQLite's failure mode"),
]

FIRST_UPLOAD = 200
SECOND_UPLOAD = 100
DECISIONS_EACH = 25
TIMEOUT = 60
WORK_TIMEOUT = 120
LOCKED = re.compile(r"database is locked|OperationalError", re.IGNORECASE)


def signed_in(live_server, user) -> requests.Session:
    """A browser-like session: signed in, CSRF token at hand for the JSON endpoints."""
    session = admin_session(live_server, user, timeout=TIMEOUT)
    session.headers["X-CSRFToken"] = session.cookies["csrftoken"]
    return session


def test_web_cluster_reviewers_and_an_upload_write_at_once_without_locking_errors(
    live_server, qcluster, uploader, reviewer, second_reviewer, active_model_version, caplog
):
    from predictions.models import Prediction, Review

    caplog.set_level(logging.WARNING)
    qcluster.wait_until_running()
    first = upload_images(user=uploader, count=FIRST_UPLOAD, name="first")
    wait_for(lambda: Prediction.objects.count() >= 20, timeout=120, cluster=qcluster)

    failures: list[str] = []
    decided: dict[str, int] = {}
    start = threading.Barrier(3)

    sessions = {user: signed_in(live_server, user) for user in (reviewer, second_reviewer, uploader)}

    def review(user) -> None:
        session = sessions[user]
        next_url = live_server.url + reverse("admin:predictions_review_next")
        decide_url = live_server.url + reverse("admin:predictions_review_decide")
        start.wait(timeout=TIMEOUT)
        count = 0
        deadline = time.monotonic() + WORK_TIMEOUT
        while count < DECISIONS_EACH:
            if time.monotonic() > deadline:
                failures.append(f"{user}: only {count} images to review after {WORK_TIMEOUT} s")
                return
            response = session.post(next_url, data={"count": 1}, timeout=TIMEOUT)
            if response.status_code != 200:
                failures.append(f"{user} next: {response.status_code} {response.text[:300]}")
                return
            items = response.json()["items"]
            if not items:
                time.sleep(0.2)  # the cluster has not predicted more yet
                continue
            item = items[0]
            response = session.post(
                decide_url,
                data={"image": item["image"]["id"], "prediction": item["prediction"]["id"], "label": "confirm"},
                timeout=TIMEOUT,
            )
            if response.status_code != 200:
                failures.append(f"{user} decide: {response.status_code} {response.text[:300]}")
                return
            count += 1
        decided[user.get_username()] = count

    def upload() -> None:
        session = sessions[uploader]
        files = [
            ("files", (f"second-{number}.jpg", tiny_jpeg(number), "image/jpeg"))
            for number in range(FIRST_UPLOAD, FIRST_UPLOAD + SECOND_UPLOAD)
        ]
        start.wait(timeout=TIMEOUT)
        response = session.post(
            live_server.url + reverse("admin:images_image_upload"),
            data={"name": "second"},
            files=files,
            allow_redirects=False,
            timeout=TIMEOUT,
        )
        if response.status_code != 302:
            failures.append(f"upload: {response.status_code} {response.text[:300]}")

    with ThreadPoolExecutor(max_workers=3) as pool:
        for future in [pool.submit(review, reviewer), pool.submit(review, second_reviewer), pool.submit(upload)]:
            future.result()

    assert not failures, failures
    assert decided == {"reviewer": DECISIONS_EACH, "reviewer2": DECISIONS_EACH}
    assert Review.objects.count() == 2 * DECISIONS_EACH
    assert Review.objects.values("image").distinct().count() == 2 * DECISIONS_EACH  # no image decided twice

    def all_predicted():
        """both uploads predicted"""
        return Prediction.objects.count() == FIRST_UPLOAD + SECOND_UPLOAD

    wait_for(all_predicted, timeout=120, cluster=qcluster)
    assert first.images.count() == FIRST_UPLOAD
    assert not LOCKED.search(qcluster.log()), qcluster.log_tail()
    assert not [record for record in caplog.records if LOCKED.search(record.getMessage())]
