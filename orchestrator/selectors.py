"""Reads that several views share. Writes live in services.py."""
from __future__ import annotations

from django.db.models import QuerySet

from .models import Task
from .roles import ADMIN, OPERATOR, has_role


def visible_tasks(user) -> QuerySet[Task]:
    """Operators and admins see every task; a reviewer only those with an approval in their queues."""
    if has_role(user, OPERATOR, ADMIN):
        return Task.objects.all()
    return Task.objects.filter(approvals__queue__reviewers=user).distinct()
