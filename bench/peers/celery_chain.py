"""Peer: a bare Celery chain of four no-op tasks (classify -> extract -> verify -> route).

    .venv/bin/python -m bench.peers.celery_chain [--n 2000] [--broker redis://127.0.0.1:6379/14]
        [--backend redis://127.0.0.1:6379/13] [--pool prefork] [--concurrency 2]

Redis is the broker and the result backend, and that is all the durability there is: a message
is acked when a worker takes it (no acks_late), results are plain Redis keys, nothing is written
to a database. Each task returns a small dict that the next one receives, like the product's
steps hand their output on.

run() starts a real worker as a subprocess on a dedicated queue (purged first, so stale messages
never count), waits until it answers a ping, submits n chains from this process, waits for the n
final results, and stops the worker (SIGTERM, then SIGKILL on the whole process group if it
lingers), also when something fails or the run is interrupted. The clock runs from the first
submit to the last final result.

Worker settings tried on this machine (2 cores, n=2,000): the prefork pool with 2 processes,
prefetch multiplier 4 and early acks was fastest, at about 245-270 chains/s; the threads pool
(1 process) reached about 170-190. Those are the defaults below: the peer at its best.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from celery import Celery, chain
from celery.result import ResultSet

from bench.machine import machine_cpu_s

QUEUE = "bench-peers-chain"
DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/14"
DEFAULT_BACKEND_URL = "redis://127.0.0.1:6379/13"

# Best of the settings tried (see the module docstring).
DEFAULT_POOL = "prefork"
DEFAULT_CONCURRENCY = 2
DEFAULT_PREFETCH_MULTIPLIER = 4

# The worker subprocess gets its broker and backend through these; run()'s own client app is
# built from run()'s arguments, so the two always agree.
BROKER_ENV = "BENCH_CELERY_BROKER_URL"
BACKEND_ENV = "BENCH_CELERY_RESULT_BACKEND"

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKER_READY_TIMEOUT = 60.0
WORKER_STOP_TIMEOUT = 15.0
RESULT_TIMEOUT = 600.0


# The four steps. They do no work: the point is what the plumbing around them costs.

def classify(doc: dict) -> dict:
    return {"doc": doc["id"], "doc_type": "invoice", "confidence": 0.97}


def extract(state: dict) -> dict:
    return {**state, "fields": {"vendor": "ACME", "total": "1200.00", "currency": "EUR"}}


def verify(state: dict) -> dict:
    return {**state, "verdict": "pass", "findings": []}


def route(state: dict) -> dict:
    return {"doc": state["doc"], "queue": "accounts-payable"}


STEPS = (classify, extract, verify, route)


def make_app(broker_url: str, backend_url: str) -> Celery:
    """A Celery app with the four steps registered under their bare names.

    A factory rather than one module-level app so that run() talks to the broker and backend
    it was given even after this module was imported with other defaults. Names are explicit:
    under `python -m` this module is `__main__`, and the worker must see the same names.
    """
    # Not the current app: importing this peer must not take over the caller's shared tasks.
    app = Celery("bench_peers_celery_chain", broker=broker_url, backend=backend_url, set_as_current=False)
    app.conf.update(
        task_default_queue=QUEUE,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        # Results only need to outlive the run; don't litter the Redis database for a day.
        result_expires=3600,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
    )
    for step in STEPS:
        app.task(name=step.__name__)(step)
    return app


# What `celery -A bench.peers.celery_chain worker` loads.
app = make_app(
    os.environ.get(BROKER_ENV, DEFAULT_BROKER_URL),
    os.environ.get(BACKEND_ENV, DEFAULT_BACKEND_URL),
)


def run(
    n: int,
    *,
    broker_url: str,
    backend_url: str,
    concurrency: int = DEFAULT_CONCURRENCY,
    pool: str = DEFAULT_POOL,
    prefetch_multiplier: int = DEFAULT_PREFETCH_MULTIPLIER,
) -> dict:
    """Push n documents through the four-task chain on a fresh worker; return the throughput."""
    client = make_app(broker_url, backend_url)
    classify_t, extract_t, verify_t, route_t = (client.tasks[step.__name__] for step in STEPS)
    purge_queue(client)
    nodename = f"bench-chain-{os.getpid()}-{uuid.uuid4().hex[:6]}@%h"
    with tempfile.TemporaryFile(mode="w+") as log:
        worker = start_worker(
            nodename, broker_url, backend_url,
            pool=pool, concurrency=concurrency, prefetch_multiplier=prefetch_multiplier, log=log,
        )
        results = []
        try:
            wait_until_ready(client, worker, nodename, log)
            started, cpu_before = time.perf_counter(), machine_cpu_s()
            # Submitting from this thread is enough: a publish costs a fraction of what the worker
            # spends on a chain, so the queue fills far faster than it drains.
            for i in range(n):
                results.append(
                    chain(classify_t.s({"id": i}), extract_t.s(), verify_t.s(), route_t.s()).apply_async()
                )
            # The Redis backend's native join: one MGET for what is already done, then the
            # results' pub/sub messages, instead of n blocking round trips.
            finals = ResultSet(results, app=client).join_native(timeout=RESULT_TIMEOUT)
            elapsed, cpu_s = time.perf_counter() - started, machine_cpu_s() - cpu_before
        finally:
            stop_worker(worker)
            forget_results(client, results)
            client.close()
    if len(finals) != n or any("queue" not in final for final in finals):
        raise RuntimeError(f"expected {n} routed documents, got {finals[:3]!r}...")
    return {
        "name": "bare Celery chain",
        "tasks": n,
        "seconds": round(elapsed, 3),
        "tasks_per_s": round(n / elapsed, 1),
        "cpu_ms": cpu_s * 1000 / n,
        "config": (
            f"1 worker, pool={pool}, concurrency={concurrency}, "
            f"prefetch_multiplier={prefetch_multiplier}, acks early, "
            "Redis broker + Redis result backend, 4 tasks per document"
        ),
    }


def purge_queue(client: Celery) -> None:
    with client.connection_for_write() as conn:
        conn.default_channel.queue_purge(QUEUE)


def forget_results(client: Celery, finals: list) -> None:
    """Delete every task's result (the final one and its parents) so runs don't pile up in Redis."""
    keys = []
    for result in finals:
        while result is not None:
            keys.append(client.backend.get_key_for_task(result.id))
            result = result.parent
    for start in range(0, len(keys), 1000):
        client.backend.client.delete(*keys[start:start + 1000])


def start_worker(
    nodename: str, broker_url: str, backend_url: str, *,
    pool: str, concurrency: int, prefetch_multiplier: int, log,
) -> subprocess.Popen:
    env = {
        **os.environ,
        BROKER_ENV: broker_url,
        BACKEND_ENV: backend_url,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    }
    command = [
        sys.executable, "-m", "celery", "-A", "bench.peers.celery_chain", "worker",
        "--queues", QUEUE, "--hostname", nodename,
        "--pool", pool, "--concurrency", str(concurrency),
        "--prefetch-multiplier", str(prefetch_multiplier),
        # A lone worker has no peers to gossip with or sync from, and no one reads heartbeats.
        "--without-gossip", "--without-mingle", "--without-heartbeat",
        "--loglevel", "WARNING",
    ]
    # Its own session, so the prefork children can be killed as a group if it comes to that.
    return subprocess.Popen(
        command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )


def wait_until_ready(client: Celery, worker: subprocess.Popen, nodename: str, log) -> None:
    """Block until the worker answers a ping, which it does once it is consuming."""
    hostname = nodename.replace("%h", os.uname().nodename)
    deadline = time.monotonic() + WORKER_READY_TIMEOUT
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise RuntimeError(f"Celery worker exited with {worker.returncode}:\n{_tail(log)}")
        if client.control.ping(destination=[hostname], timeout=0.5):
            return
    raise RuntimeError(f"Celery worker not ready after {WORKER_READY_TIMEOUT:.0f}s:\n{_tail(log)}")


def stop_worker(worker: subprocess.Popen) -> None:
    """Warm shutdown; if that hangs, kill the worker and whatever it forked."""
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(WORKER_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pass
    # The group outlives a main process that died early; make sure no pool child is left.
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
    parser.add_argument("--broker", default=DEFAULT_BROKER_URL)
    parser.add_argument("--backend", default=DEFAULT_BACKEND_URL)
    parser.add_argument("--pool", default=DEFAULT_POOL, choices=["prefork", "threads", "solo"])
    parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY)
    parser.add_argument("--prefetch-multiplier", type=int, default=DEFAULT_PREFETCH_MULTIPLIER)
    args = parser.parse_args()
    print(run(
        args.n, broker_url=args.broker, backend_url=args.backend, concurrency=args.concurrency,
        pool=args.pool, prefetch_multiplier=args.prefetch_multiplier,
    ))


if __name__ == "__main__":
    main()
