"""One approval's page: everything needed to decide it, then on to the next one."""
from __future__ import annotations

from datetime import timedelta

from orchestrator.models import Task
from reviews.models import Approval

from .conftest import HX


def test_the_item_shows_action_reasons_fields_and_document(reviewer_finance, client_for, pending):
    approval = pending(number="INV-77")
    text = client_for(reviewer_finance).get(f"/reviews/approvals/{approval.pk}/").text

    assert "Send payment approval for invoice INV-77" in text
    assert "Rule requires approval" in text
    assert 'name="field__invoice_number" value="INV-77"' in text
    assert 'name="field__amount" value="15400.00"' in text
    assert "Invoice Number: INV-77" in text  # the document itself
    assert 'id="approve-button"' in text and 'id="reject-reason"' in text


def test_approving_without_javascript_goes_on_to_the_next_item(reviewer_finance, client_for, pending):
    first = pending(number="INV-1", age=timedelta(hours=2))
    second = pending(number="INV-2", age=timedelta(hours=1))
    client = client_for(reviewer_finance)

    response = client.post(f"/reviews/approvals/{first.pk}/decide", {"decision": "approve"})

    assert response["Location"] == f"/reviews/approvals/{second.pk}/"
    page = client.get(response["Location"]).text
    assert f"Approved action for task {first.task_id}." in page
    first.refresh_from_db()
    assert first.status == "approved"
    assert Task.objects.get(pk=first.task_id).status == "queued"

    # The last one decided: back to the inbox, which is now empty.
    last = client.post(f"/reviews/approvals/{second.pk}/decide", {"decision": "reject", "reason": "duplicate"})
    assert last["Location"] == "/reviews/"
    assert "Nothing is waiting for you" in client.get("/reviews/").text


def test_htmx_decision_swaps_the_item_with_a_next_link(reviewer_finance, client_for, pending):
    first = pending(number="INV-1", age=timedelta(hours=2))
    second = pending(number="INV-2", age=timedelta(hours=1))

    response = client_for(reviewer_finance).post(
        f"/reviews/approvals/{first.pk}/decide",
        {"decision": "reject", "reason": "wrong-amount", "comment": "PO says 14,000"}, **HX)

    assert response.status_code == 200
    assert response.text.lstrip().startswith('<div id="review-item">')
    assert f"Rejected task {first.task_id}: Amount is wrong." in response.text
    assert f'href="/reviews/approvals/{second.pk}/" class="button small primary" id="go-next"' in response.text
    assert "approval-decided" in response["HX-Trigger"]
    assert "PO says 14,000" in response.text  # in the audit trail
    assert Task.objects.get(pk=first.task_id).status == "rejected"


def test_refusals_keep_the_item_pending(reviewer_finance, client_for, pending):
    approval = pending()
    client = client_for(reviewer_finance)

    no_reason = client.post(f"/reviews/approvals/{approval.pk}/decide", {"decision": "reject"}, **HX)
    assert no_reason.status_code == 400 and "A rejection needs a reason" in no_reason.text
    not_a_number = client.post(f"/reviews/approvals/{approval.pk}/decide",
                               {"decision": "approve", "field__amount": "lots"}, **HX)
    assert not_a_number.status_code == 400 and "Amount must be a number" in not_a_number.text
    assert "HX-Trigger" not in not_a_number
    approval.refresh_from_db()
    assert approval.status == "pending"


def test_a_second_decision_is_told_who_decided_first(reviewer_finance, admin_user, client_for, pending):
    approval = pending()
    client_for(reviewer_finance).post(f"/reviews/approvals/{approval.pk}/decide", {"decision": "approve"})

    response = client_for(admin_user).post(f"/reviews/approvals/{approval.pk}/decide",
                                           {"decision": "reject", "reason": "duplicate"}, **HX)

    assert response.status_code == 409
    assert "Already approved by alice at " in response.text


def test_bob_and_charlie_cannot_see_alices_item(reviewer_legal, outsider, operator, client_for, pending):
    approval = pending()
    assert client_for(reviewer_legal).get(f"/reviews/approvals/{approval.pk}/").status_code == 404
    assert client_for(reviewer_legal).post(f"/reviews/approvals/{approval.pk}/decide",
                                           {"decision": "approve"}).status_code == 404
    assert client_for(outsider).get(f"/reviews/approvals/{approval.pk}/").status_code == 403
    assert client_for(operator).post(f"/reviews/approvals/{approval.pk}/decide",
                                     {"decision": "approve"}).status_code == 403
    assert Approval.objects.get(pk=approval.pk).status == "pending"


def test_the_task_page_links_to_the_item(reviewer_finance, client_for, pending):
    approval = pending()
    text = client_for(reviewer_finance).get(f"/tasks/{approval.task_id}/").text
    assert f'href="/reviews/approvals/{approval.pk}/"' in text
