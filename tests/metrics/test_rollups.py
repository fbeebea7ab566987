"""Rollups count every step (after its checkpoint commits), add up to the raw rows, and a rebuild gives the same."""
from __future__ import annotations

from decimal import Decimal

import pytest
from django.core.management import call_command
from django.db.models import Sum

from metrics.models import ALL_TIME, ApprovalRollup, HistogramRollup, StepRollup, TaskRollup
from metrics.rollups import rollup_snapshot
from orchestrator.models import Step

pytestmark = pytest.mark.django_db


def test_step_rollups_add_up_to_the_steps(scenario):
    steps = Step.objects.aggregate(n=Sum("llm_calls"), tools=Sum("tool_calls"), inp=Sum("input_tokens"),
                                   out=Sum("output_tokens"), cost=Sum("cost_usd"))
    for period in ("h", "d", "a"):  # hours, days, all time: each adds up to the same
        rows = StepRollup.objects.filter(period=period)
        sums = rows.aggregate(steps=Sum("steps"), n=Sum("llm_calls"), tools=Sum("tool_calls"),
                              inp=Sum("input_tokens"), out=Sum("output_tokens"), cost=Sum("cost_usd"))
        assert sums["steps"] == Step.objects.count()
        assert (sums["n"], sums["tools"], sums["inp"], sums["out"]) == (
            steps["n"], steps["tools"], steps["inp"], steps["out"])
        assert sums["cost"] == steps["cost"] > 0


def test_outcomes_approvals_and_dead_letters_are_counted_once(scenario):
    outcomes = {(r.outcome, r.human, r.doc_type): r.tasks for r in TaskRollup.objects.filter(bucket=ALL_TIME)}
    assert outcomes == {
        ("completed", False, "Invoice"): 1,   # the small invoice, auto-approved
        ("completed", True, "Contract"): 1,   # Bob approved it
        ("rejected", False, "Invoice"): 1,    # Alice rejected the large one
        ("dead_lettered", False, "Invoice"): 1,  # the loop
        ("dead_lettered", False, ""): 1,         # the content filter stopped it before classification
    }
    decisions = {(r.queue, r.decision, r.reason): r.approvals for r in ApprovalRollup.objects.filter(bucket=ALL_TIME)}
    assert decisions == {("standard_queue", "auto_approved", ""): 1, ("finance_director", "rejected", "duplicate"): 1,
                         ("legal_team", "approved", ""): 1}
    dead = {(r.worker, r.error_type): r.steps for r in StepRollup.objects.filter(bucket=ALL_TIME, outcome="dead_lettered")}
    assert dead == {("verify", "LoopDetected"): 1, ("classify", "ContentFilter"): 1}


def test_tool_calls_per_task_histogram_holds_each_outcome(scenario):
    rows = HistogramRollup.objects.filter(bucket=ALL_TIME, metric="task_tool_calls")
    assert rows.aggregate(n=Sum("count"))["n"] == 5  # 2 completed + 1 rejected + 2 dead-lettered
    loop = rows.get(label="dead_lettered", total=3)   # stopped at the third identical call
    assert loop.count == 1
    total = rows.aggregate(s=Sum("total"))["s"]
    assert total == sum(t.tool_calls for t in (scenario.small, scenario.large, scenario.contract, scenario.looping,
                                              scenario.filtered))


def test_rebuild_gives_the_figures_the_live_path_gave(scenario):
    live = rollup_snapshot()
    assert all(live.values())
    call_command("rebuild_rollups", verbosity=0)
    assert rollup_snapshot() == live


def test_wasted_spend_never_counts_a_cent_twice(scenario):
    failed = StepRollup.objects.filter(bucket=ALL_TIME).exclude(outcome="succeeded").aggregate(c=Sum("cost_usd"))["c"]
    work = TaskRollup.objects.filter(bucket=ALL_TIME, outcome__in=("rejected", "dead_lettered")).aggregate(
        c=Sum("work_cost_usd"))["c"]
    losers = (scenario.large, scenario.looping, scenario.filtered)
    assert failed + work == sum((t.cost_usd for t in losers), Decimal(0))


def test_an_expired_approval_counts_as_a_rejection_of_its_task(make_task, make_approval, operator):
    from datetime import timedelta

    from django.utils import timezone

    from reviews.services import approvals_expire

    task = make_task(status="awaiting_approval", doc_type="Invoice", routed_to="finance_director", tool_calls=4)
    approval = make_approval(task, "finance_director", expires_at=timezone.now() - timedelta(minutes=1))
    ApprovalRollupRows = ApprovalRollup.objects.filter(bucket=ALL_TIME)

    assert approvals_expire() == 1

    approval.refresh_from_db()
    assert approval.status == "expired"
    assert [(r.queue, r.decision, r.approvals) for r in ApprovalRollupRows] == [("finance_director", "expired", 1)]
    outcome = TaskRollup.objects.get(bucket=ALL_TIME)
    assert (outcome.outcome, outcome.queue, outcome.tasks, outcome.tool_calls) == ("rejected", "finance_director", 1, 4)
    live = rollup_snapshot()
    call_command("rebuild_rollups", verbosity=0)
    assert rollup_snapshot() == live
