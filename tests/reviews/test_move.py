"""A correction that changes the route moves the item to the right queue instead of running."""
from __future__ import annotations

import pytest

from orchestrator.models import Task
from reviews.models import Approval, AuditEvent
from reviews.services import AlreadyDecided, approval_decide

from .conftest import HX


def small_invoice(make_task, make_approval) -> Approval:
    task = make_task(status="awaiting_approval", doc_type="Invoice", routed_to="standard_queue",
                     content="INVOICE\nInvoice Number: INV-1\nFrom: Acme\nTotal: $500.00\n",
                     fields={"amount": 500.0, "counterparty": "Acme", "invoice_number": "INV-1"})
    return make_approval(task, "standard_queue", reasons=["Low confidence (0.80 < 0.95)"])


def test_a_correction_to_a_large_amount_moves_the_item_to_finance(
        db, make_task, make_approval, reviewer_standard, reviewer_finance, django_capture_on_commit_callbacks):
    approval = small_invoice(make_task, make_approval)

    with django_capture_on_commit_callbacks() as callbacks:
        moved = approval_decide(approval_id=approval.pk, user=reviewer_standard, decision="approve",
                                fields={"amount": 50000.0}, comment="Typo: it is 50,000")

    assert moved.status == "superseded"
    assert moved.decided_by == reviewer_standard
    assert moved.corrections == {"amount": {"from": 500.0, "to": 50000.0}}
    successor = Approval.objects.get(replaces=moved)
    assert successor.status == "pending" and successor.queue.name == "finance_director"
    assert successor.action_summary == "Send payment approval for invoice INV-1, $50,000, to finance_director"
    assert successor.reasons[0].startswith("Moved from standard_queue by rita: with the correction (amount 500 → 50,000)")
    assert "Low confidence (0.80 < 0.95)" in successor.reasons
    assert 'Rule "Invoice amount > 10,000" (Invoice with amount > 10,000) requires approval' in successor.reasons
    assert successor.due_at is not None
    task = Task.objects.get()
    assert task.status == "awaiting_approval" and task.current_step != "act"
    assert task.fields["amount"] == 50000.0 and task.routed_to == "finance_director"
    event = AuditEvent.objects.get(action="approval.moved")
    assert event.actor == reviewer_standard and event.task_id == task.pk
    assert event.data["moved_to"] == "finance_director" and event.data["comment"] == "Typo: it is 50,000"
    assert len(callbacks) == 1  # the new queue's reviewers are notified; no act step is woken

    # The old approval is closed; finance decides the new one.
    with pytest.raises(AlreadyDecided, match="Already moved to finance_director by rita at "):
        approval_decide(approval_id=approval.pk, user=reviewer_standard, decision="approve")
    approval_decide(approval_id=successor.pk, user=reviewer_finance, decision="approve")
    assert Task.objects.get().status == "queued"


def test_the_move_is_explained_on_the_page_and_shows_in_both_inboxes(
        make_task, make_approval, reviewer_standard, reviewer_finance, client_for):
    approval = small_invoice(make_task, make_approval)

    response = client_for(reviewer_standard).post(
        f"/reviews/approvals/{approval.pk}/decide", {"decision": "approve", "field__amount": "50,000"}, **HX)

    assert response.status_code == 200
    assert f"Moved task {approval.task_id} to finance_director" in response.text
    assert "Nothing was sent." in response.text
    assert "Moved to another queue</span> from standard_queue" in response.text
    assert "INV-1" not in client_for(reviewer_standard).get("/reviews/").text
    assert "INV-1" in client_for(reviewer_finance).get("/reviews/").text


def test_the_task_page_form_moves_it_too(make_task, make_approval, reviewer_standard, client_for):
    approval = small_invoice(make_task, make_approval)

    response = client_for(reviewer_standard).post(f"/approvals/{approval.pk}/decide",
                                                  {"decision": "approve", "field__amount": "50000"}, follow=True)

    assert f"Moved task {approval.task_id} to finance_director" in response.text
    assert Approval.objects.filter(task_id=approval.task_id, status="pending").get().queue.name == "finance_director"
