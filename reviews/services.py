"""Approvals: opened by the route step, decided once by a person (or the auto-approve policy),
moved when a correction changes the route, escalated past their SLA, expired past their queue's
expiry. Every write is a compare-and-set on the approval's status, and every decision leaves an
AuditEvent.
"""
from __future__ import annotations

import logging
from datetime import date, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from metrics.rollups import record_approval
from orchestrator.models import Task, TaskStatus
from orchestrator.pipeline import send_task_now, send_wakeup
from orchestrator.roles import ADMIN, REVIEWER, has_role
from orchestrator.workers.extract import SCHEMAS, FieldsInvalid, OtherFields, field_label, fields_validate
from orchestrator.workers.route import RULE_REASON, RULE_REASON_PREFIX, route_for_fields

from .audit import audit_record
from .models import Approval, ApprovalStatus, AuditEvent, EmailLink, Queue, RejectionReason

log = logging.getLogger(__name__)
BATCH = 500


class AlreadyDecided(Exception):
    def __init__(self, approval: Approval) -> None:
        who = approval.decided_by.get_username() if approval.decided_by else "the system"
        when = approval.decided_at.strftime("%Y-%m-%d %H:%M:%S UTC") if approval.decided_at else "earlier"
        if approval.status == ApprovalStatus.SUPERSEDED:
            successor = Approval.objects.select_related("queue").filter(replaces=approval).first()
            where = successor.queue.name if successor else "another queue"
            message = f"Already moved to {where} by {who} at {when}"
        elif approval.status == ApprovalStatus.EXPIRED:
            message = f"Already expired at {when}: nobody decided it in time, so the task was rejected"
        else:
            message = f"Already {approval.get_status_display().lower()} by {who} at {when}"
        super().__init__(message)
        self.approval = approval


class DecisionError(ValueError):
    """The decision itself is not acceptable (no reason, unknown field...). `inputs`: each problem
    by the name of the form input at fault ("reason", "field__amount"), for the pages to show it
    there."""

    def __init__(self, message: str, inputs: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.inputs = inputs or {}


def _deadlines(queue: Queue, now) -> dict:
    return {
        "due_at": now + timedelta(minutes=queue.sla_minutes),
        "expires_at": now + timedelta(minutes=queue.expiry_minutes) if queue.expiry_minutes else None,
    }


def _notify_after_commit(approval_id: int) -> None:
    """Tell the queue's reviewers from a Celery task once the approval is committed.

    If the broker is down, the review sweep finds the approval still un-notified and re-sends.
    """
    from .tasks import approval_notify

    _after_commit_task(approval_notify, approval_id)


def approval_open(task: Task, route: dict) -> Approval:
    """Create the approval for the routed action; auto-approved when no reason for review exists.

    A pending approval's reviewers are notified once the current transaction commits.
    """
    approval = approval_build(task, route, Queue.objects.get(name=route["queue"]))
    approval.save(force_insert=True)
    approval_opened(approval)
    return approval


def approval_build(task: Task, route: dict, queue: Queue) -> Approval:
    """The approval for the routed action, not saved yet (the route step's checkpoint saves it
    together with the step: orchestrator/checkpoints.py). Auto-approved when no reason for review exists."""
    now = timezone.now()
    auto = not route["requires_approval"]
    return Approval(
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
            # As the rule was when it routed the task (a route recorded before it was kept has none).
            "rule_condition": route.get("rule_condition"),
            "amount": route["amount"],
        },
        reasons=route["reasons"],
        status=ApprovalStatus.AUTO_APPROVED if auto else ApprovalStatus.PENDING,
        decided_at=now if auto else None,
        **({} if auto else _deadlines(queue, now)),
    )


def approval_opened(approval: Approval) -> None:
    """After a new approval is saved: tell a pending one's reviewers (after the commit)."""
    if approval.status == ApprovalStatus.PENDING:
        _notify_after_commit(approval.pk)


def user_can_decide(user, approval: Approval) -> bool:
    """Admins decide in every queue; reviewers in the queues they are listed in. Being listed is
    not enough without the reviewer role: a role taken away must also stop the signed email links
    already sent, which reach this check without the pages' and the API's role checks."""
    if has_role(user, ADMIN):
        return True
    return has_role(user, REVIEWER) and approval.queue.reviewers.filter(pk=user.pk).exists()


def approval_decide(
    *,
    approval_id: int,
    user,
    decision: str,
    reason: str = "",
    comment: str = "",
    fields: dict | None = None,
    via: str = "",
) -> Approval:
    """Decide a pending approval exactly once (DESIGN.md invariant 5).

    Steps: validate the decision; compare-and-set pending -> approved/rejected (a loser gets
    AlreadyDecided naming the winner); on approve, apply field corrections (originals kept) and
    queue the task's act step; on reject, the task ends as rejected. A correction that makes the
    rules route the task to another queue does not approve: the approval becomes `superseded`, a
    new pending one opens in the right queue (see approval_move), and the task keeps waiting.
    `via` ("inbox", "email link"...) is recorded in the audit trail.
    """
    if decision not in ("approve", "reject"):
        raise DecisionError("decision must be \"approve\" or \"reject\"")
    approval = Approval.objects.select_related("queue", "task").get(pk=approval_id)
    if not user_can_decide(user, approval):
        raise PermissionError("You are not a reviewer of this queue")
    rejection_reason = None
    if decision == "reject":
        if not reason:
            raise DecisionError("A rejection needs a reason", {"reason": "A rejection needs a reason"})
        rejection_reason = RejectionReason.objects.filter(active=True).filter(code=reason).first() or \
            RejectionReason.objects.filter(active=True, label__iexact=reason).first()
        if rejection_reason is None:
            codes = ", ".join(RejectionReason.objects.filter(active=True).values_list("code", flat=True))
            message = f"Unknown rejection reason \"{reason}\"; use one of: {codes}"
            raise DecisionError(message, {"reason": message})
    corrections = {}
    task = approval.task
    if decision == "approve" and fields:
        if not isinstance(fields, dict):
            raise DecisionError("fields must be an object of field name to corrected value")
        corrections = _corrections(task, fields)
    corrected = {**(task.fields or {}), **{k: v["to"] for k, v in corrections.items()}}
    action: dict = {}
    if corrections and approval.status == ApprovalStatus.PENDING:
        route = route_for_fields(task, corrected)
        if route["queue"] != approval.queue.name:
            return approval_move(approval=approval, user=user, corrections=corrections, fields=corrected, route=route,
                                 comment=comment, via=via)
        # The action runs on what the reviewer approved: the corrected fields, not the model's.
        action = _action_for(approval, corrected, route)

    now = timezone.now()
    with transaction.atomic():
        won = Approval.objects.filter(pk=approval.pk, status=ApprovalStatus.PENDING).update(
            status=ApprovalStatus.APPROVED if decision == "approve" else ApprovalStatus.REJECTED,
            decided_by=user,
            decided_at=now,
            rejection_reason=rejection_reason,
            comment=comment or "",
            corrections=corrections,
            **action,
        )
        if not won:
            raise AlreadyDecided(Approval.objects.select_related("decided_by").get(pk=approval.pk))
        if decision == "approve":
            updates = {"status": TaskStatus.QUEUED, "current_step": "act", "enqueued_at": now, "updated_at": now}
            if corrections:
                updates["fields"] = corrected
            Task.objects.filter(pk=task.pk, status=TaskStatus.AWAITING_APPROVAL).update(**updates)
            send_wakeup(task.pk, "act")
            summary = f"Approved: {approval.action_summary}"
            if corrections:
                summary = (f"Approved with corrections ({_changes_text(corrections)}): "
                           f"{action.get('action_summary', approval.action_summary)}")
            audit_record(action=AuditEvent.Action.APPROVED, obj=approval, actor=user, task_id=task.pk,
                         summary=summary, data=_decision_data(approval, via, comment, corrections=corrections))
        else:
            Task.objects.filter(pk=task.pk, status=TaskStatus.AWAITING_APPROVAL).update(
                status=TaskStatus.REJECTED, current_step="", finished_at=now, updated_at=now
            )
            audit_record(action=AuditEvent.Action.REJECTED, obj=approval, actor=user, task_id=task.pk,
                         summary=f"Rejected ({rejection_reason.label}): {approval.action_summary}",
                         data=_decision_data(approval, via, comment, reason=rejection_reason.code))
        record_approval(approval.pk)  # monitoring rollups, in the deciding transaction
    return _decided(approval.pk)


def _corrections(task: Task, fields: dict) -> dict:
    """{name: {"from", "to"}} for each value `fields` changes on the task, once the task's fields
    with the changes fit its type's schema (stored as the schema says: "1500" becomes 1500.0).
    DecisionError names every problem at once: unknown fields, values that do not fit, dates that
    are not dates."""
    doc_type = task.doc_type or "Other"
    original = task.fields or {}
    known = list(SCHEMAS.get(doc_type, OtherFields).model_fields)
    unknown = [name for name in fields if name not in known]
    if unknown:
        raise DecisionError(f"{doc_type} has no field {', '.join(map(repr, unknown))}; its fields are {', '.join(known)}")
    problems, inputs = [], {}
    for name, value in fields.items():
        if name.endswith("date") and value not in (None, "") and value != original.get(name) and not _is_date(value):
            problems.append(f"{field_label(name)} must be a date written as YYYY-MM-DD, not \"{value}\"")
            inputs[f"field__{name}"] = problems[-1]
    try:
        checked = fields_validate(doc_type, {**original, **fields})
    except FieldsInvalid as exc:
        problems.append(str(exc))
        for name, text in exc.by_field.items():
            inputs.setdefault(f"field__{name}", text)
    if problems:
        raise DecisionError("; ".join(problems), inputs)
    return {name: {"from": original.get(name), "to": checked[name]}
            for name in fields if checked[name] != original.get(name)}


def _is_date(value) -> bool:
    try:
        date.fromisoformat(value)
    except (TypeError, ValueError):
        return False
    return len(value) == 10  # YYYY-MM-DD only, not the week or ordinal forms fromisoformat takes


def _action_for(approval: Approval, fields: dict, route: dict) -> dict:
    """The approval's action described and carried with corrected `fields` (same queue)."""
    from orchestrator.workers.route import describe_action

    amount = route["amount"]
    return {
        "action_summary": describe_action(approval.task.doc_type or "Other", fields, amount, approval.queue.name),
        "action_data": {**approval.action_data, "fields": fields, "amount": str(amount) if amount is not None else None},
    }


def _decided(approval_id: int) -> Approval:
    """The approval as decided, with what callers show next to it (one query, not one per relation)."""
    return Approval.objects.select_related("queue", "task", "decided_by", "rejection_reason").get(pk=approval_id)


def _decision_data(approval: Approval, via: str, comment: str, **extra) -> dict:
    data = {"queue": approval.queue.name, **{k: v for k, v in extra.items() if v}}
    if via:
        data["via"] = via
    if comment:
        data["comment"] = comment
    return data


def _changes_text(corrections: dict) -> str:
    return ", ".join(f"{name} {_shown(change['from'])} → {_shown(change['to'])}" for name, change in corrections.items())


def _shown(value) -> str:
    """A corrected value in a sentence: 1240.0 reads 1,240 (the numbers in the schemas are amounts)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value:,.2f}".removesuffix(".00")
    return "–" if value is None else str(value)


def approval_move(*, approval: Approval, user, corrections: dict, fields: dict, route: dict, comment: str = "",
                  via: str = "") -> Approval:
    """A correction changed the route: hand the task to the right queue's reviewers. `fields` are
    the task's fields with the corrections applied.

    Steps: compare-and-set the approval pending -> superseded (with who, when and the
    corrections); apply the corrections to the task and re-point its route; open a new pending
    approval in the new queue (never auto-approved: a person corrected it) that replaces this
    one; record the move; notify the new queue after commit. The task stays awaiting_approval and
    the action does not run. Returns the superseded approval.
    """
    from orchestrator.workers.route import describe_action

    task = approval.task
    old_queue = approval.queue.name
    new_queue = Queue.objects.get(name=route["queue"])
    amount = route["amount"]
    who = user.get_username()
    moved_reason = (f"Moved from {old_queue} by {who}: with the correction ({_changes_text(corrections)}) "
                    f"the rules route it here")
    reasons = [moved_reason] + [r for r in approval.reasons if not r.startswith(RULE_REASON_PREFIX)]
    if route["requires_approval"]:
        reasons.append(RULE_REASON.format(rule=route["rule"], condition=route["rule_condition"]))
    now = timezone.now()
    with transaction.atomic():
        won = Approval.objects.filter(pk=approval.pk, status=ApprovalStatus.PENDING).update(
            status=ApprovalStatus.SUPERSEDED, decided_by=user, decided_at=now, comment=comment or "",
            corrections=corrections,
        )
        if not won:
            raise AlreadyDecided(Approval.objects.select_related("decided_by").get(pk=approval.pk))
        Task.objects.filter(pk=task.pk).update(
            fields=fields, routed_to=new_queue.name, updated_at=now,
            route_reason=f"{moved_reason} (rule \"{route['rule']}\": {route['rule_condition']})",
        )
        successor = Approval.objects.create(
            task=task, queue=new_queue, action_kind=new_queue.action_kind, replaces=approval,
            action_summary=describe_action(task.doc_type or "Other", fields, amount, new_queue.name),
            action_data={
                "task_id": task.pk, "doc_type": task.doc_type, "fields": fields, "queue": new_queue.name,
                "rule": route["rule"], "rule_condition": route["rule_condition"],
                "amount": str(amount) if amount is not None else None,
                "moved_from": old_queue,
            },
            reasons=reasons, status=ApprovalStatus.PENDING, **_deadlines(new_queue, now),
        )
        audit_record(
            action=AuditEvent.Action.MOVED, obj=approval, actor=user, task_id=task.pk,
            summary=f"Corrected ({_changes_text(corrections)}) and moved from {old_queue} to {new_queue.name}",
            data=_decision_data(approval, via, comment, corrections=corrections, moved_to=new_queue.name,
                                new_approval=successor.pk, rule=route["rule"]),
        )
        _notify_after_commit(successor.pk)
    return _decided(approval.pk)


def decision_message(approval: Approval) -> str:
    """What a person is told right after deciding `approval`."""
    if approval.status == ApprovalStatus.REJECTED:
        return f"Rejected task {approval.task_id}: {approval.rejection_reason}."
    if approval.status == ApprovalStatus.SUPERSEDED:
        successor = Approval.objects.select_related("queue").filter(replaces=approval).first()
        where = successor.queue.name if successor else "another queue"
        return (f"Moved task {approval.task_id} to {where}: with your correction the rules route it there, "
                f"so a reviewer of {where} decides it. Nothing was sent.")
    if approval.corrections:
        return f"Approved action for task {approval.task_id} with your corrections."
    return f"Approved action for task {approval.task_id}."


# --- SLA, escalation and expiry (the review sweep, run by beat) ---------------------------------


def approvals_escalate(*, now=None) -> int:
    """Flag pending approvals past their SLA (once each) and tell the queue's escalation address."""
    from .tasks import approval_escalation_notify

    now = now or timezone.now()
    overdue = list(
        Approval.objects.filter(status=ApprovalStatus.PENDING, escalated_at__isnull=True, due_at__lt=now)
        .select_related("queue").order_by("due_at")[:BATCH]
    )
    escalated = 0
    for approval in overdue:
        with transaction.atomic():
            if not Approval.objects.filter(pk=approval.pk, status=ApprovalStatus.PENDING,
                                           escalated_at__isnull=True).update(escalated_at=now):
                continue  # decided meanwhile, or another sweep got there first
            late = now - approval.due_at
            audit_record(
                action=AuditEvent.Action.ESCALATED, obj=approval, task_id=approval.task_id,
                summary=f"Escalated: pending in {approval.queue.name} past its SLA of "
                        f"{approval.queue.sla_minutes} minutes",
                data={"queue": approval.queue.name, "due_at": approval.due_at.isoformat(),
                      "late_s": int(late.total_seconds()), "escalation_email": approval.queue.escalation_email},
            )
            _after_commit_task(approval_escalation_notify, approval.pk, "escalated")
            escalated += 1
    return escalated


def approvals_expire(*, now=None) -> int:
    """Fail closed: a pending approval past its queue's expiry ends expired and its task rejected;
    the action never runs (act only runs approved approvals)."""
    from .tasks import approval_escalation_notify

    now = now or timezone.now()
    due = list(
        Approval.objects.filter(status=ApprovalStatus.PENDING, expires_at__lt=now)
        .select_related("queue").order_by("expires_at")[:BATCH]
    )
    expired = 0
    for approval in due:
        with transaction.atomic():
            if not Approval.objects.filter(pk=approval.pk, status=ApprovalStatus.PENDING).update(
                status=ApprovalStatus.EXPIRED, decided_at=now, decided_by=None,
            ):
                continue
            Task.objects.filter(pk=approval.task_id, status=TaskStatus.AWAITING_APPROVAL).update(
                status=TaskStatus.REJECTED, current_step="", finished_at=now, updated_at=now,
                route_reason=f"Approval expired undecided in {approval.queue.name}",
            )
            audit_record(
                action=AuditEvent.Action.EXPIRED, obj=approval, task_id=approval.task_id,
                summary=f"Expired undecided in {approval.queue.name} after {approval.queue.expiry_minutes} "
                        "minutes: the task was rejected and the action will not run",
                data={"queue": approval.queue.name, "expires_at": approval.expires_at.isoformat()},
            )
            record_approval(approval.pk)  # monitoring rollups, in the same transaction
            _after_commit_task(approval_escalation_notify, approval.pk, "expired")
            expired += 1
    return expired


def approvals_renotify(*, now=None) -> int:
    """Re-send notifications whose Celery message was lost (broker down when the approval opened)."""
    from .tasks import approval_notify

    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.STEWARD_REVIEW_NOTIFY_AFTER_S)
    stale = list(Approval.objects.filter(status=ApprovalStatus.PENDING, notified_at__isnull=True,
                                         created_at__lt=cutoff).values_list("id", flat=True)[:BATCH])
    for approval_id in stale:
        _send_task(approval_notify, approval_id)
    return len(stale)


def email_links_purge(*, now=None) -> int:
    """Forget email links a day past their expiry: they can no longer be used anyway."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.STEWARD_EMAIL_LINK_MAX_AGE_S) - timedelta(days=1)
    return EmailLink.objects.filter(created_at__lt=cutoff).delete()[0]


def approvals_sweep(*, now=None) -> dict:
    """Everything the review sweep does, in order; returns counts for logs and tests."""
    now = now or timezone.now()
    report = {
        "expired": approvals_expire(now=now),
        "escalated": approvals_escalate(now=now),
        "renotified": approvals_renotify(now=now),
        "links_purged": email_links_purge(now=now),
    }
    if any(report.values()):
        log.info("Review sweep: %s", report)
    return report


def _send_task(task, *args) -> None:
    """Enqueue a review Celery task (the review sweep re-sends what a broker outage lost).
    Kept as its own name: tests run these tasks inline by replacing it."""
    send_task_now(task, *args)


def _after_commit_task(task, *args) -> None:
    transaction.on_commit(lambda: _send_task(task, *args))


# --- Queue policy -----------------------------------------------------------------------------


def queue_deadlines_apply(*, queue: Queue) -> int:
    """After an admin changes a queue's SLA or expiry, pending approvals follow the new values
    (counted from when each approval opened). Returns how many were updated."""
    return Approval.objects.filter(queue=queue, status=ApprovalStatus.PENDING).update(
        due_at=F("created_at") + timedelta(minutes=queue.sla_minutes),
        expires_at=(F("created_at") + timedelta(minutes=queue.expiry_minutes)) if queue.expiry_minutes else None,
    )
