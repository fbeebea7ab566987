"""The sweeper (beat, every STEWARD_SWEEP_INTERVAL_S): finds tasks whose owner vanished.

- running with an expired lease: the worker died or hung -> re-enqueue;
- queued with no pickup for STEWARD_SWEEP_QUEUED_AFTER_S: the broker lost the message -> re-send;
- awaiting approval whose approval was decided: the wake-up was lost -> resume or close.
A task recovered more than STEWARD_MAX_RECOVERIES times is dead-lettered instead. Every change is
a compare-and-set, so two sweepers (or a sweeper racing a worker) cannot double-run a task.
"""
from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from .models import Task, TaskStatus
from .pipeline import send_wakeup

log = logging.getLogger(__name__)
BATCH = 500


def _recover(task_id: int, condition: Q, reason: str, now) -> str:
    from .services import dead_letter_create

    with transaction.atomic():
        task = Task.objects.filter(pk=task_id).filter(condition).first()
        if task is None:
            return "skipped"
        if task.recoveries >= settings.STEWARD_MAX_RECOVERIES:
            if not Task.objects.filter(pk=task_id).filter(condition).update(
                status=TaskStatus.DEAD_LETTERED, lease_owner="", lease_expires_at=None, updated_at=now
            ):
                return "skipped"
            dead_letter_create(
                task=task, step=None, error_type="Orphaned",
                message=f"Recovered {task.recoveries} times and still lost ({reason}) at step {task.current_step}",
                attempts=task.recoveries, evidence={"reason": reason, "step": task.current_step},
            )
            return "dead-lettered"
        if not Task.objects.filter(pk=task_id).filter(condition).update(
            status=TaskStatus.QUEUED, lease_owner="", lease_expires_at=None, not_before=None,
            enqueued_at=now, recoveries=F("recoveries") + 1, updated_at=now,
        ):
            return "skipped"
        send_wakeup(task_id, task.current_step)
    return "requeued"


def sweep(now=None) -> dict:
    from reviews.models import ApprovalStatus

    now = now or timezone.now()
    report = {"expired_leases": 0, "lost_messages": 0, "resumed_approvals": 0, "dead_lettered": 0}

    expired = Q(status=TaskStatus.RUNNING, lease_expires_at__lt=now)
    for task_id in Task.objects.filter(expired).values_list("id", flat=True)[:BATCH]:
        outcome = _recover(task_id, expired, "worker lease expired", now)
        report["expired_leases"] += outcome == "requeued"
        report["dead_lettered"] += outcome == "dead-lettered"

    cutoff = now - timedelta(seconds=settings.STEWARD_SWEEP_QUEUED_AFTER_S)
    lost = Q(status=TaskStatus.QUEUED) & (
        Q(not_before__isnull=True, enqueued_at__lt=cutoff) | Q(not_before__lt=cutoff)
        | Q(not_before__isnull=True, enqueued_at__isnull=True)
    )
    for task_id in Task.objects.filter(lost).values_list("id", flat=True)[:BATCH]:
        outcome = _recover(task_id, lost, "no worker picked up its message", now)
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
            elif latest in (ApprovalStatus.REJECTED, ApprovalStatus.EXPIRED):
                Task.objects.filter(pk=task_id, status=TaskStatus.AWAITING_APPROVAL).update(
                    status=TaskStatus.REJECTED, current_step="", finished_at=now, updated_at=now
                )
    if any(report.values()):
        log.warning("Sweeper recovered: %s", report)
    return report
