"""Steps are counted after their checkpoint commits, in batches, exactly once: by the workers'
catch-up, and by /metrics and the charts before they read."""
from __future__ import annotations

import threading
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection, connections
from django.db.models import Sum
from django.utils import timezone

from metrics.models import ALL_TIME, StepRollup
from metrics.rollups import rollups_catch_up
from orchestrator.models import Step, Task
from orchestrator.services import task_submit

from .conftest import SMALL_INVOICE, samples, scrape, total


def counted_steps() -> int:
    return StepRollup.objects.filter(bucket=ALL_TIME).aggregate(n=Sum("steps"))["n"] or 0


@pytest.mark.django_db
def test_a_task_steps_wait_for_the_catch_up_and_a_scrape_catches_up(run_pipeline, operator, monkeypatch):
    from metrics import rollups

    monkeypatch.setattr(rollups, "_last_catch_up", float("inf"))  # as if it had just caught up: not due
    task = run_pipeline(task_submit(content=SMALL_INVOICE, filename="small.txt")[0])
    assert task.status == "completed"
    assert Step.objects.filter(counted=False).count() == 5  # checkpoints wrote only their steps
    assert counted_steps() == 0

    found = samples(scrape(operator))  # the scrape counts them before it reads

    assert total(found, "steward_steps_total") == 5
    assert total(found, "steward_task_outcomes_total", outcome="completed") == 1
    assert counted_steps() == 5 and not Step.objects.filter(counted=False).exists()
    assert rollups_catch_up() == 0  # nothing is counted twice
    assert counted_steps() == 5


@pytest.mark.django_db(transaction=True)
def test_concurrent_catch_ups_count_each_step_once():
    if connection.vendor != "postgresql":
        pytest.skip("SQLite has one writer at a time; the advisory lock is PostgreSQL's")
    task, _ = task_submit(content=SMALL_INVOICE, filename="small.txt")
    now = timezone.now() - timedelta(minutes=1)
    Step.objects.bulk_create([
        Step(task=task, worker="classify", attempt=n, status="failed", error_type="Timeout", model="gpt-4o-mini",
             llm_calls=1, input_tokens=10, cost_usd=Decimal("0.00000100"), started_at=now, finished_at=now)
        for n in range(1, 4001)
    ])
    results: list[int] = []
    start = threading.Barrier(4)

    def catch_up() -> None:
        try:
            start.wait()
            results.append(rollups_catch_up())
        finally:
            connections["default"].close()

    threads = [threading.Thread(target=catch_up) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    rollups_catch_up()  # whatever a skipped catch-up left

    assert counted_steps() == 4000
    assert sum(results) <= 4000
    assert StepRollup.objects.get(bucket=ALL_TIME).cost_usd == Decimal("0.00400000")
    assert not Step.objects.filter(counted=False).exists()
    Task.objects.all().delete()
