"""Benchmark: the review inbox and a decision with 100 and with 100,000 pending approvals.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/steward SECRET_KEY=bench \
        .venv/bin/python bench/inbox.py [--sizes 100,100000] [--runs 30] [--explain]

Each size gets a scratch database next to DATABASE_URL's (`test_<name>_inbox_<size>`, created,
migrated and dropped by this script), so it never touches real data. PostgreSQL is the point
(SQLite works, for a quick look). Rows are bulk-inserted; pending approvals are spread over the
three seeded queues, the reviewer belongs to two of them, and a tenth are past their SLA.

Measures, in this process through Django's test client (server time: middleware, views, queries,
templates; no network), the sizes alternating round by round so that load on a shared machine
weighs on both alike:
- the inbox's first page (50 rows, oldest first), a page deep in the backlog (keyset cursor),
  and the 10-second counts refresh;
- a decision (POST approve, answered with a redirect to the next item);
and prints the minimum, median and p95 of each, the queries per request, and the ratio of the
largest size to the smallest (targets: ratio <= 1.3, queries per inbox page <= 8).
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


def timed_ms(call) -> tuple[float, int]:
    """Milliseconds of one request, and its number of queries."""
    with CaptureQueriesContext(connection) as captured:
        started = time.perf_counter()
        response = call()
        elapsed = (time.perf_counter() - started) * 1000
    assert response.status_code in (200, 302), response.status_code
    return elapsed, len(captured)


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]


def use_database(name: str) -> None:
    """Point the default connection at another scratch database, connected before any timing."""
    connection.close()
    connection.settings_dict["NAME"] = name
    connection.ensure_connection()


def scratch_database(size: int, base_name: str) -> str:
    """Create and migrate the scratch database of one size; returns its name."""
    connection.close()
    connection.settings_dict["NAME"] = base_name
    if connection.vendor == "sqlite":
        test_name = str(Path(settings.VAR_DIR) / f"bench-inbox-{size}.sqlite3")
    else:
        test_name = f"test_{base_name}_inbox_{size}"
    connection.settings_dict.setdefault("TEST", {})["NAME"] = test_name
    return connection.creation.create_test_db(verbosity=0, autoclobber=True, keepdb=False)


class Size:
    """One backlog size: its database, its reviewer's client and the approvals left to decide."""

    def __init__(self, n: int, database: str, explain: bool) -> None:
        from reviews.models import Approval, Queue
        from reviews.selectors import Cursor

        self.n, self.database = n, database
        use_database(database)
        reviewer = User.objects.create_user("bench-reviewer", "bench@example.com", "x")
        reviewer.groups.add(Group.objects.get(name="reviewer"))
        for name in ("finance_director", "standard_queue"):
            Queue.objects.get(name=name).reviewers.add(reviewer)
        started = time.perf_counter()
        mine = populate(n, reviewer)
        self.setup_s, self.mine = time.perf_counter() - started, len(mine)
        self.client = Client()
        self.client.force_login(reviewer)
        # Deep in the backlog, with at least a full page after it, so both sizes render 50 rows.
        middle = Approval.objects.get(pk=mine[min(len(mine) // 2, len(mine) - 52)])
        self.deep = f"/reviews/?after={Cursor.of(middle).encode()}"
        self.to_decide = iter(mine)  # oldest first; each is decided once
        self.times: dict[str, list[float]] = {name: [] for name in REQUESTS}
        self.queries: dict[str, int] = {}
        if explain and connection.vendor == "postgresql":
            from reviews.selectors import inbox_queryset, review_queues

            queue_ids = list(review_queues(reviewer).values_list("id", flat=True))
            for label, after in (("first page", None), ("deep page", Cursor.of(middle))):
                print(f"  plan of the {label}:")
                print("    " + inbox_queryset(queue_ids, after)[:51].explain(analyze=True).replace("\n", "\n    "))

    def call(self, name: str):
        if name == "inbox":
            return self.client.get("/reviews/")
        if name == "inbox_deep":
            return self.client.get(self.deep)
        if name == "counts":
            return self.client.get("/reviews/", HTTP_HX_REQUEST="true", HTTP_HX_TARGET="inbox-counts")
        return self.client.post(f"/reviews/approvals/{next(self.to_decide)}/decide", {"decision": "approve"})

    def round(self, names: tuple[str, ...], record: bool) -> None:
        use_database(self.database)
        for name in names:
            elapsed, queries = timed_ms(lambda: self.call(name))
            if record:
                self.times[name].append(elapsed)
                self.queries[name] = queries


REQUESTS = ("inbox", "inbox_deep", "counts", "decide")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="100,100000", help="pending approvals, comma-separated")
    parser.add_argument("--runs", type=int, default=30, help="timed requests of each kind and size")
    parser.add_argument("--explain", action="store_true", help="print the inbox queries' plans (PostgreSQL)")
    args = parser.parse_args()
    counts = [int(s) for s in args.sizes.split(",")]

    setup_test_environment()
    # Celery: the act step's wake-ups after each decision go nowhere in this benchmark.
    from reviews import services
    services.send_wakeup = lambda *a, **k: None

    base_name = connection.settings_dict["NAME"]
    sizes: list[Size] = []
    try:
        for n in counts:
            database = scratch_database(n, base_name)
            print(f"Scratch database {database} ({connection.vendor}): populating {n:,} pending approvals...",
                  flush=True)
            size = Size(n, database, args.explain)
            sizes.append(size)
            print(f"  done in {size.setup_s:.1f} s; {size.mine:,} in the reviewer's queues", flush=True)
        # The sizes alternate round by round, so that load on a shared machine weighs on both alike.
        # Pages first, then decisions, so that every page is timed with the whole backlog.
        for names in (REQUESTS[:3], REQUESTS[3:]):
            for size in sizes:
                size.round(names, record=False)  # warm up: caches, the first query plans
            for _ in range(args.runs):
                for size in sizes:
                    size.round(names, record=True)
    finally:
        for size in sizes:
            connection.close()
            connection.settings_dict["NAME"] = size.database
            connection.creation.destroy_test_db(base_name, verbosity=0)

    print()
    print(f"{'pending':>9} | {'request':<11} | {'min ms':>7} | {'median ms':>9} | {'p95 ms':>7} | {'queries':>7}")
    print("-" * 66)
    for size in sizes:
        for name in REQUESTS:
            times = size.times[name]
            print(f"{size.n:>9,} | {name:<11} | {min(times):>7.2f} | {statistics.median(times):>9.2f} | "
                  f"{p95(times):>7.2f} | {size.queries[name]:>7}")
    if len(sizes) >= 2:
        small, large = sizes[0], sizes[-1]
        print()
        print(f"Ratio {large.n:,} / {small.n:,} pending, median server time (target <= {TARGET_RATIO}):")
        for name in REQUESTS:
            ratio = statistics.median(large.times[name]) / statistics.median(small.times[name])
            print(f"  {name:<11} {ratio:.2f}  {'ok' if ratio <= TARGET_RATIO else 'OVER TARGET'}")
        most = max(size.queries[name] for size in sizes for name in ("inbox", "inbox_deep"))
        print(f"Queries per inbox page: {most} (target <= {TARGET_QUERIES}): "
              f"{'ok' if most <= TARGET_QUERIES else 'OVER TARGET'}")


if __name__ == "__main__":
    main()
