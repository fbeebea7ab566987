"""Django admin: every registered model's pages load, history stays read-only, policy edits are audited."""
from __future__ import annotations

import pytest
from django.contrib import admin
from django.urls import reverse

from orchestrator.models import Budget, DeadLetter, OperatorAction, SweepRun, Task
from reviews.models import Approval, AuditEvent, Queue

pytestmark = pytest.mark.django_db


def test_every_admin_list_and_add_page_loads_for_an_admin(admin_user, client_for):
    client = client_for(admin_user)
    for model, model_admin in admin.site._registry.items():
        info = (model._meta.app_label, model._meta.model_name)
        assert client.get(reverse("admin:%s_%s_changelist" % info)).status_code == 200, info
        add = client.get(reverse("admin:%s_%s_add" % info))
        assert add.status_code == (200 if model_admin.has_add_permission(add.wsgi_request) else 403), info


@pytest.mark.parametrize("model", [OperatorAction, SweepRun, AuditEvent])
def test_history_cannot_be_added_or_deleted_in_admin(admin_user, client_for, model):
    client = client_for(admin_user)
    info = (model._meta.app_label, model._meta.model_name)

    assert client.get(reverse("admin:%s_%s_add" % info)).status_code == 403


def test_the_admin_index_names_bulk_retries_in_plain_english(admin_user, client_for):
    index = client_for(admin_user).get(reverse("admin:index")).text

    assert "Bulk retries" in index and "Bulk retrys" not in index


def test_a_budget_change_in_admin_leaves_an_audit_event(admin_user, client_for):
    budget = Budget.objects.get(name="default")
    client = client_for(admin_user)
    url = reverse("admin:orchestrator_budget_change", args=[budget.pk])

    response = client.post(url, {"name": "default", "max_llm_calls": 12, "max_tool_calls": budget.max_tool_calls,
                                 "max_tokens": budget.max_tokens, "max_cost_usd": budget.max_cost_usd,
                                 "active": "on"})

    assert response.status_code == 302
    event = AuditEvent.objects.latest("id")
    assert "adam" in (event.actor_name or "") and "max_llm_calls" in event.summary


def test_a_task_page_in_admin_lists_its_steps(admin_user, client_for, make_task):
    from django.utils import timezone

    from orchestrator.models import Step

    task = make_task(status="completed")
    Step.objects.create(task=task, worker="classify", attempt=1, status="succeeded", started_at=timezone.now(),
                        model="gpt-4o-mini")

    page = client_for(admin_user).get(reverse("admin:orchestrator_task_change", args=[task.pk])).text

    assert "gpt-4o-mini" in page and "classify" in page


@pytest.fixture
def dead_letter(make_task) -> DeadLetter:
    task = make_task(status="dead_lettered", doc_type="Invoice")
    return DeadLetter.objects.create(task=task, worker="extract", error_type="SchemaInvalid",
                                     message="amount: field required", fingerprint="f" * 64)


@pytest.mark.parametrize("model", [Task, DeadLetter])
def test_tasks_and_dead_letters_can_be_looked_at_but_not_changed_in_admin(admin_user, client_for, dead_letter,
                                                                          model):
    """Invariant 1: nothing disappears. Tasks and dead letters change only through the pipeline,
    review and triage, which keep an owner for every task and an audit trail; admin only shows them."""
    row, shown = (dead_letter, dead_letter.message) if model is DeadLetter else (dead_letter.task,
                                                                                dead_letter.task.filename)
    client = client_for(admin_user)
    info = (model._meta.app_label, model._meta.model_name)
    change = reverse("admin:%s_%s_change" % info, args=[row.pk])

    listing = client.get(reverse("admin:%s_%s_changelist" % info)).text
    page = client.get(change)

    assert change in listing and "Delete selected" not in listing
    assert page.status_code == 200 and shown in page.text
    assert 'name="_save"' not in page.text and "deletelink" not in page.text
    assert client.get(reverse("admin:%s_%s_add" % info)).status_code == 403
    assert client.post(change, {"status": "completed"}).status_code == 403
    assert client.post(reverse("admin:%s_%s_delete" % info, args=[row.pk]), {"post": "yes"}).status_code == 403
    assert DeadLetter.objects.get(pk=dead_letter.pk).status == "open"
    assert Task.objects.get(pk=dead_letter.task_id).status == "dead_lettered"


def test_approvals_cannot_be_deleted_in_admin(admin_user, client_for, make_task, make_approval):
    """A task awaiting approval must not be left waiting on nothing (invariant 1)."""
    approval = make_approval(make_task(status="awaiting_approval", current_step="act"), "finance_director")
    client = client_for(admin_user)

    listing = client.get(reverse("admin:reviews_approval_changelist")).text
    response = client.post(reverse("admin:reviews_approval_delete", args=[approval.pk]), {"post": "yes"})

    assert "Delete selected" not in listing
    assert response.status_code == 403
    assert Approval.objects.filter(pk=approval.pk, status="pending").exists()


def test_admin_and_steward_pages_show_steward_s_icon(admin_user, client_for, client):
    """No request for /favicon.ico (a 404 in the log): every page links the icon, which is served."""
    icon = '<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">'
    admin_client = client_for(admin_user)
    for url in ("/admin/", reverse("admin:orchestrator_budget_changelist"), "/tasks/"):
        assert icon in admin_client.get(url).content.decode(), url
    assert icon in client.get("/admin/login/").content.decode()
    assert icon in client.get("/login/").content.decode()
    served = client.get("/static/favicon.svg")
    assert served.status_code == 200 and served["Content-Type"].startswith("image/svg+xml")


def test_api_tokens_are_made_by_create_api_token_and_only_revoked_in_admin(admin_user, operator, reviewer_finance,
                                                                           client_for):
    """"Add API token" in admin saved a row with no token (nothing to show, nothing that works; a
    second one was a 500), and a token's user could be changed, handing its holder another user's
    roles. Tokens come from `create_api_token`, shown once; admin lists them and deletes (revokes)."""
    from django.test import Client

    from orchestrator.models import ApiToken
    from orchestrator.roles import api_token_create

    raw = api_token_create(user=reviewer_finance)
    token = ApiToken.objects.get()
    client = client_for(admin_user)

    assert client.post(reverse("admin:orchestrator_apitoken_add"), {"user": operator.pk}).status_code == 403
    client.post(reverse("admin:orchestrator_apitoken_change", args=[token.pk]), {"user": admin_user.pk})
    assert ApiToken.objects.get().user == reviewer_finance
    assert ApiToken.objects.count() == 1
    listed = client.get(reverse("admin:orchestrator_apitoken_changelist")).text
    assert token.prefix in listed and raw not in listed

    client.post(reverse("admin:orchestrator_apitoken_delete", args=[token.pk]), {"post": "yes"})
    assert Client(HTTP_AUTHORIZATION=f"Bearer {raw}").get("/api/v1/tasks").status_code == 401


def test_the_queue_page_says_where_an_email_action_goes_without_an_address(admin_user, client_for):
    """An email action with no address goes to the queue's reviewers: the field said only "where
    the decision goes", so an admin leaving it empty could not know who would get the mail."""
    queue = Queue.objects.get(name="finance_director")
    page = client_for(admin_user).get(reverse("admin:reviews_queue_change", args=[queue.pk])).text

    assert ("Empty: each of the queue's reviewers who has an email address (with none, the action is "
            "dead-lettered)") in page
