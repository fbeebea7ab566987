"""Correct-then-approve: a reviewer's corrections must fit the document type's schema, and the action
that runs afterwards carries what the reviewer approved, not the model's reading."""
from __future__ import annotations

import json

import pytest
from django.test import Client

from orchestrator.models import Task
from orchestrator.roles import api_token_create
from reviews.actions import action_payload
from reviews.models import Approval
from reviews.services import DecisionError, approval_decide


def api_decide(user, approval: Approval, **body):
    client = Client(HTTP_AUTHORIZATION=f"Bearer {api_token_create(user=user)}")
    return client.post(f"/api/v1/approvals/{approval.pk}/decision", data=json.dumps(body),
                       content_type="application/json")


def assert_still_waiting(approval: Approval, fields: dict) -> None:
    approval.refresh_from_db()
    assert approval.status == "pending" and approval.corrections == {}
    task = Task.objects.get(pk=approval.task_id)
    assert task.status == "awaiting_approval" and task.fields == fields


def test_the_api_refuses_an_amount_that_is_not_a_number(reviewer_finance, pending):
    approval = pending()
    before = dict(approval.task.fields)

    response = api_decide(reviewer_finance, approval, decision="approve", fields={"amount": "abc"})

    assert response.status_code == 400
    assert response.json()["error"] == "Amount must be a number"
    assert_still_waiting(approval, before)


def test_the_api_names_every_problem_at_once(reviewer_finance, pending):
    approval = pending()
    before = dict(approval.task.fields)

    response = api_decide(reviewer_finance, approval, decision="approve",
                          fields={"amount": -5, "currency": None, "date": "31/31/2024", "counterparty": ""})

    assert response.status_code == 400
    error = response.json()["error"]
    assert 'Date must be a date written as YYYY-MM-DD, not "31/31/2024"' in error
    assert "Counterparty must not be empty" in error
    assert "Currency is required" in error
    assert "Amount must be 0 or more" in error
    assert "pydantic" not in error
    assert_still_waiting(approval, before)


def test_the_api_refuses_a_field_the_type_does_not_have(reviewer_finance, pending):
    approval = pending()

    response = api_decide(reviewer_finance, approval, decision="approve", fields={"iban": "DE00 1234"})

    assert response.status_code == 400
    assert response.json()["error"].startswith("Invoice has no field 'iban'; its fields are invoice_number, ")
    assert_still_waiting(approval, dict(approval.task.fields))


def test_a_correction_is_stored_as_the_schema_says(reviewer_finance, pending):
    approval = pending(amount=15400.0)

    response = api_decide(reviewer_finance, approval, decision="approve",
                          fields={"amount": "15400.50", "date": "2026-11-04"})

    assert response.status_code == 200
    assert response.json()["corrections"] == {"amount": {"from": 15400.0, "to": 15400.5},
                                              "date": {"from": None, "to": "2026-11-04"}}
    assert Task.objects.get(pk=approval.task_id).fields["amount"] == 15400.5


def test_no_nan_or_infinity_gets_in(reviewer_finance, pending):
    approval = pending()

    with pytest.raises(DecisionError, match="Amount must be a finite number"):
        approval_decide(approval_id=approval.pk, user=reviewer_finance, decision="approve",
                        fields={"amount": float("inf")})


def test_the_approved_action_carries_the_corrected_fields(reviewer_finance, pending):
    approval = pending(number="INV-9", amount=15400.0)

    decided = approval_decide(approval_id=approval.pk, user=reviewer_finance, decision="approve",
                              fields={"invoice_number": "INV-9-A", "counterparty": "Northwind Traders Ltd"})

    assert decided.action_summary == "Send payment approval for invoice INV-9-A, $15,400, to finance_director"
    payload = action_payload(decided)
    assert payload["action"] == decided.action_summary
    assert payload["data"]["fields"] == {"invoice_number": "INV-9-A", "counterparty": "Northwind Traders Ltd",
                                         "amount": 15400.0}
    assert payload["data"]["amount"] == "15400.0"
    assert payload["corrections"]["invoice_number"] == {"from": "INV-9", "to": "INV-9-A"}


def test_an_approval_without_corrections_keeps_its_action(reviewer_finance, pending):
    approval = pending(number="INV-9")

    decided = approval_decide(approval_id=approval.pk, user=reviewer_finance, decision="approve")

    assert decided.action_summary == approval.action_summary
    assert decided.action_data == approval.action_data


def test_a_refused_form_shows_what_the_reviewer_typed(reviewer_finance, client_for, pending):
    approval = pending(number="INV-9")

    response = client_for(reviewer_finance).post(f"/reviews/approvals/{approval.pk}/decide", {
        "decision": "approve", "field__invoice_number": "INV-9-B", "field__amount": "-5",
        "comment": "Credit note applied",
    })

    assert response.status_code == 400
    assert "Amount must be 0 or more" in response.text
    assert 'name="field__invoice_number" value="INV-9-B"' in response.text
    assert 'name="field__amount" value="-5"' in response.text
    assert ">Credit note applied</textarea>" in response.text
    assert_still_waiting(approval, dict(approval.task.fields))



def test_a_long_field_is_corrected_in_a_text_area(reviewer_finance, client_for, make_task, make_approval):
    summary = "The supplier asks us to pay future invoices into a new bank account, effective next month."
    task = make_task(status="awaiting_approval", doc_type="Email", routed_to="finance_director",
                     fields={"counterparty": "Acme", "subject": "New bank details", "summary": summary})
    approval = make_approval(task, "finance_director")
    client = client_for(reviewer_finance)

    page = client.get(f"/reviews/approvals/{approval.pk}/").text

    assert f'<textarea id="field-summary" name="field__summary" rows="4" class="correct">{summary}</textarea>' in page
    assert '<input type="text" id="field-subject" name="field__subject" value="New bank details"' in page
    client.post(f"/reviews/approvals/{approval.pk}/decide",
                {"decision": "approve", "field__summary": summary + "\r\nCalled Acme to confirm.",
                 "field__subject": "New bank details", "field__counterparty": "Acme"})
    assert Task.objects.get(pk=task.pk).fields["summary"] == summary + "\r\nCalled Acme to confirm."
