"""The stuck-work page under a backlog: Olga sees how many wake-ups wait in each Celery queue, and
which queued tasks wait their turn behind them rather than having lost their message."""
from __future__ import annotations

import re
import socket
import time

import pytest
from django.utils import timezone

from config.celery import app
from orchestrator import backlog
from orchestrator.pipeline import send_task_now
from orchestrator.tasks import run_task
from tests.conftest import purge_broker_queues

pytestmark = pytest.mark.usefixtures("own_broker_queue")


def row(page: str, task) -> str:
    match = re.search(rf'<tr id="stuck-{task.pk}">.*?</tr>', page, re.S)
    assert match, f"no row for task {task.pk}"
    return match.group(0)


def test_tasks_behind_a_backlog_are_said_to_wait_their_turn(operator, client_for, make_task, settings):
    settings.STEWARD_STUCK_AFTER_S = 60
    queue = settings.CELERY_TASK_DEFAULT_QUEUE
    old = timezone.now() - timezone.timedelta(minutes=30)
    lost = make_task(filename="lost.txt", status="queued", enqueued_at=old - timezone.timedelta(minutes=5))
    behind = [make_task(filename=f"behind-{n}.txt", status="queued", enqueued_at=old) for n in range(3)]
    for task in behind:
        send_task_now(run_task, task.pk, queue=queue)

    page = client_for(operator).get("/stuck/").text

    backlog = page[page.index('id="broker-queues"'):]
    assert f"<code>{queue}</code>: 3 messages waiting for 4 queued tasks" in backlog
    assert "1 of them may have lost its message" in backlog
    for task in behind:
        assert f"waiting in <code>{queue}</code>" in row(page, task)
        assert "lost" not in row(page, task)
    assert "may be lost" in row(page, lost)


def test_a_queue_far_behind_says_nothing_is_lost(operator, client_for, make_task, settings):
    settings.STEWARD_STUCK_AFTER_S = 60
    queue = settings.CELERY_TASK_DEFAULT_QUEUE
    agents = f"{queue}-agents"
    settings.STEWARD_WORKER_QUEUES = {"verify": agents}
    try:
        old = timezone.now() - timezone.timedelta(hours=2)
        tasks = [make_task(status="queued", current_step="verify", enqueued_at=old) for _ in range(2)]
        for task in tasks:
            send_task_now(run_task, task.pk, queue=agents)
            send_task_now(run_task, task.pk, queue=agents)  # and a duplicate each

        page = client_for(operator).get("/stuck/").text
    finally:
        purge_broker_queues(agents)

    backlog = page[page.index('id="broker-queues"'):]
    assert f"<code>{agents}</code>: 4 messages waiting for 2 queued tasks" in backlog
    assert "the workers are behind: these tasks wait their turn" in backlog
    assert f"<code>{queue}</code>" not in backlog  # nothing queued there
    assert all(f"waiting in <code>{agents}</code>" in row(page, task) for task in tasks)


def test_when_the_broker_cannot_say_the_page_says_so(operator, client_for, make_task, settings, monkeypatch):
    settings.STEWARD_STUCK_AFTER_S = 60
    task = make_task(status="queued", enqueued_at=timezone.now() - timezone.timedelta(hours=1))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    with monkeypatch.context() as patch:
        patch.setitem(app.conf, "broker_read_url", f"redis://127.0.0.1:{closed}/0")
        patch.setitem(app.conf, "broker_transport", "config.broker:RedisTransport")
        page = client_for(operator).get("/stuck/").text

    assert "The broker did not say how many messages wait" in page
    assert "a broker message" in row(page, task)


def test_reloading_the_page_asks_the_broker_once_in_a_few_seconds(operator, client_for, make_task, settings,
                                                                  monkeypatch):
    """Each load asked the broker (a connection, a declaration per queue): a page left refreshing,
    or several operators on it, asked as often. The answer is kept for a few seconds per process."""
    settings.STEWARD_STUCK_AFTER_S = 60
    queue = settings.CELERY_TASK_DEFAULT_QUEUE
    task = make_task(status="queued", enqueued_at=timezone.now() - timezone.timedelta(minutes=30))
    send_task_now(run_task, task.pk, queue=queue)
    asked = []
    connect = app.connection_for_read
    monkeypatch.setattr(app, "connection_for_read", lambda *args, **kwargs: asked.append(1) or connect(*args, **kwargs))
    client = client_for(operator)

    pages = [client.get("/stuck/").text for _ in range(2)]

    assert len(asked) == 1
    assert all(f"<code>{queue}</code>: 1 message waiting for 1 queued task" in page for page in pages)
    monkeypatch.setattr(backlog, "PAGE_CACHE_S", 0)  # the few seconds are over
    client.get("/stuck/")
    assert len(asked) == 2


def test_a_broker_that_does_not_answer_holds_the_page_2_seconds_at_most(operator, client_for, make_task,
                                                                         settings, monkeypatch):
    """A broker that takes the connection and then says nothing (hung, or a firewall that drops
    the packets) held the page 5 s and more on every load."""
    settings.STEWARD_STUCK_AFTER_S = 60
    task = make_task(status="queued", enqueued_at=timezone.now() - timezone.timedelta(hours=1))
    client = client_for(operator)
    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(16)  # connections are taken (by the kernel), never answered
        with monkeypatch.context() as patch:
            patch.setitem(app.conf, "broker_read_url", f"redis://127.0.0.1:{hung.getsockname()[1]}/0")
            patch.setitem(app.conf, "broker_transport", "config.broker:RedisTransport")
            started = time.monotonic()
            page = client.get("/stuck/").text
            took = time.monotonic() - started
            again = client.get("/stuck/").text
            took_again = time.monotonic() - started - took

    assert took < 3, f"the page took {took:.1f} s"
    assert took_again < 0.5, f"the second load asked the hung broker again ({took_again:.1f} s)"
    for shown in (page, again):
        assert "The broker did not say how many messages wait" in shown
        assert "a broker message" in row(shown, task)
