"""Outcomes without a failing step: the sweeper's Orphaned dead letters, and discarded tasks.

Both are counted live (inside the transaction that makes them) and a rebuild from the raw rows
gives the same rollups.
"""
from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.db.models import Sum
from django.utils import timezone

from metrics.charts import CHARTS, chart_filters
from metrics.models import ALL_TIME, HistogramRollup, StepRollup, TaskRollup
from metrics.rollups import rollup_snapshot, rollups_catch_up
from orchestrator.models import Step, Task
from orchestrator.services import dead_letter_discard, dead_letter_requeue, dead_letter_retry, task_submit
from orchestrator.sweeper import sweep

from .conftest import SMALL_INVOICE, samples, scrape, total

pytestmark = pytest.mark.django_db

CLASSIFY_COST = Decimal("0.00120000")


def rows(slug: str, **params) -> list:
    return CHARTS[slug](chart_filters({"range": "24h", **params})).rows


def outcomes() -> dict:
    return {(r.outcome, r.human, r.doc_type): (r.tasks, r.tool_calls, r.cost_usd, r.work_cost_usd)
            for r in TaskRollup.objects.filter(bucket=ALL_TIME)}


def assert_rebuild_gives_the_live_figures() -> None:
    live = rollup_snapshot()
    call_command("rebuild_rollups", verbosity=0)
    assert rollup_snapshot() == live


@pytest.fixture
def orphaned(settings) -> Task:
    """A small invoice classified (one succeeded step), then lost by its workers too often: the
    sweeper dead-letters it as Orphaned, with no failing step."""
    settings.STEWARD_MAX_RECOVERIES = 3
    task, _ = task_submit(content=SMALL_INVOICE, filename="lost.txt")
    earlier = timezone.now() - timedelta(minutes=10)
    Step.objects.create(task=task, worker="classify", attempt=1, status="succeeded",
                        output={"doc_type": "Invoice"}, model="gpt-4o-mini", llm_calls=1, tool_calls=2,
                        input_tokens=300, output_tokens=20, cost_usd=CLASSIFY_COST, started_at=earlier,
                        finished_at=earlier)
    Task.objects.filter(pk=task.pk).update(
        status="running", doc_type="Invoice", current_step="extract", lease_owner="gone",
        lease_expires_at=timezone.now() - timedelta(seconds=5), recoveries=3, llm_calls=1, tool_calls=2,
        input_tokens=300, output_tokens=20, cost_usd=CLASSIFY_COST)
    task.refresh_from_db()
    rollups_catch_up()  # as a worker does after the checkpoint

    assert sweep()["dead_lettered"] == 1

    task.refresh_from_db()
    assert task.status == "dead_lettered"
    assert task.dead_letters.get().error_type == "Orphaned"
    return task


def test_an_orphaned_dead_letter_is_counted_by_error_type_and_as_an_outcome(orphaned, operator):
    found = samples(scrape(operator))
    assert total(found, "steward_dead_letters_total", error_type="Orphaned") == 1
    assert total(found, "steward_dead_letters_total", worker="", error_type="Orphaned") == 1
    assert total(found, "steward_dead_letters_open", error_type="Orphaned") == 1
    assert total(found, "steward_task_outcomes_total", outcome="dead_lettered") == 1

    assert rows("dead-letters") == [["Orphaned", "", 1, "no"]]
    assert rows("dead-letters", doc_type="Contract") == []
    # The task's totals when it was lost: its one classify step.
    assert outcomes() == {("dead_lettered", False, "Invoice"): (1, 2, CLASSIFY_COST, CLASSIFY_COST)}
    # No step was added: the step rollups still add up to the steps.
    assert StepRollup.objects.filter(bucket=ALL_TIME).aggregate(n=Sum("steps"))["n"] == 1
    assert HistogramRollup.objects.get(bucket=ALL_TIME, metric="task_tool_calls").count == 1
    assert_rebuild_gives_the_live_figures()


def test_orphaned_then_retried_and_completed_counts_once_as_completed(orphaned, operator, run_pipeline):
    letter = orphaned.dead_letters.get()
    dead_letter_retry(dead_letter_id=letter.pk, user=operator)
    task = run_pipeline(orphaned)
    assert task.status == "completed"

    found = outcomes()
    # The dead letter is counted, and withdrawn when Olga sent the task back (same values, same hour).
    assert found[("dead_lettered", False, "Invoice")] == found[("retried", False, "Invoice")]
    # Retried from the dead-letter queue by a person: completed with human intervention.
    assert found[("completed", True, "Invoice")][:3] == (1, task.tool_calls, task.cost_usd)
    assert set(found) == {("dead_lettered", False, "Invoice"), ("retried", False, "Invoice"),
                          ("completed", True, "Invoice")}
    # Its work was used in the end: not wasted, and no longer at risk.
    wasted = {r[0]: r for r in rows("wasted")}
    assert wasted["Work on discarded tasks"][1] == 0
    assert wasted["Work on dead-lettered tasks"][1] == 0
    completion = rows("completion")
    assert sum(r[1] for r in completion) == 1  # one task, one outcome: completed
    assert sum(r[3] for r in completion) == 1  # with a person (Olga's retry)
    assert sum(n for _, n in rows("tool-calls")) == 1
    assert_rebuild_gives_the_live_figures()


def test_a_discarded_orphan_is_counted_with_its_cost(orphaned, operator):
    dead_letter_discard(dead_letter_id=orphaned.dead_letters.get().pk, user=operator, reason="junk")

    assert outcomes()[("discarded", False, "Invoice")] == (1, 2, CLASSIFY_COST, CLASSIFY_COST)
    wasted = {r[0]: r[1] for r in rows("wasted")}
    assert wasted["Work on discarded tasks"] == pytest.approx(float(CLASSIFY_COST))
    assert_rebuild_gives_the_live_figures()


def test_discarded_and_requeued_tasks_are_wasted_spend_counted_once(scenario, operator):
    completion_before = rows("completion")
    looping, filtered = scenario.looping, scenario.filtered
    dead_letter_discard(dead_letter_id=looping.dead_letters.get().pk, user=operator, reason="a loop, not worth it")
    _, new = dead_letter_requeue(dead_letter_id=filtered.dead_letters.get().pk, user=operator)
    for task in (looping, filtered):
        task.refresh_from_db()
        assert task.status == "discarded"

    def work(task: Task) -> Decimal:
        return task.steps.filter(status="succeeded").aggregate(c=Sum("cost_usd"))["c"] or Decimal(0)

    discarded = {(r.doc_type, r.tasks, r.tool_calls, r.cost_usd, r.work_cost_usd)
                 for r in TaskRollup.objects.filter(bucket=ALL_TIME, outcome="discarded")}
    assert discarded == {("Invoice", 1, looping.tool_calls, looping.cost_usd, work(looping)),
                         ("", 1, filtered.tool_calls, filtered.cost_usd, work(filtered))}
    assert work(looping) > 0

    # Wasted spend: every task that ended without a result (rejected, discarded) is counted in
    # full, each cent once: failed attempts + the succeeded work of rejected and discarded tasks.
    wasted = {r[0]: r for r in rows("wasted")}
    assert wasted["Work on discarded tasks"][1] == pytest.approx(float(work(looping) + work(filtered)))
    in_total = sum(Decimal(str(r[1])) for r in wasted.values() if r[3] == "yes")
    losers = (scenario.large, looping, filtered)
    assert float(in_total) == pytest.approx(float(sum((t.cost_usd for t in losers), Decimal(0))))

    # A discard closes a task already counted as dead-lettered: not a second outcome.
    assert rows("completion") == completion_before
    assert HistogramRollup.objects.filter(bucket=ALL_TIME, metric="task_tool_calls").aggregate(
        n=Sum("count"))["n"] == 5
    found = samples(scrape(operator))
    assert total(found, "steward_task_outcomes_total", outcome="discarded") == 0
    assert total(found, "steward_task_outcomes_total") == 5
    assert total(found, "steward_tasks", status="discarded") == 2
    assert new.status == "queued"
    assert_rebuild_gives_the_live_figures()
