"""The fresh-machine broker (config/broker.py): a consumer polling while another process publishes
gets every message, whole. With kombu's own filesystem transport this same run lost about one
message in thirty to half-written files (and a Celery worker stops on the first one)."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from kombu import Connection

TRANSPORT = "config.broker:Transport"
MESSAGES = 600
# Large enough that serializing it takes a while: kombu's transport did that with the file
# already visible under its final name.
PAD = 20_000

PUBLISHER = """
import sys
from kombu import Connection
folder, count, pad = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with Connection("filesystem://localhost//", transport="{transport}",
                transport_options={{"data_folder_in": folder, "data_folder_out": folder,
                                   "control_folder": folder + "/control"}}) as conn:
    queue = conn.SimpleQueue("race")
    for number in range(count):
        queue.put({{"number": number, "pad": ["x"] * pad}})
"""


def test_a_consumer_polling_during_publishing_gets_every_message_whole(tmp_path: Path):
    options = {"data_folder_in": str(tmp_path), "data_folder_out": str(tmp_path),
               "control_folder": str(tmp_path / "control")}
    publisher = subprocess.Popen(
        [sys.executable, "-c", PUBLISHER.format(transport=TRANSPORT), str(tmp_path), str(MESSAGES), str(PAD)],
        cwd=Path(__file__).resolve().parent.parent,
    )
    received, errors = [], []
    try:
        with Connection("filesystem://localhost//", transport=TRANSPORT, transport_options=options) as conn:
            queue = conn.SimpleQueue("race")
            deadline = time.monotonic() + 120
            while len(received) < MESSAGES and time.monotonic() < deadline:
                try:
                    message = queue.get(timeout=0.01)
                except queue.Empty:
                    if publisher.poll() is not None and not any(tmp_path.glob("*.msg")):
                        break  # published everything and nothing is left to read
                    continue
                except Exception as exc:  # noqa: BLE001 - a half-written message: what this test is about
                    errors.append(repr(exc))
                    continue
                received.append(message.payload)
                message.ack()
    finally:
        publisher.wait(timeout=60)
    assert publisher.returncode == 0
    assert errors == []
    assert sorted(payload["number"] for payload in received) == list(range(MESSAGES))
    assert all(len(payload["pad"]) == PAD for payload in received)
    assert not list(tmp_path.glob("*.part")), "every message was renamed into place"
