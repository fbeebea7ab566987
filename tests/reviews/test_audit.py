"""The audit trail: decisions, corrections and policy changes say who did what, when; the task
page shows its part."""
from __future__ import annotations

from decimal import Decimal

from reviews.models import AuditEvent, AutoApprovePolicy, RejectionReason


def test_decisions_are_on_the_task_page(pending, reviewer_finance, client_for):
    approval = pending()
    client = client_for(reviewer_finance)
    client.post(f"/reviews/approvals/{approval.pk}/decide",
                {"decision": "approve", "field__invoice_number": "INV-9b", "comment": "Number per PO"})

    [event] = AuditEvent.objects.all()
    assert event.action == "approval.approved" and event.actor == reviewer_finance
    assert event.data["corrections"] == {"invoice_number": {"from": "INV-9", "to": "INV-9b"}}
    assert event.data["via"] == "inbox" and event.data["comment"] == "Number per PO"

    page = client.get(f"/tasks/{approval.task_id}/").text
    assert "Audit trail" in page
    assert "<strong>alice</strong> Approved with corrections (invoice_number INV-9 → INV-9b)" in page
    assert "(via inbox)" in page and "Number per PO" in page


def test_a_decision_on_the_task_page_is_audited_too(pending, reviewer_finance, client_for):
    approval = pending()
    client_for(reviewer_finance).post(f"/approvals/{approval.pk}/decide",
                                      {"decision": "reject", "reason": "duplicate"})
    event = AuditEvent.objects.get()
    assert event.action == "approval.rejected" and event.data["reason"] == "duplicate"


def test_admin_changes_to_the_policy_record_before_and_after(admin_user, client_for):
    policy = AutoApprovePolicy.objects.get()
    client = client_for(admin_user)

    response = client.post(f"/admin/reviews/autoapprovepolicy/{policy.pk}/change/", {
        "enabled": "on", "min_confidence": "0.9", "max_amount": "2500.00", "_impact_confirmed": "1"})

    assert response.status_code == 302
    event = AuditEvent.objects.get(object_type="reviews.autoapprovepolicy")
    assert event.action == "config.changed" and event.actor_name == "adam"
    assert event.data["changes"] == {"min_confidence": [0.95, 0.9], "max_amount": ["1000.00", "2500.00"]}
    assert "min_confidence 0.95 → 0.9" in event.summary
    assert AutoApprovePolicy.objects.get().max_amount == Decimal("2500.00")


def test_admin_adds_and_deletes_are_recorded(admin_user, client_for):
    client = client_for(admin_user)
    client.post("/admin/reviews/rejectionreason/add/", {"code": "late", "label": "Too late", "active": "on"})
    reason = RejectionReason.objects.get(code="late")
    client.post(f"/admin/reviews/rejectionreason/{reason.pk}/delete/", {"post": "yes"})

    actions = list(AuditEvent.objects.order_by("id").values_list("action", "summary"))
    assert actions == [("config.created", 'created rejection reason "Too late"'),
                       ("config.deleted", 'deleted rejection reason "Too late"')]


def test_queue_reviewer_changes_name_who_was_added(admin_user, reviewer_legal, client_for):
    from reviews.models import Queue

    queue = Queue.objects.get(name="finance_director")
    client_for(admin_user).post(f"/admin/reviews/queue/{queue.pk}/change/", {
        "name": queue.name, "description": queue.description, "reviewers": [reviewer_legal.pk],
        "sla_minutes": queue.sla_minutes, "escalation_email": "", "expiry_minutes": "",
        "notify_reviewers": "on", "teams_webhook_url": "", "slack_webhook_url": "", "action_kind": "webhook",
        "webhook_url": "", "action_email": ""})
    event = AuditEvent.objects.get()
    assert event.data["changes"] == {"reviewers": [[], ["bob"]]}
    assert "reviewers +bob" in event.summary


def test_audit_events_are_read_only_in_admin(admin_user, client_for, pending, reviewer_finance):
    approval = pending()
    client_for(reviewer_finance).post(f"/reviews/approvals/{approval.pk}/decide", {"decision": "approve"})
    client = client_for(admin_user)
    event = AuditEvent.objects.get()
    assert client.get("/admin/reviews/auditevent/").status_code == 200
    assert client.get(f"/admin/reviews/auditevent/{event.pk}/change/").status_code == 200
    assert client.post(f"/admin/reviews/auditevent/{event.pk}/delete/", {"post": "yes"}).status_code == 403
    assert client.get("/admin/reviews/approval/").status_code == 200
    assert client.post(f"/admin/reviews/approval/{approval.pk}/change/", {"status": "rejected"}).status_code == 403


def test_the_history_button_shows_each_change_with_its_values_before_and_after(admin_user, client_for):
    """Django's own history said only "Changed Value." for the finance threshold; the values
    were in Audit events, which the History button never led to."""
    from orchestrator.models import Budget, RoutingRule

    rule = RoutingRule.objects.get(name="Invoice amount > 10,000")
    budget = Budget.objects.get(name="default")
    client = client_for(admin_user)
    client.post(f"/admin/orchestrator/routingrule/{rule.pk}/change/", {
        "name": rule.name, "priority": rule.priority, "doc_type": "Invoice", "field": "amount", "operator": "gt",
        "value": "5000", "queue": rule.queue_id, "requires_approval": "on", "active": "on",
        "_impact_confirmed": "1"})
    client.post(f"/admin/orchestrator/budget/{budget.pk}/change/", {
        "name": "default", "max_llm_calls": 30, "max_tool_calls": 40, "max_tokens": 200000, "max_cost_usd": "2.50",
        "active": "on"})

    rule_history = client.get(f"/admin/orchestrator/routingrule/{rule.pk}/history/").text
    budget_history = client.get(f"/admin/orchestrator/budget/{budget.pk}/history/").text

    assert "value" in rule_history and "10000" in rule_history and "5000" in rule_history
    assert "adam" in rule_history
    assert "max_cost_usd" in budget_history and "1.0000" in budget_history and "2.50" in budget_history
    assert "5000" not in budget_history  # each object's own history only


def test_the_history_of_a_queue_names_its_reviewers_in_words(admin_user, client_for, reviewer_finance,
                                                               reviewer_legal):
    """A queue's reviewers read as a Python list (['alice', 'bob']) on its History page."""
    from reviews.models import Queue

    queue = Queue.objects.get(name="legal_team")
    client = client_for(admin_user)
    client.post(f"/admin/reviews/queue/{queue.pk}/change/", {
        "name": queue.name, "description": queue.description, "sla_minutes": queue.sla_minutes,
        "action_kind": queue.action_kind, "notify_reviewers": "on",
        "reviewers": [reviewer_finance.pk, reviewer_legal.pk]})

    history = client.get(f"/admin/reviews/queue/{queue.pk}/history/").text

    assert "<td>alice, bob</td>" in history or "<td>bob, alice</td>" in history, history[-3000:]
    assert "[&#x27;" not in history and "['" not in history
