"""A person's first minutes, in a real browser: log in, upload two invoices, watch one run.

Debian's Chromium through Playwright, against pytest-django's live server, with a real Celery
worker and the simulator (the `pipeline_worker` fixture). Screenshots go to test-artifacts/.
"""
from __future__ import annotations

import re
import time

import pytest

from orchestrator.models import Task

from .conftest import ARTIFACTS

pytestmark = pytest.mark.browser

SMALL_INVOICE = b"""INVOICE
Invoice Number: INV-2024-0311
From: Acme Supplies Ltd
Date: 2024-11-02
- Paper  10 x $5.00 = $50.00
- Toner  2 x $100.00 = $200.00
Total: $250.00
"""
OTHER_INVOICE = b"""INVOICE
Invoice Number: INV-7781
From: Initech Office Services
Date: 2024-11-05
- Chairs  4 x $120.00 = $480.00
Total: $480.00
"""


def wait_until(check, timeout: float, message: str, interval: float = 1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise AssertionError(f"Timed out after {timeout:.0f} s waiting for {message}")


def test_operator_uploads_two_invoices_and_watches_one_run(plain_http, pipeline_worker, live_server, operator,
                                                           browser):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(15_000)

    # Log in.
    page.goto(f"{live_server.url}/login/")
    assert "Simulated model: answers come from the built-in simulator" in page.content()
    page.screenshot(path=ARTIFACTS / "browser-01-login.png", full_page=True)
    page.fill("#id_username", "olga")
    page.fill("#id_password", "pw-olga")
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/tasks/$"))

    # Upload two invoices at once.
    page.click("nav >> text=Upload")
    page.wait_for_url(re.compile(r"/upload/$"))
    page.set_input_files("#id_files", [
        {"name": "acme-0311.txt", "mimeType": "text/plain", "buffer": SMALL_INVOICE},
        {"name": "initech-7781.txt", "mimeType": "text/plain", "buffer": OTHER_INVOICE},
    ])
    page.click("form button[type=submit]:has-text('Submit')")
    results = page.locator("#upload-results li.ok")
    results.nth(1).wait_for()
    assert results.count() == 2
    text = page.locator("#upload-results").inner_text()
    assert "acme-0311.txt: submitted as task" in text
    assert "initech-7781.txt: submitted as task" in text
    page.screenshot(path=ARTIFACTS / "browser-02-upload-results.png", full_page=True)
    assert sorted(Task.objects.values_list("filename", flat=True)) == ["acme-0311.txt", "initech-7781.txt"]

    # Open one task and wait for the worker to classify it.
    results.first.locator("a").first.click()
    page.wait_for_url(re.compile(r"/tasks/\d+/$"))
    assert "INV-2024-0311" in page.locator("pre.document").inner_text()

    def classified() -> bool:
        if page.locator("li.step-succeeded", has_text="classify").count():
            return True
        page.reload()
        return False

    wait_until(classified, timeout=60, message="the classify step to succeed", interval=2)
    step = page.locator("li.step-succeeded", has_text="classify").first
    assert "Succeeded" in step.inner_text()
    assert "SIMULATED" in step.inner_text()
    page.screenshot(path=ARTIFACTS / "browser-03-task-page.png", full_page=True)

    # The same page on a phone.
    page.set_viewport_size({"width": 390, "height": 844})
    page.reload()
    page.screenshot(path=ARTIFACTS / "browser-04-task-page-phone.png")
    page.screenshot(path=ARTIFACTS / "browser-05-task-page-phone-full.png", full_page=True)
    page.goto(f"{live_server.url}/tasks/")
    page.screenshot(path=ARTIFACTS / "browser-06-task-list-phone.png")
    page.close()
