"""classify: the document type and the model's confidence, with bounded re-asks of invalid answers."""
from __future__ import annotations

import pytest

from orchestrator.errors import InvalidAnswer
from orchestrator.llm import Meter, Usage
from orchestrator.pipeline import current_budget, worker_config
from orchestrator.workers import classify
from orchestrator.workers.base import StepContext


def context(task) -> StepContext:
    config = worker_config("classify")
    return StepContext(task=task, config=config,
                       meter=Meter(task_totals=Usage(), budget=current_budget(), timeout_s=config.timeout_s))


INVOICE = "INVOICE\nInvoice Number: INV-1\nFrom: Acme Supplies Ltd\nTotal: $220.00\n"
CONTRACT = "SERVICES AGREEMENT\nThis Agreement is made between Steward Corp and Globex Corporation.\n"
EMAIL = "From: dana@initech.example\nSubject: Overdue payment\n\nPlease pay it by Friday.\n"
REPORT = "Quarterly Operations Report - Q3 2024\nPrepared by: Dana\n\nVolume grew 18%.\n"
OTHER = "Shopping list\nmilk\neggs\nbread\n"


@pytest.mark.parametrize("content, doc_type", [
    (INVOICE, "Invoice"), (CONTRACT, "Contract"), (EMAIL, "Email"), (REPORT, "Report"), (OTHER, "Other"),
])
def test_document_type_and_confidence(simulator, make_task, content, doc_type):
    ctx = context(make_task(content=content))

    output = classify.run(ctx)

    assert output["doc_type"] == doc_type
    assert 0 <= output["confidence"] <= 1
    assert output["rationale"]
    assert ctx.meter.step.llm_calls == 1


def test_classification_is_stored_on_the_task_by_the_pipeline(run_pipeline, make_task):
    task = run_pipeline(make_task(content=CONTRACT))
    assert task.doc_type == "Contract"
    assert task.confidence == pytest.approx(0.97)
    step = task.steps.get(worker="classify")
    assert step.status == "succeeded"
    assert step.output["doc_type"] == "Contract"
    assert step.simulated is True
    assert step.prompt_version == "v1"


def test_confidence_comes_from_the_model(simulator, make_task):
    output = classify.run(context(make_task(content=INVOICE + "Simulated-Confidence: 0.6\n")))
    assert output["doc_type"] == "Invoice"
    assert output["confidence"] == 0.6


def test_an_invalid_answer_is_reasked_once_and_then_accepted(simulator, make_task):
    ctx = context(make_task(content=INVOICE + "[[sim-fault: invalid_schema x 1]]\n"))

    output = classify.run(ctx)

    assert output["doc_type"] == "Invoice"
    assert ctx.meter.step.llm_calls == 2
    assert simulator.stats()["by_worker"] == {"classify": 2}
    reask = [e for e in ctx.meter.transcript if e["kind"] == "request"][1]
    assert "Your previous answer was invalid" in reask["messages"][-1]["content"]


def test_json_that_never_parses_fails_after_the_bounded_reasks(simulator, make_task):
    ctx = context(make_task(content=INVOICE + "[[sim-fault: malformed_json]]\n"))

    with pytest.raises(InvalidAnswer) as caught:
        classify.run(ctx)

    assert caught.value.permanent
    assert "not valid JSON" in caught.value.message
    # json's own words end in "at" ("Unterminated string starting at"): the place follows them once,
    # counted from 1, not "starting at at position 44".
    assert caught.value.message.endswith(
        "The answer was not valid JSON (Unterminated string starting at: character 45 of the answer).")
    assert ctx.config.max_reasks == 2
    assert ctx.meter.step.llm_calls == ctx.config.max_reasks + 1
    assert len(caught.value.evidence["errors"]) == 3
