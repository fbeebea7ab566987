"""The sweeps get through a backlog: beat's messages go to a small control queue that every worker
also consumes, so they do not wait (and expire, STEWARD_SWEEP_INTERVAL_S later) behind thousands of
wake-ups in the default queue.

Real processes: a beat, a worker started with -Q for the default queue only (as the tests start
every worker, and as README's per-kind setups do), and the broker of the run: the filesystem
broker by default, Redis with CELERY_BROKER_URL=redis://... (kombu's BRPOP over the queues).
"""
from __future__ import annotations

import time

import pytest
from django.conf import settings
from django.utils import timezone

from config.celery import app
from orchestrator.models import SweepRun, Task
from orchestrator.simulator import SimulatorServer
from orchestrator.tasks import run_task
from tests.conftest import broker_waiting as waiting, purge_broker_queues, wait_for
from tests.integration.documents import document

pytestmark = pytest.mark.worker

BACKLOG = 2000
SWEEP_ENV = {"STEWARD_SWEEP_INTERVAL_S": "2", "STEWARD_REVIEW_SWEEP_INTERVAL_S": "2"}


def backlog(tasks: int) -> list[int]:
    """`tasks` documents queued at once, their wake-ups waiting in the default queue."""
    now = timezone.now()
    rows = Task.objects.bulk_create(
        Task(content=document(n), content_sha256=f"{n:064x}", filename=f"backlog-{n}.txt", enqueued_at=now)
        for n in range(tasks))
    queue = settings.CELERY_TASK_DEFAULT_QUEUE
    with app.producer_or_acquire() as producer:
        for task in rows:
            run_task.apply_async(args=[task.pk], queue=queue, producer=producer)
    return [task.pk for task in rows]


def test_the_sweeps_run_on_time_while_thousands_of_wake_ups_wait(start_worker):
    # Model calls of 300 ms, two threads: a few tasks a second, against thousands queued.
    sim = SimulatorServer(port=0, latency_ms=300).start()
    queue = settings.CELERY_TASK_DEFAULT_QUEUE
    try:
        backlog(BACKLOG)
        assert waiting(queue) == BACKLOG
        start_worker(sim, concurrency=2, extra_env=SWEEP_ENV)
        wait_for(lambda: Task.objects.filter(status="completed").exists(), timeout=60, message="work under way")
        started = time.monotonic()
        start_worker(sim, kind="beat", extra_env=SWEEP_ENV)

        # Each sweep expires 2 s after beat sends it: it must not wait behind the backlog.
        wait_for(lambda: SweepRun.objects.count() >= 3, timeout=30, interval=0.5,
                 message="three sweeps to run while the backlog waits")
        elapsed = time.monotonic() - started
        still_waiting = waiting(queue)
    finally:
        sim.stop()
        purge_broker_queues(queue, settings.STEWARD_CONTROL_QUEUE)

    assert still_waiting > BACKLOG * 0.8, "the backlog should still be there: the sweeps went past it"
    assert elapsed < 30
