"""With the connection pool on (PostgreSQL), a database that cannot be reached says why at once,
as psycopg words it, instead of the pool's "couldn't get a connection after 30.00 sec"."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings

ROOT = Path(__file__).resolve().parent.parent
# The server the suite uses when it runs on PostgreSQL, else the local one.
_db = settings.DATABASES["default"]
ON_POSTGRESQL = "postgresql" in _db["ENGINE"]
HOST = (_db.get("HOST") or "127.0.0.1") if ON_POSTGRESQL else "127.0.0.1"
PORT = int((_db.get("PORT") or 5432) if ON_POSTGRESQL else 5432)
USER = (_db.get("USER") or "postgres") if ON_POSTGRESQL else "postgres"
POOL_TIMEOUT_S = 30  # DB_POOL_TIMEOUT_S's default: what a person waited before


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def migrate(database_url: str, tmp_path: Path) -> tuple[subprocess.CompletedProcess, float]:
    """`manage.py migrate`, the first command a person runs, against `database_url` with the pool on."""
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "DB_POOL_MAX_SIZE", "DB_POOL_TIMEOUT_S"}}
    env.update(DATABASE_URL=database_url, DB_POOL_TIMEOUT_S=str(POOL_TIMEOUT_S), SECRET_KEY="x",
               STEWARD_VAR_DIR=str(tmp_path))
    started = time.monotonic()
    result = subprocess.run([sys.executable, "manage.py", "migrate"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=POOL_TIMEOUT_S + 30)
    return result, time.monotonic() - started


def raised(result: subprocess.CompletedProcess) -> str:
    """The error the command ended on, as the person reads it at the bottom of the output."""
    return result.stderr[result.stderr.rindex("\ndjango.db.utils.OperationalError:"):]


def test_a_database_that_does_not_exist_is_named_at_once(tmp_path):
    if not _listening(HOST, PORT):
        pytest.skip(f"needs a PostgreSQL server on {HOST}:{PORT}")
    result, elapsed = migrate(f"postgres://{USER}@{HOST}:{PORT}/steward_no_such_database", tmp_path)

    assert result.returncode != 0
    assert 'database "steward_no_such_database" does not exist' in raised(result), result.stderr
    assert "couldn't get a connection" not in result.stderr
    assert elapsed < POOL_TIMEOUT_S / 2


def test_a_server_that_is_down_is_named_at_once(tmp_path):
    port = _free_port()  # nothing listens there: a server that is down
    result, elapsed = migrate(f"postgres://postgres@127.0.0.1:{port}/steward", tmp_path)

    assert result.returncode != 0
    assert f'port {port} failed: Connection refused' in raised(result), result.stderr
    assert "couldn't get a connection" not in result.stderr
    assert elapsed < POOL_TIMEOUT_S / 2


def test_a_database_gone_after_the_pool_connected_is_named_when_the_pool_gives_up(django_db_blocker):
    if not _listening(HOST, PORT):
        pytest.skip(f"needs a PostgreSQL server on {HOST}:{PORT}")
    import psycopg
    from django.db import OperationalError

    from config.postgresql.base import DatabaseWrapper

    name = f"steward_gone_{os.getpid()}"
    admin = psycopg.connect(host=HOST, port=PORT, user=USER, dbname="postgres", autocommit=True)
    admin.execute(f'CREATE DATABASE "{name}"')
    wrapper = DatabaseWrapper({**settings.DATABASES["default"], "ENGINE": "config.postgresql", "NAME": name,
                               "HOST": HOST, "PORT": PORT, "USER": USER, "CONN_MAX_AGE": 0,
                               "CONN_HEALTH_CHECKS": False, "OPTIONS": {"pool": {"min_size": 1, "max_size": 2,
                                                                                 "timeout": 1}}},
                              alias=name)
    try:
        with django_db_blocker.unblock():  # this wrapper's own database, not the test database
            wrapper.ensure_connection()
            wrapper.close()  # back to the pool, which stays connected
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
            time.sleep(0.6)  # past RECENTLY_RETURNED_S: the pooled connection is checked, found dropped

            with pytest.raises(OperationalError, match=f'database "{name}" does not exist'):
                wrapper.ensure_connection()
    finally:
        wrapper.close_pool()
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
