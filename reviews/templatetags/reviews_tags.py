"""{% task_audit task %}: the task's audit trail (decisions, moves, escalations, expiries); the
`oneline` filter for plain-text emails."""
from __future__ import annotations

from django import template

from reviews.models import AuditEvent

register = template.Library()
# A task gathers a handful of events; the cap only guards the page against a runaway writer.
MAX_EVENTS = 200


@register.inclusion_tag("reviews/_task_audit.html")
def task_audit(task) -> dict:
    events = AuditEvent.objects.filter(task=task).order_by("created_at", "id")[:MAX_EVENTS]
    return {"events": list(events)}


@register.filter
def oneline(value) -> str:
    """Every run of whitespace (line breaks included) as one space. Plain-text emails show
    filenames, summaries and reasons, which carry what integrators and documents say: on one line
    each, none can add lines of its own (a fake "Approve:" link above Steward's)."""
    return " ".join(str(value).split())
