"""Settings come from the environment and are production-safe with DEBUG off."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROBE = ("import django; django.setup(); from django.conf import settings as s; "
         "print(s.DEBUG, s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.DATABASES['default']['ENGINE'])")


def run_settings(**env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "DEBUG", "DATABASE_URL"}}
    clean.update(DJANGO_SETTINGS_MODULE="config.settings", STEWARD_VAR_DIR=str(ROOT / "var"), **env)
    return subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=clean, capture_output=True, text=True,
                          timeout=60)


def test_without_debug_a_secret_key_is_required():
    result = run_settings()

    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr


def test_without_debug_cookies_are_secure():
    result = run_settings(SECRET_KEY="x" * 50)

    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[:3] == ["False", "True", "True"]


def test_debug_runs_on_embedded_defaults():
    result = run_settings(DEBUG="1")

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "False", "False", "django.db.backends.sqlite3"]


def test_database_url_selects_postgresql():
    result = run_settings(DEBUG="1", DATABASE_URL="postgres://postgres@127.0.0.1:5432/whatever")

    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-1] == "config.postgresql"  # Django's, with the pool (config/postgresql)


def test_without_the_pool_postgresql_is_djangos_own_backend():
    result = run_settings(DEBUG="1", DATABASE_URL="postgres://postgres@127.0.0.1:5432/whatever", DB_POOL_MAX_SIZE="0")

    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-1] == "django.db.backends.postgresql"


def test_celery_settings_named_for_speed_keep_celerys_defaults(settings):
    # config/settings.py names them only so that Celery finds them at once (it reads them per message).
    from celery.app.defaults import DEFAULTS

    from config.celery import app

    for name in ("task_always_eager", "task_send_sent_event", "task_repr_maxlevels", "broker_pool_acquire_timeout"):
        assert getattr(settings, f"CELERY_{name.upper()}") == DEFAULTS[name] == app.conf[name]



SEND_MAIL = ("import time, django; django.setup(); from django.conf import settings as s; "
             "from django.core.mail import EmailMessage; print(s.EMAIL_TIMEOUT); started = time.monotonic()\n"
             "try:\n    EmailMessage('Approval needed', 'body', 'steward@localhost', ['alice@example.com']).send()\n"
             "except OSError as exc:\n    print(type(exc).__name__, round(time.monotonic() - started))")


def test_an_smtp_server_that_never_answers_fails_the_send_in_email_timeout():
    # Without a timeout, a notification or an email action waited forever on such a server,
    # holding a worker thread for good.
    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(10)  # accepts connections, never says a word
        clean = {k: v for k, v in os.environ.items() if k not in {"DEBUG", "DATABASE_URL"} and not k.startswith("EMAIL_")}
        env = dict(clean, DJANGO_SETTINGS_MODULE="config.settings", STEWARD_VAR_DIR=str(ROOT / "var"),
                   SECRET_KEY="x" * 50, EMAIL_HOST="127.0.0.1", EMAIL_PORT=str(hung.getsockname()[1]))
        default = subprocess.run([sys.executable, "-c", SEND_MAIL.split("; started")[0]], cwd=ROOT, env=env,
                                 capture_output=True, text=True, timeout=60)
        result = subprocess.run([sys.executable, "-c", SEND_MAIL], cwd=ROOT, env=dict(env, EMAIL_TIMEOUT="1"),
                                capture_output=True, text=True, timeout=30)

    assert default.stdout.split() == ["30"], default.stderr
    assert result.stdout.split() == ["1.0", "SMTPServerDisconnected", "1"], result.stderr


SESSION_PROBE = "import django; django.setup(); from django.conf import settings as s; print(s.SESSION_COOKIE_AGE)"


def test_a_session_lasts_steward_session_hours():
    env = {k: v for k, v in os.environ.items() if k not in {"DEBUG", "DATABASE_URL", "STEWARD_SESSION_HOURS"}}
    env.update(DJANGO_SETTINGS_MODULE="config.settings", STEWARD_VAR_DIR=str(ROOT / "var"), SECRET_KEY="x" * 50)

    def run(hours: str | None) -> subprocess.CompletedProcess:
        extra = {} if hours is None else {"STEWARD_SESSION_HOURS": hours}
        return subprocess.run([sys.executable, "-c", SESSION_PROBE], cwd=ROOT, env=dict(env, **extra),
                              capture_output=True, text=True, timeout=60)

    assert run(None).stdout.split() == ["43200"], run(None).stderr
    assert run("8").stdout.split() == ["28800"]
    for wrong in ("0", "-1", "twelve"):
        result = run(wrong)
        assert result.returncode != 0
        assert "STEWARD_SESSION_HOURS must be a whole number of hours, at least 1" in result.stderr, result.stderr


def test_a_number_that_is_not_one_is_named_with_its_variable():
    """STEWARD_LEASE_S=5m used to stop every process with "could not convert string to float: '5m'",
    naming no variable."""
    result = run_settings(DEBUG="1", STEWARD_LEASE_S="5m")

    assert result.returncode != 0
    assert "STEWARD_LEASE_S is \"5m\"; it must be a number (of seconds: 300 is the default)" in result.stderr


def test_a_whole_number_that_is_not_one_is_named_with_its_variable():
    result = run_settings(DEBUG="1", STEWARD_MAX_DOCUMENT_BYTES="10MB")

    assert result.returncode != 0
    assert "STEWARD_MAX_DOCUMENT_BYTES is \"10MB\"; it must be a whole number (10485760 is the default)" in result.stderr


def test_a_switch_that_is_neither_on_nor_off_is_refused():
    """STEWARD_SECURE_COOKIES=Flase used to mean off: cookies sent over plain HTTP in production."""
    result = run_settings(SECRET_KEY="x" * 50, STEWARD_SECURE_COOKIES="Flase")

    assert result.returncode != 0
    assert ("STEWARD_SECURE_COOKIES is \"Flase\"; use 1, true, yes or on to switch it on, "
            "0, false, no or off to switch it off") in result.stderr


def test_the_usual_ways_to_say_off_still_say_off():
    result = run_settings(SECRET_KEY="x" * 50, STEWARD_SECURE_COOKIES="OFF", DEBUG="false")

    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[:3] == ["False", "False", "False"]
