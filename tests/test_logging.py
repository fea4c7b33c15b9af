"""The project's logging, as a process started with the real settings writes it (issue 17 item 11)."""

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# A 404 through the whole request handler, and a view refusing a request (403) with
# an exception raised in it, so that a traceback would be there to print.
SCRIPT = """
import django
django.setup()
from django.core.exceptions import PermissionDenied
from django.core.handlers.exception import response_for_exception
from django.test import Client, RequestFactory

# secure: production redirects plain HTTP to HTTPS.
assert Client().get("/no-such-page/", secure=True).status_code == 404
request = RequestFactory().get("/media/images/x.jpg")
try:
    raise PermissionDenied("needs images.view_image")
except PermissionDenied as exc:
    assert response_for_exception(request, exc).status_code == 403
try:
    raise ValueError("a bug")
except ValueError as exc:
    assert response_for_exception(request, exc).status_code == 500
"""


def run_with_settings(tmp_path, *, debug: bool) -> list[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_URL", "REDIS_URL"))}
    env.update(
        DJANGO_SETTINGS_MODULE="reviewtool.settings",
        DJANGO_DEBUG="1" if debug else "0",
        DJANGO_SECRET_KEY=secrets.token_urlsafe(60),
        DJANGO_ALLOWED_HOSTS="testserver",
        REVIEWTOOL_VAR_DIR=str(tmp_path),
        LOG_LEVEL="INFO",
        PYTHONPATH=str(REPO),
    )
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stderr.splitlines()


@pytest.mark.parametrize("debug", [True, False], ids=["debug", "production"])
def test_request_warnings_are_logged_once_and_a_refusal_is_one_line(tmp_path, debug):
    lines = run_with_settings(tmp_path, debug=debug)

    not_found = [line for line in lines if "Not Found: /no-such-page/" in line]
    assert len(not_found) == 1, lines
    refused = [line for line in lines if "Forbidden (Permission denied): /media/images/x.jpg" in line]
    assert len(refused) == 1, lines
    assert refused[0].endswith("(PermissionDenied: needs images.view_image)")
    # The refusal brought no traceback; the server's own error (500) keeps its one.
    assert sum("Traceback" in line for line in lines) == 1, lines
    assert lines[-1] == "ValueError: a bug", lines


@pytest.mark.django_db
def test_admin_pages_name_an_icon_that_is_served(client, lead):
    """Without one, the browser asks for /favicon.ico on every page: a 404 and a log line each time."""
    import re

    from django.test import Client

    client.force_login(lead)
    for url in ("/admin/", "/admin/login/"):
        page = (client if url == "/admin/" else Client()).get(url)
        assert page.status_code == 200
        icon = re.search(r'<link rel="icon" type="image/svg\+xml" href="([^"]+)">', page.content.decode())
        assert icon, f"{url} names no icon"
    # The file collectstatic hands to whitenoise (the test server has no collected files to serve).
    from django.contrib.staticfiles import finders
    from django.templatetags.static import static

    assert icon.group(1) == static("predictions/favicon.svg")
    found = finders.find("predictions/favicon.svg")
    assert found and Path(found).read_text().startswith("<svg")
