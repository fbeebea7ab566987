"""Reads that several views share. Writes live in services.py."""
from __future__ import annotations

from django.db.models import QuerySet

from reviews.models import Queue

from .models import Task
from .roles import ADMIN, OPERATOR, has_role


def visible_tasks(user) -> QuerySet[Task]:
    """Operators and admins see every task; a reviewer only those with an approval in their queues."""
    if has_role(user, OPERATOR, ADMIN):
        return Task.objects.all()
    return Task.objects.filter(approvals__queue__reviewers=user).distinct()


def visible_queue_names(user) -> list[str]:
    """The queues a user may filter by, by name: every one for operators and admins, else their own."""
    queues = Queue.objects.all() if has_role(user, OPERATOR, ADMIN) else Queue.objects.filter(reviewers=user)
    return list(queues.order_by("name").values_list("name", flat=True))


# Triage filters: request parameter -> DeadLetter field. Every one is a plain equality.
TRIAGE_FILTERS = ("worker", "error_type", "doc_type", "queue", "fingerprint")
# "since" choices: label and age in hours.
TRIAGE_SINCE = {"1h": ("Last hour", 1), "24h": ("Last 24 hours", 24), "7d": ("Last 7 days", 24 * 7)}


def open_dead_letters(filters: dict, *, now=None):
    """Open dead letters matching the triage filters (worker, error type, doc type, queue,
    fingerprint, since, and q: a case-insensitive search over messages)."""
    from datetime import timedelta

    from django.utils import timezone

    from .models import DeadLetter, DeadLetterStatus

    letters = DeadLetter.objects.filter(status=DeadLetterStatus.OPEN)
    for name in TRIAGE_FILTERS:
        if filters.get(name):
            letters = letters.filter(**{name: filters[name]})
    if filters.get("since") in TRIAGE_SINCE:
        hours = TRIAGE_SINCE[filters["since"]][1]
        letters = letters.filter(created_at__gte=(now or timezone.now()) - timedelta(hours=hours))
    if filters.get("q"):
        letters = letters.filter(message__icontains=filters["q"])
    return letters
