"""Kill the worker with SIGKILL mid-run: the sweeper (in a real beat) recovers every task."""
from __future__ import annotations

from collections import Counter

import pytest
from django.db.models import Count

from orchestrator.models import Step, Task
from orchestrator.services import task_submit
from orchestrator.simulator import SimulatorServer
from tests.conftest import wait_for
from tests.integration.documents import document

pytestmark = pytest.mark.worker

TASKS = 40
# Short lease and sweep times so that the recovery happens within the test.
RECOVERY_ENV = {"STEWARD_LEASE_S": "4", "STEWARD_SWEEP_INTERVAL_S": "1", "STEWARD_SWEEP_QUEUED_AFTER_S": "8"}


def test_sigkill_mid_run_loses_nothing(start_worker, settings):
    sim = SimulatorServer(port=0, latency_ms=150).start()
    settings.STEWARD_WEBHOOK_URL = sim.webhook_url
    try:
        start_worker(sim, kind="beat", extra_env=RECOVERY_ENV)
        first = start_worker(sim, concurrency=4, extra_env=RECOVERY_ENV)
        ids = [task_submit(content=document(n), filename=f"doc-{n}.txt")[0].pk for n in range(TASKS)]

        wait_for(lambda: Step.objects.filter(status="succeeded").count() >= 10
                 and Task.objects.filter(status="running").exists(), timeout=60, message="work in flight")
        first.kill()
        orphaned = set(Task.objects.filter(status="running").values_list("id", flat=True))
        assert orphaned, "the kill should leave running tasks behind"

        second = start_worker(sim, concurrency=4, extra_env=RECOVERY_ENV)
        wait_for(lambda: not Task.objects.exclude(status__in=["completed", "awaiting_approval"]).exists(),
                 timeout=180, interval=0.5, message=f"every task to settle (log: {second.log_path})")
        deliveries = sim.webhook_deliveries()
    finally:
        sim.stop()

    statuses = Counter(Task.objects.filter(pk__in=ids).values_list("status", flat=True))
    assert sum(statuses.values()) == TASKS
    assert set(statuses) <= {"completed", "awaiting_approval"}, statuses
    # The tasks the dead worker held were recovered by the sweeper, not by luck.
    recovered = Task.objects.filter(pk__in=orphaned, recoveries__gte=1)
    assert recovered.count() == len(orphaned)
    # Each step succeeded exactly once per task: nothing was re-run after its checkpoint.
    per_task = Step.objects.filter(status="succeeded").values("task_id").annotate(n=Count("id"))
    expected = {"completed": 5, "awaiting_approval": 4}
    for row in per_task:
        assert row["n"] == expected[Task.objects.get(pk=row["task_id"]).status]
    # One action per completed task, each under its own key.
    assert deliveries["unique_keys"] == statuses["completed"]
