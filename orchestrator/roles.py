"""Roles are Django groups: reviewer, operator, admin. Small helpers for views and the API."""
from __future__ import annotations

import hashlib
import secrets
from functools import wraps
from typing import Callable

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

REVIEWER = "reviewer"
OPERATOR = "operator"
ADMIN = "admin"
ROLES = (REVIEWER, OPERATOR, ADMIN)


def user_roles(user) -> set[str]:
    """The user's roles, cached on the user object for the request."""
    if not getattr(user, "is_authenticated", False) or not user.is_active:
        return set()
    cached = getattr(user, "_steward_roles", None)
    if cached is None:
        cached = set(user.groups.filter(name__in=ROLES).values_list("name", flat=True))
        if user.is_superuser:
            cached.add(ADMIN)
        user._steward_roles = cached
    return cached


def has_role(user, *roles: str) -> bool:
    return bool(user_roles(user) & set(roles))


def role_required(*roles: str) -> Callable:
    """Page decorator: anonymous -> login page; logged in without one of `roles` -> 403."""

    def decorator(view):
        @login_required
        @wraps(view)
        def wrapper(request, *args, **kwargs):
            if not has_role(request.user, *roles):
                raise PermissionDenied("Your role does not give access to this page")
            return view(request, *args, **kwargs)

        return wrapper

    return decorator


# --- API tokens -----------------------------------------------------------------------------

TOKEN_PREFIX = "stw_"


def hash_token(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def api_token_create(*, user) -> str:
    """Create a token for `user` and return it; only its hash is stored, so show it once."""
    from .models import ApiToken

    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    ApiToken.objects.create(user=user, key_hash=hash_token(raw), prefix=raw[:10])
    return raw


def user_for_bearer(header: str):
    from .models import ApiToken

    scheme, _, raw = header.strip().partition(" ")
    raw = raw.strip()
    # The scheme is case-insensitive (RFC 9110, 11.1): "bearer" and "BEARER" are "Bearer".
    if scheme.lower() != "bearer" or not raw:
        return None
    token = ApiToken.objects.select_related("user").filter(key_hash=hash_token(raw)).first()
    if token is None or not token.user.is_active:
        return None
    now = timezone.now()
    if token.last_used_at is None or (now - token.last_used_at).total_seconds() > 60:
        type(token).objects.filter(pk=token.pk).update(last_used_at=now)
    return token.user


def _either(words) -> str:
    words = list(words)
    return ", ".join(words[:-1]) + " or " + words[-1] if len(words) > 1 else words[0]


def role_missing(user, roles: tuple[str, ...]) -> str:
    """What a 403 says: the role needed and the caller's, so an integrator knows which token to ask for."""
    has = [role for role in ROLES if role in user_roles(user)]
    return (f"This needs the {_either(roles)} role; the token's user ({user.get_username()}) has "
            f"{_either(has) if has else 'no role'}")


def json_error(status: int, message: str, **extra) -> JsonResponse:
    return JsonResponse({"error": message, **extra}, status=status)


def method_refused(request, methods: tuple[str, ...]) -> HttpResponse | None:
    """None when the view serves request.method; else OPTIONS' 204 or a JSON 405, each with Allow.

    HEAD is served wherever GET is, as HTTP asks (monitors and some clients send it): the view runs
    as for GET and the server (gunicorn, runserver, the test client) drops the body, so the status
    and headers are GET's."""
    served = [*methods]
    if "GET" in served and "HEAD" not in served:
        served.insert(served.index("GET") + 1, "HEAD")
    allow = ", ".join([*served, "OPTIONS"])
    if request.method == "OPTIONS":
        response = HttpResponse(status=204)
    elif request.method not in served:
        response = json_error(405, f"Method {request.method} not allowed")
    else:
        return None
    response["Allow"] = allow
    return response


def api_view(*roles: str, methods: tuple[str, ...] = ("GET",)) -> Callable:
    """API decorator: bearer-token auth (401), allowed methods (405; HEAD with GET, OPTIONS), role check (403).

    CSRF does not apply: a bearer token is not an ambient credential a browser sends by itself.
    """

    def decorator(view):
        @csrf_exempt
        @wraps(view)
        def wrapper(request, *args, **kwargs):
            user = user_for_bearer(request.headers.get("Authorization", ""))
            if user is None:
                response = json_error(401, "Missing or invalid bearer token")
                response["WWW-Authenticate"] = 'Bearer realm="steward"'
                return response
            if refused := method_refused(request, methods):
                return refused
            if roles and not has_role(user, *roles):
                return json_error(403, role_missing(user, roles))
            request.user = user
            return view(request, *args, **kwargs)

        return wrapper

    return decorator
