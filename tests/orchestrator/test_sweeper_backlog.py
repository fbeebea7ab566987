"""The sweeper under a backlog: a queued task whose wake-up still waits in the broker is not lost.

With real models hours of backlog are normal (thousands of documents at once, a few model calls of
seconds each), and so is a fleet of workers down for an hour. Tasks then stay queued far beyond
STEWARD_SWEEP_QUEUED_AFTER_S with their messages safe in the broker. Re-sending them only grows the
backlog with duplicates, and after STEWARD_MAX_RECOVERIES rounds dead-letters healthy work as
"Orphaned". The sweeper asks the broker how many messages wait in each Celery queue and re-sends
only the oldest queued tasks beyond them.

Real broker: the filesystem broker of the default test settings, or Redis with
CELERY_BROKER_URL=redis://... (the Redis-only case is marked so).
"""
from __future__ import annotations

import logging
import socket
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from config.celery import app
from orchestrator.models import DeadLetter, SweepAction, Task
from orchestrator.pipeline import queue_for, send_task_now
from orchestrator.sweeper import sweep
from orchestrator.tasks import run_task
from tests.conftest import broker_waiting as waiting, purge_broker_queues

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("own_broker_queue")]


def ago(seconds: float):
    return timezone.now() - timedelta(seconds=seconds)


def queued(make_task, age_s: float, *, step: str = "classify", wake_up: bool = True) -> Task:
    """A task queued `age_s` ago at `step`; with `wake_up`, its message waits in the broker."""
    task = make_task(status="queued", current_step=step, enqueued_at=ago(age_s))
    if wake_up:
        send_task_now(run_task, task.pk, queue=queue_for(step))
    return task


def sweeps(times: int, capture, *, apart_s: float = 0) -> list[dict]:
    """Run the sweeper `times` times, `apart_s` seconds apart, its re-sends reaching the broker as
    they do in a worker."""
    reports = []
    for n in range(times):
        with capture(execute=True):
            reports.append(sweep(now=timezone.now() + timedelta(seconds=n * apart_s)))
    return reports


def test_tasks_waiting_behind_the_backlog_are_left_alone_however_long(make_task, settings,
                                                                       django_capture_on_commit_callbacks):
    # Every worker was down for an hour (or busy with the thousands submitted before these).
    settings.STEWARD_MAX_RECOVERIES = 5
    tasks = [queued(make_task, 3600 - n) for n in range(5)]
    queue = settings.CELERY_TASK_DEFAULT_QUEUE
    assert waiting(queue) == 5

    # A sweep every STEWARD_SWEEP_QUEUED_AFTER_S: each would find them queued too long again.
    reports = sweeps(settings.STEWARD_MAX_RECOVERIES + 1, django_capture_on_commit_callbacks,
                     apart_s=settings.STEWARD_SWEEP_QUEUED_AFTER_S + 1)

    assert [r["lost_messages"] for r in reports] == [0] * 6
    assert [r["dead_lettered"] for r in reports] == [0] * 6
    assert {(t.status, t.recoveries) for t in Task.objects.filter(pk__in=[t.pk for t in tasks])} == {("queued", 0)}
    assert not DeadLetter.objects.exists() and not SweepAction.objects.exists()
    assert waiting(queue) == 5  # no duplicate wake-ups added to the backlog


def test_only_the_oldest_tasks_beyond_the_waiting_messages_are_re_sent(make_task, settings,
                                                                       django_capture_on_commit_callbacks):
    settings.STEWARD_SWEEP_QUEUED_AFTER_S = 600
    lost = [queued(make_task, 3600 - n, wake_up=False) for n in range(3)]  # the broker lost these
    waiting_long = [queued(make_task, 3000 - n) for n in range(2)]
    fresh = queued(make_task, 5)
    queue = settings.CELERY_TASK_DEFAULT_QUEUE
    assert waiting(queue) == 3

    report, again = sweeps(2, django_capture_on_commit_callbacks)

    # 6 queued, 3 messages waiting: only the 3 oldest can have lost theirs.
    assert report["lost_messages"] == 3 and again["lost_messages"] == 0
    recoveries = dict(Task.objects.values_list("pk", "recoveries"))
    assert [recoveries[t.pk] for t in lost] == [1, 1, 1]
    assert [recoveries[t.pk] for t in waiting_long + [fresh]] == [0, 0, 0]
    assert set(SweepAction.objects.values_list("task_id", flat=True)) == {t.pk for t in lost}
    assert waiting(queue) == 6  # one wake-up for each queued task


def test_tasks_in_backoff_do_not_make_room_for_re_sends(make_task, settings, django_capture_on_commit_callbacks):
    # A task waiting out a retry's backoff is queued, but a worker holds its delayed message (Celery
    # keeps a countdown message in the worker that took it): it is not among the messages waiting.
    settings.STEWARD_SWEEP_QUEUED_AFTER_S = 600
    waiting_long = [queued(make_task, 3600 - n) for n in range(3)]
    in_backoff = [make_task(status="queued", current_step="extract", enqueued_at=ago(1),
                            not_before=timezone.now() + timedelta(seconds=60)) for _ in range(2)]
    assert waiting(settings.CELERY_TASK_DEFAULT_QUEUE) == 3

    (report,) = sweeps(1, django_capture_on_commit_callbacks)

    assert report["lost_messages"] == 0 and report["left_waiting"] == 3
    assert set(Task.objects.values_list("recoveries", flat=True)) == {0}
    assert len(waiting_long + in_backoff) == Task.objects.filter(status="queued").count()


def test_each_celery_queue_is_counted_on_its_own(make_task, settings, django_capture_on_commit_callbacks):
    agents = f"{settings.CELERY_TASK_DEFAULT_QUEUE}-agents"
    settings.STEWARD_WORKER_QUEUES = {"verify": agents}
    try:
        # The agents' workers are far behind; the default queue's messages were all lost.
        behind = [queued(make_task, 3600, step="verify") for _ in range(3)]
        lost = [queued(make_task, 3600, step="classify", wake_up=False) for _ in range(2)]

        (report,) = sweeps(1, django_capture_on_commit_callbacks)

        assert report["lost_messages"] == 2
        recoveries = dict(Task.objects.values_list("pk", "recoveries"))
        assert [recoveries[t.pk] for t in lost] == [1, 1]
        assert [recoveries[t.pk] for t in behind] == [0, 0, 0]
        assert waiting(agents) == 3 and waiting(settings.CELERY_TASK_DEFAULT_QUEUE) == 2
    finally:
        purge_broker_queues(agents)


def test_a_broker_that_lost_everything_gets_everything_re_sent(make_task, settings,
                                                               django_capture_on_commit_callbacks):
    settings.STEWARD_MAX_RECOVERIES = 2
    tasks = [queued(make_task, 3600, wake_up=False) for _ in range(4)]
    queue = settings.CELERY_TASK_DEFAULT_QUEUE

    (first,) = sweeps(1, django_capture_on_commit_callbacks)
    assert first["lost_messages"] == 4 and waiting(queue) == 4

    # Lost again, twice more (no worker ever takes them): the bounded tries still end in a dead letter.
    for expected in ({"lost_messages": 4}, {"dead_lettered": 4}):
        purge_broker_queues(queue)
        Task.objects.update(enqueued_at=ago(3600))
        (report,) = sweeps(1, django_capture_on_commit_callbacks)
        assert {key: report[key] for key in expected} == expected
    assert set(DeadLetter.objects.values_list("task_id", "error_type")) == {(t.pk, "Orphaned") for t in tasks}


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_when_the_broker_cannot_say_lost_looking_tasks_are_re_sent_as_before(make_task, monkeypatch, caplog):
    tasks = [queued(make_task, 3600, wake_up=False) for _ in range(2)]
    # The broker the sweeper asks is down (nothing listens there).
    caplog.set_level(logging.WARNING, logger="orchestrator.backlog")
    with monkeypatch.context() as patch:
        patch.setitem(app.conf, "broker_read_url", f"redis://127.0.0.1:{closed_port()}/0")
        patch.setitem(app.conf, "broker_transport", "config.broker:RedisTransport")
        first, second = sweep(), sweep(now=timezone.now() + timedelta(hours=1))

    assert first["lost_messages"] == 2 and second["lost_messages"] == 2
    assert set(Task.objects.filter(pk__in=[t.pk for t in tasks]).values_list("recoveries", flat=True)) == {2}
    said = [r.getMessage() for r in caplog.records if r.name == "orchestrator.backlog"]
    assert len(said) == 1 and "Cannot count the messages waiting in the broker" in said[0]


@pytest.mark.skipif(not settings.CELERY_BROKER_URL.startswith("redis"), reason="needs CELERY_BROKER_URL=redis://")
def test_redis_an_emptied_queue_holds_nothing_and_priorities_count(make_task, settings,
                                                                   django_capture_on_commit_callbacks):
    """Redis deletes a list when it empties (and a flush deletes it too): the queue is then unknown
    to it, which means nothing waits. Messages sent with a priority wait in lists of their own."""
    queue = settings.CELERY_TASK_DEFAULT_QUEUE
    tasks = [queued(make_task, 3600) for _ in range(3)]
    run_task.apply_async(args=[tasks[0].pk], queue=queue, priority=9)  # a second message for one of them
    assert waiting(queue) == 4

    (report,) = sweeps(1, django_capture_on_commit_callbacks)
    assert report["lost_messages"] == 0

    purge_broker_queues(queue)  # the broker loses the queue: the key is gone
    (report,) = sweeps(1, django_capture_on_commit_callbacks)
    assert report["lost_messages"] == 3 and waiting(queue) == 3
