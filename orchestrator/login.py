"""Login throttle: after STEWARD_LOGIN_MAX_FAILURES wrong passwords for one user name, that name's
logins (the right password too) wait STEWARD_LOGIN_LOCKOUT_S from its first failure, on Steward's
page and the admin's.

Counted by user name, not by address: behind the TLS proxy every request comes from the proxy's
address. The count is a row in the database (LoginFailure), which every web process on every
machine shares: however many gunicorn processes answer, a user name gets that many password checks
per wait, not processes x that many. A try is counted before its password is checked, and forgotten
when the password was right, so that processes checking at the same moment cannot together go past
the limit either. A refused attempt does not run the password hasher. The sweeper deletes the
counts whose wait is over (login_failures_forget).
"""
from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm
from django.core.exceptions import ValidationError
from django.db.models import Case, F, Q, Value, When
from django.utils import timezone

from .models import LoginFailure

TOO_MANY = "Too many failed logins for this user name: try again in a few minutes."


def _hash(username: str) -> str:
    # Hashed: the key stays short whatever was typed, and the table lists no names.
    return hashlib.sha256(username.strip().lower().encode()).hexdigest()


def login_try_take(username: str, now: datetime | None = None) -> bool:
    """Count one more failed login for `username` (until login_failures_clear), or return False,
    counting nothing, while the name waits. One UPDATE decides, so concurrent tries queue on the
    row: a count whose wait is over starts again at 1, one under the limit goes up by 1, one at the
    limit is left alone. A name with no row gets one (INSERT ... ON CONFLICT DO NOTHING: a process
    inserting it at the same moment is no error), and the UPDATE runs again."""
    now = now or timezone.now()
    rows = LoginFailure.objects.filter(username_hash=_hash(username))
    over = Q(first_failure_at__lte=now - timedelta(seconds=settings.STEWARD_LOGIN_LOCKOUT_S))

    def take() -> bool:
        return bool(rows.filter(over | Q(failures__lt=settings.STEWARD_LOGIN_MAX_FAILURES)).update(
            failures=Case(When(over, then=Value(1)), default=F("failures") + 1),
            first_failure_at=Case(When(over, then=Value(now)), default=F("first_failure_at")),
        ))

    if take():
        return True
    LoginFailure.objects.bulk_create([LoginFailure(username_hash=_hash(username), failures=0, first_failure_at=now)],
                                     ignore_conflicts=True)
    return take()


def login_failures_clear(username: str) -> None:
    """The right password: the name's count starts again from nothing."""
    LoginFailure.objects.filter(username_hash=_hash(username)).delete()


def login_failures_forget(now: datetime) -> int:
    """Delete the counts whose wait is over (the sweeper's housekeeping): a name tried once and
    never again would otherwise keep its row for good."""
    since = now - timedelta(seconds=settings.STEWARD_LOGIN_LOCKOUT_S)
    return LoginFailure.objects.filter(first_failure_at__lte=since).delete()[0]


class ThrottledLogin:
    """Mixin for an authentication form: refuse a throttled user name before checking the password."""

    def clean(self):
        username, password = self.cleaned_data.get("username"), self.cleaned_data.get("password")
        if username is None or not password:
            # No password is checked (the form says what is missing): nothing counted, nothing cleared.
            return super().clean()
        if not login_try_take(username):
            raise ValidationError(TOO_MANY, code="throttled")
        cleaned = super().clean()  # a wrong password raises ValidationError: the try stays counted
        login_failures_clear(username)
        return cleaned


class LoginForm(ThrottledLogin, AuthenticationForm):
    pass


class AdminLoginForm(ThrottledLogin, AdminAuthenticationForm):
    pass
