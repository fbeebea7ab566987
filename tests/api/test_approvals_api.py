"""GET /api/v1/approvals and POST /api/v1/approvals/{id}/decision, as reviewers use them."""
from __future__ import annotations

import json

import pytest
from django.test import Client

from orchestrator.roles import api_token_create
from reviews.models import Approval


def api(user) -> Client:
    return Client(HTTP_AUTHORIZATION=f"Bearer {api_token_create(user=user)}")


def decide(client: Client, approval: Approval, **body):
    return client.post(f"/api/v1/approvals/{approval.pk}/decision", data=json.dumps(body),
                       content_type="application/json")


@pytest.fixture
def waiting(make_task, make_approval):
    """An invoice of 15,400 waiting for the finance director."""
    task = make_task(status="awaiting_approval", current_step="act", doc_type="Invoice", routed_to="finance_director",
                     fields={"invoice_number": "INV-2024-0892", "counterparty": "Northwind Traders",
                             "amount": 15400.0})
    return make_approval(task, "finance_director", action_summary="Send payment approval for invoice INV-2024-0892")


def test_list_shows_only_the_callers_queues(reviewer_finance, waiting, make_task, make_approval):
    make_approval(make_task(status="awaiting_approval"), "legal_team")

    response = api(reviewer_finance).get("/api/v1/approvals")

    assert response.status_code == 200
    results = response.json()["results"]
    assert [a["id"] for a in results] == [waiting.pk]
    assert results[0]["queue"] == "finance_director"
    assert results[0]["status"] == "pending"
    assert results[0]["action"] == "Send payment approval for invoice INV-2024-0892"


def test_list_filters_by_queue_and_status(reviewer_finance, waiting, make_task, make_approval):
    done = make_approval(make_task(), "finance_director", status="approved")
    client = api(reviewer_finance)

    assert [a["id"] for a in client.get("/api/v1/approvals?status=approved").json()["results"]] == [done.pk]
    assert [a["id"] for a in client.get("/api/v1/approvals?queue=finance_director").json()["results"]] == [waiting.pk]
    # Not her queue: refused as one that does not exist is, naming only hers.
    for queue in ("legal_team", "nowhere"):
        response = client.get(f"/api/v1/approvals?queue={queue}")
        assert (response.status_code, response.json()["allowed"]) == (400, ["finance_director"])
    assert client.get("/api/v1/approvals?status=maybe").status_code == 400


def test_admin_sees_every_queue(admin_user, waiting, make_task, make_approval):
    legal = make_approval(make_task(status="awaiting_approval"), "legal_team")
    ids = [a["id"] for a in api(admin_user).get("/api/v1/approvals").json()["results"]]
    assert sorted(ids) == sorted([waiting.pk, legal.pk])


def test_operator_cannot_list_approvals(operator):
    assert api(operator).get("/api/v1/approvals").status_code == 403


def test_approve_queues_the_task_at_act(reviewer_finance, waiting):
    response = decide(api(reviewer_finance), waiting, decision="approve", comment="checked with the PO")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "approved"
    assert body["decided_by"] == "alice"
    assert body["decided_at"]
    assert body["comment"] == "checked with the PO"
    waiting.task.refresh_from_db()
    assert (waiting.task.status, waiting.task.current_step) == ("queued", "act")


def test_reject_without_a_reason_is_400_and_decides_nothing(reviewer_finance, waiting):
    response = decide(api(reviewer_finance), waiting, decision="reject")

    assert response.status_code == 400
    assert response.json()["error"] == "A rejection needs a reason"
    waiting.refresh_from_db()
    assert waiting.status == "pending"


def test_approve_with_a_reason_is_400_and_decides_nothing(reviewer_finance, waiting):
    """A reason only goes with reject: approving would drop it without a word."""
    response = decide(api(reviewer_finance), waiting, decision="approve", reason="duplicate", comment="paid twice?")

    assert response.status_code == 400
    assert response.json()["error"] == ("\"reason\" goes with \"decision\": \"reject\"; an approval takes "
                                        "\"comment\" and \"fields\"")
    waiting.refresh_from_db()
    assert waiting.status == "pending"


def test_reject_with_corrections_is_400_and_decides_nothing(reviewer_finance, waiting):
    """Corrections only go with approve: rejecting would drop them without a word."""
    response = decide(api(reviewer_finance), waiting, decision="reject", reason="duplicate",
                      fields={"amount": "154.00"})

    assert response.status_code == 400
    assert response.json()["error"] == ("\"fields\" (corrections) go with \"decision\": \"approve\"; a "
                                        "rejection takes \"reason\" and \"comment\"")
    waiting.refresh_from_db()
    assert waiting.status == "pending"


def test_reject_with_empty_fields_rejects(reviewer_finance, waiting):
    response = decide(api(reviewer_finance), waiting, decision="reject", reason="duplicate", fields={})

    assert (response.status_code, response.json()["status"]) == (200, "rejected")


def test_approve_with_a_comment_and_a_null_reason_approves(reviewer_finance, waiting):
    response = decide(api(reviewer_finance), waiting, decision="approve", reason=None, comment="checked the PO")

    assert (response.status_code, response.json()["comment"]) == (200, "checked the PO")


def test_reject_with_an_unknown_reason_lists_the_known_ones(reviewer_finance, waiting):
    response = decide(api(reviewer_finance), waiting, decision="reject", reason="dunno")

    assert response.status_code == 400
    assert "duplicate" in response.json()["error"]


def test_reject_with_a_reason_code_ends_the_task(reviewer_finance, waiting):
    response = decide(api(reviewer_finance), waiting, decision="reject", reason="wrong-amount",
                      comment="PO says 14,000")

    assert response.status_code == 200
    assert response.json()["status"] == "rejected"
    assert response.json()["rejection_reason"] == "wrong-amount"
    waiting.task.refresh_from_db()
    assert waiting.task.status == "rejected"
    assert waiting.task.finished_at is not None


def test_unknown_decision_is_400(reviewer_finance, waiting):
    response = decide(api(reviewer_finance), waiting, decision="maybe")
    assert response.status_code == 400
    assert response.json()["error"] == 'decision must be "approve" or "reject"'


def test_second_decision_is_409_naming_who_decided_and_when(reviewer_finance, admin_user, waiting):
    assert decide(api(reviewer_finance), waiting, decision="approve").status_code == 200

    response = decide(api(admin_user), waiting, decision="reject", reason="duplicate")

    assert response.status_code == 409
    error = response.json()["error"]
    assert error.startswith("Already approved by alice at ")
    assert response.json()["approval"]["decided_by"] == "alice"
    waiting.task.refresh_from_db()
    assert waiting.task.status == "queued"  # the first decision stands


def test_same_reviewer_deciding_twice_gets_409(reviewer_finance, waiting):
    client = api(reviewer_finance)
    decide(client, waiting, decision="approve")
    assert decide(client, waiting, decision="approve").status_code == 409


def test_reviewer_of_another_queue_gets_404(reviewer_legal, waiting):
    response = decide(api(reviewer_legal), waiting, decision="approve")

    assert response.status_code == 404
    waiting.refresh_from_db()
    assert waiting.status == "pending"


def test_unknown_approval_is_404(reviewer_finance):
    assert decide(api(reviewer_finance), Approval(pk=999999), decision="approve").status_code == 404


def test_corrections_are_stored_with_the_original(reviewer_finance, waiting):
    response = decide(api(reviewer_finance), waiting, decision="approve",
                      fields={"amount": 14000.0, "counterparty": "Northwind Traders"})

    assert response.status_code == 200
    assert response.json()["corrections"] == {"amount": {"from": 15400.0, "to": 14000.0}}
    waiting.task.refresh_from_db()
    assert waiting.task.fields["amount"] == 14000.0
    assert waiting.task.fields["invoice_number"] == "INV-2024-0892"


def test_fields_must_be_an_object(reviewer_finance, waiting):
    response = decide(api(reviewer_finance), waiting, decision="approve", fields=["amount", 1])
    assert response.status_code == 400
    assert response.json()["error"] == '"fields" must be an object'


@pytest.mark.parametrize("body, error", [
    ({"decision": "approve", "comment": {"note": "ok"}}, '"comment" must be a string'),
    ({"decision": "approve", "comment": 7}, '"comment" must be a string'),
    ({"decision": "reject", "reason": ["duplicate"]}, '"reason" must be a string'),
    ({"decision": "reject", "reason": "duplicate", "comment": False}, '"comment" must be a string'),
])
def test_a_decision_with_a_wrong_type_is_400_and_decides_nothing(reviewer_finance, waiting, body, error):
    response = decide(api(reviewer_finance), waiting, **body)

    assert response.status_code == 400
    assert response.json()["error"] == error
    waiting.refresh_from_db()
    assert (waiting.status, waiting.comment) == ("pending", "")


def test_null_reason_and_comment_are_the_same_as_none(reviewer_finance, waiting):
    response = decide(api(reviewer_finance), waiting, decision="approve", reason=None, comment=None)
    assert response.status_code == 200
    assert response.json()["comment"] == ""
