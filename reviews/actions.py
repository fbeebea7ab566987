"""The consequential action after approval: a webhook POST or an email, at most once per approval.

The approval's action_status is a compare-and-set guard: `done` is never sent again. A crash
between sending and recording leaves `sending`, and the retry sends again with the same
Idempotency-Key, so the receiver can tell it is the same action.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.error
import urllib.request
from urllib.parse import urljoin, urlsplit

from django.conf import settings
from django.core.mail import EmailMessage
from django.utils import timezone

from orchestrator.errors import PermanentError, TransientError

from .models import ActionStatus, Approval, Queue


def action_payload(approval: Approval) -> dict:
    return {
        "approval_id": approval.pk,
        "task_id": approval.task_id,
        "decision": approval.status,
        "decided_by": approval.decided_by.get_username() if approval.decided_by else None,
        "decided_at": approval.decided_at.isoformat() if approval.decided_at else None,
        "queue": approval.queue.name,
        "action": approval.action_summary,
        "data": approval.action_data,
        "corrections": approval.corrections,
        "idempotency_key": approval.idempotency_key,
    }


def shown_target(url: str) -> str:
    """The webhook address as the step's output records it (task page, API): scheme and host only.

    A webhook address is often the receiver's credential (a token in its path or query, a password
    before the host), and the output is read by reviewers and integrators; the whole address stays
    in the queue (admin) or STEWARD_WEBHOOK_URL."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    rest = "/…" if parts.path.strip("/") or parts.query else "/"
    return f"{parts.scheme}://{host}{rest}"


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Redirects come back as errors. urllib follows a 301, 302 or 303 answer to a POST with a GET
    without the body: the receiver would never get the action, yet it would count as sent."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


_opener = urllib.request.build_opener(_NoRedirects)


SIGNATURE_HEADER = "Steward-Signature"


def webhook_signature(body: bytes, secret: str, timestamp: int) -> str:
    """The Steward-Signature header's value: `t=<unix time>,v1=<hex HMAC-SHA256 of "<t>." + body>`.

    The receiver recomputes it over the bytes it received with the shared STEWARD_WEBHOOK_SECRET
    and compares in constant time; the signed timestamp lets it refuse an old POST replayed later
    (README.md, "Receiving actions"). A retry of the same action is signed afresh
    with its own time and keeps its Idempotency-Key."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def _post(url: str, payload: dict, key: str) -> int:
    body = json.dumps(payload).encode()
    headers = {"Content-Type": "application/json", "Idempotency-Key": key, "User-Agent": "Steward"}
    if settings.STEWARD_WEBHOOK_SECRET:
        headers[SIGNATURE_HEADER] = webhook_signature(body, settings.STEWARD_WEBHOOK_SECRET, int(time.time()))
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with _opener.open(request, timeout=settings.STEWARD_WEBHOOK_TIMEOUT_S) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        if 300 <= exc.code < 400:
            # Named as the target is (shown_target): the error is read where the address is not.
            location = shown_target(urljoin(url, exc.headers.get("Location") or ""))
            raise PermanentError(
                f"Webhook answered {exc.code}, a redirect to {location}: an action is not re-sent to "
                "another address; make that the target", error_type=f"Webhook{exc.code}",
            ) from exc
        if exc.code == 429 or exc.code >= 500:
            retry_after = exc.headers.get("Retry-After")
            raise TransientError(
                f"Webhook answered {exc.code}", error_type=f"Webhook{exc.code}",
                retry_after=float(retry_after) if retry_after and retry_after.isdigit() else None,
            ) from exc
        raise PermanentError(f"Webhook refused the action ({exc.code})", error_type=f"Webhook{exc.code}") from exc
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        raise TransientError(f"Webhook unreachable: {exc}", error_type="WebhookUnreachable") from exc


def email_subject(text: str) -> str:
    """One line of at most 150 characters. Subjects carry action summaries, which carry what
    documents say: a line break there would make Django refuse to send the email at all."""
    text = " ".join(text.split())
    return text if len(text) <= 150 else text[:149] + "…"


def action_perform(approval: Approval) -> dict:
    """Run the approval's action unless it already ran; returns what happened."""
    if approval.action_status == ActionStatus.DONE:
        return {"approval_id": approval.pk, "skipped": "already sent", "idempotency_key": approval.idempotency_key}
    Approval.objects.filter(pk=approval.pk, action_status=ActionStatus.NOT_STARTED).update(
        action_status=ActionStatus.SENDING
    )
    payload = action_payload(approval)
    result = {"approval_id": approval.pk, "kind": approval.action_kind, "idempotency_key": approval.idempotency_key}
    if approval.action_kind == Queue.ActionKind.EMAIL:
        recipients = [approval.queue.action_email] if approval.queue.action_email else [
            u.email for u in approval.queue.reviewers.all() if u.email
        ]
        if not recipients:
            raise PermanentError(f"Queue {approval.queue.name} has no address for email actions",
                                 error_type="NoActionTarget")
        message = EmailMessage(
            subject=email_subject(f"[Steward] {approval.get_status_display()}: {approval.action_summary}"),
            body=json.dumps(payload, indent=2),
            to=recipients,
            headers={"Idempotency-Key": approval.idempotency_key,
                     "Message-ID": f"<{approval.idempotency_key}@steward>"},
        )
        message.send()
        result.update(target=", ".join(recipients))
    else:
        url = approval.queue.webhook_url or settings.STEWARD_WEBHOOK_URL
        if not url:
            raise PermanentError(
                f"No webhook target: queue {approval.queue.name} sets none and STEWARD_WEBHOOK_URL is empty",
                error_type="NoActionTarget",
            )
        result.update(target=shown_target(url), status_code=_post(url, payload, approval.idempotency_key))
    Approval.objects.filter(pk=approval.pk).update(action_status=ActionStatus.DONE, action_sent_at=timezone.now())
    return result
