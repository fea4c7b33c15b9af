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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
from django.conf import settings

STOP_TIMEOUT_SECONDS = 20
STARTUP_TIMEOUT_SECONDS = 120


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

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def assert_alive(self) -> None:
        assert self.process.poll() is None, f"qcluster exited with {self.process.returncode}:\n{self.log_tail()}"

    def wait_until_running(self, timeout: float = STARTUP_TIMEOUT_SECONDS) -> None:
        """Until its workers, pusher and monitor are up (django-q2 logs "Q Cluster ... running")."""

        def running():
            """the cluster to start"""
            return any(
                line.rstrip().endswith(" running.") and "Q Cluster" in line for line in self.log().splitlines()
            )

        wait_for(running, timeout=timeout, interval=0.2, cluster=self)

    def processes(self) -> list[int]:
        """Every process of the cluster: the qcluster command and all it forked."""
        return [self.pid, *descendants(self.pid)]

    def kill(self) -> None:
        """kill -9 the whole cluster, as a power cut or the OOM killer would."""
        os.killpg(self.pid, signal.SIGKILL)
        self.process.wait()


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
    monkeypatch.setattr(Conf, "Q_STAT", f"django_q:{name}:cluster")  # where the clusters' status is kept
    # Tasks queued here must travel to the cluster instead of running inline.
    monkeypatch.setattr(Conf, "SYNC", False)
    return name


def cluster_start(*, name: str, log_path: Path, environment: dict[str, str] | None = None) -> RunningCluster:
    """Start `manage.py qcluster` (tests/integration/settings.py) on this session's test database."""
    if settings.DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
        assert settings.DATABASES["default"]["TEST"]["NAME"], "the SQLite test database must be a file"
    env = {
        **os.environ,
        **database_environment(),
        "DJANGO_SETTINGS_MODULE": "tests.integration.settings",
        "Q_CLUSTER_NAME": name,
        "PYTHONUNBUFFERED": "1",
        **(environment or {}),
    }
    if not env["DATABASE_URL"]:
        del env["DATABASE_URL"]
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, str(Path(settings.BASE_DIR) / "manage.py"), "qcluster"],
            cwd=settings.BASE_DIR,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            # Its own process group, so teardown can reach the forked workers too.
            start_new_session=True,
        )
    return RunningCluster(process=process, log_path=log_path)


@pytest.fixture
def start_qcluster(transactional_db, cluster_name, tmp_path):
    """start_qcluster(**environment) starts one more cluster on this test's queue; all are stopped afterwards.

    ``environment`` overrides settings the cluster reads from the environment
    (Q_RETRY, PREDICTION_SWEEP_AFTER_SECONDS, ...). Each cluster logs to its own file.
    """
    started: list[RunningCluster] = []

    def start(**environment: str) -> RunningCluster:
        cluster = cluster_start(
            name=cluster_name,
            log_path=tmp_path / f"qcluster-{len(started) + 1}.log",
            environment=environment,
        )
        started.append(cluster)
        return cluster

    try:
        yield start
    finally:
        for cluster in started:
            _stop(cluster.process)


@pytest.fixture
def qcluster(start_qcluster):
    """A running `manage.py qcluster`; stopped (SIGTERM, then its whole process group killed) afterwards."""
    return start_qcluster()


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


def descendants(pid: int) -> list[int]:
    found = []
    for child in child_pids(pid):
        found += [child, *descendants(child)]
    return found


def child_pids(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children")
    try:
        return [int(child) for child in children.read_text().split()]
    except (OSError, ValueError):
        return []


def loads_torch(pid: int) -> bool:
    """Whether the process has libtorch mapped: the proof that it imported torch."""
    return "libtorch" in Path(f"/proc/{pid}/maps").read_text()


def tiny_jpeg(number: int, size: int = 32) -> bytes:
    """A distinct small JPEG for each number below 65536: its bits drawn as black and white blocks."""
    import io

    from PIL import Image as PILImage
    from PIL import ImageDraw

    picture = PILImage.new("RGB", (size, size), ((number * 53) % 256, (number * 97 + 40) % 256, (number * 31) % 256))
    draw = ImageDraw.Draw(picture)
    block = size // 8
    for bit in range(16):
        x, y = (bit % 8) * block, (bit // 8) * block
        draw.rectangle([x, y, x + block - 1, y + block - 1], fill="white" if number >> bit & 1 else "black")
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def upload_images(*, user, count: int, name: str):
    """Upload ``count`` distinct tiny JPEGs as one batch, the way the admin form does (images.services)."""
    import io

    from images.services import upload_files

    batch = upload_files(
        files=((f"photo-{number:04d}.jpg", io.BytesIO(tiny_jpeg(number))) for number in range(count)),
        user=user,
        name=name,
    )
    assert batch.images.count() == count, batch.report
    return batch


def cluster_status(cluster: RunningCluster):
    """The status the cluster publishes through django-q2's shared cache (what `qmonitor` shows), or None."""
    from django_q.status import Stat

    return next((stat for stat in Stat.get_all() if stat.pid == cluster.pid), None)


def admin_session(live_server, user, *, password: str = "pw-for-tests-only", timeout: float = 60):
    """A ``requests`` session signed in through the admin's login form, as a browser would be.

    The password is the one tests/conftest.py gives its users.
    """
    import requests

    session = requests.Session()
    login_url = f"{live_server.url}/admin/login/"
    session.get(login_url, timeout=timeout).raise_for_status()
    response = session.post(
        login_url,
        data={
            "username": user.get_username(),
            "password": password,
            "csrfmiddlewaretoken": session.cookies["csrftoken"],
            "next": "/admin/",
        },
        timeout=timeout,
    )
    assert response.url.endswith("/admin/"), "login failed"
    return session


# --- A web server in its own process, and a queue for a whole module ------------------


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class RunningWeb:
    process: subprocess.Popen
    log_path: Path
    url: str

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait_until_ready(self, timeout: float = STARTUP_TIMEOUT_SECONDS) -> None:
        """Until it answers HTTP (any status: production settings answer plain HTTP with a redirect)."""
        import requests

        deadline = time.monotonic() + timeout
        while True:
            try:
                requests.get(self.url + "/admin/login/", timeout=2, allow_redirects=False)
                return
            except requests.RequestException:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the web server did not answer on {self.url}:\n{self.log()[-4000:]}")
            time.sleep(0.2)

    def stop(self) -> None:
        _stop(self.process)


def gunicorn_start(
    *, log_path: Path, environment: dict[str, str], settings_module: str = "tests.integration.settings"
) -> RunningWeb:
    """gunicorn (the production WSGI server) on a free port of 127.0.0.1, on this session's test database."""
    port = free_port()
    env = {
        **os.environ,
        **database_environment(),
        "DJANGO_SETTINGS_MODULE": settings_module,
        "PYTHONUNBUFFERED": "1",
        **environment,
    }
    if not env.get("DATABASE_URL"):
        env.pop("DATABASE_URL", None)
    command = [
        sys.executable, "-m", "gunicorn", "reviewtool.wsgi:application",
        "--bind", f"127.0.0.1:{port}", "--workers", "1", "--threads", "4",
        "--access-logfile", "-", "--graceful-timeout", "5",
    ]  # fmt: skip
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            command, cwd=settings.BASE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    return RunningWeb(process=process, log_path=log_path, url=f"http://127.0.0.1:{port}")


@contextmanager
def module_queue() -> Iterator[str]:
    """What ``cluster_name`` does for one test, for a cluster shared by a module's tests."""
    from django_q.conf import Conf

    name = f"reviewtool-test-{uuid.uuid4().hex[:8]}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Conf, "PREFIX", name)
        patch.setattr(Conf, "CLUSTER_NAME", name)
        patch.setattr(Conf, "Q_STAT", f"django_q:{name}:cluster")
        patch.setattr(Conf, "SYNC", False)
        yield name
