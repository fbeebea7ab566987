"""A task that an operator sends back from the dead-letter queue counts once, at its latest outcome.

Each retry (one by one, edit-and-retry, bulk) withdraws the task's dead_lettered outcome: the
charts count tasks, not dead-letterings. The dead-letter chart and /metrics' counters still
count every time a task was sent to the queue.
"""
from __future__ import annotations

import csv
import io
from decimal import Decimal

import pytest
from django.db.models import Sum

from metrics import rollups
from metrics.models import ALL_TIME, TaskRollup
from orchestrator.models import Step, Task
from orchestrator.services import (
    bulk_retry_advance, bulk_retry_create, dead_letter_edit_retry, dead_letter_retry, task_submit,
)

from .conftest import FILTERED, LOOPING, SMALL_INVOICE, samples, scrape, total
from .test_rollups_outcomes import assert_rebuild_gives_the_live_figures, rows

pytestmark = pytest.mark.django_db


def invoice(n: int) -> str:
    """A small invoice of its own supplier, so none is held as a duplicate of another."""
    return SMALL_INVOICE.replace("INV-7", f"INV-7{n}").replace("Acme Supplies Ltd", f"Supplier {n} Ltd")


def work(task: Task) -> float:
    return float(task.steps.filter(status="succeeded").aggregate(c=Sum("cost_usd"))["c"] or Decimal(0))


@pytest.fixture
def four_tasks(run_pipeline, operator) -> Task:
    """Three invoices completed without a person, and one task that loops: dead-lettered, retried by
    Olga, dead-lettered again, retried, dead-lettered a third time. Returns the looping task."""
    for n in range(3):
        assert run_pipeline(task_submit(content=invoice(n), filename=f"small-{n}.txt")[0]).status == "completed"
    looping = run_pipeline(task_submit(content=LOOPING, filename="looping.txt")[0])
    for _ in range(2):
        dead_letter_retry(dead_letter_id=looping.dead_letters.get(status="open").pk, user=operator)
        looping = run_pipeline(looping)
    assert looping.status == "dead_lettered" and looping.dead_letters.count() == 3
    return looping


def test_a_task_dead_lettered_three_times_is_one_outcome(four_tasks, operator, client_for):
    response = client_for(operator).get("/charts/completion.csv?range=24h")
    table = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert sum(int(r["outcomes"]) for r in table) == 4  # four tasks, not six dead-letterings and completions
    assert sum(int(r["completed_without_human"]) for r in table) == 3
    if len(table) == 1:  # all in one hour (a run across the hour splits them)
        assert float(table[0]["percent_completed_without_human"]) == 75.0

    assert sum(n for _, n in rows("tool-calls")) == 4  # each task once, the looping one at its latest count
    wasted = {r[0]: r for r in rows("wasted")}
    assert wasted["Work on dead-lettered tasks"][1] == pytest.approx(work(four_tasks))  # once, not three times

    # Each dead-lettering is still an event of its own where events are counted.
    assert sum(r[2] for r in rows("dead-letters")) == 3
    found = samples(scrape(operator))
    assert total(found, "steward_dead_letters_total") == 3
    assert total(found, "steward_task_outcomes_total", outcome="dead_lettered") == 3  # a counter never goes down
    assert total(found, "steward_task_outcomes_total", outcome="retried") == 0
    assert_rebuild_gives_the_live_figures()


def test_a_task_sent_back_by_a_bulk_retry_has_no_outcome_until_it_ends_again(four_tasks, operator):
    bulk = bulk_retry_create(user=operator, dead_letter_ids=[four_tasks.dead_letters.get(status="open").pk],
                             description="the loop", selection={"scope": "selected"})
    bulk_retry_advance(bulk_id=bulk.pk)
    four_tasks.refresh_from_db()
    assert four_tasks.status == "queued"

    assert sum(r[1] for r in rows("completion")) == 3  # the three completed invoices; the loop is in flight
    assert sum(n for _, n in rows("tool-calls")) == 3
    assert {r[0]: r[1] for r in rows("wasted")}["Work on dead-lettered tasks"] == 0
    assert_rebuild_gives_the_live_figures()


def test_an_edit_and_retry_withdraws_the_outcome_where_it_was_counted(run_pipeline, operator, monkeypatch):
    """Classify was stopped by the content filter (no type yet); Olga gives the type and retries
    before the catch-up has counted the failing step. The dead letter and its withdrawal both fall
    in the row of the type the letter copied then (none), whichever is counted first."""
    monkeypatch.setattr(rollups, "_last_catch_up", float("inf"))  # workers' catch-up not due
    filtered = run_pipeline(task_submit(content=FILTERED, filename="filtered.txt")[0])
    assert filtered.status == "dead_lettered" and filtered.doc_type == ""
    dead_letter_edit_retry(dead_letter_id=filtered.dead_letters.get().pk, user=operator, doc_type="Invoice")
    filtered = run_pipeline(filtered)
    assert filtered.status == "dead_lettered" and filtered.doc_type == "Invoice"  # stopped again, at extract
    assert Step.objects.filter(counted=False).exists()
    rollups.rollups_catch_up_for_reader()  # as the charts page and /metrics do before they read

    assert sum(r[1] for r in rows("completion")) == 1
    assert sum(r[1] for r in rows("completion", doc_type="Invoice")) == 1
    assert rows("completion", doc_type="Other") == []
    net = {}
    for r in TaskRollup.objects.filter(bucket=ALL_TIME):
        net[r.doc_type] = net.get(r.doc_type, 0) + (-r.tasks if r.outcome == "retried" else r.tasks)
    assert net == {"": 0, "Invoice": 1}
    assert_rebuild_gives_the_live_figures()
