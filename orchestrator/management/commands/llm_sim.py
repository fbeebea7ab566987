"""`python manage.py llm_sim`: run the OpenAI-compatible LLM simulator in the foreground.

Point the product at it with OPENAI_BASE_URL=<printed URL> (any OPENAI_API_KEY), or leave the LLM
settings empty and the product uses it by default. Faults can be rehearsed with --fault-rate and
--faults; every answer it gives is SIMULATED.
"""
from __future__ import annotations

import argparse
import signal
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from orchestrator.simulator import FAULT_KINDS, SimulatorServer


def _fault_list(value: str) -> list[str]:
    kinds = [k.strip() for k in value.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in FAULT_KINDS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown fault kinds {unknown}; choose from {','.join(FAULT_KINDS)}")
    return kinds


class Command(BaseCommand):
    help = "Run the Steward LLM simulator: an OpenAI-compatible server with deterministic, SIMULATED answers."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1", help="Interface to bind (default 127.0.0.1).")
        parser.add_argument("--port", type=int, default=8100, help="Port to bind (default 8100; 0 picks one).")
        parser.add_argument("--latency-ms", type=float, default=0, help="Delay before every completion answer.")
        parser.add_argument("--fault-rate", type=float, default=0.0,
                            help="Probability (0..1) that a completion request gets a random fault.")
        parser.add_argument("--seed", type=int, default=0, help="Seed for the reproducible fault draws.")
        parser.add_argument("--faults", type=_fault_list, default=None,
                            help=f"Comma-separated fault kinds to draw from (default all: {','.join(FAULT_KINDS)}).")
        parser.add_argument("--hang-s", type=float, default=60.0, help="How long a `timeout` fault hangs.")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            server = SimulatorServer(options["host"], options["port"], latency_ms=options["latency_ms"],
                                     fault_rate=options["fault_rate"], seed=options["seed"],
                                     faults=options["faults"], hang_s=options["hang_s"])
        except (OSError, ValueError) as exc:
            raise CommandError(f"Cannot start the LLM simulator: {exc}") from exc
        server.log_requests = options["verbosity"] >= 2

        def on_sigterm(signum: int, frame: Any) -> None:
            raise KeyboardInterrupt  # leaves serve_forever the same way Ctrl-C does

        previous = signal.signal(signal.SIGTERM, on_sigterm)
        self.stdout.write(f"Steward LLM simulator (SIMULATED model answers) on {server.url}")
        self.stdout.flush()
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.stop()
            signal.signal(signal.SIGTERM, previous)
