"""The sweeper finds tasks whose owner vanished and gives them a new one."""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from orchestrator.models import Task
from orchestrator.sweeper import sweep

# A Celery queue of each test's own: the sweeper counts the wake-ups waiting in it.
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("own_broker_queue")]


def ago(seconds: float):
    return timezone.now() - timedelta(seconds=seconds)


def test_running_task_with_an_expired_lease_is_requeued(make_task):
    task = make_task(status="running", lease_owner="dead-worker", lease_expires_at=ago(5))

    report = sweep()

    task.refresh_from_db()
    assert report["expired_leases"] == 1
    assert (task.status, task.lease_owner, task.recoveries) == ("queued", "", 1)


def test_running_task_with_a_live_lease_is_left_alone(make_task):
    task = make_task(status="running", lease_owner="busy-worker", lease_expires_at=timezone.now() + timedelta(60))

    sweep()

    task.refresh_from_db()
    assert (task.status, task.lease_owner) == ("running", "busy-worker")


def test_queued_task_whose_message_was_lost_is_re_sent(make_task, settings):
    settings.STEWARD_SWEEP_QUEUED_AFTER_S = 60
    lost = make_task(status="queued", enqueued_at=ago(120))
    fresh = make_task(status="queued", enqueued_at=ago(5))
    waiting_for_retry = make_task(status="queued", enqueued_at=ago(120), not_before=timezone.now() + timedelta(seconds=30))

    report = sweep()

    assert report["lost_messages"] == 1
    assert Task.objects.get(pk=lost.pk).recoveries == 1
    assert Task.objects.get(pk=fresh.pk).recoveries == 0
    assert Task.objects.get(pk=waiting_for_retry.pk).recoveries == 0


def test_a_task_lost_too_often_is_dead_lettered_instead(make_task, settings):
    settings.STEWARD_MAX_RECOVERIES = 3
    task = make_task(status="running", lease_owner="w", lease_expires_at=ago(5), recoveries=3, current_step="verify")

    report = sweep()

    task.refresh_from_db()
    assert report["dead_lettered"] == 1
    assert task.status == "dead_lettered"
    dead_letter = task.dead_letters.get()
    assert dead_letter.error_type == "Orphaned"
    assert "verify" in dead_letter.message


def test_decided_approval_whose_wake_up_was_lost_resumes(make_task, make_approval, settings, admin_user):
    settings.STEWARD_SWEEP_QUEUED_AFTER_S = 60
    task = make_task(status="awaiting_approval", current_step="act")
    make_approval(task, "standard_queue", status="approved", decided_by=admin_user, decided_at=ago(300))
    Task.objects.filter(pk=task.pk).update(updated_at=ago(300))

    report = sweep()

    task.refresh_from_db()
    assert report["resumed_approvals"] == 1
    assert (task.status, task.current_step) == ("queued", "act")


def test_pending_approval_is_an_owner(make_task, make_approval, settings):
    settings.STEWARD_SWEEP_QUEUED_AFTER_S = 60
    task = make_task(status="awaiting_approval", current_step="act")
    make_approval(task, "standard_queue")
    Task.objects.filter(pk=task.pk).update(updated_at=ago(3600))

    sweep()

    task.refresh_from_db()
    assert task.status == "awaiting_approval"
