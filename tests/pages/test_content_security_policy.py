"""Every answer carries Steward's Content-Security-Policy: pages, HTMX fragments, the admin, the
API, health and metrics, the error pages and static files. Scripts come from Steward's own files
only (no inline script, no eval), nothing is framed, no plugins, forms post only to Steward.
tests/browser/test_content_security_policy.py checks that the pages work under it."""
from __future__ import annotations

import re

import pytest
from django.test import Client

from orchestrator.roles import api_token_create

EXPECTED = {
    "default-src": ["'self'"],
    "script-src": ["'self'"],
    "object-src": ["'none'"],
    "base-uri": ["'self'"],
    "frame-ancestors": ["'none'"],
    "form-action": ["'self'"],
}


def policy(response) -> dict[str, list[str]]:
    header = response.headers.get("Content-Security-Policy")
    assert header, f"{response.request['PATH_INFO']} ({response.status_code}) has no Content-Security-Policy"
    directives = {}
    for part in header.split(";"):
        name, *values = part.split()
        directives[name] = values
    return directives


def assert_strict(response) -> None:
    directives = policy(response)
    for name, values in EXPECTED.items():
        assert directives.get(name) == values, f"{response.request['PATH_INFO']}: {name} {directives.get(name)}"
    assert not any("unsafe" in value for values in directives.values() for value in values), directives


def test_pages_for_each_role_carry_the_policy(reviewer_finance, operator, admin_user, outsider, client, client_for,
                                              make_task, make_approval):
    task = make_task(doc_type="Invoice", status="awaiting_approval", routed_to="finance_director")
    approval = make_approval(task, "finance_director")
    assert_strict(client.get("/login/"))
    assert_strict(client.get("/admin/login/"))
    assert_strict(client.get("/tasks/"))  # the redirect to the login page
    alice = client_for(reviewer_finance)
    for path in ("/reviews/", f"/reviews/approvals/{approval.pk}/", f"/tasks/{task.pk}/"):
        assert_strict(alice.get(path))
    assert_strict(alice.get("/reviews/", HTTP_HX_REQUEST="true"))  # an HTMX fragment
    olga = client_for(operator)
    for path in ("/tasks/", "/upload/", "/dead-letters/", "/stuck/", "/charts/", "/charts/completion.csv"):
        assert_strict(olga.get(path))
    adam = client_for(admin_user)
    for path in ("/admin/", "/admin/orchestrator/routingrule/", "/admin/auth/user/add/"):
        assert_strict(adam.get(path))
    assert_strict(client_for(outsider).get("/upload/"))  # 403


def test_the_api_health_metrics_and_static_files_carry_it(operator, client):
    token = api_token_create(user=operator)
    auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    assert_strict(client.get("/api/v1/tasks", **auth))
    assert_strict(client.get("/api/v1/tasks"))  # 401
    assert_strict(client.get("/api/v1/nothing-here", **auth))  # 404
    assert_strict(client.get("/api/v1/openapi.json", **auth))
    assert_strict(client.get("/metrics", **auth))
    assert_strict(client.get("/healthz"))
    assert_strict(client.get("/static/steward.css"))


def test_error_pages_carry_it(reviewer_finance, client_for, monkeypatch, db):
    alice = client_for(reviewer_finance)
    response = alice.get("/no-such-page/")
    assert response.status_code == 404
    assert_strict(response)

    stale = Client(enforce_csrf_checks=True)
    response = stale.post("/login/", {"username": "alice", "password": "pw-alice"})
    assert response.status_code == 403 and b"This form has expired" in response.content
    assert_strict(response)

    def broken(*args, **kwargs):
        raise RuntimeError("the inbox broke")

    monkeypatch.setattr("reviews.views.inbox_page", broken)
    alice.raise_request_exception = False
    response = alice.get("/reviews/")
    assert response.status_code == 500 and b"Something went wrong" in response.content
    assert_strict(response)


@pytest.mark.parametrize("debug", [True, False], ids=["debug", "production"])
def test_it_does_not_depend_on_debug(debug, settings, client, db):
    settings.DEBUG = debug
    assert_strict(client.get("/login/"))


def test_no_template_carries_inline_style_or_script():
    """The policy refuses inline style attributes, <style> and <script> blocks and event-handler
    attributes: one in a template breaks that part of the page (silently: the browser logs it).
    Pages a browser test cannot reach easily (the admin's impact table with moves, an object's
    audit trail) are held by this check of every template instead."""
    import re
    from pathlib import Path

    from django.conf import settings

    inline = re.compile(r"""<style\b|<script\b(?![^>]*\bsrc=)|\sstyle\s*=|\son[a-z]+\s*=|javascript:|hx-on""", re.I)
    found = [f"{path.relative_to(settings.BASE_DIR)}:{number}: {line.strip()[:80]}"
             for path in sorted(Path(settings.BASE_DIR, "templates").rglob("*.html"))
             for number, line in enumerate(path.read_text().splitlines(), 1)
             if inline.search(re.sub(r"\{#.*?#\}", "", line))]  # not in template comments
    assert not found, "\n".join(found)


# htmx evaluates these with eval, which the policy refuses (and base.html's htmx-config turns off):
# an hx-on handler, hx-vars, a js: value of hx-vals or hx-headers, a [filter] on an hx-trigger event.
ASKS_FOR_EVAL = re.compile(r"""hx-on|hx-vars|hx-(vals|headers)\s*=\s*['"]\s*(js|javascript):|hx-trigger\s*=\s*("[^"]*\[|'[^']*\[)""",
                           re.I)


@pytest.mark.parametrize("line, asks", [
    ('<input hx-trigger="keyup[key==\'Enter\'] changed">', True), ("<div hx-vals='js:{a: 1}'>", True),
    ('<div hx-vars="a:1">', True), ('<div hx-headers=\'javascript:{"x": 1}\'>', True),
    ('<div hx-trigger="every 2s, approval-decided from:body">', False), ('<div hx-vals=\'{"a": "js:"}\'>', False),
])
def test_the_eval_check_knows_htmx_attributes(line, asks):
    assert bool(ASKS_FOR_EVAL.search(line)) == asks


def test_no_template_needs_htmx_to_eval():
    """Code in htmx attributes would never run: it fails silently (htmx says so only in the
    console). Behaviour goes in static/steward.js, listening to htmx's events."""
    from pathlib import Path

    from django.conf import settings

    found = [f"{path.relative_to(settings.BASE_DIR)}:{number}: {line.strip()[:80]}"
             for path in sorted(Path(settings.BASE_DIR, "templates").rglob("*.html"))
             for number, line in enumerate(path.read_text().splitlines(), 1)
             if ASKS_FOR_EVAL.search(re.sub(r"\{#.*?#\}", "", line))]
    assert not found, "\n".join(found)
