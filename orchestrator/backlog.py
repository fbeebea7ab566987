"""How many wake-ups wait in the broker, per Celery queue: what tells a backlog from a lost message.

A queued task owns a message in its step's Celery queue (pipeline.queue_for). When the workers are
behind (thousands of documents at once, real models taking seconds a call) or all down, a task can
wait for hours with its message safe in the broker; only a message that is no longer there is
lost. Messages in a queue are taken oldest first, so of Q tasks queued in the database for one
Celery queue with D messages waiting in it, the D most recently enqueued have theirs: only the
Q - D oldest can have lost theirs. The sweeper re-sends only those, and the stuck-work page says
how many messages wait.

The broker answers a passive queue declaration with the queue's message count: Redis (the
lengths of the queue's lists), AMQP, and kombu's filesystem transport (the queue's message files).
One declaration per Celery queue, on one connection (Redis: a PING when the channel opens, then
an EXISTS and an LLEN pipeline per queue), with socket timeouts so that a hung broker
cannot hold a sweep or a page. A queue the broker does not know holds nothing: Redis deletes a
list when it empties, so an idle queue, or one whose messages were all lost, answers NOT_FOUND.

The sweeper asks afresh each time. The stuck-work page asks with a shorter timeout and keeps the
answer (or the broker's silence) a few seconds per process: reloads, and several operators on the
page, ask once, and a hung broker costs one load PAGE_TIMEOUT_S, not every load.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Iterable

log = logging.getLogger(__name__)

# Seconds to connect to the broker and for each answer: the sweeper's, and the stuck-work page's.
TIMEOUT_S = 5.0
PAGE_TIMEOUT_S = 2.0
# How long the stuck-work page's answer is kept, per process.
PAGE_CACHE_S = 5.0
# (when it was asked, the queues asked about, the answer) of the page's last question.
_page_answer: tuple[float, tuple[str, ...], dict[str, int] | None] | None = None
# Whether the last attempt failed: a broker that cannot say is logged once, not every sweep.
_failing = False


def messages_waiting_for_page(queues: Iterable[str]) -> dict[str, int] | None:
    """messages_waiting for the stuck-work page: the same answer as within the last PAGE_CACHE_S
    seconds for the same queues, else asked with PAGE_TIMEOUT_S."""
    global _page_answer
    names = tuple(sorted(set(queues)))
    last = _page_answer
    if last is not None and last[1] == names and time.monotonic() - last[0] < PAGE_CACHE_S:
        return last[2]
    answer = messages_waiting(names, timeout_s=PAGE_TIMEOUT_S)
    _page_answer = (time.monotonic(), names, answer)
    return answer


def forget() -> None:
    """Drop the page's kept answer (tests: each starts with a broker of its own)."""
    global _page_answer
    _page_answer = None


def messages_waiting(queues: Iterable[str], timeout_s: float = TIMEOUT_S) -> dict[str, int] | None:
    """{queue: messages waiting in it}, or None when the broker cannot say (unreachable, an error,
    a transport that does not count) within `timeout_s` to connect and `timeout_s` an answer: the
    caller then does without, and it is logged once."""
    global _failing
    from config.celery import app

    names = sorted(set(queues))
    if not names:
        return {}
    options = {"socket_connect_timeout": timeout_s, "socket_timeout": timeout_s}
    counts: dict[str, int] = {}
    try:
        with app.connection_for_read(connect_timeout=timeout_s, transport_options=options) as conn:
            conn.ensure_connection(max_retries=0)
            channel = conn.channel()
            try:
                for name in names:
                    try:
                        count = channel.queue_declare(queue=name, passive=True).message_count
                    except conn.channel_errors as exc:
                        if not _not_found(exc):
                            raise
                        count = 0
                        # AMQP closes a channel after an error; kombu's virtual transports do not.
                        if not getattr(channel, "is_open", True):
                            channel = conn.channel()
                    if not isinstance(count, int):
                        raise TypeError(f"the broker gave {count!r} as the message count of {name!r}")
                    counts[name] = count
            finally:
                _close(channel)
    except Exception as exc:  # noqa: BLE001 - any failure means "cannot say"; the log says why
        if not _failing:
            log.warning("Cannot count the messages waiting in the broker (%s: %s); the sweeper re-sends "
                        "every task queued longer than STEWARD_SWEEP_QUEUED_AFTER_S until it can again",
                        type(exc).__name__, exc)
        _failing = True
        return None
    if _failing:
        log.warning("The broker counts its waiting messages again")
        _failing = False
    return counts


def _not_found(exc: Exception) -> bool:
    code = getattr(exc, "code", None) or getattr(exc, "reply_code", None)
    return str(code) == "404" or "NOT_FOUND" in str(exc)


def _close(channel) -> None:
    try:
        channel.close()
    except Exception:  # noqa: BLE001 - closing a channel of a connection about to close
        pass
