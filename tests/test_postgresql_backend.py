"""The PostgreSQL backend (config/postgresql): a pooled connection handed back a moment ago is
handed out again without the health check's round trip; one idle for longer is checked, and one
the server dropped meanwhile is replaced before any query of ours fails on it."""
from __future__ import annotations

import time

import pytest
from django.conf import settings
from django.db import connection
from psycopg_pool import ConnectionPool

from config.postgresql import base

# From the settings: asking the connection for its pool here, at collection, would open one on the
# database the settings name, before pytest-django switches every test to the test database.
pytestmark = pytest.mark.skipif(settings.DATABASES["default"]["ENGINE"] != "config.postgresql",
                                reason="needs PostgreSQL with the connection pool")


@pytest.fixture
def checks(monkeypatch) -> list:
    """Every health check the backend runs (a spy: the real check still runs)."""
    seen: list = []
    original = ConnectionPool.check_connection

    def spy(conn):
        seen.append(conn.info.backend_pid)
        return original(conn)

    monkeypatch.setattr(ConnectionPool, "check_connection", staticmethod(spy))
    return seen


def backend_pid() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def cycle_every_pooled_connection() -> None:
    """Take and hand back as many connections as the pool holds: it hands out the longest idle
    first, so afterwards every one of them was handed back a moment ago."""
    for _ in range(connection.pool.max_size + 1):
        backend_pid()
        connection.close()  # handed back to the pool, as a worker does before a model call


@pytest.mark.django_db(transaction=True)
def test_a_connection_taken_again_at_once_is_not_checked_one_idle_longer_is(checks, monkeypatch):
    monkeypatch.setattr(base, "RECENTLY_RETURNED_S", 0.5)
    cycle_every_pooled_connection()
    checks.clear()

    backend_pid()
    assert checks == []

    connection.close()
    time.sleep(0.6)
    pid = backend_pid()
    assert checks and checks[-1] == pid


@pytest.mark.django_db(transaction=True)
def test_connections_the_server_dropped_while_idle_are_replaced(checks, monkeypatch):
    monkeypatch.setattr(base, "RECENTLY_RETURNED_S", 0.1)
    cycle_every_pooled_connection()
    time.sleep(0.2)
    # Another session ends every idle one, as a server restart or an idle timeout would.
    with connection.pool.connection() as other:
        dropped = {row[0] for row in other.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")}
        other.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                      "WHERE datname = current_database() AND pid <> pg_backend_pid()")
    time.sleep(0.1)

    pid = backend_pid()  # would raise OperationalError on a dropped connection

    assert dropped and pid not in dropped
    assert checks  # found out by the check, not by a failing query of ours
