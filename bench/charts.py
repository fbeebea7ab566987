"""Benchmark: the charts page and /metrics with 10,000 and with 1,000,000 steps, on PostgreSQL.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/steward_h5 DEBUG=1 python bench/charts.py
    python bench/charts.py --sizes 10000 100000 --repeat 9

Each size gets its own database, named after DATABASE_URL's plus the size (steward_h5_10000,
steward_h5_1000000), kept between runs (--reload to load again). For each: empty its tasks,
steps, approvals and rollups; bulk-load tasks of five
steps each (classify, extract, verify, route, act) spread over the last 30 days, with failures,
retries, loops, approvals and rejections in realistic shares (COPY, so loading is not the
bottleneck); build the rollups with the same rebuild the `rebuild_rollups` command runs; then
time the charts page (24h, 7d, 30d) and /metrics through Django's full request stack, the two
sizes alternating request by request (each timed request follows a warm-up one), and print the
medians and the ratio large/small; the target is <= 2: the charts and /metrics read rollups,
whose size does not grow with the number of steps.

It deletes the data of the databases it uses: it refuses names that do not contain "bench" or
"steward_h5" unless --yes is given.
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("DEBUG", "1")
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/steward_h5")

import django  # noqa: E402
import psycopg  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.contrib.auth.models import Group, User  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.utils import timezone  # noqa: E402

from metrics.loops import clear_cache  # noqa: E402
from metrics.rollups import ROLLUPS, rollups_rebuild  # noqa: E402
from orchestrator.models import DeadLetter, Step, Task  # noqa: E402
from orchestrator.roles import api_token_create  # noqa: E402
from reviews.models import Approval, Queue, RejectionReason  # noqa: E402

STEPS_PER_TASK = 5
BASE = dict(settings.DATABASES["default"])
DAYS = 30
DOC_TYPES = [("Invoice", 5), ("Contract", 2), ("Report", 1), ("Email", 2), ("Other", 1)]
WORKERS = ("classify", "extract", "verify", "route", "act")


def copy_rows(model, rows: list[dict]) -> None:
    """COPY rows into the model's table; every column not given gets the field's default."""
    fields = [f for f in model._meta.concrete_fields]
    columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    with connection.cursor() as cursor:
        with cursor.cursor.copy(f"COPY {model._meta.db_table} ({columns}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row([
                    f.get_db_prep_save(row[f.attname] if f.attname in row else f.get_default(), connection)
                    for f in fields
                ])


def reset_sequences(*models) -> None:
    with connection.cursor() as cursor:
        for model in models:
            table = model._meta.db_table
            cursor.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                           f"COALESCE((SELECT MAX(id) FROM {table}), 1))")


def load(steps_wanted: int, seed: int = 7) -> dict:
    """Empty the tables and load `steps_wanted` steps (and their tasks and approvals)."""
    rng = random.Random(seed)
    with connection.cursor() as cursor:
        tables = [m._meta.db_table for m in (*ROLLUPS, DeadLetter, Approval, Step, Task)]
        cursor.execute(f"TRUNCATE {', '.join(tables)} CASCADE")
    queues = {q.name: q.pk for q in Queue.objects.all()}
    reasons = list(RejectionReason.objects.values_list("pk", flat=True))
    now = timezone.now()
    tasks, steps, approvals = [], [], []
    task_id = step_id = approval_id = 0
    doc_types = [d for d, weight in DOC_TYPES for _ in range(weight)]
    while step_id < steps_wanted:
        task_id += 1
        created = now - timedelta(seconds=rng.uniform(60, DAYS * 86400))
        doc_type = rng.choice(doc_types)
        queue = {"Invoice": rng.choice(["standard_queue", "standard_queue", "finance_director"]),
                 "Contract": "legal_team"}.get(doc_type, "standard_queue")
        totals = {"llm_calls": 0, "tool_calls": 0, "input_tokens": 0, "cached_tokens": 0, "output_tokens": 0,
                  "cost_usd": Decimal(0)}
        at = created
        status = "completed"
        for worker in WORKERS:
            attempt = 1
            while True:
                step_id += 1
                at += timedelta(seconds=rng.uniform(0.5, 4))
                llm = {"classify": 1, "extract": 1, "verify": 2}.get(worker, 0)
                tools = max(0, int(rng.gauss(3, 1))) if worker == "verify" else 0
                failed = llm and rng.random() < 0.04
                loop = worker == "verify" and rng.random() < 0.005
                if loop:
                    tools, llm = 3, 3
                step_status, error_type = "succeeded", ""
                if failed:
                    step_status, error_type = "failed", rng.choice(["RateLimited", "ServerError503", "Timeout"])
                if loop:
                    step_status, error_type = "dead_lettered", "LoopDetected"
                inp, out = rng.randint(600, 2400) * llm, rng.randint(40, 300) * llm
                cost = (Decimal(inp) * Decimal("0.15") + Decimal(out) * Decimal("0.6")) / Decimal(1_000_000)
                version = ("v2" if at < now - timedelta(days=15) else "v3") if worker == "extract" else "v1"
                steps.append({
                    "id": step_id, "task_id": task_id, "worker": worker, "attempt": attempt, "status": step_status,
                    "input": {"doc_type": doc_type} if worker != "classify" else {"document_chars": 900},
                    "output": {"doc_type": doc_type} if worker == "classify" and step_status == "succeeded" else {},
                    "transcript": [], "model": "gpt-4o-mini" if llm else "", "prompt_version": version,
                    "simulated": True, "llm_calls": llm, "tool_calls": tools, "input_tokens": inp,
                    "cached_tokens": inp // 4, "output_tokens": out, "reasoning_tokens": 0, "cost_usd": cost,
                    "latency_ms": rng.randint(200, 1500) * max(llm, 1), "error_type": error_type,
                    "started_at": at, "finished_at": at,
                })
                for name in ("llm_calls", "tool_calls", "input_tokens", "cached_tokens", "output_tokens", "cost_usd"):
                    totals[name] += steps[-1][name]
                if step_status != "failed":
                    break
                attempt += 1
            if step_status == "dead_lettered":
                status = "dead_lettered"
                break
            if worker == "route":
                needs_person = queue != "standard_queue" or rng.random() < 0.2
                approval_id += 1
                decided = at + timedelta(minutes=rng.uniform(2, 600)) if needs_person else at
                if needs_person and decided > now:
                    decision, status = "pending", "awaiting_approval"
                else:
                    decision = "auto_approved" if not needs_person else rng.choices(["approved", "rejected"], [85, 15])[0]
                approvals.append({
                    "id": approval_id, "task_id": task_id, "queue_id": queues[queue], "action_kind": "webhook",
                    "action_summary": f"Act on task {task_id}", "action_data": {}, "status": decision,
                    "decided_at": None if decision == "pending" else decided,
                    "rejection_reason_id": rng.choice(reasons) if decision == "rejected" else None,
                    "created_at": at, "due_at": at + timedelta(hours=4),
                    "idempotency_key": f"bench-{approval_id}",
                })
                if decision in ("pending", "rejected"):
                    status = "awaiting_approval" if decision == "pending" else "rejected"
                    break
                at = decided
        tasks.append({
            "id": task_id, "status": status, "current_step": "" if status in ("completed", "rejected") else "act",
            "content": f"bench document {task_id}", "content_sha256": f"{task_id:064x}",
            "filename": f"bench-{task_id}.txt", "doc_type": doc_type, "confidence": 0.97, "routed_to": queue,
            "created_at": created, "updated_at": at,
            "finished_at": at if status in ("completed", "rejected") else None, **totals,
        })
    started = time.perf_counter()
    copy_rows(Task, tasks)
    copy_rows(Step, steps)
    copy_rows(Approval, approvals)
    reset_sequences(Task, Step, Approval)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    return {"tasks": len(tasks), "steps": len(steps), "approvals": len(approvals),
            "load_s": time.perf_counter() - started}


def use_database(name: str) -> None:
    """Point the default connection at another database (created when missing)."""
    connection.close()
    admin = psycopg.connect(host=BASE["HOST"] or "127.0.0.1", port=BASE["PORT"] or 5432, user=BASE["USER"],
                            password=BASE["PASSWORD"] or None, dbname="postgres", autocommit=True)
    if not admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
        admin.execute(f'CREATE DATABASE "{name}"')
    admin.close()
    connection.settings_dict["NAME"] = name
    clear_cache()


def loaded_steps() -> int:
    return Step.objects.count()


def request_ms(client: Client, url: str, **headers) -> float:
    started = time.perf_counter()
    response = client.get(url, **headers)
    elapsed = (time.perf_counter() - started) * 1000
    assert response.status_code == 200, (url, response.status_code)
    return elapsed


URLS = {
    "charts 24h": "/charts/?range=24h",
    "charts 7d": "/charts/?range=7d",
    "charts 30d": "/charts/?range=30d",
    "charts 30d, filtered": "/charts/?range=30d&doc_type=Invoice&queue=finance_director",
    "/metrics": "/metrics",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs=2, default=[10_000, 1_000_000], metavar=("SMALL", "LARGE"))
    parser.add_argument("--repeat", type=int, default=15, help="requests per URL and size (median)")
    parser.add_argument("--reload", action="store_true", help="load again even if a database holds the right size")
    parser.add_argument("--yes", action="store_true", help="allow any database name")
    args = parser.parse_args()

    if not BASE["ENGINE"].endswith("postgresql"):
        sys.exit("bench/charts.py runs on PostgreSQL: set DATABASE_URL=postgres://...")
    if not args.yes and "bench" not in BASE["NAME"] and "steward_h5" not in BASE["NAME"]:
        sys.exit(f"Refusing to empty databases named after {BASE['NAME']!r}; pass --yes if that is what you want.")
    settings.SECURE_COOKIES = settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = False
    settings.ALLOWED_HOSTS = ["*"]

    # One database per size, so that the requests of both sizes can alternate: load on a shared
    # machine then weighs on both alike, instead of on whichever size ran at a busy moment.
    sizes = {size: f"{BASE['NAME']}_{size}" for size in args.sizes}
    clients = {}
    for size, name in sizes.items():
        use_database(name)
        call_command("migrate", verbosity=0)
        if args.reload or abs(loaded_steps() - size) > STEPS_PER_TASK:
            loaded = load(size)
            started = time.perf_counter()
            rebuilt = rollups_rebuild()
            print(f"{name}: {loaded['steps']:,} steps, {loaded['tasks']:,} tasks, {loaded['approvals']:,} "
                  f"approvals loaded in {loaded['load_s']:.1f} s; rollups rebuilt in "
                  f"{time.perf_counter() - started:.1f} s ({rebuilt['rollup_rows']:,} rollup rows)")
        else:
            print(f"{name}: reusing {loaded_steps():,} steps (--reload to load again)")
        operator, _ = User.objects.get_or_create(username="bench-operator")
        operator.groups.add(Group.objects.get(name="operator"))
        page = Client()
        page.force_login(operator)
        clients[size] = (page, Client(), api_token_create(user=operator))

    runs: dict[int, dict[str, list[float]]] = {size: {name: [] for name in URLS} for size in sizes}
    for _ in range(args.repeat):
        for size, name in sizes.items():
            use_database(name)
            page, anonymous, token = clients[size]
            for label, url in URLS.items():
                if label == "/metrics":
                    request_ms(anonymous, url, HTTP_AUTHORIZATION=f"Bearer {token}")  # warm-up (new connection)
                    runs[size][label].append(request_ms(anonymous, url, HTTP_AUTHORIZATION=f"Bearer {token}"))
                else:
                    request_ms(page, url)
                    runs[size][label].append(request_ms(page, url))

    small, large = args.sizes
    print(f"\nPostgreSQL; median of {args.repeat} requests per URL and size, the sizes alternating\n")
    print(f"{'':<22} {small:>10,} {large:>12,}   ratio (target <= 2)")
    worst = 0.0
    for label in URLS:
        a, b = statistics.median(runs[small][label]), statistics.median(runs[large][label])
        worst = max(worst, b / a)
        print(f"{label:<22} {a:>8.1f}ms {b:>10.1f}ms   {b / a:5.2f}")
    print(f"\nWorst ratio {worst:.2f}: {'within' if worst <= 2 else 'ABOVE'} the target of 2")


if __name__ == "__main__":
    main()
