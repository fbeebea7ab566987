"""`manage.py demo`: what its child processes are told (no process is started here)."""
from __future__ import annotations

import socket

import pytest
from django.conf import settings as django_settings
from django.core.management import call_command
from django.core.management.base import CommandError

from orchestrator.management.commands import demo
from reviews.links import link_url

pytestmark = pytest.mark.django_db


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def child_env(monkeypatch):
    """Run the demo up to starting its children; returns the environment they would get."""
    seen: dict = {}

    def start_children(self, env):
        seen.update(env)
        seen["commands"] = {child.name: child.args for child in self.children}
        raise KeyboardInterrupt  # as if Ctrl-C came at once: the demo stops cleanly

    monkeypatch.setattr(demo.Command, "start_children", start_children)
    monkeypatch.delenv("STEWARD_BASE_URL", raising=False)
    for name in ("STEWARD_BASE_URL", "STEWARD_SIMULATOR_URL"):  # the demo sets them in its own process too
        monkeypatch.setattr(django_settings, name, getattr(django_settings, name))

    def run(*args: str) -> dict:
        call_command("demo", "--no-samples", *args)
        return seen

    return run


def test_emailed_links_point_at_the_port_the_demo_serves(child_env):
    port = free_port()
    env = child_env("--port", str(port), "--sim-port", str(free_port()))
    # The worker sends the approval emails: its links must lead to this demo's web server.
    assert env["STEWARD_BASE_URL"] == f"http://127.0.0.1:{port}"
    assert django_settings.STEWARD_BASE_URL == f"http://127.0.0.1:{port}"
    assert link_url("token").startswith(f"http://127.0.0.1:{port}/reviews/link/token/")


def test_a_base_url_given_by_the_person_is_kept(child_env, monkeypatch):
    monkeypatch.setenv("STEWARD_BASE_URL", "https://steward.example.com")
    env = child_env("--port", str(free_port()), "--sim-port", str(free_port()))
    assert env["STEWARD_BASE_URL"] == "https://steward.example.com"


def test_the_simulator_gets_the_latency_and_fault_rate_asked_for(child_env):
    """To rehearse a slow or failing model: make demo DEMO_ARGS="--fault-rate 0.1 --latency-ms 300"."""
    env = child_env("--port", str(free_port()), "--sim-port", str(free_port()), "--fault-rate", "0.1",
                    "--latency-ms", "300")
    command = env["commands"]["simulator"]
    assert command[command.index("--fault-rate") + 1] == "0.1"
    assert command[command.index("--latency-ms") + 1] == "300"


@pytest.mark.parametrize(("option", "value", "says"), [
    ("--fault-rate", "5", "--fault-rate 5 is not a share: give a number from 0 to 1 (0.05 for 5%)."),
    ("--latency-ms", "-1", "--latency-ms -1 is negative: give 0 or more milliseconds."),
])
def test_a_fault_rate_or_latency_out_of_range_stops_the_demo_before_it_starts(child_env, option, value, says):
    with pytest.raises(CommandError) as refused:
        child_env("--port", str(free_port()), "--sim-port", str(free_port()), option, value)
    assert str(refused.value) == says
