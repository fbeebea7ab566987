"""Chaos on PostgreSQL + Redis: 500 tasks while the worker is SIGKILLed twice and the broker loses
its queue once. After the restarts every task reaches a permitted status, none is lost, no step
or action runs twice, and every failure is a dead letter an operator can triage.

Runs only against PostgreSQL and Redis (CI's first run): SQLite and the filesystem broker are
for one laptop and would only measure their own locking.
"""
from __future__ import annotations

import time
from collections import Counter

import pytest
from django.conf import settings
from django.db import connection
from django.db.models import Count

from orchestrator.models import DeadLetter, Step, SweepAction, Task
from orchestrator.services import task_submit
from orchestrator.simulator import SimulatorServer
from reviews.models import Approval
from reviews.services import approval_decide
from tests.conftest import wait_for
from tests.integration.documents import document

pytestmark = pytest.mark.worker

TASKS = 500
PERMITTED = {"completed", "awaiting_approval", "rejected", "dead_lettered"}
ENV = {"STEWARD_LEASE_S": "4", "STEWARD_SWEEP_INTERVAL_S": "1", "STEWARD_SWEEP_QUEUED_AFTER_S": "6",
       "STEWARD_MAX_RECOVERIES": "8"}


def _flush_broker_queue() -> int:
    """Delete this test run's Celery queue keys in Redis: every waiting wake-up is lost."""
    import redis

    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    queue = settings.CELERY_TASK_DEFAULT_QUEUE
    keys = [key for key in client.scan_iter(match=f"{queue}*") if key.decode(errors="replace").startswith(queue)]
    return client.delete(*keys) if keys else 0


def settled() -> int:
    return Task.objects.filter(status__in=PERMITTED).count()


@pytest.mark.skipif(not settings.CELERY_BROKER_URL.startswith("redis"), reason="needs CELERY_BROKER_URL=redis://")
def test_500_tasks_survive_two_sigkills_and_a_lost_broker_queue(start_worker, admin_user, settings):
    if connection.vendor != "postgresql":
        pytest.skip("needs DATABASE_URL=postgres://")
    sim = SimulatorServer(port=0, latency_ms=10, fault_rate=0.04, seed=44, retry_after_s=0.5, hang_s=2.0).start()
    settings.STEWARD_WEBHOOK_URL = sim.webhook_url
    started = time.monotonic()
    try:
        start_worker(sim, kind="beat", extra_env=ENV)
        worker = start_worker(sim, concurrency=16, extra_env=ENV)
        ids = [task_submit(content=document(n), filename=f"chaos-{n}.txt")[0].pk for n in range(TASKS)]

        # 1. SIGKILL mid-run, with steps in flight.
        wait_for(lambda: settled() >= 60 and Task.objects.filter(status="running").exists(), timeout=60,
                 interval=0.1, message="work in flight")
        worker.kill()
        held_by_the_dead = set(Task.objects.filter(status="running").values_list("id", flat=True))
        # 2. The broker loses every waiting message of this queue.
        flushed = _flush_broker_queue()
        worker = start_worker(sim, concurrency=16, extra_env=ENV)

        # 3. SIGKILL again, later in the run.
        wait_for(lambda: settled() >= TASKS // 2 and Task.objects.filter(status="running").exists(), timeout=90,
                 interval=0.1, message="half of the tasks to settle")
        worker.kill()
        held_at_the_second_kill = set(Task.objects.filter(status="running").values_list("id", flat=True))
        worker = start_worker(sim, concurrency=16, extra_env=ENV)

        wait_for(lambda: settled() == TASKS, timeout=120, interval=0.5,
                 message=f"every task to settle (log: {worker.log_path})")
        for approval in Approval.objects.filter(status="pending"):
            approval_decide(approval_id=approval.pk, user=admin_user, decision="approve")
        wait_for(lambda: not Task.objects.exclude(status__in={"completed", "rejected", "dead_lettered"}).exists(),
                 timeout=90, interval=0.5, message="approved tasks to act")
        deliveries = sim.webhook_deliveries()
    finally:
        sim.stop()

    statuses = Counter(Task.objects.filter(pk__in=ids).values_list("status", flat=True))
    sweeps = Counter(SweepAction.objects.values_list("action", flat=True))
    print(f"\nchaos run in {time.monotonic() - started:.0f} s: {dict(statuses)}; flushed {flushed} queue keys; "
          f"{len(held_by_the_dead)} tasks held by the first killed worker; sweeper actions {dict(sweeps)}; "
          f"webhook deliveries {deliveries['deliveries']} under {deliveries['unique_keys']} keys")

    # 0 lost, all in permitted statuses.
    assert sum(statuses.values()) == TASKS
    assert set(statuses) <= {"completed", "rejected", "dead_lettered"}, statuses
    assert statuses["completed"] > TASKS // 2
    # The kills and the flush really left orphans, and the sweeper recovered them.
    assert held_by_the_dead and sweeps["requeued"] >= len(held_by_the_dead)
    # No step ran twice after its checkpoint: each completed task has each step once.
    per_task = dict(Step.objects.filter(status="succeeded", task__status="completed").values("task_id")
                    .annotate(n=Count("id")).values_list("task_id", "n"))
    assert set(per_task.values()) == {5}
    # Every failure is an open dead letter, one per dead task, with its type and fingerprint.
    dead = set(Task.objects.filter(status="dead_lettered").values_list("id", flat=True))
    letters = DeadLetter.objects.filter(status="open")
    assert set(letters.values_list("task_id", flat=True)) == dead and letters.count() == len(dead)
    assert not letters.filter(fingerprint="").exists()
    # No action ran twice: one per completed task, each under its own Idempotency-Key. A worker
    # killed between the POST and its checkpoint re-sends under the same key (the receiver's
    # de-duplication is what the key is for): a repeat only for a task a killed worker was running
    # (with 16 threads, a kill can catch more than one between its POST and its checkpoint).
    acted = Approval.objects.filter(action_status="done").count()
    assert acted == statuses["completed"] == deliveries["unique_keys"]
    repeated = [key for key, count in deliveries["by_key"].items() if count > 1]
    assert set(Approval.objects.filter(idempotency_key__in=repeated).values_list("task_id", flat=True)) \
        <= held_by_the_dead | held_at_the_second_kill
