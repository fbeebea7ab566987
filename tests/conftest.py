"""Fixtures: named actors, the simulator over HTTP, the pipeline in-process or in a real worker.

Actors (as in healthchecks' tests): Alice reviews finance_director, Bob reviews legal_team, Olga
is an operator, Adam an admin, and Charlie is logged in with no role at all.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import Group, User
from django.db import connection
from django.test import Client

from orchestrator.models import Task
from orchestrator.simulator import SimulatorServer
from reviews.models import Approval, Queue

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
# Creating users is most of a page test's time with a real password hasher; tests need no strength.
settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(scope="session", autouse=True)
def _own_celery_queue():
    """A Celery queue of this test run's own: leftovers of other runs on a shared broker are ignored."""
    import uuid

    queue = f"steward-test-{uuid.uuid4().hex[:8]}"
    settings.CELERY_TASK_DEFAULT_QUEUE = queue
    settings.STEWARD_CONTROL_QUEUE = f"{queue}-control"
    os.environ["STEWARD_CELERY_QUEUE"] = queue
    os.environ["STEWARD_CONTROL_QUEUE"] = settings.STEWARD_CONTROL_QUEUE
    yield queue
    # The filesystem broker scans its folder on every poll: leave no messages of ours behind.
    if settings.CELERY_BROKER_URL.startswith("filesystem://"):
        for leftover in settings.BROKER_DIR.glob(f"*.{queue}*.msg"):
            leftover.unlink(missing_ok=True)


def purge_broker_queues(*queues: str) -> None:
    """Delete every message waiting in these Celery queues (a queue the broker does not know is empty)."""
    from config.celery import app

    with app.connection_for_write() as conn:
        channel = conn.channel()
        for queue in queues:
            try:
                channel.queue_purge(queue)
            except conn.channel_errors:
                if not getattr(channel, "is_open", True):
                    channel = conn.channel()
        channel.close()


def broker_waiting(queue: str) -> int:
    """Messages waiting in a Celery queue, as the broker says (a queue it does not know holds none)."""
    from config.celery import app

    with app.connection_for_read() as conn:
        channel = conn.channel()
        try:
            return channel.queue_declare(queue=queue, passive=True).message_count
        except conn.channel_errors:
            return 0
        finally:
            channel.close()


@pytest.fixture
def own_broker_queue(settings):
    """A default Celery queue of this test's own, empty, so that what the sweeper counts in the
    broker is what the test put there; purged at the end."""
    import uuid

    queue = f"{settings.CELERY_TASK_DEFAULT_QUEUE}-{uuid.uuid4().hex[:6]}"
    settings.CELERY_TASK_DEFAULT_QUEUE = queue
    yield queue
    purge_broker_queues(queue)


@pytest.fixture(autouse=True)
def django_db_serialized_rollback() -> bool:
    """Transactional tests (real worker processes) flush every table afterwards; restore the rows
    the data migrations seed (roles, queues, routing rules, prices) for the tests that follow."""
    return True


@pytest.fixture(autouse=True)
def _fresh_tuning():
    """Workers keep admin-tuned rows in memory (orchestrator/tuning.py); each test's rollback
    changes them behind the ORM's back, so each test starts without that memory."""
    from orchestrator.tuning import forget

    forget()
    yield
    forget()


@pytest.fixture(autouse=True)
def _fresh_broker_answer():
    """The stuck-work page keeps the broker's answer a few seconds per process
    (orchestrator/backlog.py): each test asks its own broker."""
    from orchestrator.backlog import forget

    forget()
    yield
    forget()


@pytest.fixture(autouse=True)
def _fresh_session_clearing():
    """The sweeper looks for expired sessions once an hour per process (orchestrator/login.py):
    each test's first sweep looks, as a fresh process's would."""
    from orchestrator.login import sessions_forget

    sessions_forget()
    yield
    sessions_forget()


def save_changes(queryset, **changes) -> None:
    """Change rows as an admin does (save(), so signals run: a tuning change reaches the workers)."""
    for row in queryset:
        for name, value in changes.items():
            setattr(row, name, value)
        row.save()


def _user(username: str, role: str | None, queue: str | None = None) -> User:
    user = User.objects.create_user(username, f"{username}@example.com", "pw-" + username)
    if role:
        user.groups.add(Group.objects.get(name=role))
    if role == "admin":
        user.is_staff = user.is_superuser = True
        user.save()
    if queue:
        Queue.objects.get(name=queue).reviewers.add(user)
    return user


@pytest.fixture
def reviewer_finance(db) -> User:
    return _user("alice", "reviewer", "finance_director")


@pytest.fixture
def reviewer_legal(db) -> User:
    return _user("bob", "reviewer", "legal_team")


@pytest.fixture
def reviewer_standard(db) -> User:
    return _user("rita", "reviewer", "standard_queue")


@pytest.fixture
def operator(db) -> User:
    return _user("olga", "operator")


@pytest.fixture
def admin_user(db) -> User:
    return _user("adam", "admin")


@pytest.fixture
def outsider(db) -> User:
    return _user("charlie", None)


@pytest.fixture
def client_for():
    def make(user: User) -> Client:
        client = Client()
        client.force_login(user)
        return client

    return make


@pytest.fixture
def make_task(db):
    counter = {"n": 0}

    def make(**fields) -> Task:
        counter["n"] += 1
        content = fields.pop("content", f"Test document {counter['n']}")
        import hashlib

        defaults = dict(content=content, content_sha256=hashlib.sha256(content.encode()).hexdigest(),
                        filename=f"doc-{counter['n']}.txt")
        defaults.update(fields)
        return Task.objects.create(**defaults)

    return make


@pytest.fixture
def make_approval(db):
    def make(task: Task, queue_name: str, **fields) -> Approval:
        defaults = dict(action_kind="webhook", action_summary=f"Act on task {task.pk}", action_data={})
        defaults.update(fields)
        return Approval.objects.create(task=task, queue=Queue.objects.get(name=queue_name), **defaults)

    return make


# --- The simulator and the pipeline ---------------------------------------------------------


@pytest.fixture
def simulator(settings):
    """A fault-free simulator on a free port; model calls and webhooks of the test go to it."""
    server = SimulatorServer(port=0).start()
    settings.STEWARD_SIMULATOR_URL = server.url
    settings.STEWARD_WEBHOOK_URL = server.webhook_url
    yield server
    server.stop()


@pytest.fixture
def fast_retries(settings):
    settings.STEWARD_RETRY_BACKOFF_S = 0.05
    settings.STEWARD_RETRY_BACKOFF_MAX_S = 0.2
    settings.STEWARD_LLM_TIMEOUT_S = 1.0


@pytest.fixture
def run_pipeline(simulator):
    """Run a task to where it stops, in this process, honouring retry times like a worker would."""
    from orchestrator.pipeline import task_run

    def run(task: Task, *, max_runs: int = 50) -> Task:
        for _ in range(max_runs):
            task.refresh_from_db()
            if task.status != "queued":
                break
            if task.not_before:
                from django.utils import timezone

                wait = (task.not_before - timezone.now()).total_seconds()
                if wait > 0:
                    time.sleep(wait)
            task_run(task.pk, runner="test")
        task.refresh_from_db()
        return task

    return run


class LoopbackServer:
    """A real HTTP server on a free loopback port, standing in for an outside service a test talks
    to (a webhook target, a chat webhook, a model server that misbehaves). Each POST is recorded in
    `posts` (path, headers, body bytes, and the body's JSON or None) and answered by
    `answer(path, body)`, which returns (status, content type, body bytes)."""

    def __init__(self, answer) -> None:
        self.posts: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    parsed = json.loads(body)
                except ValueError:
                    parsed = None
                server.posts.append({"path": self.path, "headers": self.headers, "body": body, "json": parsed})
                status, content_type, payload = answer(self.path, body)
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        self.running = True

    def stop(self) -> None:
        """Stop answering (a test may call it to make the service unreachable; teardown calls it too)."""
        if self.running:
            self.running = False
            self.server.shutdown()
            self.server.server_close()


def database_url() -> str:
    """The URL of the database the tests use, for worker processes started by the tests."""
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    user = db.get("USER") or "postgres"
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    host = db.get("HOST") or "127.0.0.1"
    port = db.get("PORT") or "5432"
    return f"postgres://{user}{password}@{host}:{port}/{db['NAME']}"


class CeleryProcess:
    """A real `celery -A config worker` (or `beat`) process against the test database and simulator."""

    def __init__(self, sim: SimulatorServer, *, kind: str = "worker", concurrency: int = 4,
                 extra_env: dict | None = None) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        self.kind = kind
        self.log_path = ARTIFACTS / f"{kind}-{os.getpid()}-{time.time_ns()}.log"
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url(),
            "STEWARD_CELERY_QUEUE": settings.CELERY_TASK_DEFAULT_QUEUE,
            "STEWARD_CONTROL_QUEUE": settings.STEWARD_CONTROL_QUEUE,
            "STEWARD_SIMULATOR_URL": sim.url,
            "STEWARD_WEBHOOK_URL": sim.webhook_url,
            "STEWARD_RETRY_BACKOFF_S": "0.05",
            "STEWARD_RETRY_BACKOFF_MAX_S": "0.5",
            "STEWARD_LLM_TIMEOUT_S": "1.5",
            "STEWARD_LEASE_S": "30",
            "DEBUG": "0",
            **(extra_env or {}),
        }
        self.concurrency = concurrency
        self.process: subprocess.Popen | None = None

    def command(self) -> list[str]:
        queues = self.env.get("TEST_WORKER_QUEUES", settings.CELERY_TASK_DEFAULT_QUEUE)
        if self.kind == "beat":
            return [sys.executable, "-m", "celery", "-A", "config", "beat", "--loglevel", "INFO",
                    "--schedule", str(ARTIFACTS / f"beat-schedule-{time.time_ns()}")]
        return [sys.executable, "-m", "celery", "-A", "config", "worker", "--loglevel", "INFO",
                "--pool", "threads", "--concurrency", str(self.concurrency),
                "-Q", queues, "--without-gossip", "--without-mingle",
                "--without-heartbeat", "-n", f"test-{os.getpid()}-{time.time_ns()}@%h"]

    def start(self) -> "CeleryProcess":
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(self.command(), cwd=ROOT, env=self.env, stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        ready = b"ready." if self.kind == "worker" else b"beat: Starting"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Celery {self.kind} exited with {self.process.returncode}:\n{self.log()}")
            if ready in self.log_path.read_bytes():
                return self
            time.sleep(0.2)
        raise RuntimeError(f"Celery {self.kind} did not become ready:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def kill(self) -> None:
        """SIGKILL, as the OOM killer or a lost machine would: no warm shutdown, no acks."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def start_worker(transactional_db):
    """Start real Celery processes (worker, or kind="beat"); all are stopped at the end of the test."""
    processes: list[CeleryProcess] = []

    def start(sim: SimulatorServer, **kwargs) -> CeleryProcess:
        process = CeleryProcess(sim, **kwargs).start()
        processes.append(process)
        return process

    yield start
    # The test is over and nothing it checked depends on how its processes end: SIGKILL them.
    # A warm shutdown (SIGTERM) took 3 s a process on the filesystem broker and up to 1 s on Redis
    # (a worker notices it only between its 2 s waits for messages), and handed back the messages
    # it had reserved, for the next test's worker on this run's queue to receive.
    for process in processes:
        process.kill()


@pytest.fixture
def pipeline_worker(start_worker, simulator):
    """The simulator (fault-free) and one real Celery worker on this test run's queue."""
    return start_worker(simulator)


def wait_for(predicate, timeout: float = 60, interval: float = 0.2, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"Timed out after {timeout}s waiting for {message}")
