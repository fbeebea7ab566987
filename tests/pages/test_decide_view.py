"""Deciding an approval from the task page: approve (with corrections) or reject with a reason, once."""
from __future__ import annotations

from orchestrator.models import Task
from reviews.models import Approval

HX = {"HTTP_HX_REQUEST": "true"}


def pending(make_task, make_approval, queue: str = "finance_director") -> Approval:
    task = make_task(status="awaiting_approval", doc_type="Invoice", routed_to=queue,
                     fields={"invoice_number": "INV-9", "counterparty": "Northwind", "amount": 15400.0,
                             "line_items": []})
    return make_approval(task, queue)


def test_alice_approves_and_is_sent_back_to_the_task(reviewer_finance, client_for, make_task, make_approval):
    approval = pending(make_task, make_approval)
    response = client_for(reviewer_finance).post(f"/approvals/{approval.pk}/decide", {"decision": "approve"},
                                                 follow=True)
    assert response.redirect_chain == [(f"/tasks/{approval.task_id}/", 302)]
    assert f"Approved action for task {approval.task_id}." in response.text
    approval.refresh_from_db()
    assert approval.status == "approved" and approval.decided_by.username == "alice"
    assert approval.corrections == {}
    assert Task.objects.get().status == "queued"


def test_corrections_keep_the_original_and_parse_amounts(reviewer_finance, client_for, make_task, make_approval):
    approval = pending(make_task, make_approval)
    client_for(reviewer_finance).post(f"/approvals/{approval.pk}/decide", {
        "decision": "approve",
        "field__amount": "15,000.00",          # changed, typed with a thousands separator
        "field__counterparty": "Northwind",    # unchanged: not a correction
        "field__invoice_number": "INV-9b",
    })
    approval.refresh_from_db()
    assert approval.corrections == {"amount": {"from": 15400.0, "to": 15000.0},
                                    "invoice_number": {"from": "INV-9", "to": "INV-9b"}}
    task = Task.objects.get()
    assert task.fields["amount"] == 15000.0 and task.fields["counterparty"] == "Northwind"


def test_an_amount_that_is_not_a_number_is_refused(reviewer_finance, client_for, make_task, make_approval):
    approval = pending(make_task, make_approval)
    response = client_for(reviewer_finance).post(f"/approvals/{approval.pk}/decide",
                                                 {"decision": "approve", "field__amount": "lots"}, follow=True)
    assert 'Amount must be a number, not &quot;lots&quot;' in response.text
    approval.refresh_from_db()
    assert approval.status == "pending"


def test_reject_without_a_reason_is_refused(reviewer_finance, client_for, make_task, make_approval):
    approval = pending(make_task, make_approval)
    response = client_for(reviewer_finance).post(f"/approvals/{approval.pk}/decide",
                                                 {"decision": "reject", "reason": ""}, follow=True)
    assert "A rejection needs a reason" in response.text
    approval.refresh_from_db()
    assert approval.status == "pending"
    assert Task.objects.get().status == "awaiting_approval"


def test_reject_with_a_reason_ends_the_task(reviewer_finance, client_for, make_task, make_approval):
    approval = pending(make_task, make_approval)
    response = client_for(reviewer_finance).post(f"/approvals/{approval.pk}/decide", {
        "decision": "reject", "reason": "wrong-amount", "comment": "PO says 14,000"}, follow=True)
    assert f"Rejected task {approval.task_id}: Amount is wrong." in response.text
    approval.refresh_from_db()
    assert approval.status == "rejected" and approval.rejection_reason.code == "wrong-amount"
    assert approval.comment == "PO says 14,000"
    assert Task.objects.get().status == "rejected"
    assert "PO says 14,000" in response.text


def test_a_second_decision_says_who_decided_first(reviewer_finance, admin_user, client_for, make_task,
                                                  make_approval):
    approval = pending(make_task, make_approval)
    client_for(reviewer_finance).post(f"/approvals/{approval.pk}/decide", {"decision": "approve"})
    response = client_for(admin_user).post(f"/approvals/{approval.pk}/decide",
                                           {"decision": "reject", "reason": "duplicate"}, follow=True)
    assert response.status_code == 200
    assert "Already approved by alice at " in response.text
    approval.refresh_from_db()
    assert approval.status == "approved" and approval.decided_by.username == "alice"


def test_a_second_decision_with_htmx_is_a_409_partial(reviewer_finance, client_for, make_task, make_approval):
    approval = pending(make_task, make_approval)
    client = client_for(reviewer_finance)
    first = client.post(f"/approvals/{approval.pk}/decide", {"decision": "approve"}, **HX)
    assert first.status_code == 200
    assert first.text.lstrip().startswith('<div id="task-live"')
    assert "approval-decided" in first["HX-Trigger"]
    second = client.post(f"/approvals/{approval.pk}/decide", {"decision": "approve"}, **HX)
    assert second.status_code == 409
    assert "<html" not in second.text
    assert "Already approved by alice at " in second.text


def test_htmx_reject_without_reason_is_a_400_partial(reviewer_finance, client_for, make_task, make_approval):
    approval = pending(make_task, make_approval)
    response = client_for(reviewer_finance).post(f"/approvals/{approval.pk}/decide", {"decision": "reject"}, **HX)
    assert response.status_code == 400
    assert "A rejection needs a reason" in response.text and "<html" not in response.text


def test_a_reviewer_of_another_queue_gets_404(reviewer_legal, client_for, make_task, make_approval):
    approval = pending(make_task, make_approval)
    response = client_for(reviewer_legal).post(f"/approvals/{approval.pk}/decide", {"decision": "approve"})
    assert response.status_code == 404
    approval.refresh_from_db()
    assert approval.status == "pending"


def test_operators_and_charlie_may_not_decide(operator, outsider, client, client_for, make_task, make_approval):
    approval = pending(make_task, make_approval)
    url = f"/approvals/{approval.pk}/decide"
    assert client_for(operator).post(url, {"decision": "approve"}).status_code == 403
    assert client_for(outsider).post(url, {"decision": "approve"}).status_code == 403
    assert client.post(url, {"decision": "approve"})["Location"].startswith("/login/")
    approval.refresh_from_db()
    assert approval.status == "pending"


def test_an_admin_may_decide_any_queue(admin_user, client_for, make_task, make_approval):
    approval = pending(make_task, make_approval, queue="legal_team")
    client_for(admin_user).post(f"/approvals/{approval.pk}/decide", {"decision": "approve"})
    approval.refresh_from_db()
    assert approval.status == "approved" and approval.decided_by.username == "adam"


def test_deciding_is_post_only(reviewer_finance, client_for, make_task, make_approval):
    approval = pending(make_task, make_approval)
    assert client_for(reviewer_finance).get(f"/approvals/{approval.pk}/decide").status_code == 405


def test_a_refused_decision_keeps_what_was_typed(reviewer_finance, client_for, make_task, make_approval):
    approval = pending(make_task, make_approval)
    response = client_for(reviewer_finance).post(f"/approvals/{approval.pk}/decide", {
        "decision": "approve", "field__amount": "-100", "field__invoice_number": "INV-9c",
        "comment": "Credit note applied",
    })
    assert response.status_code == 400
    assert "Amount must be 0 or more" in response.text
    assert 'name="field__amount" value="-100"' in response.text
    assert 'name="field__invoice_number" value="INV-9c"' in response.text
    assert f'id="approve-comment-{approval.pk}" rows="2">Credit note applied</textarea>' in response.text
    approval.refresh_from_db()
    assert approval.status == "pending"



def test_the_task_page_asks_for_a_comment_with_an_approval(reviewer_finance, client_for, make_task, make_approval):
    approval = pending(make_task, make_approval)
    page = client_for(reviewer_finance).get(f"/tasks/{approval.task_id}/").text
    approve_form = page.split('name="decision" value="approve"')[1].split("</form>")[0]
    assert f'<textarea name="comment" id="approve-comment-{approval.pk}"' in approve_form


def test_a_form_that_expired_says_so_and_decides_nothing(reviewer_finance, make_task, make_approval):
    """Alice's page was opened before she signed in again in another tab: its CSRF token is stale.
    She is told what to do, in Steward's page, and nothing is decided."""
    from django.test import Client

    approval = pending(make_task, make_approval)
    client = Client(enforce_csrf_checks=True)
    client.force_login(reviewer_finance)
    response = client.post(f"/approvals/{approval.pk}/decide", {"decision": "approve",
                                                                 "csrfmiddlewaretoken": "stale" * 8})

    assert response.status_code == 403
    assert "This form has expired" in response.text and "reload the page and try again" in response.text
    assert "alice" in response.text  # Steward's page, signed in, with its menu
    approval.refresh_from_db()
    assert approval.status == "pending"
