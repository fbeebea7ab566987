"""The audit trail: who did what, when, to which object. Append-only rows of AuditEvent.

`audit_record` is called by the review services (decisions, moves, escalations, expiries) inside
their transactions, and by the admin (reviews/admin_tools.py) for changes to the review policy.
"""
from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.db import models

from .models import AuditEvent

SYSTEM = "system"


def audit_record(
    *,
    action: str,
    obj: models.Model,
    summary: str,
    actor=None,
    actor_name: str = "",
    task_id: int | None = None,
    data: dict | None = None,
) -> AuditEvent:
    """Append one event. `actor` None is the system (the review sweep), unless `actor_name` says who."""
    name = actor_name or (actor.get_username() if actor is not None else SYSTEM)
    return AuditEvent.objects.create(
        actor=actor if getattr(actor, "pk", None) else None,
        actor_name=name[:150],
        action=action,
        summary=summary[:500],
        object_type=obj._meta.label_lower,
        object_id=str(obj.pk),
        object_repr=str(obj)[:200],
        task_id=task_id,
        data=_jsonable(data or {}),
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Decimal):
        return str(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


# --- Snapshots of admin-edited rows -------------------------------------------------------------

# Bookkeeping columns that change on every save and say nothing about the policy.
IGNORED_FIELDS = {"id", "updated_at", "created_at"}


def snapshot(obj: models.Model) -> dict[str, Any]:
    """The row's editable values as JSON-able data: foreign keys by their name, many-to-many as a
    sorted list of names (e.g. a queue's reviewers)."""
    values: dict[str, Any] = {}
    for field in obj._meta.concrete_fields:
        if field.name in IGNORED_FIELDS:
            continue
        if field.is_relation:
            related = getattr(obj, field.name, None)
            values[field.name] = str(related) if related is not None else None
        else:
            values[field.name] = _jsonable(field.value_from_object(obj))
    if obj.pk is not None:
        for field in obj._meta.many_to_many:
            values[field.name] = sorted(str(item) for item in getattr(obj, field.name).all())
    return values


def snapshot_diff(before: dict, after: dict) -> dict[str, list]:
    """{field: [before, after]} for every value that changed."""
    return {name: [before.get(name), value] for name, value in after.items() if before.get(name) != value}


def describe_changes(changes: dict[str, list]) -> str:
    parts = []
    for name, (old, new) in changes.items():
        if isinstance(old, list) or isinstance(new, list):
            added = sorted(set(new or []) - set(old or []))
            removed = sorted(set(old or []) - set(new or []))
            bits = [f"+{', '.join(added)}" if added else "", f"-{', '.join(removed)}" if removed else ""]
            parts.append(f"{name} {' '.join(b for b in bits if b)}")
        else:
            parts.append(f"{name} {_short(old)} → {_short(new)}")
    return "; ".join(parts)


def _short(value: Any) -> str:
    if value in (None, ""):
        return "(empty)"
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "…"
