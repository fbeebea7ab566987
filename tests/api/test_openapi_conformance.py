"""The OpenAPI document says what the API really answers: every request below (each role, good and
bad input) gets a status code the document lists for that operation, and a body that fits the
schema listed for it: every documented required key present, every key it sends documented, each
value of the documented type. A client generated from /api/v1/openapi.json can rely on it.

The checker is a small subset of JSON Schema (type, enum, required, properties, items, allOf,
anyOf, $ref), which is all the document uses; no new dependency.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from orchestrator.openapi import document
from orchestrator.roles import api_token_create

SAMPLES = Path(__file__).resolve().parents[2] / "orchestrator" / "samples"
DOC = document("http://testserver/api/v1")


def _resolve(schema: dict) -> dict:
    while "$ref" in schema:
        schema = DOC["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def _flatten(schema: dict) -> dict:
    """One schema from an allOf (the properties and required keys of every part)."""
    schema = _resolve(schema)
    if "allOf" not in schema:
        return schema
    merged: dict = {"type": "object", "properties": {}, "required": []}
    for part in map(_flatten, schema["allOf"]):
        merged["properties"].update(part.get("properties", {}))
        merged["required"] += part.get("required", [])
    return merged


def _type_ok(value, name: str) -> bool:
    if name in ("integer", "number") and isinstance(value, bool):
        return False
    return isinstance(value, {"object": dict, "array": list, "string": str, "integer": int, "boolean": bool,
                              "number": (int, float), "null": type(None)}[name])


def problems(value, schema: dict, where: str = "body") -> list[str]:
    schema = _flatten(schema)
    if "anyOf" in schema:
        if all(problems(value, option, where) for option in schema["anyOf"]):
            return [f"{where}: {value!r:.80} fits none of {schema['anyOf']}"]
        return []
    types = schema.get("type")
    if types is not None:
        types = [types] if isinstance(types, str) else types
        if not any(_type_ok(value, t) for t in types):
            return [f"{where}: {value!r:.80} is not {'/'.join(types)}"]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{where}: {value!r} is not one of {schema['enum']}"]
    found = []
    if isinstance(value, dict) and "properties" in schema:
        found += [f"{where}: required key {key!r} missing" for key in schema.get("required", []) if key not in value]
        found += [f"{where}: key {key!r} is not documented" for key in value if key not in schema["properties"]]
        for key, item in value.items():
            if key in schema["properties"]:
                found += problems(item, schema["properties"][key], f"{where}.{key}")
    if isinstance(value, list) and "items" in schema:
        for n, item in enumerate(value):
            found += problems(item, schema["items"], f"{where}[{n}]")
    return found


def check(response, method: str, path: str) -> None:
    """Assert the response's status and body are what the document says for this operation."""
    operation = DOC["paths"][path][method.lower()]
    status = str(response.status_code)
    assert status in operation["responses"], (
        f"{method} {path} answered {status}; the document lists {sorted(operation['responses'])}: "
        f"{response.content[:200]}")
    documented = operation["responses"][status]
    missing = [name for name, header in documented.get("headers", {}).items()
               if header.get("required") and not response.has_header(name)]
    assert not missing, f"{method} {path} {status} lacks the header(s) {missing}"
    schema = documented["content"]["application/json"]["schema"]
    found = problems(response.json(), schema)
    assert not found, f"{method} {path} {status}:\n" + "\n".join(found)


def api(user=None) -> Client:
    return Client(HTTP_AUTHORIZATION=f"Bearer {api_token_create(user=user)}") if user else Client()


def post_json(client: Client, url: str, body, **headers):
    return client.post(url, data=json.dumps(body), content_type="application/json", headers=headers)


@pytest.fixture
def world(operator, admin_user, reviewer_finance, reviewer_legal, outsider, make_task, run_pipeline):
    """A task that ran the pipeline to its approval, and one the content filter dead-lettered."""
    waiting = run_pipeline(make_task(content=(SAMPLES / "invoice-northwind-large.txt").read_text()))
    dead = run_pipeline(make_task(content="INVOICE 9\nTotal: $9.00\n[[sim-fault: content_filter]]"))
    assert (waiting.status, dead.status) == ("awaiting_approval", "dead_lettered")
    return {"waiting": waiting, "approval": waiting.approvals.get(), "dead": dead.dead_letters.get(),
            "operator": api(operator), "admin": api(admin_user), "alice": api(reviewer_finance),
            "bob": api(reviewer_legal), "outsider": api(outsider), "anonymous": api()}


def test_submitting(world):
    operator, tasks = world["operator"], "/api/v1/tasks"
    upload = SimpleUploadedFile("acme.txt", (SAMPLES / "invoice-acme-small.txt").read_bytes())

    check(post_json(operator, tasks, {"content": "INVOICE 1", "filename": "a.txt"}, **{"Idempotency-Key": "k"}),
          "POST", "/tasks")
    check(post_json(operator, tasks, {"content": "INVOICE 1", "filename": "a.txt"}, **{"Idempotency-Key": "k"}),
          "POST", "/tasks")  # replayed
    check(post_json(operator, tasks, {"content": "INVOICE 2"}, **{"Idempotency-Key": "k"}), "POST", "/tasks")  # 422
    check(world["admin"].post(tasks, {"file": upload}), "POST", "/tasks")
    check(post_json(operator, tasks, {"content": ""}), "POST", "/tasks")  # 400
    check(post_json(operator, tasks, {"content": "INVOICE 4", "externalRef": "x"}), "POST", "/tasks")  # 400
    check(operator.post(tasks, data="content=x", content_type="text/plain"), "POST", "/tasks")  # 415
    check(post_json(world["alice"], tasks, {"content": "INVOICE 3"}), "POST", "/tasks")  # 403
    check(post_json(world["anonymous"], tasks, {"content": "INVOICE 3"}), "POST", "/tasks")  # 401


def test_submitting_too_much(world, settings):
    settings.STEWARD_MAX_DOCUMENT_BYTES = 100
    check(post_json(world["operator"], "/api/v1/tasks", {"content": "x" * 200}), "POST", "/tasks")  # 413


def test_reading_tasks(world):
    task_url = f"/api/v1/tasks/{world['waiting'].pk}"
    for who in ("operator", "admin", "alice", "outsider", "anonymous"):
        check(world[who].get("/api/v1/tasks"), "GET", "/tasks")
        check(world[who].get(task_url), "GET", "/tasks/{id}")
    check(world["operator"].get("/api/v1/tasks?status=lost"), "GET", "/tasks")  # 400
    check(world["operator"].get("/api/v1/tasks?doc_type=Receipt"), "GET", "/tasks")  # 400
    check(world["alice"].get("/api/v1/tasks?queue=legal_team"), "GET", "/tasks")  # 400: not her queue
    check(world["operator"].get("/api/v1/tasks?doc_type=Invoice&queue=finance_director"), "GET", "/tasks")
    check(world["operator"].get("/api/v1/tasks?limit=1"), "GET", "/tasks")  # with a next link
    check(world["operator"].get("/api/v1/tasks?page=2"), "GET", "/tasks")  # 400: it pages by `before`
    check(world["bob"].get(task_url), "GET", "/tasks/{id}")  # 404: not in his queues
    check(world["operator"].get(f"/api/v1/tasks/{world['dead'].task_id}"), "GET", "/tasks/{id}")  # a dead letter


def test_approvals(world):
    for who in ("alice", "admin", "bob", "operator", "anonymous"):
        check(world[who].get("/api/v1/approvals"), "GET", "/approvals")
    check(world["alice"].get("/api/v1/approvals?status=maybe"), "GET", "/approvals")  # 400
    check(world["alice"].get("/api/v1/approvals?queue=nowhere"), "GET", "/approvals")  # 400
    check(world["alice"].get("/api/v1/approvals?limit=many"), "GET", "/approvals")  # 400

    url, path = f"/api/v1/approvals/{world['approval'].pk}/decision", "/approvals/{id}/decision"
    check(post_json(world["bob"], url, {"decision": "approve"}), "POST", path)  # 404
    check(post_json(world["operator"], url, {"decision": "approve"}), "POST", path)  # 403
    check(post_json(world["anonymous"], url, {"decision": "approve"}), "POST", path)  # 401
    check(post_json(world["alice"], url, {"decision": "reject"}), "POST", path)  # 400: no reason
    check(post_json(world["alice"], url, {"decision": "approve", "reason": "duplicate"}), "POST", path)  # 400
    check(post_json(world["alice"], url, {"decision": "approve", "fields": {"amount": "lots"}}), "POST", path)  # 400
    check(post_json(world["alice"], url, {"decision": "approve", "field": {"amount": 1.0}}), "POST", path)  # 400
    check(world["alice"].post(url, data="decision=approve", content_type="text/plain"), "POST", path)  # 415
    check(post_json(world["alice"], url, {"decision": "approve", "fields": {"amount": 15000.0}}), "POST", path)
    check(post_json(world["admin"], url, {"decision": "reject", "reason": "duplicate"}), "POST", path)  # 409
    check(world["alice"].get("/api/v1/approvals?status=approved"), "GET", "/approvals")
    check(world["alice"].get(f"/api/v1/tasks/{world['waiting'].pk}"), "GET", "/tasks/{id}")  # with corrections


def test_dead_letters(world):
    for who in ("operator", "admin", "alice", "anonymous"):
        check(world[who].get("/api/v1/dead-letters"), "GET", "/dead-letters")
    check(world["operator"].get("/api/v1/dead-letters?status=gone"), "GET", "/dead-letters")  # 400

    url, path = f"/api/v1/dead-letters/{world['dead'].pk}/retry", "/dead-letters/{id}/retry"
    check(world["alice"].post(url), "POST", path)  # 403
    check(world["anonymous"].post(url), "POST", path)  # 401
    check(world["operator"].post("/api/v1/dead-letters/999999/retry"), "POST", path)  # 404
    check(post_json(world["operator"], url, {"fields": {"amount": 3}}), "POST", path)  # 400: it takes no body
    check(world["operator"].post(url), "POST", path)  # 200
    check(world["admin"].post(url), "POST", path)  # 409: retried already
    check(world["operator"].get("/api/v1/dead-letters?status=retried"), "GET", "/dead-letters")


def test_head_answers_what_the_document_says_get_does(world):
    """HEAD is described once, with GET: the same status (and headers), no body."""
    for path, item in DOC["paths"].items():
        if "get" not in item:
            continue
        url = "/api/v1" + path.replace("{id}", str(world["waiting"].pk))
        for who in ("operator", "alice", "anonymous"):
            head, get = world[who].head(url), world[who].get(url)
            assert (head.status_code, head.content) == (get.status_code, b""), f"HEAD {url} as {who}"
            assert str(head.status_code) in item["get"]["responses"], f"HEAD {url} as {who}: {head.status_code}"


def test_the_checker_catches_a_mismatch():
    """The checker itself: a wrong type, a missing required key and an undocumented key are caught."""
    schema = {"type": "object", "required": ["id"], "properties": {"id": {"type": "integer"}}}
    assert problems({"id": 1}, schema) == []
    assert problems({"id": "1"}, schema) == ["body.id: '1' is not integer"]
    assert problems({}, schema) == ["body: required key 'id' missing"]
    assert problems({"id": 1, "extra": 2}, schema) == ["body: key 'extra' is not documented"]
    assert problems(True, {"type": "integer"}) == ["body: True is not integer"]


@pytest.mark.parametrize("path", ["/tasks", "/approvals", "/dead-letters"])
def test_each_list_takes_exactly_the_query_parameters_documented(admin_user, path):
    documented = [p["name"] for p in DOC["paths"][path]["get"]["parameters"] if p["in"] == "query"]

    response = api(admin_user).get(f"/api/v1{path}?nonsense=1")

    assert response.status_code == 400
    assert sorted(response.json()["allowed"]) == sorted(documented)
