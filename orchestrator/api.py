"""The JSON API (bearer token). OpenAPI document at /api/v1/openapi.json."""
from __future__ import annotations

import json

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.http.multipartparser import MultiPartParserError
from django.urls import Resolver404, resolve, reverse
from django.views import defaults
from django.views.decorators.csrf import csrf_exempt

from reviews.models import Approval, ApprovalStatus
from reviews.services import AlreadyDecided, DecisionError, approval_decide, user_can_decide

from .intake import DocumentTooLarge, IntakeError, check_size, document_text
from .models import DeadLetter, DeadLetterStatus, DocType, Source, Task, TaskStatus
from .roles import ADMIN, OPERATOR, REVIEWER, api_view, has_role, json_error
from .selectors import visible_queue_names, visible_tasks
from .services import IdempotencyKeyReused, NotAllowed, dead_letter_retry as dead_letter_retry_service, task_submit

PAGE_SIZE = 50
TEXT_MAX = Task._meta.get_field("external_ref").max_length  # filename's too
MAX_PAGE_SIZE = 200
# What each body may hold; anything else is refused (see _unknown).
TASK_KEYS = ("content", "filename", "external_ref")
MULTIPART_FIELDS = ("file", "filename", "external_ref")
DECISION_KEYS = ("decision", "reason", "comment", "fields")


# --- Representations ------------------------------------------------------------------------


def _iso(value) -> str | None:
    return value.isoformat() if value else None


def approval_json(approval: Approval) -> dict:
    return {
        "id": approval.pk,
        "task_id": approval.task_id,
        "queue": approval.queue.name,
        "status": approval.status,
        "action": approval.action_summary,
        "action_kind": approval.action_kind,
        "action_data": approval.action_data,
        "reasons": approval.reasons,
        "decided_by": approval.decided_by.get_username() if approval.decided_by else None,
        "decided_at": _iso(approval.decided_at),
        "rejection_reason": approval.rejection_reason.code if approval.rejection_reason else None,
        "comment": approval.comment,
        "corrections": approval.corrections,
        "created_at": _iso(approval.created_at),
        "due_at": _iso(approval.due_at),
    }


def dead_letter_json(dead_letter: DeadLetter, *, traceback: bool = False) -> dict:
    data = {
        "id": dead_letter.pk,
        "task_id": dead_letter.task_id,
        "worker": dead_letter.worker,
        "error_type": dead_letter.error_type,
        "message": dead_letter.message,
        "attempts": dead_letter.attempts,
        "fingerprint": dead_letter.fingerprint,
        "doc_type": dead_letter.doc_type or None,
        "queue": dead_letter.queue or None,
        "status": dead_letter.status,
        "evidence": dead_letter.evidence,
        "edits": dead_letter.edits,
        "resolution_note": dead_letter.resolution_note,
        "created_at": _iso(dead_letter.created_at),
        "resolved_at": _iso(dead_letter.resolved_at),
    }
    if traceback:
        data["traceback"] = dead_letter.traceback
    return data


def task_json(request: HttpRequest, task: Task, *, detail: bool = False) -> dict:
    data = {
        "id": task.pk,
        "status": task.status,
        "url": request.build_absolute_uri(reverse("api-task-detail", args=[task.pk])),
        "page": request.build_absolute_uri(task.get_absolute_url()),
        "filename": task.filename,
        "external_ref": task.external_ref,
        "doc_type": task.doc_type or None,
        "confidence": task.confidence,
        "routed_to": task.routed_to or None,
        "duplicate_of": task.duplicate_of_id,
        "created_at": _iso(task.created_at),
        "finished_at": _iso(task.finished_at),
    }
    if detail:
        data.update(
            fields=task.fields,
            findings=task.findings,
            route_reason=task.route_reason,
            current_step=task.current_step or None,
            content_sha256=task.content_sha256,
            totals={
                "llm_calls": task.llm_calls,
                "tool_calls": task.tool_calls,
                "input_tokens": task.input_tokens,
                "cached_tokens": task.cached_tokens,
                "output_tokens": task.output_tokens,
                "reasoning_tokens": task.reasoning_tokens,
                "cost_usd": str(task.cost_usd),
            },
            steps=[
                {
                    "worker": s.worker, "attempt": s.attempt, "status": s.status, "model": s.model,
                    "prompt_version": s.prompt_version, "simulated": s.simulated,
                    "llm_calls": s.llm_calls, "tool_calls": s.tool_calls,
                    "input_tokens": s.input_tokens, "cached_tokens": s.cached_tokens,
                    "output_tokens": s.output_tokens, "reasoning_tokens": s.reasoning_tokens,
                    "cost_usd": str(s.cost_usd), "latency_ms": s.latency_ms,
                    "error_type": s.error_type or None, "error_message": s.error_message or None,
                    "started_at": _iso(s.started_at), "finished_at": _iso(s.finished_at),
                    "output": s.output,
                }
                for s in task.steps.all()
            ],
            action_result=task.action_result or None,
        )
        approval = task.approvals.select_related("queue", "decided_by", "rejection_reason").order_by("-id").first()
        data["approval"] = approval_json(approval) if approval else None
        dead_letter = task.dead_letters.order_by("-id").first()
        data["dead_letter"] = dead_letter_json(dead_letter) if dead_letter else None
    return data


PAGE_PARAMS = ("before", "limit")
# How other APIs page; a client sending them would get the first page again and again.
OTHER_PAGING = {"page", "page_size", "per_page", "offset", "cursor", "after", "size"}


def _unknown_params(request: HttpRequest, filters: tuple[str, ...]) -> JsonResponse | None:
    """A 400 naming the query parameters a list does not read, or None. Ignored, a misspelt filter
    (?stauts=approved) answers the unfiltered list as if it were the filtered one."""
    allowed = filters + PAGE_PARAMS
    unknown = [name for name in request.GET if name not in allowed]
    if not unknown:
        return None
    listed = ", ".join(f'"{name}"' for name in unknown)
    message = f"Unknown query parameter{'s' if len(unknown) > 1 else ''} {listed}; this list takes {', '.join(allowed)}"
    if OTHER_PAGING & set(unknown):
        message += " (it pages by id: follow the \"next\" URL of each answer until it is null)"
    return json_error(400, message, allowed=list(allowed))


def _page_params(request: HttpRequest) -> tuple[int | None, int]:
    try:
        before = int(request.GET["before"]) if request.GET.get("before") else None
        limit = int(request.GET.get("limit", PAGE_SIZE))
    except ValueError as exc:
        raise ValueError("before and limit must be integers") from exc
    if limit < 1:
        raise ValueError(f"limit must be 1 or more (at most {MAX_PAGE_SIZE} are sent), not {limit}")
    return before, min(limit, MAX_PAGE_SIZE)


def _paginate(request: HttpRequest, queryset, render) -> JsonResponse:
    """Keyset pagination on id, newest first: stays fast however deep the caller pages."""
    try:
        before, limit = _page_params(request)
    except ValueError as exc:
        return json_error(400, str(exc))
    if before is not None:
        queryset = queryset.filter(pk__lt=before)
    rows = list(queryset.order_by("-id")[: limit + 1])
    more = len(rows) > limit
    rows = rows[:limit]
    next_url = None
    if more:
        params = request.GET.copy()
        params["before"] = rows[-1].pk
        next_url = request.build_absolute_uri(f"{request.path}?{params.urlencode()}")
    return JsonResponse({"results": [render(row) for row in rows], "next": next_url})


def _by_choice(request: HttpRequest, queryset, param: str, values, default: str = ""):
    """Filter by ?<param>= (or `default`; no default and no parameter: no filter), a closed set of values.
    Returns (queryset, None), or (None, a 400 naming the values): a value outside the set would
    answer an empty list, which reads as "nothing matches"."""
    value = request.GET.get(param, default)
    if not value and not default:
        return queryset, None
    if value not in values:
        return None, json_error(400, f"Unknown {param} \"{value}\"; it is one of {', '.join(values)}",
                                allowed=list(values))
    return queryset.filter(**{param: value}), None


def _by_queue(request: HttpRequest, queryset, field: str):
    """Filter by ?queue=, one of the caller's queues (every queue for operators and admins).
    Returns (queryset, None), or (None, a 400 naming the caller's queues, never another's: a queue
    the caller may not see is answered as one that does not exist)."""
    name = request.GET.get("queue")
    if not name:
        return queryset, None
    filtered = queryset.filter(**{field: name})
    queues = visible_queue_names(request.user)
    # A task the caller sees may be routed to a queue not theirs (moved on, or the queue since
    # deleted): what the list would show anyway is not refused.
    if name in queues or filtered.exists():
        return filtered, None
    return None, json_error(400, f"Unknown queue \"{name}\"; the queues you may see are {', '.join(queues) or 'none'}",
                            allowed=queues)


def _is_json(request: HttpRequest) -> bool:
    # No Content-Type at all (some clients send none with a raw body) is read as JSON too.
    return request.content_type in ("", "application/json") or request.content_type.endswith("+json")


def _unsupported_media_type(request: HttpRequest, accepted: str) -> JsonResponse:
    return json_error(415, f"Content-Type {request.content_type} is not accepted; send {accepted}")


def _json_body(request: HttpRequest) -> dict:
    try:
        body = json.loads(request.body or b"{}")
        # JSON may escape half a UTF-16 pair ("\ud800"), which is no character: nothing can store it.
        json.dumps(body, ensure_ascii=False).encode()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"The body is not valid JSON: {exc}") from exc
    except UnicodeEncodeError as exc:
        half = f"\\u{ord(exc.object[exc.start]):04x}"
        raise ValueError(f"The body is not valid JSON text: \"{half}\" is half of a UTF-16 surrogate pair, no "
                         "character; escape both halves (\"\\ud83d\\ude00\") or send the character itself in UTF-8"
                         ) from exc
    except RecursionError as exc:
        # json's parser recurses per nesting level; a hostile or broken body must not be a 500.
        raise ValueError("The body is not valid JSON: it is nested too deeply") from exc
    if not isinstance(body, dict):
        raise ValueError("The body must be a JSON object")
    return body


def _unknown(names, allowed: tuple[str, ...], *, noun: str = "key", where: str = "the body",
             takes: str = "") -> JsonResponse | None:
    """A 400 naming the keys (or multipart fields) this endpoint does not read, or None.
    Ignoring them would drop what the caller meant without a word: "field" for "fields" would
    approve the model's values instead of the corrected ones."""
    unknown = [name for name in names if name not in allowed]
    if not unknown:
        return None
    listed = ", ".join(f'"{name}"' for name in unknown)
    takes = takes or f"it takes {', '.join(allowed)}"
    return json_error(400, f"Unknown {noun}{'s' if len(unknown) > 1 else ''} {listed} in {where}; {takes}",
                      allowed=list(allowed))


# --- Tasks ----------------------------------------------------------------------------------


@api_view(OPERATOR, ADMIN, REVIEWER, methods=("GET", "POST"))
def tasks(request: HttpRequest) -> JsonResponse:
    if request.method == "POST":
        return _task_create(request)
    if error := _unknown_params(request, ("status", "doc_type", "queue")):
        return error
    queryset = visible_tasks(request.user)
    queryset, error = _by_choice(request, queryset, "status", TaskStatus.values)
    if not error:
        queryset, error = _by_choice(request, queryset, "doc_type", DocType.values)
    if not error:
        queryset, error = _by_queue(request, queryset, "routed_to")
    if error:
        return error
    return _paginate(request, queryset, lambda t: task_json(request, t))


def _task_create(request: HttpRequest) -> JsonResponse:
    if not has_role(request.user, OPERATOR, ADMIN):
        return json_error(403, "Submitting documents needs the operator or admin role")
    if request.content_type != "multipart/form-data" and not _is_json(request):
        return _unsupported_media_type(
            request, 'application/json, or multipart/form-data with the document in the field "file"')
    key = request.headers.get("Idempotency-Key", "")
    try:
        if request.content_type == "multipart/form-data":
            try:
                upload = request.FILES.get("file")
            except MultiPartParserError as exc:
                return json_error(400, f"The multipart body could not be read: {exc}")
            if upload is None:
                return json_error(400, "Send the document as the multipart field \"file\"")
            if unknown := _unknown([*request.POST, *request.FILES], MULTIPART_FIELDS, noun="field",
                                   where="the multipart body"):
                return unknown
            check_size(upload.size)  # before reading it into memory: Django only spooled it to disk
            # Read as the file it is; stored under the name given, as the JSON body's "filename" is.
            content = document_text(upload.read(), upload.name)
            filename = request.POST.get("filename") or upload.name
            external_ref = request.POST.get("external_ref", "")
        else:
            body = _json_body(request)
            if unknown := _unknown(body, TASK_KEYS):
                return unknown
            content = body.get("content")
            if not isinstance(content, str):
                return json_error(400, "\"content\" (a string) is required")
            # null is the same as leaving them out; any other non-string (0, false) is a client bug.
            filename = body.get("filename")
            external_ref = body.get("external_ref")
            if any(value is not None and not isinstance(value, str) for value in (filename, external_ref)):
                return json_error(400, "\"filename\" and \"external_ref\" must be strings")
            filename, external_ref = filename or "", external_ref or ""
        # Refused, not cut to the column's size: an integrator looks its document up by external_ref.
        for name, value in (("filename", filename), ("external_ref", external_ref)):
            if len(value) > TEXT_MAX:
                return json_error(400, f"\"{name}\" is {len(value)} characters long; at most {TEXT_MAX} are allowed")
        task, created = task_submit(
            content=content, filename=filename, source=Source.API, external_ref=external_ref,
            idempotency_key=key, submitted_by=request.user,
        )
    except IdempotencyKeyReused as exc:
        # 422, as the IETF Idempotency-Key draft says for a key reused with another payload.
        return json_error(422, str(exc), task_id=exc.task.pk)
    except DocumentTooLarge as exc:
        return json_error(413, str(exc))
    except IntakeError as exc:
        return json_error(400, str(exc))
    except RequestDataTooBig:
        limit_mb = settings.STEWARD_MAX_DOCUMENT_BYTES / (1024 * 1024)
        return json_error(413, f"The request is too large; documents may be at most {limit_mb:.0f} MB")
    except ValueError as exc:
        return json_error(400, str(exc))
    url = request.build_absolute_uri(reverse("api-task-detail", args=[task.pk]))
    response = JsonResponse({"id": task.pk, "status": task.status, "url": url, "duplicate_of": task.duplicate_of_id},
                            status=201)
    response["Location"] = url
    if not created:
        response["Idempotent-Replayed"] = "true"
    return response


@api_view(OPERATOR, ADMIN, REVIEWER)
def task_detail(request: HttpRequest, task_id: int) -> JsonResponse:
    task = visible_tasks(request.user).filter(pk=task_id).first()
    if task is None:
        return json_error(404, f"Task {task_id} not found")
    return JsonResponse(task_json(request, task, detail=True))


# --- Approvals ------------------------------------------------------------------------------


@api_view(REVIEWER, ADMIN)
def approvals(request: HttpRequest) -> JsonResponse:
    if error := _unknown_params(request, ("status", "queue")):
        return error
    queryset = Approval.objects.select_related("queue", "decided_by", "rejection_reason")
    if not has_role(request.user, ADMIN):
        queryset = queryset.filter(queue__reviewers=request.user)
    queryset, error = _by_choice(request, queryset, "status", ApprovalStatus.values, default=ApprovalStatus.PENDING)
    if not error:
        queryset, error = _by_queue(request, queryset, "queue__name")
    if error:
        return error
    return _paginate(request, queryset, approval_json)


@api_view(REVIEWER, ADMIN, methods=("POST",))
def approval_decision(request: HttpRequest, approval_id: int) -> JsonResponse:
    approval = Approval.objects.select_related("queue").filter(pk=approval_id).first()
    if approval is None or not user_can_decide(request.user, approval):
        return json_error(404, f"Approval {approval_id} not found")
    if not _is_json(request):
        return _unsupported_media_type(request, "application/json")
    try:
        body = _json_body(request)
        if unknown := _unknown(body, DECISION_KEYS):
            return unknown
        fields = body.get("fields")
        if fields is not None and not isinstance(fields, dict):
            return json_error(400, "\"fields\" must be an object")
        for name in ("reason", "comment"):
            if body.get(name) is not None and not isinstance(body[name], str):
                return json_error(400, f"\"{name}\" must be a string")
        if body.get("decision") == "approve" and body.get("reason"):
            # Approving would drop it without a word. Here, not in approval_decide: the pages' approve
            # forms send no reason, and the service they share is left as it is.
            return json_error(400, "\"reason\" goes with \"decision\": \"reject\"; an approval takes "
                                   "\"comment\" and \"fields\"")
        if body.get("decision") == "reject" and fields:
            # Rejecting would drop the corrections without a word (an empty object, which some
            # clients always send, corrects nothing and is let through).
            return json_error(400, "\"fields\" (corrections) go with \"decision\": \"approve\"; a rejection "
                                   "takes \"reason\" and \"comment\"")
        decided = approval_decide(
            approval_id=approval.pk, user=request.user, decision=body.get("decision", ""),
            reason=body.get("reason") or "", comment=body.get("comment") or "", fields=fields,
        )
    except AlreadyDecided as exc:
        return json_error(409, str(exc), approval=approval_json(exc.approval))
    except (DecisionError, ValueError) as exc:
        return json_error(400, str(exc))
    return JsonResponse(approval_json(decided))


# --- Dead letters ---------------------------------------------------------------------------


@api_view(OPERATOR, ADMIN)
def dead_letters(request: HttpRequest) -> JsonResponse:
    if error := _unknown_params(request, ("status", "error_type")):
        return error
    queryset = DeadLetter.objects.all()
    queryset, error = _by_choice(request, queryset, "status", DeadLetterStatus.values, default=DeadLetterStatus.OPEN)
    if error:
        return error
    if request.GET.get("error_type"):
        queryset = queryset.filter(error_type=request.GET["error_type"])
    return _paginate(request, queryset, dead_letter_json)


@api_view(OPERATOR, ADMIN, methods=("POST",))
def dead_letter_retry(request: HttpRequest, dead_letter_id: int) -> JsonResponse:
    if not DeadLetter.objects.filter(pk=dead_letter_id).exists():
        return json_error(404, f"Dead letter {dead_letter_id} not found")
    if request.body and _is_json(request):  # no body (or an empty form) is the usual retry
        try:
            body = _json_body(request)
        except ValueError as exc:
            return json_error(400, str(exc))
        if unknown := _unknown(body, (), takes="a retry takes no body: it retries the failed step as it is "
                                               "(edit and retry on the dead letter's page)"):
            return unknown
    try:
        dead_letter = dead_letter_retry_service(dead_letter_id=dead_letter_id, user=request.user)
    except NotAllowed as exc:
        return json_error(409, str(exc))
    return JsonResponse({"dead_letter": dead_letter_json(dead_letter),
                         "task": task_json(request, dead_letter.task)})


# --- Errors ---------------------------------------------------------------------------------


@csrf_exempt  # a POST to a wrong path is a 404, not an HTML CSRF failure
def not_found(request: HttpRequest) -> JsonResponse:
    path = request.path_info
    if path.endswith("/") and _is_route(path[:-1]):
        # Django's own URLs end in a slash, so integrators add one; say which route they meant.
        return json_error(404, f"No API endpoint at {request.path}; did you mean {request.path[:-1]} "
                               "(no trailing slash)? See /api/v1/openapi.json")
    return json_error(404, f"No API endpoint at {request.path}; see /api/v1/openapi.json")


def _is_route(path: str) -> bool:
    try:
        return resolve(path).url_name != "api-not-found"
    except Resolver404:
        return False


def _is_api(request: HttpRequest) -> bool:
    return request.path_info.startswith("/api/")


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """handler400: what Django refuses before or around a view (too many files or fields, a bad
    Host header...). JSON under /api/, the site's page elsewhere."""
    if not _is_api(request):
        return defaults.bad_request(request, exception)
    detail = str(exception) if exception is not None and str(exception) else ""
    return json_error(400, f"Bad request: {detail}" if detail else "Bad request")


def server_error(request: HttpRequest) -> HttpResponse:
    """handler500: JSON under /api/ (the traceback is logged by Django, never shown), the site's page elsewhere."""
    if not _is_api(request):
        return defaults.server_error(request)
    return json_error(500, "Internal server error; it has been logged")


# --- OpenAPI --------------------------------------------------------------------------------


@csrf_exempt  # read-only: any other method is refused below, before anything else
def openapi(request: HttpRequest) -> JsonResponse:
    """The API's description, for a bearer token or a logged-in session."""
    from .openapi import document
    from .roles import method_refused, user_for_bearer

    if refused := method_refused(request, ("GET",)):
        return refused
    if not request.user.is_authenticated and user_for_bearer(request.headers.get("Authorization", "")) is None:
        response = json_error(401, "Log in or send a bearer token")
        response["WWW-Authenticate"] = 'Bearer realm="steward"'
        return response
    return JsonResponse(document(request.build_absolute_uri("/api/v1")))
