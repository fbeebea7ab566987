"""How pages show tasks and read forms: helpers shared by the task pages, triage and the review inbox."""
from __future__ import annotations

import json
import math
from typing import Any

from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.cache import patch_vary_headers
from django.utils.http import url_has_allowed_host_and_scheme

from reviews.services import DecisionError

from .workers.extract import field_label

PAGE_SIZE = 50
# Fields with these words in their names hold money: shown with cents, corrected as numbers.
MONEY_FIELD_HINTS = ("amount", "total", "price", "tax")


def render_page(request: HttpRequest, template: str, context: dict, status: int = 200) -> HttpResponse:
    response = render(request, template, context, status=status)
    # A page and its partial share a URL: keep browser caches from mixing them up.
    patch_vary_headers(response, ("HX-Request",))
    return response


def keyset_page(request: HttpRequest, queryset: QuerySet) -> tuple[list, int | None]:
    """Newest first, PAGE_SIZE rows older than ?before=<id>; returns (rows, next before id)."""
    try:
        before = int(request.GET.get("before", ""))
    except ValueError:
        before = None
    if before is not None:
        queryset = queryset.filter(pk__lt=before)
    rows = list(queryset.order_by("-id")[: PAGE_SIZE + 1])
    if len(rows) > PAGE_SIZE:
        return rows[:PAGE_SIZE], rows[PAGE_SIZE - 1].pk
    return rows, None


def query_with(request: HttpRequest, **changes: Any) -> str:
    """The current query string with some parameters replaced (None removes one)."""
    params = request.GET.copy()
    for name, value in changes.items():
        params.pop(name, None)
        if value not in (None, ""):
            params[name] = value
    return params.urlencode()


def safe_next(request: HttpRequest, default: str) -> str:
    target = request.POST.get("next", "")
    if target and url_has_allowed_host_and_scheme(target, {request.get_host()}, request.is_secure()):
        return target
    return default


def pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False, default=str)


def display_value(value: Any, name: str = "") -> str:
    """How a field value is shown, and pre-filled in a correction input."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        # Money reads as 250.00; a count of 10.0 as 10.
        return f"{value:.2f}" if is_money(name) else str(int(value))
    if isinstance(value, (list, dict)):
        return pretty(value)
    return str(value)


def editable_fields(fields: dict, typed=None, errors: dict[str, str] | None = None) -> list[dict]:
    """The fields a reviewer may correct before approving (not lists or objects), pre-filled with
    what a refused form had typed (`typed`, its POST data) or else the stored value; a long or
    multi-line value (an email's summary) gets a text area. `errors`: a refused decision's problems
    by input name (DecisionError.inputs); the first field at fault gets the focus."""
    typed, errors = typed or {}, errors or {}
    rows = []
    for name, stored in fields.items():
        if isinstance(stored, (list, dict)):
            continue
        value = typed.get(f"field__{name}", display_value(stored, name))
        error = errors.get(f"field__{name}", "")
        rows.append({"name": name, "value": value, "long": len(value) > 60 or "\n" in value, "error": error,
                     "focus": bool(error) and not any(row["error"] for row in rows)})
    return rows


def is_money(name: str) -> bool:
    return any(hint in name.lower() for hint in MONEY_FIELD_HINTS)


def routing_rule_shown(action_data: dict) -> dict | None:
    """The rule that routed an approval's task, for its page: its name (free text, which may give
    an old threshold) and its condition as recorded when it routed, else the rule's condition
    now, labelled so. None when the approval names no rule."""
    from .models import RoutingRule
    from .workers.route import FALLBACK_CONDITION

    name = (action_data or {}).get("rule")
    if not name:
        return None
    recorded = action_data.get("rule_condition")
    if recorded:
        return {"name": name, "condition": recorded, "note": "as it was when it routed this task"}
    if name == "(fallback)":
        return {"name": name, "condition": FALLBACK_CONDITION, "note": ""}
    rule = RoutingRule.objects.filter(name=name).order_by("-active", "priority", "id").first()
    if rule is None:
        return {"name": name, "condition": "", "note": "no rule has this name now"}
    return {"name": name, "condition": rule.condition,
            "note": "its condition now: the one it routed by was not recorded"}


def field_rows(fields: dict) -> list[dict]:
    """Extracted fields for a table; a list of objects (line items) becomes a nested table."""
    rows = []
    for name, value in fields.items():
        row: dict[str, Any] = {"name": name, "value": display_value(value, name), "table": None, "block": False}
        if isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
            columns = list(dict.fromkeys(key for item in value for key in item))
            row["table"] = {
                "columns": columns,
                "rows": [[display_value(item.get(col), col) for col in columns] for item in value],
            }
        elif isinstance(value, (list, dict)):
            row["block"] = True
        rows.append(row)
    return rows


def transcript_blocks(entries: list) -> list[dict]:
    """The step's exchange with the model, flattened into titled text blocks for the template."""
    shown = []
    for entry in entries:
        if not isinstance(entry, dict):
            shown.append({"kind": "other", "title": "Entry", "blocks": [("", pretty(entry))]})
            continue
        kind = entry.get("kind", "")
        if kind == "request":
            blocks = []
            for message in entry.get("messages") or []:
                if not isinstance(message, dict):
                    blocks.append(("message", pretty(message)))
                    continue
                label = message.get("role", "message")
                if message.get("tool_call_id"):
                    label += f" (result of {message['tool_call_id']})"
                content = message.get("content")
                blocks.append((label, content if isinstance(content, str) else pretty(content)))
                if message.get("tool_calls"):
                    blocks.append((f"{label}: tool calls", pretty(message["tool_calls"])))
            shown.append({"kind": "request", "title": f"Sent to {entry.get('model', 'the model')}", "blocks": blocks})
        elif kind == "response":
            usage = entry.get("usage") or {}
            title = f"Answer from {entry.get('model', 'the model')}"
            if entry.get("latency_ms") is not None:
                title += f", {entry['latency_ms']} ms"
            if usage:
                title += " (" + ", ".join(f"{k} {v}" for k, v in usage.items()) + " tokens)"
            blocks = [("content", entry.get("content") or "(no text)")]
            if entry.get("tool_calls"):
                blocks.append(("tool calls", pretty(entry["tool_calls"])))
            shown.append({"kind": "response", "title": title, "blocks": blocks})
        elif kind == "tool_call":
            arguments = entry.get("arguments")
            if isinstance(arguments, str):
                try:
                    arguments = json.loads(arguments)
                except ValueError:
                    pass
            shown.append({
                "kind": "tool", "title": f"Tool call: {entry.get('tool', '?')}",
                "blocks": [("arguments", pretty(arguments)), ("result", pretty(entry.get("result")))],
            })
        else:
            shown.append({"kind": "other", "title": kind or "Entry", "blocks": [("", pretty(entry))]})
    return shown


def corrections_from_form(post, original: dict) -> dict:
    """Corrected values from `field__<name>` inputs; unchanged ones are left out.

    Money fields (and fields that held a number) are parsed as numbers.
    """
    corrections: dict[str, Any] = {}
    problems, inputs = [], {}
    for key, raw in post.items():
        if not key.startswith("field__"):
            continue
        name = key.removeprefix("field__")
        before = original.get(name)
        if isinstance(before, (list, dict)):
            continue
        raw = raw.strip()
        if raw == display_value(before, name):
            continue
        numeric = isinstance(before, (int, float)) and not isinstance(before, bool)
        if numeric or is_money(name):
            if raw == "":
                corrections[name] = None
                continue
            try:
                number = float(raw.replace(",", "").lstrip("$€£"))
            except ValueError:
                number = math.nan
            if not math.isfinite(number):
                problems.append(f"{field_label(name)} must be a number, not \"{raw}\"")
                inputs[key] = problems[-1]
                continue
            corrections[name] = number
        else:
            corrections[name] = raw or None
    if problems:
        raise DecisionError("; ".join(problems), inputs)
    return corrections
