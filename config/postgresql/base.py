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
"""
from __future__ import annotations

import time

from django.db.backends.postgresql import base
from psycopg import Error
from psycopg_pool import ConnectionPool

# A connection handed back less than this long ago is handed out again without a check.
RECENTLY_RETURNED_S = 0.5


class DatabaseWrapper(base.DatabaseWrapper):
    def get_new_connection(self, conn_params):
        if not self.pool:
            return super().get_new_connection(conn_params)
        # Every connection the pool holds may be broken (a restarted server): try each once more.
        for _ in range(self.pool.max_size + 1):
            connection = super().get_new_connection(conn_params)
            returned_at = getattr(connection, "steward_returned_at", None)
            if returned_at is not None and time.monotonic() - returned_at < RECENTLY_RETURNED_S:
                return connection
            try:
                ConnectionPool.check_connection(connection)
            except Error:
                self.pool.putconn(connection)  # broken: the pool closes it and makes another
                continue
            return connection
        return super().get_new_connection(conn_params)

    def _close(self):
        if self.pool and self.connection is not None:
            self.connection.steward_returned_at = time.monotonic()
        super()._close()
