"""The web pages: task list and page, upload, dead letters, and the approval decision.

Views stay short: reads are plain querysets, writes go through the services. HTMX requests get
a named partial of the same template (`"orchestrator/task_list.html#task-rows"`); every
hx-get/hx-post also has a real href or form action, so the pages work without JavaScript.
"""
from __future__ import annotations

import json
import math
from typing import Any

from django.contrib import messages
from django.db import DatabaseError, connection
from django.db.models import Count, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.cache import patch_vary_headers
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import trigger_client_event

from reviews.models import Approval, ApprovalStatus, Queue, RejectionReason
from reviews.services import AlreadyDecided, DecisionError, approval_decide, decision_message, user_can_decide

from .selectors import visible_tasks
from .intake import IntakeError, document_text
from .models import DocType, Source, Task, TaskStatus
from .roles import ADMIN, OPERATOR, REVIEWER, has_role, role_required
from .services import task_submit

PAGE_SIZE = 50
# The task page refreshes itself only while a worker may change it.
LIVE_STATUSES = (TaskStatus.QUEUED, TaskStatus.RUNNING)
# Fields with these words in their names hold money: shown with cents, corrected as numbers.
MONEY_FIELD_HINTS = ("amount", "total", "price", "tax")


def _render(request: HttpRequest, template: str, context: dict, status: int = 200) -> HttpResponse:
    response = render(request, template, context, status=status)
    # A page and its partial share a URL: keep browser caches from mixing them up.
    patch_vary_headers(response, ("HX-Request",))
    return response


def _keyset_page(request: HttpRequest, queryset: QuerySet) -> tuple[list, int | None]:
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


def _query_with(request: HttpRequest, **changes: Any) -> str:
    """The current query string with some parameters replaced (None removes one)."""
    params = request.GET.copy()
    for name, value in changes.items():
        params.pop(name, None)
        if value not in (None, ""):
            params[name] = value
    return params.urlencode()


def _safe_next(request: HttpRequest, default: str) -> str:
    target = request.POST.get("next", "")
    if target and url_has_allowed_host_and_scheme(target, {request.get_host()}, request.is_secure()):
        return target
    return default


# --- Open endpoints ---------------------------------------------------------------------------


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except DatabaseError:
        return JsonResponse({"status": "error", "database": "error"}, status=503)
    return JsonResponse({"status": "ok", "database": "ok"})


@role_required(REVIEWER, OPERATOR, ADMIN)
def home(request: HttpRequest) -> HttpResponse:
    """Reviewers start at what waits for them; operators and admins at the pipeline."""
    if has_role(request.user, OPERATOR, ADMIN):
        return redirect("task-list")
    return redirect("review-inbox")


# --- Tasks ------------------------------------------------------------------------------------


@role_required(REVIEWER, OPERATOR, ADMIN)
def task_list(request: HttpRequest) -> HttpResponse:
    tasks = visible_tasks(request.user)
    filters = {
        "status": request.GET.get("status", ""),
        "doc_type": request.GET.get("doc_type", ""),
        "queue": request.GET.get("queue", ""),
    }
    if filters["doc_type"]:
        tasks = tasks.filter(doc_type=filters["doc_type"])
    if filters["queue"]:
        tasks = tasks.filter(routed_to=filters["queue"])
    # Counts ignore the status filter, so each one is a link that narrows the list.
    by_status = dict(tasks.order_by().values_list("status").annotate(n=Count("id", distinct=True)))
    counts = [
        {"value": value, "label": label, "count": by_status.get(value, 0),
         "query": _query_with(request, status=value, before=None)}
        for value, label in TaskStatus.choices
    ]
    if filters["status"]:
        tasks = tasks.filter(status=filters["status"])
    rows, next_before = _keyset_page(request, tasks)
    context = {
        "tasks": rows,
        "next_query": _query_with(request, before=next_before) if next_before else "",
        "filters": filters,
        "counts": counts,
        "total": sum(c["count"] for c in counts),
        "counts_query": _query_with(request, before=None),
        "all_query": _query_with(request, status=None, before=None),
        "status_choices": TaskStatus.choices,
        "doc_type_choices": DocType.choices,
        "queue_choices": _queue_names(request.user),
        "paged": "before" in request.GET,
    }
    if request.htmx:
        partial = "status-counts" if request.htmx.target == "status-counts" else "task-rows"
        return _render(request, f"orchestrator/task_list.html#{partial}", context)
    return _render(request, "orchestrator/task_list.html", context)


def _queue_names(user) -> list[str]:
    queues = Queue.objects.all()
    if not has_role(user, OPERATOR, ADMIN):
        queues = queues.filter(reviewers=user)
    return list(queues.values_list("name", flat=True))


@role_required(REVIEWER, OPERATOR, ADMIN)
def task_detail(request: HttpRequest, task_id: int) -> HttpResponse:
    task = _task_for(request, task_id)
    context = _task_context(request, task)
    if request.htmx:
        return _render(request, "orchestrator/task_detail.html#task-live", context)
    return _render(request, "orchestrator/task_detail.html", context)


def _task_for(request: HttpRequest, task_id: int) -> Task:
    """The task if this user may see it, else 404 (never reveal that it exists)."""
    return get_object_or_404(visible_tasks(request.user).select_related("duplicate_of"), pk=task_id)


def _task_context(request: HttpRequest, task: Task, notice: tuple[str, str] | None = None) -> dict:
    steps = list(task.steps.all())
    for step in steps:
        step.input_json = _pretty(step.input)
        step.output_json = _pretty(step.output)
        step.transcript_entries = _transcript(step.transcript or [])
    approvals = list(
        task.approvals.select_related("queue", "decided_by", "rejection_reason").order_by("-id")
    )
    for approval in approvals:
        approval.can_decide = approval.status == ApprovalStatus.PENDING and user_can_decide(request.user, approval)
        approval.correction_rows = [
            {"field": name, "from": _display(change.get("from"), name), "to": _display(change.get("to"), name)}
            for name, change in (approval.corrections or {}).items()
        ]
    can_decide = any(a.can_decide for a in approvals)
    dead_letters = list(task.dead_letters.select_related("resolved_by").order_by("-id"))
    for dead_letter in dead_letters:
        dead_letter.evidence_json = _pretty(dead_letter.evidence)
    return {
        "task": task,
        "steps": steps,
        "field_rows": _field_rows(task.fields or {}),
        "editable_fields": [
            (name, _display(value, name)) for name, value in (task.fields or {}).items()
            if not isinstance(value, (list, dict))
        ],
        "approvals": approvals,
        "rejection_reasons": RejectionReason.objects.filter(active=True) if can_decide else [],
        "dead_letters": dead_letters,
        "can_retry": has_role(request.user, OPERATOR, ADMIN),
        "live": task.status in LIVE_STATUSES,
        "notice": notice,
    }


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False, default=str)


def _display(value: Any, name: str = "") -> str:
    """How a field value is shown, and pre-filled in a correction input."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        # Money reads as 250.00; a count of 10.0 as 10.
        return f"{value:.2f}" if _is_money(name) else str(int(value))
    if isinstance(value, (list, dict)):
        return _pretty(value)
    return str(value)


def _is_money(name: str) -> bool:
    return any(hint in name.lower() for hint in MONEY_FIELD_HINTS)


def _field_rows(fields: dict) -> list[dict]:
    """Extracted fields for a table; a list of objects (line items) becomes a nested table."""
    rows = []
    for name, value in fields.items():
        row: dict[str, Any] = {"name": name, "value": _display(value, name), "table": None, "block": False}
        if isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
            columns = list(dict.fromkeys(key for item in value for key in item))
            row["table"] = {
                "columns": columns,
                "rows": [[_display(item.get(col), col) for col in columns] for item in value],
            }
        elif isinstance(value, (list, dict)):
            row["block"] = True
        rows.append(row)
    return rows


def _transcript(entries: list) -> list[dict]:
    """The step's exchange with the model, flattened into titled text blocks for the template."""
    shown = []
    for entry in entries:
        if not isinstance(entry, dict):
            shown.append({"kind": "other", "title": "Entry", "blocks": [("", _pretty(entry))]})
            continue
        kind = entry.get("kind", "")
        if kind == "request":
            blocks = []
            for message in entry.get("messages") or []:
                if not isinstance(message, dict):
                    blocks.append(("message", _pretty(message)))
                    continue
                label = message.get("role", "message")
                if message.get("tool_call_id"):
                    label += f" (result of {message['tool_call_id']})"
                content = message.get("content")
                blocks.append((label, content if isinstance(content, str) else _pretty(content)))
                if message.get("tool_calls"):
                    blocks.append((f"{label}: tool calls", _pretty(message["tool_calls"])))
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
                blocks.append(("tool calls", _pretty(entry["tool_calls"])))
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
                "blocks": [("arguments", _pretty(arguments)), ("result", _pretty(entry.get("result")))],
            })
        else:
            shown.append({"kind": "other", "title": kind or "Entry", "blocks": [("", _pretty(entry))]})
    return shown


# --- Upload -----------------------------------------------------------------------------------


@role_required(OPERATOR, ADMIN)
def upload(request: HttpRequest) -> HttpResponse:
    """GET: the form. POST: each file (and the pasted text) becomes a task, or says why not."""
    context: dict[str, Any] = {"results": None, "form_error": "", "text": ""}
    if request.method == "POST":
        files = [f for f in request.FILES.getlist("files") if f.name]
        text = request.POST.get("text", "")
        context["text"] = text
        if not files and not text.strip():
            context["form_error"] = "Choose at least one file, or paste the text of a document."
        else:
            context["results"] = [_submit_file(request, f) for f in files]
            if text.strip():
                context["results"].append(_submit_text(request, text))
                context["text"] = ""
    if request.htmx:
        return _render(request, "orchestrator/upload.html#upload-results", context)
    return _render(request, "orchestrator/upload.html", context)


def _submit_file(request: HttpRequest, uploaded) -> dict:
    try:
        content = document_text(uploaded.read(), uploaded.name)
        task, _ = task_submit(content=content, filename=uploaded.name, source=Source.UPLOAD,
                              submitted_by=request.user)
    except IntakeError as exc:
        return {"name": uploaded.name, "task": None, "error": str(exc)}
    return {"name": uploaded.name, "task": task, "error": ""}


def _submit_text(request: HttpRequest, text: str) -> dict:
    try:
        task, _ = task_submit(content=text, source=Source.UPLOAD, submitted_by=request.user)
    except IntakeError as exc:
        return {"name": "Pasted text", "task": None, "error": str(exc)}
    return {"name": "Pasted text", "task": task, "error": ""}


# Dead letters: triage, retry and bulk retry live in triage.py.


# --- Approvals --------------------------------------------------------------------------------


@role_required(REVIEWER, ADMIN)
@require_POST
def approval_decide_view(request: HttpRequest, approval_id: int) -> HttpResponse:
    """Approve (with optional corrections) or reject (with a reason), exactly once."""
    approval = get_object_or_404(Approval.objects.select_related("queue", "task"), pk=approval_id)
    if not user_can_decide(request.user, approval):
        raise Http404("No such approval")
    decision = request.POST.get("decision", "")
    status = 200
    try:
        fields = _corrections(request.POST, approval.task.fields or {}) if decision == "approve" else None
        decided = approval_decide(
            approval_id=approval.pk, user=request.user, decision=decision,
            reason=request.POST.get("reason", ""), comment=request.POST.get("comment", "").strip(),
            fields=fields,
        )
    except AlreadyDecided as exc:
        status, level, text = 409, "warning", str(exc)
    except DecisionError as exc:
        status, level, text = 400, "error", str(exc)
    else:
        level, text = "success", decision_message(decided)
    if request.htmx:
        task = _task_for(request, approval.task_id)
        response = _render(request, "orchestrator/task_detail.html#task-live",
                           _task_context(request, task, notice=(level, text)), status=status)
        if status == 200:
            trigger_client_event(response, "approval-decided", {"id": approval.pk})
        return response
    messages.add_message(request, {"success": messages.SUCCESS, "warning": messages.WARNING}.get(
        level, messages.ERROR), text)
    return redirect(approval.task)


def _corrections(post, original: dict) -> dict:
    """Corrected values from `field__<name>` inputs; unchanged ones are left out.

    Money fields (and fields that held a number) are parsed as numbers.
    """
    corrections: dict[str, Any] = {}
    for key, raw in post.items():
        if not key.startswith("field__"):
            continue
        name = key.removeprefix("field__")
        before = original.get(name)
        if isinstance(before, (list, dict)):
            continue
        raw = raw.strip()
        if raw == _display(before, name):
            continue
        numeric = isinstance(before, (int, float)) and not isinstance(before, bool)
        if numeric or _is_money(name):
            if raw == "":
                corrections[name] = None
                continue
            try:
                number = float(raw.replace(",", "").lstrip("$€£"))
            except ValueError:
                number = math.nan
            if not math.isfinite(number):
                raise DecisionError(f"{name.replace('_', ' ').capitalize()} must be a number, not \"{raw}\"")
            corrections[name] = number
        else:
            corrections[name] = raw or None
    return corrections
