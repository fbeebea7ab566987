"""Celery tasks: thin. They take ids and call the pipeline or the sweeper."""
from __future__ import annotations

import os
import socket
import threading
import uuid

from celery import shared_task

from . import pipeline, sweeper


def runner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}:{uuid.uuid4().hex[:8]}"


@shared_task(name="orchestrator.tasks.run_task", acks_late=True, reject_on_worker_lost=True)
def run_task(task_id: int) -> str:
    return pipeline.task_run(task_id, runner=runner_id())


@shared_task(name="orchestrator.tasks.sweep", acks_late=False)
def sweep() -> dict:
    return sweeper.sweep()


@shared_task(name="orchestrator.tasks.bulk_retry_tick", acks_late=True, reject_on_worker_lost=True)
def bulk_retry_tick(bulk_id: int) -> str:
    from .services import bulk_retry_advance

    return bulk_retry_advance(bulk_id=bulk_id)
