"""/healthz, as a load balancer or an operator sees it: open, says which of the database and the
broker is down, and answers within seconds whatever is down.

The outages are real: a web server (gunicorn, as in production) is started against a port where
nothing listens, or where something accepts connections and never answers (a hung server)."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from tests.conftest import ARTIFACTS, ROOT

# What /healthz may take at most when something is down (its own bound is 2 s).
PROMPT_S = 5


def test_healthz_is_open_and_checks_the_database_and_the_broker(client, db):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "broker": "ok"}
    assert not response.has_header("Retry-After")


def test_healthz_answers_head_as_get(client, db):
    """Load balancers and uptime monitors often probe with HEAD: it must not be a 405."""
    response = client.head("/healthz")
    assert (response.status_code, response["Content-Type"], response.content) == (200, "application/json", b"")


def closed_port() -> int:
    """A loopback port where nothing listens: connections are refused, as to a stopped server."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def hung_server():
    """A loopback port that accepts connections and never answers, as a hung server does."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(100)
    yield sock.getsockname()[1]
    sock.close()


@pytest.fixture
def web(tmp_path):
    """Start `gunicorn config.wsgi` with the given environment; returns its base URL."""
    processes: list[subprocess.Popen] = []

    def start(**env: str) -> str:
        ARTIFACTS.mkdir(exist_ok=True)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        environment = {**os.environ, "DEBUG": "0", "SECRET_KEY": "healthz-test", "STEWARD_VAR_DIR": str(tmp_path),
                       "DATABASE_URL": f"sqlite:///{tmp_path / 'web.sqlite3'}",
                       "CELERY_BROKER_URL": "filesystem://localhost//", **env}
        log = open(ARTIFACTS / f"healthz-web-{os.getpid()}-{time.time_ns()}.log", "ab")
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "config.wsgi", "--bind", f"127.0.0.1:{port}", "--workers", "1",
             "--timeout", "120"], cwd=ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
        processes.append(process)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert process.poll() is None, f"gunicorn exited with {process.returncode}"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return f"http://127.0.0.1:{port}"
            except OSError:
                time.sleep(0.1)
        raise AssertionError("gunicorn did not start")

    yield start
    for process in processes:
        os.killpg(process.pid, signal.SIGKILL)  # the arbiter and its worker
        process.wait(timeout=10)


def get_health(base: str, headers: dict | None = None) -> tuple[int, dict, float]:
    """GET /healthz: (status code, JSON body, seconds it took); `headers`, if given, gets the response's."""
    started = time.monotonic()
    try:
        with urllib.request.urlopen(f"{base}/healthz", timeout=60) as response:
            status, body, received = response.status, response.read(), response.headers
    except urllib.error.HTTPError as error:
        status, body, received = error.code, error.read(), error.headers
    if headers is not None:
        headers.update(received)
    return status, json.loads(body), time.monotonic() - started


def test_healthz_says_the_broker_is_down(web):
    base = web(CELERY_BROKER_URL=f"redis://127.0.0.1:{closed_port()}/0")
    headers: dict = {}
    status, body, _ = get_health(base, headers)
    assert status == 503
    assert body == {"status": "error", "database": "ok", "broker": "error"}
    assert headers["Retry-After"] == "5"  # when a prober or client may ask again


def test_healthz_says_the_database_is_down(web):
    base = web(DATABASE_URL=f"postgres://postgres@127.0.0.1:{closed_port()}/steward", DB_POOL_MAX_SIZE="0")
    status, body, _ = get_health(base)
    assert status == 503
    assert body == {"status": "error", "database": "error", "broker": "ok"}


def test_healthz_answers_promptly_while_the_pooled_database_is_down(web):
    # With the connection pool (the default on PostgreSQL), a query waits DB_POOL_TIMEOUT_S (30 s)
    # for a connection: a health check must not.
    base = web(DATABASE_URL=f"postgres://postgres@127.0.0.1:{closed_port()}/steward")
    for _ in range(2):
        status, body, took = get_health(base)
        assert (status, body) == (503, {"status": "error", "database": "error", "broker": "ok"})
        assert took < PROMPT_S


def test_healthz_answers_promptly_while_the_database_hangs(web, hung_server):
    base = web(DATABASE_URL=f"postgres://postgres@127.0.0.1:{hung_server}/steward", DB_POOL_MAX_SIZE="0")
    for _ in range(2):
        status, body, took = get_health(base)
        assert (status, body) == (503, {"status": "error", "database": "error", "broker": "ok"})
        assert took < PROMPT_S


def test_healthz_answers_promptly_while_the_broker_hangs(web, hung_server):
    base = web(CELERY_BROKER_URL=f"redis://127.0.0.1:{hung_server}/0")
    status, body, took = get_health(base)
    assert (status, body) == (503, {"status": "error", "database": "ok", "broker": "error"})
    assert took < PROMPT_S


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


def get_plain(url: str) -> tuple[int, str | None]:
    """GET over plain HTTP without following redirects: (status code, Location)."""
    try:
        with urllib.request.build_opener(_NoRedirects).open(url, timeout=60) as response:
            return response.status, response.headers.get("Location")
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("Location")


def test_healthz_answers_a_direct_probe_behind_the_tls_proxy(web):
    # A load balancer probes the process itself, over plain HTTP and without the proxy's
    # X-Forwarded-Proto: a redirect to HTTPS would mark a healthy process as down.
    base = web(STEWARD_BEHIND_TLS_PROXY="1")

    assert get_plain(f"{base}/healthz") == (200, None)
    status, body, _ = get_health(base)
    assert (status, body) == (200, {"status": "ok", "database": "ok", "broker": "ok"})
    # Everything else still goes to HTTPS.
    assert get_plain(f"{base}/login/") == (301, f"https://{base.removeprefix('http://')}/login/")
