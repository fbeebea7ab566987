"""Loop detection acts: repeated identical tool calls, or far above the worker's p95, stop the task."""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from metrics import histograms as h
from metrics.charts import chart_dead_letters, chart_filters, chart_tool_calls
from metrics.loops import clear_cache, compute_ceiling
from metrics.rollups import Accumulator, hour
from orchestrator.errors import LoopDetected
from orchestrator.llm import Meter, Usage
from orchestrator.models import WorkerConfig
from orchestrator.services import task_submit

from .conftest import LOOPING, SMALL_INVOICE
from tests.conftest import save_changes

pytestmark = pytest.mark.django_db


def seed_verify_steps(count: int, tool_calls: int, *, hours_ago: int = 1) -> None:
    """Rollup observations as if `count` verify steps had made `tool_calls` calls each."""
    acc = Accumulator()
    for _ in range(count):
        acc.observe(h.AGENT_TOOL_CALLS, tool_calls, bucket=hour(timezone.now() - timedelta(hours=hours_ago)),
                    worker="verify", model="gpt-4o-mini")
    acc.apply()
    clear_cache()


def test_the_same_tool_call_three_times_stops_the_task_with_evidence(run_pipeline):
    task = run_pipeline(task_submit(content=LOOPING, filename="loop.txt")[0])

    assert task.status == "dead_lettered"
    letter = task.dead_letters.get()
    assert (letter.worker, letter.error_type, letter.attempts) == ("verify", "LoopDetected", 1)
    assert "find_duplicates called 3 times with the same arguments" in letter.message
    assert letter.evidence["rule"] == "repeated_call"
    assert letter.evidence["times"] == 3
    assert [c["tool"] for c in letter.evidence["recent_tool_calls"]] == ["find_duplicates"] * 3
    assert task.tool_calls == 3  # stopped long before the round bound (6) or the budget (40)


def test_a_step_far_above_the_workers_p95_is_stopped(run_pipeline, settings):
    settings.STEWARD_LOOP_REPEAT_LIMIT = 0  # only the p95 rule
    save_changes(WorkerConfig.objects.filter(worker="verify"), max_tool_rounds=50)
    seed_verify_steps(60, 2)  # usually 2 tool calls per verify step

    task = run_pipeline(task_submit(content=LOOPING, filename="loop.txt")[0])

    letter = task.dead_letters.get()
    assert letter.error_type == "LoopDetected"
    evidence = letter.evidence
    assert (evidence["rule"], evidence["p95"], evidence["ceiling"], evidence["samples"]) == ("above_p95", 2.0, 7, 60)
    assert evidence["tool_calls"] == 8 == task.tool_calls  # the first call over the ceiling of max(2x3, 2+5)
    assert "above the ceiling of 7" in letter.message


def test_no_ceiling_without_enough_recent_steps(settings):
    seed_verify_steps(49, 2)
    assert compute_ceiling("verify") is None
    seed_verify_steps(30, 2, hours_ago=24 * 8)  # older than the 7-day window: not counted
    assert compute_ceiling("verify") is None
    seed_verify_steps(1, 2)
    ceiling = compute_ceiling("verify")
    assert (ceiling.p95, ceiling.limit, ceiling.samples) == (2.0, 7, 50)
    settings.STEWARD_LOOP_P95_FACTOR = 5
    assert compute_ceiling("verify").limit == 10


def test_arguments_spelled_differently_are_the_same_call(settings):
    meter = Meter(task_totals=Usage(), budget=None, timeout_s=1)
    meter.count_tool_call("counterparty_history", '{"counterparty": "Acme", "limit": 5}', {})
    meter.count_tool_call("counterparty_history", '{"counterparty": "Other"}', {})
    meter.count_tool_call("counterparty_history", '{"limit": 5, "counterparty": "Acme"}', {})
    with pytest.raises(LoopDetected) as caught:
        meter.count_tool_call("counterparty_history", '{ "counterparty":"Acme","limit":5 }', {})
    assert caught.value.evidence["times"] == 3


def test_a_normal_verifier_is_not_stopped(run_pipeline):
    seed_verify_steps(60, 3)
    task = run_pipeline(task_submit(content=SMALL_INVOICE, filename="ok.txt")[0])
    assert task.status == "completed"
    assert task.tool_calls >= 2


def test_loops_show_on_the_charts(run_pipeline, settings):
    run_pipeline(task_submit(content=LOOPING, filename="loop.txt")[0])
    settings.STEWARD_LOOP_MIN_SAMPLES = 1
    clear_cache()
    filters = chart_filters({"range": "24h"})

    dead = chart_dead_letters(filters)
    assert dead.rows == [["LoopDetected", "verify", 1, "yes"]]
    tools = chart_tool_calls(filters)
    assert ["3", 1] in tools.rows
    assert "Tasks stopped as loops in this range: 1 (again after a retry: each time)." in tools.note
    assert "loop ceiling" in tools.svg and "budget 40" in tools.svg
