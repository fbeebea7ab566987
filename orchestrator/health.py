"""/healthz's checks: can this process reach its database and its broker?

A web process that cannot reach the broker still stores what is submitted (the sweeper re-sends
the wake-ups later), but no work moves: a load balancer and an operator must hear about it as
they hear about the database.
"""
from __future__ import annotations

import logging

from django.db import connection

log = logging.getLogger(__name__)

# How long the broker check waits for a connection and for an answer.
CHECK_TIMEOUT_S = 2.0


def database_ok() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:  # noqa: BLE001 - any failure means "down"; the log says which
        log.warning("Health check: the database is unreachable: %s", exc)
        return False
    return True


def broker_ok() -> bool:
    """Connect to the broker (CELERY_BROKER_URL) as a worker would; Redis also answers a PING."""
    from config.celery import app

    # Socket timeouts for this connection only: by default a hung Redis is waited on forever.
    options = {"socket_connect_timeout": CHECK_TIMEOUT_S, "socket_timeout": CHECK_TIMEOUT_S}
    try:
        with app.connection_for_write(connect_timeout=CHECK_TIMEOUT_S, transport_options=options) as broker:
            broker.ensure_connection(max_retries=0)
    except Exception as exc:  # noqa: BLE001 - as above
        log.warning("Health check: the broker is unreachable: %s", exc)
        return False
    return True


def health_check() -> dict[str, bool]:
    """{"database": reachable?, "broker": reachable?}"""
    return {"database": database_ok(), "broker": broker_ok()}
