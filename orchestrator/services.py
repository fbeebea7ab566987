"""Writes on tasks and dead letters. Plain keyword-only functions named <entity>_<action>."""
from __future__ import annotations

import hashlib

from django.db import IntegrityError, transaction
from django.utils import timezone

from .errors import error_fingerprint
from .intake import check_text
from .models import DeadLetter, DeadLetterStatus, Source, Step, Task, TaskStatus
from .pipeline import send_wakeup


class NotAllowed(Exception):
    """The row is not in a state where this action makes sense; the message says why."""


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

    Steps: validate the text (IntakeError); with an Idempotency-Key already used by this
    submitter, return that task unchanged; flag an exact duplicate of earlier content (it still
    becomes a task, never dropped); insert; enqueue after commit.
    """
    text = check_text(content)
    key = (idempotency_key or "").strip()[:255]
    if key and submitted_by is not None:
        existing = Task.objects.filter(submitted_by=submitted_by, idempotency_key=key).first()
        if existing:
            return existing, False
    sha = hashlib.sha256(text.encode("utf-8")).hexdigest()
    earlier = Task.objects.filter(content_sha256=sha).order_by("id").values_list("id", flat=True).first()
    try:
        with transaction.atomic():
            task = Task.objects.create(
                content=text,
                content_sha256=sha,
                filename=(filename or "")[:255],
                source=source,
                external_ref=(external_ref or "")[:255],
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
        return existing, False
    return task, True


def dead_letter_create(
    *, task: Task, step: Step | None, error_type: str, message: str, traceback: str = "",
    attempts: int = 1, evidence: dict | None = None,
) -> DeadLetter:
    worker = step.worker if step else ""
    return DeadLetter.objects.create(
        task=task, step=step, worker=worker, error_type=error_type, message=message[:10000],
        traceback=traceback[-20000:], attempts=attempts, evidence=evidence or {},
        fingerprint=error_fingerprint(worker, error_type, message),
    )


def dead_letter_retry(*, dead_letter_id: int, user=None) -> DeadLetter:
    """Send the task back through from its failed step. Safe against double clicks."""
    with transaction.atomic():
        now = timezone.now()
        if not DeadLetter.objects.filter(pk=dead_letter_id, status=DeadLetterStatus.OPEN).update(
            status=DeadLetterStatus.RETRIED, resolved_by=user, resolved_at=now, resolution_note="retried"
        ):
            dead_letter = DeadLetter.objects.get(pk=dead_letter_id)
            raise NotAllowed(f"Dead letter {dead_letter_id} is already {dead_letter.get_status_display().lower()}")
        dead_letter = DeadLetter.objects.select_related("task").get(pk=dead_letter_id)
        task = dead_letter.task
        if not Task.objects.filter(pk=task.pk, status=TaskStatus.DEAD_LETTERED).update(
            status=TaskStatus.QUEUED, step_attempts=0, recoveries=0, not_before=None, enqueued_at=now,
            updated_at=now,
        ):
            raise NotAllowed(f"Task {task.pk} is {task.status}, not dead-lettered")
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
        Task.objects.filter(pk=dead_letter.task_id, status=TaskStatus.DEAD_LETTERED).update(
            status=TaskStatus.DISCARDED, finished_at=now, updated_at=now
        )
    return dead_letter
