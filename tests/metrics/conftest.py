"""Monitoring test helpers: a known scenario through the real pipeline, and a /metrics scrape."""
from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass

import pytest
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from metrics.loops import clear_cache
from orchestrator.models import Task
from orchestrator.roles import api_token_create
from orchestrator.services import task_submit
from reviews.services import approval_decide

SMALL_INVOICE = """INVOICE
Invoice Number: INV-7
From: Acme Supplies Ltd
Date: 2024-11-02
- Paper  10 x $5.00 = $50.00
Total: $50.00
"""
LARGE_INVOICE = """INVOICE
Invoice Number: NW-5521
From: Northwind Consulting
Date: 2024-11-03
- Consulting  1 x $15,400.00 = $15,400.00
Total: $15,400.00
"""
CONTRACT = """SERVICES AGREEMENT
This Agreement is made between Globex Corporation and Steward Ltd.
Term: 12 months. Fees: $2,000.00 per month.
"""
LOOPING = SMALL_INVOICE.replace("INV-7", "INV-LOOP") + "[[sim-fault: tool_loop]]\n"
FILTERED = SMALL_INVOICE.replace("INV-7", "INV-BAD") + "[[sim-fault: content_filter]]\n"


@pytest.fixture(autouse=True)
def _fresh_loop_cache():
    """The loop ceiling is cached per process; each test starts from its own rollups."""
    clear_cache()
    yield
    clear_cache()


@dataclass
class Scenario:
    small: Task
    large: Task
    contract: Task
    looping: Task
    filtered: Task


@pytest.fixture
def scenario(run_pipeline, reviewer_finance, reviewer_legal) -> Scenario:
    """Five documents with known outcomes, run in this process through the real pipeline.

    small: completed without a person (auto-approved); large: rejected by Alice as a duplicate;
    contract: approved by Bob, then completed; looping: stopped by loop detection; filtered:
    dead-lettered by the content filter.
    """
    def run(text: str, name: str) -> Task:
        return run_pipeline(task_submit(content=text, filename=name)[0])

    small = run(SMALL_INVOICE, "small.txt")
    large = run(LARGE_INVOICE, "large.txt")
    contract = run(CONTRACT, "contract.txt")
    looping = run(LOOPING, "looping.txt")
    filtered = run(FILTERED, "filtered.txt")
    approval_decide(approval_id=large.approvals.get().pk, user=reviewer_finance, decision="reject",
                    reason="duplicate")
    approval_decide(approval_id=contract.approvals.get().pk, user=reviewer_legal, decision="approve")
    contract = run_pipeline(contract)
    for task in (small, large, looping, filtered):
        task.refresh_from_db()
    assert [t.status for t in (small, large, contract, looping, filtered)] == [
        "completed", "rejected", "completed", "dead_lettered", "dead_lettered"]
    return Scenario(small, large, contract, looping, filtered)


def scrape(user) -> str:
    """GET /metrics as Prometheus does: with the user's bearer token."""
    response = Client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {api_token_create(user=user)}")
    assert response.status_code == 200, response.content[:500]
    return response.content.decode()


def samples(text: str) -> dict[tuple, float]:
    """{(sample name, frozenset of labels): value} from Prometheus text."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def total(found: dict, name: str, **labels) -> float:
    """Sum of the samples named `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(value for (sample, sample_labels), value in found.items() if sample == name and wanted <= sample_labels)


def promtool() -> str:
    """promtool's path; skip without it, unless STEWARD_REQUIRE_PROMTOOL=1 (CI) makes that a failure."""
    path = shutil.which("promtool")
    if path:
        return path
    if os.environ.get("STEWARD_REQUIRE_PROMTOOL") == "1":
        pytest.fail("promtool is not installed (apt-get install prometheus) and STEWARD_REQUIRE_PROMTOOL=1")
    pytest.skip("promtool is not installed (apt-get install prometheus)")


def run_promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([promtool(), *args], input=stdin, capture_output=True, text=True, timeout=60)
