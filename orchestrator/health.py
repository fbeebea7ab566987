"""/healthz's checks: can this process reach its database and its broker, within seconds?

A web process that cannot reach the broker still stores what is submitted (the sweeper re-sends
the wake-ups later), but no work moves: a load balancer and an operator must hear about it as
they hear about the database.

Each check runs in a thread of its own and is waited on for CHECK_TIMEOUT_S at most: a database
that is down makes a query wait for a pooled connection for DB_POOL_TIMEOUT_S (30 s), and one
that hangs (accepts connections, never answers) makes it wait for as long as TCP does. A check
still hanging from an earlier request answers "down" at once instead of starting another thread,
so a load balancer polling every few seconds cannot pile threads up.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from django.db import DEFAULT_DB_ALIAS, connections

log = logging.getLogger(__name__)

# How long /healthz waits for its checks (they run side by side).
CHECK_TIMEOUT_S = 2.0


def _database() -> None:
    try:
        with connections[DEFAULT_DB_ALIAS].cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    finally:
        # This thread's own connection: back to the pool, or closed; nothing else will use it.
        connections.close_all()


def _broker() -> None:
    """Connect to the broker (CELERY_BROKER_URL) as a worker would; Redis also answers a PING."""
    from config.celery import app

    # Socket timeouts for this connection only (a hung Redis is otherwise waited on forever), so
    # that a check which outlived its request ends soon after.
    options = {"socket_connect_timeout": CHECK_TIMEOUT_S, "socket_timeout": CHECK_TIMEOUT_S}
    with app.connection_for_write(connect_timeout=CHECK_TIMEOUT_S, transport_options=options) as broker:
        broker.ensure_connection(max_retries=0)


CHECKS: dict[str, Callable[[], None]] = {"database": _database, "broker": _broker}
# The thread of each check's latest run: one still alive is hanging.
_running: dict[str, threading.Thread] = {}


def _run(name: str, check: Callable[[], None], results: dict[str, bool]) -> None:
    try:
        check()
    except Exception as exc:  # noqa: BLE001 - any failure means "down"; the log says which
        log.warning("Health check: the %s is unreachable: %s", name, exc)
        results[name] = False
    else:
        results[name] = True


def health_check(timeout: float = CHECK_TIMEOUT_S) -> dict[str, bool]:
    """{"database": reachable?, "broker": reachable?}, within `timeout` seconds."""
    results: dict[str, bool] = {}
    started: list[threading.Thread] = []
    for name, check in CHECKS.items():
        previous = _running.get(name)
        if previous is not None and previous.is_alive():
            log.warning("Health check: the %s is still not answering an earlier check", name)
            results[name] = False
            continue
        thread = threading.Thread(target=_run, args=(name, check, results), name=f"healthz-{name}", daemon=True)
        _running[name] = thread
        thread.start()
        started.append(thread)
    deadline = time.monotonic() + timeout
    for thread in started:
        thread.join(max(deadline - time.monotonic(), 0))
    answers: dict[str, bool] = {}
    for name in CHECKS:
        answers[name] = results.get(name, False)
        if name not in results:
            log.warning("Health check: the %s did not answer within %s s", name, timeout)
    return answers
