"""What changes on a page by itself is said to screen-reader users too: a task's status as it runs,
the inbox's pending count, a bulk retry pausing, the outcome of an upload.

Screen readers read out changes inside a live region (aria-live, role=status) that was already on
the page; a region that HTMX swaps in whole, text and all, is new, and most say nothing. So these
tests look at the page's one lasting live region (#announcer) and at the upload's.
"""
from __future__ import annotations

import re

import pytest

from orchestrator.models import BulkRetry, Task
from orchestrator.services import bulk_retry_create, dead_letter_create

from .conftest import log_in
from .test_keyboard import northwind_approvals

pytestmark = pytest.mark.browser


def announced(page, text: str, timeout: float = 15_000) -> None:
    page.wait_for_function("text => { const box = document.getElementById('announcer');"
                           " return !!box && box.matches('[aria-live=polite]') && box.textContent.includes(text); }",
                           arg=text, timeout=timeout)


def test_a_task_finishing_is_announced(plain_http, live_server, operator, make_task, browser):
    task = make_task(status="running", current_step="verify", doc_type="Invoice")
    page = log_in(browser, live_server, "olga")
    page.goto(f"{live_server.url}/tasks/{task.pk}/")
    assert page.locator("#announcer").inner_text() == ""  # nothing said on arrival: the page is read anyway

    Task.objects.filter(pk=task.pk).update(status="completed", current_step="")
    announced(page, f"Task {task.pk}: Completed")
    page.close()


def test_new_approvals_in_the_inbox_are_announced(plain_http, live_server, reviewer_finance, make_task,
                                                  make_approval, browser):
    northwind_approvals(make_task, make_approval, count=1)
    page = log_in(browser, live_server, "alice")
    northwind_approvals(make_task, make_approval, count=2)
    page.evaluate("htmx.trigger(document.body, 'approval-decided')")  # or wait for the 10 s refresh
    announced(page, "Inbox: 3 pending")
    page.close()


def test_a_bulk_retry_pausing_is_announced_with_its_reason(plain_http, live_server, operator, make_task, browser):
    letters = [dead_letter_create(task=make_task(status="dead_lettered", current_step="classify"), step=None,
                                  error_type="ConnectionError", message="Could not reach the model")
               for _ in range(2)]
    bulk = bulk_retry_create(user=operator, dead_letter_ids=[dl.pk for dl in letters], description="two",
                             selection={"scope": "selected"}, rate_per_minute=1)
    page = log_in(browser, live_server, "olga")
    page.goto(f"{live_server.url}/dead-letters/bulk/{bulk.pk}/")

    BulkRetry.objects.filter(pk=bulk.pk).update(status="paused", paused_reason="Half of them failed again")
    announced(page, f"Bulk retry {bulk.pk}: Paused")
    announced(page, "Half of them failed again")
    page.close()


def test_the_outcome_of_an_upload_is_said_in_the_region_that_was_there(plain_http, live_server, operator,
                                                                      browser):
    page = log_in(browser, live_server, "olga")
    page.goto(f"{live_server.url}/upload/")
    page.evaluate("document.getElementById('upload-results').dataset.before = 'yes'")

    page.fill("#id_text", "INVOICE\nInvoice Number: INV-1\nFrom: Acme\nTotal: $10.00")
    page.locator("form button.primary").press("Enter")
    page.wait_for_selector("#upload-results .results")
    region = page.locator("#upload-results")
    assert region.get_attribute("aria-live") == "polite"
    assert region.get_attribute("data-before") == "yes", "the live region was replaced, not updated"
    assert re.search(r"Pasted text: submitted as task \d+", region.inner_text())
    page.close()
