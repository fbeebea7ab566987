"""Dead-letter triage for operators: groups, search, detail, retry, edit-and-retry, discard,
requeue, bulk retry with its live report, and the stuck-work page.

Every view is for operators and admins only; every write goes through a service that does a
compare-and-set, so a double click gets "already retried", never a second retry. Pages work
without JavaScript; HTMX swaps named partials of the same templates.
"""
from __future__ import annotations

import json
from datetime import timedelta

from django.conf import settings
from django.contrib import messages
from django.db.models import Count, Max, Min, Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.defaultfilters import pluralize
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST, require_safe

from reviews.models import Queue

from .backlog import messages_waiting_for_page
from .models import (
    BulkRetry, BulkRetryItem, BulkRetryItemStatus, BulkRetryStatus, DeadLetter, DeadLetterGroup, DeadLetterStatus,
    DocType,
    SweepAction, SweepRun, Task, TaskStatus,
)
from .roles import ADMIN, OPERATOR, role_required
from .selectors import TRIAGE_FILTERS, TRIAGE_SINCE, open_dead_letters
from .services import (
    BULK_RETRY_RATES, EDITABLE_AT, PACE_REFUSED, NotAllowed, bulk_retries_settle, bulk_retry_control,
    bulk_retry_create, dead_letter_discard, dead_letter_edit_retry, dead_letter_requeue, dead_letter_retry,
    tick_interval,
)
from .presenters import keyset_page, pretty, query_with, render_page, safe_next, transcript_blocks
from .pipeline import queue_for
from .sweeper import OLDEST_FIRST, queued_by_celery_queue
from .views import task_context, task_for
from .workers import PIPELINE

# Groups shown at most (largest first); the total still counts every open letter.
MAX_GROUPS = 100
FILTER_NAMES = TRIAGE_FILTERS + ("since", "q")


def _filters(params) -> dict:
    filters = {name: (params.get(name) or "").strip()[:200] for name in FILTER_NAMES}
    if filters["since"] not in TRIAGE_SINCE:
        filters["since"] = ""
    return filters


def _say(request: HttpRequest, level: str, text: str) -> None:
    messages.add_message(request, messages.SUCCESS if level == "success" else messages.WARNING, text)


# --- The triage page ----------------------------------------------------------------------------


@role_required(OPERATOR, ADMIN)
@require_safe  # GET and HEAD: monitors and link checkers probe pages with HEAD
def triage(request: HttpRequest) -> HttpResponse:
    """Open dead letters grouped by fingerprint, then the matching letters newest first,
    keyset-paginated (?before=<id>). Unfiltered, the groups come from DeadLetterGroup (kept by
    the services), so the page costs the same at 100 or 100,000 letters; filtered, one aggregate
    query counts the matching letters."""
    filters = _filters(request.GET)
    group_filters = dict(filters, fingerprint="")
    if any(group_filters.values()):
        # Filtered: count the matching open letters, one aggregate query.
        groups = list(
            open_dead_letters(group_filters).order_by().values("fingerprint")
            .annotate(count=Count("id"), first_seen=Min("created_at"), last_seen=Max("created_at"),
                      example_id=Max("id"))
            .order_by("-count", "fingerprint")
        )
        examples = DeadLetter.objects.in_bulk([g["example_id"] for g in groups[:MAX_GROUPS]])
        for group in groups[:MAX_GROUPS]:
            group["example"] = examples.get(group["example_id"])
    else:
        # Unfiltered: the groups as the services keep them, without counting every letter.
        groups = [
            {"fingerprint": g.fingerprint, "count": g.open_count, "first_seen": g.first_seen,
             "last_seen": g.last_seen, "example_id": g.example_id, "example": g}
            for g in DeadLetterGroup.objects.filter(open_count__gt=0).order_by("-open_count", "fingerprint")
        ]
    total = sum(group["count"] for group in groups)
    groups = groups[:MAX_GROUPS]
    for group in groups:
        group["query"] = query_with(request, fingerprint=group["fingerprint"], before=None)
        group["selected"] = group["fingerprint"] == filters["fingerprint"]
    rows, next_before = keyset_page(request, open_dead_letters(filters).select_related("task"))
    context = {
        "filters": filters,
        "groups": groups,
        "total": total,
        "dead_letters": rows,
        "next_query": query_with(request, before=next_before) if next_before else "",
        "filter_query": query_with(request, before=None),
        "clear_group_query": query_with(request, fingerprint=None, before=None),
        "filtered": any(filters.values()),
        "paged": "before" in request.GET,
        "worker_choices": PIPELINE,
        "error_type_choices": sorted({g["example"].error_type for g in groups if g["example"]}
                                     | ({filters["error_type"]} if filters["error_type"] else set())),
        "doc_type_choices": DocType.values,
        "queue_choices": list(Queue.objects.values_list("name", flat=True)),
        "since_choices": [(key, label) for key, (label, _) in TRIAGE_SINCE.items()],
        "bulk_retries": _recent_bulk_retries(),
    }
    if request.htmx:
        partial = "dl-rows" if "before" in request.GET else "triage-results"
        return render_page(request, f"orchestrator/triage/triage.html#{partial}", context)
    return render_page(request, "orchestrator/triage/triage.html", context)


def _recent_bulk_retries() -> list[BulkRetry]:
    recent = list(BulkRetry.objects.values_list("id", flat=True)[:5])
    bulk_retries_settle(bulk_ids=recent)  # paused or cancelled: what their items did since
    return list(BulkRetry.objects.filter(pk__in=recent).select_related("created_by"))


# --- One dead letter ----------------------------------------------------------------------------


@role_required(OPERATOR, ADMIN)
@require_safe
def dead_letter_detail(request: HttpRequest, dead_letter_id: int) -> HttpResponse:
    letter = get_object_or_404(DeadLetter, pk=dead_letter_id)
    return _detail_page(request, letter)


def _detail_page(request: HttpRequest, letter: DeadLetter, *, refused: dict[str, str] | None = None,
                 typed=None) -> HttpResponse:
    """The dead letter's page. `refused`: why an edit or a discard was refused, by the name of the
    input at fault ("fields", "doc_type", "reason"), shown next to it (answered with 400); `typed`:
    that form's data, shown again rather than the original fields."""
    letter = DeadLetter.objects.select_related("task", "step", "resolved_by").get(pk=letter.pk)
    refused, typed = refused or {}, typed or {}
    task = letter.task
    steps = list(task.steps.all())
    failing = letter.step
    if failing is not None:
        failing.input_json = pretty(failing.input)
        failing.output_json = pretty(failing.output)
        failing.transcript_entries = transcript_blocks(failing.transcript or [])
    edit_step = task.current_step if letter.status == DeadLetterStatus.OPEN else ""
    other_letters = list(task.dead_letters.exclude(pk=letter.pk).select_related("resolved_by").order_by("pk"))
    attempts = _attempts_of(letter, [s for s in steps if s.worker == (letter.worker or task.current_step)],
                            earlier=[o for o in other_letters if o.pk < letter.pk])
    context = {
        "dl": letter,
        "task": task,
        "failing": failing,
        "attempts": attempts,
        "steps": steps,
        "evidence_json": pretty(letter.evidence) if letter.evidence else "",
        "edit_step": edit_step,
        "can_edit": edit_step in EDITABLE_AT,
        "edit_fields_json": typed["fields"] if "fields" in typed else pretty(_fields_to_edit(task, steps)),
        "typed_doc_type": typed.get("doc_type", ""),
        "refused": refused,
        "doc_type_choices": DocType.values,
        "edit_rows": [
            {"name": name, "from": pretty(change.get("from")), "to": pretty(change.get("to"))}
            for name, change in (letter.edits or {}).get("fields", {}).items()
        ],
        "other_letters": other_letters,
        # What became of this letter's retry: the task failed again into a later letter, or where it is now.
        "failed_again": next((o for o in other_letters if o.pk > letter.pk), None),
        "audit": [(a, a.action.replace("_", " ")) for a in letter.actions.select_related("user")],
    }
    return render_page(request, "orchestrator/triage/detail.html", context, status=400 if refused else 200)


def _attempts_of(letter: DeadLetter, attempts: list, *, earlier: list) -> list:
    """The attempts that ended in this letter: after the letter before it (a task retried from
    the dead-letter queue can fall into another), up to its own failing step. A letter made
    without a failing step (the sweeper's Orphaned) ends at the time it was made."""
    def ended_in(step, other: DeadLetter) -> bool:
        if other.step_id is not None:
            return step.pk <= other.step_id
        return step.started_at is not None and step.started_at <= other.created_at

    attempts = [s for s in attempts if ended_in(s, letter)]
    if earlier:
        attempts = [s for s in attempts if not ended_in(s, earlier[-1])]
    return attempts


def _fields_to_edit(task: Task, steps: list) -> dict:
    """What the edit form starts from: the task's fields; for a failed extract, the last answer
    the model gave (often nearly right), else an empty object to fill in. `steps`: the task's
    steps in timeline order."""
    if task.fields:
        return task.fields
    if task.current_step == "extract":
        for step in reversed([s for s in steps if s.worker == "extract"]):
            if isinstance(step.output, dict) and isinstance(step.output.get("fields"), dict):
                return step.output["fields"]
    return {}


def _back(request: HttpRequest, letter_id: int) -> HttpResponse:
    return redirect(safe_next(request, reverse("dead-letter-detail", args=[letter_id])))


@role_required(OPERATOR, ADMIN)
@require_POST
def dead_letter_retry_view(request: HttpRequest, dead_letter_id: int) -> HttpResponse:
    """Retry from the failed step. A second click says "already retried", never an error page."""
    letter = get_object_or_404(DeadLetter, pk=dead_letter_id)
    try:
        letter = dead_letter_retry(dead_letter_id=letter.pk, user=request.user)
        level, text = "success", f"Task {letter.task_id} sent back to its {letter.worker or 'failed'} step."
    except NotAllowed as exc:
        letter.refresh_from_db()
        level, text = "warning", str(exc)
    if request.htmx:
        if request.htmx.target == "task-live":
            task = task_for(request, letter.task_id)
            return render_page(request, "orchestrator/task_detail.html#task-live",
                           task_context(request, task, notice=(level, text)))
        letter = DeadLetter.objects.select_related("task").get(pk=letter.pk)
        return render_page(request, "orchestrator/triage/_row.html", {"dl": letter, "notice": (level, text)})
    _say(request, level, text)
    return redirect(safe_next(request, reverse("dead-letter-list")))


@role_required(OPERATOR, ADMIN)
@require_POST
def dead_letter_edit_retry_view(request: HttpRequest, dead_letter_id: int) -> HttpResponse:
    letter = get_object_or_404(DeadLetter, pk=dead_letter_id)
    fields = None
    raw = request.POST.get("fields", "").strip()
    try:
        if raw:
            try:
                fields = json.loads(raw)
            except ValueError as exc:
                raise NotAllowed(f"The fields are not valid JSON: {exc}") from exc
            if not isinstance(fields, dict):
                raise NotAllowed("The fields must be a JSON object, like {\"amount\": 120.0}")
        letter = dead_letter_edit_retry(dead_letter_id=letter.pk, user=request.user, fields=fields,
                                        doc_type=request.POST.get("doc_type", ""))
        _say(request, "success", f"Task {letter.task_id} edited and sent back to its "
                                 f"{letter.task.current_step or 'next'} step.")
    except NotAllowed as exc:
        letter = DeadLetter.objects.select_related("task").get(pk=letter.pk)
        if letter.status == DeadLetterStatus.OPEN and letter.task.current_step in EDITABLE_AT:
            # What was typed is at fault: the form again, as typed, with the problem at its input.
            field = "doc_type" if letter.task.current_step == "classify" else "fields"
            return _detail_page(request, letter, refused={field: str(exc)}, typed=request.POST)
        _say(request, "warning", str(exc))  # already retried, or past what an edit may change
    return _back(request, letter.pk)


@role_required(OPERATOR, ADMIN)
@require_POST
def dead_letter_discard_view(request: HttpRequest, dead_letter_id: int) -> HttpResponse:
    letter = get_object_or_404(DeadLetter, pk=dead_letter_id)
    try:
        dead_letter_discard(dead_letter_id=letter.pk, user=request.user, reason=request.POST.get("reason", ""))
        _say(request, "success", f"Task {letter.task_id} discarded.")
    except NotAllowed as exc:
        letter.refresh_from_db()
        if letter.status == DeadLetterStatus.OPEN:  # still open: the reason was missing
            return _detail_page(request, letter, refused={"reason": str(exc)}, typed=request.POST)
        _say(request, "warning", str(exc))
    return _back(request, letter.pk)


@role_required(OPERATOR, ADMIN)
@require_POST
def dead_letter_requeue_view(request: HttpRequest, dead_letter_id: int) -> HttpResponse:
    letter = get_object_or_404(DeadLetter, pk=dead_letter_id)
    try:
        _, task = dead_letter_requeue(dead_letter_id=letter.pk, user=request.user)
        _say(request, "success", f"Task {letter.task_id} closed and its document requeued as task {task.pk}.")
    except NotAllowed as exc:
        _say(request, "warning", str(exc))
    return _back(request, letter.pk)


# --- Bulk retry ---------------------------------------------------------------------------------


@role_required(OPERATOR, ADMIN)
@require_POST
def bulk_retry_create_view(request: HttpRequest) -> HttpResponse:
    """Selected letters (ids), a group (fingerprint) or the current filter: first a confirmation
    with the count and the pace, then (confirm=1) the bulk retry starts. A pace out of range
    shows the confirmation again, with the reason."""
    scope = request.POST.get("scope", "filter")
    filters = _filters(request.POST)
    if scope == "selected":
        ids = [int(v) for v in request.POST.getlist("ids") if v.isdigit()]
        letters = DeadLetter.objects.filter(pk__in=ids, status=DeadLetterStatus.OPEN)
        description = f"{len(ids)} selected dead letter{pluralize(len(ids))}"
        selection = {"scope": "selected"}
    else:
        if scope == "group" and not filters["fingerprint"]:
            _say(request, "warning", "Choose a group to retry.")
            return redirect("dead-letter-list")
        letters = open_dead_letters(filters)
        shown = {k: v for k, v in filters.items() if v}
        # A group by what failed where (its letters share both), not by its fingerprint, a hash.
        named = letters.order_by("-id").first() if scope == "group" else None
        group = (f"Group: {named.error_type} at {named.worker or 'no step'}" if named
                 else "Group " + filters["fingerprint"][:12])
        description = (group if scope == "group" else "Filter") + (
            ": " + ", ".join(f"{k}={v}" for k, v in shown.items() if k != "fingerprint") if len(shown) > (
                scope == "group") else "")
        selection = {"scope": scope, "filters": shown}
    pace = request.POST.get("rate_per_minute", "").strip()
    try:
        rate = int(pace) if pace else None
    except ValueError:
        rate = 0  # refused below, like any pace out of range
    refused = PACE_REFUSED if rate is not None and rate not in BULK_RETRY_RATES else ""
    if request.POST.get("confirm") != "1" or refused:
        example = letters.order_by("-id").first()
        return render_page(request, "orchestrator/triage/bulk_confirm.html", {
            "scope": scope, "filters": filters, "ids": list(letters.values_list("id", flat=True)[:1000])
            if scope == "selected" else [], "count": letters.count(), "description": description,
            "example": example, "rate": pace or settings.STEWARD_BULK_RETRY_RATE, "refused": refused,
            # What the circuit breaker of a new bulk retry waits for, so the promise matches it.
            "breaker": {name: BulkRetry._meta.get_field(f"breaker_{name}").default
                        for name in ("threshold", "window", "min_settled")},
        }, status=400 if refused else 200)
    try:
        bulk = bulk_retry_create(user=request.user, dead_letter_ids=letters.values_list("id", flat=True),
                                 description=description, selection=selection, rate_per_minute=rate)
    except NotAllowed as exc:
        _say(request, "warning", str(exc))
        return redirect("dead-letter-list")
    _say(request, "success", f"Bulk retry {bulk.pk} started: {bulk.total} dead letter{pluralize(bulk.total)} "
                             f"at {bulk.rate_per_minute} a minute.")
    return redirect(bulk)


ITEMS_PAGE = 100


@role_required(OPERATOR, ADMIN)
@require_safe
def bulk_retry_detail(request: HttpRequest, bulk_id: int) -> HttpResponse:
    """The live report: counters, the breaker's reason, and each item's outcome (?outcome=...)."""
    bulk_retries_settle(bulk_ids=[bulk_id])  # paused or cancelled: what its items did since
    bulk = get_object_or_404(BulkRetry.objects.select_related("created_by"), pk=bulk_id)
    outcome = request.GET.get("outcome", "")
    items = BulkRetryItem.objects.filter(bulk_retry=bulk).select_related("task", "dead_letter")
    if outcome in BulkRetryItemStatus.values:
        items = items.filter(status=outcome)
    try:
        after = int(request.GET.get("after", ""))
    except ValueError:
        after = 0
    rows = list(items.filter(id__gt=after).order_by("id")[: ITEMS_PAGE + 1])
    next_after = rows[ITEMS_PAGE - 1].pk if len(rows) > ITEMS_PAGE else None
    rows = rows[:ITEMS_PAGE]
    # The latest dead letter of an item that failed again: what went wrong this time.
    failed_tasks = [i.task_id for i in rows if i.status == BulkRetryItemStatus.FAILED_AGAIN]
    latest = {}
    for letter in DeadLetter.objects.filter(task_id__in=failed_tasks).order_by("id"):
        latest[letter.task_id] = letter
    for item in rows:
        item.latest_letter = latest.get(item.task_id)
    # Sending pace: items are sent in ticks, so the sending period runs to one tick after the last.
    last_sent = BulkRetryItem.objects.filter(bulk_retry=bulk).aggregate(last=Max("enqueued_at"))["last"]
    elapsed = ((last_sent - bulk.created_at).total_seconds() + tick_interval(bulk.rate_per_minute)
               if last_sent else 0)
    context = {
        "bulk": bulk,
        "items": rows,
        "outcome": outcome,
        "outcome_choices": BulkRetryItemStatus.choices,
        "next_query": query_with(request, after=next_after) if next_after else "",
        # Paused or cancelled, items already sent back still settle: follow them to the end.
        "live": bulk.status == BulkRetryStatus.RUNNING or bool(bulk.in_flight),
        "progress": int(100 * (bulk.enqueued + bulk.skipped) / bulk.total) if bulk.total else 100,
        "pace": round(bulk.enqueued / elapsed * 60, 1) if elapsed > 0 and bulk.enqueued else 0,
        "paged": "after" in request.GET,
    }
    if request.htmx:
        return render_page(request, "orchestrator/triage/bulk_detail.html#bulk-live", context)
    return render_page(request, "orchestrator/triage/bulk_detail.html", context)


@role_required(OPERATOR, ADMIN)
@require_POST
def bulk_retry_control_view(request: HttpRequest, bulk_id: int) -> HttpResponse:
    bulk = get_object_or_404(BulkRetry, pk=bulk_id)
    action = request.POST.get("action", "")
    try:
        bulk_retry_control(bulk_id=bulk.pk, user=request.user, action=action)
        _say(request, "success", {"pause": "Paused.", "resume": "Resumed: pacing and the circuit breaker start over.",
                                  "cancel": "Cancelled: items not yet sent back stay open."}.get(action, "Done."))
    except NotAllowed as exc:
        _say(request, "warning", str(exc))
    return redirect(bulk)


# --- Stuck work ---------------------------------------------------------------------------------


@role_required(OPERATOR, ADMIN)
@require_safe
def stuck_work(request: HttpRequest) -> HttpResponse:
    """Tasks queued or running longer than expected, who owns them, and the sweeper's actions."""
    now = timezone.now()
    after = timedelta(seconds=settings.STEWARD_STUCK_AFTER_S)
    stuck = (
        Task.objects.filter(
            Q(status=TaskStatus.QUEUED, enqueued_at__lt=now - after)
            | Q(status=TaskStatus.QUEUED, enqueued_at__isnull=True)
            | Q(status=TaskStatus.RUNNING, updated_at__lt=now - after)
            | Q(status=TaskStatus.RUNNING, lease_expires_at__lt=now)
        )
        .only("id", "filename", "external_ref", "status", "current_step", "lease_owner", "lease_expires_at",
              "enqueued_at", "not_before", "recoveries", "updated_at")
        .order_by(*OLDEST_FIRST)[:200]
    )
    tasks = list(stuck)
    broker_queues = _broker_queues(now)
    # A queue's messages belong to its most recently enqueued tasks (orchestrator/backlog.py):
    # of its queued tasks, oldest first (as listed here), the first `behind` may have lost theirs.
    seen: dict[str, int] = {}
    for task in tasks:
        since = task.enqueued_at if task.status == TaskStatus.QUEUED else task.updated_at
        task.waiting_s = int((now - since).total_seconds()) if since else None
        task.lease_expired = bool(task.lease_expires_at and task.lease_expires_at < now)
        in_backoff = bool(task.not_before and task.not_before > now)  # a worker holds its message
        if task.status == TaskStatus.QUEUED and broker_queues is not None and not in_backoff:
            task.celery_queue = queue_for(task.current_step)
            rank = seen[task.celery_queue] = seen.get(task.celery_queue, 0) + 1
            task.maybe_lost = rank <= broker_queues[task.celery_queue]["behind"]
    runs = list(SweepRun.objects.all()[:10])  # newest first
    last_run = runs[0] if runs else None
    context = {
        "tasks": tasks,
        "stuck_after_s": int(settings.STEWARD_STUCK_AFTER_S),
        "actions": list(SweepAction.objects.select_related("sweep")[:50]),
        "runs": runs,
        "last_run": last_run,
        # Beat stopped, or no worker runs to take the sweeps off the control queue: say so, not only when.
        "sweeper_overdue": bool(last_run and last_run.started_at < now - timedelta(
            seconds=max(3 * settings.STEWARD_SWEEP_INTERVAL_S, 120))),
        "sweep_interval_s": settings.STEWARD_SWEEP_INTERVAL_S,
        "control_queue": settings.STEWARD_CONTROL_QUEUE,
        "broker_queues": broker_queues,
        "queued_after_s": int(settings.STEWARD_SWEEP_QUEUED_AFTER_S),
        "now": now,
    }
    return render_page(request, "orchestrator/triage/stuck.html", context)


def _broker_queues(now) -> dict[str, dict] | None:
    """{Celery queue: {"queued": tasks queued for it, "waiting": messages waiting in it, "behind":
    how many of its tasks may have lost their message}} for the queues that have queued tasks,
    as the sweeper counts them; None when the broker cannot say."""
    queued = {queue: sum(steps.values()) for queue, steps in queued_by_celery_queue(now).items()}
    waiting = messages_waiting_for_page(queued)
    if waiting is None:
        return None
    return {queue: {"queued": count, "waiting": waiting[queue], "behind": max(count - waiting[queue], 0)}
            for queue, count in sorted(queued.items())}

