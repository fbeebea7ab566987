"""Peer: a LangGraph StateGraph (classify -> extract -> verify -> route) checkpointed in PostgreSQL.

    .venv/bin/python -m bench.peers.langgraph_pipeline [--n 2000]
        [--database postgres://postgres@127.0.0.1:5432/postgres] [--processes 2] [--concurrency 8]

Each node asks a zero-latency model for its answer (doc_type/confidence, fields,
verdict/findings, queue). Two models:
- in-process (the default): a function returning those answers at once, so what is measured is
  the framework and its checkpointer alone;
- over HTTP (model_url / --model-url, an OpenAI-compatible base URL such as Steward's simulator):
  one chat-completions call per node through the official openai client, which is what a real
  LangGraph agent does and what Steward's workers do. The answer is parsed but not trusted: the
  node still returns the fixed answer, so both models take the graph down the same path.
The graph is compiled with langgraph-checkpoint-postgres's PostgresSaver and every document runs
on its own thread_id.

Durability: this langgraph offers durability="sync" | "async" | "exit" on invoke(), and its
default is "async" (a step's checkpoint is written while the next step already runs, so a crash
can lose the last step). We pass "sync": each step's checkpoint and writes are committed before
the next step starts, the same promise the product makes. "exit" (one checkpoint at the end)
would be faster and not comparable.

run() works in a scratch database on database_url's server (`bench_langgraph`: dropped if left
over, created, PostgresSaver.setup(), dropped at the end). Worker processes each open their own
psycopg_pool.ConnectionPool and run graph.invoke() from a few threads, taking document numbers
from a shared counter so a process slowed by other load simply takes fewer. The clock starts
when every worker is connected and warmed up (one throwaway invoke per thread) and stops when
the last document's graph has returned.

Configurations tried on this machine (2 cores, n=2,000): 2 processes x 4 threads, a saver per
thread over a per-process pool, and prepare_threshold=0 was fastest, at about 250-270 documents/s
with the in-process model (about 140 with one HTTP call per node to Steward's zero-latency
simulator). Those are the defaults below: the peer at its best.
"""
from __future__ import annotations

import argparse
import json
import os
import select
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import TypedDict

import psycopg
from langgraph.checkpoint.postgres import PostgresSaver
from langgraph.graph import END, START, StateGraph
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from bench.machine import machine_cpu_s

SCRATCH_DB = "bench_langgraph"
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/postgres"

# Best of the configurations tried (see the module docstring).
DEFAULT_PROCESSES = 2
DEFAULT_CONCURRENCY = 8  # graph.invoke() calls in flight, over all processes
DEFAULT_SHARED_SAVER = False
DEFAULT_PREPARE_THRESHOLD: int | None = 0

DURABILITY = "sync"
REPO_ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT = 120.0
RUN_TIMEOUT = 1800.0


class Document(TypedDict, total=False):
    doc_id: str
    text: str
    doc_type: str
    confidence: float
    fields: dict
    verdict: str
    findings: list
    queue: str


# Set in a worker process when the nodes call a model over HTTP (_worker's model_url).
HTTP_MODEL = None

SYSTEM_PROMPTS = {
    "classify": "Classify the document. Answer with JSON: doc_type, confidence.",
    "extract": "Extract the fields of the document as JSON.\nDocument type: invoice",
    "verify": "Check the fields against the document. Answer with JSON: verdict, findings.",
    "route": "Choose the review queue for the document. Answer with JSON: queue.",
}


def fake_model(step: str, doc: Document) -> dict:
    """Answers with what the real model would return for each step (after asking it over HTTP,
    when there is one)."""
    if HTTP_MODEL is not None:
        completion = HTTP_MODEL.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "system", "content": SYSTEM_PROMPTS[step]},
                      {"role": "user", "content": f"<document>\n{doc['text']}\n</document>"}],
            response_format={"type": "json_object"},
        )
        json.loads(completion.choices[0].message.content)
    if step == "classify":
        return {"doc_type": "invoice", "confidence": 0.97}
    if step == "extract":
        return {"fields": {"vendor": "ACME", "invoice_number": doc["doc_id"], "total": "1200.00", "currency": "EUR"}}
    if step == "verify":
        return {"verdict": "pass", "findings": []}
    if step == "route":
        return {"queue": "accounts-payable"}
    raise ValueError(step)


def classify(state: Document) -> dict:
    return fake_model("classify", state)


def extract(state: Document) -> dict:
    return fake_model("extract", state)


def verify(state: Document) -> dict:
    return fake_model("verify", state)


def route(state: Document) -> dict:
    return fake_model("route", state)


def build_graph() -> StateGraph:
    builder = StateGraph(Document)
    builder.add_node("classify", classify)
    builder.add_node("extract", extract)
    builder.add_node("verify", verify)
    builder.add_node("route", route)
    builder.add_edge(START, "classify")
    builder.add_edge("classify", "extract")
    builder.add_edge("extract", "verify")
    builder.add_edge("verify", "route")
    builder.add_edge("route", END)
    return builder


def run(
    n: int,
    *,
    database_url: str,
    concurrency: int = DEFAULT_CONCURRENCY,
    processes: int = DEFAULT_PROCESSES,
    shared_saver: bool = DEFAULT_SHARED_SAVER,
    prepare_threshold: int | None = DEFAULT_PREPARE_THRESHOLD,
    model_url: str | None = None,
) -> dict:
    """Run n documents through the checkpointed graph; return the throughput.

    concurrency invocations are in flight at once, spread over `processes` worker processes
    (threads per process = concurrency / processes, rounded up).
    """
    processes = max(1, min(processes, concurrency))
    threads = -(-concurrency // processes)
    scratch_url = make_conninfo(database_url, dbname=SCRATCH_DB)
    create_scratch_database(database_url)
    try:
        with PostgresSaver.from_conn_string(scratch_url) as saver:
            saver.setup()
        elapsed, cpu_s = _run_workers(n, scratch_url, processes, threads, shared_saver, prepare_threshold, model_url)
        with psycopg.connect(scratch_url) as conn:
            routed = conn.execute(
                "SELECT count(DISTINCT thread_id) FROM checkpoints WHERE thread_id LIKE 'doc-%'"
            ).fetchone()[0]
        if routed != n:
            raise RuntimeError(f"expected checkpoints for {n} documents, found {routed}")
    finally:
        drop_scratch_database(database_url)
    model = f"one HTTP model call per node ({model_url})" if model_url else "in-process model"
    return {
        "name": "LangGraph + PostgresSaver" + (", HTTP model" if model_url else ""),
        "tasks": n,
        "seconds": round(elapsed, 3),
        "tasks_per_s": round(n / elapsed, 1),
        "cpu_ms": cpu_s * 1000 / n,
        "config": (
            f"{processes} process(es) x {threads} thread(s), a ConnectionPool per process, "
            f"{'one PostgresSaver per process' if shared_saver else 'a PostgresSaver per thread'}, "
            f"prepare_threshold={prepare_threshold}, durability={DURABILITY}, 4 nodes per document, {model}"
        ),
    }


def create_scratch_database(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(SCRATCH_DB)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(SCRATCH_DB)))


def drop_scratch_database(database_url: str) -> None:
    # FORCE: a worker killed mid-run may still hold a connection.
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(SCRATCH_DB)))


def _run_workers(
    n: int, scratch_url: str, processes: int, threads: int, shared_saver: bool, prepare_threshold: int | None,
    model_url: str | None,
) -> tuple[float, float]:
    """Start the worker processes, let them warm up, then time them through the n documents;
    return (seconds, CPU seconds the whole machine spent meanwhile).

    The workers are `python -m` subprocesses of this module rather than multiprocessing
    children: spawn would re-import the caller's main module (a benchmark script that sets up
    Django at import time), and fork would copy its open connections.
    """
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    }
    with tempfile.TemporaryFile(mode="w+") as log:
        workers = []
        finished = False
        try:
            for k in range(processes):
                options = {
                    "scratch_url": scratch_url, "docs": [k, n, processes], "threads": threads,
                    "shared_saver": shared_saver, "prepare_threshold": prepare_threshold,
                    "model_url": model_url,
                }
                workers.append(subprocess.Popen(
                    [sys.executable, "-m", "bench.peers.langgraph_pipeline", "--worker", json.dumps(options)],
                    cwd=REPO_ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                    text=True, start_new_session=True,  # Ctrl-C reaches this process, which stops them
                ))
            for worker in workers:
                _expect(worker, "ready", READY_TIMEOUT, log)
            started, cpu_before = time.perf_counter(), machine_cpu_s()
            for worker in workers:
                worker.stdin.write("go\n")
                worker.stdin.flush()
            done = sum(int(_expect(worker, "done", RUN_TIMEOUT, log)) for worker in workers)
            elapsed, cpu_s = time.perf_counter() - started, machine_cpu_s() - cpu_before
            if done != n:
                raise RuntimeError(f"workers finished {done} documents, expected {n}")
            finished = True
            return elapsed, cpu_s
        finally:
            for worker in workers:
                _stop(worker, grace=10 if finished else 0)


def _expect(worker: subprocess.Popen, word: str, timeout: float, log) -> str:
    """Wait for the worker's `word [value]` line; return the value. Fails if it dies or stalls."""
    ready, _, _ = select.select([worker.stdout], [], [], timeout)
    line = worker.stdout.readline() if ready else None
    if not line or not line.startswith(word):
        reason = "stalled" if line is None else f"exited with {worker.wait()}" if not line else f"said {line!r}"
        log.flush()
        log.seek(0)
        raise RuntimeError(f"LangGraph worker {reason} waiting for {word!r}:\n{log.read()[-4000:]}")
    return line[len(word):].strip()


def _stop(worker: subprocess.Popen, grace: float) -> None:
    """Let a worker exit (EOF on its stdin tells one still waiting for "go" to quit), else kill it."""
    try:
        worker.stdin.close()
    except OSError:  # BrokenPipeError flushing to a worker that is gone
        pass
    try:
        worker.wait(grace)
    except subprocess.TimeoutExpired:
        worker.terminate()
        try:
            worker.wait(10)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
    worker.stdout.close()


def _worker(
    scratch_url: str, docs: list[int], threads: int, shared_saver: bool, prepare_threshold: int | None,
    model_url: str | None = None,
) -> None:
    """One worker process: a pool, `threads` threads invoking the graph on its share of the documents."""
    global HTTP_MODEL
    if model_url:
        import openai

        # One client for the process: it is thread-safe and keeps a connection per thread alive.
        HTTP_MODEL = openai.OpenAI(base_url=model_url, api_key="bench", max_retries=0)
    first, n, step = docs
    todo = iter(range(first, n, step))
    todo_lock = threading.Lock()
    counts = [0] * threads
    errors: list[str] = []
    pool = ConnectionPool(
        scratch_url,
        min_size=threads,
        max_size=threads,
        # What PostgresSaver.from_conn_string sets up, and what the saver needs: autocommit
        # (it manages no transactions) and dict rows.
        kwargs={"autocommit": True, "prepare_threshold": prepare_threshold, "row_factory": dict_row},
        open=False,
    )
    with pool:
        pool.wait()
        builder = build_graph()
        # PostgresSaver serialises its own calls with a lock, so threads sharing one saver take
        # turns at the database; a saver each (over the same pool) lets their round trips overlap.
        shared = builder.compile(checkpointer=PostgresSaver(pool)) if shared_saver else None
        graphs = [shared or builder.compile(checkpointer=PostgresSaver(pool)) for _ in range(threads)]
        warmed = threading.Barrier(threads + 1)
        go = threading.Event()

        def invoke(graph, doc_id: str) -> None:
            result = graph.invoke(
                {"doc_id": doc_id, "text": f"Invoice {doc_id} from ACME, total 1200.00 EUR"},
                {"configurable": {"thread_id": doc_id}},
                durability=DURABILITY,
            )
            if result.get("queue") != "accounts-payable":
                raise RuntimeError(f"{doc_id} was not routed: {result!r}")

        def loop(t: int) -> None:
            try:
                # Warm-up outside the clock: lazy imports, the pool's connections, first queries.
                invoke(graphs[t], f"warmup-{first}-{t}")
                warmed.wait()
                go.wait()
                while True:
                    with todo_lock:
                        i = next(todo, None)
                    if i is None:
                        return
                    invoke(graphs[t], f"doc-{i}")
                    counts[t] += 1
            except Exception:
                errors.append(traceback.format_exc())
                warmed.abort()  # don't keep the others waiting for a warm-up that failed

        workers = [threading.Thread(target=loop, args=(t,), daemon=True) for t in range(threads)]
        for thread in workers:
            thread.start()
        try:
            warmed.wait(READY_TIMEOUT)
        except threading.BrokenBarrierError:
            raise RuntimeError("warm-up failed:\n" + "\n".join(errors)) from None
        print("ready", flush=True)
        if sys.stdin.readline().strip() != "go":
            return  # run() gave up before the start
        go.set()
        for thread in workers:
            thread.join()
        if errors:
            raise RuntimeError("\n".join(errors))
        print("done", sum(counts), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--database", default=DEFAULT_DATABASE_URL)
    parser.add_argument("--processes", type=int, default=DEFAULT_PROCESSES)
    parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY)
    parser.add_argument("--shared-saver", action=argparse.BooleanOptionalAction, default=DEFAULT_SHARED_SAVER)
    parser.add_argument("--prepare-threshold", type=lambda v: None if v == "none" else int(v),
                        default=DEFAULT_PREPARE_THRESHOLD, help="psycopg's: 0 prepares every query on first use, 'none' never")
    parser.add_argument("--model-url", help="an OpenAI-compatible base URL: one model call per node over HTTP")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # run() starts its workers this way
    args = parser.parse_args()
    if args.worker:
        _worker(**json.loads(args.worker))
        return
    print(run(
        args.n, database_url=args.database, concurrency=args.concurrency, processes=args.processes,
        shared_saver=args.shared_saver, prepare_threshold=args.prepare_threshold, model_url=args.model_url,
    ))


if __name__ == "__main__":
    main()
