"""The charts page's figures, read from the rollups only (never the steps table).

`chart_filters` turns the query string into a range and filters; each `chart_*` function returns
a Chart: the SVG, and the same numbers as columns and rows for the data table and the CSV.
The last 24 hours (and custom ranges up to 2 days) are shown hour by hour from the hourly rollups;
longer ranges day by day (UTC) from the daily ones, so a chart reads at most a few hundred rows
per series however many steps there are.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone as dt_timezone
from decimal import Decimal
from typing import Callable

from django.db.models import QuerySet, Sum
from django.utils import timezone
from django.utils.safestring import SafeString

from . import histograms as h
from . import svg
from .models import ApprovalRollup, HistogramRollup, Period, StepRollup, TaskRollup
from .rollups import DEAD_LETTERS_NO_STEP, LOOP_ERROR_TYPES, RETRIED

RANGES = {"24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30)}
MAX_CUSTOM_DAYS = 366
# Custom ranges start no earlier than this (nothing is recorded before it) and end no later than
# tomorrow (UTC): the dates stay far from datetime's limits, so no range can overflow.
FIRST_DATE = date(1970, 1, 1)


class RangeRefused(ValueError):
    """A custom range that parses but cannot be shown; the message says why, for the person."""


@dataclass
class Filters:
    range: str
    start: datetime
    end: datetime
    period: timedelta
    doc_type: str = ""
    worker: str = ""
    queue: str = ""
    errors: list[str] = field(default_factory=list)
    start_date: str = ""
    end_date: str = ""

    def steps(self) -> QuerySet:
        qs = StepRollup.objects.filter(period=self.granularity, bucket__gte=self.start, bucket__lt=self.end)
        if self.doc_type:
            qs = qs.filter(doc_type=self.doc_type)
        if self.worker:
            qs = qs.filter(worker=self.worker)
        return qs

    def tasks(self) -> QuerySet:
        qs = TaskRollup.objects.filter(period=self.granularity, bucket__gte=self.start, bucket__lt=self.end)
        if self.doc_type:
            qs = qs.filter(doc_type=self.doc_type)
        if self.queue:
            qs = qs.filter(queue=self.queue)
        return qs

    def approvals(self) -> QuerySet:
        qs = ApprovalRollup.objects.filter(period=self.granularity, bucket__gte=self.start, bucket__lt=self.end)
        if self.doc_type:
            qs = qs.filter(doc_type=self.doc_type)
        if self.queue:
            qs = qs.filter(queue=self.queue)
        return qs

    def histogram(self, metric: str) -> QuerySet:
        qs = HistogramRollup.objects.filter(metric=metric, period=self.granularity, bucket__gte=self.start,
                                            bucket__lt=self.end)
        if metric in (h.TASK_TOOL_CALLS, h.TASK_TOKENS, h.TASK_COST, h.APPROVAL_WAIT):
            if self.doc_type:
                qs = qs.filter(doc_type=self.doc_type)
            if self.queue:
                qs = qs.filter(queue=self.queue)
        elif self.worker:
            qs = qs.filter(worker=self.worker)
        return qs

    @property
    def granularity(self) -> str:
        """Day rows for day periods (the range then starts and ends at midnight UTC), else hours."""
        return Period.DAY if self.period >= timedelta(days=1) else Period.HOUR

    @property
    def period_name(self) -> str:
        hours = int(self.period.total_seconds() // 3600)
        return "1 day" if hours == 24 else ("1 hour" if hours == 1 else f"{hours} hours")

    def periods(self) -> list[datetime]:
        count = math.ceil((self.end - self.start) / self.period)
        return [self.start + i * self.period for i in range(count)]

    def period_of(self, bucket: datetime) -> int:
        return int((bucket - self.start) / self.period)

    def period_label(self, start: datetime) -> str:
        local = timezone.localtime(start)
        if self.period >= timedelta(days=1):
            return local.strftime("%b %d")
        if self.end - self.start <= timedelta(days=2):
            return local.strftime("%H:%M")
        return local.strftime("%b %d %H:%M")


def chart_filters(params, now: datetime | None = None) -> Filters:
    """The range (24h, 7d, 30d or custom from/to dates, UTC) and the filters, from a query string."""
    now = now or timezone.now()
    end = now.astimezone(dt_timezone.utc).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    key = params.get("range", "24h")
    errors: list[str] = []
    start_date = params.get("from", "") or ""
    end_date = params.get("to", "") or ""
    if key == "custom":
        try:
            first = date.fromisoformat(start_date)
            last = date.fromisoformat(end_date)
            latest = now.astimezone(dt_timezone.utc).date() + timedelta(days=1)
            if not FIRST_DATE <= first <= latest or not FIRST_DATE <= last <= latest:
                raise RangeRefused(f"Choose dates between {FIRST_DATE} and {latest}.")
            if last < first:
                raise RangeRefused("The end date is before the start date.")
            if (last - first).days + 1 > MAX_CUSTOM_DAYS:
                raise RangeRefused(f"Choose at most {MAX_CUSTOM_DAYS} days.")
            start = datetime.combine(first, time.min, tzinfo=dt_timezone.utc)
            end = datetime.combine(last + timedelta(days=1), time.min, tzinfo=dt_timezone.utc)
        except RangeRefused as exc:
            errors.append(str(exc))
            key = "24h"
        except ValueError:
            errors.append("Give both dates as YYYY-MM-DD.")
            key = "24h"
    if key not in RANGES and key != "custom":
        # A hand-edited or outdated link: said, like a refused custom range, not silently replaced.
        errors.append(f"There is no range {key[:20]!r}: choose 24h, 7d, 30d or custom dates.")
        key = "24h"
    if key == "24h":
        start = end - RANGES[key]
    elif key in RANGES:
        # Whole days (today included): these ranges read the daily rollups.
        end = end.replace(hour=0) + timedelta(days=1) if end.hour else end
        start = end - RANGES[key]
    span = end - start
    period = timedelta(hours=1) if span <= timedelta(days=2) else timedelta(days=1)
    return Filters(range=key, start=start, end=end, period=period, doc_type=params.get("doc_type", "")[:20],
                   worker=params.get("worker", "")[:20], queue=params.get("queue", "")[:100], errors=errors,
                   start_date=start_date[:10], end_date=end_date[:10])


@dataclass
class Chart:
    slug: str
    title: str
    description: str
    columns: list[str]
    rows: list[list]
    svg: SafeString
    applies: str = ""  # which filters do not apply, said in words
    note: str = ""


def money(value) -> str:
    value = float(value or 0)
    return f"${value:,.4f}" if 0 < abs(value) < 1 else f"${value:,.2f}"


def percent(value) -> str:
    return "–" if value is None else f"{value:.0f}%"


def _share(part: float, whole: float) -> float | None:
    return round(100 * part / whole, 1) if whole else None


# --- The charts -------------------------------------------------------------------------------


def chart_completion(f: Filters) -> Chart:
    periods = f.periods()
    totals = [[0, 0, 0] for _ in periods]  # outcomes, completed without a person, completed with one
    # Each task once, at its latest outcome (rollups.py): RETRIED rows withdraw the dead_lettered
    # outcomes of tasks an operator sent back; "discarded" closes a task already counted as dead_lettered.
    for row in f.tasks().exclude(outcome="discarded").values("bucket", "outcome", "human").annotate(n=Sum("tasks")):
        i = f.period_of(row["bucket"])
        if not 0 <= i < len(periods):
            continue
        totals[i][0] += -row["n"] if row["outcome"] == RETRIED else row["n"]
        if row["outcome"] == "completed":
            totals[i][2 if row["human"] else 1] += row["n"]
    labels = [f.period_label(p) for p in periods]
    without = [_share(t[1], t[0]) for t in totals]
    completed = [_share(t[1] + t[2], t[0]) for t in totals]
    rows = [[p.isoformat(), t[0], t[1], t[2], _share(t[1], t[0]), _share(t[1] + t[2], t[0])]
            for p, t in zip(periods, totals) if t[0]]
    return Chart(
        "completion", "Completion rate, with and without human intervention",
        "Share of tasks reaching an outcome (completed, rejected or dead-lettered) that completed: in "
        "all, and without any person stepping in (no approval decided by a person, no retry from the "
        "dead-letter queue). Each task counts once, at its latest outcome: a dead-lettered task sent "
        "back by an operator is counted again where it ends, not once per dead letter.",
        ["period_start", "outcomes", "completed_without_human", "completed_with_human",
         "percent_completed_without_human", "percent_completed"],
        rows,
        svg.lines("chart-completion", "Completion rate", labels,
                  [("completed, no person", without), ("completed in all", completed)], y_max=100, fmt=percent),
        applies="Not filtered by worker.")


def chart_rejections(f: Filters) -> Chart:
    from reviews.models import RejectionReason

    labels = dict(RejectionReason.objects.values_list("code", "label"))
    data = list(f.approvals().filter(decision="rejected").values("reason").annotate(n=Sum("approvals"))
                .order_by("-n", "reason"))
    total = sum(r["n"] for r in data)
    rows = [[r["reason"], labels.get(r["reason"], r["reason"] or "(none)"), r["n"], _share(r["n"], total)]
            for r in data]
    return Chart("rejections", "Rejection reasons",
                 "Approvals rejected by reviewers in this range, by the reason they gave.",
                 ["reason", "label", "rejections", "percent"], rows,
                 svg.bars("chart-rejections", "Rejection reasons", [r[1] for r in rows], [r[2] for r in rows]),
                 applies="Not filtered by worker.")


def chart_spend(f: Filters, by: str) -> Chart:
    names = {"model": "model", "worker": "worker", "doc_type": "document type"}
    data = list(f.steps().values(by).annotate(
        cost=Sum("cost_usd"), input=Sum("input_tokens"), cached=Sum("cached_tokens"), output=Sum("output_tokens"),
        reasoning=Sum("reasoning_tokens"), steps=Sum("steps")).order_by("-cost", by))
    rows = [[r[by] or "(none)", r["steps"], r["input"], r["cached"], r["output"], r["reasoning"],
             r["input"] + r["output"], float(r["cost"] or 0)] for r in data]
    slug = f"spend-{by.replace('_', '-')}"
    return Chart(slug, f"Token spend and cost by {names[by]}",
                 f"Model cost and tokens of every step attempt (failed ones too), by {names[by]}.",
                 [by, "steps", "input_tokens", "cached_tokens", "output_tokens", "reasoning_tokens", "tokens",
                  "cost_usd"], rows,
                 svg.bars(f"chart-{slug}", f"Cost by {names[by]}", [r[0] for r in rows], [r[7] for r in rows], money),
                 applies="Not filtered by queue (steps run before routing).")


def chart_tool_calls(f: Filters) -> Chart:
    from orchestrator.pipeline import current_budget

    from .loops import tool_call_ceiling

    # Each task once, at its latest outcome: RETRIED observations withdraw those of tasks sent back.
    counts: dict[int, int] = {}
    for row in f.histogram(h.TASK_TOOL_CALLS).values("bin", "label").annotate(n=Sum("count")):
        counts[row["bin"]] = counts.get(row["bin"], 0) + (-row["n"] if row["label"] == RETRIED else row["n"])
    counts = {index: n for index, n in counts.items() if n}
    bounds = h.BOUNDS[h.TASK_TOOL_CALLS]
    ceiling = tool_call_ceiling("verify")
    budget = current_budget()
    # The axis reaches the highest observation and both limits, so the lines fall on it.
    reach = [max(counts) if counts else 0, bounds.index(6)]
    reach += [h.bin_of(h.TASK_TOOL_CALLS, limit) for limit in
              ([ceiling.limit] if ceiling else []) + ([budget.max_tool_calls] if budget else [])]
    bins = list(range(0, min(max(reach), len(bounds)) + 1))
    labels = [h.bin_label(h.TASK_TOOL_CALLS, i) for i in bins]
    values = [counts.get(i, 0) for i in bins]
    markers, notes = [], []
    if ceiling is not None:
        markers.append((_position(ceiling.limit, bins), f"loop ceiling {ceiling.limit}"))
        notes.append(f"Loop ceiling: {ceiling.limit} tool calls per verify step (recent p95 {ceiling.p95:g} "
                     f"from {ceiling.samples} steps).")
    else:
        notes.append("No p95 loop ceiling yet (too few recent verify steps); repeated identical calls still stop a task.")
    if budget is not None:
        markers.append((_position(budget.max_tool_calls, bins), f"budget {budget.max_tool_calls}"))
        notes.append(f"Budget: at most {budget.max_tool_calls} tool calls per task.")
    loops = f.steps().filter(outcome="dead_lettered", error_type__in=LOOP_ERROR_TYPES).aggregate(n=Sum("steps"))["n"] or 0
    loops += _stepless_letters(f).filter(label__in=LOOP_ERROR_TYPES).aggregate(n=Sum("count"))["n"] or 0
    notes.append(f"Tasks stopped as loops in this range: {loops} (again after a retry: each time).")
    rows = [[label, value] for label, value in zip(labels, values)]
    return Chart("tool-calls", "Tool calls per task",
                 "How many tool calls each task took, at its latest outcome (completed, rejected or "
                 "dead-lettered; a task sent back from the dead-letter queue counts once, where it ends). "
                 "A tail to the right is a loop.",
                 ["tool_calls", "tasks"], rows,
                 svg.columns("chart-tool-calls", "Tool calls per task", labels, values, markers=markers,
                             x_title="tool calls per task"),
                 applies="Not filtered by worker.", note=" ".join(notes))


def _position(limit: float, bins: list[int]) -> float:
    """Where a limit falls on the bin axis (a fraction of bins; past the last bin: its right edge)."""
    bounds = h.BOUNDS[h.TASK_TOOL_CALLS]
    index = h.bin_of(h.TASK_TOOL_CALLS, limit)
    if index > bins[-1]:
        return len(bins)
    return index + (0.5 if index < len(bounds) and bounds[index] == limit else 0)


def _stepless_letters(f: Filters) -> QuerySet:
    """The counter rows of dead letters made without a failing step (the sweeper's Orphaned)."""
    qs = HistogramRollup.objects.filter(metric=DEAD_LETTERS_NO_STEP, period=f.granularity, bucket__gte=f.start,
                                        bucket__lt=f.end)
    if f.doc_type:
        qs = qs.filter(doc_type=f.doc_type)
    if f.worker:
        qs = qs.filter(worker=f.worker)
    return qs


def chart_dead_letters(f: Filters) -> Chart:
    counts: dict[tuple, int] = {}
    for r in f.steps().filter(outcome="dead_lettered").values("error_type", "worker").annotate(n=Sum("steps")):
        counts[(r["error_type"], r["worker"])] = counts.get((r["error_type"], r["worker"]), 0) + r["n"]
    for r in _stepless_letters(f).values("label", "worker").annotate(n=Sum("count")):
        counts[(r["label"], r["worker"])] = counts.get((r["label"], r["worker"]), 0) + r["n"]
    data = [{"error_type": k[0], "worker": k[1], "n": n}
            for k, n in sorted(counts.items(), key=lambda item: (-item[1], item[0][0], item[0][1]))]
    by_type: dict[str, int] = {}
    for r in data:
        by_type[r["error_type"] or "(none)"] = by_type.get(r["error_type"] or "(none)", 0) + r["n"]
    rows = [[r["error_type"], r["worker"], r["n"], "yes" if r["error_type"] in LOOP_ERROR_TYPES else "no"] for r in data]
    order = sorted(by_type, key=lambda k: (-by_type[k], k))
    return Chart("dead-letters", "Dead letters by error type",
                 "Every time a task was sent to the dead-letter queue (again after a retry too), by error "
                 "type and the failing step's worker (loops "
                 "included: LoopDetected, ToolLoop, BudgetExceeded; Orphaned: lost by workers too often, "
                 "dead-lettered by the sweeper with no failing step, so no worker).",
                 ["error_type", "worker", "dead_letters", "loop"], rows,
                 svg.bars("chart-dead-letters", "Dead letters by error type", order, [by_type[k] for k in order]),
                 applies="Not filtered by queue.")


def chart_approval_wait(f: Filters) -> Chart:
    periods = f.periods()
    sums = [[0, 0.0] for _ in periods]
    for row in f.approvals().exclude(decision="auto_approved").values("bucket").annotate(
            n=Sum("approvals"), wait=Sum("wait_seconds")):
        i = f.period_of(row["bucket"])
        if 0 <= i < len(periods):
            sums[i][0] += row["n"]
            sums[i][1] += row["wait"] or 0
    averages = [round(s[1] / s[0] / 60, 1) if s[0] else None for s in sums]
    counts = dict(f.histogram(h.APPROVAL_WAIT).exclude(label="auto_approved").values("bin")
                  .annotate(n=Sum("count")).values_list("bin", "n"))
    p50, p90 = h.quantile(h.APPROVAL_WAIT, counts, 0.5), h.quantile(h.APPROVAL_WAIT, counts, 0.9)
    note = ""
    if p50 is not None:
        note = f"Half were decided within {_duration(p50)}, nine in ten within {_duration(p90)}."
    rows = [[p.isoformat(), s[0], round(s[1] / s[0], 1) if s[0] else None] for p, s in zip(periods, sums) if s[0]]
    return Chart("approval-wait", "Approval wait",
                 "Average time from an approval's creation to a person's decision, per period "
                 "(auto-approvals left out).",
                 ["period_start", "decided", "average_wait_seconds"], rows,
                 svg.lines("chart-approval-wait", "Average approval wait (minutes)",
                           [f.period_label(p) for p in periods], [("average wait, minutes", averages)],
                           fmt=lambda v: f"{v:g} min"),
                 applies="Not filtered by worker.", note=note)


def _duration(seconds: float) -> str:
    if math.isinf(seconds):
        return "more than a week"
    if seconds < 3600:
        return f"{seconds / 60:g} minutes"
    if seconds < 86400:
        return f"{seconds / 3600:g} hours"
    return f"{seconds / 86400:g} days"


def chart_prompt_versions(f: Filters) -> Chart:
    data = list(f.steps().exclude(prompt_version="").values("worker", "prompt_version", "outcome").annotate(
        steps=Sum("steps"), tokens=Sum("input_tokens") + Sum("output_tokens"), cost=Sum("cost_usd"),
        latency=Sum("latency_ms"), tools=Sum("tool_calls")))
    versions: dict[tuple, dict] = {}
    for r in data:
        v = versions.setdefault((r["worker"], r["prompt_version"]),
                                {"steps": 0, "ok": 0, "tokens": 0, "cost": Decimal(0), "latency": 0, "tools": 0})
        v["steps"] += r["steps"]
        v["ok"] += r["steps"] if r["outcome"] == "succeeded" else 0
        v["tokens"] += r["tokens"] or 0
        v["cost"] += r["cost"] or 0
        v["latency"] += r["latency"] or 0
        v["tools"] += r["tools"] or 0
    rows = []
    for (worker, version), v in sorted(versions.items()):
        n = v["steps"]
        rows.append([worker, version, n, _share(v["ok"], n), round(v["tokens"] / n, 1), round(float(v["cost"]) / n, 6),
                     round(v["latency"] / n), round(v["tools"] / n, 2)])
    return Chart("prompt-versions", "Worker prompt versions compared",
                 "Each worker's prompt versions side by side: share of step attempts that succeeded, and "
                 "average tokens, cost, latency and tool calls per attempt. Did extract v3 improve?",
                 ["worker", "prompt_version", "steps", "percent_succeeded", "avg_tokens", "avg_cost_usd",
                  "avg_latency_ms", "avg_tool_calls"], rows,
                 svg.bars("chart-prompt-versions", "Succeeded attempts by prompt version",
                          [f"{r[0]} {r[1]}" for r in rows], [r[3] or 0 for r in rows], percent),
                 applies="Not filtered by queue.")


def chart_wasted(f: Filters) -> Chart:
    # Each cent once (rollups.py, "How task outcomes are counted"): failed attempts, and the
    # succeeded steps of tasks closed for good without a result (rejected, discarded). The work on
    # dead-lettered tasks is shown beside it, not added: it becomes wasted when the task is
    # discarded (and is counted there, when that happens), or is used when a retry completes it.
    failed = f.steps().exclude(outcome="succeeded").aggregate(c=Sum("cost_usd"))["c"] or Decimal(0)
    work = dict(f.tasks().filter(outcome__in=("rejected", "dead_lettered", "discarded", RETRIED)).values("outcome")
                .annotate(c=Sum("work_cost_usd")).values_list("outcome", "c"))
    everything = f.steps().aggregate(c=Sum("cost_usd"))["c"] or Decimal(0)
    parts = [("Failed step attempts", failed), ("Work on rejected tasks", work.get("rejected") or Decimal(0)),
             ("Work on discarded tasks", work.get("discarded") or Decimal(0))]
    # Only tasks still dead-lettered: RETRIED withdraws those an operator sent back (each task once).
    at_risk = (work.get("dead_lettered") or Decimal(0)) - (work.get(RETRIED) or Decimal(0))
    wasted = sum(c for _, c in parts)
    rows = [[name, float(c), _share(float(c), float(everything)), "yes"] for name, c in parts]
    rows.append(["Work on dead-lettered tasks", float(at_risk), _share(float(at_risk), float(everything)), "no"])
    rows.append(["All model spend", float(everything), 100.0 if everything else None, ""])
    return Chart("wasted", "Wasted spend",
                 "Model cost that produced nothing used: failed attempts (retried or not), and the succeeded "
                 "steps of tasks that were rejected or discarded (each counted once, when it happened). Work "
                 "on dead-lettered tasks is shown beside it but not added: it is wasted once the task is "
                 "discarded (then counted as such), and used if a retry completes the task.",
                 ["category", "cost_usd", "percent_of_all_spend", "in_wasted_total"], rows,
                 svg.bars("chart-wasted", "Wasted spend", [name for name, _ in parts] + ["Dead-lettered (at risk)"],
                          [float(c) for _, c in parts] + [float(at_risk)], money),
                 note=f"Wasted in this range: {money(wasted)} of {money(everything)} "
                      f"({percent(_share(float(wasted), float(everything)))}).",
                 applies="Failed attempts: not filtered by queue; task work: not filtered by worker.")


CHARTS: dict[str, Callable[[Filters], Chart]] = {
    "completion": chart_completion,
    "rejections": chart_rejections,
    "spend-model": lambda f: chart_spend(f, "model"),
    "spend-worker": lambda f: chart_spend(f, "worker"),
    "spend-doc-type": lambda f: chart_spend(f, "doc_type"),
    "tool-calls": chart_tool_calls,
    "dead-letters": chart_dead_letters,
    "approval-wait": chart_approval_wait,
    "prompt-versions": chart_prompt_versions,
    "wasted": chart_wasted,
}


def filter_choices() -> dict[str, list[str]]:
    """Workers, document types and queues that appear in the rollups (the all-time rows: few)."""
    from orchestrator.models import DocType
    from reviews.models import Queue

    from orchestrator.workers import PIPELINE

    workers = sorted(set(StepRollup.objects.filter(period=Period.ALL).values_list("worker", flat=True))
                     | set(PIPELINE))
    return {"workers": workers, "doc_types": [value for value, _ in DocType.choices],
            "queues": list(Queue.objects.order_by("name").values_list("name", flat=True))}

