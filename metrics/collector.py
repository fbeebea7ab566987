"""Steward's own Prometheus metrics, read from the database at scrape time.

Why a collector that reads the database, rather than counters in process memory: the figures are
made in Celery worker processes (often on other machines), but Prometheus scrapes the web
process. Every checkpoint already writes its figures into the rollup tables (metrics/rollups.py),
so the scrape reads the all-time rollup rows (a few hundred, whatever the history) plus a few
cheap live counts. Any web process gives the same answer, nothing is lost when a worker restarts,
and no push gateway or multiprocess directory is needed.

Names follow the OpenTelemetry GenAI semantic conventions as Prometheus writes them
(gen_ai_client_token_usage, gen_ai_client_operation_duration_seconds,
gen_ai_invoke_agent_tool_calls) and steward_* for the rest. Labels are low-cardinality only
(worker, model, doc_type, queue, outcome, reason...; never a task id).
"""
from __future__ import annotations

import logging
from collections import defaultdict
from typing import Iterable

from django.db.models import Count, Min, Sum
from django.utils import timezone
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from . import histograms as h
from .rollups import DEAD_LETTERS_NO_STEP, LOOP_ERROR_TYPES, RETRIED, rollups_catch_up_for_reader

log = logging.getLogger(__name__)

# name -> (type, help, labels); histograms: labels without "le".
FAMILIES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "gen_ai_client_token_usage": ("histogram", "Tokens used per model call (OpenTelemetry GenAI), by token type",
                                  ("gen_ai_operation_name", "gen_ai_request_model", "gen_ai_token_type", "worker")),
    "gen_ai_client_operation_duration_seconds": ("histogram", "Duration of model calls (OpenTelemetry GenAI)",
                                                 ("gen_ai_operation_name", "gen_ai_request_model", "worker")),
    "gen_ai_invoke_agent_tool_calls": ("histogram", "Tool calls per agent invocation (one worker step)",
                                       ("gen_ai_agent_name", "gen_ai_request_model")),
    "steward_steps": ("counter", "Worker step attempts by outcome", ("worker", "model", "outcome")),
    "steward_tokens": ("counter", "Tokens used by worker steps", ("worker", "model", "doc_type", "token_type")),
    "steward_cost_usd": ("counter", "Model cost of worker steps in US dollars", ("worker", "model", "doc_type")),
    "steward_tasks": ("gauge", "Tasks by status", ("status",)),
    "steward_task_outcomes": ("counter", "Tasks reaching an outcome, with or without human intervention (each "
                              "time: a task dead-lettered again after a retry counts again)",
                              ("doc_type", "queue", "outcome", "human_intervention")),
    "steward_task_tool_calls": ("histogram", "Tool calls per task, observed when it reaches an outcome",
                                ("doc_type", "queue", "outcome")),
    "steward_task_tokens": ("histogram", "Tokens per task, observed when it reaches an outcome",
                            ("doc_type", "queue", "outcome")),
    "steward_task_cost_usd": ("histogram", "Cost per task in US dollars, observed when it reaches an outcome",
                              ("doc_type", "queue", "outcome")),
    "steward_approvals": ("counter", "Approvals decided, by decision and rejection reason",
                          ("queue", "decision", "reason")),
    "steward_approval_wait_seconds": ("histogram", "Time from an approval's creation to its decision",
                                      ("queue", "decision")),
    "steward_approvals_pending": ("gauge", "Approvals waiting for a person", ("queue",)),
    "steward_approvals_overdue": ("gauge", "Pending approvals past their queue's SLA", ("queue",)),
    "steward_approval_oldest_pending_seconds": ("gauge", "Age of the oldest pending approval", ("queue",)),
    "steward_dead_letters": ("counter", "Tasks sent to the dead-letter queue, by the failing step's worker and "
                             "error type (worker empty when no step failed: the sweeper's Orphaned)",
                             ("worker", "error_type")),
    "steward_dead_letters_open": ("gauge", "Open dead letters waiting for an operator", ("worker", "error_type")),
    "steward_loops_stopped": ("counter", "Tasks stopped as suspected loops (loop detection, round bound, budget)",
                              ("worker", "error_type")),
    "steward_loop_tool_call_ceiling": ("gauge", "Loop detection's tool-call ceiling per step (from the recent p95)",
                                       ("worker",)),
    "steward_sweeper_last_run_timestamp_seconds": ("gauge", "When the sweeper last ran (Unix time); beat runs it "
                                                   "every STEWARD_SWEEP_INTERVAL_S", ()),
}
# Exposed histogram -> the rollup histogram it reads.
HISTOGRAMS = {
    "gen_ai_client_token_usage": h.TOKEN_USAGE,
    "gen_ai_client_operation_duration_seconds": h.OPERATION_DURATION,
    "gen_ai_invoke_agent_tool_calls": h.AGENT_TOOL_CALLS,
    "steward_task_tool_calls": h.TASK_TOOL_CALLS,
    "steward_task_tokens": h.TASK_TOKENS,
    "steward_task_cost_usd": h.TASK_COST,
    "steward_approval_wait_seconds": h.APPROVAL_WAIT,
}
LIVE_STATUSES = ("queued", "running", "awaiting_approval", "dead_lettered", "discarded")
LOOP_WORKERS = ("verify",)


def _family(name: str):
    kind, help_text, labels = FAMILIES[name]
    if kind == "counter":
        return CounterMetricFamily(name, help_text, labels=labels)
    if kind == "gauge":
        return GaugeMetricFamily(name, help_text, labels=labels)
    return HistogramMetricFamily(name, help_text, labels=labels)


class StewardCollector(Collector):
    def describe(self) -> Iterable:
        # Registration must not touch the database (it runs at import time, before migrations).
        return [_family(name) for name in FAMILIES]

    def collect(self) -> Iterable:
        try:
            families = list(self._collect())
        except Exception:  # noqa: BLE001 - a broken query must not take the request metrics down with it
            log.exception("Could not read Steward's metrics from the database")
            return []
        return families

    def _collect(self):
        from orchestrator.models import DeadLetter, SweepRun, Task, TaskStatus
        from reviews.models import Approval

        from .loops import tool_call_ceiling
        from .models import ApprovalRollup, HistogramRollup, Period, StepRollup, TaskRollup

        rollups_catch_up_for_reader()
        steps = list(StepRollup.objects.filter(period=Period.ALL).values(
            "worker", "model", "doc_type", "outcome", "error_type").annotate(
            n=Sum("steps"), input=Sum("input_tokens"), cached=Sum("cached_tokens"), output=Sum("output_tokens"),
            reasoning=Sum("reasoning_tokens"), cost=Sum("cost_usd")))
        by_outcome: dict[tuple, int] = defaultdict(int)
        tokens: dict[tuple, int] = defaultdict(int)
        cost: dict[tuple, float] = defaultdict(float)
        dead: dict[tuple, int] = defaultdict(int)
        loops: dict[tuple, int] = defaultdict(int)
        for row in steps:
            by_outcome[(row["worker"], row["model"], row["outcome"])] += row["n"]
            for kind in ("input", "cached", "output", "reasoning"):
                tokens[(row["worker"], row["model"], row["doc_type"], kind)] += row[kind] or 0
            cost[(row["worker"], row["model"], row["doc_type"])] += float(row["cost"] or 0)
            if row["outcome"] == "dead_lettered":
                dead[(row["worker"], row["error_type"])] += row["n"]
                if row["error_type"] in LOOP_ERROR_TYPES:
                    loops[(row["worker"], row["error_type"])] += row["n"]
        # Dead letters made without a failing step (the sweeper's Orphaned): their own counter rows.
        for row in HistogramRollup.objects.filter(period=Period.ALL, metric=DEAD_LETTERS_NO_STEP).values(
                "worker", "label").annotate(n=Sum("count")):
            dead[(row["worker"], row["label"])] += row["n"]
            if row["label"] in LOOP_ERROR_TYPES:
                loops[(row["worker"], row["label"])] += row["n"]
        yield _filled("steward_steps", by_outcome)
        yield _filled("steward_tokens", tokens)
        yield _filled("steward_cost_usd", cost)
        yield _filled("steward_dead_letters", dead)
        yield _filled("steward_loops_stopped", loops)

        # Tasks by status: the non-terminal ones (few, by index) counted live; the terminal
        # completed/rejected from the outcome counters, so the scrape never counts a big table.
        statuses = dict(Task.objects.filter(status__in=LIVE_STATUSES).values_list("status").annotate(n=Count("id")))
        # "discarded" closes a task already counted as dead_lettered (rollups.py): not a second outcome.
        # RETRIED withdraws a dead_lettered one for the charts; a counter keeps counting the event.
        outcomes = list(TaskRollup.objects.filter(period=Period.ALL).exclude(outcome__in=("discarded", RETRIED))
                        .values("doc_type", "queue", "outcome", "human").annotate(n=Sum("tasks")))
        for status in ("completed", "rejected"):
            statuses[status] = sum(r["n"] for r in outcomes if r["outcome"] == status)
        yield _filled("steward_tasks", {(status,): statuses.get(status, 0) for status in TaskStatus.values})
        yield _filled("steward_task_outcomes", {
            (r["doc_type"], r["queue"], r["outcome"], "true" if r["human"] else "false"): r["n"] for r in outcomes})

        approvals = ApprovalRollup.objects.filter(period=Period.ALL).values("queue", "decision", "reason").annotate(
            n=Sum("approvals"))
        yield _filled("steward_approvals", {(r["queue"], r["decision"], r["reason"]): r["n"] for r in approvals})

        now = timezone.now()
        pending = Approval.objects.filter(status="pending").values("queue__name").annotate(
            n=Count("id"), oldest=Min("created_at"))
        overdue = dict(Approval.objects.filter(status="pending", due_at__lt=now).values("queue__name").annotate(
            n=Count("id")).values_list("queue__name", "n"))
        pending = list(pending)
        yield _filled("steward_approvals_pending", {(r["queue__name"],): r["n"] for r in pending})
        yield _filled("steward_approvals_overdue", {(r["queue__name"],): overdue.get(r["queue__name"], 0)
                                                    for r in pending})
        yield _filled("steward_approval_oldest_pending_seconds", {
            (r["queue__name"],): max((now - r["oldest"]).total_seconds(), 0) for r in pending})

        open_letters = DeadLetter.objects.filter(status="open").values("worker", "error_type").annotate(n=Count("id"))
        yield _filled("steward_dead_letters_open", {(r["worker"], r["error_type"]): r["n"] for r in open_letters})

        ceilings = {}
        for worker in LOOP_WORKERS:
            ceiling = tool_call_ceiling(worker)
            if ceiling is not None:
                ceilings[(worker,)] = ceiling.limit
        yield _filled("steward_loop_tool_call_ceiling", ceilings)

        # The safety net's own pulse: with beat (or every worker) stopped, nothing recovers lost
        # work, and nothing else here would say so. No sample until it has run once.
        last_sweep = SweepRun.objects.order_by("-started_at").values_list("started_at", flat=True).first()
        yield _filled("steward_sweeper_last_run_timestamp_seconds",
                      {(): last_sweep.timestamp()} if last_sweep else {})

        rows = HistogramRollup.objects.filter(period=Period.ALL).values(
            "metric", "worker", "model", "doc_type", "queue", "label", "bin").annotate(n=Sum("count"), s=Sum("total"))
        grouped: dict[str, dict[tuple, dict]] = defaultdict(lambda: defaultdict(lambda: {"bins": {}, "sum": 0.0}))
        for row in rows:
            labels = _histogram_labels(row)
            if labels is None:
                continue
            series = grouped[row["metric"]][labels]
            series["bins"][row["bin"]] = series["bins"].get(row["bin"], 0) + row["n"]
            series["sum"] += row["s"] or 0.0
        for name, metric in HISTOGRAMS.items():
            family = _family(name)
            for labels, series in sorted(grouped.get(metric, {}).items()):
                family.add_metric(list(labels), _cumulative(metric, series["bins"]), series["sum"])
            yield family


def _histogram_labels(row: dict) -> tuple | None:
    metric = row["metric"]
    if metric == h.TOKEN_USAGE:
        return ("chat", row["model"], row["label"], row["worker"])
    if metric == h.OPERATION_DURATION:
        return ("chat", row["model"], row["worker"])
    if metric == h.AGENT_TOOL_CALLS:
        return (row["worker"], row["model"])
    if metric in (h.TASK_TOOL_CALLS, h.TASK_TOKENS, h.TASK_COST):
        if row["label"] == RETRIED:
            return None  # withdrawn for the charts; Prometheus keeps every observation
        return (row["doc_type"], row["queue"], row["label"])
    if metric == h.APPROVAL_WAIT:
        return (row["queue"], row["label"])
    return None


def _cumulative(metric: str, bins: dict[int, int]) -> list[tuple[str, float]]:
    bounds = h.BOUNDS[metric]
    buckets, seen = [], 0
    for index, bound in enumerate(bounds):
        seen += bins.get(index, 0)
        buckets.append((_le(bound), seen))
    buckets.append(("+Inf", seen + bins.get(len(bounds), 0)))
    return buckets


def _le(bound: float) -> str:
    return repr(float(bound))


def _filled(name: str, values: dict[tuple, float]):
    family = _family(name)
    for labels, value in sorted(values.items()):
        family.add_metric([str(v) for v in labels], value)
    return family


_registered = False


def register() -> None:
    """Add the collector to prometheus_client's default registry (the one django-prometheus exports)."""
    global _registered
    if _registered:
        return
    from prometheus_client import REGISTRY

    REGISTRY.register(StewardCollector())
    _registered = True
