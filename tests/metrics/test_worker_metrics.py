"""Figures made in a real Celery worker process reach the scrape of the web process."""
from __future__ import annotations

import pytest
from django.db.models import Sum

from orchestrator.models import Step, Task
from orchestrator.services import task_submit
from tests.conftest import wait_for

from .conftest import LARGE_INVOICE, LOOPING, SMALL_INVOICE, samples, scrape, total

pytestmark = pytest.mark.worker


def test_a_workers_figures_are_on_the_web_process_metrics(pipeline_worker, operator):
    before = samples(scrape(operator))
    assert total(before, "steward_steps_total") == 0

    ids = [task_submit(content=text, filename=name)[0].pk for text, name in
           ((SMALL_INVOICE, "small.txt"), (LARGE_INVOICE, "large.txt"), (LOOPING, "loop.txt"))]
    wait_for(lambda: Task.objects.filter(pk__in=ids, status__in=("completed", "awaiting_approval", "dead_lettered"))
             .count() == 3, timeout=60, message="the worker to settle three tasks")

    # This process ran no step: every figure below was made by the worker process.
    found = samples(scrape(operator))
    steps = Step.objects.filter(task_id__in=ids)
    assert total(found, "steward_steps_total") == steps.count() >= 11
    assert total(found, "steward_tokens_total", token_type="input") == steps.aggregate(s=Sum("input_tokens"))["s"]
    assert total(found, "gen_ai_client_operation_duration_seconds_count") == steps.aggregate(s=Sum("llm_calls"))["s"]
    assert total(found, "steward_task_outcomes_total", outcome="completed", human_intervention="false") == 1
    assert total(found, "steward_loops_stopped_total", worker="verify", error_type="LoopDetected") == 1
    assert total(found, "steward_tasks", status="awaiting_approval") == 1
    assert total(found, "steward_approvals_pending", queue="finance_director") == 1
    assert total(found, "steward_approvals_total", decision="auto_approved") == 1
