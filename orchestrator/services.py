"""Writes on tasks and dead letters. Plain keyword-only functions named <entity>_<action>."""
from __future__ import annotations

import contextlib
import hashlib

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Subquery
from django.utils import timezone

from metrics.rollups import record_discard, record_retries

from .errors import error_fingerprint
from .intake import check_text
from .models import BulkRetry, DeadLetter, DeadLetterStatus, Source, Step, Task, TaskStatus
from .pipeline import send_task_on_commit, send_wakeup


IDEMPOTENCY_KEY_MAX = Task._meta.get_field("idempotency_key").max_length


class NotAllowed(Exception):
    """The row is not in a state where this action makes sense; the message says why."""


class IdempotencyKeyReused(Exception):
    """The submitter's Idempotency-Key already names a task with another document."""

    def __init__(self, key: str, task: Task):
        super().__init__(f'Idempotency-Key "{key}" was already used for a different document (task {task.pk}); '
                         "send a new key with a new document")
        self.task = task


def _replayed(task: Task, *, key: str, sha: str, filename: str, external_ref: str) -> Task:
    """The task a replayed key names, if the request is the same one; else IdempotencyKeyReused
    (answering the old task would silently drop the new document)."""
    if (task.content_sha256, task.filename, task.external_ref) != (sha, filename, external_ref):
        raise IdempotencyKeyReused(key, task)
    return task


def task_submit(
    *,
    content: str,
    filename: str = "",
    source: str = Source.API,
    external_ref: str = "",
    idempotency_key: str = "",
    submitted_by=None,
) -> tuple[Task, bool]:
    """Store a document as a queued task and wake a worker. Returns (task, created).

    Steps: validate the text (IntakeError) and the Idempotency-Key (ValueError over 255
    characters); with a key already used by this submitter, return that task unchanged (or
    IdempotencyKeyReused when the document, filename or external_ref differ); insert,
    flagging an exact duplicate of earlier content in the same statement (it still becomes a
    task, never dropped); enqueue after commit.
    """
    text = check_text(content)
    key = (idempotency_key or "").strip()
    if len(key) > IDEMPOTENCY_KEY_MAX:
        # Never cut it short: two long keys sharing a prefix would become one, losing a document.
        raise ValueError(f"Idempotency-Key is {len(key)} characters long; at most {IDEMPOTENCY_KEY_MAX} are allowed")
    sha = hashlib.sha256(text.encode("utf-8")).hexdigest()
    filename, external_ref = (filename or "")[:255], (external_ref or "")[:255]
    same = dict(key=key, sha=sha, filename=filename, external_ref=external_ref)
    if key and submitted_by is not None:
        existing = Task.objects.filter(submitted_by=submitted_by, idempotency_key=key).first()
        if existing:
            return _replayed(existing, **same), False
    earlier = Subquery(Task.objects.filter(content_sha256=sha).order_by("id").values("id")[:1])
    try:
        # One INSERT is atomic on its own (and Django reads duplicate_of back with RETURNING);
        # inside a caller's transaction, a savepoint keeps a lost Idempotency-Key race from breaking it.
        with transaction.atomic() if connection.in_atomic_block else contextlib.nullcontext():
            task = Task.objects.create(
                content=text,
                content_sha256=sha,
                filename=filename,
                source=source,
                external_ref=external_ref,
                idempotency_key=key if submitted_by is not None else "",
                submitted_by=submitted_by,
                duplicate_of_id=earlier,
                enqueued_at=timezone.now(),
            )
            send_wakeup(task.pk, task.current_step)
    except IntegrityError:
        # Two requests with the same Idempotency-Key raced; the other one won.
        existing = Task.objects.filter(submitted_by=submitted_by, idempotency_key=key).first()
        if existing is None:
            raise
        return _replayed(existing, **same), False
    return task, True


def dead_letter_create(
    *, task: Task, step: Step | None, error_type: str, message: str, traceback: str = "",
    attempts: int = 1, evidence: dict | None = None,
) -> DeadLetter:
    worker = step.worker if step else ""
    with transaction.atomic():
        letter = DeadLetter.objects.create(
            task=task, step=step, worker=worker, error_type=error_type, message=message[:10000],
            traceback=traceback[-20000:], attempts=attempts, evidence=evidence or {},
            fingerprint=error_fingerprint(worker, error_type, message),
            doc_type=task.doc_type or "", queue=task.routed_to or "",
        )
        _group_add(letter)
    return letter


def _group_add(letter: DeadLetter) -> None:
    """Count a new open letter in its group (DeadLetterGroup), creating the group if it is new."""
    from django.db.models import F

    from .models import DeadLetterGroup

    latest = {"worker": letter.worker, "error_type": letter.error_type, "doc_type": letter.doc_type,
              "message": letter.message[:2000], "example_id": letter.pk, "last_seen": letter.created_at}
    if DeadLetterGroup.objects.filter(fingerprint=letter.fingerprint).update(open_count=F("open_count") + 1, **latest):
        return
    try:
        with transaction.atomic():
            DeadLetterGroup.objects.create(fingerprint=letter.fingerprint, open_count=1,
                                           first_seen=letter.created_at, **latest)
    except IntegrityError:
        # Another worker created the group a moment ago.
        DeadLetterGroup.objects.filter(fingerprint=letter.fingerprint).update(open_count=F("open_count") + 1, **latest)


def _groups_close(fingerprints: list[str]) -> None:
    """Letters of these fingerprints (one entry per letter) are no longer open."""
    from collections import Counter

    from django.db.models import F

    from .models import DeadLetterGroup

    for fingerprint, n in Counter(fingerprints).items():
        DeadLetterGroup.objects.filter(fingerprint=fingerprint).update(open_count=F("open_count") - n)


def dead_letter_groups_rebuild() -> int:
    """Recount every group from the dead letters (after a bulk import or a repair). Returns the
    number of groups. One aggregate query over the table: not for a page view."""
    from django.db.models import Count, Max, Min, Q

    from .models import DeadLetterGroup

    rows = list(DeadLetter.objects.order_by().values("fingerprint").annotate(
        open_count=Count("id", filter=Q(status=DeadLetterStatus.OPEN)), first_seen=Min("created_at"),
        last_seen=Max("created_at"), example_id=Max("id")))
    examples = DeadLetter.objects.in_bulk([row["example_id"] for row in rows])
    with transaction.atomic():
        DeadLetterGroup.objects.all().delete()
        DeadLetterGroup.objects.bulk_create([
            DeadLetterGroup(fingerprint=row["fingerprint"], open_count=row["open_count"],
                            first_seen=row["first_seen"], last_seen=row["last_seen"], example_id=row["example_id"],
                            worker=examples[row["example_id"]].worker,
                            error_type=examples[row["example_id"]].error_type,
                            doc_type=examples[row["example_id"]].doc_type,
                            message=examples[row["example_id"]].message[:2000])
            for row in rows
        ])
    return len(rows)


def dead_letter_retry(*, dead_letter_id: int, user=None, note: str = "retried", audit: bool = True) -> DeadLetter:
    """Send the task back through from its failed step. Safe against double clicks."""
    with transaction.atomic():
        now = timezone.now()
        if not DeadLetter.objects.filter(pk=dead_letter_id, status=DeadLetterStatus.OPEN).update(
            status=DeadLetterStatus.RETRIED, resolved_by=user, resolved_at=now, resolution_note=note
        ):
            dead_letter = DeadLetter.objects.get(pk=dead_letter_id)
            raise NotAllowed(f"Dead letter {dead_letter_id} is already {dead_letter.get_status_display().lower()}")
        dead_letter = DeadLetter.objects.select_related("task").get(pk=dead_letter_id)
        _groups_close([dead_letter.fingerprint])
        task = dead_letter.task
        if not Task.objects.filter(pk=task.pk, status=TaskStatus.DEAD_LETTERED).update(
            status=TaskStatus.QUEUED, step_attempts=0, recoveries=0, not_before=None, enqueued_at=now,
            updated_at=now,
        ):
            raise NotAllowed(f"Task {task.pk} is {task.status}, not dead-lettered")
        record_retries([dead_letter_id])  # monitoring rollups, in this transaction
        if audit:
            _audit(user, "retry", dead_letter=dead_letter, detail={"step": task.current_step})
        send_wakeup(task.pk, task.current_step)
    dead_letter.task.refresh_from_db()
    return dead_letter


def dead_letter_discard(*, dead_letter_id: int, user, reason: str) -> DeadLetter:
    reason = (reason or "").strip()
    if not reason:
        raise NotAllowed("A reason is required to discard a task")
    with transaction.atomic():
        now = timezone.now()
        if not DeadLetter.objects.filter(pk=dead_letter_id, status=DeadLetterStatus.OPEN).update(
            status=DeadLetterStatus.DISCARDED, resolved_by=user, resolved_at=now, resolution_note=reason
        ):
            raise NotAllowed(f"Dead letter {dead_letter_id} is not open")
        dead_letter = DeadLetter.objects.get(pk=dead_letter_id)
        _groups_close([dead_letter.fingerprint])
        Task.objects.filter(pk=dead_letter.task_id, status=TaskStatus.DEAD_LETTERED).update(
            status=TaskStatus.DISCARDED, finished_at=now, updated_at=now
        )
        record_discard(dead_letter.task_id)  # monitoring rollups, in this transaction
        _audit(user, "discard", dead_letter=dead_letter, detail={"reason": reason})
    return dead_letter


def _audit(user, action: str, *, dead_letter: DeadLetter | None = None, task: Task | None = None,
           bulk_retry=None, detail: dict | None = None) -> None:
    from .models import OperatorAction

    OperatorAction.objects.create(
        user=user if getattr(user, "is_authenticated", False) else None, action=action,
        dead_letter=dead_letter, task=task or (dead_letter.task if dead_letter else None),
        bulk_retry=bulk_retry, detail=detail or {},
    )


# Where an edit is allowed. Edits apply to the failed step and every step after it, and none of
# those has succeeded yet, so every later check (verify's duplicate and arithmetic checks, route's
# rules, the approval) still sees the edited values. After verify has passed (route, act) an edit
# would skip those checks, so it is refused: requeue as a new task instead.
EDITABLE_AT = ("classify", "extract", "verify")


def dead_letter_edit_retry(*, dead_letter_id: int, user, fields: dict | None = None,
                           doc_type: str = "") -> DeadLetter:
    """Edit, then send the task back through. Safe against double clicks.

    Steps: claim the open letter (compare-and-set); by the task's failed step:
    - classify: the person gives the document type; it is recorded as a succeeded classify step
      by that person (invariant 2: that step is never run again), the task moves on to extract;
    - extract: the person gives the fields, validated against the type's schema; recorded as a
      succeeded extract step by that person, the task moves on to verify;
    - verify: the person edits the extracted fields; verify then runs on the edited fields.
    The originals stay: in the earlier steps' outputs and in `edits` ({name: {"from", "to"}}).
    """
    from .models import DocType, StepStatus
    from .workers import WORKERS, next_step
    from .workers.extract import FieldsInvalid, fields_validate

    with transaction.atomic():
        letter = DeadLetter.objects.select_related("task").filter(pk=dead_letter_id).first()
        if letter is None:
            raise NotAllowed(f"Dead letter {dead_letter_id} does not exist")
        task = Task.objects.select_for_update().get(pk=letter.task_id)
        step_name = task.current_step
        if step_name not in EDITABLE_AT:
            raise NotAllowed(f"Task {task.pk} failed at {step_name or 'the end'}: after verify has passed an edit "
                             "would skip its checks. Retry as it is, or requeue it as a new task.")
        now = timezone.now()
        edits: dict = {"by": getattr(user, "username", ""), "at": now.isoformat(), "step": step_name}
        provided: dict | None = None  # the output of a step the person did instead of the model
        if step_name == "classify":
            if doc_type not in DocType.values:
                raise NotAllowed("Choose the document type: classify failed, so there is none yet")
            edits["doc_type"] = {"from": task.doc_type or None, "to": doc_type}
            provided = {"doc_type": doc_type, "confidence": None, "provided_by": edits["by"]}
        else:
            if not isinstance(fields, dict) or not fields:
                raise NotAllowed("Give the fields as a JSON object")
            if step_name == "extract":
                try:
                    fields = fields_validate(task.doc_type or "Other", fields)
                except FieldsInvalid as exc:
                    raise NotAllowed(f"The fields do not fit the {task.doc_type or 'Other'} schema: {exc}") from exc
                provided = {"doc_type": task.doc_type or "Other", "fields": fields, "provided_by": edits["by"]}
            original = task.fields or {}
            edits["fields"] = {
                name: {"from": original.get(name), "to": fields.get(name)}
                for name in sorted(set(original) | set(fields)) if original.get(name) != fields.get(name)
            }
            if not edits["fields"] and provided is None:
                raise NotAllowed("Nothing was changed: use Retry to send it back as it is")
        if not DeadLetter.objects.filter(pk=letter.pk, status=DeadLetterStatus.OPEN).update(
            status=DeadLetterStatus.RETRIED, resolved_by=user, resolved_at=now,
            resolution_note=f"edited ({step_name}) and retried", edits=edits,
        ):
            letter.refresh_from_db()
            raise NotAllowed(f"Dead letter {letter.pk} is already {letter.get_status_display().lower()}")
        _groups_close([letter.fingerprint])
        if task.status != TaskStatus.DEAD_LETTERED:
            raise NotAllowed(f"Task {task.pk} is {task.status}, not dead-lettered")
        record_retries([letter.pk])  # monitoring rollups, in this transaction
        changed: list[str] = []
        following = step_name
        if provided is not None:
            attempt = (Step.objects.filter(task=task, worker=step_name).order_by("-attempt")
                       .values_list("attempt", flat=True).first() or 0) + 1
            Step.objects.create(
                task=task, worker=step_name, attempt=attempt, status=StepStatus.SUCCEEDED,
                input={"provided_by": edits["by"], "dead_letter": letter.pk}, output=provided,
                model="", prompt_version="operator", started_at=now, finished_at=now,
            )
            changed = WORKERS[step_name].apply(task, provided)
            following = next_step(step_name)
        else:
            task.fields = fields
            changed = ["fields"]
        values = {name: getattr(task, name) for name in changed}
        Task.objects.filter(pk=task.pk, status=TaskStatus.DEAD_LETTERED).update(
            status=TaskStatus.QUEUED, current_step=following, step_attempts=0, recoveries=0,
            not_before=None, enqueued_at=now, updated_at=now, **values,
        )
        _audit(user, "edit_retry", dead_letter=letter, detail=edits)
        send_wakeup(task.pk, following)
    letter.refresh_from_db()
    return letter


def dead_letter_requeue(*, dead_letter_id: int, user) -> tuple[DeadLetter, Task]:
    """Close the letter and start its document again as a new task, from the first step.

    The old task is discarded (its steps and costs stay on it); the new one is a fresh run, so
    invariant 2 holds per task. Returns (letter, new task).
    """
    with transaction.atomic():
        now = timezone.now()
        if not DeadLetter.objects.filter(pk=dead_letter_id, status=DeadLetterStatus.OPEN).update(
            status=DeadLetterStatus.DISCARDED, resolved_by=user, resolved_at=now, resolution_note="requeued"
        ):
            letter = DeadLetter.objects.filter(pk=dead_letter_id).first()
            raise NotAllowed(f"Dead letter {dead_letter_id} is already "
                             f"{letter.get_status_display().lower() if letter else 'gone'}")
        letter = DeadLetter.objects.select_related("task").get(pk=dead_letter_id)
        _groups_close([letter.fingerprint])
        old = letter.task
        Task.objects.filter(pk=old.pk, status=TaskStatus.DEAD_LETTERED).update(
            status=TaskStatus.DISCARDED, finished_at=now, updated_at=now
        )
        record_discard(old.pk)  # monitoring rollups, in this transaction
        new, _ = task_submit(content=old.content, filename=old.filename, source=old.source,
                             external_ref=old.external_ref, submitted_by=user)
        DeadLetter.objects.filter(pk=letter.pk).update(resolution_note=f"Requeued as task {new.pk}")
        _audit(user, "requeue", dead_letter=letter, detail={"new_task": new.pk})
    letter.refresh_from_db()
    return letter, new


# --- Bulk retry ---------------------------------------------------------------------------------

BULK_RETRY_RATES = range(1, 100_001)  # dead letters a minute
PACE_REFUSED = "The pace must be a whole number of dead letters a minute, from 1 to 100,000."


def bulk_retry_create(*, user, dead_letter_ids, description: str, selection: dict,
                      rate_per_minute: int | None = None) -> BulkRetry:
    """Resolve a selection (ids, a group or a filter) to items now, and start the paced retry.

    Only letters still open at this moment become items; a letter in an unfinished bulk retry
    is not taken again (it would be retried by whichever came first anyway).
    """
    from django.conf import settings

    from .models import BulkRetry, BulkRetryItem, BulkRetryItemStatus, BulkRetryStatus

    rate = settings.STEWARD_BULK_RETRY_RATE if rate_per_minute is None else rate_per_minute
    if rate not in BULK_RETRY_RATES:
        raise NotAllowed(PACE_REFUSED)  # 0 is refused too, not taken for "the default"
    busy = BulkRetryItem.objects.filter(
        status=BulkRetryItemStatus.PENDING,
        bulk_retry__status__in=[BulkRetryStatus.RUNNING, BulkRetryStatus.PAUSED],
    ).values("dead_letter_id")
    rows = list(DeadLetter.objects.filter(pk__in=list(dead_letter_ids), status=DeadLetterStatus.OPEN)
                .exclude(pk__in=busy).order_by("id").values_list("id", "task_id"))
    if not rows:
        raise NotAllowed("Nothing to retry: none of the selected dead letters is open (or all are "
                         "already in a running bulk retry)")
    now = timezone.now()
    with transaction.atomic():
        bulk = BulkRetry.objects.create(
            created_by=user, description=description[:300], selection=selection, rate_per_minute=rate,
            total=len(rows), paced_since=now, next_tick_at=now, breaker_reset_at=now,
        )
        BulkRetryItem.objects.bulk_create(
            [BulkRetryItem(bulk_retry=bulk, dead_letter_id=dl, task_id=task) for dl, task in rows],
            batch_size=1000,
        )
        _audit(user, "bulk_create", bulk_retry=bulk, detail={"items": len(rows), "rate": rate, **selection})
        _send_tick(bulk.pk, 0)
    return bulk


def _send_tick(bulk_id: int, countdown: float) -> None:
    from .tasks import bulk_retry_tick

    # On the control queue: the pace holds while the workers are behind on the default queue.
    send_task_on_commit(bulk_retry_tick, bulk_id, countdown=countdown, queue=settings.STEWARD_CONTROL_QUEUE)


def tick_interval(rate_per_minute: int) -> float:
    """Seconds between ticks: one second, or longer when the rate is under one item a second."""
    return max(1.0, 60.0 / rate_per_minute) if rate_per_minute < 60 else 1.0


SETTLED_TASK_STATUSES = {
    "succeeded": (TaskStatus.COMPLETED, TaskStatus.AWAITING_APPROVAL, TaskStatus.REJECTED),
    "failed_again": (TaskStatus.DEAD_LETTERED, TaskStatus.DISCARDED),
}


def bulk_retry_advance(*, bulk_id: int, now=None) -> str:
    """One tick of a bulk retry. Returns what it did, for logs and tests.

    Steps: claim the tick by compare-and-set on next_tick_at (a duplicate tick exits); record
    the outcome of items already sent back (their task went through, or failed again); trip the
    circuit breaker if too many failed again; send back as many pending items as the rate allows
    since `paced_since`, in batches, each item by compare-and-set (pending -> enqueued) together with
    its letter's (open -> retried), so no item is ever retried twice; update the counters; schedule the
    next tick, or finish when every item has settled.
    """
    from datetime import timedelta

    from django.db.models import Q

    from .models import BulkRetry, BulkRetryItem, BulkRetryItemStatus as Item, BulkRetryStatus

    now = now or timezone.now()
    bulk = BulkRetry.objects.filter(pk=bulk_id).first()
    if bulk is None or bulk.status != BulkRetryStatus.RUNNING:
        return "not-running"
    interval = tick_interval(bulk.rate_per_minute)
    # A tick may arrive a little early (broker ETA jitter); half an interval of slack keeps the
    # chain alive, and pacing below is by the clock, so an early tick cannot exceed the rate.
    due = Q(next_tick_at__isnull=True) | Q(next_tick_at__lte=now + timedelta(seconds=interval / 2))
    if not BulkRetry.objects.filter(Q(pk=bulk_id, status=BulkRetryStatus.RUNNING) & due).update(
        next_tick_at=now + timedelta(seconds=interval)
    ):
        return "not-due"

    _bulk_record_outcomes(bulk)
    if _breaker_tripped(bulk, now):
        # The counters as of the trip, so the page agrees with the breaker's reason.
        BulkRetry.objects.filter(pk=bulk_id).update(**_bulk_counts(bulk)[0])
        return "paused"

    # Pace: no more than rate/minute since paced_since, so a slow or restarted worker catches up
    # gently, never in a burst larger than one tick's worth.
    elapsed = max((now - (bulk.paced_since or now)).total_seconds(), 0.0)
    allowed = int(bulk.rate_per_minute * (elapsed + interval) / 60.0) - bulk.paced_count
    allowed = max(0, min(allowed, max(1, int(bulk.rate_per_minute * interval / 60.0))))
    sent = 0
    if allowed:
        pending = list(BulkRetryItem.objects.filter(bulk_retry=bulk, status=Item.PENDING)
                       .order_by("id").values_list("id", flat=True)[:allowed])
        for offset in range(0, len(pending), 500):
            sent += _bulk_send(bulk, pending[offset:offset + 500], now)
    counts, still_open = _bulk_counts(bulk)
    with transaction.atomic():
        updates = dict(counts, paced_count=bulk.paced_count + sent, updated_at=now)
        if not still_open:
            updates.update(status=BulkRetryStatus.COMPLETED, finished_at=now, next_tick_at=None)
        if not BulkRetry.objects.filter(pk=bulk_id, status=BulkRetryStatus.RUNNING).update(**updates):
            # Paused or cancelled meanwhile: keep the counters right, send no further tick.
            BulkRetry.objects.filter(pk=bulk_id).update(**counts, paced_count=bulk.paced_count + sent)
            return "stopped"
        if still_open:
            _send_tick(bulk_id, interval)
    return "completed" if not still_open else f"sent {sent}"


def _bulk_record_outcomes(bulk) -> None:
    """Items sent back whose task has settled since: went through, or failed again.

    An item finished when its task did (the task's last change, never before the item was sent
    back), not when a tick or a page noticed: failures that happened while the bulk retry was
    paused must not count in the circuit breaker's window after the operator resumes it.
    """
    from django.db.models import OuterRef, Subquery
    from django.db.models.functions import Greatest

    from .models import BulkRetryItem, BulkRetryItemStatus as Item

    items = BulkRetryItem.objects.filter(bulk_retry=bulk, status=Item.ENQUEUED)
    settled_at = Greatest(Subquery(Task.objects.filter(pk=OuterRef("task_id")).values("updated_at")[:1]),
                          "enqueued_at")
    for outcome, statuses in SETTLED_TASK_STATUSES.items():
        items.filter(task__status__in=statuses).update(status=outcome, finished_at=settled_at)


def _bulk_counts(bulk) -> tuple[dict, int]:
    """The bulk retry's counters from its items, and how many items are still open."""
    from django.db.models import Count, Q

    from .models import BulkRetryItem, BulkRetryItemStatus as Item

    counts = BulkRetryItem.objects.filter(bulk_retry=bulk).aggregate(
        enqueued=Count("id", filter=~Q(status__in=[Item.PENDING, Item.SKIPPED])),
        succeeded=Count("id", filter=Q(status=Item.SUCCEEDED)),
        failed_again=Count("id", filter=Q(status=Item.FAILED_AGAIN)),
        skipped=Count("id", filter=Q(status=Item.SKIPPED)),
        open=Count("id", filter=Q(status__in=[Item.PENDING, Item.ENQUEUED])),
    )
    return counts, counts.pop("open")


def bulk_retries_settle(*, bulk_ids: list[int]) -> None:
    """Record what the items of paused or cancelled bulk retries did since they stopped.

    Pausing or cancelling stops the ticks, not the items already sent back: those tasks keep
    running, and without ticks their outcomes (and the counters) would stay "sent back, running"
    for good. The pages call this before they read, as the ticks do while a bulk retry runs.
    Only bulk retries with items in flight are touched; each call is idempotent.
    """
    from .models import BulkRetry, BulkRetryStatus

    stopped = BulkRetry.objects.filter(pk__in=bulk_ids, status__in=[BulkRetryStatus.PAUSED, BulkRetryStatus.CANCELLED])
    for bulk in stopped:
        if bulk.in_flight:
            _bulk_record_outcomes(bulk)
            BulkRetry.objects.filter(pk=bulk.pk).update(**_bulk_counts(bulk)[0])


def _bulk_send(bulk, item_ids: list[int], now) -> int:
    """Send a batch of pending items back, in one transaction, set-based. Returns how many went.

    The same guarantees as dead_letter_retry, item by item: an item goes pending -> enqueued once
    (rows locked, then updated only while pending); its letter goes open -> retried only if still
    open and its task dead_lettered -> queued only if still dead-lettered. Items whose letter was
    retried, discarded or edited by someone else since the selection are skipped, with the reason.
    """
    from .models import BulkRetryItem, BulkRetryItemStatus as Item

    with transaction.atomic():
        items = dict(BulkRetryItem.objects.select_for_update().filter(pk__in=item_ids, status=Item.PENDING)
                     .values_list("id", "dead_letter_id"))
        if not items:
            return 0  # another tick sent them
        open_letters = list(DeadLetter.objects.select_for_update().filter(
            pk__in=items.values(), status=DeadLetterStatus.OPEN).values_list("id", "task_id", "fingerprint"))
        letters = {letter: task for letter, task, _ in open_letters}
        tasks = dict(Task.objects.select_for_update().filter(
            pk__in=letters.values(), status=TaskStatus.DEAD_LETTERED).values_list("id", "current_step"))
        go = {letter: task for letter, task in letters.items() if task in tasks}
        DeadLetter.objects.filter(pk__in=go, status=DeadLetterStatus.OPEN).update(
            status=DeadLetterStatus.RETRIED, resolved_by=bulk.created_by, resolved_at=now,
            resolution_note=f"bulk retry {bulk.pk}")
        _groups_close([fingerprint for letter, _, fingerprint in open_letters if letter in go])
        Task.objects.filter(pk__in=go.values(), status=TaskStatus.DEAD_LETTERED).update(
            status=TaskStatus.QUEUED, step_attempts=0, recoveries=0, not_before=None, enqueued_at=now, updated_at=now)
        record_retries(list(go))  # monitoring rollups, in this transaction
        sent = [item for item, letter in items.items() if letter in go]
        BulkRetryItem.objects.filter(pk__in=sent).update(status=Item.ENQUEUED, enqueued_at=now)
        for item, letter in items.items():
            if letter in go:
                continue
            state = DeadLetter.objects.filter(pk=letter).values_list("status", flat=True).first()
            note = (f"Dead letter {letter} is already {state}" if state != DeadLetterStatus.OPEN
                    else "Its task is no longer dead-lettered")
            BulkRetryItem.objects.filter(pk=item).update(status=Item.SKIPPED, note=note, finished_at=now)
        for task_id in go.values():
            send_wakeup(task_id, tasks[task_id])
    return len(sent)


def _breaker_tripped(bulk, now) -> bool:
    """Pause when at least breaker_threshold of the last breaker_window items settled since the
    last (re)start failed again, once breaker_min_settled of them have settled."""
    from .models import BulkRetry, BulkRetryItem, BulkRetryItemStatus as Item, BulkRetryStatus

    recent = list(
        BulkRetryItem.objects.filter(bulk_retry=bulk, status__in=[Item.SUCCEEDED, Item.FAILED_AGAIN],
                                     finished_at__gte=bulk.breaker_reset_at or bulk.created_at)
        .order_by("-finished_at", "-id").values_list("status", flat=True)[: bulk.breaker_window]
    )
    if len(recent) < max(bulk.breaker_min_settled, 1):
        return False
    failed = sum(1 for status in recent if status == Item.FAILED_AGAIN)
    if failed / len(recent) < bulk.breaker_threshold:
        return False
    reason = (f"Paused by the circuit breaker at {now:%Y-%m-%d %H:%M:%S %Z}: {failed} of the last {len(recent)} "
              f"retried items failed again (threshold {bulk.breaker_threshold:.0%}). Fix the cause, then resume.")
    if BulkRetry.objects.filter(pk=bulk.pk, status=BulkRetryStatus.RUNNING).update(
        status=BulkRetryStatus.PAUSED, paused_reason=reason, next_tick_at=None, updated_at=now
    ):
        _audit(None, "bulk_breaker", bulk_retry=bulk, detail={"failed": failed, "of": len(recent)})
    return True


def bulk_retry_control(*, bulk_id: int, user, action: str) -> BulkRetry:
    """pause | resume | cancel, each a compare-and-set on the status (a double click is a no-op
    that says so). Resume restarts the pacing clock and the circuit breaker's window."""
    from .models import BulkRetry, BulkRetryStatus as S

    now = timezone.now()
    transitions = {
        "pause": ([S.RUNNING], {"status": S.PAUSED, "paused_reason": f"Paused by {user.get_username()}",
                                "next_tick_at": None}),
        "resume": ([S.PAUSED], {"status": S.RUNNING, "paused_reason": "", "paced_since": now, "paced_count": 0,
                                "breaker_reset_at": now, "next_tick_at": now}),
        "cancel": ([S.RUNNING, S.PAUSED], {"status": S.CANCELLED, "finished_at": now, "next_tick_at": None,
                                           "paused_reason": f"Cancelled by {user.get_username()}"}),
    }
    if action not in transitions:
        raise NotAllowed(f"Unknown action {action!r}")
    sources, changes = transitions[action]
    with transaction.atomic():
        if not BulkRetry.objects.filter(pk=bulk_id, status__in=sources).update(updated_at=now, **changes):
            bulk = BulkRetry.objects.get(pk=bulk_id)
            raise NotAllowed(f"Bulk retry {bulk_id} is {bulk.get_status_display().lower()}: cannot {action} it")
        bulk = BulkRetry.objects.get(pk=bulk_id)
        _audit(user, f"bulk_{action}", bulk_retry=bulk)
        if action == "resume":
            _send_tick(bulk_id, 0)
    return bulk
