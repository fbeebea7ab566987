"""Keeping the rollups (metrics/models.py) up to date, and rebuilding them from the raw rows.

Steps are counted after they commit, in batches, not inside the pipeline's checkpoints: a
checkpoint writes its step row (with `counted` false) and nothing else, so the hot path pays one
statement per step instead of a dozen rollup updates. `rollups_catch_up` takes the uncounted
steps in id order, adds what they say (usage, tool calls, the task outcome a dead-lettered or
final step made, the auto-approval a route step made) to the rollups with one upsert per table,
and marks them counted, all in one transaction under a lock, so every step is counted exactly
once. Workers run it every STEWARD_ROLLUP_INTERVAL_S (after a task, when due), the sweeper runs
it, and /metrics and the charts run it before they read, so what they show is never behind.

Events made by a person or the sweeper are rare and counted inside the transaction that makes
them: `record_approval` when an approval is decided, `record_dead_letter` when the sweeper
dead-letters a task without a failing step, `record_retries` when an operator sends dead letters
back, `record_discard` when an operator discards a task. The same pure functions (`add_step`,
`add_task`, `add_approval`, `add_dead_letter`) feed the live path and `rollups_rebuild`, so a
rebuild gives the figures the live path gave.

How task outcomes are counted (TaskRollup; the charts and /metrics read it this way). The charts
count each task once, at its latest outcome; counters only ever go up (an upsert adds), so a
withdrawn outcome is a row of its own that readers subtract:
- completed, rejected: once, when it happens.
- dead_lettered: each time the task is sent to the dead-letter queue, by a failing step (the
  step's StepRollup row holds the error type) or without one (the sweeper's "Orphaned": a
  DEAD_LETTERS_NO_STEP counter row holds it), with the task's totals at that moment and the doc
  type and queue its letter copied then.
- retried: when an operator sends the letter back (retry, edit-and-retry, bulk retry), the same
  values again, in the same hour as the dead letter, under outcome RETRIED (and the per-task
  histograms' label RETRIED): the task is back in the pipeline, so its dead_lettered outcome is
  withdrawn and it is counted again where it ends. A task dead-lettered three times counts once;
  one dead-lettered, retried and completed counts once, as completed with human intervention (its
  succeeded work was used in the end, so it is not wasted spend). /metrics leaves RETRIED out and
  keeps counting events: steward_task_outcomes_total{outcome="dead_lettered"} goes up at every
  dead-lettering, as a Prometheus counter must (it never goes down).
- discarded: when an operator discards a dead-lettered task (or requeues its document as a new
  task), at that moment, with the task's final totals. No step runs between the dead letter and
  the discard, so this is the same task closed for good, not another outcome: it is left out of
  the completion rate, the per-task histograms and steward_task_outcomes (its dead_lettered outcome
  is already there), and it is what makes its work wasted spend for good (charts.chart_wasted:
  failed attempts + work on rejected tasks + work on discarded tasks, each cent once).
"""
from __future__ import annotations

import functools
import logging
import operator
import time
from collections import defaultdict
from datetime import datetime, timezone as dt_timezone
from decimal import Decimal
from typing import Any, Callable

from django.conf import settings
from django.db import OperationalError, connection, transaction
from django.db.models import F, JSONField, QuerySet, Sum
from django.db.models.expressions import RawSQL

from . import histograms as h
from .models import ALL_TIME, ApprovalRollup, HistogramRollup, Period, StepRollup, TaskRollup

log = logging.getLogger(__name__)

ROLLUPS = (StepRollup, TaskRollup, ApprovalRollup, HistogramRollup)
# The error types that mean "stopped as a suspected loop", for the charts and /metrics.
LOOP_ERROR_TYPES = ("LoopDetected", "ToolLoop", "BudgetExceeded")
TASK_OUTCOMES = ("completed", "rejected", "dead_lettered", "discarded")
# A dead_lettered outcome withdrawn because an operator sent the task back (see the module docstring).
RETRIED = "retried"
# Dead letters made without a failing step (the sweeper's "Orphaned"), counted in HistogramRollup
# as a plain counter (bin 0, `count`; label = error type), since no StepRollup row holds them.
# Those with a step are counted by the step's StepRollup row (outcome dead_lettered).
DEAD_LETTERS_NO_STEP = "dead_letters_no_step"


def hour(moment: datetime | None) -> datetime:
    moment = moment or datetime.now(dt_timezone.utc)
    return moment.astimezone(dt_timezone.utc).replace(minute=0, second=0, microsecond=0)


def step_doc_type(worker: str, input: dict | None, output: dict | None) -> str:
    """The document type a step worked on, from the step alone (the same live and in a rebuild)."""
    if worker == "classify":
        return str((output or {}).get("doc_type") or "")[:20]
    return str((input or {}).get("doc_type") or "")[:20]


class Accumulator:
    """Increments per rollup row, merged in memory; each goes to its hour, its day and all time."""

    def __init__(self) -> None:
        self.rows: dict[tuple, dict[str, Any]] = defaultdict(dict)

    def add(self, model: type, key: dict, **increments: Any) -> None:
        hour_start = key["bucket"]
        day_start = hour_start.replace(hour=0)
        key, values_of = dict(key), _key_values(model)
        for period, bucket in ((Period.HOUR, hour_start), (Period.DAY, day_start), (Period.ALL, ALL_TIME)):
            key["period"], key["bucket"] = period.value, bucket
            row = self.rows[(model, values_of(key))]
            for name, value in increments.items():
                row[name] = row.get(name, 0) + value

    def observe(self, metric: str, value: float, *, bucket: datetime, worker: str = "", model: str = "",
                doc_type: str = "", queue: str = "", label: str = "") -> None:
        self.add(HistogramRollup, dict(bucket=bucket, metric=metric, worker=worker, model=model[:100],
                                       doc_type=doc_type, queue=queue[:100], label=label,
                                       bin=h.bin_of(metric, value)),
                 count=1, total=float(value))

    def apply(self) -> None:
        """Add every increment to its row: one INSERT ... ON CONFLICT DO UPDATE SET col = col + n
        per table (and per UPSERT_BATCH rows), so a batch of any size costs a few statements.

        Tables and rows go in a fixed order so that two transactions adding to the same rows
        lock them in the same order and never wait on each other crosswise (no deadlock).
        """
        by_model: dict[type, list] = defaultdict(list)
        for (model, values), increments in self.rows.items():
            by_model[model].append((values, increments))
        for model in sorted(by_model, key=lambda m: m.__name__):
            rows = sorted(by_model[model], key=lambda row: _sortable(row[0]))
            for first in range(0, len(rows), UPSERT_BATCH):
                _upsert(model, rows[first:first + UPSERT_BATCH])

    def create_all(self, batch_size: int = 2000) -> int:
        """Insert every row (for a rebuild into empty tables)."""
        by_model: dict[type, list] = defaultdict(list)
        for (model, values), increments in self.rows.items():
            by_model[model].append(model(**dict(zip(model.KEY, values)), **increments))
        for model, objects in by_model.items():
            model.objects.bulk_create(objects, batch_size=batch_size)
        return sum(len(objects) for objects in by_model.values())


@functools.cache
def _key_values(model: type) -> Callable[[dict], tuple]:
    """The row key's values in model.KEY order, read by one C call (this runs a dozen times a step)."""
    return operator.itemgetter(*model.KEY)


def _sortable(values: tuple) -> tuple:
    return tuple(str(value) for value in values)


UPSERT_BATCH = 500  # rows per statement: well inside SQLite's limit on parameters


def _upsert(model: type, rows: list[tuple[tuple, dict]]) -> None:
    """INSERT the rows; where a row with the same key exists, add the increments to it instead.
    PostgreSQL and SQLite (3.24+) both speak this ON CONFLICT dialect.

    On PostgreSQL the rows go as one array per column (`SELECT * FROM unnest(...)`), so the
    statement's text is the same for any number of rows: the driver parses it once per process
    instead of splitting a new one of thousands of placeholders every batch (a fifth of the
    catch-up's CPU), and the server prepares it once per connection."""
    meta = model._meta
    counters = [f.name for f in meta.concrete_fields if f.name not in model.KEY and not f.primary_key]
    columns = [meta.get_field(name) for name in (*model.KEY, *counters)]
    values = [[field.get_db_prep_save(value, connection) for field, value in
               zip(columns, (*key, *(increments.get(name, 0) for name in counters)))]
              for key, increments in rows]
    if connection.vendor == "postgresql":
        sql, params = _upsert_sql(model, tuple(counters), "unnest"), [list(column) for column in zip(*values)]
    else:
        sql = _upsert_sql(model, tuple(counters), "values", len(rows))
        params = [value for row in values for value in row]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


@functools.lru_cache(maxsize=32)
def _upsert_sql(model: type, counters: tuple[str, ...], form: str, count: int = 0) -> str:
    """The upsert's statement: rows from `unnest` of typed arrays, or `count` VALUES tuples."""
    meta = model._meta
    columns = [meta.get_field(name) for name in (*model.KEY, *counters)]
    quote = connection.ops.quote_name
    table = quote(meta.db_table)
    if form == "unnest":
        rows = "SELECT * FROM unnest(" + ", ".join(f"%s::{field.db_type(connection)}[]" for field in columns) + ")"
    else:
        rows = "VALUES " + ", ".join(["(" + ", ".join(["%s"] * len(columns)) + ")"] * count)
    return (
        f"INSERT INTO {table} ({', '.join(quote(f.column) for f in columns)}) {rows} "
        f"ON CONFLICT ({', '.join(quote(meta.get_field(name).column) for name in model.KEY)}) DO UPDATE SET "
        + ", ".join(f"{quote(meta.get_field(name).column)} = {table}.{quote(meta.get_field(name).column)} "
                    f"+ EXCLUDED.{quote(meta.get_field(name).column)}" for name in counters)
    )


# --- What one event adds ----------------------------------------------------------------------


def add_step(acc: Accumulator, step: dict) -> None:
    """One step attempt: its usage, its model calls (OTel GenAI histograms) and its tool calls."""
    bucket = hour(step["finished_at"] or step["started_at"])
    worker, model = step["worker"], (step["model"] or "")[:100]
    doc_type = step_doc_type(worker, step["input"], step["output"])
    acc.add(StepRollup, dict(bucket=bucket, worker=worker, model=model,
                             prompt_version=(step["prompt_version"] or "")[:50], doc_type=doc_type,
                             outcome=step["status"], error_type=(step["error_type"] or "")[:100]),
            steps=1, llm_calls=step["llm_calls"], tool_calls=step["tool_calls"],
            input_tokens=step["input_tokens"], cached_tokens=step["cached_tokens"],
            output_tokens=step["output_tokens"], reasoning_tokens=step["reasoning_tokens"],
            cost_usd=Decimal(step["cost_usd"] or 0), latency_ms=step["latency_ms"])
    if not step["llm_calls"]:
        return  # no model, no agent: route and act do not dilute the tool-call figures
    labels = dict(bucket=bucket, worker=worker, model=model)
    acc.observe(h.AGENT_TOOL_CALLS, step["tool_calls"], **labels)
    answers = _answers(step)
    if answers:
        for input_tokens, output_tokens, latency_ms in answers:
            acc.observe(h.TOKEN_USAGE, input_tokens or 0, label="input", **labels)
            acc.observe(h.TOKEN_USAGE, output_tokens or 0, label="output", **labels)
            acc.observe(h.OPERATION_DURATION, (latency_ms or 0) / 1000, **labels)
    else:
        # No answer in the transcript (imported rows, or a call that failed): one observation for the
        # step. A failed call still took time (OTel records its duration) but used no tokens.
        acc.observe(h.OPERATION_DURATION, step["latency_ms"] / 1000, **labels)
        if step["input_tokens"] or step["output_tokens"]:
            acc.observe(h.TOKEN_USAGE, step["input_tokens"], label="input", **labels)
            acc.observe(h.TOKEN_USAGE, step["output_tokens"], label="output", **labels)


def _answers(step: dict) -> list:
    """Each model answer of a step as [input tokens, output tokens, latency ms]: picked out by
    PostgreSQL when the step was read by _step_rows ("answers"), else from its transcript."""
    if "answers" in step:
        return step["answers"] or []
    answers = []
    for entry in step["transcript"] or []:
        if isinstance(entry, dict) and entry.get("kind") == "response":
            usage = entry.get("usage") or {}
            answers.append([usage.get("input"), usage.get("output"), entry.get("latency_ms")])
    return answers


def add_task(acc: Accumulator, task: dict, *, outcome: str, at: datetime | None, human: bool = False,
             work_cost: Decimal = Decimal("0")) -> None:
    """A task reaching an outcome, with its totals at that moment."""
    bucket = hour(at)
    doc_type, queue = task["doc_type"] or "", (task["routed_to"] or "")[:100]
    tokens = task["input_tokens"] + task["output_tokens"]
    acc.add(TaskRollup, dict(bucket=bucket, doc_type=doc_type, queue=queue, outcome=outcome,
                             human=human and outcome == "completed"),
            tasks=1, tool_calls=task["tool_calls"], tokens=tokens, cost_usd=Decimal(task["cost_usd"] or 0),
            work_cost_usd=work_cost)
    if outcome == "discarded":
        return  # already observed, with the same totals, when it was dead-lettered
    labels = dict(bucket=bucket, doc_type=doc_type, queue=queue, label=outcome)
    acc.observe(h.TASK_TOOL_CALLS, task["tool_calls"], **labels)
    acc.observe(h.TASK_TOKENS, tokens, **labels)
    acc.observe(h.TASK_COST, float(task["cost_usd"] or 0), **labels)


def add_approval(acc: Accumulator, approval: dict) -> None:
    """A decided approval: the decision, the rejection reason, and how long it waited."""
    decided_at = approval["decided_at"] or approval["created_at"]
    wait = max((decided_at - approval["created_at"]).total_seconds(), 0.0)
    bucket = hour(decided_at)
    queue, doc_type = approval["queue_name"], approval["doc_type"] or ""
    acc.add(ApprovalRollup, dict(bucket=bucket, queue=queue, doc_type=doc_type, decision=approval["status"],
                                 reason=approval["reason"] or ""),
            approvals=1, wait_seconds=wait)
    acc.observe(h.APPROVAL_WAIT, wait, bucket=bucket, queue=queue, doc_type=doc_type, label=approval["status"])


def add_dead_letter(acc: Accumulator, letter: dict, totals: dict) -> None:
    """A dead letter made without a failing step: counted by error type, and as the task's
    dead_lettered outcome with the totals of the steps finished by then (`totals`, see _totals)."""
    bucket = hour(letter["created_at"])
    acc.add(HistogramRollup, dict(bucket=bucket, metric=DEAD_LETTERS_NO_STEP, worker=letter["worker"][:20], model="",
                                  doc_type=letter["doc_type"] or "", queue=(letter["queue"] or "")[:100],
                                  label=letter["error_type"][:40], bin=0),
            count=1, total=0.0)
    add_task(acc, _letter_values(letter, totals), outcome="dead_lettered", at=letter["created_at"],
             work_cost=totals["work"])


def _totals(steps: list[dict], until: datetime) -> dict:
    """A task's totals from its steps finished by `until` (the same rule live and in a rebuild: a
    task is dead-lettered without a step only when no worker holds it, so no step is under way)."""
    totals = _no_totals()
    for step in steps:
        if step["finished_at"] is None or step["finished_at"] > until:
            continue
        _add_step_totals(totals, step)
    return totals


# --- The live path ----------------------------------------------------------------------------

STEP_FIELDS = ("worker", "model", "prompt_version", "status", "error_type", "input", "output", "transcript",
               "llm_calls", "tool_calls", "input_tokens", "cached_tokens", "output_tokens", "reasoning_tokens",
               "cost_usd", "latency_ms", "started_at", "finished_at")
TASK_FIELDS = ("doc_type", "routed_to", "tool_calls", "input_tokens", "output_tokens", "cost_usd")
APPROVAL_FIELDS = ("status", "created_at", "decided_at", "task_id")
TOTAL_STEP_FIELDS = ("status", "finished_at", "tool_calls", "input_tokens", "output_tokens", "cost_usd")
LETTER_FIELDS = ("id", "task_id", "step_id", "worker", "error_type", "doc_type", "queue", "status", "created_at")


# On PostgreSQL, a step's model answers as add_step counts them, instead of its whole transcript:
# the transcript also holds the prompts (the document's text among them): decoding it was about half
# of the catch-up's reading (bench/README.md).
_ANSWERS_SQL = (
    "SELECT jsonb_agg(jsonb_build_array(answer -> 'usage' -> 'input', answer -> 'usage' -> 'output', "
    "answer -> 'latency_ms')) FROM jsonb_path_query({table}.transcript, '$[*] ? (@.kind == \"response\")') AS answer"
)


def _step_rows(steps: QuerySet) -> QuerySet:
    """The steps as add_step reads them (with their id and task)."""
    if connection.vendor != "postgresql":
        return steps.values("id", "task_id", *STEP_FIELDS)
    table = connection.ops.quote_name(steps.model._meta.db_table)
    answers = RawSQL(f"({_ANSWERS_SQL.format(table=table)})", [], output_field=JSONField())
    return steps.values("id", "task_id", *(name for name in STEP_FIELDS if name != "transcript"), answers=answers)


def _work_cost(task_id: int) -> Decimal:
    from orchestrator.models import Step

    return Step.objects.filter(task_id=task_id, status="succeeded").aggregate(s=Sum("cost_usd"))["s"] or Decimal("0")


def _had_human(task_ids: list[int]) -> set[int]:
    """The tasks a person stepped in on: decided an approval, or retried one from the dead-letter queue."""
    from orchestrator.models import DeadLetter
    from reviews.models import Approval

    return (set(Approval.objects.filter(task_id__in=task_ids, decided_by__isnull=False).values_list("task_id", flat=True))
            | set(DeadLetter.objects.filter(task_id__in=task_ids, status="retried").values_list("task_id", flat=True)))


def _approval_rows(approvals: QuerySet) -> QuerySet:
    """The approvals as add_approval reads them, with their queue's name, their task's document type
    and their rejection reason's code joined in: not their task's row, whose document text can
    run to megabytes."""
    return approvals.values(*APPROVAL_FIELDS, queue_name=F("queue__name"), doc_type=F("task__doc_type"),
                            reason=F("rejection_reason__code"))


def _guarded(what: str):
    """Counting must never break the work it counts: a failure is logged (a rebuild repairs it)."""

    def decorator(function):
        def wrapper(*args, **kwargs):
            try:
                with transaction.atomic():
                    return function(*args, **kwargs)
            except Exception:  # noqa: BLE001
                log.exception("Could not update the rollups for %s; `manage.py rebuild_rollups` repairs them", what)

        wrapper.__name__ = function.__name__
        wrapper.__doc__ = function.__doc__
        return wrapper

    return decorator


# --- Counting committed steps ------------------------------------------------------------------

CATCH_UP_BATCH = 2000
# Readers (/metrics, the charts) count at most this many batches before they read: a bounded wait.
_READER_CATCH_UP_BATCHES = 5
# Both catch-up and rebuild hold this (a PostgreSQL advisory lock; SQLite has one writer anyway).
ROLLUP_LOCK_KEY = 0x5354_4557  # "STEW"
LAST_WORKER = "act"  # a succeeded step of this worker completes its task (orchestrator.workers.PIPELINE)
_last_catch_up = 0.0


def rollups_catch_up(*, max_batches: int | None = None, wait: bool = False) -> int:
    """Count every step not counted yet (see the module docstring). Returns how many it counted.

    When another process is already catching up, a worker (wait=False) leaves the work to it and
    returns 0 at once; a reader (wait=True: /metrics, the charts) waits for that batch to commit
    and then counts what is left, so it reads everything committed before it asked.
    """
    counted = 0
    batches = 0
    while max_batches is None or batches < max_batches:
        batches += 1
        done = _catch_up_batch(wait)
        if done is None:
            break
        counted += done
        if done < CATCH_UP_BATCH:
            break
    return counted


def rollups_catch_up_for_reader() -> int:
    """Before /metrics or a chart reads the rollups: count the latest steps, waiting for a catch-up
    already under way, within a bounded number of batches."""
    return rollups_catch_up(max_batches=_READER_CATCH_UP_BATCHES, wait=True)


def rollups_catch_up_if_due() -> None:
    """Catch up when STEWARD_ROLLUP_INTERVAL_S have passed since this process last did (workers
    call it after each task). A failure is logged: counting must never break the work it counts."""
    global _last_catch_up
    if time.monotonic() - _last_catch_up < settings.STEWARD_ROLLUP_INTERVAL_S:
        return
    _last_catch_up = time.monotonic()
    try:
        rollups_catch_up()
    except Exception:  # noqa: BLE001
        log.exception("Could not count the latest steps in the rollups; the next catch-up will")


def _lock(wait: bool) -> bool:
    if connection.vendor != "postgresql":
        return True  # SQLite: the IMMEDIATE transaction is the only writer
    with connection.cursor() as cursor:
        if wait:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [ROLLUP_LOCK_KEY])
            return True
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [ROLLUP_LOCK_KEY])
        return cursor.fetchone()[0]


def _catch_up_batch(wait: bool) -> int | None:
    """Count up to CATCH_UP_BATCH uncounted steps in one transaction; None when locked or none left."""
    from orchestrator.models import Step

    with transaction.atomic():
        if not _lock(wait):
            return None
        steps = list(_step_rows(Step.objects.filter(counted=False).order_by("id"))
                     [:CATCH_UP_BATCH])
        if not steps:
            return None
        acc = Accumulator()
        for step in steps:
            add_step(acc, step)
        _add_step_outcomes(acc, steps)
        acc.apply()
        _mark_counted([step["id"] for step in steps])
        return len(steps)


def _mark_counted(step_ids: list[int]) -> None:
    from orchestrator.models import Step

    if connection.vendor == "postgresql":
        # One array, not a placeholder per step: the same statement for every batch (see _upsert).
        with connection.cursor() as cursor:
            cursor.execute(f"UPDATE {connection.ops.quote_name(Step._meta.db_table)} SET counted = true "
                           f"WHERE id = ANY(%s)", [step_ids])
    else:
        Step.objects.filter(pk__in=step_ids).update(counted=True)


def _add_step_outcomes(acc: Accumulator, steps: list[dict]) -> None:
    """What the batch's steps did to their tasks, counted as rollups_rebuild counts it:
    - a dead-lettered step: the task's dead_lettered outcome, with its totals up to that step;
    - a succeeded final step: the task's completed outcome, with its final totals;
    - a route step that needed nobody: its auto-approval."""
    from orchestrator.models import DeadLetter, Step, Task
    from reviews.models import Approval

    ending = [s for s in steps if s["status"] == "dead_lettered"
              or (s["status"] == "succeeded" and s["worker"] == LAST_WORKER)]
    dead = [s["id"] for s in ending if s["status"] == "dead_lettered"]
    auto = [s["task_id"] for s in steps if s["worker"] == "route" and s["status"] == "succeeded"
            and not (s["output"] or {}).get("requires_approval", True)]
    if ending:
        task_ids = {s["task_id"] for s in ending}
        tasks = {row["id"]: row for row in Task.objects.filter(pk__in=task_ids).values("id", "finished_at", *TASK_FIELDS)}
        history: dict[int, list] = defaultdict(list)
        for row in Step.objects.filter(task_id__in=task_ids).order_by("id").values("id", "task_id", *TOTAL_STEP_FIELDS):
            history[row["task_id"]].append(row)
        completed = [s["task_id"] for s in ending if s["status"] == "succeeded"]
        human = _had_human(completed) if completed else set()
        letters = _step_letters(DeadLetter.objects.filter(step_id__in=dead)) if dead else {}
        for step in ending:
            task = tasks[step["task_id"]]
            totals = _running_totals(history[step["task_id"]], until_id=step["id"])
            if step["status"] == "dead_lettered":
                letter = letters.get(step["id"])
                values = _letter_values(letter, totals) if letter else _task_values(task, totals)
                add_task(acc, values, outcome="dead_lettered", at=step["finished_at"], work_cost=totals["work"])
            else:
                add_task(acc, task, outcome="completed", at=task["finished_at"], human=task["id"] in human,
                         work_cost=totals["work"])
    if auto:
        for approval in _approval_rows(Approval.objects.filter(task_id__in=auto, status="auto_approved")):
            add_approval(acc, approval)


def _running_totals(steps: list[dict], *, until_id: int) -> dict:
    """A task's totals from its steps up to and including `until_id`, in id order (as a rebuild walks them)."""
    totals = _no_totals()
    for step in steps:
        if step["id"] > until_id:
            break
        _add_step_totals(totals, step)
    return totals


@_guarded("an approval")
def record_approval(approval_id: int) -> None:
    """Count a decided (or expired) approval, and the task's rejection. Called inside the deciding
    transaction, by approval_decide and by the expiry of approvals."""
    from orchestrator.models import Task
    from reviews.models import Approval

    approval = _approval_rows(Approval.objects.filter(pk=approval_id)).get()
    if approval["status"] == "pending":
        return
    acc = Accumulator()
    add_approval(acc, approval)
    if approval["status"] in ("rejected", "expired"):  # either way the task ends rejected
        task = Task.objects.filter(pk=approval["task_id"]).values(*TASK_FIELDS).get()
        add_task(acc, task, outcome="rejected", at=approval["decided_at"], work_cost=_work_cost(approval["task_id"]))
    acc.apply()


@_guarded("a dead letter")
def record_dead_letter(dead_letter_id: int) -> None:
    """Count a dead letter made without a failing step (the sweeper's Orphaned ones). Called right
    after dead_letter_create, in its transaction. A letter with a step is counted with its step
    (rollups_catch_up)."""
    from orchestrator.models import DeadLetter, Step

    letter = DeadLetter.objects.filter(pk=dead_letter_id, step__isnull=True, worker="").values(*LETTER_FIELDS).first()
    if letter is None:
        return
    steps = list(Step.objects.filter(task_id=letter["task_id"]).values(*TOTAL_STEP_FIELDS))
    acc = Accumulator()
    add_dead_letter(acc, letter, _totals(steps, letter["created_at"]))
    acc.apply()


@_guarded("retried dead letters")
def record_retries(dead_letter_ids: list[int]) -> None:
    """Withdraw the dead_lettered outcomes of letters an operator just sent back (retry,
    edit-and-retry, bulk retry): their tasks are in the pipeline again, and are counted again where
    they end. Called inside the retrying transaction, after the letters were marked retried.

    Steps: read the letters and their tasks' steps (two statements for any number of letters);
    for each letter, the outcome it counted: a failing step's (its hour, the totals up to it) or
    the sweeper's without a step (its hour, the totals of the steps finished by then), with the
    letter's doc type and queue; add each again under RETRIED.
    """
    from orchestrator.models import DeadLetter, Step

    letters = list(DeadLetter.objects.filter(pk__in=dead_letter_ids, status="retried").values(*LETTER_FIELDS))
    if not letters:
        return
    history: dict[int, list] = defaultdict(list)
    for row in (Step.objects.filter(task_id__in={letter["task_id"] for letter in letters}).order_by("id")
                .values("id", "task_id", *TOTAL_STEP_FIELDS)):
        history[row["task_id"]].append(row)
    acc = Accumulator()
    for letter in letters:
        steps = history[letter["task_id"]]
        if letter["step_id"] is None:
            if letter["worker"]:
                continue  # not the sweeper's: no outcome was counted for it
            totals, at = _totals(steps, letter["created_at"]), letter["created_at"]
        else:
            step = next((s for s in steps if s["id"] == letter["step_id"]), None)
            if step is None or step["status"] != "dead_lettered":
                continue  # its step did not dead-letter the task: no outcome was counted for it
            totals, at = _running_totals(steps, until_id=step["id"]), step["finished_at"]
        add_task(acc, _letter_values(letter, totals), outcome=RETRIED, at=at, work_cost=totals["work"])
    acc.apply()


@_guarded("a discard")
def record_discard(task_id: int) -> None:
    """Count a task discarded by an operator (discard, or requeue as a new task), with its final
    totals. Called inside the discarding transaction, after the task's status was set."""
    from orchestrator.models import Task

    task = Task.objects.filter(pk=task_id, status="discarded").values("finished_at", *TASK_FIELDS).first()
    if task is None:
        return  # the task was not dead-lettered, so it was not discarded
    acc = Accumulator()
    add_task(acc, task, outcome="discarded", at=task["finished_at"], work_cost=_work_cost(task_id))
    acc.apply()


# --- Rebuild ----------------------------------------------------------------------------------


def rollups_rebuild(*, chunk_size: int = 5000) -> dict[str, int]:
    """Recompute every rollup from steps, tasks and approvals (after an upgrade, or to repair).

    Steps: hold the rollup lock (no catch-up runs meanwhile); in one transaction that reads a
    single snapshot (REPEATABLE READ on PostgreSQL; SQLite's write transaction is one), mark every
    step it sees counted; read the tasks' dimensions and totals; walk the steps in id order keeping
    each task's running totals (a dead-lettered step is that task's dead-letter outcome, with the
    totals so far); add each completed or discarded task's outcome and every decided approval (and
    rejection) with the task's own totals; add each dead letter made without a step (with the
    totals of the steps finished by then); replace the rollup tables' contents. Steps committed
    after the snapshot stay uncounted, for the next catch-up. A clash with a concurrent decision
    (PostgreSQL's serialization failure) starts over, at most three times.
    """
    for attempt in range(3):
        try:
            with _rollup_lock():
                return _rebuild(chunk_size)
        except OperationalError:
            if attempt == 2:
                raise
            log.warning("Rollup rebuild clashed with a concurrent change; starting over")
    raise AssertionError("unreachable")


class _rollup_lock:
    """The catch-up's lock, held for a whole rebuild (a session-level advisory lock on PostgreSQL)."""

    def __enter__(self):
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_lock(%s)", [ROLLUP_LOCK_KEY])
        return self

    def __exit__(self, *exc_info):
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [ROLLUP_LOCK_KEY])
        return False


def _rebuild(chunk_size: int) -> dict[str, int]:
    from orchestrator.models import Step

    # Only a transaction of our own can choose its isolation (a caller's is what it is).
    own_snapshot = connection.vendor == "postgresql" and not connection.in_atomic_block
    with transaction.atomic():
        if own_snapshot:
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        Step.objects.filter(counted=False).update(counted=True)
        return _rebuild_from_snapshot(chunk_size)


def _rebuild_from_snapshot(chunk_size: int) -> dict[str, int]:
    from orchestrator.models import DeadLetter, Step, Task
    from reviews.models import Approval

    tasks: dict[int, dict] = {
        row["id"]: row for row in Task.objects.values("id", "status", "finished_at", *TASK_FIELDS)
        .iterator(chunk_size=chunk_size)
    }
    human = set(Approval.objects.filter(decided_by__isnull=False).values_list("task_id", flat=True))
    human |= set(DeadLetter.objects.filter(status="retried").values_list("task_id", flat=True))
    letters = list(DeadLetter.objects.filter(step__isnull=True, worker="").order_by("id").values(*LETTER_FIELDS))
    step_letters = _step_letters(DeadLetter.objects.filter(step__isnull=False))
    kept: dict[int, list] = {letter["task_id"]: [] for letter in letters}  # the steps of those letters' tasks
    running: dict[int, dict] = {}
    acc = Accumulator()
    steps = 0
    for step in _step_rows(Step.objects.order_by("id")).iterator(chunk_size=chunk_size):
        steps += 1
        add_step(acc, step)
        if step["task_id"] in kept:
            kept[step["task_id"]].append({name: step[name] for name in TOTAL_STEP_FIELDS})
        totals = running.setdefault(step["task_id"], _no_totals())
        _add_step_totals(totals, step)
        if step["status"] == "dead_lettered":
            letter = step_letters.get(step["id"])
            values = _letter_values(letter, totals) if letter else _task_values(tasks[step["task_id"]], totals)
            add_task(acc, values, outcome="dead_lettered", at=step["finished_at"], work_cost=totals["work"])
            if letter and letter["status"] == "retried":
                add_task(acc, values, outcome=RETRIED, at=step["finished_at"], work_cost=totals["work"])
    for letter in letters:
        totals = _totals(kept[letter["task_id"]], letter["created_at"])
        add_dead_letter(acc, letter, totals)
        if letter["status"] == "retried":
            add_task(acc, _letter_values(letter, totals), outcome=RETRIED, at=letter["created_at"],
                     work_cost=totals["work"])
    for task_id, task in tasks.items():
        if task["status"] in ("completed", "discarded"):
            # A finished task's own totals are final (the same the live path read from it).
            work = (running.get(task_id) or _no_totals())["work"]
            add_task(acc, task, outcome=task["status"], at=task["finished_at"], human=task_id in human,
                     work_cost=work)
    approvals = 0
    for approval in _approval_rows(Approval.objects.exclude(status="pending")).iterator(chunk_size=chunk_size):
        approvals += 1
        add_approval(acc, approval)
        if approval["status"] in ("rejected", "expired"):
            work = (running.get(approval["task_id"]) or _no_totals())["work"]
            add_task(acc, tasks[approval["task_id"]], outcome="rejected", at=approval["decided_at"], work_cost=work)
    for model in ROLLUPS:
        model.objects.all().delete()
    rows = acc.create_all()
    from .loops import clear_cache

    clear_cache()
    return {"steps": steps, "tasks": len(tasks), "approvals": approvals, "rollup_rows": rows}


def _no_totals() -> dict:
    return {"tool_calls": 0, "input_tokens": 0, "output_tokens": 0, "cost_usd": Decimal("0"), "work": Decimal("0")}


def _add_step_totals(totals: dict, step: dict) -> None:
    """Add one step attempt to a task's running totals (`work`: what its succeeded steps cost)."""
    for name in ("tool_calls", "input_tokens", "output_tokens"):
        totals[name] += step[name]
    totals["cost_usd"] += Decimal(step["cost_usd"] or 0)
    if step["status"] == "succeeded":
        totals["work"] += Decimal(step["cost_usd"] or 0)


def _task_values(task: dict, totals: dict) -> dict:
    return {"doc_type": task["doc_type"], "routed_to": task["routed_to"], "tool_calls": totals["tool_calls"],
            "input_tokens": totals["input_tokens"], "output_tokens": totals["output_tokens"],
            "cost_usd": totals["cost_usd"]}


def _letter_values(letter: dict, totals: dict) -> dict:
    """A dead-lettered task's values with its letter's own copy of doc type and queue (as they
    were then: a retry may classify or route the task later), so that the outcome and its
    withdrawal (RETRIED) fall in the same row whenever each is counted."""
    return _task_values({"doc_type": letter["doc_type"], "routed_to": letter["queue"]}, totals)


def _step_letters(letters: QuerySet) -> dict[int, dict]:
    """The letters made by failing steps, by step id: their doc type, queue and status."""
    return {row["step_id"]: row for row in letters.values("step_id", "doc_type", "queue", "status")}


def rollup_snapshot() -> dict[str, set]:
    """Every rollup row as comparable tuples, every step counted (for tests and for checking a rebuild)."""
    rollups_catch_up(wait=True)
    snapshot: dict[str, set] = {}
    for model in ROLLUPS:
        fields = [f.name for f in model._meta.fields if f.name != "id"]
        snapshot[model.__name__] = {
            tuple(round(v, 6) if isinstance(v, float) else v for v in row)
            for row in model.objects.values_list(*fields)
        }
    return snapshot

