"""A routing rule's name is free text ("Invoice amount > 10,000") that an admin does not have to
change with its threshold: wherever a rule is named (the admin's list, a task's reasons for
review, the inbox, the task and review pages) its actual condition is shown next to it, as it was
when the rule routed that task. The admin is warned, without being stopped, when a rule's name
gives another number than its threshold."""
from __future__ import annotations

from django.contrib.messages import get_messages

from orchestrator.models import RoutingRule
from reviews.models import Approval
from tests.conftest import save_changes
from tests.reviews.test_impact_preview import rule_form

RULES = "/admin/orchestrator/routingrule/"
INVOICE_7000 = "INVOICE\nInvoice Number: INV-7\nFrom: Example Co\nDate: 2024-11-05\nTotal: $7,000.00\n"


def finance_rule() -> RoutingRule:
    return RoutingRule.objects.get(name="Invoice amount > 10,000")


def test_the_rules_list_shows_each_condition_next_to_its_name(admin_user, client_for):
    save_changes(RoutingRule.objects.filter(pk=finance_rule().pk), value="5000")

    page = client_for(admin_user).get(RULES).text

    assert "Invoice amount &gt; 10,000" in page
    assert "Invoice with amount &gt; 5,000 (the name says 10,000)" in page
    assert "every Contract" in page and "every document" in page


def test_saving_a_threshold_the_name_contradicts_is_allowed_with_a_warning(admin_user, client_for):
    rule = finance_rule()
    client = client_for(admin_user)

    saved = client.post(f"{RULES}{rule.pk}/change/", rule_form(rule, value="5000", _save="Save",
                                                               _impact_confirmed="1"))

    assert saved.status_code == 302
    assert RoutingRule.objects.get(pk=rule.pk).value == "5000"
    said = [str(m) for m in get_messages(saved.wsgi_request)]
    assert any('The name "Invoice amount > 10,000" says 10,000, but the rule matches Invoice with amount > 5,000' in m
               for m in said), said
    # Opened again, the name's help still says so.
    form = client.get(f"{RULES}{rule.pk}/change/").text
    assert "The name says 10,000, but the rule matches Invoice with amount &gt; 5,000" in form
    # A name that agrees says nothing.
    client.post(f"{RULES}{rule.pk}/change/", rule_form(rule, name="Invoice amount > 5,000", value="5000",
                                                       _save="Save", _impact_confirmed="1"))
    assert "The name says" not in client.get(f"{RULES}{rule.pk}/change/").text


def test_a_routed_task_shows_the_condition_it_was_routed_by(run_pipeline, make_task, operator, reviewer_finance,
                                                            client_for):
    """The threshold is lowered to 5,000 with the name left as it was; a 7,000 invoice goes to
    finance. Raised again to 20,000 afterwards, the task still says why it went there."""
    rule = finance_rule()
    save_changes(RoutingRule.objects.filter(pk=rule.pk), value="5000")
    task = run_pipeline(make_task(content=INVOICE_7000))
    assert task.routed_to == "finance_director"
    save_changes(RoutingRule.objects.filter(pk=rule.pk), value="20000")

    said = "Rule &quot;Invoice amount &gt; 10,000&quot; (Invoice with amount &gt; 5,000) requires approval"
    approval = Approval.objects.get(task=task)
    page = client_for(operator).get(f"/tasks/{task.pk}/").text
    assert said in page  # the route reason and the approval's reasons
    assert "Invoice amount &gt; 10,000: Invoice with amount &gt; 5,000" in page
    assert "as it was when it routed this task" in page
    assert "amount &gt; 20,000" not in page
    alice = client_for(reviewer_finance)
    assert said in alice.get("/reviews/").text
    item = alice.get(f"/reviews/approvals/{approval.pk}/").text
    assert said in item and "Invoice amount &gt; 10,000: Invoice with amount &gt; 5,000" in item


def test_a_task_routed_before_conditions_were_recorded_shows_the_current_one_as_current(
        make_task, make_approval, operator, client_for):
    task = make_task(doc_type="Invoice", status="awaiting_approval", routed_to="finance_director",
                     route_reason='Rule "Invoice amount > 10,000" requires approval', fields={"amount": 15400.0})
    make_approval(task, "finance_director", action_data={"rule": "Invoice amount > 10,000", "amount": "15400"},
                  reasons=['Rule "Invoice amount > 10,000" requires approval'])
    save_changes(RoutingRule.objects.filter(pk=finance_rule().pk), value="5000")

    page = client_for(operator).get(f"/tasks/{task.pk}/").text

    assert "Invoice amount &gt; 10,000: Invoice with amount &gt; 5,000" in page
    assert "its condition now: the one it routed by was not recorded" in page
