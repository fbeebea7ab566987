"""The orchestrator's durable steps: checkpoints, retries, dead letters, budgets, approval pauses."""
from __future__ import annotations

from decimal import Decimal

import pytest
from django.db import IntegrityError

from orchestrator.models import Budget, DeadLetter, Step, Task, WorkerConfig
from orchestrator.services import dead_letter_retry, task_submit
from reviews.models import Approval
from reviews.services import approval_decide
from tests.conftest import save_changes

pytestmark = pytest.mark.django_db

INVOICE = """INVOICE
Invoice Number: INV-7
From: Acme Supplies Ltd
Date: 2024-11-02
- Paper  10 x $5.00 = $50.00
Total: $50.00
"""


def submit(text: str = INVOICE, **kwargs) -> Task:
    return task_submit(content=text, filename="doc.txt", **kwargs)[0]


def requests_by_worker(simulator) -> dict:
    return simulator.stats()["by_worker"]


def test_a_clean_small_invoice_completes_with_every_step_once(run_pipeline, simulator):
    task = run_pipeline(submit())

    assert task.status == "completed"
    assert [(s.worker, s.attempt, s.status) for s in task.steps.all()] == [
        ("classify", 1, "succeeded"), ("extract", 1, "succeeded"), ("verify", 1, "succeeded"),
        ("route", 1, "succeeded"), ("act", 1, "succeeded")]
    assert task.doc_type == "Invoice" and task.fields["invoice_number"] == "INV-7"
    assert task.approvals.get().status == "auto_approved"
    assert simulator.webhook_deliveries()["deliveries"] == 1


def test_totals_add_up_over_steps_and_are_priced(run_pipeline):
    task = run_pipeline(submit())
    steps = list(task.steps.all())

    assert task.llm_calls == sum(s.llm_calls for s in steps) == 4  # classify, extract, verify x2
    assert task.tool_calls == sum(s.tool_calls for s in steps) >= 2
    assert task.input_tokens == sum(s.input_tokens for s in steps) > 0
    assert task.output_tokens == sum(s.output_tokens for s in steps) > 0
    assert task.cost_usd == sum(s.cost_usd for s in steps) > 0
    assert all(s.simulated for s in steps if s.llm_calls)
    assert {s.model for s in steps if s.llm_calls} == {"gpt-4o-mini"}
    assert {s.prompt_version for s in steps if s.llm_calls} == {"v1"}


def test_a_transient_failure_retries_only_the_failed_step(run_pipeline, simulator, fast_retries):
    task = run_pipeline(submit(INVOICE + "[[sim-fault: server_error x 2]]\n"))

    assert task.status == "completed"
    classify = list(task.steps.filter(worker="classify"))
    assert [(s.attempt, s.status, s.error_type) for s in classify] == [
        (1, "failed", "ServerError500"), (2, "failed", "ServerError500"), (3, "succeeded", "")]
    # The marker fails the first two requests of every worker kind; each step retried on its own
    # and, once succeeded, was never asked again.
    for worker in ("classify", "extract", "verify", "route", "act"):
        assert task.steps.filter(worker=worker, status="succeeded").count() == 1
    assert simulator.stats()["by_worker"]["classify"] == 3
    assert simulator.stats()["by_worker"]["extract"] == 3


def test_retry_resumes_from_the_failed_step_after_a_dead_letter(run_pipeline, simulator, settings):
    save_changes(WorkerConfig.objects.filter(worker="verify"), max_retries=0)
    text = INVOICE + "[[sim-fault: unavailable x 1]]\n"
    task = run_pipeline(submit(text))
    # The marker fails the first request of each worker kind; verify has no retries left.
    assert task.status == "dead_lettered"
    dead_letter = task.dead_letters.get()
    assert dead_letter.worker == "verify" and dead_letter.error_type == "ServerError503"
    calls_before = dict(requests_by_worker(simulator))

    dead_letter_retry(dead_letter_id=dead_letter.pk)
    task = run_pipeline(task)

    assert task.status == "completed"
    calls_after = requests_by_worker(simulator)
    assert calls_after["classify"] == calls_before["classify"]
    assert calls_after["extract"] == calls_before["extract"]
    assert calls_after["verify"] > calls_before["verify"]
    assert task.steps.filter(worker="classify", status="succeeded").count() == 1


def test_transient_failures_past_max_retries_are_dead_lettered_with_attempts(run_pipeline, fast_retries):
    save_changes(WorkerConfig.objects.filter(worker="classify"), max_retries=2)
    task = run_pipeline(submit(INVOICE + "[[sim-fault: server_error]]\n"))

    assert task.status == "dead_lettered"
    dead_letter = DeadLetter.objects.get(task=task)
    assert (dead_letter.status, dead_letter.worker, dead_letter.error_type, dead_letter.attempts) == (
        "open", "classify", "ServerError500", 3)
    assert "Gave up after 3 attempts" in dead_letter.message
    assert "Traceback" in dead_letter.traceback
    assert len(dead_letter.fingerprint) == 32


def test_a_permanent_error_goes_straight_to_the_dead_letter_queue(run_pipeline):
    task = run_pipeline(submit(INVOICE + "[[sim-fault: content_filter]]\n"))

    assert task.status == "dead_lettered"
    assert task.steps.filter(worker="classify").count() == 1
    assert task.dead_letters.get().error_type == "ContentFilter"


def test_rate_limit_retry_never_fires_before_retry_after(run_pipeline, fast_retries):
    task = run_pipeline(submit(INVOICE + "[[sim-fault: rate_limit x 1]]\n"))

    assert task.status == "completed"
    failed, retried = task.steps.filter(worker="classify").order_by("attempt")
    assert failed.error_type == "RateLimited" and failed.retry_after_s == 1.0
    assert (retried.started_at - failed.finished_at).total_seconds() >= 1.0


def test_same_fingerprint_for_the_same_failure_on_different_tasks(run_pipeline):
    first = run_pipeline(submit("INVOICE A\nFrom: X\nTotal: $1.00\n[[sim-fault: content_filter]]\n"))
    second = run_pipeline(submit("INVOICE B\nFrom: Y\nTotal: $2.00\n[[sim-fault: content_filter]]\n"))

    assert first.dead_letters.get().fingerprint == second.dead_letters.get().fingerprint


def test_over_budget_task_is_dead_lettered_as_a_suspected_loop_with_evidence(run_pipeline):
    save_changes(Budget.objects.all(), max_llm_calls=2)
    task = run_pipeline(submit())

    assert task.status == "dead_lettered"
    dead_letter = task.dead_letters.get()
    assert dead_letter.error_type == "BudgetExceeded"
    assert "suspected loop" in dead_letter.message
    assert dead_letter.evidence["llm_calls"] == 2
    # Checked before the call: the third model call was never made.
    assert task.llm_calls == 2


def test_endless_tool_loop_stops_at_the_tool_budget(run_pipeline, settings):
    settings.STEWARD_LOOP_REPEAT_LIMIT = 0  # the backstop under test: loop detection (tests/metrics) off
    save_changes(Budget.objects.all(), max_tool_calls=5)
    save_changes(WorkerConfig.objects.filter(worker="verify"), max_tool_rounds=50)
    task = run_pipeline(submit(INVOICE + "[[sim-fault: tool_loop]]\n"))

    assert task.status == "dead_lettered"
    dead_letter = task.dead_letters.get()
    assert dead_letter.error_type == "BudgetExceeded"
    calls = dead_letter.evidence["recent_tool_calls"]
    assert len({(c["tool"], c["arguments"]) for c in calls}) == 1  # the same call, over and over


def test_endless_tool_loop_stops_at_the_verifier_round_limit(run_pipeline, settings):
    settings.STEWARD_LOOP_REPEAT_LIMIT = 0  # the backstop under test: loop detection (tests/metrics) off
    task = run_pipeline(submit(INVOICE + "[[sim-fault: tool_loop]]\n"))

    assert task.status == "dead_lettered"
    assert task.dead_letters.get().error_type == "ToolLoop"


def test_approval_pauses_without_a_worker_and_resumes_at_act(run_pipeline, simulator, reviewer_finance):
    text = INVOICE.replace("Total: $50.00", "Total: $15,400.00").replace(
        "- Paper  10 x $5.00 = $50.00", "- Consulting  1 x $15,400.00 = $15,400.00")
    task = run_pipeline(submit(text))
    assert task.status == "awaiting_approval"
    assert (task.lease_owner, task.lease_expires_at) == ("", None)  # holds no worker
    assert task.current_step == "act"
    approval = Approval.objects.get(task=task)
    assert approval.action_summary == "Send payment approval for invoice INV-7, $15,400, to finance_director"

    approval_decide(approval_id=approval.pk, user=reviewer_finance, decision="approve",
                    fields={"counterparty": "Acme Supplies Limited"})
    task = run_pipeline(task)

    assert task.status == "completed"
    assert task.fields["counterparty"] == "Acme Supplies Limited"
    assert Approval.objects.get(pk=approval.pk).corrections == {
        "counterparty": {"from": "Acme Supplies Ltd", "to": "Acme Supplies Limited"}}
    assert task.steps.filter(worker="act", status="succeeded").count() == 1
    assert simulator.webhook_deliveries()["deliveries"] == 1


def test_rejected_approval_ends_the_task_without_acting(run_pipeline, simulator, reviewer_legal):
    task = run_pipeline(submit("SERVICES AGREEMENT\nThis agreement is made between Steward Corp and "
                               "Globex Corporation.\nFee: $2,000.00 per month\n"))
    assert (task.status, task.routed_to) == ("awaiting_approval", "legal_team")

    approval_decide(approval_id=task.approvals.get().pk, user=reviewer_legal, decision="reject",
                    reason="not-authorised", comment="We never signed with Globex")

    task.refresh_from_db()
    assert task.status == "rejected"
    assert not task.steps.filter(worker="act").exists()
    assert simulator.webhook_deliveries()["deliveries"] == 0


def test_a_second_success_of_the_same_step_is_refused_by_the_database(run_pipeline):
    task = run_pipeline(submit())
    first = task.steps.get(worker="classify")

    with pytest.raises(IntegrityError):
        Step.objects.create(task=task, worker="classify", attempt=first.attempt + 1, status="succeeded",
                            started_at=first.started_at)


def test_a_redelivered_message_for_a_finished_task_does_nothing(run_pipeline, simulator):
    from orchestrator.pipeline import task_run

    task = run_pipeline(submit())
    before = simulator.stats()["requests"]

    assert task_run(task.pk, runner="late-duplicate") == "not-claimed"
    assert simulator.stats()["requests"] == before


def test_a_message_for_a_deleted_task_exits_cleanly(db):
    from orchestrator.pipeline import task_run

    assert task_run(987654, runner="test") == "not-claimed"


def test_cost_uses_the_cached_input_price(run_pipeline):
    task = run_pipeline(submit())
    verify = task.steps.get(worker="verify")
    # The verifier's second call repeats the system prompt: the simulator reports it cached.
    assert verify.cached_tokens > 0
    full_price = (Decimal(verify.input_tokens) * Decimal("0.15") + Decimal(verify.output_tokens) * Decimal("0.60")) / 10**6
    assert verify.cost_usd < full_price
