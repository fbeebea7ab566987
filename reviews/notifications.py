"""Telling people: email to a queue's reviewers (each with their own signed approve/reject links),
and the queue's optional Microsoft Teams and Slack incoming webhooks. Run from Celery tasks
(reviews/tasks.py), never inline in a request or a pipeline step.
"""
from __future__ import annotations

import logging

from django.conf import settings
from django.core.mail import EmailMessage, get_connection
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from orchestrator.workers.route import money, to_decimal

from .actions import _post, email_subject
from .links import absolute_url, email_link_create, link_url
from .models import Approval, ApprovalStatus
from .selectors import queue_deciders

log = logging.getLogger(__name__)


def approval_notify(*, approval_id: int) -> dict:
    """Tell the queue about a new pending approval, once.

    Steps: skip an approval that is gone, decided or already notified (a redelivered message);
    email every active reviewer of the queue who has an address, each with links bound to them;
    post to the queue's chat webhooks (a failing webhook is logged, it does not stop the rest);
    mark the approval notified. An email failure raises, so the Celery task retries.
    """
    approval = _approval_for_email(approval_id)
    if approval is None or approval.status != ApprovalStatus.PENDING or approval.notified_at:
        return {"approval_id": approval_id, "skipped": True}
    queue = approval.queue
    result: dict = {"approval_id": approval_id, "emails": [], "webhooks": {}}
    if queue.notify_reviewers:
        reviewers = [user for user in queue_deciders(queue) if user.email]
        messages = [_reviewer_email(approval, user) for user in reviewers]
        if messages:
            get_connection().send_messages(messages)
        result["emails"] = [user.email for user in reviewers]
    title = f"Approval needed in {queue.name}"
    result["webhooks"] = _post_chat(approval, title, approval.action_summary, "new")
    Approval.objects.filter(pk=approval.pk, notified_at__isnull=True).update(notified_at=timezone.now())
    return result


def _approval_for_email(approval_id: int) -> Approval | None:
    # The emails name the task (id, filename, type): its document text, up to megabytes, stays behind.
    # get(), not first(): first() orders by id, and compiling that ORDER BY over three joined models
    # was a fifth of a notification's CPU.
    try:
        return Approval.objects.select_related("queue", "task").defer("task__content").get(pk=approval_id)
    except Approval.DoesNotExist:
        return None


def _item_url(approval: Approval) -> str:
    return absolute_url(reverse("review-item", args=[approval.pk]))


def _reviewer_email(approval: Approval, user) -> EmailMessage:
    token = email_link_create(approval=approval, user=user)
    context = {
        "approval": approval,
        "task": approval.task,
        "user": user,
        "approve_url": link_url(token),
        "reject_url": link_url(token, reject=True),
        "item_url": _item_url(approval),
        "link_hours": int(settings.STEWARD_EMAIL_LINK_MAX_AGE_S // 3600),
        "amount": _amount_text(approval),
    }
    return EmailMessage(
        subject=email_subject(f"[Steward] Approval needed ({approval.queue.name}): {approval.action_summary}"),
        body=render_to_string("reviews/email/approval_new.txt", context),
        to=[user.email],
        headers={"Auto-Submitted": "auto-generated", "X-Steward-Approval": str(approval.pk)},
    )


def _amount_text(approval: Approval) -> str:
    """The amount the rules saw, as people write it ("$50,000", not "50000.0"); "" without one."""
    amount = to_decimal(approval.action_data.get("amount"))
    if amount is None:
        return ""
    return money(amount, (approval.action_data.get("fields") or {}).get("currency") or "USD")


def approval_escalation_notify(*, approval_id: int, event: str) -> dict:
    """Tell the queue's escalation address (and chat webhooks) that an approval is past its SLA
    ("escalated") or expired undecided ("expired")."""
    approval = _approval_for_email(approval_id)
    if approval is None:
        return {"approval_id": approval_id, "skipped": True}
    queue = approval.queue
    if event == "expired":
        title = f"Expired undecided in {queue.name}"
        line = "Nobody decided it before the queue's expiry: the task was rejected and the action will not run."
    else:
        title = f"Past its SLA in {queue.name}"
        line = f"Still pending after the queue's SLA of {queue.sla_minutes} minutes."
    result: dict = {"approval_id": approval_id, "event": event, "emails": [], "webhooks": {}}
    if queue.escalation_email:
        body = render_to_string("reviews/email/approval_escalated.txt", {
            "approval": approval, "task": approval.task, "queue": queue, "line": line, "title": title,
            "item_url": _item_url(approval),
        })
        EmailMessage(subject=email_subject(f"[Steward] {title}: {approval.action_summary}"), body=body,
                     to=[queue.escalation_email], headers={"Auto-Submitted": "auto-generated"}).send()
        result["emails"] = [queue.escalation_email]
    result["webhooks"] = _post_chat(approval, title, f"{approval.action_summary}\n{line}", event)
    return result


def _post_chat(approval: Approval, title: str, text: str, event: str) -> dict:
    """POST to the queue's Teams and Slack webhooks; returns {kind: status or error}."""
    outcome: dict = {}
    url = _item_url(approval)
    for kind, target, payload in (
        ("teams", approval.queue.teams_webhook_url, teams_payload(title, text, url)),
        ("slack", approval.queue.slack_webhook_url, slack_payload(title, text, url)),
    ):
        if not target:
            continue
        try:
            outcome[kind] = _post(target, payload, f"notify-{event}-{approval.idempotency_key}")
        except Exception as exc:  # noqa: BLE001 - chat is best effort; email is the channel of record
            log.warning("Approval %s: %s webhook failed: %s", approval.pk, kind, exc)
            outcome[kind] = f"failed: {exc}"
    return outcome


def slack_payload(title: str, text: str, url: str) -> dict:
    """Slack incoming webhook: mrkdwn text with a link. The text holds what documents say, and
    Slack reads <url|label> as a link and <!channel> as a mention: &, < and > are escaped, as
    Slack asks, so the only link is ours."""
    return {"text": f"*{_slack_escape(title)}*\n{_slack_escape(text)}\n<{url}|Open in Steward>"}


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def teams_payload(title: str, text: str, url: str) -> dict:
    """Teams incoming webhook (and Workflows "post to a channel"): one Adaptive Card. The text
    (what documents say) is a RichTextBlock's TextRun, which takes no markdown: in a TextBlock,
    [label](url) from a vendor's invoice would be a link in the card."""
    return {
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": None,
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "body": [
                    {"type": "TextBlock", "text": title, "weight": "Bolder", "size": "Medium", "wrap": True},
                    {"type": "RichTextBlock", "inlines": [{"type": "TextRun", "text": text}]},
                ],
                "actions": [{"type": "Action.OpenUrl", "title": "Open in Steward", "url": url}],
            },
        }],
    }
