"""A real Celery worker process runs documents end to end, over HTTP to the simulator."""
from __future__ import annotations

import pytest

from orchestrator.models import Task
from orchestrator.services import task_submit
from reviews.models import Approval
from reviews.services import approval_decide
from tests.conftest import wait_for

pytestmark = pytest.mark.worker

SMALL_INVOICE = """INVOICE
Invoice Number: INV-2024-0100
From: Acme Supplies Ltd
Date: 2024-11-02
- Paper  10 x $5.00 = $50.00
- Toner  2 x $100.00 = $200.00
Total: $250.00
"""

LARGE_INVOICE = """INVOICE
Invoice Number: INV-2024-0892
From: Northwind Traders
Date: 2024-11-03
- Consulting  10 x $1,000.00 = $10,000.00
- Travel  1 x $5,400.00 = $5,400.00
Total: $15,400.00
"""


def settled(task_id: int, *statuses: str):
    def check():
        task = Task.objects.get(pk=task_id)
        return task if task.status in statuses else None

    return check


def test_auto_approved_invoice_runs_to_completion_and_acts_once(pipeline_worker, simulator):
    task, _ = task_submit(content=SMALL_INVOICE, filename="small.txt")

    task = wait_for(settled(task.pk, "completed", "dead_lettered"), message="the task to complete")

    assert task.status == "completed", pipeline_worker.log()
    assert [s.worker for s in task.steps.all()] == ["classify", "extract", "verify", "route", "act"]
    assert task.approvals.get().status == "auto_approved"
    deliveries = simulator.webhook_deliveries()
    assert deliveries["deliveries"] == 1
    assert list(deliveries["by_key"]) == [task.approvals.get().idempotency_key]


def test_large_invoice_waits_for_a_person_then_resumes_at_act(pipeline_worker, simulator, reviewer_finance):
    task, _ = task_submit(content=LARGE_INVOICE, filename="large.txt")
    task = wait_for(settled(task.pk, "awaiting_approval", "dead_lettered"), message="the approval")
    assert task.status == "awaiting_approval", pipeline_worker.log()
    assert task.routed_to == "finance_director"
    requests_before = simulator.stats()["requests"]

    approval_decide(approval_id=Approval.objects.get(task=task).pk, user=reviewer_finance, decision="approve")

    task = wait_for(settled(task.pk, "completed", "dead_lettered"), message="the act step")
    assert task.status == "completed"
    # Resumed where it paused: no model call was repeated, each step succeeded exactly once.
    assert simulator.stats()["requests"] == requests_before
    assert sorted(s.worker for s in task.steps.filter(status="succeeded")) == sorted(
        ["classify", "extract", "verify", "route", "act"])
    assert simulator.webhook_deliveries()["deliveries"] == 1


def test_submit_command_waits_for_the_worker(pipeline_worker, tmp_path):
    from io import StringIO

    from django.core.management import call_command

    small, large = tmp_path / "small.txt", tmp_path / "large.txt"
    small.write_text(SMALL_INVOICE)
    large.write_text(LARGE_INVOICE)
    out = StringIO()

    call_command("submit", str(small), str(large), "--wait", "--timeout", "60", stdout=out)

    lines = out.getvalue().splitlines()
    assert any(line.endswith("completed (Invoice)") for line in lines), lines
    assert any("awaiting_approval in finance_director (Invoice)" in line for line in lines), lines
