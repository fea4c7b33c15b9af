"""A real browser on a live server with a real task cluster behind it.

Chromium is Debian's (/usr/bin/chromium; Playwright's own browser download is not
available here), driven by Playwright's sync API. The tests are skipped only
where no Chromium is installed. The cluster is the integration tests' fixture.

SCREENSHOTS_DIR=docs makes the test write the README's screenshots there
(`make screenshots`); without it they go to the test's temp folder, so the
screenshot code runs, and is checked, on every `make test`.
SCREENSHOTS_CHECKPOINT=weights/demo.pth (the demo model `make run` trains) puts
a trained model behind the pictures; by default the suite's tiny random-weight
checkpoint predicts.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from django.db import connections

# The integration tests' real qcluster on this session's test database: all of
# that conftest's fixtures (qcluster and the ones it builds on), whatever they become.
from tests.integration.conftest import *  # noqa: E402,F401,F403

CHROMIUM_NAMES = ("chromium", "chromium-browser")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1400, "height": 900}
# Generous: a loaded two-core CI machine runs the server, the cluster and the browser.
ACTION_TIMEOUT_MS = 60_000


def chromium_path() -> str | None:
    configured = os.environ.get("CHROMIUM_PATH")
    if configured:
        return configured if os.access(configured, os.X_OK) else None
    return next((found for found in map(shutil.which, CHROMIUM_NAMES) if found), None)


def pytest_runtest_setup(item):
    # Before any fixture starts a server or a cluster for nothing.
    if item.get_closest_marker("e2e") and chromium_path() is None:
        pytest.skip("no Chromium installed (apt-get install chromium, or set CHROMIUM_PATH)")


@pytest.fixture
def browser(monkeypatch):
    """Chromium, headless; closed (and Playwright's event loop stopped) before the database is flushed."""
    executable = chromium_path()
    assert executable, "no Chromium (tests marked e2e are skipped without one)"
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an asyncio loop in this thread, and Django's
    # guard would take this test's own ORM calls for calls from async code.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()
            # While that loop runs, this thread's database connections are a
            # separate set (asgiref's Local); close them here, or they stay open
            # and PostgreSQL refuses to drop the test database at the end.
            connections.close_all()


@pytest.fixture
def new_page(browser, live_server):
    """new_page() opens a page in a fresh browser context (its own cookies) on the live server."""
    contexts = []

    def open_page():
        context = browser.new_context(viewport=VIEWPORT, base_url=live_server.url, accept_downloads=True)
        context.set_default_timeout(ACTION_TIMEOUT_MS)
        context.set_default_navigation_timeout(ACTION_TIMEOUT_MS)
        # The admin's navigation sidebar folded away (its own remembered setting):
        # the changelist's columns then fit the window.
        context.add_init_script("localStorage.setItem('django.admin.navSidebarIsOpen', 'false')")
        contexts.append(context)
        return context.new_page()

    yield open_page
    for context in contexts:
        context.close()


@pytest.fixture
def screenshots_dir(tmp_path) -> Path:
    configured = os.environ.get("SCREENSHOTS_DIR")
    directory = Path(configured).resolve() if configured else tmp_path / "screenshots"
    directory.mkdir(parents=True, exist_ok=True)
    return directory


@pytest.fixture
def screenshots_checkpoint() -> Path | None:
    configured = os.environ.get("SCREENSHOTS_CHECKPOINT")
    if not configured:
        return None
    path = Path(configured).resolve()
    if not path.is_file():
        pytest.fail(f"SCREENSHOTS_CHECKPOINT={configured}: no such file (`make run` trains weights/demo.pth)")
    return path
