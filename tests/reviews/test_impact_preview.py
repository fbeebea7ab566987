"""Admin impact preview: before a routing rule or the auto-approve policy changes, see how the
last 1,000 routed tasks would route under the new values compared with now."""
from __future__ import annotations

import pytest
from django.utils import timezone

from orchestrator.models import RoutingRule, Step
from reviews.impact import impact_of_rule
from reviews.models import AuditEvent, AutoApprovePolicy, Queue
from tests.conftest import save_changes


@pytest.fixture
def routed(make_task):
    """Tasks the route step handled, as it recorded them."""

    def make(amount: float, *, doc_type: str = "Invoice", confidence: float = 0.99, reasons=None):
        task = make_task(doc_type=doc_type, confidence=confidence, status="completed",
                         fields={"amount": amount, "counterparty": "Acme"})
        Step.objects.create(task=task, worker="route", status="succeeded", started_at=timezone.now(), output={
            "amount": str(amount), "document_amount": str(amount), "reasons": reasons or []})
        return task

    return make


def rule_form(rule: RoutingRule, **changes) -> dict:
    form = {"name": rule.name, "priority": rule.priority, "doc_type": rule.doc_type, "field": rule.field,
            "operator": rule.operator, "value": rule.value, "queue": rule.queue_id,
            "requires_approval": "on" if rule.requires_approval else "", "active": "on" if rule.active else ""}
    form.update(changes)
    return {k: v for k, v in form.items() if v != ""}


def test_lowering_the_finance_threshold_is_previewed_before_saving(routed, admin_user, client_for):
    for amount in (500, 6000, 7000, 8000, 20000):
        routed(amount)
    routed(100, doc_type="Report")
    rule = RoutingRule.objects.get(name="Invoice amount > 10,000")
    client = client_for(admin_user)
    url = f"/admin/orchestrator/routingrule/{rule.pk}/change/"

    preview = client.post(url, rule_form(rule, value="5000", _save="Save"))

    assert preview.status_code == 200
    text = preview.text
    assert "Of the last 6 routed tasks, 3 would now go to finance_director instead of standard_queue." in text
    assert 'name="_impact_confirmed"' in text and 'name="value" value="5000"' in text
    assert RoutingRule.objects.get(pk=rule.pk).value == "10000"  # nothing saved yet
    assert not AuditEvent.objects.exists()

    saved = client.post(url, rule_form(rule, value="5000", _save="Save", _impact_confirmed="1"))

    assert saved.status_code == 302
    assert RoutingRule.objects.get(pk=rule.pk).value == "5000"
    event = AuditEvent.objects.get()
    assert event.data["changes"] == {"value": ["10000", "5000"]}


def test_a_change_that_does_not_touch_routing_saves_directly(routed, admin_user, client_for):
    rule = RoutingRule.objects.get(name="Contracts")
    response = client_for(admin_user).post(f"/admin/orchestrator/routingrule/{rule.pk}/change/",
                                           rule_form(rule, name="Contracts (all)"))
    assert response.status_code == 302
    assert RoutingRule.objects.get(pk=rule.pk).name == "Contracts (all)"


def test_the_rules_list_cannot_change_priority_or_active_around_the_preview(routed, admin_user, client_for):
    """Switching a rule off or reordering rules reroutes as much as editing its condition: only the
    change form, with its preview, may do it, not the list."""
    routed(20000)
    rules = list(RoutingRule.objects.order_by("pk"))
    finance = next(rule for rule in rules if rule.name == "Invoice amount > 10,000")
    client = client_for(admin_user)

    listing = client.get("/admin/orchestrator/routingrule/").text
    assert 'name="form-0-priority"' not in listing and 'name="form-0-active"' not in listing

    # The list's own Save, posted as its inline editing would (finance switched off, moved last).
    form = {"form-TOTAL_FORMS": len(rules), "form-INITIAL_FORMS": len(rules), "_save": "Save"}
    for i, rule in enumerate(rules):
        form.update({f"form-{i}-id": rule.pk, f"form-{i}-priority": 999 if rule == finance else rule.priority})
        if rule.active and rule != finance:
            form[f"form-{i}-active"] = "on"
    client.post("/admin/orchestrator/routingrule/", form)

    finance.refresh_from_db()
    assert (finance.priority, finance.active) == (10, True)
    assert not AuditEvent.objects.exists()

    # The change form previews the same change before saving it.
    preview = client.post(f"/admin/orchestrator/routingrule/{finance.pk}/change/",
                          rule_form(finance, active="", _save="Save"))
    assert "Of the last 1 routed tasks, 1 would now go to standard_queue instead of finance_director." in preview.text


def test_an_invalid_change_shows_the_form_errors_not_a_preview(admin_user, client_for):
    rule = RoutingRule.objects.get(name="Contracts")
    response = client_for(admin_user).post(f"/admin/orchestrator/routingrule/{rule.pk}/change/",
                                           rule_form(rule, priority="not a number"))
    assert response.status_code == 200 and "errornote" in response.text
    assert "Impact" not in response.text


def test_new_and_switched_off_rules_are_previewed_too(routed):
    for amount in (500, 20000):
        routed(amount)
    legal = Queue.objects.get(name="legal_team")
    new_rule = RoutingRule(name="Big ones to legal", priority=5, doc_type="Invoice", field="amount",
                           operator="gt", value="15000", queue=legal)
    impact = impact_of_rule(new_rule)
    assert impact.moves == [{"from": "finance_director", "to": "legal_team", "count": 1,
                             "task_ids": impact.moves[0]["task_ids"]}]

    finance = RoutingRule.objects.get(name="Invoice amount > 10,000")
    finance.active = False
    assert impact_of_rule(finance).sentences() == [
        "Of the last 2 routed tasks, 1 would now go to standard_queue instead of finance_director."]


def test_policy_preview_counts_what_would_be_auto_approved(routed, admin_user, client_for):
    routed(500)                       # auto-approved now (<= 1,000)
    routed(1500)                      # above the ceiling now: a person looks
    routed(1800)
    routed(900, confidence=0.9)       # low confidence: a person looks
    routed(800, reasons=["Exact duplicate of task 1"])  # always a person
    policy = AutoApprovePolicy.objects.get()
    save_changes(RoutingRule.objects.filter(name="Everything else"), requires_approval=False)

    preview = client_for(admin_user).post(f"/admin/reviews/autoapprovepolicy/{policy.pk}/change/", {
        "enabled": "on", "min_confidence": "0.85", "max_amount": "2000.00"})

    assert preview.status_code == 200
    assert "Of the last 5 routed tasks, 3 would now be auto-approved instead of waiting for a person." in preview.text
    assert AutoApprovePolicy.objects.get().max_amount == 1000

    off = client_for(admin_user).post(f"/admin/reviews/autoapprovepolicy/{policy.pk}/change/", {
        "min_confidence": "0.95", "max_amount": "1000.00"})
    assert "1 would now wait for a person instead of being auto-approved." in off.text
