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
