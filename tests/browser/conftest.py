"""Browser fixtures: Debian's Chromium driven by Playwright's sync API."""
from __future__ import annotations

import os
import re
import time
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


@pytest.fixture(scope="module")
def _chromium():
    """One Chromium for the tests of a module: Playwright and Chromium starting and stopping took
    about 0.7 s a test. The tests share the process only (see browser)."""
    if not CHROMIUM.exists():
        _unavailable(f"{CHROMIUM} is not installed (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed")
    ARTIFACTS.mkdir(exist_ok=True)
    outside = {alias: connections[alias] for alias in connections}
    with pytest.MonkeyPatch.context() as monkeypatch:
        # Playwright's sync API keeps an event loop in this thread; the tests' ORM calls are plain sync.
        monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        with sync_playwright() as playwright:
            # While that loop runs, Django looks up connections in storage of the loop's own (asgiref's
            # Local follows the context), where it would open new ones: without the test database's
            # seeded rows (the serialized rollback of the tests after the first restored nothing),
            # and left open, so that the test database could not be dropped. Use the same ones.
            for alias, connection in outside.items():
                connections[alias] = connection
            chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            yield chromium
            chromium.close()


@pytest.fixture
def browser(_chromium):
    """Chromium, shared with the other tests of the module. browser.new_page() gives each page a
    context of its own (cookies, storage, cache), and every context a test opened is closed at its
    end, so nothing of one test reaches the next."""
    yield _chromium
    for context in _chromium.contexts:
        context.close()


@pytest.fixture
def plain_http(settings):
    """The live server speaks plain HTTP: cookies must not be Secure-only there."""
    settings.SESSION_COOKIE_SECURE = False
    settings.CSRF_COOKIE_SECURE = False


# Pages run under Steward's Content-Security-Policy, which refuses eval: give page.wait_for_function
# a function ("() => ..."), not an expression, which Playwright evaluates with eval once it polls.
#
# Every Content-Security-Policy violation on a page, as the page itself sees it (the event fires
# for blocked scripts, styles, eval and frames alike). Playwright adds this before the page's own
# scripts run, on every document the page loads, whatever the policy says.
CSP_LISTENER = """document.addEventListener("securitypolicyviolation", (e) => window.__cspViolation(
  `${e.effectiveDirective} blocked ${e.blockedURI || "inline"} at ${e.sourceFile || document.URL}:${e.lineNumber}`
  + (e.sample ? ` (${e.sample})` : "")));"""


def watch_csp(page) -> list[str]:
    """The page's CSP violations from now on, filled in as they happen: each securitypolicyviolation
    event, and each "Refused to ..." the browser writes to the console (it says which directive)."""
    violations: list[str] = []
    page.expose_function("__cspViolation", lambda text: violations.append(f"{page.url}: {text}"))
    page.add_init_script(CSP_LISTENER)
    page.on("console", lambda message: violations.append(f"{page.url}: {message.text}")
            if "Content Security Policy" in message.text or message.text.startswith("Refused to") else None)
    return violations


def track_requests(page) -> None:
    """Keep page.requests_in_flight: the requests the page has sent and not had answered (settle)."""
    page.requests_in_flight = in_flight = set()
    page.on("request", lambda request: in_flight.add(request))
    # A redirect finishes its request and sends a new one.
    page.on("requestfinished", lambda request: in_flight.discard(request))
    page.on("requestfailed", lambda request: in_flight.discard(request))


# Resolves once the page has drawn twice and run what was queued before it (an IntersectionObserver's
# first callback, a securitypolicyviolation event).
_NEXT_FRAMES = """() => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(
  () => setTimeout(done, 0))))"""


def settle(page) -> None:
    """Wait until a loaded page's requests (htmx's included) are answered and swapped in, for a page
    that track_requests watches: what a sweep of many pages needs after page.goto.

    wait_for_load_state("networkidle") waits for the same, then for 500 ms without a request: half
    a second of nothing on every page (45 of test_content_security_policy's 70 s). No Steward page
    sends a request by itself sooner than 2 s after loading (hx-trigger "every 2s" is the soonest),
    so those 500 ms catch nothing; a page that ever does (a "load delay:..." trigger, a timer)
    needs networkidle again."""
    page.wait_for_load_state("load")
    page.evaluate(_NEXT_FRAMES)
    deadline = time.monotonic() + 15
    while page.requests_in_flight:
        if time.monotonic() > deadline:
            raise AssertionError(f"{page.url}: still waiting for {[r.url for r in page.requests_in_flight]}")
        page.wait_for_timeout(10)  # lets Playwright take the browser's events meanwhile
    page.evaluate(_NEXT_FRAMES)


def log_in(browser, live_server, username: str, viewport: dict = DESKTOP, lands: bool = True):
    """A new page (15 s timeouts) signed in as one of tests/conftest.py's actors (password
    pw-<username>), on the page Steward lands them on; with `lands` False, for a user Steward sends
    to no page of their own (no role), on whatever page answered. Its CSP violations collect in
    page.csp_violations (watch_csp); its requests are tracked for settle."""
    page = browser.new_page(viewport=viewport)
    page.set_default_timeout(15_000)
    page.csp_violations = watch_csp(page)
    track_requests(page)
    page.goto(f"{live_server.url}/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", f"pw-{username}")
    page.click("button[type=submit]")
    if lands:
        page.wait_for_url(re.compile(r"/(tasks|reviews)/$"))
    else:
        page.wait_for_load_state("networkidle")
    return page


def triage_objects(make_task, operator):
    """What the operators' pages show, one of each: a task dead-lettered at extract with its failed
    step and dead letter, and a bulk retry (of another dead letter) started by `operator`.
    Returns (failed task, its dead letter, the bulk retry)."""
    from orchestrator.models import Step
    from orchestrator.services import bulk_retry_create, dead_letter_create

    failed = make_task(doc_type="Invoice", status="dead_lettered", current_step="extract")
    step = Step.objects.create(task=failed, worker="extract", attempt=1, status="dead_lettered",
                               started_at=failed.created_at, error_type="InvalidAnswer", error_message="still invalid")
    letter = dead_letter_create(task=failed, step=step, error_type="InvalidAnswer", message="still invalid")
    other = dead_letter_create(task=make_task(status="dead_lettered", current_step="classify"), step=None,
                               error_type="ConnectionError", message="Could not reach the model")
    bulk = bulk_retry_create(user=operator, dead_letter_ids=[other.pk], description="one",
                             selection={"scope": "selected"}, rate_per_minute=1)
    return failed, letter, bulk
