"""/metrics after a known scenario: Steward's figures, named after the OTel GenAI conventions."""
from __future__ import annotations

import pytest
from django.db.models import Sum

from orchestrator.models import Step

from .conftest import run_promtool, samples, scrape, total

pytestmark = pytest.mark.django_db


def test_figures_after_a_known_scenario(scenario, operator):
    found = samples(scrape(operator))
    steps = Step.objects.all()

    assert total(found, "steward_steps_total") == steps.count()
    assert total(found, "steward_steps_total", worker="verify", outcome="dead_lettered") == 1
    assert total(found, "steward_tokens_total", token_type="input") == steps.aggregate(s=Sum("input_tokens"))["s"]
    assert total(found, "steward_tokens_total", token_type="output") == steps.aggregate(s=Sum("output_tokens"))["s"]
    assert total(found, "steward_cost_usd_total") == pytest.approx(float(steps.aggregate(s=Sum("cost_usd"))["s"]))

    # Tasks by status, and outcomes with and without a person.
    assert total(found, "steward_tasks", status="completed") == 2
    assert total(found, "steward_tasks", status="rejected") == 1
    assert total(found, "steward_tasks", status="dead_lettered") == 2
    assert total(found, "steward_task_outcomes_total", outcome="completed", human_intervention="false") == 1
    assert total(found, "steward_task_outcomes_total", outcome="completed", human_intervention="true") == 1

    # Approvals by decision and reason; none pending.
    assert total(found, "steward_approvals_total", queue="finance_director", decision="rejected",
                 reason="duplicate") == 1
    assert total(found, "steward_approvals_total", decision="auto_approved") == 1
    assert total(found, "steward_approvals_pending") == 0
    assert total(found, "steward_approval_wait_seconds_count", decision="approved") == 1

    # Dead letters by error type and worker; the loop is counted as a loop.
    assert total(found, "steward_dead_letters_total", worker="verify", error_type="LoopDetected") == 1
    assert total(found, "steward_dead_letters_total", worker="classify", error_type="ContentFilter") == 1
    assert total(found, "steward_dead_letters_open") == 2
    assert total(found, "steward_loops_stopped_total", error_type="LoopDetected") == 1

    # OpenTelemetry GenAI histograms, one observation per model call (a refused call took time, no tokens).
    calls = steps.aggregate(s=Sum("llm_calls"))["s"]
    errored = steps.filter(error_type="ContentFilter").aggregate(s=Sum("llm_calls"))["s"]
    assert errored == 1
    assert total(found, "gen_ai_client_operation_duration_seconds_count") == calls
    assert total(found, "gen_ai_client_token_usage_count", gen_ai_token_type="input") == calls - errored
    assert total(found, "gen_ai_client_token_usage_sum", gen_ai_token_type="output") == \
        steps.filter(llm_calls__gt=0).exclude(error_type="ContentFilter").aggregate(s=Sum("output_tokens"))["s"]
    assert total(found, "gen_ai_client_token_usage_sum", gen_ai_token_type="input") == \
        steps.filter(llm_calls__gt=0).exclude(error_type="ContentFilter").aggregate(s=Sum("input_tokens"))["s"]
    # Each answer's own latency, as its transcript recorded it; a call with no answer, its step's.
    answered = [entry["latency_ms"] for step in steps for entry in step.transcript if entry.get("kind") == "response"]
    unanswered = [step.latency_ms for step in steps.filter(llm_calls__gt=0)
                  if not any(entry.get("kind") == "response" for entry in step.transcript)]
    assert answered and unanswered
    assert total(found, "gen_ai_client_operation_duration_seconds_sum") == \
        pytest.approx((sum(answered) + sum(unanswered)) / 1000)
    # Tool calls per agent invocation: the verify steps of four tasks that got that far.
    assert total(found, "gen_ai_invoke_agent_tool_calls_count", gen_ai_agent_name="verify") == 4
    assert total(found, "gen_ai_invoke_agent_tool_calls_sum", gen_ai_agent_name="verify") == \
        steps.filter(worker="verify").aggregate(s=Sum("tool_calls"))["s"]
    # Per task: five outcomes observed, the loop's 3 tool calls among them.
    assert total(found, "steward_task_tool_calls_count") == 5
    assert total(found, "steward_task_tool_calls_bucket", outcome="dead_lettered", le="2.0") == 1  # the filtered one
    assert total(found, "steward_task_tool_calls_bucket", outcome="dead_lettered", le="3.0") == 2  # + the loop


def test_labels_stay_low_cardinality(scenario, operator):
    text = scrape(operator)
    for line in text.splitlines():
        if line.startswith(("steward_", "gen_ai_")):
            assert "task_id" not in line and "task=" not in line
    for task in (scenario.small, scenario.large):
        assert f'"{task.filename}"' not in text


def test_pending_and_overdue_approvals_are_live(db, make_task, make_approval, operator):
    from datetime import timedelta

    from django.utils import timezone

    task = make_task(status="awaiting_approval", doc_type="Invoice", routed_to="finance_director")
    make_approval(task, "finance_director", due_at=timezone.now() - timedelta(minutes=5))
    found = samples(scrape(operator))
    assert total(found, "steward_approvals_pending", queue="finance_director") == 1
    assert total(found, "steward_approvals_overdue", queue="finance_director") == 1
    assert total(found, "steward_tasks", status="awaiting_approval") == 1


def test_promtool_check_metrics_passes(scenario, operator):
    result = run_promtool("check", "metrics", stdin=scrape(operator))
    assert result.returncode == 0, result.stdout + result.stderr
    # promtool prints lint findings without failing on some of them: there must be none of ours.
    ours = [line for line in (result.stdout + result.stderr).splitlines() if "steward" in line or "gen_ai" in line]
    assert not ours, ours


def test_when_the_sweeper_last_ran_is_exposed(db, operator):
    from datetime import timedelta

    from django.utils import timezone

    from orchestrator.models import SweepRun

    assert not total(samples(scrape(operator)), "steward_sweeper_last_run_timestamp_seconds")  # never ran
    started = timezone.now() - timedelta(minutes=20)
    SweepRun.objects.create(started_at=started, actions_count=0)
    SweepRun.objects.create(started_at=started - timedelta(minutes=1), actions_count=0)
    found = samples(scrape(operator))
    assert total(found, "steward_sweeper_last_run_timestamp_seconds") == pytest.approx(started.timestamp(), abs=0.01)
