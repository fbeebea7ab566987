"""Benchmark: the durable pipeline against a bare Celery chain and LangGraph + PostgresSaver.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/steward CELERY_BROKER_URL=redis://127.0.0.1:6379/14 \\
        .venv/bin/python bench/pipeline.py [--n 2000] [--runs 3] [--parts throughput,slow,cost]

Needs PostgreSQL and Redis (the local services) and the bench extra (`pip install -e '.[bench]'`
for the LangGraph peer). Steward runs in a scratch database next to DATABASE_URL's
(`bench_steward_pipeline`, created, migrated and dropped here), with real processes: the LLM
simulator (`manage.py llm_sim`), and Celery workers started with the production settings that
README.md documents (WORKER_ARGS below). Nothing here mocks the product.

Parts (each prints its figures; medians over --runs where it says so):
- throughput: 2,000 documents, zero-latency simulator, tasks/s from the first submission until
  every task has settled (completed, awaiting approval, rejected or dead-lettered); then the two
  peers doing the same four steps (peers/): a bare Celery chain of four no-op tasks with a Redis
  result backend, and a LangGraph StateGraph checkpointed by langgraph-checkpoint-postgres (with
  an in-process model, and again calling the same simulator over HTTP as Steward does). The
  runs alternate (Steward, chain, LangGraph, floor, Steward, ...) so a noisy machine weighs on
  all alike.
  Targets: Steward >= 1.0x the chain and >= 1.5x LangGraph. After each Steward run the invariants
  are checked: every task settled, one succeeded step per worker and task, every step counted.
  Then the stack's floor (peers/floor.py): one Celery message, Steward's four model calls through
  `openai` to the same simulator and one committed row per step, nothing else; the physical limit
  of any durable pipeline on DESIGN.md's stack, so the run also prints Steward / floor and how far
  the floor itself gets against each target.
- slow: the simulator answers after 300 ms; tasks/s against the limit
  concurrency / (model calls per task x latency), target >= 85%, and the peak number of
  PostgreSQL connections during the run.
- cost: SQL statements per task (counted in this process, which runs the same code a worker runs:
  submission, the task's run, the reviewers' notification, and its share of the rollup
  catch-up; target <= 12), this process's CPU for the same (messages counted, not sent) and for
  sending one message, broker messages per task (LPUSHes counted by Redis itself during a
  throughput run), and a worker's peak RSS after 1,000 and after 10,000 tasks (target <= 1.1).
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("SECRET_KEY", "bench-only-secret-key")

BASE_DATABASE_URL = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
SCRATCH = "bench_steward_pipeline"
os.environ["DATABASE_URL"] = BASE_DATABASE_URL.rsplit("/", 1)[0] + "/" + SCRATCH
BROKER_URL = os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/14")
os.environ["CELERY_BROKER_URL"] = BROKER_URL
QUEUE = f"bench-{uuid.uuid4().hex[:8]}"
os.environ["STEWARD_CELERY_QUEUE"] = QUEUE

import django  # noqa: E402
import psycopg  # noqa: E402

from bench.machine import machine_cpu_s  # noqa: E402

# The production worker settings README.md documents ("Running workers in production"): the
# threads pool, because a worker spends its time waiting on the model; one process per core.
WORKER_PROCESSES = 2
WORKER_CONCURRENCY = 16
WORKER_ARGS = ["--pool", "threads", "--without-gossip", "--without-mingle", "--without-heartbeat"]

TARGET_CHAIN, TARGET_LANGGRAPH, TARGET_LIMIT_SHARE, TARGET_STATEMENTS, TARGET_RSS = 1.0, 1.5, 0.85, 12, 1.1
SETTLED = ("completed", "awaiting_approval", "rejected", "dead_lettered")


# --- Documents ---------------------------------------------------------------------------------


def documents(n: int, seed: str) -> list[str]:
    """A realistic mix, all distinct: small invoices (auto-approved, then the webhook action),
    large ones (finance approval), contracts (legal), reports and emails."""
    kinds = []
    for i in range(n):
        supplier = f"Supplier {i % 97} Ltd"
        kind = i % 10
        if kind < 4:
            amount = 40 + (i % 50)
            kinds.append(f"INVOICE\nInvoice Number: {seed}-{i}\nFrom: {supplier}\nDate: 2026-11-02\n"
                         f"- Paper  2 x ${amount / 2:.2f} = ${amount:.2f}\nTotal: ${amount:.2f}\n")
        elif kind < 6:
            amount = 12_000 + i
            kinds.append(f"INVOICE\nInvoice Number: {seed}-{i}\nFrom: {supplier}\nDate: 2026-11-03\n"
                         f"- Consulting  1 x ${amount:,.2f} = ${amount:,.2f}\nTotal: ${amount:,.2f}\n")
        elif kind < 8:
            kinds.append(f"SERVICES AGREEMENT {seed}-{i}\nThis Agreement is made between {supplier} and "
                         f"Steward Ltd.\nTerm: 12 months. Fees: $2,000.00 per month.\n")
        elif kind == 8:
            kinds.append(f"QUARTERLY OPERATIONS REPORT {seed}-{i}\nPrepared by: Operations\n"
                         f"Period: Q3 2026\nSummary: throughput up {i % 9}%.\n")
        else:
            kinds.append(f"From: billing@supplier{i % 97}.example\nTo: ap@steward.example\n"
                         f"Subject: Statement {seed}-{i}\nDate: 2026-11-04\n\nPlease find our statement attached.\n")
    return kinds


# --- Processes ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Processes:
    """The simulator and the Celery workers, stopped (never left behind) on exit."""

    def __init__(self) -> None:
        self.children: list[subprocess.Popen] = []
        self.sim_url = ""

    def env(self, **extra: str) -> dict:
        return {**os.environ, "DEBUG": "0", "STEWARD_SIMULATOR_URL": self.sim_url,
                "STEWARD_WEBHOOK_URL": self.sim_url.removesuffix("/v1") + "/sim/webhook", **extra}

    def start_simulator(self, latency_ms: float) -> None:
        port = free_port()
        self.sim_url = f"http://127.0.0.1:{port}/v1"
        process = subprocess.Popen([sys.executable, "manage.py", "llm_sim", "--port", str(port),
                                    "--latency-ms", str(latency_ms)], cwd=ROOT, env=self.env(),
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        self.children.append(process)
        line = process.stdout.readline().decode()
        if "simulator" not in line:
            raise RuntimeError(f"The simulator did not start: {line}")
        threading.Thread(target=process.stdout.read, daemon=True).start()  # drain

    def start_workers(self, processes: int, concurrency: int, **env: str) -> list[subprocess.Popen]:
        started = []
        for index in range(processes):
            log = open(f"/tmp/steward-bench-worker-{os.getpid()}-{index}.log", "ab")
            process = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "config", "worker", "--loglevel", "WARNING",
                 *WORKER_ARGS, "--concurrency", str(concurrency), "-Q", QUEUE, "-n", f"bench{index}-{QUEUE}@%h"],
                cwd=ROOT, env=self.env(**env), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            self.children.append(process)
            started.append(process)
        deadline = time.monotonic() + 60
        from config.celery import app

        while time.monotonic() < deadline:
            replies = app.control.ping(timeout=0.5) or []
            if sum(1 for reply in replies for name in reply if QUEUE in name) >= processes:
                return started
        raise RuntimeError("The Celery workers did not come up within 60 s")

    def stop(self, only: list[subprocess.Popen] | None = None) -> None:
        for process in list(only or self.children):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in list(only or self.children):
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            self.children.remove(process)


# --- Database ----------------------------------------------------------------------------------


def admin_connection() -> psycopg.Connection:
    return psycopg.connect(BASE_DATABASE_URL.replace("postgres://", "postgresql://", 1), autocommit=True)


def create_scratch() -> None:
    with admin_connection() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{SCRATCH}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{SCRATCH}"')
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def drop_scratch() -> None:
    from django.db import connections

    connections.close_all()
    with admin_connection() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{SCRATCH}" WITH (FORCE)')


def reset_tasks() -> None:
    """Empty the work tables between runs (the seeded configuration stays)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE orchestrator_task, metrics_steprollup, metrics_taskrollup, "
                       "metrics_approvalrollup, metrics_histogramrollup CASCADE")


def database_connections() -> int:
    with admin_connection() as conn:
        return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", [SCRATCH]).fetchone()[0]


class ConnectionPeak:
    """Samples pg_stat_activity every 100 ms while the run goes."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        with admin_connection() as conn:
            while not self._stop.is_set():
                count = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s",
                                     [SCRATCH]).fetchone()[0]
                self.peak = max(self.peak, count)
                self._stop.wait(0.1)

    def __enter__(self) -> "ConnectionPeak":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()


def redis_lpushes() -> int:
    import redis

    stats = redis.Redis.from_url(BROKER_URL).info("commandstats")
    return sum(stats.get(name, {}).get("calls", 0) for name in ("cmdstat_lpush", "cmdstat_rpush"))


# --- Steward runs ------------------------------------------------------------------------------


def submit_all(texts: list[str]) -> float:
    """Submit every document (as the API does: insert, then one broker message); returns t0."""
    from orchestrator.services import task_submit

    started = time.perf_counter()
    for index, text in enumerate(texts):
        task_submit(content=text, filename=f"doc-{index}.txt")
    return started


def wait_settled(n: int, timeout: float) -> float:
    from orchestrator.models import Task

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if Task.objects.filter(status__in=SETTLED).count() >= n:
            return time.perf_counter()
        time.sleep(0.05)
    statuses = Counter(Task.objects.values_list("status", flat=True))
    raise RuntimeError(f"Not settled after {timeout:.0f} s: {dict(statuses)}")


def check_invariants(n: int) -> str:
    """What DESIGN.md promises, checked on the rows the run left."""
    from django.db.models import Count, Sum

    from metrics.models import ALL_TIME, StepRollup
    from metrics.rollups import rollups_catch_up
    from orchestrator.models import Step, Task

    statuses = Counter(Task.objects.values_list("status", flat=True))
    assert sum(statuses[s] for s in SETTLED) == n == sum(statuses.values()), statuses
    twice = Step.objects.filter(status="succeeded").values("task_id", "worker").annotate(c=Count("id")).filter(c__gt=1)
    assert not twice.exists(), "a step succeeded twice"
    rollups_catch_up(wait=True)
    steps = Step.objects.count()
    counted = StepRollup.objects.filter(bucket=ALL_TIME).aggregate(n=Sum("steps"))["n"]
    assert counted == steps, (counted, steps)
    # A zero-latency simulator fails nothing: a failed attempt here is the machine's (a refused
    # connection, a timeout), and its retry's backoff stretches the run.
    failed = Counter(Step.objects.exclude(status="succeeded").values_list("error_type", flat=True))
    return ", ".join(f"{count} {status}" for status, count in sorted(statuses.items())) + "; " + (
        "failed attempts: " + ", ".join(f"{n} {kind}" for kind, n in failed.items()) if failed else "no failed attempt")


def process_cpu_s(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def cpu_by_process(procs: "Processes") -> dict[str, float]:
    """CPU seconds so far of each part: Steward's workers, the simulator, PostgreSQL, Redis, and
    this process (submitting the documents)."""
    by_name: dict[str, list[int]] = {"postgres": [], "redis-server": []}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                name = (entry / "comm").read_text().strip()
            except OSError:
                continue
            if name in by_name:
                by_name[name].append(int(entry.name))
    workers = [p.pid for p in procs.children if "worker" in " ".join(map(str, p.args))]
    simulator = [p.pid for p in procs.children if "llm_sim" in " ".join(map(str, p.args))]
    return {"workers": process_cpu_s(workers), "simulator": process_cpu_s(simulator),
            "PostgreSQL": process_cpu_s(by_name["postgres"]), "Redis": process_cpu_s(by_name["redis-server"]),
            "submitter": process_cpu_s([os.getpid()])}


def steward_run(procs: Processes, texts: list[str], *, timeout: float = 600) -> dict:
    reset_tasks()
    before = redis_lpushes()
    cpu_before, parts_before = machine_cpu_s(), cpu_by_process(procs)
    with ConnectionPeak() as connections:
        started = submit_all(texts)
        finished = wait_settled(len(texts), timeout)
    cpu_ms = (machine_cpu_s() - cpu_before) * 1000 / len(texts)
    parts = {name: (value - parts_before[name]) * 1000 / len(texts) for name, value in cpu_by_process(procs).items()}
    messages = redis_lpushes() - before
    from django.db.models import Sum

    from orchestrator.models import Task

    calls = Task.objects.aggregate(n=Sum("llm_calls"))["n"] or 0
    return {"seconds": finished - started, "tasks_per_s": len(texts) / (finished - started),
            "messages_per_task": messages / len(texts), "calls_per_task": calls / len(texts),
            "peak_connections": connections.peak, "cpu_ms": cpu_ms, "cpu_parts": parts,
            "settled": check_invariants(len(texts))}


# --- Parts -------------------------------------------------------------------------------------


def part_throughput(procs: Processes, n: int, runs: int, peers: bool) -> None:
    print(f"\n== Throughput: {n:,} documents, zero-latency model, PostgreSQL + Redis ==")
    procs.start_simulator(latency_ms=0)
    workers = procs.start_workers(WORKER_PROCESSES, WORKER_CONCURRENCY)
    results: dict[str, list[float]] = {"steward": [], "chain": [], "langgraph": [], "langgraph_http": [], "floor": []}
    cpu: dict[str, list[float]] = {name: [] for name in results}  # ms of the machine's CPU per document
    try:
        for run in range(runs):
            result = steward_run(procs, documents(n, f"T{run}"))
            results["steward"].append(result["tasks_per_s"])
            cpu["steward"].append(result["cpu_ms"])
            parts = ", ".join(f"{name} {ms:.1f}" for name, ms in result["cpu_parts"].items())
            print(f"  run {run + 1}: Steward {result['tasks_per_s']:6.1f} tasks/s ({result['seconds']:.1f} s; per task: "
                  f"{result['messages_per_task']:.2f} Redis LPUSHes, {result['calls_per_task']:.2f} model calls, "
                  f"{result['cpu_ms']:.1f} ms CPU on the machine ({parts}); "
                  f"peak {result['peak_connections']} PostgreSQL connections; {result['settled']})")
            if not peers:
                continue
            procs.stop(workers)  # the peers get the machine to themselves
            from bench.peers import celery_chain, langgraph_pipeline

            chain = celery_chain.run(n, broker_url=BROKER_URL, backend_url=_other_db(BROKER_URL))
            results["chain"].append(chain["tasks_per_s"])
            cpu["chain"].append(chain["cpu_ms"])
            print(f"  run {run + 1}: bare Celery chain {chain['tasks_per_s']:6.1f} tasks/s, "
                  f"{chain['cpu_ms']:.1f} ms CPU on the machine per document ({chain['config']})")
            for key, model_url in (("langgraph", None), ("langgraph_http", procs.sim_url)):
                graph = langgraph_pipeline.run(n, database_url=BASE_DATABASE_URL, model_url=model_url)
                results[key].append(graph["tasks_per_s"])
                cpu[key].append(graph["cpu_ms"])
                print(f"  run {run + 1}: {graph['name']} {graph['tasks_per_s']:6.1f} tasks/s, "
                      f"{graph['cpu_ms']:.1f} ms CPU on the machine per document ({graph['config']})")
            from bench.peers import floor

            least = floor.run(documents(n, f"F{run}"), database_url=BASE_DATABASE_URL, broker_url=BROKER_URL,
                              model_url=procs.sim_url, processes=WORKER_PROCESSES, concurrency=WORKER_CONCURRENCY)
            results["floor"].append(least["tasks_per_s"])
            cpu["floor"].append(least["cpu_ms"])
            print(f"  run {run + 1}: {least['name']} {least['tasks_per_s']:6.1f} tasks/s, "
                  f"{least['cpu_ms']:.1f} ms CPU on the machine per document ({least['config']})")
            workers = procs.start_workers(WORKER_PROCESSES, WORKER_CONCURRENCY)
    finally:
        procs.stop()
    steward = statistics.median(results["steward"])
    print(f"  median Steward: {steward:.1f} tasks/s ({WORKER_PROCESSES} worker processes x "
          f"{WORKER_CONCURRENCY} threads)")
    if peers:
        chain, graph = statistics.median(results["chain"]), statistics.median(results["langgraph"])
        print(f"  median bare Celery chain: {chain:.1f} tasks/s   Steward / chain = {steward / chain:.2f}x "
              f"(target >= {TARGET_CHAIN}x) {'OK' if steward / chain >= TARGET_CHAIN else 'MISSED'}")
        print(f"  median LangGraph + PostgresSaver: {graph:.1f} tasks/s   Steward / LangGraph = {steward / graph:.2f}x "
              f"(target >= {TARGET_LANGGRAPH}x) {'OK' if steward / graph >= TARGET_LANGGRAPH else 'MISSED'}")
        http = statistics.median(results["langgraph_http"])
        print(f"  median LangGraph + PostgresSaver calling the same simulator over HTTP: {http:.1f} tasks/s   "
              f"Steward / that = {steward / http:.2f}x (for context: the same model client on both sides)")
        least = statistics.median(results["floor"])
        print(f"  median stack's floor (1 message, 4 model calls through openai, 4 committed steps, nothing "
              f"else): {least:.1f} tasks/s   Steward / floor = {steward / least:.2f}x")
        # No implementation of DESIGN.md on this stack runs faster than the floor (bench/peers/floor.py):
        # a target above these two ratios is out of reach whatever Steward does.
        print(f"  the most any durable pipeline on this stack reaches: floor / chain = {least / chain:.2f}x "
              f"(target {TARGET_CHAIN}x {'within' if least / chain >= TARGET_CHAIN else 'OUT OF'} reach), "
              f"floor / LangGraph = {least / graph:.2f}x "
              f"(target {TARGET_LANGGRAPH}x {'within' if least / graph >= TARGET_LANGGRAPH else 'OUT OF'} reach)")
        # A saturated machine runs about (its cores / this) documents a second: where the ratios come from.
        print("  median CPU of the whole machine per document: " + ", ".join(
            f"{label} {statistics.median(cpu[key]):.1f} ms" for key, label in (
                ("steward", "Steward"), ("chain", "chain"), ("langgraph", "LangGraph"),
                ("langgraph_http", "LangGraph over HTTP"), ("floor", "the stack's floor"))))


def _other_db(url: str) -> str:
    """The chain's result backend: the broker's Redis, the next database number down."""
    parsed = urlparse(url)
    number = int(parsed.path.strip("/") or 0)
    return url.rsplit("/", 1)[0] + f"/{max(number - 1, 0)}"


def part_slow(procs: Processes, n: int, runs: int, latency_ms: float) -> None:
    concurrency = WORKER_PROCESSES * WORKER_CONCURRENCY
    print(f"\n== Slow model: {latency_ms:.0f} ms per model call, {n:,} documents, "
          f"{WORKER_PROCESSES} x {WORKER_CONCURRENCY} = {concurrency} concurrent tasks ==")
    procs.start_simulator(latency_ms=latency_ms)
    procs.start_workers(WORKER_PROCESSES, WORKER_CONCURRENCY)
    shares, peaks = [], []
    try:
        for run in range(runs):
            result = steward_run(procs, documents(n, f"S{run}"))
            limit = concurrency / (result["calls_per_task"] * latency_ms / 1000)
            shares.append(result["tasks_per_s"] / limit)
            peaks.append(result["peak_connections"])
            print(f"  run {run + 1}: {result['tasks_per_s']:.1f} tasks/s, limit {limit:.1f} "
                  f"({concurrency} / ({result['calls_per_task']:.2f} calls x {latency_ms / 1000:.2f} s)) = "
                  f"{result['tasks_per_s'] / limit:.0%}; peak {result['peak_connections']} PostgreSQL connections")
    finally:
        procs.stop()
    share = statistics.median(shares)
    with admin_connection() as conn:
        allowed = conn.execute("SHOW max_connections").fetchone()[0]
    print(f"  median: {share:.0%} of the limit (target >= {TARGET_LIMIT_SHARE:.0%}) "
          f"{'OK' if share >= TARGET_LIMIT_SHARE else 'MISSED'}; peak {max(peaks)} of {allowed} PostgreSQL connections")


def part_cost(procs: Processes, k: int, rss_tasks: tuple[int, int]) -> None:
    print("\n== Cost per task ==")
    procs.start_simulator(latency_ms=0)
    try:
        statements, cpu = cost_of_task_lives(procs, k)
        messages = {name: n for name, n in statements.items() if name.startswith("(broker")}
        statements = {name: n for name, n in statements.items() if not name.startswith("(broker")}
        total = sum(statements.values()) / k
        print(f"  SQL statements per task, {k} documents run in this process: {total:.2f} "
              f"(target <= {TARGET_STATEMENTS}) {'OK' if total <= TARGET_STATEMENTS else 'MISSED'}")
        for part, count in statements.items():
            print(f"    {part:<32} {count / k:6.2f}")
        # One thread, nothing else running in this process: steadier than throughput on a noisy machine.
        print(f"  CPU of this process per task, warm, query log off, messages counted but not sent: "
              f"{sum(cpu.values()) * 1000 / k:.2f} ms")
        for part, seconds in cpu.items():
            print(f"    {part:<32} {seconds * 1000 / k:6.2f}")
        per_task = sum(messages.values()) / k
        print(f"  broker messages per task: {per_task:.2f}")
        for part, count in messages.items():
            print(f"    {part:<62} {count / k:6.2f}")
        sending = publish_cpu_ms(500)
        print(f"  CPU to send one broker message (apply_async to Redis): {sending:.2f} ms; "
              f"{per_task:.2f} per task: {sending * per_task:.2f} ms to add to the CPU above")
        first, second = rss_tasks
        rss = worker_rss(procs, first, second)
        ratio = rss[second] / rss[first]
        print(f"  worker peak RSS: {rss[first] / 1024:.1f} MiB after {first:,} tasks, {rss[second] / 1024:.1f} MiB "
              f"after {second:,}: ratio {ratio:.3f} (target <= {TARGET_RSS}) {'OK' if ratio <= TARGET_RSS else 'MISSED'}")
    finally:
        procs.stop()


def publish_cpu_ms(n: int) -> float:
    """This process's CPU per message, sending `n` wake-ups as a worker does (to a queue that
    nobody reads, deleted afterwards)."""
    import redis

    from orchestrator.pipeline import send_task_now
    from orchestrator.tasks import run_task

    queue = f"{QUEUE}-publish-cost"
    for _ in range(50):  # warm: the producer pool, the queue's declaration
        send_task_now(run_task, 0, queue=queue)
    started = time.process_time()
    for _ in range(n):
        send_task_now(run_task, 0, queue=queue)
    seconds = time.process_time() - started
    redis.Redis.from_url(BROKER_URL).delete(queue)
    return seconds * 1000 / n


def cost_of_task_lives(procs: Processes, k: int) -> tuple[dict[str, int], dict[str, float]]:
    """Statements this process sends to PostgreSQL (BEGIN and COMMIT included), and its CPU, for each part of
    a task's life, running what a worker runs: submission, the task's run, its reviewers'
    notification (pending approvals), and the rollup catch-up that counts its steps; and the
    broker messages each part sends.

    Three batches of `k` new documents go through: one to warm the process up (imports, caches,
    prepared statements: what a worker pays once), one with Django's query log on to count the
    statements, and one with it off to time the CPU (the log costs CPU of its own)."""
    from django.conf import settings
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from config.celery import app

    app.set_current()  # the app the tasks register with, as in a worker process
    from orchestrator import pipeline
    from reviews import services as reviews_services

    settings.STEWARD_SIMULATOR_URL = procs.sim_url
    settings.STEWARD_WEBHOOK_URL = procs.sim_url.removesuffix("/v1") + "/sim/webhook"
    settings.STEWARD_ROLLUP_INTERVAL_S = 3600  # caught up once per pass, for the whole batch
    reset_tasks()
    counts: Counter = Counter()
    cpu: Counter = Counter()  # seconds of this process's CPU
    sent: Counter = Counter()
    originals = pipeline.send_task_now, reviews_services.send_task_now
    # Count the messages each part would send, and run nothing behind our back (notifications are run below).
    pipeline.send_task_now = reviews_services.send_task_now = lambda task, *args, **kwargs: sent.update([task.name])
    try:
        task_lives(documents(k, "Cw"), lambda name: None)  # warm-up
        sent.clear()
        # Django's query log, which also holds the BEGIN and COMMIT of every transaction.
        with CaptureQueriesContext(connection) as log:
            seen = 0

            def count(name: str) -> None:
                nonlocal seen
                if len(connection.queries_log) == connection.queries_log.maxlen:
                    # Django keeps the last queries_limit statements: beyond that the counts would be short.
                    raise RuntimeError(f"More than {connection.queries_log.maxlen} statements to count: "
                                       f"use a smaller --cost-n")
                counts[name] += len(log.captured_queries) - seen
                seen = len(log.captured_queries)

            task_lives(documents(k, "C"), count)
        messages = dict(sent)
        clock = time.process_time()

        def timed(name: str) -> None:
            nonlocal clock
            cpu[name] += time.process_time() - clock
            clock = time.process_time()

        task_lives(documents(k, "Ct"), timed)
    finally:
        pipeline.send_task_now, reviews_services.send_task_now = originals
    counts.update({f"(broker message: {name})": n for name, n in messages.items()})
    return dict(counts), dict(cpu)


def task_lives(texts: list[str], part_done) -> None:
    """Submit `texts`, run every task, notify the reviewers of the pending approvals, count the
    steps in the rollups; `part_done(name)` after each part."""
    from metrics.rollups import rollups_catch_up
    from orchestrator import pipeline
    from orchestrator.services import task_submit
    from reviews.models import Approval
    from reviews.tasks import approval_notify

    ids = [task_submit(content=text)[0].pk for text in texts]
    part_done("submit")
    for task_id in ids:
        pipeline.task_run(task_id, runner="bench")
    part_done("run (claim + 4-5 checkpoints)")
    for approval_id in Approval.objects.filter(status="pending", task_id__in=ids).values_list("id", flat=True):
        approval_notify(approval_id)
    part_done("notify reviewers")
    rollups_catch_up()
    part_done("rollup catch-up (batched)")


def worker_rss(procs: Processes, first: int, second: int) -> dict[int, int]:
    """Peak RSS (VmHWM, KiB) of one worker process after `first` and after `second` tasks."""
    reset_tasks()
    (worker,) = procs.start_workers(1, WORKER_CONCURRENCY)
    peaks = {}
    done = 0
    for target in (first, second):
        texts = documents(target - done, f"R{target}")
        submit_all(texts)
        wait_settled(target, timeout=1200)
        done = target
        peaks[target] = _hwm(worker.pid)
        print(f"    after {target:,} tasks: VmHWM {peaks[target] / 1024:.1f} MiB, VmRSS {_rss(worker.pid) / 1024:.1f} MiB")
    return peaks


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for {pid}")


def _hwm(pid: int) -> int:
    return _status_kib(pid, "VmHWM")


def _rss(pid: int) -> int:
    return _status_kib(pid, "VmRSS")


def main() -> None:
    global WORKER_PROCESSES, WORKER_CONCURRENCY
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="documents per throughput run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--parts", default="throughput,slow,cost")
    parser.add_argument("--no-peers", action="store_true", help="Steward only")
    parser.add_argument("--slow-n", type=int, default=600, help="documents per slow-model run")
    parser.add_argument("--latency-ms", type=float, default=300)
    parser.add_argument("--cost-n", type=int, default=200, help="documents whose statements are counted")
    parser.add_argument("--rss", default="1000,10000", help="task counts at which worker RSS is read")
    parser.add_argument("--processes", type=int, default=WORKER_PROCESSES, help="worker processes (to explore)")
    parser.add_argument("--concurrency", type=int, default=WORKER_CONCURRENCY, help="threads per worker process")
    parser.add_argument("--pool", default="threads", help="Celery pool (to explore)")
    args = parser.parse_args()
    WORKER_PROCESSES, WORKER_CONCURRENCY = args.processes, args.concurrency
    WORKER_ARGS[1] = args.pool

    django.setup()
    from django.db import connection

    if connection.vendor != "postgresql" or not BROKER_URL.startswith("redis://"):
        sys.exit("bench/pipeline.py runs on PostgreSQL + Redis: set DATABASE_URL and CELERY_BROKER_URL")
    create_scratch()
    print(f"Steward pipeline benchmark: {os.cpu_count()} CPUs, PostgreSQL "
          f"{connection.cursor().connection.info.server_version}, broker {BROKER_URL}, queue {QUEUE}")
    procs = Processes()
    parts = args.parts.split(",")
    try:
        if "throughput" in parts:
            part_throughput(procs, args.n, args.runs, peers=not args.no_peers)
        if "slow" in parts:
            part_slow(procs, args.slow_n, args.runs, args.latency_ms)
        if "cost" in parts:
            first, second = (int(x) for x in args.rss.split(","))
            part_cost(procs, args.cost_n, (first, second))
    finally:
        procs.stop()
        drop_scratch()


if __name__ == "__main__":
    main()
