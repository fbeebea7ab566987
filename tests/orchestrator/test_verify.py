"""verify: a function-calling loop that checks the extraction against what Steward already knows."""
from __future__ import annotations

import json

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from orchestrator.errors import ToolLoop
from orchestrator.llm import Meter, Usage
from orchestrator.pipeline import current_budget, worker_config
from orchestrator.workers import verify
from orchestrator.workers.base import StepContext


def context(task) -> StepContext:
    config = worker_config("verify")
    return StepContext(task=task, config=config,
                       meter=Meter(task_totals=Usage(), budget=current_budget(), timeout_s=config.timeout_s))


def invoice(number="INV-7", counterparty="Acme Supplies Ltd", amount=220.0, line_items=None) -> dict:
    if line_items is None:
        line_items = [{"description": "Widget A", "quantity": 2, "unit_price": 50.0, "amount": 100.0},
                      {"description": "Support", "quantity": 3, "unit_price": 40.0, "amount": 120.0}]
    return {"invoice_number": number, "counterparty": counterparty, "amount": amount, "currency": "USD",
            "line_items": line_items}


def kinds(output: dict) -> set[str]:
    return {f["kind"] for f in output["findings"]}


def test_clean_invoice_is_ok_after_real_tool_calls(simulator, make_task):
    task = make_task(content="INVOICE INV-7\nTotal: $220.00", doc_type="Invoice", fields=invoice())
    ctx = context(task)

    output = verify.run(ctx)

    assert output == {"verdict": "ok", "findings": []}
    assert ctx.meter.step.tool_calls == 3  # duplicates, counterparty history, line items
    assert ctx.meter.step.llm_calls == 2  # ask for tools, then the verdict
    called = [e["tool"] for e in ctx.meter.transcript if e["kind"] == "tool_call"]
    assert sorted(called) == ["check_line_items", "counterparty_history", "find_duplicates"]


def test_same_invoice_number_from_same_counterparty_is_a_duplicate(simulator, make_task):
    earlier = make_task(content="an earlier scan of it", doc_type="Invoice", fields=invoice(amount=220.0))
    task = make_task(content="INVOICE INV-7 again\nTotal: $220.00", doc_type="Invoice", fields=invoice())

    output = verify.run(context(task))

    assert output["verdict"] == "needs_review"
    duplicate = next(f for f in output["findings"] if f["kind"] == "duplicate")
    assert duplicate["task_ids"] == [earlier.pk]


def test_same_invoice_number_from_another_counterparty_is_not_a_duplicate(simulator, make_task):
    make_task(content="someone else's invoice", doc_type="Invoice", fields=invoice(counterparty="Globex"))
    task = make_task(content="INVOICE INV-7\nTotal: $220.00", doc_type="Invoice", fields=invoice())

    assert "duplicate" not in kinds(verify.run(context(task)))


def test_line_items_that_do_not_add_up_are_an_arithmetic_finding(simulator, make_task):
    items = [{"description": "Widget A", "quantity": 2, "unit_price": 50.0, "amount": 120.0}]
    task = make_task(content="INVOICE INV-8\nTotal: $150.00", doc_type="Invoice",
                     fields=invoice(number="INV-8", amount=150.0, line_items=items))

    output = verify.run(context(task))

    arithmetic = next(f for f in output["findings"] if f["kind"] == "arithmetic")
    assert "2.0 x 50.0 is 100.00, not 120.00" in arithmetic["message"]
    assert "lines add up to 120.00, the total says 150.00" in arithmetic["message"]


def test_amount_far_above_the_counterparty_history_is_an_anomaly(simulator, make_task):
    for number, amount in (("N-1", 100.0), ("N-2", 120.0), ("N-3", 110.0)):
        make_task(content=f"invoice {number}", doc_type="Invoice",
                  fields=invoice(number=number, amount=amount, line_items=[]))
    task = make_task(content="INVOICE N-4\nTotal: $5,000.00", doc_type="Invoice",
                     fields=invoice(number="N-4", amount=5000.0, line_items=[]))
    ctx = context(task)

    output = verify.run(ctx)

    anomaly = next(f for f in output["findings"] if f["kind"] == "amount_anomaly")
    assert "median of 110" in anomaly["message"]
    history = next(e for e in ctx.meter.transcript if e.get("tool") == "counterparty_history")
    assert history["result"]["count"] == 3



# --- The tools' lookups, called directly (written-out SQL on PostgreSQL, the ORM elsewhere) -----


def test_find_duplicates_matches_content_or_number_and_counterparty_in_any_case(make_task):
    same_text = make_task(content="INVOICE INV-9\nTotal: $10.00", doc_type="Invoice", fields=invoice(number="X-1"))
    same_number = make_task(content="a rescan", doc_type="Invoice", fields=invoice(number="INV-9", counterparty="ACME supplies ltd"))
    make_task(content="a receipt", doc_type="Receipt", fields=invoice(number="INV-9"))  # not an invoice
    make_task(content="from someone else", doc_type="Invoice", fields=invoice(number="INV-9", counterparty="Globex"))
    task = make_task(content="INVOICE INV-9\nTotal: $10.00", doc_type="Invoice", fields=invoice(number="INV-9"))
    make_task(content="INVOICE INV-9\nTotal: $10.00", doc_type="Invoice", fields=invoice(number="INV-9"))  # later

    found = verify.find_duplicates(task, "INV-9", "Acme Supplies Ltd")

    assert found["matches"] == [
        {"task_id": same_text.pk, "filename": same_text.filename, "reason": "identical content"},
        {"task_id": same_number.pk, "filename": same_number.filename, "reason": "same invoice number INV-9"},
    ]
    # Without a counterparty, the number from anyone matches; without a number, only the content.
    assert len(verify.find_duplicates(task, "INV-9", None)["matches"]) == 3
    assert [m["task_id"] for m in verify.find_duplicates(task, None, "Acme")["matches"]] == [same_text.pk]


def test_counterparty_history_reads_the_latest_numeric_amounts_of_that_counterparty(make_task):
    for amount in (100.0, "120.50", None, "n/a", 90):
        make_task(doc_type="Invoice", fields=invoice(counterparty="Acme", amount=amount))
    make_task(doc_type="Invoice", fields=invoice(counterparty="Globex", amount=5.0))
    task = make_task(doc_type="Invoice", fields=invoice(counterparty="ACME", amount=7.0))
    make_task(doc_type="Invoice", fields=invoice(counterparty="Acme", amount=1_000.0))  # later

    history = verify.counterparty_history(task, "acme")

    assert history == {"count": 3, "amounts": [90.0, 120.5, 100.0], "median_amount": 100.0}
    assert verify.counterparty_history(task, "Initech") == {"count": 0, "amounts": [], "median_amount": None}

def test_an_endless_tool_loop_stops_at_the_bound_with_evidence(simulator, make_task, settings):
    settings.STEWARD_LOOP_REPEAT_LIMIT = 0  # the backstop under test: loop detection (tests/metrics) off
    task = make_task(content="INVOICE INV-9\n[[sim-fault: tool_loop]]", doc_type="Invoice",
                     fields=invoice(number="INV-9"))
    ctx = context(task)
    rounds = ctx.config.max_tool_rounds

    with pytest.raises(ToolLoop) as caught:
        verify.run(ctx)

    error = caught.value
    assert error.permanent
    assert f"after {rounds} rounds" in error.message
    assert ctx.meter.step.llm_calls == rounds + 1
    assert ctx.meter.step.tool_calls == rounds  # tools asked for past the bound are not run
    recent = error.evidence["recent_tool_calls"]
    assert error.evidence["tool_calls"] == rounds
    assert len({(c["tool"], c["arguments"]) for c in recent}) == 1  # the same call, over and over
    assert recent[0]["tool"] == "find_duplicates"


def test_a_tool_loop_dead_letters_the_task(run_pipeline, make_task, settings):
    settings.STEWARD_LOOP_REPEAT_LIMIT = 0  # the backstop under test: loop detection (tests/metrics) off
    task = make_task(content="INVOICE INV-10\nTotal: $220.00\n[[sim-fault: tool_loop]]", doc_type="Invoice",
                     confidence=0.97, fields=invoice(number="INV-10"), current_step="verify")

    task = run_pipeline(task)

    assert task.status == "dead_lettered"
    dead_letter = task.dead_letters.get()
    assert (dead_letter.worker, dead_letter.error_type, dead_letter.attempts) == ("verify", "ToolLoop", 1)
    assert dead_letter.evidence["recent_tool_calls"]
    assert task.tool_calls == worker_config("verify").max_tool_rounds


def test_the_model_cannot_hide_an_exact_duplicate(simulator, make_task, monkeypatch):
    """A model that reports no problem (here: its duplicate tool shows nothing) still gets the finding."""
    content = "INVOICE INV-11\nTotal: $220.00"
    first = make_task(content=content, doc_type="Invoice", fields=invoice(number="INV-11"))
    again = make_task(content=content, doc_type="Invoice", fields=invoice(number="INV-11"), duplicate_of=first)
    assert again.content_sha256 == first.content_sha256
    monkeypatch.setitem(verify.TOOL_FUNCTIONS, "find_duplicates", lambda task, **kwargs: {"matches": []})
    ctx = context(again)

    output = verify.run(ctx)

    model_answer = [e for e in ctx.meter.transcript if e["kind"] == "response"][-1]["content"]
    assert json.loads(model_answer) == {"verdict": "ok", "findings": []}
    assert output["verdict"] == "needs_review"
    assert output["findings"] == [{
        "kind": "duplicate", "source": "check", "task_ids": [first.pk],
        "message": f"Possible duplicate of task {first.pk} (identical content)",
    }]


def test_findings_are_stored_on_the_task_by_the_pipeline(run_pipeline, make_task):
    items = [{"description": "Widget A", "quantity": 2, "unit_price": 50.0, "amount": 120.0}]
    task = make_task(content="INVOICE INV-12\nTotal: $120.00", doc_type="Invoice", confidence=0.97,
                     fields=invoice(number="INV-12", amount=120.0, line_items=items), current_step="verify")

    task = run_pipeline(task)

    assert [f["kind"] for f in task.findings] == ["arithmetic"]
    step = task.steps.get(worker="verify")
    assert step.tool_calls == 3
    assert task.tool_calls == 3


def test_the_check_reuses_our_own_duplicate_query_for_the_task_fields(simulator, make_task):
    """The model asked find_duplicates for the task's own invoice number and counterparty: the
    deterministic check takes that answer (it is the same query) instead of running it again."""
    first = make_task(content="INVOICE INV-12\nTotal: $220.00", doc_type="Invoice", fields=invoice(number="INV-12"))
    again = make_task(content="INVOICE INV-12\nTotal: $220.00", doc_type="Invoice", fields=invoice(number="INV-12"))
    ctx = context(again)

    with CaptureQueriesContext(connection) as queries:
        output = verify.run(ctx)

    calls = [e for e in ctx.meter.transcript if e["kind"] == "tool_call" and e["tool"] == "find_duplicates"]
    assert json.loads(calls[0]["arguments"])["invoice_number"] == "INV-12"
    assert sum("content_sha256" in q["sql"] for q in queries.captured_queries) == 1
    assert output["verdict"] == "needs_review"
    assert [f["task_ids"] for f in output["findings"] if f["kind"] == "duplicate"] == [[first.pk]]
