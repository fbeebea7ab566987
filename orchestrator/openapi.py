"""The OpenAPI 3.1 description of /api/v1, kept next to the code it describes (api.py).

tests/api/test_openapi_conformance.py checks real responses against it: keys, types, status codes.
"""
from __future__ import annotations

from reviews.models import ApprovalStatus

from .models import DeadLetterStatus, DocType, StepStatus, TaskStatus


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _object(properties: dict) -> dict:
    """An object whose every property is always sent (so each is required)."""
    return {"type": "object", "required": list(properties), "properties": properties}


def _errors(*codes: int) -> dict:
    return {str(code): _json(_ref("Error"), ERRORS[code]) | ERROR_HEADERS.get(code, {}) for code in codes}


ERRORS = {
    400: "A parameter or the body is wrong, or the body has a key the endpoint does not take (the error says which)",
    401: "No valid bearer token",
    403: "The token's role does not allow this (the error names the role needed and the caller's)",
    404: "Not found, or not visible to the caller",
    409: "Conflict: the state does not allow it (already decided, already retried...)",
    413: "The document is over the size limit",
    415: "The body is not JSON (nor multipart, where that is accepted)",
    422: "The Idempotency-Key was already used for a different document",
}
ERROR_HEADERS = {401: {"headers": {"WWW-Authenticate": {"required": True, "schema": {"type": "string"},
                                                         "description": 'Bearer realm="steward"'}}}}
INT = {"type": "integer"}
INT_OR_NULL = {"type": ["integer", "null"]}
STR = {"type": "string"}
STR_OR_NULL = {"type": ["string", "null"]}
TIME = {"type": "string", "format": "date-time"}
TIME_OR_NULL = {"type": ["string", "null"], "format": "date-time"}
MONEY = {"type": "string", "description": "US dollars, as a decimal string"}
USAGE = ("llm_calls", "tool_calls", "input_tokens", "cached_tokens", "output_tokens", "reasoning_tokens")
PAGE_PARAMS = [
    {"name": "before", "in": "query", "schema": {"type": "integer"}, "description": "Keyset cursor: ids below this"},
    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 200, "default": 50},
     "description": "Items per page; a larger limit sends 200"},
]
QUEUE_PARAM = {"name": "queue", "in": "query", "schema": {"type": "string"},
               "description": "One of the caller's queues (any queue for operators and admins); another is "
                              "refused with 400 naming the caller's queues in `allowed`"}
LIST_DESCRIPTION = ("Newest first. To page, follow `next` until it is null (there are no page numbers); "
                    "a query parameter not listed here, or a value outside a filter's set, is refused with 400.")


def _page(item: str) -> dict:
    return _object({"results": {"type": "array", "items": _ref(item)},
                    "next": {"type": ["string", "null"], "description": "URL of the next page"}})


def document(server_url: str) -> dict:
    return {
        "openapi": "3.1.0",
        "info": {"title": "Steward API", "version": "1.0.0",
                 "description": "Submit documents, read results, decide approvals, retry dead letters. "
                                "Authenticate with `Authorization: Bearer <token>` (manage.py create_api_token). "
                                "Every GET answers HEAD too (same status and headers, no body); OPTIONS answers "
                                "204 with `Allow` naming a path's methods, and any other method 405 with `Allow`."},
        "servers": [{"url": server_url}],
        "security": [{"bearer": []}],
        "paths": {
            "/tasks": {
                "post": {
                    "summary": "Submit a document (operator, admin)",
                    "parameters": [{"name": "Idempotency-Key", "in": "header",
                                    "schema": {"type": "string", "maxLength": 255},
                                    "description": "Same key, same task: a replay returns the first task"}],
                    "requestBody": {"required": True, "content": {
                        "application/json": {"schema": _ref("TaskCreate")},
                        "multipart/form-data": {"schema": {"type": "object", "required": ["file"],
                                                           "additionalProperties": False, "properties": {
                            "file": {"type": "string", "format": "binary"},
                            "filename": {"type": "string", "maxLength": 255,
                                         "description": "Stored instead of the file's own name"},
                            "external_ref": {"type": "string", "maxLength": 255}}}},
                    }},
                    "responses": {"201": {**_json(_ref("TaskCreated"),
                                                  "Created (or replayed: header Idempotent-Replayed: true)"),
                                          "headers": {
                                              "Location": {"required": True, "schema": STR,
                                                           "description": "The task in the API (as `url`)"},
                                              "Idempotent-Replayed": {
                                                  "schema": {"type": "string", "enum": ["true"]},
                                                  "description": "Sent when the Idempotency-Key named a task "
                                                                 "created before: this is that task"}}},
                                  **_errors(400, 401, 403, 413, 415, 422)},
                },
                "get": {
                    "summary": "List tasks, newest first",
                    "description": LIST_DESCRIPTION,
                    "parameters": PAGE_PARAMS + [
                        {"name": "status", "in": "query", "schema": _ref("TaskStatus")},
                        {"name": "doc_type", "in": "query", "schema": {"type": "string", "enum": DocType.values}},
                        QUEUE_PARAM],
                    "responses": {"200": _json(_page("Task"), "A page of tasks"), **_errors(400, 401, 403)},
                },
            },
            "/tasks/{id}": {
                "get": {
                    "summary": "One task with its steps, approval and dead letter",
                    "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}],
                    "responses": {"200": _json(_ref("TaskDetail"), "The task"), **_errors(401, 403, 404)},
                },
            },
            "/approvals": {
                "get": {
                    "summary": "Approvals in the caller's queues",
                    "description": LIST_DESCRIPTION,
                    "parameters": PAGE_PARAMS + [
                        {"name": "status", "in": "query",
                         "schema": {"type": "string", "enum": ApprovalStatus.values, "default": "pending"}},
                        QUEUE_PARAM],
                    "responses": {"200": _json(_page("Approval"), "A page of approvals"), **_errors(400, 401, 403)},
                },
            },
            "/approvals/{id}/decision": {
                "post": {
                    "summary": "Approve, reject (with a reason) or correct-then-approve",
                    "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}],
                    "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("Decision")}}},
                    "responses": {"200": _json(_ref("Approval"), "Decided"), **_errors(400, 401, 403, 404, 415),
                                  "409": _json(_ref("Error"), "Already decided (by whom, when; the approval "
                                                              "in `approval`)")},
                },
            },
            "/dead-letters": {
                "get": {
                    "summary": "Dead letters (operator, admin)",
                    "description": LIST_DESCRIPTION,
                    "parameters": PAGE_PARAMS + [
                        {"name": "status", "in": "query",
                         "schema": {"type": "string", "enum": DeadLetterStatus.values, "default": "open"}},
                        {"name": "error_type", "in": "query", "schema": {"type": "string"}}],
                    "responses": {"200": _json(_page("DeadLetter"), "A page of dead letters"),
                                  **_errors(400, 401, 403)},
                },
            },
            "/dead-letters/{id}/retry": {
                "post": {
                    "summary": "Retry from the failed step (operator, admin)",
                    "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}],
                    "description": "Takes no body (an empty one, or `{}`): the failed step is retried as it is. "
                                   "Edit-and-retry is on the dead letter's page.",
                    "responses": {"200": _json(_ref("Retried"), "Re-queued"), **_errors(400, 401, 403, 404, 409)},
                },
            },
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {
                    "error": {"type": "string", "description": "What went wrong, in words"},
                    "allowed": {"type": "array", "items": {"type": "string"},
                                "description": "With an unknown ?status= or ?doc_type=: the values there are; "
                                               "with an unknown ?queue=: the caller's queues; with an unknown "
                                               "key in the body: the keys it takes"},
                    "approval": _ref("Approval"),
                    "task_id": {"type": "integer", "description": "With 422: the task the Idempotency-Key names"}}},
                "TaskStatus": {"type": "string", "enum": TaskStatus.values},
                "TaskCreate": {"type": "object", "required": ["content"], "additionalProperties": False, "properties": {
                    "content": {"type": "string", "minLength": 1},
                    "filename": {"type": ["string", "null"], "maxLength": 255},
                    "external_ref": {"type": ["string", "null"], "maxLength": 255}}},
                "TaskCreated": _object({
                    "id": INT, "status": _ref("TaskStatus"), "url": STR, "duplicate_of": INT_OR_NULL}),
                "Task": _object({
                    "id": INT, "status": _ref("TaskStatus"),
                    "url": {"type": "string", "description": "This task in the API"},
                    "page": {"type": "string", "description": "This task's page in the browser"},
                    "filename": STR, "external_ref": STR, "doc_type": STR_OR_NULL,
                    "confidence": {"type": ["number", "null"]}, "routed_to": STR_OR_NULL,
                    "duplicate_of": INT_OR_NULL, "created_at": TIME, "finished_at": TIME_OR_NULL}),
                "TaskDetail": {"allOf": [_ref("Task"), _object({
                    "fields": {"type": "object", "description": "Extracted fields (corrections applied)"},
                    "findings": {"type": "array", "description": "What verify found"},
                    "route_reason": STR, "current_step": STR_OR_NULL, "content_sha256": STR,
                    "totals": _object({k: INT for k in USAGE} | {"cost_usd": MONEY}),
                    "steps": {"type": "array", "items": _ref("Step")},
                    "action_result": {"type": ["object", "null"]},
                    "approval": {"anyOf": [_ref("Approval"), {"type": "null"}], "description": "The latest"},
                    "dead_letter": {"anyOf": [_ref("DeadLetter"), {"type": "null"}], "description": "The latest"},
                })]},
                "Step": _object({
                    "worker": STR, "attempt": INT, "status": {"type": "string", "enum": StepStatus.values},
                    "model": STR, "prompt_version": STR, "simulated": {"type": "boolean"},
                    "llm_calls": INT, "tool_calls": INT} | {k: INT for k in USAGE if k.endswith("_tokens")} | {
                    "cost_usd": MONEY, "latency_ms": INT, "error_type": STR_OR_NULL, "error_message": STR_OR_NULL,
                    "started_at": TIME_OR_NULL, "finished_at": TIME_OR_NULL,
                    "output": {"description": "The worker's answer (JSON)"}}),
                "Approval": _object({
                    "id": INT, "task_id": INT, "queue": STR,
                    "status": {"type": "string", "enum": ApprovalStatus.values},
                    "action": {"type": "string", "description": "The action, in words"},
                    "action_kind": STR, "action_data": {"type": "object", "description": "The action, as data"},
                    "reasons": {"type": "array", "description": "Why a person must look"},
                    "decided_by": STR_OR_NULL, "decided_at": TIME_OR_NULL,
                    "rejection_reason": {"type": ["string", "null"], "description": "Its code"},
                    "comment": STR,
                    "corrections": {"type": "object", "description": "Field name to {from, to}"},
                    "created_at": TIME, "due_at": TIME_OR_NULL}),
                "Decision": {"type": "object", "required": ["decision"], "additionalProperties": False, "properties": {
                    "decision": {"type": "string", "enum": ["approve", "reject"]},
                    "reason": {"type": ["string", "null"],
                               "description": "Rejection reason code: required to reject, refused (400) "
                                              "with approve"},
                    "comment": {"type": ["string", "null"], "description": "With either decision"},
                    "fields": {"type": ["object", "null"], "description": "Corrections applied before approving: "
                               "field name to new value; the fields with them must fit the document type's schema "
                               "(dates as YYYY-MM-DD), else 400 naming each problem; refused (400) with reject "
                               "unless empty"}}},
                "DeadLetter": _object({
                    "id": INT, "task_id": INT, "worker": STR, "error_type": STR, "message": STR, "attempts": INT,
                    "fingerprint": {"type": "string", "description": "Groups letters failing the same way"},
                    "doc_type": STR_OR_NULL, "queue": STR_OR_NULL,
                    "status": {"type": "string", "enum": DeadLetterStatus.values},
                    "evidence": {"type": "object", "description": "What the failure left (a loop's calls...)"},
                    "edits": {"type": "object", "description": "Operator's edits before a retry, originals kept"},
                    "resolution_note": STR, "created_at": TIME, "resolved_at": TIME_OR_NULL}),
                "Retried": _object({"dead_letter": _ref("DeadLetter"), "task": _ref("Task")}),
            },
        },
    }
