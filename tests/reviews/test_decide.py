"""An approval is decided once (invariant 5): concurrent decisions, one winner, clear losers."""
from __future__ import annotations

import threading

import pytest
from django.db import connection

from reviews.models import Approval
from reviews.services import AlreadyDecided, DecisionError, approval_decide


def test_second_decision_is_told_who_decided_and_when(db, make_task, make_approval, reviewer_finance, admin_user):
    approval = make_approval(make_task(status="awaiting_approval", current_step="act"), "finance_director")
    approval_decide(approval_id=approval.pk, user=reviewer_finance, decision="approve")

    with pytest.raises(AlreadyDecided) as excinfo:
        approval_decide(approval_id=approval.pk, user=admin_user, decision="reject", reason="duplicate")

    assert str(excinfo.value).startswith("Already approved by alice at ")


def test_reject_needs_a_known_reason(db, make_task, make_approval, reviewer_finance):
    approval = make_approval(make_task(status="awaiting_approval", current_step="act"), "finance_director")

    with pytest.raises(DecisionError, match="needs a reason"):
        approval_decide(approval_id=approval.pk, user=reviewer_finance, decision="reject")
    with pytest.raises(DecisionError, match="Unknown rejection reason"):
        approval_decide(approval_id=approval.pk, user=reviewer_finance, decision="reject", reason="vibes")
    assert Approval.objects.get(pk=approval.pk).status == "pending"


def test_a_reviewer_of_another_queue_cannot_decide(db, make_task, make_approval, reviewer_legal):
    approval = make_approval(make_task(status="awaiting_approval", current_step="act"), "finance_director")

    with pytest.raises(PermissionError):
        approval_decide(approval_id=approval.pk, user=reviewer_legal, decision="approve")


def test_concurrent_decisions_have_exactly_one_winner(transactional_db, make_task, make_approval, admin_user):
    task = make_task(status="awaiting_approval", current_step="act")
    approval = make_approval(task, "finance_director")
    barrier = threading.Barrier(8)
    outcomes: list[str] = []
    lock = threading.Lock()

    def decide(n: int) -> None:
        try:
            barrier.wait()
            approval_decide(approval_id=approval.pk, user=admin_user,
                            decision="approve" if n % 2 else "reject", reason="duplicate")
            result = "won"
        except AlreadyDecided:
            result = "already-decided"
        finally:
            connection.close()
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=decide, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(outcomes) == ["already-decided"] * 7 + ["won"]
    task.refresh_from_db()
    decided = Approval.objects.get(pk=approval.pk)
    assert task.status == ("queued" if decided.status == "approved" else "rejected")


def test_a_correction_within_the_same_route_is_applied_on_approval(db, make_task, make_approval, reviewer_standard):
    task = make_task(status="awaiting_approval", current_step="act", doc_type="Invoice",
                     content="INVOICE\nFrom: Acme\nTotal: $500.00\n",
                     fields={"amount": 500.0, "counterparty": "Acme", "invoice_number": "INV-1"})
    approval = make_approval(task, "standard_queue")

    approval_decide(approval_id=approval.pk, user=reviewer_standard, decision="approve",
                    fields={"counterparty": "Acme Ltd"})

    approval.refresh_from_db()
    assert approval.status == "approved"
    assert approval.corrections == {"counterparty": {"from": "Acme", "to": "Acme Ltd"}}
    task.refresh_from_db()
    assert task.status == "queued" and task.fields["counterparty"] == "Acme Ltd"
