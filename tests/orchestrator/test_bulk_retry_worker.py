"""Bulk retry through a real Celery worker: the tick chain paces itself, and the circuit breaker
pauses a retry whose items keep failing, saying why."""
from __future__ import annotations

import pytest
from django.utils import timezone

from orchestrator.models import BulkRetry, DeadLetter, Step, Task
from orchestrator.services import bulk_retry_create, dead_letter_create, task_submit
from tests.conftest import wait_for
from tests.integration.documents import document

pytestmark = pytest.mark.worker


def dead_at_classify(content: str, n: int) -> DeadLetter:
    task = task_submit(content=content, filename=f"doc-{n}.txt")[0]
    # Taken out of the queue before any worker runs: as if classify had failed for good.
    Task.objects.filter(pk=task.pk).update(status="dead_lettered")
    step = Step.objects.create(task=task, worker="classify", attempt=1, status="dead_lettered",
                               started_at=timezone.now(), error_type="Timeout", error_message="timed out")
    return dead_letter_create(task=task, step=step, error_type="Timeout", message="Gave up after 5 attempts")


def test_a_bulk_retry_sends_every_item_back_and_reports_each(start_worker, simulator, operator):
    letters = [dead_at_classify(document(n), n) for n in range(8)]
    start_worker(simulator, concurrency=4)
    bulk = bulk_retry_create(user=operator, dead_letter_ids=[dl.pk for dl in letters], description="all",
                             selection={"scope": "selected"}, rate_per_minute=600)
    wait_for(lambda: BulkRetry.objects.get(pk=bulk.pk).status == "completed", timeout=90,
             message="the bulk retry to complete")
    bulk.refresh_from_db()
    assert (bulk.total, bulk.enqueued, bulk.succeeded, bulk.failed_again) == (8, 8, 8, 0)
    assert set(bulk.items.values_list("status", flat=True)) == {"succeeded"}
    # Each task's classify succeeded exactly once: retried once, never twice.
    assert Step.objects.filter(worker="classify", status="succeeded").count() == 8


def test_the_circuit_breaker_pauses_a_retry_that_keeps_failing(start_worker, simulator, operator):
    letters = [dead_at_classify(document(n) + "[[sim-fault: invalid_schema x 50]]\n", n) for n in range(10)]
    start_worker(simulator, concurrency=4)
    bulk = bulk_retry_create(user=operator, dead_letter_ids=[dl.pk for dl in letters], description="bad",
                             selection={"scope": "selected"}, rate_per_minute=120)
    wait_for(lambda: BulkRetry.objects.get(pk=bulk.pk).status == "paused", timeout=90,
             message="the circuit breaker to pause the retry")
    bulk.refresh_from_db()
    assert "circuit breaker" in bulk.paused_reason and "failed again" in bulk.paused_reason
    assert bulk.items.filter(status="pending").exists()  # the rest was not sent into the failure
    # Every item that failed again is an open dead letter again.
    failed = bulk.items.filter(status="failed_again").values_list("task_id", flat=True)
    assert failed and DeadLetter.objects.filter(task_id__in=failed, status="open").count() == len(failed)
