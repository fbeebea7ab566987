"""The orchestrator: runs a task's remaining steps, each one a durable checkpoint.

A step's success is committed together with its results on the task (one transaction), so a
crash loses at most the step in flight, and a retry resumes from the failed step without running
or paying for a succeeded one again (also enforced by a unique index on succeeded steps).

Ownership (DESIGN.md invariant 1): a worker holds a lease on a running task, renewed before
every model call; a transient failure hands the task back to the broker with a countdown; a
permanent one hands it to an open dead letter; a route that needs a person hands it to a pending
approval and releases the worker.
"""
from __future__ import annotations

import functools
import logging
import random
import time
import traceback
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connection, connections, transaction
from django.utils import timezone

from metrics.rollups import rollups_catch_up_if_due

from .checkpoints import checkpoint_write, leased, next_attempt
from .errors import LeaseLost, StepError, TransientError
from .llm import BudgetLimits, Meter, Usage
from .models import Step, StepStatus, Task, TaskStatus, TuningVersion
from .tuning import Tuning, tuning
from .workers import WORKERS, next_step
from .workers.base import Config, StepContext

log = logging.getLogger(__name__)

TOTAL_FIELDS = ("llm_calls", "tool_calls", "input_tokens", "cached_tokens", "output_tokens",
                "reasoning_tokens", "cost_usd")
# What a step records of its meter: the totals plus its own latency.
STEP_USAGE_FIELDS = TOTAL_FIELDS + ("latency_ms",)


def queue_for(worker: str) -> str:
    return settings.STEWARD_WORKER_QUEUES.get(worker, settings.CELERY_TASK_DEFAULT_QUEUE)


def send_task_now(celery_task, *args, countdown: float | None = None, queue: str | None = None) -> None:
    """Send a Celery message. The rows it acts on are committed and are the truth: if the broker is
    down the failure is logged, not raised, and a sweeper re-sends what was not done."""
    options: dict = {"queue": queue or settings.CELERY_TASK_DEFAULT_QUEUE}
    if countdown:
        options["countdown"] = countdown
    try:
        celery_task.apply_async(args=list(args), **options)
    except Exception:  # noqa: BLE001 - see the docstring
        log.exception("Could not reach the broker for %s%s; a sweeper will re-send it", celery_task.name, args)


def send_task_on_commit(celery_task, *args, countdown: float | None = None, queue: str | None = None) -> None:
    """Send a Celery message once the current transaction has committed (a worker must never see
    a row that was not committed)."""
    transaction.on_commit(lambda: send_task_now(celery_task, *args, countdown=countdown, queue=queue))


def send_wakeup(task_id: int, worker: str, countdown: float | None = None) -> None:
    """Ask a Celery worker to run the task, once the current transaction has committed.

    The database already says the task is queued; if the broker is down the sweeper re-sends.
    """
    from .tasks import run_task

    send_task_on_commit(run_task, task_id, countdown=countdown, queue=queue_for(worker))


def worker_config(name: str) -> Config:
    return tuning().config(name)


def current_budget() -> BudgetLimits | None:
    return tuning().budget


def backoff_delay(failures: int, retry_after: float | None) -> float:
    """Exponential backoff with jitter (half fixed, half random), never shorter than Retry-After."""
    base = settings.STEWARD_RETRY_BACKOFF_S * (2 ** max(failures - 1, 0))
    base = min(base, settings.STEWARD_RETRY_BACKOFF_MAX_S)
    delay = base / 2 + random.uniform(0, base / 2)
    return max(delay, retry_after or 0.0)


@dataclass
class Run:
    """One worker's hold on one task: its lease, the task's in-memory totals, and what admins
    tuned as of the claim (every model call of the run is checked against the same budget)."""

    task: Task
    runner: str
    tuning: Tuning
    lease_renewed: float = 0.0
    # The approval the route step opened in this run, handed to act (no need to read it back).
    approval: object = None

    @property
    def budget(self) -> BudgetLimits | None:
        return self.tuning.budget

    def lease_until(self):
        return timezone.now() + timedelta(seconds=settings.STEWARD_LEASE_S)

    def renew_lease(self) -> None:
        if time.monotonic() - self.lease_renewed < settings.STEWARD_LEASE_S / 3:
            return
        if not leased(self.task.pk, self.runner).update(lease_expires_at=self.lease_until()):
            raise LeaseLost(self.task.pk)
        self.lease_renewed = time.monotonic()

    def before_model_call(self) -> None:
        self.renew_lease()
        release_connection()

    def totals(self) -> Usage:
        return Usage(**{name: getattr(self.task, name) for name in TOTAL_FIELDS})

    def add_usage(self, usage: Usage) -> None:
        for name in TOTAL_FIELDS:
            setattr(self.task, name, getattr(self.task, name) + getattr(usage, name))

    def task_values(self, fields: list[str], **changes) -> dict:
        """Apply `changes` to the in-memory task; the columns a checkpoint writes (with the totals)."""
        for name, value in changes.items():
            setattr(self.task, name, value)
        values = {name: getattr(self.task, name) for name in set(fields) | set(changes) | set(TOTAL_FIELDS)}
        values["updated_at"] = timezone.now()
        return values

    def save_task(self, fields: list[str], **changes) -> None:
        """Write the task as part of a checkpoint; fails (rolling back) if our lease was taken."""
        values = self.task_values(fields, **changes)
        if not leased(self.task.pk, self.runner).update(**values):
            raise LeaseLost(self.task.pk)


def release_connection() -> None:
    """Hand this thread's database connection back to the pool while it waits on the model (a
    slow model must not pin a connection per waiting task); the next query takes one again.
    Only with a pool (config/settings.py DB_POOL_MAX_SIZE): without one, that would reconnect."""
    db = connections[DEFAULT_DB_ALIAS]
    if db.connection is not None and not db.in_atomic_block and db.settings_dict["OPTIONS"].get("pool"):
        db.close()


def claim(task_id: int, runner: str) -> tuple[Task, int] | None:
    """Take the task by compare-and-set, in one statement that also returns the task and the
    tuning version (orchestrator/tuning.py). None when another worker has it or it is not runnable.
    """
    now = timezone.now()
    stamp = Task._meta.get_field("updated_at")
    lease_until, at = (stamp.get_db_prep_save(value, connection)
                       for value in (now + timedelta(seconds=settings.STEWARD_LEASE_S), now))
    running, queued = TaskStatus.RUNNING.value, TaskStatus.QUEUED.value
    claimed = list(Task.objects.raw(_claim_sql(), [running, runner, lease_until, at, task_id, queued, at, running, at]))
    if not claimed:
        early = Task.objects.filter(pk=task_id, status=TaskStatus.QUEUED, not_before__gt=now).values_list(
            "not_before", "current_step").first()
        if early:
            # A wake-up that came before the retry time (a re-send): keep the task owned by one.
            send_wakeup(task_id, early[1], countdown=(early[0] - now).total_seconds())
        return None
    task = claimed[0]
    return task, task.tuning_version or 0


@functools.cache
def _claim_sql() -> str:
    """The claim's statement, the same for every task: built once per process."""
    quote = connection.ops.quote_name
    table, versions = quote(Task._meta.db_table), quote(TuningVersion._meta.db_table)
    columns = ", ".join(quote(field.column) for field in Task._meta.concrete_fields)
    return (f"UPDATE {table} SET status = %s, lease_owner = %s, lease_expires_at = %s, not_before = NULL, "
            f"updated_at = %s WHERE id = %s AND ((status = %s AND (not_before IS NULL OR not_before <= %s)) "
            f"OR (status = %s AND lease_expires_at < %s)) "
            f"RETURNING {columns}, (SELECT version FROM {versions} WHERE id = 1) AS tuning_version")


def task_run(task_id: int, *, runner: str) -> str:
    """Run the task's remaining steps (see `_run`), then count recent steps in the monitoring
    rollups if this process is due to (metrics/rollups.py: batched, off the checkpoints)."""
    try:
        return _run(task_id, runner)
    finally:
        rollups_catch_up_if_due()


def _run(task_id: int, runner: str) -> str:
    """Run the task's remaining steps. Returns what happened, for logs and tests.

    Steps: claim the task (compare-and-set lease, with the tuning version); run each remaining
    step on this worker's queue, checkpointing after each; stop when the task completes, waits
    for a person, fails (retry later or dead letter) or moves to a step that belongs on another
    Celery queue.
    """
    claimed = claim(task_id, runner)
    if claimed is None:
        return "not-claimed"
    task, version = claimed
    run = Run(task=task, runner=runner, tuning=tuning(version), lease_renewed=time.monotonic())
    run_queue = queue_for(task.current_step)
    try:
        while task.current_step:
            if queue_for(task.current_step) != run_queue:
                with transaction.atomic():
                    run.save_task([], status=TaskStatus.QUEUED, lease_owner="", lease_expires_at=None,
                                  enqueued_at=timezone.now())
                    send_wakeup(task.pk, task.current_step)
                return "handed-over"
            outcome = run_step(run, task.current_step)
            if outcome != "continue":
                return outcome
        return "completed"
    except LeaseLost:
        log.warning("Task %s: lease lost to another worker; stopping without writing", task_id)
        return "lease-lost"
    except Exception:
        # Outside a step (a checkpoint write failed: database restarting, lock timeout...). Hand
        # the task back now rather than leave it until the lease runs out; if even that fails,
        # the sweeper will find the expired lease.
        log.exception("Task %s: unexpected error outside a step; re-queueing it", task_id)
        release(task.pk, runner)
        raise


def release(task_id: int, runner: str, delay: float = 5.0) -> None:
    try:
        with transaction.atomic():
            not_before = timezone.now() + timedelta(seconds=delay)
            if leased(task_id, runner).update(
                status=TaskStatus.QUEUED, lease_owner="", lease_expires_at=None, not_before=not_before,
                enqueued_at=timezone.now(),
            ):
                current = Task.objects.filter(pk=task_id).values_list("current_step", flat=True).first()
                send_wakeup(task_id, current or "", countdown=delay)
    except Exception:  # noqa: BLE001
        log.exception("Task %s: could not release the lease; the sweeper will recover it", task_id)


def run_step(run: Run, name: str) -> str:
    task = run.task
    module = WORKERS[name]
    config = run.tuning.config(name)
    meter = Meter(task_totals=run.totals(), budget=run.budget, timeout_s=config.timeout_s,
                  before_call=run.before_model_call)
    started_at = timezone.now()
    clock = time.perf_counter()
    error: StepError | None = None
    trace = ""
    output: dict = {}
    try:
        output = module.run(StepContext(task=task, config=config, meter=meter, tuning=run.tuning,
                                        approval=run.approval))
    except LeaseLost:
        raise
    except StepError as exc:
        error, trace = exc, traceback.format_exc()
    except Exception as exc:  # noqa: BLE001 - a bug or an outage: retried, then dead-lettered
        error = TransientError(f"{type(exc).__name__}: {exc}", error_type=type(exc).__name__)
        trace = traceback.format_exc()
    if meter.step.latency_ms == 0:
        meter.step.latency_ms = int((time.perf_counter() - clock) * 1000)
    step = Step(
        task=task, worker=name, input=_step_input(task, name), output=output,
        transcript=meter.transcript, model=meter.model or (config.model if meter.step.llm_calls else ""),
        prompt_version=config.version, simulated=meter.simulated, started_at=started_at,
        finished_at=timezone.now(),
        **{name: getattr(meter.step, name) for name in STEP_USAGE_FIELDS},
    )
    run.add_usage(meter.step)
    if error is None:
        return _succeed(run, module, step, output)
    return _fail(run, step, error, trace, config)


def _step_input(task: Task, name: str) -> dict:
    if name == "classify":
        return {"document_chars": len(task.content)}
    if name == "extract":
        return {"doc_type": task.doc_type}
    return {"doc_type": task.doc_type, "fields": task.fields, "findings": task.findings if name != "verify" else []}


def _succeed(run: Run, module, step: Step, output: dict) -> str:
    """The step's checkpoint: its row, its results on the task and (route) the approval, written
    together while we hold the lease (orchestrator/checkpoints.py)."""
    from reviews.services import approval_build, approval_opened

    task = run.task
    changed = module.apply(task, output)
    following = next_step(step.worker)
    step.status = StepStatus.SUCCEEDED
    changes: dict = {"current_step": following, "step_attempts": 0, "lease_expires_at": run.lease_until()}
    outcome = "continue"
    approval = None
    if step.worker == "route":
        approval = approval_build(task, output, run.tuning.queues[output["queue"]])
        if approval.status == "pending":
            changes.update(status=TaskStatus.AWAITING_APPROVAL, lease_owner="", lease_expires_at=None)
            outcome = "awaiting_approval"
    if not following:
        changes.update(status=TaskStatus.COMPLETED, lease_owner="", lease_expires_at=None,
                       finished_at=timezone.now())
        outcome = "completed"
    checkpoint_write(task, run.runner, run.task_values(changed, **changes), step, approval)
    if approval is not None:
        approval_opened(approval)
        run.approval = approval
    run.lease_renewed = time.monotonic()
    return outcome


def _fail(run: Run, step: Step, error: StepError, trace: str, config: Config) -> str:
    from .services import dead_letter_create

    task = run.task
    step.error_type = error.error_type
    step.error_message = error.message[:5000]
    failures = task.step_attempts + 1
    retry = not error.permanent and failures <= config.max_retries
    with transaction.atomic():
        step.attempt = next_attempt(task.pk, step.worker)
        if retry:
            delay = backoff_delay(failures, error.retry_after)
            step.status = StepStatus.FAILED
            step.retry_after_s = error.retry_after
            step.next_attempt_at = timezone.now() + timedelta(seconds=delay)
            step.save(force_insert=True)
            run.save_task([], status=TaskStatus.QUEUED, step_attempts=failures, lease_owner="",
                          lease_expires_at=None, not_before=step.next_attempt_at, enqueued_at=timezone.now())
            send_wakeup(task.pk, step.worker, countdown=delay)
            outcome = "retry-scheduled"
        else:
            step.status = StepStatus.DEAD_LETTERED
            step.save(force_insert=True)
            run.save_task([], status=TaskStatus.DEAD_LETTERED, step_attempts=failures, lease_owner="",
                          lease_expires_at=None)
            message = error.message
            if not error.permanent:
                message = f"Gave up after {failures} attempts: {error.message}"
            dead_letter_create(task=task, step=step, error_type=error.error_type, message=message,
                               traceback=trace, attempts=failures, evidence=error.evidence)
            outcome = "dead-lettered"
    log.info("Task %s step %s attempt %s failed (%s): %s", task.pk, step.worker, step.attempt,
             error.error_type, outcome)
    return outcome

