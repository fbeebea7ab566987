"""Benchmark: the dead-letter triage page at 100 and at 100,000 dead letters, and a bulk retry of
10,000 items (time to enqueue, measured pace against the configured rate).

    .venv/bin/python bench/deadletters.py                       # SQLite file in var/
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/steward_bench .venv/bin/python bench/deadletters.py
    CELERY_BROKER_URL=redis://127.0.0.1:6379/14 ...                      # the broker the wake-ups go to

Use a database of its own: the script migrates it and deletes every task and dead letter in it
when it starts. Wake-ups go to a Celery queue of their own, purged at the end; no worker runs.

Targets: triage page time at 100,000 / at 100 <= 1.3 (the unfiltered groups come from the
group counts the services keep, the list is one keyset page; filtered views count the matching
rows with one aggregate query and are printed for comparison); a bulk retry paces itself at its configured rate
(measured / configured close to 1.0) while it can keep up.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
# Production settings (cached templates, no query log); a throwaway key for this process only.
os.environ.setdefault("DEBUG", "0")
os.environ.setdefault("SECRET_KEY", "bench-only-" + uuid.uuid4().hex)
os.environ.setdefault("DATABASE_URL", f"sqlite:///{ROOT / 'var' / 'bench-deadletters.sqlite3'}")
QUEUE = f"bench-deadletters-{uuid.uuid4().hex[:6]}"
os.environ["STEWARD_CELERY_QUEUE"] = QUEUE
os.environ.setdefault("LOG_LEVEL", "WARNING")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.contrib.auth.models import Group, User  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402
from django.utils import timezone  # noqa: E402

from orchestrator.models import BulkRetry, DeadLetter, DeadLetterGroup, Task  # noqa: E402
from orchestrator.services import bulk_retry_advance, bulk_retry_create, dead_letter_groups_rebuild  # noqa: E402

# A realistic spread: a few big groups and a long tail, like a provider outage plus odd failures.
FAILURES = [
    ("verify", "Timeout", "Gave up after 5 attempts: Request timed out after {n} s"),
    ("extract", "InvalidAnswer", "Answer still invalid after 2 re-asks: amount: Input should be >= 0 (got -{n})"),
    ("verify", "BudgetExceeded", "Budget exceeded, suspected loop: tool calls {n} > 40"),
    ("classify", "RateLimited", "Gave up after 5 attempts: 429 Too Many Requests, retry after {n} s"),
    ("act", "WebhookError", "Webhook answered 500 for key {n}"),
] + [("extract", f"Permanent{k}", f"Error {k}: content filter triggered on section {{n}}") for k in range(20)]
WEIGHTS = [40, 20, 10, 8, 5] + [1] * 20


def reset_database() -> None:
    call_command("migrate", verbosity=0)
    empty_tables()


def empty_tables() -> None:
    """Delete every task, dead letter and bulk retry. On PostgreSQL a TRUNCATE: Django's cascading
    delete of 100,000 dead letters sends one statement with a parameter per row, over the protocol's
    limit of 65,535."""
    models = (BulkRetry, DeadLetterGroup, DeadLetter, Task)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"TRUNCATE {', '.join(m._meta.db_table for m in models)} CASCADE")
        return
    for model in models:
        model.objects.all().delete()


def add_dead_letters(count: int, start: int) -> None:
    """Bulk-insert `count` dead-lettered tasks with their open dead letters, spread over a week."""
    from orchestrator.errors import error_fingerprint

    now = timezone.now()
    pool = [i for i, w in enumerate(WEIGHTS) for _ in range(w)]
    batch = 5000
    for offset in range(0, count, batch):
        n_rows = min(batch, count - offset)
        tasks = []
        for i in range(start + offset, start + offset + n_rows):
            content = f"Bench document {i}"
            tasks.append(Task(content=content, content_sha256=hashlib.sha256(content.encode()).hexdigest(),
                              filename=f"bench-{i}.txt", status="dead_lettered", current_step="verify",
                              doc_type=("Invoice", "Contract", "Email", "Report")[i % 4]))
        tasks = Task.objects.bulk_create(tasks)
        letters = []
        for task in tasks:
            worker, error_type, template = FAILURES[pool[task.pk % len(pool)]]
            message = template.format(n=task.pk % 997)
            letters.append(DeadLetter(task=task, worker=worker, error_type=error_type, message=message,
                                      fingerprint=error_fingerprint(worker, error_type, message),
                                      doc_type=task.doc_type, attempts=5))
        created = DeadLetter.objects.bulk_create(letters)
        # Spread first/last seen over a week (auto_now_add set them all to now).
        for k, letter in enumerate(created):
            letter.created_at = now - timedelta(minutes=(len(created) - k) * 7 % (7 * 24 * 60))
        DeadLetter.objects.bulk_update(created, ["created_at"], batch_size=2000)
    # Inserted in bulk, not through dead_letter_create: recount the groups once, as a repair would.
    dead_letter_groups_rebuild()
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            # As if inserted once with their dates (no update bloat), the way real rows arrive.
            cursor.execute("VACUUM FULL ANALYZE orchestrator_deadletter")
            cursor.execute("VACUUM ANALYZE orchestrator_task")


def operator() -> User:
    user, _ = User.objects.get_or_create(username="bench-operator")
    user.groups.add(Group.objects.get(name="operator"))
    return user


def time_page(client: Client, url: str, runs: int) -> tuple[float, int]:
    """Median milliseconds of `runs` GETs (after 3 warm-ups), and the queries of one page."""
    for _ in range(3):
        assert client.get(url).status_code == 200
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        response = client.get(url)
        times.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200
    with CaptureQueriesContext(connection) as queries:
        client.get(url)
    return statistics.median(times), len(queries)


def measure_pages(client: Client, runs: int) -> dict[str, tuple[float, int]]:
    group = DeadLetter.objects.values_list("fingerprint", flat=True).order_by("id").first()
    oldest_shown = list(DeadLetter.objects.order_by("-id").values_list("id", flat=True)[:50])[-1]
    urls = {
        "triage page": "/dead-letters/",
        "one group": f"/dead-letters/?fingerprint={group}",
        "search 'timed out'": "/dead-letters/?q=timed%20out",
        "next page (keyset)": f"/dead-letters/?before={oldest_shown}",
        "filter worker+type": "/dead-letters/?worker=extract&doc_type=Invoice",
    }
    # Warm every page first (caches, plans), so that the first one measured is not the cold one.
    for url in urls.values():
        for _ in range(3):
            client.get(url)
    return {name: time_page(client, url, runs) for name, url in urls.items()}


def bench_bulk_retry(user: User, items: int, rate: int) -> dict:
    ids = list(DeadLetter.objects.filter(status="open").order_by("id").values_list("id", flat=True)[:items])
    started = time.perf_counter()
    bulk = bulk_retry_create(user=user, dead_letter_ids=ids, description="bench", selection={"scope": "bench"},
                             rate_per_minute=rate)
    created_s = time.perf_counter() - started
    # Drive the ticks in this process, on the real clock, as the Celery chain would.
    first = time.perf_counter()
    tick_times = []
    while True:
        bulk.refresh_from_db()
        if bulk.status != "running" or bulk.enqueued + bulk.skipped >= bulk.total:
            break
        wait = (bulk.next_tick_at - timezone.now()).total_seconds() if bulk.next_tick_at else 0
        if wait > 0:
            time.sleep(wait)
        t = time.perf_counter()
        bulk_retry_advance(bulk_id=bulk.pk)
        tick_times.append(time.perf_counter() - t)
    enqueue_s = time.perf_counter() - first
    bulk.refresh_from_db()
    # Each tick sends one interval's worth at its start: n ticks cover n intervals, so the pace is
    # measured over the last tick's interval too (else a short run reads as over the rate).
    from orchestrator.services import tick_interval

    window = enqueue_s + tick_interval(rate)
    pace = bulk.enqueued / window * 60
    return {"items": bulk.total, "enqueued": bulk.enqueued, "create_s": created_s, "enqueue_s": enqueue_s,
            "pace_per_min": pace, "rate": rate, "ticks": len(tick_times),
            "median_tick_ms": statistics.median(tick_times) * 1000 if tick_times else 0.0}


def purge_queue() -> None:
    if settings.CELERY_BROKER_URL.startswith("filesystem://"):
        for leftover in settings.BROKER_DIR.glob(f"*.{QUEUE}*.msg"):
            leftover.unlink(missing_ok=True)
    elif settings.CELERY_BROKER_URL.startswith("redis"):
        import redis

        client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
        keys = list(client.scan_iter(match=f"{QUEUE}*"))
        if keys:
            client.delete(*keys)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--large", type=int, default=100_000, help="dead letters in the large run")
    parser.add_argument("--bulk", type=int, default=10_000, help="items in the bulk retry")
    parser.add_argument("--rate", type=int, default=30_000, help="the bulk retry's rate per minute")
    parser.add_argument("--runs", type=int, default=25, help="timed page loads per measurement")
    args = parser.parse_args()

    print(f"database: {connection.vendor}; broker: {settings.CELERY_BROKER_URL.split('://')[0]}")
    reset_database()
    user = operator()
    client = Client(HTTP_HOST="127.0.0.1")
    client.force_login(user)
    try:
        add_dead_letters(100, 0)
        small = measure_pages(client, args.runs)
        started = time.perf_counter()
        add_dead_letters(args.large - 100, 100)
        print(f"inserted {args.large - 100:,} more dead letters in {time.perf_counter() - started:.1f} s")
        large = measure_pages(client, args.runs)

        print(f"\nTriage pages, median of {args.runs} loads (ms, queries per page):")
        print(f"  {'page':<22} {'100':>14} {f'{args.large:,}':>16} {'ratio':>7}  target <= 1.3")
        for name in small:
            (t1, q1), (t2, q2) = small[name], large[name]
            print(f"  {name:<22} {t1:8.1f} ms {q1:2d}q {t2:9.1f} ms {q2:2d}q {t2 / t1:7.2f}"
                  + ("" if name != "triage page" else ("  OK" if t2 / t1 <= 1.3 else "  over target")))

        result = bench_bulk_retry(user, args.bulk, args.rate)
        print(f"\nBulk retry of {result['items']:,} items at a configured {result['rate']:,}/min:")
        print(f"  selection resolved and items created: {result['create_s']:.2f} s")
        print(f"  time to enqueue all:                  {result['enqueue_s']:.1f} s "
              f"({result['ticks']} ticks, median tick {result['median_tick_ms']:.0f} ms)")
        print(f"  measured pace:                        {result['pace_per_min']:,.0f}/min "
              f"= {result['pace_per_min'] / result['rate']:.2f} x the configured rate")
    finally:
        purge_queue()
        empty_tables()


if __name__ == "__main__":
    main()
