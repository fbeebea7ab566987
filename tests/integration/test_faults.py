"""300 documents through a real worker while the model fails 30% of the time.

What an operator must be able to rely on: nothing is lost, every failure is a dead letter with
its type, no retry fires before the server's Retry-After, and no action runs twice.
"""
from __future__ import annotations

from collections import Counter

import pytest

from orchestrator.models import DeadLetter, Step, Task
from orchestrator.services import task_submit
from orchestrator.simulator import SimulatorServer
from reviews.models import Approval
from reviews.services import approval_decide
from tests.conftest import wait_for
from tests.integration.documents import document

pytestmark = pytest.mark.worker

TASKS = 300
SETTLED = {"completed", "awaiting_approval", "rejected", "dead_lettered"}


def unsettled() -> int:
    return Task.objects.exclude(status__in=SETTLED).count()


def test_300_tasks_with_a_30_percent_fault_mix(start_worker, admin_user, settings):
    sim = SimulatorServer(port=0, fault_rate=0.3, seed=2026, retry_after_s=1.0, hang_s=4.0).start()
    settings.STEWARD_WEBHOOK_URL = sim.webhook_url
    try:
        worker = start_worker(sim, concurrency=8)
        ids = [task_submit(content=document(n), filename=f"doc-{n}.txt")[0].pk for n in range(TASKS)]

        wait_for(lambda: unsettled() == 0, timeout=420, interval=1,
                 message=f"all tasks to settle (log: {worker.log_path})")
        for approval in Approval.objects.filter(status="pending"):
            approval_decide(approval_id=approval.pk, user=admin_user, decision="approve")
        wait_for(lambda: not Task.objects.exclude(status__in={"completed", "rejected", "dead_lettered"}).exists(),
                 timeout=300, interval=1, message="approved tasks to act")

        stats = sim.stats()
        deliveries = sim.webhook_deliveries()
    finally:
        sim.stop()

    # 0 lost: every submitted task is here, in a final status.
    statuses = Counter(Task.objects.filter(pk__in=ids).values_list("status", flat=True))
    print(f"\nfault run: {dict(statuses)}; simulator faults {stats['faults']}; "
          f"failed attempts {Step.objects.filter(status='failed').count()}; dead letters by type "
          f"{dict(Counter(DeadLetter.objects.values_list('error_type', flat=True)))}; "
          f"webhook deliveries {deliveries['deliveries']}")
    assert sum(statuses.values()) == TASKS
    assert set(statuses) <= {"completed", "dead_lettered"}, statuses
    assert statuses["completed"] > TASKS // 2, statuses

    # The faults really happened, and most were absorbed by retries.
    assert sum(stats["faults"].values()) >= 100, stats
    assert Step.objects.filter(status="failed").count() >= 50

    # Every failure is a dead letter with its error type; every dead letter is a dead task.
    dead = set(Task.objects.filter(status="dead_lettered").values_list("id", flat=True))
    letters = list(DeadLetter.objects.filter(status="open"))
    assert {d.task_id for d in letters} == dead
    assert len(letters) == len(dead)
    assert all(d.error_type and d.fingerprint and d.message for d in letters)

    # No retry fired before Retry-After (or before its own backoff).
    failed = Step.objects.filter(status="failed").order_by("task_id", "worker", "attempt")
    for step in failed:
        following = Step.objects.filter(task_id=step.task_id, worker=step.worker, attempt=step.attempt + 1).first()
        if following is None:
            continue
        waited = (following.started_at - step.finished_at).total_seconds()
        if step.retry_after_s:
            assert waited >= step.retry_after_s, (step.task_id, step.worker, step.attempt, waited)
        assert following.started_at >= step.next_attempt_at, (step.task_id, step.worker, step.attempt)
    assert failed.filter(error_type="RateLimited", retry_after_s=1.0).exists()

    # No action ran twice: one delivery per approval that acted, each under its own key.
    acted = Approval.objects.filter(action_status="done")
    assert acted.count() == statuses["completed"]
    assert deliveries["deliveries"] == deliveries["unique_keys"] == acted.count()
    assert set(deliveries["by_key"]) == set(acted.values_list("idempotency_key", flat=True))
    # A succeeded step never ran twice (also a database constraint).
    assert not Step.objects.filter(status="succeeded").values("task_id", "worker").annotate(
        n=__import__("django.db.models", fromlist=["Count"]).Count("id")).filter(n__gt=1).exists()
