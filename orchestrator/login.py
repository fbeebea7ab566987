"""Login throttle: after STEWARD_LOGIN_MAX_FAILURES wrong passwords for one user name, that name's
logins (the right password too) wait STEWARD_LOGIN_LOCKOUT_S, on Steward's page and the admin's.

Counted by user name, not by address: behind the TLS proxy every request comes from the proxy's
address. The count lives in Django's cache (per web process unless CACHES names a shared one), so
a guesser gets at most processes x limit tries per wait instead of as many as the network allows.
A refused attempt does not run the password hasher either.
"""
from __future__ import annotations

import hashlib

from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm
from django.core.cache import cache
from django.core.exceptions import ValidationError

TOO_MANY = "Too many failed logins for this user name: try again in a few minutes."


def _key(username: str) -> str:
    # Hashed: the cache key stays short and valid whatever was typed.
    return "login-failures:" + hashlib.sha256(username.strip().lower().encode()).hexdigest()


class ThrottledLogin:
    """Mixin for an authentication form: refuse a throttled user name before checking the password."""

    def clean(self):
        key = _key(self.data.get("username") or "")
        if cache.get(key, 0) >= settings.STEWARD_LOGIN_MAX_FAILURES:
            raise ValidationError(TOO_MANY, code="throttled")
        try:
            cleaned = super().clean()
        except ValidationError:
            # The wait runs from the first failure: a guesser cannot extend it by guessing on.
            cache.add(key, 0, timeout=settings.STEWARD_LOGIN_LOCKOUT_S)
            try:
                cache.incr(key)
            except ValueError:  # expired between add and incr
                cache.add(key, 1, timeout=settings.STEWARD_LOGIN_LOCKOUT_S)
            raise
        cache.delete(key)
        return cleaned


class LoginForm(ThrottledLogin, AuthenticationForm):
    pass


class AdminLoginForm(ThrottledLogin, AdminAuthenticationForm):
    pass
