"""Bulk retry: pace, per-item compare-and-set, outcomes, the circuit breaker, restarts."""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from orchestrator.models import BulkRetry, DeadLetter, SweepAction, SweepRun, Task
from orchestrator.services import (
    NotAllowed, _bulk_send, bulk_retry_advance, bulk_retry_control, bulk_retry_create, dead_letter_discard,
)
from orchestrator.sweeper import sweep

pytestmark = pytest.mark.django_db


@pytest.fixture
def letters(make_task):
    def make(n: int) -> list[DeadLetter]:
        out = []
        for i in range(n):
            task = make_task(status="dead_lettered", current_step="verify")
            out.append(DeadLetter.objects.create(task=task, worker="verify", error_type="Timeout",
                                                 message=f"timed out {i}", fingerprint="a" * 32))
        return out

    return make


def start(user, letters, **kwargs) -> BulkRetry:
    return bulk_retry_create(user=user, dead_letter_ids=[dl.pk for dl in letters], description="test",
                             selection={"scope": "selected"}, **kwargs)


def items(bulk: BulkRetry) -> dict:
    return dict(bulk.items.values_list("dead_letter_id", "status"))


def test_the_pace_follows_the_rate_per_minute(operator, letters):
    bulk = start(operator, letters(10), rate_per_minute=120)  # two a second
    t0 = bulk.paced_since
    assert bulk_retry_advance(bulk_id=bulk.pk, now=t0) == "sent 2"
    assert bulk_retry_advance(bulk_id=bulk.pk, now=t0 + timedelta(seconds=0.2)) == "not-due"
    assert bulk_retry_advance(bulk_id=bulk.pk, now=t0 + timedelta(seconds=1)) == "sent 2"
    # A tick that comes late (a restarted worker) catches up by one tick's worth, never a burst.
    assert bulk_retry_advance(bulk_id=bulk.pk, now=t0 + timedelta(seconds=10)) == "sent 2"
    bulk.refresh_from_db()
    assert bulk.enqueued == 6 and Task.objects.filter(status="queued").count() == 6
    assert DeadLetter.objects.filter(status="retried", resolution_note=f"bulk retry {bulk.pk}").count() == 6


def test_a_pace_of_zero_is_refused_not_taken_for_the_default(operator, letters, settings):
    settings.STEWARD_BULK_RETRY_RATE = 60
    for rate in (0, -1, 100_001):
        with pytest.raises(NotAllowed, match="from 1 to 100,000"):
            start(operator, letters(1), rate_per_minute=rate)
    assert not BulkRetry.objects.exists()
    assert start(operator, letters(1)).rate_per_minute == 60  # none given: the default


def test_a_slow_rate_sends_one_item_per_longer_tick(operator, letters):
    bulk = start(operator, letters(3), rate_per_minute=6)  # one every 10 s
    t0 = bulk.paced_since
    assert bulk_retry_advance(bulk_id=bulk.pk, now=t0) == "sent 1"
    assert bulk_retry_advance(bulk_id=bulk.pk, now=t0 + timedelta(seconds=3)) == "not-due"
    assert bulk_retry_advance(bulk_id=bulk.pk, now=t0 + timedelta(seconds=10)) == "sent 1"


def test_no_item_is_retried_twice(operator, letters):
    dls = letters(2)
    bulk = start(operator, dls, rate_per_minute=6000)
    item = bulk.items.first()
    now = timezone.now()
    assert _bulk_send(bulk, [item.pk], now) == 1
    assert _bulk_send(bulk, [item.pk], now) == 0
    # A letter discarded by someone after the selection is skipped, with the reason, not retried.
    dead_letter_discard(dead_letter_id=dls[1].pk, user=operator, reason="spam")
    bulk_retry_advance(bulk_id=bulk.pk, now=now + timedelta(seconds=5))
    assert items(bulk) == {dls[0].pk: "enqueued", dls[1].pk: "skipped"}
    assert "is already discarded" in bulk.items.get(dead_letter=dls[1]).note
    assert Task.objects.get(pk=dls[1].task_id).status == "discarded"


def test_a_letter_in_a_running_bulk_retry_is_not_selected_again(operator, letters):
    dls = letters(2)
    start(operator, dls)
    with pytest.raises(NotAllowed, match="already in a running bulk retry"):
        start(operator, dls)


def test_outcomes_are_recorded_and_it_completes(operator, letters):
    dls = letters(3)
    bulk = start(operator, dls, rate_per_minute=6000)
    t0 = bulk.paced_since
    bulk_retry_advance(bulk_id=bulk.pk, now=t0)
    Task.objects.filter(pk=dls[0].task_id).update(status="completed")
    Task.objects.filter(pk=dls[1].task_id).update(status="awaiting_approval")
    bulk_retry_advance(bulk_id=bulk.pk, now=t0 + timedelta(seconds=1))
    bulk.refresh_from_db()
    assert (bulk.status, bulk.succeeded, bulk.failed_again, bulk.in_flight) == ("running", 2, 0, 1)
    Task.objects.filter(pk=dls[2].task_id).update(status="dead_lettered")
    assert bulk_retry_advance(bulk_id=bulk.pk, now=t0 + timedelta(seconds=2)) == "completed"
    bulk.refresh_from_db()
    assert (bulk.status, bulk.succeeded, bulk.failed_again) == ("completed", 2, 1)
    assert bulk_retry_advance(bulk_id=bulk.pk, now=t0 + timedelta(seconds=3)) == "not-running"


def test_the_circuit_breaker_pauses_says_why_and_resumes(operator, letters):
    dls = letters(12)
    bulk = start(operator, dls, rate_per_minute=360)  # six a second
    t0 = bulk.paced_since
    bulk_retry_advance(bulk_id=bulk.pk, now=t0)
    sent = [dl for dl in dls if items(bulk)[dl.pk] == "enqueued"]
    assert len(sent) == 6
    Task.objects.filter(pk__in=[dl.task_id for dl in sent[:4]]).update(status="dead_lettered")
    Task.objects.filter(pk__in=[dl.task_id for dl in sent[4:]]).update(status="completed")
    assert bulk_retry_advance(bulk_id=bulk.pk, now=t0 + timedelta(seconds=1)) == "paused"
    bulk.refresh_from_db()
    assert bulk.status == "paused"
    assert "circuit breaker" in bulk.paused_reason and "4 of the last 6 retried items failed again" in bulk.paused_reason
    assert list(bulk.items.filter(status="pending").values_list("id", flat=True))  # the rest waits
    assert bulk_retry_advance(bulk_id=bulk.pk, now=t0 + timedelta(seconds=2)) == "not-running"

    # (This test's clock ran ahead of the real one: those items settled before the resume.)
    bulk.items.exclude(finished_at=None).update(finished_at=timezone.now() - timedelta(seconds=1))
    bulk_retry_control(bulk_id=bulk.pk, user=operator, action="resume")
    bulk.refresh_from_db()
    assert bulk.status == "running" and bulk.paused_reason == ""
    # The old failures no longer count: the window starts again at the resume.
    assert bulk_retry_advance(bulk_id=bulk.pk, now=timezone.now() + timedelta(seconds=1)).startswith("sent")
    with pytest.raises(NotAllowed, match="is running: cannot resume it"):
        bulk_retry_control(bulk_id=bulk.pk, user=operator, action="resume")


def test_the_sweeper_restarts_a_broken_tick_chain_and_keeps_a_log(operator, letters, make_task, settings,
                                                                  own_broker_queue):
    bulk = start(operator, letters(2))
    BulkRetry.objects.filter(pk=bulk.pk).update(next_tick_at=timezone.now() - timedelta(minutes=5))
    lost = make_task(status="queued", enqueued_at=timezone.now() - timedelta(hours=1))
    report = sweep()
    assert report["bulk_retries_resumed"] == 1 and report["lost_messages"] == 1
    run = SweepRun.objects.get()
    assert run.actions_count == 1 and run.report["lost_messages"] == 1
    action = SweepAction.objects.get()
    assert (action.task_id, action.action, action.reason) == (lost.pk, "requeued", "no worker picked up its message")
    sweep()
    assert SweepRun.objects.count() == 2 and SweepAction.objects.count() == 1


def test_the_sweeper_log_forgets_idle_runs_after_a_day():
    old = timezone.now() - timedelta(days=2)
    SweepRun.objects.create(started_at=old, actions_count=0)
    busy = SweepRun.objects.create(started_at=old, actions_count=3)
    sweep()
    assert set(SweepRun.objects.values_list("pk", flat=True)) - {busy.pk} == {SweepRun.objects.first().pk}
