"""The production path, run rather than described.

- gunicorn with the product's settings and ``DJANGO_DEBUG=0``: the secret, the
  allowed hosts and the CSRF trusted origins from the environment, static files
  collected by ``collectstatic`` and served by whitenoise, HTTPS behind a proxy
  (``X-Forwarded-Proto``), a login POST through it; ``manage.py check --deploy``
  clean in exactly those settings.
- ``manage.py serve`` starts the web server and a cluster, and SIGINT (Ctrl-C)
  stops both, with the cluster's workers.

The server runs on this session's test database (users made here sign in there).
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from django.conf import settings

from tests.integration.conftest import database_environment, descendants, free_port, gunicorn_start

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True, serialized_rollback=True)]

PUBLIC_HOST = "review.example.test"
TRUSTED_ORIGIN = f"https://{PUBLIC_HOST}"
PASSWORD = "a-production-password-7"
HTTP_TIMEOUT = 60
STOP_SECONDS = 60


def manage(*args: str, environment: dict[str, str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "reviewtool.settings", **environment}
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=settings.BASE_DIR, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def production_environment(tmp_path_factory) -> dict[str, str]:
    """The product's settings in production, from the environment alone, with static files collected."""
    environment = {
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(60),
        "DJANGO_ALLOWED_HOSTS": f"{PUBLIC_HOST},127.0.0.1",
        "DJANGO_CSRF_TRUSTED_ORIGINS": TRUSTED_ORIGIN,
        "STATIC_ROOT": str(tmp_path_factory.mktemp("production") / "static"),
    }
    collected = manage("collectstatic", "--noinput", "-v", "0", environment=environment)
    assert collected.returncode == 0, collected.stdout + collected.stderr
    return environment


@pytest.fixture(scope="module")
def gunicorn(django_db_setup, production_environment, tmp_path_factory):
    server = gunicorn_start(
        log_path=tmp_path_factory.mktemp("gunicorn") / "gunicorn.log",
        environment={**database_environment(), **production_environment},
        settings_module="reviewtool.settings",
    )
    try:
        server.wait_until_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture
def staff(django_user_model):
    """A superuser whose password the production hashers can check (the test settings hash with MD5)."""
    from django.contrib.auth.hashers import PBKDF2PasswordHasher

    hasher = PBKDF2PasswordHasher()
    user = django_user_model.objects.create_superuser(username="operator", password=None)
    # Few iterations: the server upgrades the hash on the first login, as after a Django upgrade.
    user.password = hasher.encode(PASSWORD, hasher.salt(), iterations=1000)
    user.save(update_fields=["password"])
    return user


def behind_proxy(gunicorn, host: str | None = None, **headers: str) -> dict[str, str]:
    """The headers a TLS-terminating proxy adds (by default keeping the server's own Host)."""
    return {"X-Forwarded-Proto": "https", "Host": host or gunicorn.url.removeprefix("http://"), **headers}


def cookie_header(**cookies: str) -> str:
    # Sent by hand: requests keeps Secure cookies from a plain-HTTP URL, as a browser would.
    return "; ".join(f"{name}={value}" for name, value in cookies.items())


def test_check_deploy_is_clean_in_the_production_environment(production_environment):
    for extra in ({}, {"MEDIA_STORAGE": "s3", "S3_BUCKET": "review-media", "S3_REGION": "eu-central-1"}):
        result = manage("check", "--deploy", "--fail-level", "WARNING", environment={**production_environment, **extra})
        assert result.returncode == 0, result.stdout + result.stderr
        assert "no issues" in result.stdout


def test_debug_is_off_and_hosts_and_https_come_from_the_environment(gunicorn):
    missing = requests.get(f"{gunicorn.url}/no-such-page/", headers=behind_proxy(gunicorn), timeout=HTTP_TIMEOUT)
    assert missing.status_code == 404
    assert "URLconf" not in missing.text and "Traceback" not in missing.text  # no debug page
    assert missing.headers["Strict-Transport-Security"].startswith("max-age=")

    unknown_host = requests.get(
        f"{gunicorn.url}/admin/login/", headers=behind_proxy(gunicorn, host="elsewhere.example"), timeout=HTTP_TIMEOUT
    )
    assert unknown_host.status_code == 400

    plain = requests.get(f"{gunicorn.url}/admin/login/", allow_redirects=False, timeout=HTTP_TIMEOUT)
    assert plain.status_code == 301 and plain.headers["Location"].startswith("https://")


def test_collected_static_files_are_served_by_whitenoise_with_far_future_caching(gunicorn, production_environment):
    page = requests.get(f"{gunicorn.url}/admin/login/", headers=behind_proxy(gunicorn), timeout=HTTP_TIMEOUT)
    assert page.status_code == 200
    # The manifest's hashed name: only collectstatic writes it.
    stylesheet = re.search(r'href="(/static/admin/css/base\.[0-9a-f]{12}\.css)"', page.text)
    assert stylesheet, page.text[:2000]
    path = stylesheet.group(1)
    assert (Path(production_environment["STATIC_ROOT"]) / path.removeprefix("/static/")).is_file()

    css = requests.get(
        gunicorn.url + path, headers=behind_proxy(gunicorn, **{"Accept-Encoding": "gzip"}), timeout=HTTP_TIMEOUT
    )
    assert css.status_code == 200 and css.headers["Content-Type"].startswith("text/css")
    assert css.headers["Content-Encoding"] == "gzip"
    assert "immutable" in css.headers["Cache-Control"] and "max-age=315360000" in css.headers["Cache-Control"]


def test_a_login_post_through_gunicorn_honours_the_trusted_origins(gunicorn, staff):
    login_url = f"{gunicorn.url}/admin/login/?next=/admin/"

    def log_in(origin: str) -> requests.Response:
        form = requests.get(login_url, headers=behind_proxy(gunicorn), timeout=HTTP_TIMEOUT)
        token = form.cookies["csrftoken"]
        assert re.search(r"csrftoken=[^;]+;.*Secure", form.headers["Set-Cookie"]), "the CSRF cookie must be Secure"
        return requests.post(
            login_url,
            data={"username": staff.username, "password": PASSWORD, "csrfmiddlewaretoken": token},
            # The proxy forwards the server's own Host; the browser's Origin is the public name.
            headers=behind_proxy(gunicorn, Origin=origin, Cookie=cookie_header(csrftoken=token)),
            allow_redirects=False,
            timeout=HTTP_TIMEOUT,
        )

    assert log_in("https://evil.example").status_code == 403

    response = log_in(TRUSTED_ORIGIN)
    assert response.status_code == 302 and response.headers["Location"] == "/admin/"
    session = response.cookies["sessionid"]
    index = requests.get(
        f"{gunicorn.url}/admin/",
        headers=behind_proxy(gunicorn, Cookie=cookie_header(sessionid=session)),
        allow_redirects=False,
        timeout=HTTP_TIMEOUT,
    )
    assert index.status_code == 200 and "operator" in index.text


def _gone(pid: int) -> bool:
    """Exited: no such process, or a zombie waiting for a parent that is not ours to reap it."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state == "Z"


def test_serve_runs_the_web_server_and_a_cluster_and_ctrl_c_stops_both(transactional_db, tmp_path):
    port = free_port()
    log_path = tmp_path / "serve.log"
    env = {
        **os.environ,
        **database_environment(),
        "DJANGO_SETTINGS_MODULE": "tests.integration.settings",
        "Q_CLUSTER_NAME": f"reviewtool-serve-{port}",
        "PYTHONUNBUFFERED": "1",
    }
    if not env["DATABASE_URL"]:
        del env["DATABASE_URL"]
    with log_path.open("ab") as log:
        serve = subprocess.Popen(
            [sys.executable, "manage.py", "serve", "--port", str(port)],
            cwd=settings.BASE_DIR,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    processes: list[int] = []
    try:
        deadline = time.monotonic() + STOP_SECONDS
        while True:
            assert serve.poll() is None, f"serve exited with {serve.returncode}:\n{log_path.read_text()[-4000:]}"
            log_text = log_path.read_text(errors="replace")
            cluster_running = any(" running." in line and "Q Cluster" in line for line in log_text.splitlines())
            try:
                answered = requests.get(f"http://127.0.0.1:{port}/admin/login/", timeout=2).status_code == 200
            except requests.RequestException:
                answered = False
            if cluster_running and answered:
                break
            assert time.monotonic() < deadline, f"serve did not start both servers:\n{log_text[-4000:]}"
            time.sleep(0.3)
        processes = descendants(serve.pid)
        assert len(processes) >= 3, "runserver, qcluster and its worker"

        serve.send_signal(signal.SIGINT)
        assert serve.wait(timeout=STOP_SECONDS) == 0, log_path.read_text()[-4000:]
        deadline = time.monotonic() + 10
        while not all(_gone(pid) for pid in processes) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert [pid for pid in processes if not _gone(pid)] == [], "a child of serve outlived Ctrl-C"
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://127.0.0.1:{port}/admin/login/", timeout=2)
    finally:
        # Only what is still running: a pid that exited may belong to someone else by now.
        for pid in [pid for pid in processes if not _gone(pid)] + ([serve.pid] if serve.poll() is None else []):
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        serve.wait()
