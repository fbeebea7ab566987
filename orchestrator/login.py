"""Login throttle: after STEWARD_LOGIN_MAX_FAILURES wrong passwords for one user name, that name's
logins (the right password too) wait STEWARD_LOGIN_LOCKOUT_S from its first failure, on Steward's
page and the admin's.

Counted by user name, not by address: behind the TLS proxy every request comes from the proxy's
address. The count is a row in the database (LoginFailure), which every web process on every
machine shares: however many gunicorn processes answer, a user name gets that many password checks
per wait, not processes x that many. A try is counted before its password is checked, and forgotten
when the password was right, so that processes checking at the same moment cannot together go past
the limit either. A refused attempt does not run the password hasher. The sweeper deletes the
counts whose wait is over (login_failures_forget), and the sessions that expired
(sessions_clear_expired).
"""
from __future__ import annotations

import hashlib
import time
from datetime import datetime, timedelta
from importlib import import_module

from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm
from django.core.exceptions import ValidationError
from django.db.models import Case, F, Q, Value, When
from django.utils import timezone

from .models import LoginFailure

TOO_MANY = "Too many failed logins for this user name: try again in a few minutes."
# How often a process looks for expired sessions: a session lasts STEWARD_SESSION_HOURS (at least 1).
SESSIONS_CLEAR_EVERY_S = 3600.0
# When this process last looked (time.monotonic()), None before its first sweep.
_sessions_cleared_at: float | None = None


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


def sessions_clear_expired() -> bool:
    """Delete the expired sessions of SESSION_ENGINE, what Django's clearsessions does (the
    sweeper's housekeeping): Django never deletes a session nobody comes back with, so the table
    would keep one row per login for good. At most once every SESSIONS_CLEAR_EVERY_S per process,
    not every sweep (every STEWARD_SWEEP_INTERVAL_S): the database engine's is one DELETE by the
    indexed expiry date, but the file engine's reads every session file. Returns whether it looked."""
    global _sessions_cleared_at
    now = time.monotonic()
    if _sessions_cleared_at is not None and now - _sessions_cleared_at < SESSIONS_CLEAR_EVERY_S:
        return False
    # Counted from the attempt: a failing session store costs one error an hour, not one a sweep.
    _sessions_cleared_at = now
    import_module(settings.SESSION_ENGINE).SessionStore.clear_expired()
    return True


def sessions_forget() -> None:
    """Look again at the next sweep (tests: each starts as a fresh process would)."""
    global _sessions_cleared_at
    _sessions_cleared_at = None


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
