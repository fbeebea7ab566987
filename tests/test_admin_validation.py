"""Django admin refuses tuning values the pipeline cannot use: the admin sees why, next to the
field, and nothing is previewed or saved."""
from __future__ import annotations

import pytest
from django.utils.html import escape

from orchestrator.models import RoutingRule
from reviews.models import AuditEvent, AutoApprovePolicy, Queue

pytestmark = pytest.mark.django_db

RULES = "/admin/orchestrator/routingrule/"


def rule_form(**values) -> dict:
    form = {"name": "Test rule", "priority": 50, "doc_type": "Invoice", "field": "amount", "operator": "gt",
            "value": "5000", "queue": Queue.objects.get(name="finance_director").pk, "requires_approval": "on",
            "active": "on"}
    form.update(values)
    return {k: v for k, v in form.items() if v != ""}


def assert_refused(response, field: str, message: str) -> None:
    """The form comes back with `message` under `field`, and no impact preview to save from."""
    assert response.status_code == 200
    assert message in " ".join(response.context["adminform"].form.errors.get(field, []))
    assert escape(message) in response.text and "errornote" in response.text
    assert "Save this change" not in response.text


def test_a_threshold_that_is_not_a_number_is_refused_not_previewed(admin_user, client_for):
    """The reported case: "Invoice amount > abc" never matches, so the preview showed every large
    invoice moving to standard_queue and offered to save it."""
    rule = RoutingRule.objects.get(name="Invoice amount > 10,000")
    client = client_for(admin_user)
    change = f"{RULES}{rule.pk}/change/"
    form = rule_form(name=rule.name, priority=rule.priority, value="abc", _save="Save")
    message = 'amount is compared as a number: enter one such as 10000 (no currency sign or thousands ' \
              'separators), not "abc".'

    assert_refused(client.post(change, form), "value", message)
    # Nor can the preview's "Save this change" button be replayed with it.
    assert_refused(client.post(change, {**form, "_impact_confirmed": "1"}), "value", message)
    assert_refused(client.post(f"{RULES}add/", {**form, "_impact_confirmed": "1"}), "value", message)

    assert RoutingRule.objects.get(pk=rule.pk).value == "10000"
    assert RoutingRule.objects.count() == 3 and not AuditEvent.objects.exists()


@pytest.mark.parametrize("values, field, message", [
    ({"value": "10,000"}, "value", 'amount is compared as a number: enter one such as 10000'),
    ({"value": "NaN"}, "value", 'amount is compared as a number: enter one such as 10000'),
    ({"value": ""}, "value", "Enter the value to compare amount with."),
    ({"operator": ""}, "operator", "Choose how to compare amount with the value."),
    ({"field": "total"}, "field", 'Rules cannot read "total" on Invoice documents. '
                                  "Fields they can read: amount, counterparty, currency, date, invoice_number."),
    ({"doc_type": "Report"}, "field", 'Rules cannot read "amount" on Report documents.'),
    ({"field": "line_items", "operator": "eq"}, "field", 'Rules cannot read "line_items"'),
    ({"field": "counterparty", "value": "Acme"}, "operator",
     'counterparty is text: it can only be compared with "=" (ignoring case), not ordered.'),
    ({"field": ""}, "field", "Choose the field this condition compares, or clear the operator and the value"),
])
def test_a_rule_the_route_step_cannot_apply_is_refused(admin_user, client_for, values, field, message):
    response = client_for(admin_user).post(f"{RULES}add/", rule_form(**values))

    assert_refused(response, field, message)
    assert not RoutingRule.objects.filter(name="Test rule").exists()


@pytest.mark.parametrize("values", [
    {"field": "counterparty", "operator": "eq", "value": "Acme Corp"},
    {"doc_type": "", "value": "2500.50"},
    {"field": "", "operator": "", "value": ""},
])
def test_a_rule_the_route_step_can_apply_goes_on_to_the_preview(admin_user, client_for, values):
    response = client_for(admin_user).post(f"{RULES}add/", rule_form(**values))

    assert response.status_code == 200 and "Save this change" in response.text


@pytest.mark.parametrize("values, field, message", [
    ({"min_confidence": "5"}, "min_confidence",
     "Confidence is between 0 and 1, as the classifier reports it: 0.95 means 95% sure."),
    ({"min_confidence": "-0.1"}, "min_confidence", "Confidence is between 0 and 1"),
    ({"max_amount": "-100"}, "max_amount", "The amount ceiling cannot be negative: enter 0 or more."),
])
def test_an_auto_approve_policy_out_of_range_is_refused(admin_user, client_for, values, field, message):
    policy = AutoApprovePolicy.objects.get()
    client = client_for(admin_user)
    url = f"/admin/reviews/autoapprovepolicy/{policy.pk}/change/"
    form = {"enabled": "on", "min_confidence": "0.9", "max_amount": "2000.00", **values}

    assert_refused(client.post(url, form), field, message)
    assert_refused(client.post(url, {**form, "_impact_confirmed": "1"}), field, message)

    policy.refresh_from_db()
    assert (policy.min_confidence, policy.max_amount) == (0.95, 1000) and not AuditEvent.objects.exists()


def test_the_auto_approve_policy_bounds_themselves_are_accepted(admin_user, client_for):
    policy = AutoApprovePolicy.objects.get()
    response = client_for(admin_user).post(f"/admin/reviews/autoapprovepolicy/{policy.pk}/change/", {
        "enabled": "on", "min_confidence": "1", "max_amount": "0", "_impact_confirmed": "1"})

    assert response.status_code == 302
    policy.refresh_from_db()
    assert (policy.min_confidence, policy.max_amount) == (1, 0)


# --- Worker configs ---------------------------------------------------------------------------


def worker_form(name: str = "extract", **values) -> dict:
    from orchestrator.models import WorkerConfig

    row = WorkerConfig.objects.get(worker=name)
    form = {"worker": row.worker, "model": row.model, "prompt": row.prompt, "version": row.version,
            "max_retries": row.max_retries, "timeout_s": row.timeout_s, "max_reasks": row.max_reasks,
            "max_tool_rounds": row.max_tool_rounds, **values}
    return {k: v for k, v in form.items() if v != ""}


def worker_url(worker: str = "extract") -> str:
    from orchestrator.models import WorkerConfig

    return f"/admin/orchestrator/workerconfig/{WorkerConfig.objects.get(worker=worker).pk}/change/"


def test_a_worker_model_without_a_price_is_refused(admin_user, client_for):
    """The reported case: extract moved to gpt-4.1, which has no price: every call was counted as
    $0, so the charts showed it free and the cost budget could never stop a task."""
    from datetime import date, timedelta

    from orchestrator.models import ModelPrice, WorkerConfig

    client = client_for(admin_user)
    message = ('No price for "gpt-4.1" is in force today: add it under Model prices first (on Azure OpenAI, '
               'under the deployment name). Without one its calls count as $0 and the cost budget never stops a task.')

    assert_refused(client.post(worker_url(), worker_form(model="gpt-4.1")), "model", message)
    # A price that starts next month does not price today's calls either.
    ModelPrice.objects.create(model="gpt-4.1", input_per_1m=2, cached_input_per_1m=0.5, output_per_1m=8,
                              effective_from=date.today() + timedelta(days=30))
    assert_refused(client.post(worker_url(), worker_form(model="gpt-4.1")), "model", message)
    assert WorkerConfig.objects.get(worker="extract").model == "gpt-4o-mini"

    ModelPrice.objects.create(model="gpt-4.1", input_per_1m=2, cached_input_per_1m=0.5, output_per_1m=8,
                              effective_from=date.today())
    assert client.post(worker_url(), worker_form(model="gpt-4.1")).status_code == 302
    assert WorkerConfig.objects.get(worker="extract").model == "gpt-4.1"


def test_a_changed_prompt_needs_a_new_version(admin_user, client_for):
    """Steps record the prompt version they ran with: two prompts under one version cannot be told apart."""
    from orchestrator.models import WorkerConfig

    client = client_for(admin_user)
    prompt = WorkerConfig.objects.get(worker="extract").prompt + "\nGive the currency as an ISO code."

    assert_refused(client.post(worker_url(), worker_form(prompt=prompt)), "version",
                   'You changed the prompt: give it a new version (it is "v1"), so each step says which prompt it ran with.')
    assert client.post(worker_url(), worker_form(prompt=prompt, version="v2")).status_code == 302
    assert WorkerConfig.objects.get(worker="extract").version == "v2"


@pytest.mark.parametrize("values, field, message", [
    ({"timeout_s": "0"}, "timeout_s", "The timeout is in seconds, from 1 to 200"),
    ({"timeout_s": "600"}, "timeout_s", "The timeout is in seconds, from 1 to 200"),
    ({"prompt": "Extract the fields as JSON.\n{schema}", "version": "v2"}, "prompt",
     "The extract prompt must keep {doc_type} and {schema}"),
    ({"worker": "extractor"}, "worker", 'There is no worker "extractor": the workers that call a model are '
                                        "classify, extract, verify."),
])
def test_a_worker_config_the_workers_cannot_run_with_is_refused(admin_user, client_for, values, field, message):
    from orchestrator.models import WorkerConfig

    assert_refused(client_for(admin_user).post(worker_url(), worker_form(**values)), field, message)
    row = WorkerConfig.objects.get(worker="extract")
    assert (row.timeout_s, row.version) == (30, "v1") and "{doc_type}" in row.prompt


def test_verify_needs_at_least_one_tool_round(admin_user, client_for):
    """With 0 rounds, verify's first tool call is taken for a loop: every task is dead-lettered."""
    assert_refused(client_for(admin_user).post(worker_url("verify"), worker_form("verify", max_tool_rounds="0")),
                   "max_tool_rounds", "Verify needs at least 1 round with tool calls")


def test_worker_config_fields_say_their_units(admin_user, client_for):
    from orchestrator.models import WorkerConfig

    page = client_for(admin_user).get(worker_url()).text

    assert WorkerConfig._meta.get_field("timeout_s").verbose_name == "timeout (seconds)"
    assert "Seconds one model call may take" in page and "Retries of transient failures" in page


# --- Budgets ----------------------------------------------------------------------------------


def budget_form(**values) -> dict:
    form = {"name": "default", "max_llm_calls": 30, "max_tool_calls": 40, "max_tokens": 200000,
            "max_cost_usd": "1.00", "active": "on", **values}
    return {k: v for k, v in form.items() if v != ""}


@pytest.mark.parametrize("values, field, message", [
    ({"max_llm_calls": "0"}, "max_llm_calls", "At least 1: a ceiling of 0 stops every task before its first "
                                              "model call and dead-letters it as a suspected loop."),
    ({"max_tool_calls": "0"}, "max_tool_calls", "At least 1: a ceiling of 0 stops every task"),
    ({"max_tokens": "0"}, "max_tokens", "At least 1: a ceiling of 0 stops every task"),
    ({"max_cost_usd": "0"}, "max_cost_usd", "More than $0: a ceiling of 0 stops every task"),
    ({"max_cost_usd": "-1"}, "max_cost_usd", "More than $0: a ceiling of 0 stops every task"),
    ({"active": ""}, "active", "This is the only active budget: switched off, tasks would run with no ceiling at "
                               "all and a looping agent would never be stopped. Make another budget active first."),
])
def test_a_budget_that_stops_every_task_or_none_is_refused(admin_user, client_for, values, field, message):
    from orchestrator.models import Budget

    budget = Budget.objects.get(name="default")
    url = f"/admin/orchestrator/budget/{budget.pk}/change/"

    assert_refused(client_for(admin_user).post(url, budget_form(**values)), field, message)
    budget.refresh_from_db()
    assert (budget.max_llm_calls, budget.max_cost_usd, budget.active) == (30, 1, True)


def test_the_budget_page_says_what_each_ceiling_counts_and_which_budget_applies(admin_user, client_for):
    from orchestrator.models import Budget

    client = client_for(admin_user)
    page = client.get(f"/admin/orchestrator/budget/{Budget.objects.get(name='default').pk}/change/").text

    assert "Per task, over all its steps and retries" in page
    assert "input and output tokens together" in page and "US dollars" in page
    assert "Only one budget applies: the active one created first." in page
    # A second budget is allowed, and the first one can then be switched off.
    assert client.post("/admin/orchestrator/budget/add/", budget_form(name="bigger", max_cost_usd="2.50")).status_code == 302
    default = Budget.objects.get(name="default")
    assert client.post(f"/admin/orchestrator/budget/{default.pk}/change/", budget_form(active="")).status_code == 302


# --- The auto-approve policy: one ---------------------------------------------------------------


def test_a_second_auto_approve_policy_cannot_be_added(admin_user, client_for):
    """Only the first policy is read (AutoApprovePolicy.current): a second one was saved and then
    silently ignored, whatever the admin set in it."""
    client = client_for(admin_user)

    assert client.get("/admin/reviews/autoapprovepolicy/add/").status_code == 403
    assert "/admin/reviews/autoapprovepolicy/add/" not in client.get("/admin/reviews/autoapprovepolicy/").text
    assert AutoApprovePolicy.objects.count() == 1

    # With none left (deleted), one can be added again.
    AutoApprovePolicy.objects.all().delete()
    assert client.get("/admin/reviews/autoapprovepolicy/add/").status_code == 200


# --- Model prices -----------------------------------------------------------------------------


def price_form(**values) -> dict:
    form = {"model": "gpt-test", "input_per_1m": "0.40", "cached_input_per_1m": "0.10", "output_per_1m": "1.60",
            "effective_from": "2026-12-01", **values}
    return {k: v for k, v in form.items() if v != ""}


@pytest.mark.parametrize("field", ["input_per_1m", "cached_input_per_1m", "output_per_1m"])
def test_a_negative_price_is_refused(admin_user, client_for, field):
    """A negative price made every call of that model lower the task's cost, so the cost budget
    never stopped it."""
    from orchestrator.models import ModelPrice

    response = client_for(admin_user).post("/admin/orchestrator/modelprice/add/", price_form(**{field: "-0.5"}))

    assert response.status_code == 200
    assert "A price cannot be negative" in " ".join(response.context["adminform"].form.errors.get(field, []))
    assert not ModelPrice.objects.filter(model="gpt-test").exists()


def test_the_price_page_says_its_unit(admin_user, client_for):
    page = client_for(admin_user).get("/admin/orchestrator/modelprice/add/").text

    assert "US dollars per 1M input tokens" in page and "US dollars per 1M output tokens" in page
    assert "From this day on" in page


# --- Queues -----------------------------------------------------------------------------------


def queue_form(**values) -> dict:
    form = {"name": "payables", "description": "Supplier payments", "sla_minutes": "60", "expiry_minutes": "",
            "action_kind": "webhook", "notify_reviewers": "on", **values}
    return {k: v for k, v in form.items() if v != ""}


@pytest.mark.parametrize("values, field, message", [
    ({"sla_minutes": "0"}, "sla_minutes", "At least 1 minute: with 0, every approval is escalated as it arrives."),
    ({"expiry_minutes": "60"}, "expiry_minutes",
     "Longer than the SLA (60 minutes): approvals would expire before anyone is told they are late."),
    ({"expiry_minutes": "30"}, "expiry_minutes", "Longer than the SLA (60 minutes)"),
    ({"expiry_minutes": "0"}, "expiry_minutes", "Longer than the SLA (60 minutes)"),
])
def test_a_queue_whose_deadlines_cannot_work_is_refused(admin_user, client_for, values, field, message):
    response = client_for(admin_user).post("/admin/reviews/queue/add/", queue_form(**values))

    assert response.status_code == 200
    assert message in " ".join(response.context["adminform"].form.errors.get(field, []))
    assert not Queue.objects.filter(name="payables").exists()


def test_a_queue_with_sound_deadlines_is_saved(admin_user, client_for):
    response = client_for(admin_user).post("/admin/reviews/queue/add/", queue_form(expiry_minutes="61"))

    assert response.status_code == 302
    assert Queue.objects.get(name="payables").expiry_minutes == 61


def test_the_only_active_budget_cannot_be_deleted(admin_user, client_for):
    """Switching it off is refused (no ceiling at all); deleting it did the same, from its page or
    the list."""
    from orchestrator.models import Budget

    budget = Budget.objects.get(name="default")
    client = client_for(admin_user)

    assert client.get(f"/admin/orchestrator/budget/{budget.pk}/delete/").status_code == 403
    client.post("/admin/orchestrator/budget/", {"action": "delete_selected", "_selected_action": [budget.pk],
                                                "post": "yes"})
    assert Budget.objects.filter(pk=budget.pk).exists()
    # Another active budget first, and then it can go.
    assert client.post("/admin/orchestrator/budget/add/", budget_form(name="bigger")).status_code == 302
    assert client.post(f"/admin/orchestrator/budget/{budget.pk}/delete/", {"post": "yes"}).status_code == 302
    assert not Budget.objects.filter(pk=budget.pk).exists()


def test_the_queue_reviewer_picker_offers_only_people_who_can_decide(admin_user, client_for, reviewer_finance,
                                                                      operator, outsider):
    """Olga (operator) and Charlie (no role) were offered as reviewers: listed, they are sent no
    links and cannot decide (reviews.services.user_can_decide), and nothing said so."""
    queue = Queue.objects.get(name="legal_team")
    queue.reviewers.add(outsider)  # listed before the picker was narrowed: kept, not dropped unseen
    form = client_for(admin_user).get(f"/admin/reviews/queue/{queue.pk}/change/").context["adminform"].form
    offered = set(form.fields["reviewers"].queryset.values_list("username", flat=True))

    assert {"alice", "adam"} <= offered
    assert "olga" not in offered
    assert "charlie" in offered
    assert "Only people with the reviewer or admin role can decide" in form.fields["reviewers"].help_text


def test_a_new_queue_offers_only_people_who_can_decide(admin_user, client_for, reviewer_finance, operator):
    form = client_for(admin_user).get("/admin/reviews/queue/add/").context["adminform"].form
    offered = set(form.fields["reviewers"].queryset.values_list("username", flat=True))

    assert "alice" in offered and "olga" not in offered


def test_the_last_price_in_force_of_a_model_in_use_cannot_be_deleted(admin_user, client_for):
    """A worker config is refused without a price in force for its model; deleting that price
    afterwards did what the refusal prevents: every call of the model counted as $0."""
    from orchestrator.models import ModelPrice, WorkerConfig

    model = WorkerConfig.objects.get(worker="extract").model
    in_force = ModelPrice.objects.filter(model=model, effective_from__lte="2026-01-01")
    client = client_for(admin_user)
    if in_force.count() > 1:  # keep one: the last one is the case
        in_force.exclude(pk=in_force.first().pk).delete()
    price = in_force.get()

    assert client.get(f"/admin/orchestrator/modelprice/{price.pk}/delete/").status_code == 403
    client.post("/admin/orchestrator/modelprice/", {"action": "delete_selected", "_selected_action": [price.pk],
                                                    "post": "yes"})
    assert ModelPrice.objects.filter(pk=price.pk).exists()
    # A price of a model no worker uses can go.
    unused = ModelPrice.objects.create(model="gpt-unused", input_per_1m=1, cached_input_per_1m=1, output_per_1m=1,
                                       effective_from="2026-01-01")
    assert client.post(f"/admin/orchestrator/modelprice/{unused.pk}/delete/", {"post": "yes"}).status_code == 302
