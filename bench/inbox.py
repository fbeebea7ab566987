"""Benchmark: the review inbox and a decision with 100 and with 100,000 pending approvals.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/steward SECRET_KEY=bench \
        .venv/bin/python bench/inbox.py [--sizes 100,100000] [--runs 30]

Runs against a scratch database next to DATABASE_URL's (Django's test database, `test_<name>`,
created, migrated and dropped by this script), so it never touches real data. PostgreSQL is the
point (SQLite works, for a quick look). Rows are bulk-inserted; pending approvals are spread over
the three seeded queues, the reviewer belongs to two of them, and a tenth are past their SLA.

Measures, in this process through Django's test client (server time: middleware, views, queries,
templates; no network):
- the inbox's first page (50 rows, oldest first), a page deep in the backlog (keyset cursor),
  and the 10-second counts refresh;
- a decision (POST approve, answered with a redirect to the next item);
and prints the median and p95 of each, the queries per request, and the ratio of 100,000 to 100
(targets: ratio <= 1.3, queries per inbox page <= 8).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("SECRET_KEY", "bench-only-secret-key")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.contrib.auth.models import Group, User  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext, setup_test_environment  # noqa: E402
from django.utils import timezone  # noqa: E402

TARGET_RATIO = 1.3
TARGET_QUERIES = 8
BATCH = 5000


def populate(n: int, reviewer: User) -> list[int]:
    """n tasks awaiting approval, each with a pending approval; returns the approval ids oldest first."""
    from orchestrator.models import Task
    from reviews.models import Approval, Queue

    Approval.objects.all().delete()
    Task.objects.all().delete()
    queues = list(Queue.objects.order_by("name"))
    now = timezone.now()
    start = now - timedelta(days=3)
    step = timedelta(days=3) / n
    created_field = Approval._meta.get_field("created_at")
    created_field.auto_now_add = False  # keep the spread-out arrival times set below
    try:
        for first in range(0, n, BATCH):
            size = min(BATCH, n - first)
            tasks = Task.objects.bulk_create([
                Task(status="awaiting_approval", current_step="act", doc_type="Invoice",
                     content=f"INVOICE\nInvoice Number: INV-{i}\nTotal: ${1000 + i}.00\n",
                     content_sha256=f"{i:064x}", filename=f"invoice-{i}.txt", routed_to=queues[i % 3].name,
                     confidence=0.9, fields={"invoice_number": f"INV-{i}", "counterparty": f"Supplier {i % 97}",
                                             "amount": 1000.0 + i})
                for i in range(first, first + size)
            ])
            approvals = []
            for i, task in zip(range(first, first + size), tasks):
                queue = queues[i % 3]
                created = start + step * i
                sla = timedelta(minutes=queue.sla_minutes)
                approvals.append(Approval(
                    task=task, queue=queue, action_kind="webhook", status="pending",
                    action_summary=f"Send payment approval for invoice INV-{i}, ${1000 + i:,}, to {queue.name}",
                    action_data={"amount": f"{1000 + i}.00", "fields": task.fields},
                    reasons=[f"Rule \"{queue.name}\" requires approval"], created_at=created,
                    # a tenth are past their SLA
                    due_at=now - timedelta(minutes=5) if i % 10 == 0 else created + sla + timedelta(days=4),
                    notified_at=created,
                ))
            Approval.objects.bulk_create(approvals)
    finally:
        created_field.auto_now_add = True
    if connection.vendor == "postgresql":
        # As autovacuum would have by now: statistics for the planner, a visibility map for
        # index-only scans.
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE orchestrator_task")
            cursor.execute("VACUUM ANALYZE reviews_approval")
    mine = [q.pk for q in queues if q.reviewers.filter(pk=reviewer.pk).exists()]
    return list(Approval.objects.filter(queue_id__in=mine, status="pending").order_by("created_at", "id")
                .values_list("id", flat=True))


def timed(call, runs: int) -> tuple[list[float], int]:
    """Milliseconds of each run, and the queries of the last one."""
    call()  # warm up: connections, template caches
    times = []
    queries = 0
    for _ in range(runs):
        with CaptureQueriesContext(connection) as captured:
            started = time.perf_counter()
            response = call()
            times.append((time.perf_counter() - started) * 1000)
        assert response.status_code in (200, 302), response.status_code
        queries = len(captured)
    return times, queries


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]


def measure(n: int, runs: int, reviewer: User, explain: bool = False) -> dict:
    from reviews.selectors import Cursor
    from reviews.models import Approval

    started = time.perf_counter()
    mine = populate(n, reviewer)
    setup_s = time.perf_counter() - started
    client = Client()
    client.force_login(reviewer)
    # Deep in the backlog, with at least a full page after it, so both sizes render 50 rows.
    middle = Approval.objects.get(pk=mine[min(len(mine) // 2, len(mine) - 52)])
    deep = f"/reviews/?after={Cursor.of(middle).encode()}"

    results = {"n": n, "setup_s": setup_s, "mine": len(mine)}
    if explain and connection.vendor == "postgresql":
        from reviews.selectors import inbox_queryset, review_queues

        queue_ids = list(review_queues(reviewer).values_list("id", flat=True))
        for label, after in (("first page", None), ("deep page", Cursor.of(middle))):
            print(f"  plan of the {label}:")
            print("    " + inbox_queryset(queue_ids, after)[:51].explain(analyze=True).replace("\n", "\n    "))
    for name, call in (
        ("inbox", lambda: client.get("/reviews/")),
        ("inbox_deep", lambda: client.get(deep)),
        ("counts", lambda: client.get("/reviews/", HTTP_HX_REQUEST="true", HTTP_HX_TARGET="inbox-counts")),
    ):
        results[name] = timed(call, runs)

    # Decisions: the oldest ones, each once (a decision cannot be repeated).
    to_decide = iter(mine[: runs + 1])
    results["decide"] = timed(
        lambda: client.post(f"/reviews/approvals/{next(to_decide)}/decide", {"decision": "approve"}), runs)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="100,100000", help="pending approvals, comma-separated")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--explain", action="store_true", help="print the inbox queries' plans (PostgreSQL)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    setup_test_environment()
    # Celery: the act step's wake-ups after each decision go nowhere in this benchmark.
    from reviews import services
    services.send_wakeup = lambda *a, **k: None

    old_name = connection.settings_dict["NAME"]
    test_db = connection.creation.create_test_db(verbosity=0, autoclobber=True, keepdb=False)
    print(f"Scratch database: {test_db} ({connection.vendor})", flush=True)
    try:
        from reviews.models import Queue

        reviewer = User.objects.create_user("bench-reviewer", "bench@example.com", "x")
        reviewer.groups.add(Group.objects.get(name="reviewer"))
        for name in ("finance_director", "standard_queue"):
            Queue.objects.get(name=name).reviewers.add(reviewer)

        rows = []
        for n in sizes:
            print(f"Populating {n:,} pending approvals...", flush=True)
            result = measure(n, args.runs, reviewer, explain=args.explain)
            print(f"  done in {result['setup_s']:.1f} s; {result['mine']:,} in the reviewer's queues", flush=True)
            rows.append(result)
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)

    print()
    print(f"{'pending':>9} | {'request':<11} | {'min ms':>7} | {'median ms':>9} | {'p95 ms':>7} | {'queries':>7}")
    print("-" * 66)
    for result in rows:
        for name in ("inbox", "inbox_deep", "counts", "decide"):
            times, queries = result[name]
            print(f"{result['n']:>9,} | {name:<11} | {min(times):>7.2f} | {statistics.median(times):>9.2f} | "
                  f"{p95(times):>7.2f} | {queries:>7}")
    if len(rows) >= 2:
        small, large = rows[0], rows[-1]
        print()
        print(f"Ratio {large['n']:,} / {small['n']:,} pending (server time; target <= {TARGET_RATIO}). The minimum")
        print("is the steadier figure on a shared machine; the median is the one the target is for.")
        for name in ("inbox", "inbox_deep", "counts", "decide"):
            ratio = statistics.median(large[name][0]) / statistics.median(small[name][0])
            fastest = min(large[name][0]) / min(small[name][0])
            print(f"  {name:<11} median {ratio:.2f} {'ok' if ratio <= TARGET_RATIO else 'OVER TARGET':<11}"
                  f" min {fastest:.2f}")
        most_queries = max(r[name][1] for r in rows for name in ("inbox", "inbox_deep"))
        print(f"Queries per inbox page: {most_queries} (target <= {TARGET_QUERIES}): "
              f"{'ok' if most_queries <= TARGET_QUERIES else 'OVER TARGET'}")
    print(f"Database: {settings.DATABASES['default']['ENGINE'].rsplit('.', 1)[-1]}")


if __name__ == "__main__":
    main()
