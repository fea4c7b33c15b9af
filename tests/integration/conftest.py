"""A real task cluster for the integration tests.

``qcluster`` starts ``python manage.py qcluster`` (tests/integration/settings.py:
no sync mode, one worker) on this session's test database: the SQLite file of
tests/settings.py, or the PostgreSQL test database when DATABASE_URL is set.
With REDIS_URL set, tasks go through Redis. Media and weights folders are the
same as this process's (tests/settings.py puts them in the environment).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
from django.conf import settings

STOP_TIMEOUT_SECONDS = 20


@dataclass
class RunningCluster:
    process: subprocess.Popen
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def assert_alive(self) -> None:
        assert self.process.poll() is None, f"qcluster exited with {self.process.returncode}:\n{self.log_tail()}"


def database_environment() -> dict[str, str]:
    """Point a subprocess at the test database this process is using."""
    from django.db import connection

    database = connection.settings_dict
    if database["ENGINE"] == "django.db.backends.sqlite3":
        return {"SQLITE_PATH": str(database["NAME"]), "DATABASE_URL": ""}
    credentials = quote(database["USER"] or "", safe="")
    if database["PASSWORD"]:
        credentials += ":" + quote(database["PASSWORD"], safe="")
    host = f"{credentials}@{database['HOST'] or 'localhost'}:{database['PORT'] or 5432}"
    return {"DATABASE_URL": f"postgres://{host}/{database['NAME']}"}


@pytest.fixture
def cluster_name(monkeypatch) -> str:
    """A queue of this test's own, shared by this process (the producer) and the cluster.

    The name also salts django-q2's signed packages, so both sides must agree.
    """
    from django_q.conf import Conf

    name = f"reviewtool-test-{uuid.uuid4().hex[:8]}"
    monkeypatch.setattr(Conf, "PREFIX", name)
    monkeypatch.setattr(Conf, "CLUSTER_NAME", name)
    # Tasks queued here must travel to the cluster instead of running inline.
    monkeypatch.setattr(Conf, "SYNC", False)
    return name


@pytest.fixture
def qcluster(transactional_db, cluster_name, tmp_path):
    """A running `manage.py qcluster`; stopped (SIGTERM, then its whole process group killed) afterwards."""
    if settings.DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
        assert settings.DATABASES["default"]["TEST"]["NAME"], "the SQLite test database must be a file"
    log_path = tmp_path / "qcluster.log"
    env = {
        **os.environ,
        **database_environment(),
        "DJANGO_SETTINGS_MODULE": "tests.integration.settings",
        "Q_CLUSTER_NAME": cluster_name,
        "PYTHONUNBUFFERED": "1",
    }
    if not env["DATABASE_URL"]:
        del env["DATABASE_URL"]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, str(Path(settings.BASE_DIR) / "manage.py"), "qcluster"],
            cwd=settings.BASE_DIR,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            # Its own process group, so teardown can reach the forked workers too.
            start_new_session=True,
        )
    cluster = RunningCluster(process=process, log_path=log_path)
    try:
        yield cluster
    finally:
        _stop(process)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)  # workers left behind, or a cluster that would not stop
    except (ProcessLookupError, PermissionError):
        pass
    process.wait()


def wait_for(condition, *, timeout: float, interval: float = 0.5, cluster: RunningCluster | None = None):
    """Poll ``condition`` until it returns something truthy; fail with the cluster's log after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if cluster is not None:
            cluster.assert_alive()
        if time.monotonic() > deadline:
            log = cluster.log_tail() if cluster is not None else ""
            pytest.fail(f"gave up after {timeout:.0f} s waiting for {condition.__doc__ or condition}\n{log}")
        time.sleep(interval)


def child_pids(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children")
    try:
        return [int(child) for child in children.read_text().split()]
    except (OSError, ValueError):
        return []


def loads_torch(pid: int) -> bool:
    """Whether the process has libtorch mapped: the proof that it imported torch."""
    return "libtorch" in Path(f"/proc/{pid}/maps").read_text()
