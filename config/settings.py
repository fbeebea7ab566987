"""Steward settings: everything that differs between machines comes from the environment.

Defaults run the product on one laptop with no services (SQLite, a filesystem broker, the built-in
LLM simulator). With DEBUG off the settings are production-safe: a SECRET_KEY is required and
cookies are secure.
"""
from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from django.utils.csp import CSP

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("STEWARD_VAR_DIR", BASE_DIR / "var"))
VAR_DIR.mkdir(parents=True, exist_ok=True)


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


# A value these cannot read stops the process naming the variable: read as off, a typo such as
# STEWARD_SECURE_COOKIES=Flase would send session cookies over plain HTTP; a bare ValueError names
# no variable at all.
ON, OFF = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    if value.strip().lower() not in ON + OFF:
        raise ImproperlyConfigured(f"{name} is \"{value}\"; use {', '.join(ON[:-1])} or {ON[-1]} to switch it on, "
                                   f"{', '.join(OFF[:-1])} or {OFF[-1]} to switch it off")
    return value.strip().lower() in ON


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value in (None, ""):
        return default
    try:
        return int(value)
    except ValueError:
        raise ImproperlyConfigured(
            f"{name} is \"{value}\"; it must be a whole number ({default} is the default)") from None


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    if value in (None, ""):
        return default
    try:
        return float(value)
    except ValueError:
        unit = "of seconds: " if name.endswith("_S") else ""
        raise ImproperlyConfigured(
            f"{name} is \"{value}\"; it must be a number ({unit}{default:g} is the default)") from None


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in env_str(name, default).split(",") if item.strip()]


DEBUG = env_bool("DEBUG", False)
SECRET_KEY = env_str("SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. Set SECRET_KEY in the environment, or DEBUG=1 for local use."
        )
    SECRET_KEY = "insecure-local-development-key-do-not-use-in-production"

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django_htmx",
    "django_prometheus",
    "orchestrator",
    "reviews",
    "metrics",
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.csp.ContentSecurityPolicyMiddleware",  # before WhiteNoise: static files too
    "config.staticfiles.StaticFilesMiddleware",  # WhiteNoise, collected files first
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "orchestrator.context_processors.steward",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------
DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'steward.sqlite3'}"),
        conn_max_age=env_int("DB_CONN_MAX_AGE", 60),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Web server, worker and beat share one file: WAL lets readers run beside the writer, and
    # IMMEDIATE transactions take the write lock up front instead of failing half-way.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # A file (not :memory:) so that a Celery worker started by the tests sees the test data; one
    # per test process so that two test runs on one machine do not share it.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"test-{os.getpid()}.sqlite3")}
# PostgreSQL: a connection pool per process (0 turns it off). A worker's threads share it and hand
# their connection back while they wait on the model (orchestrator/pipeline.py), so a process
# running 32 tasks at once holds a few connections, not 32. Replaces CONN_MAX_AGE (incompatible).
DB_POOL_MAX_SIZE = env_int("DB_POOL_MAX_SIZE", 8)
on_postgresql = DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql"
if on_postgresql and DB_POOL_MAX_SIZE > 0:
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": 1, "max_size": DB_POOL_MAX_SIZE, "timeout": env_float("DB_POOL_TIMEOUT_S", 30),
    }
    # Django's backend, checking a pooled connection only when it was not in use a moment ago
    # (config/postgresql/base.py); it does that check itself, so the pool's own is off.
    DATABASES["default"].update(ENGINE="config.postgresql", CONN_HEALTH_CHECKS=False)
# PostgreSQL: parameters bound by the server, and a statement run 5 times on a connection is
# prepared there (parsed and planned once). The pipeline runs the same dozen statements for every
# task: this takes a fifth off PostgreSQL's CPU per task (bench/README.md). Turn it off behind a
# pooler in transaction mode (PgBouncer before 1.21), which cannot keep prepared statements.
if on_postgresql and env_bool("DB_PREPARED_STATEMENTS", True):
    DATABASES["default"].setdefault("OPTIONS", {}).update(server_side_binding=True, prepare_threshold=5)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Auth -----------------------------------------------------------------------------------
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"
# Django's usual four, wherever a password is set: the admin's user forms, the password change
# page, manage.py add_user. At least 8 characters, not like the user's name or address, not one of
# the 20,000 most common, not all digits.
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# --- Security -------------------------------------------------------------------------------
# Login throttle (orchestrator/login.py): this many wrong passwords for one user name make its
# logins wait this long from the first of them, counted in the database for every web process.
STEWARD_LOGIN_MAX_FAILURES = env_int("STEWARD_LOGIN_MAX_FAILURES", 10)
STEWARD_LOGIN_LOCKOUT_S = env_int("STEWARD_LOGIN_LOCKOUT_S", 900)
SECURE_COOKIES = env_bool("STEWARD_SECURE_COOKIES", not DEBUG)
SESSION_COOKIE_SECURE = SECURE_COOKIES
CSRF_COOKIE_SECURE = SECURE_COOKIES
SESSION_COOKIE_HTTPONLY = True
# A session lasts a working day from login, then asks for the password again: not Django's two
# weeks, since a session can approve payments. Nor only while the browser runs: reviewers open
# approvals from their emails in new windows, which would ask every time.
_session_hours = (env_str("STEWARD_SESSION_HOURS") or "12").strip()
if not _session_hours.isdigit() or int(_session_hours) < 1:
    raise ImproperlyConfigured(
        f"STEWARD_SESSION_HOURS must be a whole number of hours, at least 1 (it is {_session_hours!r})."
    )
SESSION_COOKIE_AGE = int(_session_hours) * 3600
SESSION_EXPIRE_AT_BROWSER_CLOSE = False
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
SECURE_REFERRER_POLICY = "same-origin"
# Content-Security-Policy on every answer: scripts only from Steward's own static files (no inline
# script, no event-handler attribute, no eval), so markup that slipped past escaping cannot run;
# styles and everything else from Steward too; no plugins, no <base>, never framed, forms post to
# Steward only. Pages need no nonce: they carry no inline script or style (htmx's indicator style
# is in steward.css, base.html turns off its injected copy). A reverse proxy should not add a
# second policy: browsers enforce both, so the stricter one of each directive wins.
SECURE_CSP = {
    "default-src": [CSP.SELF],
    "script-src": [CSP.SELF],
    "object-src": [CSP.NONE],
    "base-uri": [CSP.SELF],
    "frame-ancestors": [CSP.NONE],
    "form-action": [CSP.SELF],
}
if env_bool("STEWARD_BEHIND_TLS_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = True
    # A load balancer probes the process itself, over plain HTTP: answer it rather than redirect.
    SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 3600)

# --- Internationalisation -------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

# --- Static files (whitenoise; no CDN anywhere) -----------------------------------------------
STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "staticfiles"
STATIC_ROOT.mkdir(exist_ok=True)  # whitenoise warns about a missing one before collectstatic
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# Serve straight from the apps' static folders too, so a fresh clone works before collectstatic;
# what collectstatic wrote is served in preference (config/staticfiles.py).
WHITENOISE_USE_FINDERS = True

# --- Uploads --------------------------------------------------------------------------------
STEWARD_MAX_DOCUMENT_BYTES = env_int("STEWARD_MAX_DOCUMENT_BYTES", 10 * 1024 * 1024)
# JSON API bodies carry the document inline; leave room for the envelope and escaping.
DATA_UPLOAD_MAX_MEMORY_SIZE = STEWARD_MAX_DOCUMENT_BYTES * 2 + 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 2_621_440
DATA_UPLOAD_MAX_NUMBER_FILES = 100

# --- Email ----------------------------------------------------------------------------------
EMAIL_BACKEND = env_str(
    "EMAIL_BACKEND",
    "django.core.mail.backends.filebased.EmailBackend"
    if DEBUG
    else "django.core.mail.backends.smtp.EmailBackend",
)
EMAIL_FILE_PATH = Path(env_str("EMAIL_FILE_PATH", str(VAR_DIR / "mail")))
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
# Seconds an SMTP server may take to answer. Django waits forever by default: one server that
# accepts and never answers would hold a worker thread for good on every notification and action.
EMAIL_TIMEOUT = env_float("EMAIL_TIMEOUT", 30)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "steward@localhost")

# --- Celery ---------------------------------------------------------------------------------
BROKER_DIR = VAR_DIR / "broker"
# The filesystem transport ignores the host; naming one keeps kombu from warning that none was given.
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "filesystem://localhost//")
if CELERY_BROKER_URL.startswith("filesystem://"):
    BROKER_DIR.mkdir(parents=True, exist_ok=True)
    # kombu's filesystem transport, writing each message whole before consumers can see it (config/broker.py).
    CELERY_BROKER_TRANSPORT = "config.broker:Transport"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(BROKER_DIR),
        "data_folder_out": str(BROKER_DIR),
        "control_folder": str(BROKER_DIR / "control"),
        # kombu looks at the folder once a second by default, and also waits that second whenever
        # all of a worker's threads are busy: a worker then takes about one message per thread a
        # second, however fast the steps run, and behind a backlog the sweeper's 30 s control
        # messages can expire unread. A look costs one directory listing.
        "polling_interval": 0.1,
    }
elif CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    # kombu's Redis transport, sharing one client object per channel (config/broker.py).
    CELERY_BROKER_TRANSPORT = "config.broker:RedisTransport"
CELERY_TASK_DEFAULT_QUEUE = env_str("STEWARD_CELERY_QUEUE", "steward")
# The periodic control messages (the sweeps, bulk retries' ticks) have a small queue of their own,
# which every worker consumes besides the queues it was given (config/celery.py): on the default
# queue they waited behind hours of wake-ups when the workers were behind, and expired unrun.
STEWARD_CONTROL_QUEUE = env_str("STEWARD_CONTROL_QUEUE", f"{CELERY_TASK_DEFAULT_QUEUE}-control")
# The database is the source of truth; the broker only carries wake-ups. Messages are acked after
# the work (a killed worker's message comes back) and every task body starts with a
# compare-and-set, so a redelivered message is harmless.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_TASK_IGNORE_RESULT = True
CELERY_WORKER_PREFETCH_MULTIPLIER = env_int("STEWARD_PREFETCH_MULTIPLIER", 1)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# Celery's own defaults, named here because Celery reads them for every message it sends: a
# setting named here is found at once; one left out is looked up under each of its names in each
# of three places, every miss an exception (bench/README.md: a message's reads, 87 -> 22-25 us).
CELERY_TASK_ALWAYS_EAGER = False
CELERY_TASK_SEND_SENT_EVENT = False
CELERY_TASK_REPR_MAXLEVELS = 3
CELERY_BROKER_POOL_ACQUIRE_TIMEOUT = None
# glibc gives each thread that allocates its own malloc arena (up to 8 per core), and a threads
# pool of 16 spreads its garbage over all of them: a worker's memory then creeps up for hours
# (bench/pipeline.py: +16% from 1,000 to 10,000 tasks; +0.7% with 2). config/celery.py sets this
# limit when a worker starts; 0 leaves glibc's default.
STEWARD_WORKER_MALLOC_ARENAS = env_int("STEWARD_WORKER_MALLOC_ARENAS", 2)
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
STEWARD_SWEEP_INTERVAL_S = env_float("STEWARD_SWEEP_INTERVAL_S", 30)
STEWARD_REVIEW_SWEEP_INTERVAL_S = env_float("STEWARD_REVIEW_SWEEP_INTERVAL_S", 60)
CELERY_BEAT_SCHEDULE = {
    "sweep-orphans": {
        "task": "orchestrator.tasks.sweep",
        "schedule": timedelta(seconds=STEWARD_SWEEP_INTERVAL_S),
        # While no worker runs, sweeps must not pile up: a late one is replaced by the next.
        "options": {"expires": STEWARD_SWEEP_INTERVAL_S, "queue": STEWARD_CONTROL_QUEUE},
    },
    # Reviews: expire approvals past their queue's expiry, escalate those past their SLA, re-send
    # lost notifications (reviews/tasks.py).
    "review-sweep": {
        "task": "reviews.tasks.review_sweep",
        "schedule": timedelta(seconds=STEWARD_REVIEW_SWEEP_INTERVAL_S),
        "options": {"expires": STEWARD_REVIEW_SWEEP_INTERVAL_S, "queue": STEWARD_CONTROL_QUEUE},
    },
}

# --- Steward --------------------------------------------------------------------------------
# Where people reach Steward: the start of links in notification emails and chat messages.
STEWARD_BASE_URL = env_str("STEWARD_BASE_URL", "http://127.0.0.1:8000")
# How long an emailed approve/reject link works (each works once, for the reviewer it was sent to).
STEWARD_EMAIL_LINK_MAX_AGE_S = env_int("STEWARD_EMAIL_LINK_MAX_AGE_S", 72 * 3600)
# A pending approval whose reviewers were not notified after this long gets its notification re-sent.
STEWARD_REVIEW_NOTIFY_AFTER_S = env_float("STEWARD_REVIEW_NOTIFY_AFTER_S", 300)
# Action target for queues that set none: a JSON POST per action with an Idempotency-Key header.
STEWARD_WEBHOOK_URL = env_str("STEWARD_WEBHOOK_URL")
STEWARD_WEBHOOK_TIMEOUT_S = env_float("STEWARD_WEBHOOK_TIMEOUT_S", 10)
# Signs every action webhook (the Steward-Signature header, reviews/actions.py), so a receiver can
# tell that a POST asking it to pay came from Steward, unchanged. Shared with the receivers.
STEWARD_WEBHOOK_SECRET = env_str("STEWARD_WEBHOOK_SECRET")
# The simulator's address when no OpenAI or Azure OpenAI credentials are set.
STEWARD_SIMULATOR_URL = env_str("STEWARD_SIMULATOR_URL", "http://127.0.0.1:8100/v1")
STEWARD_LLM_TIMEOUT_S = env_float("STEWARD_LLM_TIMEOUT_S", 30)
# A running task's lease; renewed at every step. A task whose lease ran out lost its worker.
STEWARD_LEASE_S = env_float("STEWARD_LEASE_S", 300)
# A queued task with no pickup for this long is assumed to have lost its broker message.
STEWARD_SWEEP_QUEUED_AFTER_S = env_float("STEWARD_SWEEP_QUEUED_AFTER_S", 600)
# How many times the sweeper re-enqueues one task before dead-lettering it.
STEWARD_MAX_RECOVERIES = env_int("STEWARD_MAX_RECOVERIES", 5)
# Bulk retry: the default pace (dead letters sent back per minute; each bulk retry may set its own).
STEWARD_BULK_RETRY_RATE = env_int("STEWARD_BULK_RETRY_RATE", 60)
# The stuck-work page lists queued tasks not picked up, and running ones not updated, for this long.
STEWARD_STUCK_AFTER_S = env_float("STEWARD_STUCK_AFTER_S", 120)
# Transient failures: exponential backoff with full jitter, never before Retry-After.
STEWARD_RETRY_BACKOFF_S = env_float("STEWARD_RETRY_BACKOFF_S", 2)
STEWARD_RETRY_BACKOFF_MAX_S = env_float("STEWARD_RETRY_BACKOFF_MAX_S", 300)
# Celery queue per worker kind, e.g. "verify=agents,act=actions". Unlisted kinds use the default
# queue. Consecutive steps on the same queue run in one message; a change of queue hands over.
STEWARD_WORKER_QUEUES = dict(
    item.split("=", 1) for item in env_list("STEWARD_WORKER_QUEUES") if "=" in item
)
# Loop detection (metrics/loops.py, Meter.check_loop): the same tool call (same tool, same
# arguments) this many times in one step stops the task (0: off); so does a step with more tool
# calls than max(p95 x factor, p95 + margin) of its worker's recent steps, once there are enough.
STEWARD_LOOP_REPEAT_LIMIT = env_int("STEWARD_LOOP_REPEAT_LIMIT", 3)
STEWARD_LOOP_P95_FACTOR = env_float("STEWARD_LOOP_P95_FACTOR", 3)
STEWARD_LOOP_MIN_MARGIN = env_int("STEWARD_LOOP_MIN_MARGIN", 5)
STEWARD_LOOP_MIN_SAMPLES = env_int("STEWARD_LOOP_MIN_SAMPLES", 50)
STEWARD_LOOP_WINDOW_DAYS = env_int("STEWARD_LOOP_WINDOW_DAYS", 7)
STEWARD_LOOP_CACHE_S = env_float("STEWARD_LOOP_CACHE_S", 300)
# How often a worker process adds the steps it and others committed to the monitoring rollups
# (metrics/rollups.py): batched off the checkpoint, so the hot path stays one statement per step.
# /metrics and the charts catch up before they read whatever this is; 0 counts after every task.
STEWARD_ROLLUP_INTERVAL_S = env_float("STEWARD_ROLLUP_INTERVAL_S", 2)
# Workers keep what admins tune in memory and reload it when an admin saves a change
# (orchestrator/tuning.py); this bounds how long a change made around the admin can go unseen.
STEWARD_TUNING_MAX_AGE_S = env_float("STEWARD_TUNING_MAX_AGE_S", 60)


def _no_traceback_for_client_errors(record) -> bool:
    """A refused request (403, 400...) is logged as one line ("Forbidden (Permission denied):
    /path", "Invalid HTTP_HOST header: 'x'..."): Django also attaches the exception, whose
    traceback says nothing about the server. On the handler, not a logger: a logger's filter does
    not see its children's records, and Django logs each suspicious request under its own
    django.security.<Exception> logger (DisallowedHost from every scanner that sends any Host)."""
    if 400 <= getattr(record, "status_code", 0) < 500:
        record.exc_info = record.exc_text = None
    return True


LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "filters": {"no_traceback_for_client_errors": {"()": "django.utils.log.CallbackFilter",
                                                   "callback": _no_traceback_for_client_errors}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain",
                             "filters": ["no_traceback_for_client_errors"]}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {
        # Django's own console handler (DEBUG) and mail_admins (no ADMINS here) dropped: its records
        # go to the root's console, once, instead of twice under runserver.
        "django": {"handlers": [], "level": "INFO"},
        "httpx": {"level": "WARNING"},
        "httpx2": {"level": "WARNING"},
        "openai": {"level": "WARNING"},
    },
}
