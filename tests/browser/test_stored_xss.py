"""Stored XSS, where it matters: in a real browser. Documents whose text, filename and
external_ref carry markup (so the fields the simulator extracts do too: vendor names, line items,
email subjects, report authors), a reviewer's comment, a dead letter's message and an uploaded
file's name; every page that shows them is opened as the role that sees it, and no payload runs.

Each payload, if it ever ran, would set window.__xss or open a dialog; each page must also show
the payload as text, so the test knows the payload was there to run.
"""
from __future__ import annotations

import pytest

from orchestrator.models import DeadLetter, Source, Task
from orchestrator.services import dead_letter_create, task_submit
from reviews.links import email_link_create
from reviews.models import Approval
from reviews.services import approval_decide

from .conftest import ARTIFACTS, log_in

pytestmark = pytest.mark.browser

SCRIPT = "<script>window.__xss='script'</script>"
IMG = "\"'><img src=x onerror=\"window.__xss='img'\">"
SVG = "'--><svg onload=\"window.__xss='svg'\">"
TEXTAREA = "</textarea><script>window.__xss='textarea'</script>"
JS_URL = "javascript:window.__xss='url'"
TEMPLATE = "{{ 7*7 }}{% csrf_token %}"

DOCUMENTS = [
    (f"invoice{IMG}.txt", f"erp{SCRIPT}",
     f"INVOICE\nInvoice Number: INV-4242\nFrom: Acme {SCRIPT} {SVG}\nDate: 2024-11-05\n"
     f"- Widgets {IMG} 2 x $7,700.00 = $15,400.00\nTotal: $15,400.00\nSee {JS_URL} {TEMPLATE}\n"),
    (f"invoice-2{SVG}.txt", TEMPLATE,
     f"INVOICE\nInvoice Number: INV-4343\nFrom: Initech {TEXTAREA}\nDate: 2024-11-06\n"
     "- Staplers 4 x $5,000.00 = $20,000.00\nTotal: $20,000.00\n"),
    (f"mail{TEXTAREA}.eml", JS_URL,
     f"From: {JS_URL}\nSubject: {TEXTAREA} {IMG}\nDate: 2024-11-05\n\nPlease pay {SCRIPT} now.\n"),
    ("report.txt", SVG, f"{SCRIPT} REPORT\nPeriod: Q3 {IMG}\nAuthor: {TEXTAREA}\n\nThe body {SVG}.\n"),
]


def open_as(browser, live_server, username: str):
    """Signed in, with every alert(), confirm() or prompt() a payload opens recorded and dismissed."""
    page = log_in(browser, live_server, username)
    page.dialogs = []
    page.on("dialog", lambda dialog: (page.dialogs.append(dialog.message), dialog.dismiss()))
    return page


def assert_nothing_ran(page, url: str, shows: str | None = "<script>") -> None:
    page.goto(url)
    page.wait_for_timeout(300)  # an <img onerror> fires after the load
    assert page.evaluate("window.__xss") is None, f"{url}: a payload ran ({page.evaluate('window.__xss')})"
    assert page.dialogs == [], url
    if shows:
        assert shows in page.inner_text("body"), f"{url} does not show the payload, so proves nothing"


def test_no_payload_runs_on_any_page(plain_http, live_server, simulator, run_pipeline, reviewer_finance,
                                     operator, admin_user, browser):
    tasks = []
    for filename, ref, content in DOCUMENTS:
        task, _ = task_submit(content=content, filename=filename, external_ref=ref, source=Source.API,
                              submitted_by=operator)
        tasks.append(run_pipeline(task))
    pending, rejected = (Approval.objects.get(task=tasks[0]), Approval.objects.get(task=tasks[1]))
    assert pending.status == rejected.status == "pending" and pending.queue.name == "finance_director"
    approval_decide(approval_id=rejected.pk, user=reviewer_finance, decision="reject", reason="other",
                    comment=f"{SCRIPT}{TEXTAREA}{IMG}")
    letter = dead_letter_create(task=Task.objects.create(content=SCRIPT, content_sha256="0" * 64, filename=IMG),
                                step=None, error_type=f"Boom{SVG}", message=f"Failed on {SCRIPT} {IMG}",
                                traceback=f"Traceback {TEXTAREA}")

    alice = open_as(browser, live_server, "alice")
    assert_nothing_ran(alice, f"{live_server.url}/reviews/")
    assert_nothing_ran(alice, f"{live_server.url}/reviews/approvals/{pending.pk}/")
    assert_nothing_ran(alice, f"{live_server.url}/reviews/approvals/{rejected.pk}/", shows=TEXTAREA)
    for task in tasks[:2]:
        assert_nothing_ran(alice, f"{live_server.url}/tasks/{task.pk}/")
    # A refused decision (an amount that is not a number) swaps the item in again, with what was typed.
    alice.goto(f"{live_server.url}/reviews/approvals/{pending.pk}/")
    alice.fill("#field-amount", TEXTAREA)
    alice.fill("#approve-comment", TEXTAREA + IMG)
    alice.click("#approve-button")
    alice.wait_for_selector("text=must be a number")
    alice.wait_for_timeout(300)
    assert alice.evaluate("window.__xss") is None and alice.dialogs == []
    assert alice.input_value("#approve-comment") == TEXTAREA + IMG
    assert Approval.objects.get(pk=pending.pk).status == "pending"
    alice.screenshot(path=ARTIFACTS / "xss-item.png", full_page=True)
    alice.close()

    link = browser.new_page()
    link.dialogs = []
    link.on("dialog", lambda dialog: (link.dialogs.append(dialog.message), dialog.dismiss()))
    token = email_link_create(approval=pending, user=reviewer_finance)
    assert_nothing_ran(link, f"{live_server.url}/reviews/link/{token}/", shows="onerror")
    assert_nothing_ran(link, f"{live_server.url}/reviews/link/{token}/?action=reject", shows="onerror")
    link.close()

    olga = open_as(browser, live_server, "olga")
    assert_nothing_ran(olga, f"{live_server.url}/tasks/")
    for task in tasks:
        assert_nothing_ran(olga, f"{live_server.url}/tasks/{task.pk}/")
    assert_nothing_ran(olga, f"{live_server.url}/dead-letters/")
    assert_nothing_ran(olga, f"{live_server.url}/dead-letters/{letter.pk}/")
    assert_nothing_ran(olga, f"{live_server.url}/charts/", shows=None)
    assert_nothing_ran(olga, f"{live_server.url}/stuck/", shows=None)
    # An uploaded file's name comes back in the results, swapped in by HTMX.
    assert_nothing_ran(olga, f"{live_server.url}/upload/", shows=None)
    olga.set_input_files("#id_files", files=[{"name": f"up{IMG}.txt", "mimeType": "text/plain",
                                                      "buffer": f"INVOICE {SCRIPT}\nTotal: $5.00\n".encode()}])
    olga.click("button.primary:has-text('Submit')")
    olga.wait_for_selector("#upload-results li.ok")
    assert "onerror" in olga.inner_text("#upload-results")
    olga.wait_for_timeout(300)
    assert olga.evaluate("window.__xss") is None and olga.dialogs == []
    olga.close()

    adam = open_as(browser, live_server, "adam")
    for url in (f"/admin/orchestrator/task/{tasks[0].pk}/change/", "/admin/orchestrator/task/",
                "/admin/reviews/approval/", f"/admin/reviews/approval/{rejected.pk}/change/",
                "/admin/reviews/auditevent/", f"/admin/orchestrator/deadletter/{letter.pk}/change/"):
        assert_nothing_ran(adam, f"{live_server.url}{url}", shows=None)
    adam.close()
    assert DeadLetter.objects.filter(pk=letter.pk).exists()
