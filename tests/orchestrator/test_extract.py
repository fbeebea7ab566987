"""extract: the key fields for the document type, validated against that type's schema."""
from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.errors import InvalidAnswer
from orchestrator.llm import Meter, Usage
from orchestrator.pipeline import current_budget, worker_config
from orchestrator.workers import extract
from orchestrator.workers.base import StepContext

SAMPLES = Path(__file__).resolve().parents[2] / "orchestrator" / "samples"


def context(task) -> StepContext:
    config = worker_config("extract")
    return StepContext(task=task, config=config,
                       meter=Meter(task_totals=Usage(), budget=current_budget(), timeout_s=config.timeout_s))


def sample(name: str) -> str:
    return (SAMPLES / name).read_text()


def test_invoice_fields(simulator, make_task):
    task = make_task(content=sample("invoice-acme-small.txt"), doc_type="Invoice")

    output = extract.run(context(task))

    fields = output["fields"]
    assert output["doc_type"] == "Invoice"
    assert fields["invoice_number"] == "INV-2024-0417"
    assert fields["counterparty"] == "Acme Supplies Ltd"
    assert fields["amount"] == 1240.0
    assert fields["currency"] == "USD"
    assert len(fields["line_items"]) == 5
    assert fields["line_items"][0] == {"description": "Widget A", "quantity": 2.0, "unit_price": 50.0,
                                       "amount": 100.0}


def test_contract_fields(simulator, make_task):
    task = make_task(content=sample("contract-globex-services.txt"), doc_type="Contract")

    fields = extract.run(context(task))["fields"]

    assert fields["counterparty"] == "Globex Corporation"
    assert "Steward Corp" in fields["parties"]
    assert fields["effective_date"] == "2024-12-01"
    assert fields["term"] == "12 months"


def test_email_fields(simulator, make_task):
    task = make_task(content=sample("email-vendor-bank-change.eml"), doc_type="Email")

    fields = extract.run(context(task))["fields"]

    assert "maria.lopez@acme-supplies-billing.example" in fields["counterparty"]
    assert fields["subject"] == "Urgent: change of our bank details"
    assert "bank details" in fields["requested_action"]


def test_report_fields(simulator, make_task):
    task = make_task(content=sample("report-q3-operations.txt"), doc_type="Report")

    fields = extract.run(context(task))["fields"]

    assert fields["title"] == "Quarterly Operations Report - Q3 2024"
    assert fields["author"].startswith("Dana Whitfield")


def test_fields_are_stored_on_the_task_by_the_pipeline(run_pipeline, make_task):
    task = run_pipeline(make_task(content=sample("invoice-northwind-large.txt")))
    assert task.fields["invoice_number"] == "INV-2024-0892"
    assert task.fields["amount"] == 15400.0
    assert task.steps.get(worker="extract").output["fields"] == task.fields


def test_schema_invalid_answer_is_reasked_with_the_validation_error(simulator, make_task):
    content = sample("invoice-acme-small.txt") + "\n[[sim-fault: invalid_schema x 1]]\n"
    ctx = context(make_task(content=content, doc_type="Invoice"))

    fields = extract.run(ctx)["fields"]

    assert fields["invoice_number"] == "INV-2024-0417"
    assert ctx.meter.step.llm_calls == 2
    reask = [e for e in ctx.meter.transcript if e["kind"] == "request"][1]["messages"][-1]["content"]
    assert "Your previous answer was invalid" in reask
    assert "counterparty" in reask  # the validation error names the missing field


def test_answer_still_invalid_after_the_reasks_is_a_permanent_failure(simulator, make_task):
    content = sample("invoice-acme-small.txt") + "\n[[sim-fault: invalid_schema]]\n"
    ctx = context(make_task(content=content, doc_type="Invoice"))

    with pytest.raises(InvalidAnswer) as caught:
        extract.run(ctx)

    assert ctx.meter.step.llm_calls == ctx.config.max_reasks + 1
    assert "amount" in caught.value.message


def test_invalid_answer_dead_letters_the_task_without_retries(run_pipeline, make_task):
    content = sample("invoice-acme-small.txt") + "\n[[sim-fault: invalid_schema]]\n"
    # Already classified (the marker would trip classify too): the pipeline resumes at extract.
    task = run_pipeline(make_task(content=content, doc_type="Invoice", confidence=0.97, current_step="extract"))

    assert task.status == "dead_lettered"
    dead_letter = task.dead_letters.get()
    assert dead_letter.worker == "extract"
    assert dead_letter.error_type == "InvalidAnswer"
    assert dead_letter.attempts == 1
