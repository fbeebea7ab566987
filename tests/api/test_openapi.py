"""GET /api/v1/openapi.json: an OpenAPI 3.1 description of every route, for a token or a session."""
from __future__ import annotations

import re

from django.test import Client
from django.urls import URLPattern

from orchestrator import api_urls
from orchestrator.roles import api_token_create


def documented_path(pattern: URLPattern) -> str:
    return "/" + re.sub(r"<(?:\w+:)?\w+>", "{id}", str(pattern.pattern))


def test_document_describes_every_api_route(operator):
    response = Client().get("/api/v1/openapi.json", HTTP_AUTHORIZATION=f"Bearer {api_token_create(user=operator)}")

    assert response.status_code == 200
    doc = response.json()
    assert doc["openapi"].startswith("3.1")
    assert doc["info"]["title"] and doc["info"]["version"]
    assert doc["servers"] == [{"url": "http://testserver/api/v1"}]
    assert doc["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}
    routes = {documented_path(p) for p in api_urls.urlpatterns if p.name not in ("api-openapi", "api-not-found")}
    assert routes == set(doc["paths"])
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            assert method in ("get", "post"), path
            assert "200" in operation["responses"] or "201" in operation["responses"], (path, method)


def test_every_schema_reference_resolves(operator):
    doc = Client().get("/api/v1/openapi.json", HTTP_AUTHORIZATION=f"Bearer {api_token_create(user=operator)}").json()
    refs = set(re.findall(r'"\$ref": "#/components/schemas/(\w+)"', str(doc).replace("'", '"')))
    assert refs
    assert refs <= set(doc["components"]["schemas"])


def test_a_logged_in_session_may_read_it(reviewer_finance, client_for):
    assert client_for(reviewer_finance).get("/api/v1/openapi.json").status_code == 200


def test_anonymous_gets_401(db):
    response = Client().get("/api/v1/openapi.json")
    assert response.status_code == 401
    assert response.json()["error"] == "Log in or send a bearer token"
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_a_bad_token_gets_401(db):
    assert Client().get("/api/v1/openapi.json", HTTP_AUTHORIZATION="Bearer stw_wrong").status_code == 401


def test_a_wrong_method_is_a_json_405_naming_get(operator, client_for):
    # CSRF checks on, as in a real server: they used to turn the POST into an HTML 403 page.
    token_client = Client(enforce_csrf_checks=True, HTTP_AUTHORIZATION=f"Bearer {api_token_create(user=operator)}")
    session_client = client_for(operator)
    session_client.handler.enforce_csrf_checks = True

    for response in (token_client.post("/api/v1/openapi.json"), session_client.delete("/api/v1/openapi.json")):
        assert response.status_code == 405
        assert response["Allow"] == "GET, HEAD, OPTIONS"
        assert response.json() == {"error": "Method " + response.request["REQUEST_METHOD"] + " not allowed"}
