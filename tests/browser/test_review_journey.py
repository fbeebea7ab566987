"""A reviewer's morning, in a real browser: the inbox, approve, reject with a reason,
correct-then-approve, and approve from the email link, while the inbox counts keep themselves
up to date.

Debian's Chromium through Playwright, against pytest-django's live server, with a real Celery
worker and the simulator: documents go through the whole pipeline, the worker emails the
reviewer (Django's file email backend, read back here) and runs the action once approved.
Screenshots go to test-artifacts/review-*.png.
"""
from __future__ import annotations

import email
import re
import time
from email import policy
from pathlib import Path

import pytest

from orchestrator.models import Source, Task
from orchestrator.services import task_submit
from reviews.models import Approval, AuditEvent

from .conftest import ARTIFACTS

pytestmark = pytest.mark.browser


def invoice(number: str, supplier: str, quantity: int, price: int) -> str:
    total = quantity * price
    return (f"INVOICE\nInvoice Number: {number}\nFrom: {supplier}\nDate: 2024-11-05\n"
            f"- Equipment  {quantity} x ${price:,.2f} = ${total:,.2f}\nTotal: ${total:,.2f}\n")


DOCUMENTS = [  # all above 10,000: finance_director decides them
    ("northwind-1001.txt", invoice("INV-1001", "Northwind Traders", 4, 3500)),
    ("contoso-2002.txt", invoice("INV-2002", "Contoso Ltd", 6, 2500)),
    ("fabrikam-3003.txt", invoice("INV-3003", "Fabrikam Inc", 3, 5000)),
    ("litware-4004.txt", invoice("INV-4004", "Litware Inc", 12, 1000)),
]


def wait_until(check, timeout: float, message: str, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"Timed out after {timeout:.0f} s waiting for {message}")


def emails_in(folder: Path) -> list[email.message.EmailMessage]:
    """Every message the file email backend wrote (one file per connection, messages separated
    by a line of 79 dashes)."""
    found = []
    for path in sorted(folder.glob("*.log")):
        for chunk in path.read_bytes().split(b"\n" + b"-" * 79 + b"\n"):
            if chunk.strip():
                found.append(email.message_from_bytes(chunk.lstrip(), policy=policy.default))
    return found


def test_a_reviewer_works_through_the_inbox_and_an_email(plain_http, live_server, simulator, start_worker,
                                                          reviewer_finance, browser, tmp_path, settings):
    mail_dir = tmp_path / "mail"
    settings.STEWARD_BASE_URL = live_server.url
    start_worker(simulator, extra_env={
        "EMAIL_BACKEND": "django.core.mail.backends.filebased.EmailBackend",
        "EMAIL_FILE_PATH": str(mail_dir),
        "STEWARD_BASE_URL": live_server.url,
    })
    tasks = [task_submit(content=text, filename=name, source=Source.API)[0] for name, text in DOCUMENTS]

    def all_waiting_and_notified() -> bool:
        statuses = set(Task.objects.filter(pk__in=[t.pk for t in tasks]).values_list("status", flat=True))
        assert not statuses & {"dead_lettered", "completed", "rejected"}, statuses
        return statuses == {"awaiting_approval"} and Approval.objects.filter(
            status="pending", notified_at__isnull=False).count() == len(tasks)

    wait_until(all_waiting_and_notified, timeout=120, message="every document to wait for a person")
    approvals = list(Approval.objects.filter(status="pending").select_related("task").order_by("created_at", "id"))
    assert {a.queue.name for a in approvals} == {"finance_director"}
    numbers = [a.task.fields["invoice_number"] for a in approvals]  # in the order the worker got to them

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(15_000)

    # Log in: a reviewer lands in the review inbox, four items, oldest first.
    page.goto(f"{live_server.url}/login/")
    page.fill("#id_username", "alice")
    page.fill("#id_password", "pw-alice")
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/reviews/$"))
    assert page.locator("tr.inbox-row").count() == 4
    assert page.locator("#pending-total").inner_text() == "4"
    page.screenshot(path=ARTIFACTS / "review-01-inbox.png", full_page=True)

    # 1. Approve the oldest, from its page.
    page.keyboard.press("j")  # select the first row
    page.keyboard.press("o")  # and open it
    page.wait_for_url(re.compile(rf"/reviews/approvals/{approvals[0].pk}/$"))
    assert f"Invoice Number: {numbers[0]}" in page.locator("pre.document").inner_text()
    page.screenshot(path=ARTIFACTS / "review-02-item.png", full_page=True)
    page.keyboard.press("a")  # focus on Approve...
    page.keyboard.press("Enter")  # ...and press it
    page.locator("#review-item .msg.success").wait_for()
    assert f"Approved action for task {approvals[0].task_id}." in page.locator("#review-item .msg").inner_text()
    page.screenshot(path=ARTIFACTS / "review-03-approved.png", full_page=True)

    # 2. Reject the next one with a reason.
    page.keyboard.press("j")
    page.wait_for_url(re.compile(rf"/reviews/approvals/{approvals[1].pk}/$"))
    page.select_option("#reject-reason", "wrong-amount")
    page.fill("#reject-comment", "The PO says 12,000")
    page.click("#reject-button")
    page.locator("#review-item .msg.success").wait_for()
    assert "Rejected task" in page.locator("#review-item .msg").inner_text()
    assert "Amount is wrong" in page.locator("#review-item").inner_text()
    page.screenshot(path=ARTIFACTS / "review-04-rejected.png", full_page=True)

    # 3. Correct a field, then approve.
    page.click("#go-next")
    page.wait_for_url(re.compile(rf"/reviews/approvals/{approvals[2].pk}/$"))
    page.fill("#field-invoice_number", f"{numbers[2]}-A")
    page.click("#approve-button")
    page.locator("#review-item .msg.success").wait_for()
    assert "with your corrections" in page.locator("#review-item .msg").inner_text()
    trail = page.locator("section.audit").inner_text()
    assert f"alice Approved with corrections (invoice_number {numbers[2]} → {numbers[2]}-A)" in trail
    page.screenshot(path=ARTIFACTS / "review-05-corrected.png", full_page=True)

    # The worker runs the two approved actions once each; the rejected task is over.
    def acted() -> bool:
        states = dict(Task.objects.filter(pk__in=[a.task_id for a in approvals[:3]]).values_list("id", "status"))
        return states == {approvals[0].task_id: "completed", approvals[1].task_id: "rejected",
                          approvals[2].task_id: "completed"}

    wait_until(acted, timeout=60, message="the approved actions to run")
    assert Task.objects.get(pk=approvals[2].task_id).fields["invoice_number"] == f"{numbers[2]}-A"
    assert simulator.webhook_deliveries()["unique_keys"] == 2
    page.goto(f"{live_server.url}/tasks/{approvals[2].task_id}/")
    assert "Completed" in page.locator(".status-line").inner_text()
    page.screenshot(path=ARTIFACTS / "review-06-task-audit.png", full_page=True)

    # 4. The last one from the email: the inbox stays open and counts it down by itself.
    page.goto(f"{live_server.url}/reviews/")
    assert page.locator("#pending-total").inner_text() == "1"
    mails = [m for m in emails_in(mail_dir) if m["X-Steward-Approval"] == str(approvals[3].pk)]
    assert [m["To"] for m in mails] == ["alice@example.com"]
    body = mails[0].get_body(("plain",)).get_content()
    approve_url = re.search(r"Approve:\n(\S+)", body).group(1)
    assert approve_url.startswith(f"{live_server.url}/reviews/link/")

    phone = browser.new_context(viewport={"width": 390, "height": 844})  # no session: a phone's mail app
    link_page = phone.new_page()
    link_page.goto(approve_url)
    assert "Approve this action?" in link_page.locator("h1").inner_text()
    assert Approval.objects.get(pk=approvals[3].pk).status == "pending"  # opening decides nothing
    link_page.screenshot(path=ARTIFACTS / "review-07-email-link-confirm.png", full_page=True)
    link_page.click("#link-approve")
    link_page.locator(".msg.success").wait_for()
    assert f"Approved action for task {approvals[3].task_id}." in link_page.locator(".msg.success").inner_text()
    link_page.screenshot(path=ARTIFACTS / "review-08-email-link-done.png", full_page=True)
    decided = Approval.objects.get(pk=approvals[3].pk)
    assert decided.status == "approved" and decided.decided_by.username == "alice"
    assert AuditEvent.objects.get(object_id=str(decided.pk), action="approval.approved").data["via"] == "email link"

    link_page.goto(approve_url)  # a second use
    assert "already used" in link_page.locator(".msg").inner_text()
    phone.close()

    # Back on the open inbox, the counts refresh themselves (every 10 s) to zero.
    page.locator("#pending-total", has_text="0").wait_for(timeout=20_000)
    page.reload()
    assert "Nothing is waiting for you" in page.locator("#inbox-rows").inner_text()
    page.screenshot(path=ARTIFACTS / "review-09-inbox-empty.png", full_page=True)
    page.close()


def test_an_admin_previews_a_routing_change_before_saving_it(plain_http, live_server, admin_user, make_task,
                                                              browser):
    from django.utils import timezone

    from orchestrator.models import RoutingRule, Step

    for amount in (500, 6000, 7000, 8000, 20000, 300):  # tasks the route step has handled
        task = make_task(doc_type="Invoice", confidence=0.99, status="completed", fields={"amount": amount})
        Step.objects.create(task=task, worker="route", status="succeeded", started_at=timezone.now(),
                            output={"amount": str(amount), "document_amount": str(amount), "reasons": []})
    rule = RoutingRule.objects.get(name="Invoice amount > 10,000")
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(15_000)
    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", "adam")
    page.fill("#id_password", "pw-adam")
    page.click("input[type=submit]")

    page.goto(f"{live_server.url}/admin/orchestrator/routingrule/{rule.pk}/change/")
    page.fill("#id_value", "5000")
    page.click("input[name=_save]")
    page.locator(".impact-sentences").wait_for()
    assert ("Of the last 6 routed tasks, 3 would now go to finance_director instead of standard_queue."
            in page.locator(".impact-sentences").inner_text())
    assert RoutingRule.objects.get(pk=rule.pk).value == "10000"
    page.screenshot(path=ARTIFACTS / "review-10-admin-impact-preview.png", full_page=True)

    page.click("input[name=_impact_save]")
    page.wait_for_url(re.compile(r"/admin/orchestrator/routingrule/$"))
    assert RoutingRule.objects.get(pk=rule.pk).value == "5000"
    assert AuditEvent.objects.get(object_type="orchestrator.routingrule").actor_name == "adam"
    page.close()
