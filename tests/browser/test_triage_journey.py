"""An operator's triage, in a real browser: find a group, open one, edit and retry it, bulk-retry
the rest of the group at a pace, watch the live report, and discard another with a reason.

Debian's Chromium through Playwright against the live server, with a real Celery worker and the
simulator, so the retried tasks really run. Screenshots (desktop and phone) go to test-artifacts/.
"""
from __future__ import annotations

import re

import pytest
from django.utils import timezone

from orchestrator.models import BulkRetry, DeadLetter, Step, Task
from orchestrator.services import dead_letter_create

from .conftest import ARTIFACTS

pytestmark = pytest.mark.browser


def dead_at_verify(n: int, amount: float) -> DeadLetter:
    content = (f"INVOICE\nInvoice Number: INV-{n:04d}\nFrom: Globex {n}\nDate: 2024-11-0{n % 9 + 1}\n"
               f"- Widgets  1 x ${amount:,.2f} = ${amount:,.2f}\nTotal: ${amount:,.2f}\n")
    import hashlib

    task = Task.objects.create(
        content=content, content_sha256=hashlib.sha256(content.encode()).hexdigest(), filename=f"globex-{n}.txt",
        status="dead_lettered", current_step="verify", doc_type="Invoice", confidence=0.97,
        fields={"invoice_number": f"INV-{n:04d}", "counterparty": f"Globex {n}", "date": f"2024-11-0{n % 9 + 1}",
                "currency": "USD", "amount": amount * 10, "line_items": []},
    )
    now = timezone.now()
    for worker in ("classify", "extract"):
        Step.objects.create(task=task, worker=worker, attempt=1, status="succeeded", started_at=now)
    step = Step.objects.create(task=task, worker="verify", attempt=5, status="dead_lettered", started_at=now,
                               error_type="Timeout", error_message="Request timed out")
    return dead_letter_create(task=task, step=step, error_type="Timeout",
                              message=f"Gave up after 5 attempts: Request timed out after {n} s")


def test_operator_triages_a_group(plain_http, pipeline_worker, live_server, operator, browser):
    group = [dead_at_verify(n, 100.0 + n) for n in range(1, 5)]
    odd_task = Task.objects.create(content="Lorem", content_sha256="0" * 64, filename="junk.txt",
                                   status="dead_lettered", current_step="classify")
    odd = dead_letter_create(task=odd_task, step=None, error_type="Orphaned",
                             message="Recovered 5 times and still lost (worker lease expired)")

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(15_000)
    page.goto(f"{live_server.url}/login/")
    page.fill("#id_username", "olga")
    page.fill("#id_password", "pw-olga")
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/tasks/$"))

    # Find the group.
    page.click("nav >> text=Dead letters")
    page.wait_for_url(re.compile(r"/dead-letters/$"))
    timeout_group = page.locator("li.group", has_text="Timeout")
    assert "4 open" in timeout_group.inner_text() and "Orphaned" in page.locator("ul.groups").inner_text()
    page.screenshot(path=ARTIFACTS / "triage-01-groups.png", full_page=True)
    page.set_viewport_size({"width": 390, "height": 844})
    page.screenshot(path=ARTIFACTS / "triage-01-groups-phone.png", full_page=True)
    page.set_viewport_size({"width": 1280, "height": 900})
    timeout_group.get_by_role("link", name="Show these").click()
    page.wait_for_url(re.compile(r"fingerprint="))
    assert page.locator("#dl-rows tr.dl-row").count() == 4 and "junk.txt" not in page.locator("#dl-rows").inner_text()

    # Open one, edit its amount, retry it.
    page.click(f"#dead-letter-{group[0].pk} a:has-text('globex-1.txt')")
    page.wait_for_url(re.compile(rf"/dead-letters/{group[0].pk}/$"))
    assert "Request timed out" in page.content()
    page.screenshot(path=ARTIFACTS / "triage-02-detail.png", full_page=True)
    edited = page.locator("#id_fields").input_value().replace('"amount": 1010.0', '"amount": 101.0')
    assert '"amount": 101.0' in edited
    page.fill("#id_fields", edited)
    page.click("#edit-retry button[type=submit]")
    page.wait_for_selector("text=edited and sent back to its verify step")
    assert "ORIGINAL" in page.locator(".edits").inner_text().upper() and "1010.0" in page.locator(".edits").inner_text()
    page.screenshot(path=ARTIFACTS / "triage-03-edited.png", full_page=True)

    # Bulk-retry the rest of the group at a pace.
    page.click("text=Its group")
    page.locator("li.group", has_text="Timeout").get_by_role("button", name="Retry group…").click()
    page.wait_for_selector("text=will be sent back")
    assert "<strong>3</strong> open dead letters" in page.content()
    page.fill("#id_rate", "600")
    page.click("text=Start the bulk retry")
    page.wait_for_url(re.compile(r"/dead-letters/bulk/\d+/$"))
    page.screenshot(path=ARTIFACTS / "triage-04-bulk-running.png", full_page=True)
    # The report refreshes itself (HTMX polling) until every item went through.
    page.wait_for_selector("#bulk-status:has-text('Completed')", timeout=90_000)
    assert page.locator(".n-succeeded").inner_text() == "3" and page.locator(".n-failed").inner_text() == "0"
    assert page.locator("tr.item-succeeded").count() == 3
    page.screenshot(path=ARTIFACTS / "triage-05-bulk-done.png", full_page=True)
    edited_task = Task.objects.get(pk=group[0].task_id)
    assert edited_task.status in ("completed", "awaiting_approval") and edited_task.fields["amount"] == 101.0
    assert BulkRetry.objects.get().succeeded == 3

    # Discard the odd one with a reason.
    page.goto(f"{live_server.url}/dead-letters/{odd.pk}/")
    page.fill("#id_reason", "Test upload, not a real document")
    page.click("button:has-text('Discard')")
    page.wait_for_selector("text=discarded")
    assert "Test upload, not a real document" in page.content()
    odd.refresh_from_db()
    assert odd.status == "discarded" and odd.resolved_by.username == "olga"

    # The same pages on a phone.
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{live_server.url}/dead-letters/")
    page.screenshot(path=ARTIFACTS / "triage-06-phone-triage.png", full_page=True)
    page.goto(f"{live_server.url}/dead-letters/bulk/{BulkRetry.objects.get().pk}/")
    page.screenshot(path=ARTIFACTS / "triage-07-phone-bulk.png", full_page=True)
    page.goto(f"{live_server.url}/dead-letters/{group[1].pk}/")
    page.screenshot(path=ARTIFACTS / "triage-08-phone-detail.png", full_page=True)
    page.goto(f"{live_server.url}/stuck/")
    page.screenshot(path=ARTIFACTS / "triage-09-phone-stuck.png", full_page=True)
    page.close()
