"""Two small changes to kombu's transports, each selected in config/settings.py
(CELERY_BROKER_TRANSPORT) from the broker URL's scheme.

filesystem:// (the fresh-machine path: `make demo`, SQLite): each message is written whole before
any consumer can see it. kombu's own transport creates a message file under its final name, then
serializes and writes into it. A worker polling the folder in that moment moves the still-empty
file away, deletes it and fails to decode it: the message is lost and the JSON error stops the
worker's consumer ("Unrecoverable error", seen in tests/integration/test_sigkill.py). Here the
message is written under a name no queue reads, then renamed to the name consumers look for: a
rename within one folder is atomic, so a consumer sees the whole message or nothing.

redis:// and rediss://: one `redis.Redis` client per channel for the commands that are not the
consumer's own. kombu builds a new client object for every publish and every acknowledgement
(`Channel.conn_or_acquire`), and with late acks each delivered message also records itself as
unacknowledged: a worker builds three per task and a submitter one, at 80 us of CPU each here
(redis-py 8 sets up its response callbacks in the constructor). A client holds no connection of
its own: each command takes one from the channel's pool and gives it back, which is why redis-py
documents a client as safe to share between threads. The commands, their connections and what
happens when Redis goes away are kombu's, unchanged.
"""
from __future__ import annotations

import os
import uuid
from contextlib import contextmanager
from time import monotonic

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.transport import redis
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps


class Channel(filesystem.Channel):
    """kombu's filesystem channel, with `_put` writing each message whole first."""

    def _put(self, queue, payload, **kwargs):
        """Put `payload` onto `queue`: written to `<name>.part`, then renamed to `<name>`."""
        name = f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        partial = final + ".part"  # ends in ".part": never taken for a message of any queue
        try:
            with open(partial, "wb") as f:
                f.write(str_to_bytes(dumps(payload)))
            os.replace(partial, final)
        except OSError as exc:
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc


class Transport(filesystem.Transport):
    Channel = Channel


class RedisChannel(redis.Channel):
    _shared_client = None

    @contextmanager
    def conn_or_acquire(self, client=None):
        if client:
            yield client
            return
        shared = self._shared_client
        # The pool is dropped and rebuilt after a fork or a reconnect: a client of an old pool
        # would keep using connections that are gone.
        if shared is None or shared.connection_pool is not self.pool:
            shared = self._shared_client = self._create_client()
        yield shared


class RedisTransport(redis.Transport):
    Channel = RedisChannel
