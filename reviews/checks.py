"""System checks for a deployment (`manage.py check --deploy`)."""
from __future__ import annotations

from django.conf import settings
from django.core.checks import Tags, Warning, register as register_check


def register() -> None:
    register_check(webhook_secret_check, Tags.security, deploy=True)


def webhook_secret_check(app_configs, **kwargs):
    if settings.STEWARD_WEBHOOK_SECRET:
        return []
    return [Warning(
        "STEWARD_WEBHOOK_SECRET is not set: action webhooks go unsigned, so a receiver cannot tell an "
        "approved payment posted by Steward from one posted by anyone who learns its address.",
        hint="Set STEWARD_WEBHOOK_SECRET to a long random value and have receivers check the "
             "Steward-Signature header (README.md, \"Receiving actions\").",
        id="steward.W001",
    )]
