"""Peer: the stack's floor, the least a durable pipeline on Steward's stack can do per document.

    .venv/bin/python -m bench.peers.floor --model-url http://127.0.0.1:8100/v1 [--n 2000]
        [--database postgres://postgres@127.0.0.1:5432/postgres] [--broker redis://127.0.0.1:6379/14]
        [--processes 2] [--concurrency 16]

DESIGN.md fixes the stack: Celery carries the wake-ups, PostgreSQL holds every step's checkpoint,
the official `openai` client calls the model over HTTP. This peer does only what that stack costs,
with no orchestration, no domain work and no monitoring at all:

- submission: one INSERT of the document, then one Celery message carrying its id;
- the worker (Steward's settings: threads pool, late acks, prefetch 1, the same processes and
  threads): one UPDATE ... RETURNING claims the document and reads its text, then each of the four
  steps commits one row, in autocommit (a round trip and a commit each); route's also marks the
  document done;
- the model: the same four calls as Steward's workers make, to the same simulator, through the
  same client call (`client.post(..., cast_to=object)`, the cheapest the client offers): classify,
  extract (JSON mode), and verify's two turns (tools offered, the simulator's tool calls answered
  with empty results, then the verdict). route asks no model.

Steward does all that and more: leases, budgets, token and cost metering, the verifier's duplicate
and history lookups, approvals and their notifications, the action's webhook, rollups. So no
implementation of DESIGN.md on this stack can run faster than this peer on the same machine: its
tasks/s is the physical limit the throughput targets are measured against (bench/pipeline.py
prints the ratios).

Its worker shape is Steward's documented one (bench/pipeline.py passes its own): 2 processes x 16
threads. Tried on this machine with 2,000 documents: 2 x 4 threads 199.5 tasks/s, 2 x 8 190.4,
2 x 16 184-192; within the machine's noise, so the floor keeps Steward's shape.

run() creates a scratch database on database_url's server (`bench_floor`, dropped at the end),
starts the worker processes on a dedicated queue (purged first), waits until they answer a ping,
submits n documents from this process (as Steward's bench does) and polls, every 50 ms, until all
are done. The clock runs from the first submission to the last document done.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import psycopg
from celery import Celery
from psycopg import sql
from psycopg.conninfo import make_conninfo

from bench.machine import machine_cpu_s

QUEUE = "bench-peers-floor"
SCRATCH_DB = "bench_floor"
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/postgres"
DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/14"

# Steward's documented worker shape (README "Running in production", Worker settings) and pool size.
DEFAULT_PROCESSES = 2
DEFAULT_CONCURRENCY = 16
POOL_MAX_SIZE = 8

# The worker processes get their settings through these.
BROKER_ENV = "BENCH_FLOOR_BROKER_URL"
DATABASE_ENV = "BENCH_FLOOR_DATABASE_URL"
MODEL_ENV = "BENCH_FLOOR_MODEL_URL"

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKER_READY_TIMEOUT = 60.0
RUN_TIMEOUT = 1200.0

SCHEMA = """
CREATE TABLE floor_doc (id bigserial PRIMARY KEY, content text NOT NULL,
                        status text NOT NULL DEFAULT 'queued', step text);
CREATE TABLE floor_step (id bigserial PRIMARY KEY, doc_id bigint NOT NULL REFERENCES floor_doc,
                         step text NOT NULL, output jsonb NOT NULL);
CREATE INDEX floor_step_doc ON floor_step (doc_id);
CREATE INDEX floor_doc_status ON floor_doc (status);
"""

TOOLS = [{"type": "function", "function": {"name": name, "description": name,
                                           "parameters": {"type": "object", "properties": {}}}}
         for name in ("find_duplicates", "counterparty_history", "check_line_items")]


# --- The worker side -------------------------------------------------------------------------

_pool = None
_pool_lock = threading.Lock()


def _connection_pool():
    """One pool per process, opened on first use (after Celery has started its threads)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            from psycopg_pool import ConnectionPool

            _pool = ConnectionPool(os.environ[DATABASE_ENV], min_size=1, max_size=POOL_MAX_SIZE,
                                   kwargs={"autocommit": True, "prepare_threshold": 0}, open=True)
        return _pool


def _model():
    """One client per process: it is thread-safe and keeps its HTTP connections alive."""
    client = getattr(_model, "client", None)
    if client is None:
        import openai

        client = _model.client = openai.OpenAI(base_url=os.environ[MODEL_ENV], api_key="bench", max_retries=0)
    return client


def _ask(body: dict) -> dict:
    answer = _model().post("/chat/completions", body=body, cast_to=object)
    return answer["choices"][0]["message"]


def _document(text: str) -> str:
    return f"<document>\n{text}\n</document>"


def _commit_step(pool, doc_id: int, step: str, output: dict, *, last: bool = False) -> None:
    """The step's checkpoint: one committed row (route's also marks the document done)."""
    with pool.connection() as conn:
        conn.execute("WITH s AS (INSERT INTO floor_step (doc_id, step, output) VALUES (%s, %s, %s)) "
                     "UPDATE floor_doc SET status = %s, step = %s WHERE id = %s",
                     [doc_id, step, json.dumps(output), "done" if last else "running", step, doc_id])


def run_document(doc_id: int) -> None:
    """The four steps of one document, each committed before the next starts. A failure marks the
    document failed with its error (the benchmark stops on it rather than wait for ever)."""
    try:
        _run_steps(doc_id)
    except Exception as error:
        with _connection_pool().connection() as conn:
            conn.execute("UPDATE floor_doc SET status = 'failed', step = %s WHERE id = %s", [repr(error), doc_id])
        raise


def _run_steps(doc_id: int) -> None:
    pool = _connection_pool()
    with pool.connection() as conn:
        row = conn.execute("UPDATE floor_doc SET status = 'running' WHERE id = %s RETURNING content",
                           [doc_id]).fetchone()
    text = row[0]

    message = _ask({"model": "gpt-4o-mini", "response_format": {"type": "json_object"},
                    "messages": [{"role": "system", "content": "Classify the document. Answer with JSON."},
                                 {"role": "user", "content": _document(text)}]})
    classified = json.loads(message["content"])
    _commit_step(pool, doc_id, "classify", classified)

    message = _ask({"model": "gpt-4o-mini", "response_format": {"type": "json_object"},
                    "messages": [{"role": "system", "content": "Extract the fields of the document as JSON.\n"
                                                               f"Document type: {classified.get('doc_type')}"},
                                 {"role": "user", "content": _document(text)}]})
    fields = json.loads(message["content"])
    _commit_step(pool, doc_id, "extract", fields)

    messages = [{"role": "system", "content": "Verify the fields against what is known, using the tools."},
                {"role": "user", "content": _document(text) + f"\n<fields>{json.dumps(fields)}</fields>"}]
    message = _ask({"model": "gpt-4o-mini", "messages": messages, "tools": TOOLS})
    messages.append({"role": "assistant", "content": None, "tool_calls": message.get("tool_calls") or []})
    messages += [{"role": "tool", "tool_call_id": call["id"], "content": "{}"}
                 for call in message.get("tool_calls") or []]
    message = _ask({"model": "gpt-4o-mini", "messages": messages, "tools": TOOLS})
    _commit_step(pool, doc_id, "verify", json.loads(message["content"]))

    queue = "legal_team" if classified.get("doc_type") == "Contract" else "standard_queue"
    _commit_step(pool, doc_id, "route", {"queue": queue}, last=True)


def _stewards_redis_transport() -> type:
    """Steward's Redis transport (config/broker.py: one client object per channel, not per
    command), loaded from its file: importing the `config` package would start Steward's Celery
    app, whose worker signals would then act in this peer's workers."""
    spec = importlib.util.spec_from_file_location("bench_floor_broker", REPO_ROOT / "config" / "broker.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.RedisTransport


def make_app(broker_url: str) -> Celery:
    """The floor's Celery app, with Steward's delivery settings. Not the current app: importing this
    peer must not take over the caller's shared tasks."""
    app = Celery("bench_peers_floor", broker=broker_url, set_as_current=False)
    app.conf.update(
        task_default_queue=QUEUE,
        task_serializer="json",
        accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_ignore_result=True,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        broker_transport=_stewards_redis_transport(),
    )
    app.task(name="floor_run")(run_document)
    return app


# What `celery -A bench.peers.floor worker` loads.
app = make_app(os.environ.get(BROKER_ENV, DEFAULT_BROKER_URL))


# --- The benchmark side ----------------------------------------------------------------------


def run(texts: list[str], *, database_url: str, broker_url: str, model_url: str,
        processes: int = DEFAULT_PROCESSES, concurrency: int = DEFAULT_CONCURRENCY) -> dict:
    """Push the documents through the floor pipeline on fresh workers; return the throughput."""
    n = len(texts)
    scratch_url = _create_scratch(database_url)
    client = make_app(broker_url)
    task = client.tasks["floor_run"]
    with client.connection_for_write() as conn:
        conn.default_channel.queue_purge(QUEUE)
    try:
        with tempfile.TemporaryFile(mode="w+") as log:
            workers = [_start_worker(f"bench-floor-{os.getpid()}-{k}-{uuid.uuid4().hex[:6]}@%h", scratch_url,
                                     broker_url, model_url, concurrency, log) for k in range(processes)]
            try:
                _wait_until_ready(client, workers, log)
                with psycopg.connect(scratch_url, autocommit=True, prepare_threshold=0) as conn:
                    started, cpu_before = time.perf_counter(), machine_cpu_s()
                    for text in texts:
                        doc_id = conn.execute("INSERT INTO floor_doc (content) VALUES (%s) RETURNING id",
                                              [text]).fetchone()[0]
                        task.apply_async(args=[doc_id])
                    deadline = time.monotonic() + RUN_TIMEOUT
                    while conn.execute("SELECT count(*) FROM floor_doc WHERE status = 'done'").fetchone()[0] < n:
                        failed = conn.execute("SELECT id, step FROM floor_doc WHERE status = 'failed' LIMIT 1").fetchone()
                        if failed or time.monotonic() > deadline or any(w.poll() is not None for w in workers):
                            raise RuntimeError(f"The floor's documents were not done (failed: {failed}):\n{_tail(log)}")
                        time.sleep(0.05)
                    elapsed, cpu_s = time.perf_counter() - started, machine_cpu_s() - cpu_before
                    steps = conn.execute("SELECT count(*) FROM floor_step").fetchone()[0]
            finally:
                for worker in workers:
                    _stop_worker(worker)
        if steps != 4 * n:
            raise RuntimeError(f"expected {4 * n} committed steps, found {steps}")
    finally:
        client.close()
        _drop_scratch(database_url)
    return {
        "name": "the stack's floor",
        "tasks": n,
        "seconds": round(elapsed, 3),
        "tasks_per_s": round(n / elapsed, 1),
        "cpu_ms": cpu_s * 1000 / n,
        "config": (f"{processes} processes x {concurrency} threads, acks late, prefetch 1, a pool of "
                   f"{POOL_MAX_SIZE} connections per process; per document 1 message, 4 model calls through "
                   "openai, 6 statements (submit, claim, 4 committed steps)"),
    }


def _conninfo(database_url: str, **changes: str) -> str:
    """libpq's form of a DATABASE_URL (which may say postgres://), with `changes` made."""
    return make_conninfo(database_url.replace("postgres://", "postgresql://", 1), **changes)


def _admin(database_url: str) -> psycopg.Connection:
    return psycopg.connect(_conninfo(database_url), autocommit=True)


def _create_scratch(database_url: str) -> str:
    """A fresh scratch database with the floor's tables; returns its connection string."""
    with _admin(database_url) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(SCRATCH_DB)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(SCRATCH_DB)))
    scratch_url = _conninfo(database_url, dbname=SCRATCH_DB)
    with psycopg.connect(scratch_url, autocommit=True) as conn:
        conn.execute(SCHEMA)
    return scratch_url


def _drop_scratch(database_url: str) -> None:
    # FORCE: a worker killed mid-run may still hold a connection.
    with _admin(database_url) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(SCRATCH_DB)))


def _start_worker(nodename: str, scratch_url: str, broker_url: str, model_url: str, concurrency: int,
                  log) -> subprocess.Popen:
    env = {**os.environ, BROKER_ENV: broker_url, DATABASE_ENV: scratch_url, MODEL_ENV: model_url,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    # Celery sets Django up in a worker whenever this is set (bench/pipeline.py sets it), and
    # Steward's app would then add its control queue and signals to this peer's workers.
    env.pop("DJANGO_SETTINGS_MODULE", None)
    command = [sys.executable, "-m", "celery", "-A", "bench.peers.floor", "worker", "--queues", QUEUE,
               "--hostname", nodename, "--pool", "threads", "--concurrency", str(concurrency),
               "--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel", "WARNING"]
    return subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def _wait_until_ready(client: Celery, workers: list[subprocess.Popen], log) -> None:
    deadline = time.monotonic() + WORKER_READY_TIMEOUT
    while time.monotonic() < deadline:
        if any(worker.poll() is not None for worker in workers):
            raise RuntimeError(f"A floor worker exited:\n{_tail(log)}")
        replies = client.control.ping(timeout=0.5) or []
        if sum(1 for reply in replies for name in reply if name.startswith("bench-floor-")) >= len(workers):
            return
    raise RuntimeError(f"The floor's workers were not ready after {WORKER_READY_TIMEOUT:.0f} s:\n{_tail(log)}")


def _stop_worker(worker: subprocess.Popen) -> None:
    """Killed, not shut down warm: nothing measured depends on how it ends."""
    try:
        os.killpg(worker.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    worker.wait()


def _tail(log, size: int = 4000) -> str:
    log.flush()
    log.seek(0)
    return log.read()[-size:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--database", default=DEFAULT_DATABASE_URL)
    parser.add_argument("--broker", default=DEFAULT_BROKER_URL)
    parser.add_argument("--model-url", required=True, help="an OpenAI-compatible base URL (Steward's llm_sim)")
    parser.add_argument("--processes", type=int, default=DEFAULT_PROCESSES)
    parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY)
    args = parser.parse_args()
    texts = [f"INVOICE\nInvoice Number: F-{i}\nFrom: Supplier {i % 97} Ltd\nTotal: $120.00\n" for i in range(args.n)]
    print(run(texts, database_url=args.database, broker_url=args.broker, model_url=args.model_url,
              processes=args.processes, concurrency=args.concurrency))


if __name__ == "__main__":
    main()
