"""Deleting a routing rule or the auto-approve policy reroutes as much as changing it: the admin
sees the same impact before saying yes, and there is no bulk delete that would skip it."""
from __future__ import annotations

import pytest
from django.utils import timezone

from orchestrator.models import RoutingRule, Step
from reviews.models import AuditEvent, AutoApprovePolicy

pytestmark = pytest.mark.django_db

RULES = "/admin/orchestrator/routingrule/"
POLICIES = "/admin/reviews/autoapprovepolicy/"


@pytest.fixture
def routed(make_task):
    def make(amount: float, *, confidence: float = 0.99) -> None:
        task = make_task(doc_type="Invoice", confidence=confidence, status="completed",
                         fields={"amount": amount, "counterparty": "Acme"})
        Step.objects.create(task=task, worker="route", status="succeeded", started_at=timezone.now(),
                            output={"amount": str(amount), "document_amount": str(amount), "reasons": []})

    return make


def test_deleting_a_rule_from_its_page_shows_what_would_be_rerouted(routed, admin_user, client_for):
    for amount in (500, 20000, 30000):
        routed(amount)
    rule = RoutingRule.objects.get(name="Invoice amount > 10,000")
    client = client_for(admin_user)

    confirm = client.get(f"{RULES}{rule.pk}/delete/")

    assert confirm.status_code == 200
    assert "Of the last 3 routed tasks, 2 would now go to standard_queue instead of finance_director." in confirm.text
    assert "Yes, I’m sure" in confirm.text
    assert RoutingRule.objects.filter(pk=rule.pk).exists()  # nothing deleted by looking

    client.post(f"{RULES}{rule.pk}/delete/", {"post": "yes"})
    assert not RoutingRule.objects.filter(pk=rule.pk).exists()
    assert AuditEvent.objects.get().action == AuditEvent.Action.DELETED


def test_routing_rules_have_no_bulk_delete_that_skips_the_preview(routed, admin_user, client_for):
    routed(20000)
    rule = RoutingRule.objects.get(name="Invoice amount > 10,000")
    client = client_for(admin_user)

    listing = client.get(RULES).text
    # The action posted as the list's form would post it, confirmation included.
    client.post(RULES, {"action": "delete_selected", "_selected_action": [rule.pk], "post": "yes"})

    assert "Delete selected" not in listing
    assert RoutingRule.objects.filter(pk=rule.pk).exists()
    assert not AuditEvent.objects.exists()


def test_deleting_the_auto_approve_policy_shows_what_would_wait_for_a_person(routed, admin_user, client_for):
    from tests.conftest import save_changes

    save_changes(RoutingRule.objects.filter(name="Everything else"), requires_approval=False)
    routed(500)  # auto-approved now; with no policy, auto-approval is off
    policy = AutoApprovePolicy.objects.get()
    client = client_for(admin_user)

    confirm = client.get(f"{POLICIES}{policy.pk}/delete/")
    listing = client.get(POLICIES).text
    client.post(POLICIES, {"action": "delete_selected", "_selected_action": [policy.pk], "post": "yes"})

    assert "Of the last 1 routed tasks, 1 would now wait for a person instead of being auto-approved." in confirm.text
    assert "Delete selected" not in listing
    assert AutoApprovePolicy.objects.filter(pk=policy.pk).exists()
