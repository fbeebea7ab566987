"""What an operator reads on a dead letter when the model could not be reached: where Steward
tried, and what went wrong there, so that the fix (start it, correct the endpoint, open the
firewall) is clear without reading worker logs."""
from __future__ import annotations

import re
import socket

from orchestrator.services import task_submit


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_model_server_that_is_down_is_named_in_its_dead_letters(operator, client_for, run_pipeline, settings):
    settings.STEWARD_RETRY_BACKOFF_S = 0.005
    settings.STEWARD_RETRY_BACKOFF_MAX_S = 0.01
    port = closed_port()
    settings.STEWARD_SIMULATOR_URL = f"http://127.0.0.1:{port}/v1"  # the model server is down
    task = run_pipeline(task_submit(content="INVOICE\nInvoice Number: INV-1\nTotal: $5.00\n", filename="a.txt")[0])
    assert task.status == "dead_lettered"
    client = client_for(operator)
    reason = re.compile(rf"Could not reach the model: \[Errno \d+\] Connection refused "
                        rf"\(http://127.0.0.1:{port}/v1/chat/completions\)")
    for page in (client.get("/dead-letters/").text, client.get(f"/tasks/{task.pk}/").text):
        assert reason.search(page)
