"""The broker of the fresh-machine path (`make demo`, SQLite): kombu's filesystem transport, with
each message written whole before any consumer can see it.

kombu's own transport creates a message file under its final name, then serializes and writes
into it. A worker polling the folder in that moment moves the still-empty file away, deletes it
and fails to decode it: the message is lost and the JSON error stops the worker's consumer
("Unrecoverable error", seen in tests/integration/test_sigkill.py). Here the message is written
under a name no queue reads, then renamed to the name consumers look for: a rename within one
folder is atomic, so a consumer sees the whole message or nothing.

Selected in config/settings.py (CELERY_BROKER_TRANSPORT) whenever the broker URL is filesystem://.
"""
from __future__ import annotations

import os
import uuid
from time import monotonic

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps


class Channel(filesystem.Channel):
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
