"""Every URL of the project, requested by every kind of actor: who gets in and who does not.

EXPECTED lists every named URL pattern with the roles that may use it, per HTTP method. A new
pattern that is not listed here fails `test_every_url_pattern_is_listed`, so nobody adds a page
without deciding who may see it.

Actors: anonymous, Charlie (logged in, no role), Alice (reviewer of finance_director), Olga
(operator), Adam (admin). Pages use the session; the API and /metrics use bearer tokens.
"""
from __future__ import annotations

import re

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.utils import timezone

from orchestrator.models import BulkRetry, DeadLetter, Step
from orchestrator.roles import api_token_create
from reviews.models import Approval

ACTORS = ("anonymous", "outsider", "reviewer", "operator", "admin")
ALL_ROLES = frozenset({"reviewer", "operator", "admin"})
STAFF = frozenset({"operator", "admin"})
DECIDERS = frozenset({"reviewer", "admin"})
EVERYONE = frozenset(ACTORS)
TOKEN_HOLDERS = frozenset({"outsider", "reviewer", "operator", "admin"})

# kind: "open" (no login needed), "page" (session; anonymous -> login page, wrong role -> 403, or
# 404 for an object the actor may not see), "api" (bearer token; none -> 401, wrong role -> 403).
# methods: HTTP method -> the actors that may use it.
EXPECTED: dict[str, dict] = {
    "home": {"kind": "page", "methods": {"GET": ALL_ROLES}},
    "healthz": {"kind": "open", "methods": {"GET": EVERYONE}},
    "login": {"kind": "open", "methods": {"GET": EVERYONE}},
    "logout": {"kind": "open", "methods": {"POST": EVERYONE}},
    "task-list": {"kind": "page", "methods": {"GET": ALL_ROLES}},
    "task-detail": {"kind": "page", "methods": {"GET": ALL_ROLES}},
    "upload": {"kind": "page", "methods": {"GET": STAFF}},
    "dead-letter-list": {"kind": "page", "methods": {"GET": STAFF}},
    "dead-letter-retry": {"kind": "page", "methods": {"POST": STAFF}},
    "dead-letter-detail": {"kind": "page", "methods": {"GET": STAFF}},
    "dead-letter-edit-retry": {"kind": "page", "methods": {"POST": STAFF}},
    "dead-letter-discard": {"kind": "page", "methods": {"POST": STAFF}},
    "dead-letter-requeue": {"kind": "page", "methods": {"POST": STAFF}},
    "bulk-retry-create": {"kind": "page", "methods": {"POST": STAFF}},
    "bulk-retry-detail": {"kind": "page", "methods": {"GET": STAFF}},
    "bulk-retry-control": {"kind": "page", "methods": {"POST": STAFF}},
    "stuck-work": {"kind": "page", "methods": {"GET": STAFF}},
    "approval-decide": {"kind": "page", "methods": {"POST": DECIDERS}},
    "review-inbox": {"kind": "page", "methods": {"GET": DECIDERS}},
    "review-item": {"kind": "page", "methods": {"GET": DECIDERS}},
    "review-decide": {"kind": "page", "methods": {"POST": DECIDERS}},
    # Signed email links work without a session; a bad token is refused with 400 for everyone.
    "review-link": {"kind": "open", "methods": {"GET": EVERYONE, "POST": EVERYONE}},
    "api-openapi": {"kind": "api", "methods": {"GET": TOKEN_HOLDERS}},
    "api-tasks": {"kind": "api", "methods": {"GET": ALL_ROLES, "POST": STAFF}},
    "api-task-detail": {"kind": "api", "methods": {"GET": ALL_ROLES}},
    "api-approvals": {"kind": "api", "methods": {"GET": DECIDERS}},
    "api-approval-decision": {"kind": "api", "methods": {"POST": DECIDERS}},
    "api-dead-letters": {"kind": "api", "methods": {"GET": STAFF}},
    "api-dead-letter-retry": {"kind": "api", "methods": {"POST": STAFF}},
    # Any other path under /api/v1/: a JSON 404 for everyone, it shows nothing.
    "api-not-found": {"kind": "open", "methods": {"GET": EVERYONE, "POST": EVERYONE}},
    "metrics": {"kind": "api", "methods": {"GET": STAFF}},
    "charts": {"kind": "page", "methods": {"GET": STAFF}},
    "chart-csv": {"kind": "page", "methods": {"GET": STAFF}},
}
# Django admin protects itself (staff only); checked separately below.
SKIPPED_INCLUDES = {"admin"}


def url_patterns(resolver: URLResolver | None = None, prefix: str = ""):
    """(route, name) for every pattern, walking includes recursively, except Django admin."""
    resolver = resolver or get_resolver()
    for pattern in resolver.url_patterns:
        route = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            if pattern.namespace in SKIPPED_INCLUDES or pattern.app_name in SKIPPED_INCLUDES:
                continue
            yield from url_patterns(pattern, route)
        elif isinstance(pattern, URLPattern):
            yield route, pattern.name


def test_every_url_pattern_is_listed():
    unlisted = [f"{route!r} (name={name!r})" for route, name in url_patterns() if name not in EXPECTED]
    assert not unlisted, (
        "URL patterns without an entry in EXPECTED (say who may use them; unnamed patterns need a "
        "name): " + ", ".join(unlisted)
    )


def test_every_listed_name_exists():
    names = {name for _, name in url_patterns()}
    assert not set(EXPECTED) - names, f"EXPECTED lists names no pattern has: {set(EXPECTED) - names}"


# --- Requests by every actor ------------------------------------------------------------------


@pytest.fixture
def world(outsider, reviewer_finance, operator, admin_user, make_task, make_approval):
    """One of each actor, and rows to point object URLs at (visible to Alice through her queue)."""
    task = make_task(status="dead_lettered", doc_type="Invoice", routed_to="finance_director",
                     fields={"amount": 15400.0})
    approval = make_approval(task, "finance_director")
    step = Step.objects.create(task=task, worker="extract", status="dead_lettered", started_at=timezone.now())
    dead_letter = DeadLetter.objects.create(task=task, step=step, worker="extract", error_type="Boom",
                                            message="boom", fingerprint="0" * 64)
    users = {"outsider": outsider, "reviewer": reviewer_finance, "operator": operator, "admin": admin_user}
    return {
        "users": users,
        "tokens": {role: api_token_create(user=user) for role, user in users.items()},
        "kwargs": {"task_id": task.pk, "approval_id": approval.pk, "dead_letter_id": dead_letter.pk,
                   "bulk_id": BulkRetry.objects.create(description="sample", total=0).pk,
                   "slug": "completion", "token": "not-a-signed-token"},
    }


def url_for(name: str, samples: dict) -> str:
    route = next(route for route, n in url_patterns() if n == name)
    params = re.findall(r"<(?:\w+:)?(\w+)>", route)
    return reverse(name, kwargs={param: samples[param] for param in params})


def request_as(world: dict, actor: str, kind: str, method: str, url: str):
    client = Client()
    headers = {}
    if actor != "anonymous":
        if kind == "api":
            headers["HTTP_AUTHORIZATION"] = f"Bearer {world['tokens'][actor]}"
        else:
            client.force_login(world["users"][actor])
    if method == "POST":
        return client.post(url, data="{}", content_type="application/json", **headers)
    return client.get(url, **headers)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_who_may_use_each_url(name, world):
    entry = EXPECTED[name]
    kind = entry["kind"]
    url = url_for(name, world["kwargs"])
    problems = []
    for method, allowed in entry["methods"].items():
        for actor in ACTORS:
            response = request_as(world, actor, kind, method, url)
            status = response.status_code
            where = f"{method} {url} as {actor}: {status}"
            if actor in allowed:
                if status in (401, 403) or (kind == "page" and _is_login_redirect(response)):
                    problems.append(f"{where}, expected to be let in")
            elif actor == "anonymous" and kind == "page":
                if not _is_login_redirect(response):
                    problems.append(f"{where}, expected a redirect to the login page")
            elif actor == "anonymous":
                if status != 401:
                    problems.append(f"{where}, expected 401")
            elif status not in (403, 404):
                problems.append(f"{where}, expected 403 (or 404 for an object it may not see)")
    assert not problems, "\n".join(problems)


def _is_login_redirect(response) -> bool:
    return response.status_code == 302 and response["Location"].startswith(reverse("login") + "?next=")


# --- Django admin -----------------------------------------------------------------------------


def test_django_admin_is_for_the_admin_role_only(world):
    anonymous = Client().get("/admin/")
    assert anonymous.status_code == 302 and anonymous["Location"].startswith("/admin/login/")
    for actor in ("outsider", "reviewer", "operator"):
        client = Client()
        client.force_login(world["users"][actor])
        response = client.get("/admin/")
        assert response.status_code == 302, actor
        assert response["Location"].startswith("/admin/login/"), actor
    client = Client()
    client.force_login(world["users"]["admin"])
    assert client.get("/admin/").status_code == 200


# --- Objects of another queue ------------------------------------------------------------------

OBJECT_PARAMS = {"task_id", "approval_id"}


def _object_urls_for_reviewers() -> list[tuple[str, str, str]]:
    """(name, kind, method) of every URL that names a task or an approval and lets reviewers in."""
    found = []
    for route, name in url_patterns():
        entry = EXPECTED.get(name)
        if not entry or not OBJECT_PARAMS & set(re.findall(r"<(?:\w+:)?(\w+)>", route)):
            continue
        found += [(name, entry["kind"], method) for method, allowed in entry["methods"].items() if "reviewer" in allowed]
    return found


def test_a_reviewer_of_another_queue_gets_404_for_every_object_of_this_one(world, reviewer_legal):
    """Bob reviews legal_team: every page, HTMX partial and API call naming the finance task or its
    approval answers him 404, as for an id that does not exist, and decides nothing."""
    bob_token = api_token_create(user=reviewer_legal)
    checked, problems = [], []
    for name, kind, method in _object_urls_for_reviewers():
        url = url_for(name, world["kwargs"])
        for htmx in (False, True):
            client = Client(HTTP_AUTHORIZATION=f"Bearer {bob_token}") if kind == "api" else Client()
            if kind != "api":
                client.force_login(reviewer_legal)
            headers = {"HTTP_HX_REQUEST": "true"} if htmx else {}
            if method == "POST" and kind == "api":
                response = client.post(url, data='{"decision": "approve"}', content_type="application/json")
            elif method == "POST":
                response = client.post(url, {"decision": "approve"}, **headers)
            else:
                response = client.get(url, **headers)
            checked.append(name)
            if response.status_code != 404:
                problems.append(f"{method} {url} as Bob{' (HTMX)' if htmx else ''}: {response.status_code}")
    assert set(checked) >= {"task-detail", "review-item", "review-decide", "approval-decide", "api-task-detail",
                            "api-approval-decision"}
    assert not problems, "\n".join(problems)
    approval = Approval.objects.get(pk=world["kwargs"]["approval_id"])
    assert approval.status == "pending" and approval.decided_by is None


def test_lists_show_a_reviewer_of_another_queue_nothing_of_this_one(world, reviewer_legal):
    task_id, approval_id = world["kwargs"]["task_id"], world["kwargs"]["approval_id"]
    for user, sees in ((world["users"]["reviewer"], True), (reviewer_legal, False)):
        page = Client()
        page.force_login(user)
        api = Client(HTTP_AUTHORIZATION=f"Bearer {api_token_create(user=user)}")
        assert (f'href="/tasks/{task_id}/"' in page.get("/tasks/").content.decode()) is sees
        assert (f'href="/reviews/approvals/{approval_id}/"' in page.get("/reviews/").content.decode()) is sees
        assert (task_id in [t["id"] for t in api.get("/api/v1/tasks").json()["results"]]) is sees
        assert (approval_id in [a["id"] for a in api.get("/api/v1/approvals").json()["results"]]) is sees
        # Naming the other queue in a filter does not widen what is shown (the API refuses it, naming only his).
        filtered = api.get("/api/v1/approvals?queue=finance_director").json()
        if sees:
            assert approval_id in [a["id"] for a in filtered["results"]]
        else:
            assert (filtered.get("results"), filtered["allowed"]) == (None, ["legal_team"])
        assert (f'href="/reviews/approvals/{approval_id}/"' in page.get("/reviews/?queue=finance_director")
                .content.decode()) is sees
