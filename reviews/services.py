"""Approvals: opened by the route step, decided once by a person (or the auto-approve policy)."""
from __future__ import annotations

from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from orchestrator.models import Task, TaskStatus
from metrics.rollups import record_approval
from orchestrator.pipeline import send_wakeup

from .models import Approval, ApprovalStatus, Queue, RejectionReason


class AlreadyDecided(Exception):
    def __init__(self, approval: Approval) -> None:
        who = approval.decided_by.get_username() if approval.decided_by else "the system"
        when = approval.decided_at.strftime("%Y-%m-%d %H:%M:%S UTC") if approval.decided_at else "earlier"
        super().__init__(f"Already {approval.get_status_display().lower()} by {who} at {when}")
        self.approval = approval


class DecisionError(ValueError):
    """The decision itself is not acceptable (no reason, unknown field...)."""


def approval_open(task: Task, route: dict) -> Approval:
    """Create the approval for the routed action; auto-approved when no reason for review exists.

    Called inside the route step's checkpoint transaction.
    """
    queue = Queue.objects.get(name=route["queue"])
    now = timezone.now()
    auto = not route["requires_approval"]
    return Approval.objects.create(
        task=task,
        queue=queue,
        action_kind=queue.action_kind,
        action_summary=route["action_summary"],
        action_data={
            "task_id": task.pk,
            "doc_type": task.doc_type,
            "fields": task.fields,
            "queue": queue.name,
            "rule": route["rule"],
            "amount": route["amount"],
        },
        reasons=route["reasons"],
        status=ApprovalStatus.AUTO_APPROVED if auto else ApprovalStatus.PENDING,
        decided_at=now if auto else None,
        due_at=None if auto else now + timedelta(minutes=queue.sla_minutes),
    )


def user_can_decide(user, approval: Approval) -> bool:
    if user.is_superuser or user.groups.filter(name="admin").exists():
        return True
    return approval.queue.reviewers.filter(pk=user.pk).exists()


def approval_decide(
    *,
    approval_id: int,
    user,
    decision: str,
    reason: str = "",
    comment: str = "",
    fields: dict | None = None,
) -> Approval:
    """Decide a pending approval exactly once (DESIGN.md invariant 5).

    Steps: validate the decision; compare-and-set pending -> approved/rejected (a loser gets
    AlreadyDecided naming the winner); on approve, apply field corrections (originals kept) and
    queue the task's act step; on reject, the task ends as rejected.
    """
    if decision not in ("approve", "reject"):
        raise DecisionError("decision must be \"approve\" or \"reject\"")
    approval = Approval.objects.select_related("queue", "task").get(pk=approval_id)
    if not user_can_decide(user, approval):
        raise PermissionError("You are not a reviewer of this queue")
    rejection_reason = None
    if decision == "reject":
        if not reason:
            raise DecisionError("A rejection needs a reason")
        rejection_reason = RejectionReason.objects.filter(active=True).filter(code=reason).first() or \
            RejectionReason.objects.filter(active=True, label__iexact=reason).first()
        if rejection_reason is None:
            codes = ", ".join(RejectionReason.objects.filter(active=True).values_list("code", flat=True))
            raise DecisionError(f"Unknown rejection reason \"{reason}\"; use one of: {codes}")
    corrections = {}
    task = approval.task
    if decision == "approve" and fields:
        if not isinstance(fields, dict):
            raise DecisionError("fields must be an object of field name to corrected value")
        for name, value in fields.items():
            original = (task.fields or {}).get(name)
            if original != value:
                corrections[name] = {"from": original, "to": value}
        if corrections:
            from orchestrator.workers.route import queue_for_fields

            corrected = {**(task.fields or {}), **{k: v["to"] for k, v in corrections.items()}}
            new_queue = queue_for_fields(task, corrected)
            if new_queue != approval.queue.name:
                # The rules would send the corrected document elsewhere: its reviewers decide.
                raise DecisionError(
                    f"With this correction the rules route the task to {new_queue}, not "
                    f"{approval.queue.name}: a reviewer of {new_queue} must decide it"
                )

    now = timezone.now()
    with transaction.atomic():
        won = Approval.objects.filter(pk=approval.pk, status=ApprovalStatus.PENDING).update(
            status=ApprovalStatus.APPROVED if decision == "approve" else ApprovalStatus.REJECTED,
            decided_by=user,
            decided_at=now,
            rejection_reason=rejection_reason,
            comment=comment or "",
            corrections=corrections,
        )
        if not won:
            raise AlreadyDecided(Approval.objects.select_related("decided_by").get(pk=approval.pk))
        if decision == "approve":
            updates = {"status": TaskStatus.QUEUED, "current_step": "act", "enqueued_at": now, "updated_at": now}
            if corrections:
                updates["fields"] = {**(task.fields or {}), **{k: v["to"] for k, v in corrections.items()}}
            Task.objects.filter(pk=task.pk, status=TaskStatus.AWAITING_APPROVAL).update(**updates)
            send_wakeup(task.pk, "act")
        else:
            Task.objects.filter(pk=task.pk, status=TaskStatus.AWAITING_APPROVAL).update(
                status=TaskStatus.REJECTED, current_step="", finished_at=now, updated_at=now
            )
        record_approval(approval.pk)  # monitoring rollups, in the deciding transaction
    approval.refresh_from_db()
    return approval
