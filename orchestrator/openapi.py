"""The OpenAPI 3.1 description of /api/v1, kept next to the code it describes (api.py)."""
from __future__ import annotations


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


ERROR = _json(_ref("Error"), "Error")
PAGE_PARAMS = [
    {"name": "before", "in": "query", "schema": {"type": "integer"}, "description": "Keyset cursor: ids below this"},
    {"name": "limit", "in": "query", "schema": {"type": "integer", "maximum": 200, "default": 50}},
]


def _page(item: str) -> dict:
    return {"type": "object", "properties": {
        "results": {"type": "array", "items": _ref(item)},
        "next": {"type": ["string", "null"], "description": "URL of the next page"}}}


def document(server_url: str) -> dict:
    return {
        "openapi": "3.1.0",
        "info": {"title": "Steward API", "version": "1.0.0",
                 "description": "Submit documents, read results, decide approvals, retry dead letters. "
                                "Authenticate with `Authorization: Bearer <token>` (manage.py create_api_token)."},
        "servers": [{"url": server_url}],
        "security": [{"bearer": []}],
        "paths": {
            "/tasks": {
                "post": {
                    "summary": "Submit a document (operator, admin)",
                    "parameters": [{"name": "Idempotency-Key", "in": "header", "schema": {"type": "string", "maxLength": 255},
                                    "description": "Same key, same task: a replay returns the first task"}],
                    "requestBody": {"required": True, "content": {
                        "application/json": {"schema": _ref("TaskCreate")},
                        "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
                            "file": {"type": "string", "format": "binary"},
                            "external_ref": {"type": "string"}}}},
                    }},
                    "responses": {"201": _json(_ref("TaskCreated"), "Created (or replayed)"),
                                  "400": ERROR, "401": ERROR, "403": ERROR},
                },
                "get": {
                    "summary": "List tasks, newest first",
                    "parameters": PAGE_PARAMS + [
                        {"name": "status", "in": "query", "schema": _ref("TaskStatus")},
                        {"name": "doc_type", "in": "query", "schema": {"type": "string"}},
                        {"name": "queue", "in": "query", "schema": {"type": "string"}}],
                    "responses": {"200": _json(_page("Task"), "A page of tasks"), "400": ERROR, "401": ERROR},
                },
            },
            "/tasks/{id}": {
                "get": {
                    "summary": "One task with its steps, approval and dead letter",
                    "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}],
                    "responses": {"200": _json(_ref("TaskDetail"), "The task"), "401": ERROR, "404": ERROR},
                },
            },
            "/approvals": {
                "get": {
                    "summary": "Approvals in the caller's queues",
                    "parameters": PAGE_PARAMS + [
                        {"name": "status", "in": "query", "schema": {"type": "string", "default": "pending"}},
                        {"name": "queue", "in": "query", "schema": {"type": "string"}}],
                    "responses": {"200": _json(_page("Approval"), "A page of approvals"), "401": ERROR, "403": ERROR},
                },
            },
            "/approvals/{id}/decision": {
                "post": {
                    "summary": "Approve, reject (with a reason) or correct-then-approve",
                    "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}],
                    "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("Decision")}}},
                    "responses": {"200": _json(_ref("Approval"), "Decided"),
                                  "400": ERROR, "401": ERROR, "404": ERROR,
                                  "409": _json(_ref("Error"), "Already decided (by whom, when)")},
                },
            },
            "/dead-letters": {
                "get": {
                    "summary": "Dead letters (operator, admin)",
                    "parameters": PAGE_PARAMS + [
                        {"name": "status", "in": "query", "schema": {"type": "string", "default": "open"}},
                        {"name": "error_type", "in": "query", "schema": {"type": "string"}}],
                    "responses": {"200": _json(_page("DeadLetter"), "A page of dead letters"), "401": ERROR, "403": ERROR},
                },
            },
            "/dead-letters/{id}/retry": {
                "post": {
                    "summary": "Retry from the failed step (operator, admin)",
                    "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}],
                    "responses": {"200": _json({"type": "object"}, "Re-queued"), "401": ERROR, "403": ERROR,
                                  "404": ERROR, "409": ERROR},
                },
            },
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
                "TaskStatus": {"type": "string", "enum": ["queued", "running", "awaiting_approval", "completed",
                                                          "rejected", "dead_lettered", "discarded"]},
                "TaskCreate": {"type": "object", "required": ["content"], "properties": {
                    "content": {"type": "string", "minLength": 1}, "filename": {"type": "string"},
                    "external_ref": {"type": "string"}}},
                "TaskCreated": {"type": "object", "required": ["id", "status", "url"], "properties": {
                    "id": {"type": "integer"}, "status": _ref("TaskStatus"), "url": {"type": "string"},
                    "duplicate_of": {"type": ["integer", "null"]}}},
                "Task": {"type": "object", "properties": {
                    "id": {"type": "integer"}, "status": _ref("TaskStatus"), "url": {"type": "string"},
                    "doc_type": {"type": ["string", "null"]}, "confidence": {"type": ["number", "null"]},
                    "routed_to": {"type": ["string", "null"]}, "duplicate_of": {"type": ["integer", "null"]}}},
                "TaskDetail": {"allOf": [_ref("Task"), {"type": "object", "properties": {
                    "fields": {"type": "object"}, "findings": {"type": "array"},
                    "totals": {"type": "object", "properties": {k: {"type": "integer"} for k in (
                        "llm_calls", "tool_calls", "input_tokens", "cached_tokens", "output_tokens")}
                        | {"cost_usd": {"type": "string"}}},
                    "steps": {"type": "array", "items": {"type": "object"}},
                    "approval": {"anyOf": [_ref("Approval"), {"type": "null"}]},
                    "dead_letter": {"anyOf": [_ref("DeadLetter"), {"type": "null"}]}}}]},
                "Approval": {"type": "object", "properties": {
                    "id": {"type": "integer"}, "task_id": {"type": "integer"}, "queue": {"type": "string"},
                    "status": {"type": "string", "enum": ["pending", "approved", "rejected", "expired", "auto_approved", "superseded"]},
                    "action": {"type": "string"}, "decided_by": {"type": ["string", "null"]},
                    "decided_at": {"type": ["string", "null"]}, "rejection_reason": {"type": ["string", "null"]},
                    "corrections": {"type": "object"}}},
                "Decision": {"type": "object", "required": ["decision"], "properties": {
                    "decision": {"type": "string", "enum": ["approve", "reject"]},
                    "reason": {"type": "string", "description": "Rejection reason code (required to reject)"},
                    "comment": {"type": "string"},
                    "fields": {"type": "object", "description": "Corrections applied before approving: field name to "
                               "new value; the fields with them must fit the document type's schema "
                               "(dates as YYYY-MM-DD), else 400 naming each problem"}}},
                "DeadLetter": {"type": "object", "properties": {
                    "id": {"type": "integer"}, "task_id": {"type": "integer"}, "worker": {"type": "string"},
                    "error_type": {"type": "string"}, "message": {"type": "string"}, "attempts": {"type": "integer"},
                    "fingerprint": {"type": "string"}, "status": {"type": "string"},
                    "doc_type": {"type": ["string", "null"]}, "queue": {"type": ["string", "null"]},
                    "edits": {"type": "object", "description": "Operator's edits before a retry, originals kept"},
                    "resolution_note": {"type": "string"}}},
            },
        },
    }
