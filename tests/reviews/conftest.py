"""Review-test helpers on top of the named actors in tests/conftest.py."""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from reviews.models import Approval, Queue

HX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture(autouse=True)
def celery_inline(monkeypatch):
    """Tasks the review services enqueue after commit run right here instead of on a broker."""
    monkeypatch.setattr("reviews.services._send_task", lambda task, *args: task(*args))


@pytest.fixture
def pending(make_task, make_approval):
    """A task awaiting approval in `queue` (an invoice by default), opened `age` ago and its
    reviewers already notified (unless notified=False)."""

    def make(queue: str = "finance_director", *, amount: float = 15400.0, age: timedelta = timedelta(0),
             number: str = "INV-9", notified: bool = True, **approval_fields) -> Approval:
        task = make_task(
            status="awaiting_approval", doc_type="Invoice", routed_to=queue, confidence=0.9,
            content=f"INVOICE\nInvoice Number: {number}\nFrom: Northwind\nTotal: ${amount:,.2f}\n",
            fields={"invoice_number": number, "counterparty": "Northwind", "amount": amount},
        )
        sla = Queue.objects.get(name=queue).sla_minutes
        created = timezone.now() - age
        approval = make_approval(
            task, queue, action_summary=f"Send payment approval for invoice {number}, ${amount:,.0f}, to {queue}",
            action_data={"amount": f"{amount:.2f}", "fields": task.fields}, reasons=["Rule requires approval"],
            due_at=created + timedelta(minutes=sla), notified_at=created if notified else None, **approval_fields,
        )
        if age:
            Approval.objects.filter(pk=approval.pk).update(created_at=created)
            approval.refresh_from_db()
        return approval

    return make
