"""Browser fixtures: Debian's Chromium driven by Playwright's sync API."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from django.db import connections

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
DESKTOP = {"width": 1280, "height": 900}
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def _unavailable(reason: str) -> None:
    """Skip on a machine without a browser, unless the run demands one (CI)."""
    if os.environ.get("STEWARD_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason} (STEWARD_REQUIRE_BROWSER=1)")
    pytest.skip(reason)


@pytest.fixture
def browser(monkeypatch):
    if not CHROMIUM.exists():
        _unavailable(f"{CHROMIUM} is not installed (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed")
    # Playwright's sync API keeps an event loop in this thread; the test's ORM calls are plain sync.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()
        # While Playwright's event loop runs in this thread, Django keeps the test's connections
        # apart from the ones outside it (asgiref's Local follows the context): hand those back to
        # the pool here, or one stays open and the test database cannot be dropped at the end.
        connections.close_all()


@pytest.fixture
def plain_http(settings):
    """The live server speaks plain HTTP: cookies must not be Secure-only there."""
    settings.SESSION_COOKIE_SECURE = False
    settings.CSRF_COOKIE_SECURE = False


def log_in(browser, live_server, username: str, viewport: dict = DESKTOP):
    """A new page (15 s timeouts) signed in as one of tests/conftest.py's actors (password
    pw-<username>), on the page Steward lands them on."""
    page = browser.new_page(viewport=viewport)
    page.set_default_timeout(15_000)
    page.goto(f"{live_server.url}/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", f"pw-{username}")
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/(tasks|reviews)/$"))
    return page
