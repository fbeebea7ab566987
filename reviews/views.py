"""The review pages: the inbox (oldest first), one item with its document, deciding, and the
signed email links.

HTMX requests get a named partial of the same template; every hx-get/hx-post also has a real
href or form action, so the pages work without JavaScript. After each decision the response
carries `HX-Trigger: approval-decided`, and the inbox counts refresh on it (and every 10 s).
"""
from __future__ import annotations

from django.contrib import messages
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST
from django_htmx.http import trigger_client_event

from orchestrator.roles import ADMIN, REVIEWER, role_required
from orchestrator.presenters import (
    corrections_from_form, display_value, editable_fields, field_rows, render_page, routing_rule_shown,
)

from .links import LinkError, email_link_consume, email_link_resolve
from .models import Approval, ApprovalStatus, RejectionReason
from .selectors import (
    COUNT_CAP, Cursor, approval_for_reviewer, inbox_page, neighbours, queues_with_counts, review_queues,
)
from .services import AlreadyDecided, DecisionError, approval_decide, decision_message, user_can_decide


def _count_label(total: int, capped: bool) -> str:
    return f"{total:,}+" if capped else f"{total:,}"


def _counts_context(request: HttpRequest, now) -> dict:
    """The user's queues with their pending and past-SLA counts, each capped at COUNT_CAP."""
    queues = queues_with_counts(request.user, now)
    for queue in queues:
        queue.pending_label = _count_label(min(queue.pending, COUNT_CAP), queue.pending > COUNT_CAP)
        queue.overdue_label = _count_label(min(queue.overdue, COUNT_CAP), queue.overdue > COUNT_CAP)
    return {
        "queues": queues,
        "selected": request.GET.get("queue", ""),
        "pending_label": _count_label(sum(min(q.pending, COUNT_CAP) for q in queues),
                                      any(q.pending > COUNT_CAP for q in queues)),
        "overdue_label": _count_label(sum(min(q.overdue, COUNT_CAP) for q in queues),
                                      any(q.overdue > COUNT_CAP for q in queues)),
    }


def _annotate_rows(rows: list[Approval], now) -> None:
    for row in rows:
        row.overdue = bool(row.due_at and row.due_at < now)
        row.amount = (row.action_data or {}).get("amount")
        row.counterparty = ((row.action_data or {}).get("fields") or {}).get("counterparty")


@role_required(REVIEWER, ADMIN)
def inbox(request: HttpRequest) -> HttpResponse:
    """Pending approvals in the user's queues, oldest first, 50 a page (keyset on created_at, id)."""
    now = timezone.now()
    context = _counts_context(request, now)
    if request.htmx and request.htmx.target == "inbox-counts":
        return render_page(request, "reviews/inbox.html#inbox-counts", context)
    selected = context["selected"]
    queue_ids = [q.pk for q in context["queues"] if not selected or q.name == selected]
    after = Cursor.decode(request.GET.get("after", "")) if request.GET.get("after") else None
    rows, next_cursor = inbox_page(queue_ids, after)
    _annotate_rows(rows, now)
    params = request.GET.copy()
    params.pop("after", None)
    base_query = params.urlencode()
    if next_cursor:
        params["after"] = next_cursor.encode()
    context.update(
        rows=rows,
        next_query=params.urlencode() if next_cursor else "",
        base_query=base_query,
        paged=after is not None,
        now=now,
    )
    if request.htmx and after is not None:
        return render_page(request, "reviews/inbox.html#inbox-rows", context)
    return render_page(request, "reviews/inbox.html", context)


def _neighbours(user, approval: Approval) -> tuple[Approval | None, Approval | None]:
    """The pending approvals before and after this one in inbox order; past the last one, the
    oldest still waiting (so "next" after the last decision goes round to what is left)."""
    queue_ids = list(review_queues(user).values_list("id", flat=True))
    previous, following = neighbours(queue_ids, approval)
    if following is None:
        oldest = inbox_page(queue_ids, size=1)[0]
        following = oldest[0] if oldest and oldest[0].pk != approval.pk else None
    return previous, following


def _item_context(request: HttpRequest, approval: Approval, notice: tuple[str, str] | None = None,
                  typed=None, errors: dict[str, str] | None = None) -> dict:
    """`typed`: the refused form's data, so the reviewer's corrections and comment are shown again;
    `errors`: why, by input (DecisionError.inputs), shown next to each input at fault."""
    task = approval.task
    typed, errors = typed or {}, errors or {}
    previous, following = _neighbours(request.user, approval)
    pending = approval.status == ApprovalStatus.PENDING
    return {
        "approval": approval,
        "task": task,
        "successor": Approval.objects.select_related("queue").filter(replaces=approval).first()
        if approval.status == ApprovalStatus.SUPERSEDED else None,
        "rule_shown": routing_rule_shown(approval.action_data),
        "field_rows": field_rows(task.fields or {}),
        "editable_fields": editable_fields(task.fields or {}, typed, errors) if pending else [],
        "errors": errors,
        # The comment typed in the refused form, by decision: {"approve": "..."} or {"reject": "..."}.
        "typed_comment": {typed.get("decision", ""): typed.get("comment", "")},
        "rejection_reasons": RejectionReason.objects.filter(active=True) if pending else [],
        "correction_rows": [
            {"field": name, "from": display_value(change.get("from"), name), "to": display_value(change.get("to"), name)}
            for name, change in (approval.corrections or {}).items()
        ],
        "previous": previous,
        "following": following,
        "overdue": bool(pending and approval.due_at and approval.due_at < timezone.now()),
        "notice": notice,
    }


@role_required(REVIEWER, ADMIN)
def item(request: HttpRequest, approval_id: int) -> HttpResponse:
    """One approval with everything needed to decide it: action, reasons, fields, the document."""
    approval = approval_for_reviewer(request.user, approval_id)
    context = _item_context(request, approval)
    if request.htmx:
        return render_page(request, "reviews/item.html#review-item", context)
    return render_page(request, "reviews/item.html", context)


@role_required(REVIEWER, ADMIN)
@require_POST
def decide(request: HttpRequest, approval_id: int) -> HttpResponse:
    """Approve (with optional corrections) or reject (with a reason), once.

    From an inbox row (HTMX, `row=1`) the answer is the row; from the item page the item; without
    JavaScript a redirect: on to the next item after a decision, back to this one otherwise.
    """
    approval = approval_for_reviewer(request.user, approval_id)
    decision = request.POST.get("decision", "")
    status, errors = 200, {}
    try:
        fields = corrections_from_form(request.POST, approval.task.fields or {}) if decision == "approve" else None
        approval = approval_decide(
            approval_id=approval.pk, user=request.user, decision=decision,
            reason=request.POST.get("reason", ""), comment=request.POST.get("comment", "").strip(),
            fields=fields, via="inbox",
        )
        level, text = "success", decision_message(approval)
    except AlreadyDecided as exc:
        status, level, text = 409, "warning", str(exc)
        approval = approval_for_reviewer(request.user, approval_id)
    except DecisionError as exc:
        status, level, text, errors = 400, "error", str(exc), exc.inputs
    if request.htmx:
        if request.POST.get("row"):
            _annotate_rows([approval], timezone.now())
            response = render_page(request, "reviews/_approval_row.html",
                               {"row": approval, "notice": (level, text), "decided": True}, status=status)
        else:
            typed = request.POST if status == 400 else None
            response = render_page(request, "reviews/item.html#review-item",
                                   _item_context(request, approval, notice=(level, text), typed=typed, errors=errors),
                                   status=status)
        if status == 200:
            trigger_client_event(response, "approval-decided", {"id": approval.pk, "status": approval.status})
        return response
    if status == 400:  # refused: the page again, with what the reviewer typed and why it was refused
        return render_page(request, "reviews/item.html",
                           _item_context(request, approval, notice=(level, text), typed=request.POST, errors=errors),
                           status=400)
    messages.add_message(request, {"success": messages.SUCCESS, "warning": messages.WARNING}.get(
        level, messages.ERROR), text)
    if status != 200:
        return redirect("review-item", approval_id=approval.pk)
    following = _neighbours(request.user, approval)[1]
    return redirect("review-item", approval_id=following.pk) if following else redirect("review-inbox")


# --- Signed email links -------------------------------------------------------------------------


@never_cache
@require_http_methods(["GET", "POST"])
def link(request: HttpRequest, token: str) -> HttpResponse:
    """Decide from an email, without a session. GET only asks to confirm (mail clients and link
    scanners open links by themselves); the POST from that page decides, once, as the reviewer
    the link was sent to. Rejecting asks for the reason here too."""
    try:
        email_link = email_link_resolve(token)
    except LinkError as exc:
        return _link_page(request, {"error": str(exc)}, status=exc.status)
    approval = email_link.approval
    reviewer = email_link.user
    reject = (request.POST.get("decision") if request.method == "POST" else request.GET.get("action")) == "reject"
    context = {"approval": approval, "task": approval.task, "reviewer": reviewer, "reject": reject,
               "token": token, "rejection_reasons": RejectionReason.objects.filter(active=True),
               "item_url": reverse("review-item", args=[approval.pk])}
    if approval.status != ApprovalStatus.PENDING:
        return _link_page(request, {**context, "error": str(AlreadyDecided(approval))}, status=409)
    if not user_can_decide(reviewer, approval):
        return _link_page(request, {**context, "error": f"{reviewer.get_username()} is no longer a reviewer of "
                                                      f"{approval.queue.name}, so this link cannot decide it."},
                          status=403)
    if request.method == "GET":
        return _link_page(request, context)
    try:
        with transaction.atomic():
            if not email_link_consume(email_link):
                raise LinkError("This link was just used; each link works once.", status=410)
            decided = approval_decide(
                approval_id=approval.pk, user=reviewer, decision=request.POST.get("decision", ""),
                reason=request.POST.get("reason", ""), comment=request.POST.get("comment", "").strip(),
                via="email link",
            )
    except LinkError as exc:
        return _link_page(request, {**context, "error": str(exc)}, status=exc.status)
    except AlreadyDecided as exc:
        return _link_page(request, {**context, "error": str(exc)}, status=409)
    except DecisionError as exc:
        # Nothing was decided and the link is still unused: ask again.
        return _link_page(request, {**context, "form_error": str(exc), "errors": exc.inputs}, status=400)
    return _link_page(request, {**context, "done": decision_message(decided), "decided": decided})


def _link_page(request: HttpRequest, context: dict, status: int = 200) -> HttpResponse:
    response = render_page(request, "reviews/link.html", context, status=status)
    response["X-Robots-Tag"] = "noindex, nofollow"
    return response
