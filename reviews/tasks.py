"""Celery tasks of the review app: thin. They take ids and call notifications or services."""
from __future__ import annotations

import smtplib

from celery import shared_task

from . import notifications, services

# Mail servers come back: retry an email that could not be sent, with backoff and jitter.
MAIL_ERRORS = (smtplib.SMTPException, OSError)


@shared_task(name="reviews.tasks.approval_notify", acks_late=True, autoretry_for=MAIL_ERRORS,
             retry_backoff=5, retry_backoff_max=600, retry_jitter=True, max_retries=6)
def approval_notify(approval_id: int) -> dict:
    return notifications.approval_notify(approval_id=approval_id)


@shared_task(name="reviews.tasks.approval_escalation_notify", acks_late=True, autoretry_for=MAIL_ERRORS,
             retry_backoff=5, retry_backoff_max=600, retry_jitter=True, max_retries=6)
def approval_escalation_notify(approval_id: int, event: str) -> dict:
    return notifications.approval_escalation_notify(approval_id=approval_id, event=event)


@shared_task(name="reviews.tasks.review_sweep", acks_late=False)
def review_sweep() -> dict:
    """Beat, every STEWARD_REVIEW_SWEEP_INTERVAL_S: expire, escalate, re-send lost notifications."""
    return services.approvals_sweep()
