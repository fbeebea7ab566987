"""act: run the approved consequential action (webhook POST or email), at most once per approval."""
from __future__ import annotations

from ..errors import PermanentError
from .base import StepContext

NAME = "act"
VERSION = "v1"
PROMPT = "(act uses no model)"


def run(ctx: StepContext) -> dict:
    from reviews.actions import action_perform
    from reviews.models import Approval, ApprovalStatus

    approval = ctx.approval  # auto-approved a moment ago in this run: no need to read it back
    if approval is None or approval.status != ApprovalStatus.AUTO_APPROVED:
        approval = (
            Approval.objects.filter(task=ctx.task, status__in=[ApprovalStatus.APPROVED, ApprovalStatus.AUTO_APPROVED])
            .select_related("queue")
            .order_by("-id")
            .first()
        )
    if approval is None:
        raise PermanentError("No approved action to run for this task", error_type="NoApproval")
    return action_perform(approval)


def apply(task, output: dict) -> list[str]:
    task.action_result = output
    return ["action_result"]
