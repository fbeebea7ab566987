"""A worker waiting on a slow model holds pool connections only while it writes (PostgreSQL)."""
from __future__ import annotations

import threading

import pytest
from django.db import connection

from orchestrator.models import Task
from orchestrator.services import task_submit
from orchestrator.simulator import SimulatorServer
from tests.conftest import wait_for
from tests.integration.documents import document

pytestmark = pytest.mark.worker

WORKER_APP_NAME = "steward-pool-test-worker"


def test_eight_tasks_waiting_on_the_model_share_two_connections(start_worker):
    if connection.vendor != "postgresql":
        pytest.skip("connection pooling is PostgreSQL's (config/settings.py DB_POOL_MAX_SIZE)")
    sim = SimulatorServer(latency_ms=250).start()
    try:
        # The worker's connections carry their own application name (libpq reads PGAPPNAME), so the
        # count leaves out this test process's own pool and anything an earlier test left behind.
        start_worker(sim, concurrency=8, extra_env={"DB_POOL_MAX_SIZE": "2", "PGAPPNAME": WORKER_APP_NAME})
        peak = {"connections": 0, "running": 0}
        done = threading.Event()

        def sample() -> None:
            from django.db import connections

            try:
                with connections["default"].cursor() as cursor:
                    while not done.wait(0.05):
                        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                                       [WORKER_APP_NAME])
                        peak["connections"] = max(peak["connections"], cursor.fetchone()[0])
                        cursor.execute("SELECT count(*) FROM orchestrator_task WHERE status = 'running'")
                        peak["running"] = max(peak["running"], cursor.fetchone()[0])
            finally:
                connections["default"].close()

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            ids = [task_submit(content=document(i), filename=f"doc-{i}.txt")[0].pk for i in range(16)]
            wait_for(lambda: Task.objects.filter(pk__in=ids, status__in=("completed", "awaiting_approval",
                                                                          "dead_lettered")).count() == 16,
                     timeout=120, message="16 tasks to settle")
        finally:
            done.set()
            sampler.join()
    finally:
        sim.stop()

    assert Task.objects.filter(pk__in=ids, status="dead_lettered").count() == 0
    assert peak["running"] >= 4  # the tasks did wait on the model side by side...
    assert 1 <= peak["connections"] <= 2  # ...on no more connections than the pool's size
