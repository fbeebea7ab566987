"""Django's PostgreSQL backend, whose connection pool skips its health check for a connection
handed back a moment ago. Selected in config/settings.py whenever the pool is on.

With a pool, Django has the pool check every connection before handing it out: an empty query,
one round trip (about 100 us of CPU here, client and server together). A worker gives its
connection back before each model call (orchestrator/pipeline.py `release_connection`) and takes
one again as soon as the answer is in: four or five checkouts per task, each paying that round
trip for a connection that was working a few milliseconds earlier. HikariCP skips its check the
same way (`aliveBypassWindowMs`, 500 ms by default).

A connection that has been idle for longer, or that this backend never handed back (new, or
returned by code other than ours), is still checked: those are the ones a restarted server, a
dropped socket or an idle timeout breaks. One that fails is given back for the pool to discard,
and another is taken, as the pool does with its own check.

The pool connects in the background and only tells the thread waiting on it that it waited too
long ("couldn't get a connection after 30.00 sec"), whatever the reason: a database that does
not exist, a server that is down, a wrong password. So a pool that has not connected yet is
given FIRST_CONNECTION_S, not the whole timeout, and whenever the pool cannot hand out a
connection, one connection is made without it: its error (psycopg's OperationalError, "database
"x" does not exist") is the one raised. If it connects, the pool was only busy: the first time,
the wait goes on as usual; later, the pool's timeout is raised.
"""
from __future__ import annotations

import math
import os
import time
import weakref

from django.db.backends.postgresql import base
from psycopg import Error
from psycopg_pool import ConnectionPool, PoolTimeout

# A connection handed back less than this long ago is handed out again without a check.
RECENTLY_RETURNED_S = 0.5
# How long a pool that has never connected may take to, before a direct connection asks why.
FIRST_CONNECTION_S = 2.0
# The pools that have handed out a connection (one per process and database).
_CONNECTED: weakref.WeakSet[ConnectionPool] = weakref.WeakSet()


class DatabaseWrapper(base.DatabaseWrapper):
    def get_new_connection(self, conn_params):
        if not self.pool:
            return super().get_new_connection(conn_params)
        if self.pool not in _CONNECTED:
            self._first_connection(conn_params)
        # Every connection the pool holds may be broken (a restarted server): try each once more.
        for _ in range(self.pool.max_size + 1):
            connection = self._pooled_connection(conn_params)
            returned_at = getattr(connection, "steward_returned_at", None)
            if returned_at is not None and time.monotonic() - returned_at < RECENTLY_RETURNED_S:
                return connection
            try:
                ConnectionPool.check_connection(connection)
            except Error:
                self.pool.putconn(connection)  # broken: the pool closes it and makes another
                continue
            return connection
        return self._pooled_connection(conn_params)

    def _pooled_connection(self, conn_params):
        """Django's checkout from the pool; when it times out, the reason, if a direct connection
        finds one, else the timeout (the pool was busy)."""
        try:
            connection = super().get_new_connection(conn_params)
        except PoolTimeout as exc:
            timeout = exc
        else:
            _CONNECTED.add(self.pool)
            return connection
        # Outside the except block, so the reason is not shown as raised "during" the timeout.
        self._connect_directly(conn_params)
        raise timeout

    def _first_connection(self, conn_params) -> None:
        """Wait FIRST_CONNECTION_S for the pool's first connection; if it has none by then, a
        direct connection raises the reason (or, connecting, lets the usual wait go on)."""
        self.pool.open()
        try:
            connection = self.pool.getconn(timeout=min(FIRST_CONNECTION_S, self.pool.timeout))
        except PoolTimeout:
            connection = None
        if connection is None:
            self._connect_directly(conn_params)
            return
        connection.steward_returned_at = time.monotonic()  # made a moment ago: no check needed
        self.pool.putconn(connection)
        _CONNECTED.add(self.pool)

    def _connect_directly(self, conn_params) -> None:
        """One connection made without the pool, closed at once: raises psycopg's error for
        whatever keeps the pool from connecting."""
        params = dict(conn_params)
        if "connect_timeout" not in params and "PGCONNECT_TIMEOUT" not in os.environ:
            # A host that drops packets: libpq would wait for TCP to give up (minutes), not the
            # pool's timeout the caller was promised.
            params["connect_timeout"] = max(2, math.ceil(self.pool.timeout))
        self.Database.connect(**params).close()

    def _close(self):
        if self.pool and self.connection is not None:
            self.connection.steward_returned_at = time.monotonic()
        super()._close()
