"""Signed email links: approve or reject one approval as one reviewer, once, without a session.

A link is `/reviews/link/<token>/`, the token a TimestampSigner-signed object (django.core.signing,
salted) that carries the approval id, the reviewer's id and a nonce. The nonce's EmailLink row makes
the link single use: deciding through it marks the row used in the same transaction as the
decision. Opening a link (GET) only shows a confirmation page, because mail clients and scanners
fetch links on their own; only the POST from that page decides.
"""
from __future__ import annotations

import secrets

from django.conf import settings
from django.core import signing
from django.urls import reverse
from django.utils import timezone

from .models import Approval, EmailLink

SALT = "reviews.email-link.v1"


class LinkError(Exception):
    """The link cannot be used; the message says why, in words for the person who clicked it."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def email_link_create(*, approval: Approval, user) -> str:
    """A new single-use token for `user` to decide `approval`."""
    nonce = secrets.token_urlsafe(24)
    EmailLink.objects.create(approval=approval, user=user, nonce=nonce)
    return signing.dumps({"a": approval.pk, "u": user.pk, "n": nonce}, salt=SALT, compress=True)


def link_url(token: str, *, reject: bool = False) -> str:
    path = reverse("review-link", args=[token])
    return absolute_url(path + ("?action=reject" if reject else ""))


def absolute_url(path: str) -> str:
    return settings.STEWARD_BASE_URL.rstrip("/") + path


def email_link_resolve(token: str) -> EmailLink:
    """The unused link row for a valid token, with its approval and user; LinkError otherwise."""
    try:
        data = signing.loads(token, salt=SALT, max_age=settings.STEWARD_EMAIL_LINK_MAX_AGE_S)
    except signing.SignatureExpired:
        raise LinkError("This link has expired. Open the approval in Steward instead.", status=410)
    except signing.BadSignature:
        raise LinkError("This link is not valid. Copy the whole address from the email, or open "
                        "the approval in Steward instead.")
    if not isinstance(data, dict) or not {"a", "u", "n"} <= set(data):
        raise LinkError("This link is not valid.")
    link = (
        EmailLink.objects.select_related("approval__queue", "approval__task", "user")
        .filter(nonce=data["n"], approval_id=data["a"], user_id=data["u"])
        .first()
    )
    if link is None:
        raise LinkError("This link is not valid.")
    if not link.user.is_active:
        raise LinkError("This link's reviewer account is disabled.", status=403)
    if link.used_at is not None:
        raise LinkError(f"This link was already used at {link.used_at:%Y-%m-%d %H:%M:%S} UTC; each link "
                        "works once.", status=410)
    return link


def email_link_consume(link: EmailLink) -> bool:
    """Mark the link used (compare-and-set); False if another request used it first.

    Call inside the decision's transaction, so a refused decision leaves the link usable.
    """
    return bool(EmailLink.objects.filter(pk=link.pk, used_at__isnull=True).update(used_at=timezone.now()))
