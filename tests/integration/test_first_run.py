"""The first `make run` on a fresh clone: the admin answers while the demo model still trains.

`make run`'s command (`manage.py serve --bootstrap`: migrate and the admin account, then
runserver plus one qcluster) runs as a real process with the product's settings, on an
empty var/, weights/, media/ and demo data folder of this test's own (a new SQLite
database there, no demo.pth) and a tiny demo recipe from the environment (the product's
takes minutes). The test waits for the login page, signs in with the generated password,
uploads an image while the demo model trains, and finds it predicted by the demo model
through its activation.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests
from django.conf import settings

from tests.integration.conftest import descendants, tiny_jpeg

pytestmark = pytest.mark.integration

# Small enough for seconds of training, big enough that the web answers and an upload
# lands long before it ends (generating the images alone takes several seconds). Six
# optimizer steps in all: ml.train's one-cycle schedule fails on four or fewer.
TINY_RECIPE = {"DEMO_IMAGES_PER_CLASS": "20", "DEMO_EPOCHS": "3", "DEMO_INPUT_SIZE": "32"}
WAIT_SECONDS = 240
STOP_SECONDS = 60


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class FirstRun:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = root / "make-run.log"
        (root / "static").mkdir()
        self.env = {
            key: value
            for key, value in os.environ.items()
            # The embedded defaults of a fresh clone: SQLite and the ORM broker.
            if key not in ("DATABASE_URL", "REDIS_URL", "SQLITE_PATH", "Q_SYNC", "Q_TIMEOUT", "Q_RETRY")
        }
        self.env.update(
            DJANGO_SETTINGS_MODULE="reviewtool.settings",
            REVIEWTOOL_VAR_DIR=str(root / "var"),
            WEIGHTS_DIR=str(root / "weights"),
            MEDIA_ROOT=str(root / "media"),
            STATIC_ROOT=str(root / "static"),
            DEMO_DATA_DIR=str(root / "demo_data"),
            Q_CLUSTER_NAME=f"first-run-{uuid.uuid4().hex[:8]}",
            PYTHONUNBUFFERED="1",
            **TINY_RECIPE,
        )
        self.serve: subprocess.Popen | None = None

    def manage(self, *args: str) -> list[str]:
        return [sys.executable, str(Path(settings.BASE_DIR) / "manage.py"), *args]

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.serve = subprocess.Popen(
                self.manage("serve", "--bootstrap", "--port", str(self.port)),
                cwd=settings.BASE_DIR, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_for(self, condition, what: str):
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            result = condition()
            if result:
                return result
            assert self.serve.poll() is None, f"serve exited with {self.serve.returncode}:\n{self.log()[-6000:]}"
            if time.monotonic() > deadline:
                pytest.fail(f"gave up after {WAIT_SECONDS} s waiting for {what}\n{self.log()[-6000:]}")
            time.sleep(0.2)

    def query(self, sql: str, *params):
        with sqlite3.connect(self.root / "var" / "db.sqlite3", timeout=30) as database:
            return database.execute(sql, params).fetchall()

    def demo_job_status(self) -> str:
        [(status, error)] = self.query("SELECT status, error FROM predictions_trainingjob")
        if status == "failed":
            pytest.fail(f"the demo training failed: {error}\n{self.log()[-6000:]}")
        return status

    def stop(self) -> None:
        """serve's own Ctrl-C handling first; then whatever is left of it and its children, killed."""
        if self.serve is None:
            return
        processes = [self.serve.pid, *descendants(self.serve.pid)]
        if self.serve.poll() is None:
            self.serve.send_signal(signal.SIGTERM)
            try:
                self.serve.wait(timeout=STOP_SECONDS)
            except subprocess.TimeoutExpired:
                pass
        for pid in processes:
            try:
                os.killpg(pid, signal.SIGKILL)  # the children run in process groups of their own
            except (ProcessLookupError, PermissionError):
                pass
        self.serve.wait()


@pytest.fixture
def first_run(tmp_path):
    run = FirstRun(tmp_path)
    try:
        yield run
    finally:
        run.stop()


def test_the_admin_answers_while_the_demo_model_trains_and_predicts_what_was_uploaded_meanwhile(first_run):
    first_run.start()

    def login_page():
        """the admin's login page to answer 200"""
        try:
            return requests.get(f"{first_run.url}/admin/login/", timeout=10).status_code == 200
        except requests.ConnectionError:
            return False

    first_run.wait_for(login_page, "the admin's login page")
    assert first_run.demo_job_status() in ("queued", "running"), "the web answered only after the training"
    assert not first_run.query("SELECT id FROM predictions_modelversion")

    # The banner: after runserver's and the cluster's start-up lines, with the password in it.
    password = (first_run.root / "var" / "admin-password.txt").read_text().strip()
    first_run.wait_for(lambda: "Ctrl-C stops both" in first_run.log(), "the banner")
    log = first_run.log()
    banner = log.index(f"Review tool: {first_run.url}/admin/")
    assert log.index("Queued the demo model") < banner
    assert log.index("Quit the server with CONTROL-C.") < banner
    assert re.search(r"Q Cluster .* running\.", log[:banner]), log
    assert f"Log in as 'admin' with password {password}" in log[banner:]

    session = requests.Session()
    session.get(f"{first_run.url}/admin/login/", timeout=10)
    signed_in = session.post(
        f"{first_run.url}/admin/login/",
        data={"username": "admin", "password": password, "csrfmiddlewaretoken": session.cookies["csrftoken"],
              "next": "/admin/"},
        timeout=30,
    )  # fmt: skip
    assert signed_in.url.endswith("/admin/"), "login failed"
    index = session.get(f"{first_run.url}/admin/", timeout=30).text
    if first_run.demo_job_status() != "done":  # still training after the page was made: it must say so
        assert "Demo model:" in index

    upload_url = f"{first_run.url}/admin/images/image/upload/"
    session.get(upload_url, timeout=30).raise_for_status()
    uploaded = session.post(
        upload_url,
        data={"name": "while training", "csrfmiddlewaretoken": session.cookies["csrftoken"]},
        files={"files": ("early.jpg", tiny_jpeg(7), "image/jpeg")},
        timeout=60,
    )
    assert uploaded.status_code == 200 and "/admin/images/uploadbatch/" in uploaded.url, uploaded.text[-2000:]
    [(image_id,)] = first_run.query("SELECT id FROM images_image WHERE original_name = 'early.jpg'")
    assert not first_run.query(
        "SELECT id FROM predictions_modelversion WHERE is_active"
    ), "the demo model was active before the upload: the upload did not happen while it trained"

    def predicted():
        """the early upload to be predicted"""
        first_run.demo_job_status()  # fails at once should the training fail
        return first_run.query(
            "SELECT v.name, v.is_active, j.reason FROM predictions_prediction p "
            "JOIN predictions_modelversion v ON v.id = p.model_version_id "
            "LEFT JOIN predictions_predictionjob j ON j.id = p.job_id WHERE p.image_id = ?",
            image_id,
        )

    assert first_run.wait_for(predicted, "the early upload's prediction") == [("demo", 1, "activation")]
    first_run.wait_for(lambda: first_run.demo_job_status() == "done", "the demo job to be recorded done")
    assert (first_run.root / "weights" / "demo.pth").is_file()
    [(epochs_done, history)] = first_run.query("SELECT epochs_done, history FROM predictions_trainingjob")
    assert epochs_done == 3 and '"kind": "demo"' in history
    assert re.search(r"Demo model: epoch 3 of 3, validation accuracy", first_run.log())
