"""Every answer under /api/v1/ is JSON {"error": ...}, whatever went wrong: an integrator's client
parses one shape, never Django's HTML pages."""
from __future__ import annotations

import pytest
from django.test import Client

from orchestrator.roles import api_token_create


def api(user) -> Client:
    return Client(HTTP_AUTHORIZATION=f"Bearer {api_token_create(user=user)}")


@pytest.mark.parametrize("path", [
    "/api/v1/nope",
    "/api/v1/tasks/",  # a trailing slash is not the route
    "/api/v1/tasks/abc",
    "/api/v1/approvals/1/decide",
    "/api/v1/",
])
def test_an_unknown_api_path_is_a_json_404(operator, path):
    response = api(operator).get(path)

    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"error": f"No API endpoint at {path}; see /api/v1/openapi.json"}


def test_pages_outside_the_api_keep_their_html_404(operator, client_for):
    response = client_for(operator).get("/no-such-page/")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


def test_json_nested_too_deeply_to_parse_is_a_400(operator):
    body = "[" * 100_000 + "]" * 100_000

    response = api(operator).post("/api/v1/tasks", data=body, content_type="application/json")

    assert response.status_code == 400
    assert response.json()["error"] == "The body is not valid JSON: it is nested too deeply"


def test_decision_body_nested_too_deeply_is_a_400(reviewer_finance, make_task, make_approval):
    approval = make_approval(make_task(status="awaiting_approval"), "finance_director")

    response = api(reviewer_finance).post(f"/api/v1/approvals/{approval.pk}/decision",
                                          data='{"decision": "approve", "fields": ' + "[" * 100_000 + "}",
                                          content_type="application/json")

    assert response.status_code == 400
    assert response.json()["error"] == "The body is not valid JSON: it is nested too deeply"
    approval.refresh_from_db()
    assert approval.status == "pending"


def test_a_multipart_body_that_cannot_be_parsed_is_a_json_400(operator):
    response = api(operator).generic("POST", "/api/v1/tasks", b"not multipart at all",
                                     content_type="multipart/form-data")

    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"].startswith("The multipart body could not be read: ")
