"""The web pages: task list and page, upload, dead letters, and the approval decision.

Views stay short: reads are plain querysets, writes go through the services. HTMX requests get
a named partial of the same template (`"orchestrator/task_list.html#task-rows"`); every
hx-get/hx-post also has a real href or form action, so the pages work without JavaScript.
"""
from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.db.models import Count
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect
from django.views.decorators.http import require_POST, require_safe
from django_htmx.http import trigger_client_event

from reviews.models import Approval, ApprovalStatus, RejectionReason
from reviews.services import AlreadyDecided, DecisionError, approval_decide, decision_message, user_can_decide

from .health import health_check
from .intake import IntakeError, document_text
from .models import DocType, Source, Task, TaskStatus
from .presenters import (
    corrections_from_form, display_value, editable_fields, field_rows, keyset_page, pretty, query_with, render_page,
    routing_rule_shown, transcript_blocks,
)
from .roles import ADMIN, OPERATOR, REVIEWER, has_role, role_required
from .selectors import visible_queue_names, visible_tasks
from .services import task_submit

# /healthz's Retry-After on a 503, in seconds: about twice its own checks' bound (health.py, 2 s).
HEALTHZ_RETRY_AFTER_S = 5
# The task page refreshes itself only while a worker may change it.
LIVE_STATUSES = (TaskStatus.QUEUED, TaskStatus.RUNNING)


# --- Open endpoints ---------------------------------------------------------------------------


@require_safe  # GET and HEAD: load balancers and monitors probe with either
def healthz(request: HttpRequest) -> JsonResponse:
    """Open: 200 when the database and the broker both answer, else 503 saying which does not."""
    checks = health_check()
    body = {"status": "ok" if all(checks.values()) else "error"}
    body.update({name: "ok" if ok else "error" for name, ok in checks.items()})
    if body["status"] == "ok":
        return JsonResponse(body)
    response = JsonResponse(body, status=503)
    # When to ask again: a client honouring it does not hammer a process that is already struggling.
    response["Retry-After"] = str(HEALTHZ_RETRY_AFTER_S)
    return response


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
         "query": query_with(request, status=value, before=None)}
        for value, label in TaskStatus.choices
    ]
    if filters["status"]:
        tasks = tasks.filter(status=filters["status"])
    rows, next_before = keyset_page(request, tasks)
    context = {
        "tasks": rows,
        "next_query": query_with(request, before=next_before) if next_before else "",
        "filters": filters,
        "counts": counts,
        "total": sum(c["count"] for c in counts),
        "counts_query": query_with(request, before=None),
        "all_query": query_with(request, status=None, before=None),
        "status_choices": TaskStatus.choices,
        "doc_type_choices": DocType.choices,
        "queue_choices": visible_queue_names(request.user),
        "paged": "before" in request.GET,
    }
    if request.htmx:
        partial = "status-counts" if request.htmx.target == "status-counts" else "task-rows"
        return render_page(request, f"orchestrator/task_list.html#{partial}", context)
    return render_page(request, "orchestrator/task_list.html", context)


@role_required(REVIEWER, OPERATOR, ADMIN)
def task_detail(request: HttpRequest, task_id: int) -> HttpResponse:
    task = task_for(request, task_id)
    context = task_context(request, task)
    if request.htmx:
        return render_page(request, "orchestrator/task_detail.html#task-live", context)
    return render_page(request, "orchestrator/task_detail.html", context)


def task_for(request: HttpRequest, task_id: int) -> Task:
    """The task if this user may see it, else 404 (never reveal that it exists)."""
    return get_object_or_404(visible_tasks(request.user).select_related("duplicate_of"), pk=task_id)


def task_context(request: HttpRequest, task: Task, notice: tuple[str, str] | None = None, typed=None,
                 errors: dict[str, str] | None = None) -> dict:
    """`typed`: a refused decision's form data, so the corrections and comment are shown again;
    `errors`: why, by input (DecisionError.inputs), shown next to each input at fault."""
    typed, errors = typed or {}, errors or {}
    steps = list(task.steps.all())
    for step in steps:
        step.input_json = pretty(step.input)
        step.output_json = pretty(step.output)
        step.transcript_entries = transcript_blocks(step.transcript or [])
    approvals = list(
        task.approvals.select_related("queue", "decided_by", "rejection_reason").order_by("-id")
    )
    for approval in approvals:
        approval.can_decide = approval.status == ApprovalStatus.PENDING and user_can_decide(request.user, approval)
        approval.rule_shown = routing_rule_shown(approval.action_data)
        approval.correction_rows = [
            {"field": name, "from": display_value(change.get("from"), name), "to": display_value(change.get("to"), name)}
            for name, change in (approval.corrections or {}).items()
        ]
    can_decide = any(a.can_decide for a in approvals)
    dead_letters = list(task.dead_letters.select_related("resolved_by").order_by("-id"))
    for dead_letter in dead_letters:
        dead_letter.evidence_json = pretty(dead_letter.evidence)
    return {
        "task": task,
        "steps": steps,
        "field_rows": field_rows(task.fields or {}),
        "editable_fields": editable_fields(task.fields or {}, typed, errors),
        "errors": errors,
        "typed_comment": {typed.get("decision", ""): typed.get("comment", "")},
        "approvals": approvals,
        "rejection_reasons": RejectionReason.objects.filter(active=True) if can_decide else [],
        "dead_letters": dead_letters,
        "can_retry": has_role(request.user, OPERATOR, ADMIN),
        "live": task.status in LIVE_STATUSES,
        "notice": notice,
    }


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
        return render_page(request, "orchestrator/upload.html#upload-results", context)
    return render_page(request, "orchestrator/upload.html", context)


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
    status, errors = 200, {}
    try:
        fields = corrections_from_form(request.POST, approval.task.fields or {}) if decision == "approve" else None
        decided = approval_decide(
            approval_id=approval.pk, user=request.user, decision=decision,
            reason=request.POST.get("reason", ""), comment=request.POST.get("comment", "").strip(),
            fields=fields,
        )
    except AlreadyDecided as exc:
        status, level, text = 409, "warning", str(exc)
    except DecisionError as exc:
        status, level, text, errors = 400, "error", str(exc), exc.inputs
    else:
        level, text = "success", decision_message(decided)
    typed = request.POST if status == 400 else None
    if request.htmx:
        task = task_for(request, approval.task_id)
        response = render_page(request, "orchestrator/task_detail.html#task-live",
                               task_context(request, task, notice=(level, text), typed=typed, errors=errors),
                               status=status)
        if status == 200:
            trigger_client_event(response, "approval-decided", {"id": approval.pk})
        return response
    if typed is not None:  # refused: the page again, with what was typed and why it was refused
        return render_page(request, "orchestrator/task_detail.html",
                           task_context(request, task_for(request, approval.task_id), notice=(level, text),
                                        typed=typed, errors=errors), status=400)
    messages.add_message(request, {"success": messages.SUCCESS, "warning": messages.WARNING}.get(
        level, messages.ERROR), text)
    return redirect(approval.task)


