"""The sweeper (beat, every STEWARD_SWEEP_INTERVAL_S): finds tasks whose owner vanished.

- running with an expired lease: the worker died or hung -> re-enqueue;
- queued with no pickup for STEWARD_SWEEP_QUEUED_AFTER_S, and no message left for it in the broker
  (orchestrator/backlog.py: not merely waiting behind a backlog): the broker lost it -> re-send;
- awaiting approval whose approval was decided: the wake-up was lost -> resume or close;
- a running bulk retry whose next tick is long overdue: its message was lost -> send a tick.
Each run is recorded (SweepRun) with one SweepAction per task it touched, for the stuck-work page;
runs that did nothing are kept for a day, the others for 30 days. It also deletes the failed-login
counts whose wait is over, and, once an hour per process, the expired sessions (orchestrator/login.py).
A task recovered more than STEWARD_MAX_RECOVERIES times is dead-lettered instead. Every change is
a compare-and-set, so two sweepers (or a sweeper racing a worker) cannot double-run a task.
"""
from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Count, F, Q
from django.utils import timezone

from metrics.rollups import record_dead_letter, rollups_catch_up

from .backlog import messages_waiting
from .models import Task, TaskStatus
from .pipeline import queue_for, send_wakeup

log = logging.getLogger(__name__)
BATCH = 500
# Queued tasks in the order their wake-ups were sent (a task never sent one counts as the oldest).
OLDEST_FIRST = (F("enqueued_at").asc(nulls_first=True), "id")
# What the sweeper did to a task, as counted in its report (the rest says what it left alone).
RECOVERIES = ("expired_leases", "lost_messages", "resumed_approvals", "dead_lettered")


def owning_a_message(now) -> Q:
    """Queued tasks whose wake-up should wait in the broker. Not those waiting out a retry's
    backoff: a worker took their delayed message and holds it until then (Celery keeps a countdown
    message in the worker), so counting them would make room for re-sending tasks whose messages
    are still waiting."""
    return Q(status=TaskStatus.QUEUED) & (Q(not_before__isnull=True) | Q(not_before__lte=now))


def _recover(task_id: int, condition: Q, reason: str, now, actions: list | None = None) -> str:
    from .services import dead_letter_create

    with transaction.atomic():
        task = Task.objects.filter(pk=task_id).filter(condition).first()
        if task is None:
            return "skipped"
        if actions is not None:
            actions.append((task_id, task.current_step, task.lease_owner, reason))
        if task.recoveries >= settings.STEWARD_MAX_RECOVERIES:
            if not Task.objects.filter(pk=task_id).filter(condition).update(
                status=TaskStatus.DEAD_LETTERED, lease_owner="", lease_expires_at=None, updated_at=now
            ):
                return "skipped"
            letter = dead_letter_create(
                task=task, step=None, error_type="Orphaned",
                message=f"Recovered {task.recoveries} times and still lost ({reason}) at step {task.current_step}",
                attempts=task.recoveries, evidence={"reason": reason, "step": task.current_step},
            )
            record_dead_letter(letter.pk)  # monitoring rollups: no failing step counts this one
            return "dead-lettered"
        if not Task.objects.filter(pk=task_id).filter(condition).update(
            status=TaskStatus.QUEUED, lease_owner="", lease_expires_at=None, not_before=None,
            enqueued_at=now, recoveries=F("recoveries") + 1, updated_at=now,
        ):
            return "skipped"
        send_wakeup(task_id, task.current_step)
    return "requeued"


def sweep(now=None) -> dict:
    """Run every recovery rule once, and record what was done (SweepRun, SweepAction)."""
    from .login import login_failures_forget, sessions_clear_expired
    from .models import SweepAction, SweepRun

    started = timezone.now()
    actions: list[dict] = []
    report = _sweep(now or started, actions)
    report["bulk_retries_resumed"] = _resume_bulk_retries(now or started)
    # A backstop for the workers' own catch-up (they do it only after a task, when due).
    report["steps_counted"] = rollups_catch_up()
    run = SweepRun.objects.create(started_at=started, finished_at=timezone.now(), report=report,
                                  actions_count=len(actions))
    SweepAction.objects.bulk_create([SweepAction(sweep=run, **action) for action in actions])
    # Keep the log small: idle runs (one every STEWARD_SWEEP_INTERVAL_S) for a day, the rest a month.
    SweepRun.objects.filter(actions_count=0, started_at__lt=started - timedelta(days=1)).delete()
    SweepRun.objects.filter(started_at__lt=started - timedelta(days=30)).delete()
    login_failures_forget(started)
    sessions_clear_expired()
    return report


def _resume_bulk_retries(now) -> int:
    """Re-send the tick of running bulk retries whose chain broke (lost message, killed worker)."""
    from .models import BulkRetry, BulkRetryStatus
    from .services import _send_tick

    overdue = now - timedelta(seconds=max(settings.STEWARD_SWEEP_INTERVAL_S, 10))
    stalled = list(BulkRetry.objects.filter(status=BulkRetryStatus.RUNNING, next_tick_at__lt=overdue)
                   .values_list("id", flat=True)[:BATCH])
    for bulk_id in stalled:
        # The tick itself claims by compare-and-set, so a tick that was only late is harmless.
        _send_tick(bulk_id, 0)
    return len(stalled)


def _sweep(now, log_actions: list[dict]) -> dict:
    from reviews.models import ApprovalStatus

    report = {key: 0 for key in RECOVERIES}

    def record(touched: list, outcome: str) -> None:
        if outcome in ("requeued", "dead-lettered") and touched:
            task_id, step, owner, reason = touched[-1]
            log_actions.append({"task_id": task_id, "action": outcome, "reason": reason[:200], "step": step,
                                "lease_owner": owner[:200]})

    expired = Q(status=TaskStatus.RUNNING, lease_expires_at__lt=now)
    for task_id in Task.objects.filter(expired).values_list("id", flat=True)[:BATCH]:
        touched: list = []
        outcome = _recover(task_id, expired, "worker lease expired", now, touched)
        record(touched, outcome)
        report["expired_leases"] += outcome == "requeued"
        report["dead_lettered"] += outcome == "dead-lettered"

    cutoff = now - timedelta(seconds=settings.STEWARD_SWEEP_QUEUED_AFTER_S)
    lost = Q(status=TaskStatus.QUEUED) & (
        Q(not_before__isnull=True, enqueued_at__lt=cutoff) | Q(not_before__lt=cutoff)
        | Q(not_before__isnull=True, enqueued_at__isnull=True)
    )
    for task_id in _without_a_message(lost, report, now):
        touched = []
        outcome = _recover(task_id, lost, "no worker picked up its message", now, touched)
        record(touched, outcome)
        report["lost_messages"] += outcome == "requeued"
        report["dead_lettered"] += outcome == "dead-lettered"

    waiting = Task.objects.filter(status=TaskStatus.AWAITING_APPROVAL, updated_at__lt=cutoff).exclude(
        approvals__status=ApprovalStatus.PENDING
    ).values_list("id", flat=True)[:BATCH]
    for task_id in waiting:
        # Decided while the wake-up got lost: approve -> act, anything else -> rejected.
        from reviews.models import Approval

        latest = Approval.objects.filter(task_id=task_id).order_by("-id").values_list("status", flat=True).first()
        with transaction.atomic():
            if latest == ApprovalStatus.APPROVED:
                if Task.objects.filter(pk=task_id, status=TaskStatus.AWAITING_APPROVAL).update(
                    status=TaskStatus.QUEUED, current_step="act", enqueued_at=now, updated_at=now
                ):
                    send_wakeup(task_id, "act")
                    report["resumed_approvals"] += 1
                    log_actions.append({"task_id": task_id, "action": "resumed", "step": "act",
                                        "reason": "approved, but the wake-up was lost", "lease_owner": ""})
            elif latest in (ApprovalStatus.REJECTED, ApprovalStatus.EXPIRED):
                if Task.objects.filter(pk=task_id, status=TaskStatus.AWAITING_APPROVAL).update(
                    status=TaskStatus.REJECTED, current_step="", finished_at=now, updated_at=now
                ):
                    log_actions.append({"task_id": task_id, "action": "closed", "step": "",
                                        "reason": f"approval {latest}, task closed as rejected", "lease_owner": ""})
    if any(report[key] for key in RECOVERIES):
        log.warning("Sweeper recovered: %s", report)
    return report


def queued_by_celery_queue(now) -> dict[str, dict[str, int]]:
    """{Celery queue: {step: tasks queued at that step whose wake-up should wait in that queue}}."""
    by_queue: dict[str, dict[str, int]] = {}
    for step, count in (Task.objects.filter(owning_a_message(now)).order_by().values_list("current_step")
                        .annotate(n=Count("id"))):
        by_queue.setdefault(queue_for(step), {})[step] = count
    return by_queue


def _without_a_message(lost: Q, report: dict, now) -> list[int]:
    """The tasks queued too long (`lost`) that can have lost their message, oldest first, at most BATCH.

    Steps: none queued too long -> none, and the broker is not asked; ask the broker how many
    messages wait in those tasks' Celery queues (one declaration per queue), then count the tasks
    queued in the database for each queue (in this order: a message taken in between is then
    counted in both, or its task in neither); of a queue's Q queued tasks with D messages waiting,
    the D most recently enqueued have theirs (a queue is taken oldest first), so only the Q - D
    enqueued first can have lost theirs: of those, the ones queued too long. The others are left
    to wait their turn behind the backlog (report["left_waiting"]). A broker that cannot say: every
    task queued too long, as before the broker was asked.
    """
    steps = set(Task.objects.filter(lost).order_by().values_list("current_step", flat=True).distinct())
    if not steps:
        return []
    waiting = messages_waiting({queue_for(step) for step in steps})
    if waiting is None:
        return list(Task.objects.filter(lost).order_by(*OLDEST_FIRST).values_list("id", flat=True)[:BATCH])
    queued = queued_by_celery_queue(now)
    candidates: list[int] = []
    for queue, count in sorted(waiting.items()):
        steps_here = queued.get(queue, {})
        behind = sum(steps_here.values()) - count
        if behind <= 0:
            continue
        oldest = (Task.objects.filter(owning_a_message(now), current_step__in=list(steps_here))
                  .order_by(*OLDEST_FIRST).values_list("id", flat=True)[:min(behind, BATCH)])
        candidates += Task.objects.filter(lost, pk__in=list(oldest)).order_by(*OLDEST_FIRST).values_list("id", flat=True)
    report["left_waiting"] = max(Task.objects.filter(lost).count() - len(candidates), 0)
    return candidates[:BATCH]
