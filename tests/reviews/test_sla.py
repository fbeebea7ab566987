"""SLA, escalation and expiry: the review sweep (beat) escalates what is past its SLA and expires
what is past its queue's expiry, failing closed: the task ends rejected and the action never runs."""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from orchestrator.models import Task
from reviews.models import Approval, AuditEvent, Queue
from reviews.services import AlreadyDecided, approval_decide, approvals_sweep
from tests.conftest import save_changes


def test_beat_runs_the_review_sweep():
    entry = settings.CELERY_BEAT_SCHEDULE["review-sweep"]
    assert entry["task"] == "reviews.tasks.review_sweep"
    assert entry["schedule"] == timedelta(seconds=settings.STEWARD_REVIEW_SWEEP_INTERVAL_S)


def test_past_sla_is_escalated_once_with_an_email(db, pending, reviewer_finance, client_for, mailoutbox,
                                                  django_capture_on_commit_callbacks):
    save_changes(Queue.objects.filter(name="finance_director"), escalation_email="cfo@example.com")
    late = pending(number="INV-LATE", age=timedelta(hours=5))  # SLA: 240 minutes
    on_time = pending(number="INV-OK", age=timedelta(hours=1))

    with django_capture_on_commit_callbacks(execute=True):
        report = approvals_sweep()

    assert report["escalated"] == 1
    late.refresh_from_db()
    on_time.refresh_from_db()
    assert late.escalated_at is not None and on_time.escalated_at is None
    assert late.status == "pending"
    [mail] = mailoutbox
    assert mail.to == ["cfo@example.com"]
    assert mail.subject.startswith("[Steward] Past its SLA in finance_director: Send payment approval for invoice INV-LATE")
    event = AuditEvent.objects.get(action="approval.escalated")
    assert event.actor is None and event.actor_name == "system" and event.task_id == late.task_id
    row = client_for(reviewer_finance).get("/reviews/").text
    assert 'title="Escalated' in row

    with django_capture_on_commit_callbacks(execute=True):
        assert approvals_sweep()["escalated"] == 0
    assert len(mailoutbox) == 1


def test_past_expiry_fails_closed(db, pending, reviewer_finance, run_pipeline, django_capture_on_commit_callbacks):
    save_changes(Queue.objects.filter(name="finance_director"), expiry_minutes=60)
    approval = pending(age=timedelta(hours=2), expires_at=timezone.now() - timedelta(hours=1))
    Task.objects.filter(pk=approval.task_id).update(current_step="act")

    with django_capture_on_commit_callbacks(execute=True):
        assert approvals_sweep()["expired"] == 1

    approval.refresh_from_db()
    assert approval.status == "expired" and approval.decided_by is None
    task = Task.objects.get(pk=approval.task_id)
    assert task.status == "rejected" and task.current_step == ""
    assert "expired undecided" in task.route_reason
    assert approval.action_status == "not_started"
    with pytest.raises(AlreadyDecided, match="Already expired at .*nobody decided it in time"):
        approval_decide(approval_id=approval.pk, user=reviewer_finance, decision="approve")
    # Nothing can make the action run now: the pipeline has nothing left to do for this task.
    assert run_pipeline(task).status == "rejected"
    assert Approval.objects.get(pk=approval.pk).action_status == "not_started"
    assert AuditEvent.objects.filter(action="approval.expired", task=task).exists()


def test_new_approvals_get_the_queue_deadlines(db, make_task):
    from reviews.services import approval_open

    save_changes(Queue.objects.filter(name="legal_team"), sla_minutes=30, expiry_minutes=120)
    before = timezone.now()
    approval = approval_open(make_task(doc_type="Contract"), {
        "queue": "legal_team", "rule": "Contracts", "amount": None, "requires_approval": True,
        "reasons": ["Rule \"Contracts\" requires approval"], "action_summary": "Forward the contract"})
    assert timedelta(minutes=29) < approval.due_at - before < timedelta(minutes=31)
    assert timedelta(minutes=119) < approval.expires_at - before < timedelta(minutes=121)


def test_an_admin_sla_change_moves_pending_deadlines(pending, admin_user, client_for):
    approval = pending(age=timedelta(hours=1))
    queue = Queue.objects.get(name="finance_director")
    client = client_for(admin_user)
    form = {"name": queue.name, "description": queue.description, "reviewers": [],
            "sla_minutes": "30", "escalation_email": "", "expiry_minutes": "600", "notify_reviewers": "on",
            "teams_webhook_url": "", "slack_webhook_url": "", "action_kind": "webhook", "webhook_url": "",
            "action_email": ""}

    response = client.post(f"/admin/reviews/queue/{queue.pk}/change/", form)

    assert response.status_code == 302, response.text[:2000]
    approval.refresh_from_db()
    assert approval.due_at == approval.created_at + timedelta(minutes=30)
    assert approval.expires_at == approval.created_at + timedelta(minutes=600)
    event = AuditEvent.objects.get(action="config.changed", object_type="reviews.queue")
    assert event.actor == admin_user
    assert event.data["changes"]["sla_minutes"] == [240, 30]
    assert event.data["pending_deadlines_updated"] == 1


def test_a_lost_notification_is_sent_again(db, pending, reviewer_finance, mailoutbox,
                                           django_capture_on_commit_callbacks):
    lost = pending(notified=False, age=timedelta(minutes=10))
    fresh = pending(notified=False)  # its message may still be on its way

    assert approvals_sweep()["renotified"] == 1

    assert [m.to for m in mailoutbox] == [["alice@example.com"]]
    assert Approval.objects.get(pk=lost.pk).notified_at is not None
    assert Approval.objects.get(pk=fresh.pk).notified_at is None
