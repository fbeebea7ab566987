"""Each worker kind can run on its own Celery queue (STEWARD_WORKER_QUEUES)."""
from __future__ import annotations

import pytest

from orchestrator.models import Task
from orchestrator.pipeline import task_run
from orchestrator.services import task_submit
from tests.conftest import wait_for
from tests.integration.test_worker_pipeline import SMALL_INVOICE

pytestmark = pytest.mark.worker


@pytest.mark.django_db
def test_a_step_on_another_queue_is_handed_over(settings, simulator):
    settings.STEWARD_WORKER_QUEUES = {"verify": "agents"}
    task, _ = task_submit(content=SMALL_INVOICE, filename="small.txt")

    assert task_run(task.pk, runner="default-queue-worker") == "handed-over"

    task.refresh_from_db()
    assert (task.status, task.current_step, task.lease_owner) == ("queued", "verify", "")
    assert [s.worker for s in task.steps.all()] == ["classify", "extract"]


def test_two_workers_on_two_queues_finish_the_task_together(start_worker, simulator, settings):
    agents = f"{settings.CELERY_TASK_DEFAULT_QUEUE}-agents"
    settings.STEWARD_WORKER_QUEUES = {"verify": agents}
    routing = {"STEWARD_WORKER_QUEUES": f"verify={agents}"}
    default_worker = start_worker(simulator, extra_env=routing)
    agents_worker = start_worker(simulator, extra_env={**routing, "TEST_WORKER_QUEUES": agents})

    task, _ = task_submit(content=SMALL_INVOICE, filename="small.txt")
    task = wait_for(lambda: Task.objects.filter(pk=task.pk, status__in=["completed", "dead_lettered"]).first(),
                    message="the task to finish")

    assert task.status == "completed", default_worker.log()
    assert simulator.webhook_deliveries()["deliveries"] == 1
    # Three messages: submit -> default queue (classify, extract), hand-over -> agents (verify),
    # hand-over -> default (route, act).
    # ("received" and "succeeded" lines; the last "succeeded" may be logged just after the commit.)
    received = "orchestrator.tasks.run_task["
    wait_for(lambda: default_worker.log().count(received) >= 2 * 2, timeout=10, message="the last log line")
    assert default_worker.log().count(received) == 2 * 2
    assert agents_worker.log().count(received) == 1 * 2
