"""Rollups: the figures the charts and /metrics read, kept up to date as the pipeline works.

Every row is one hour or one day (`period`, `bucket`, UTC) x a few low-cardinality dimensions,
holding counters and sums. Steps are added in batches after their checkpoints commit, decisions
and the sweeper's dead letters as they happen (metrics/rollups.py), with INSERT ... ON CONFLICT
DO UPDATE SET col = col + n on each row's unique key. Each
figure is also added to an all-time row (period "a", `bucket` = ALL_TIME) so that /metrics reads
a few hundred rows whatever the history, and charts read only the hours or days of the range they
show: neither ever reads the steps table. `manage.py rebuild_rollups` recomputes everything from the raw rows.

Dimension values are never NULL ("" means unknown), so the unique constraints hold.
"""
from __future__ import annotations

from datetime import datetime, timezone

from django.db import models

# The bucket of the all-time rows (counters for Prometheus, which must never go down).
ALL_TIME = datetime(1970, 1, 1, tzinfo=timezone.utc)


class Period(models.TextChoices):
    """Every figure is added three times: to its hour, its day (UTC) and the all-time row. Short
    ranges read hours; long ones read days, so a 30-day chart reads 30 rows per series, not 720."""

    HOUR = "h", "Hour"
    DAY = "d", "Day"
    ALL = "a", "All time"

# The dimensions of each rollup: one row per distinct combination (unique constraint).
STEP_KEY = ("period", "bucket", "worker", "model", "prompt_version", "doc_type", "outcome", "error_type")
TASK_KEY = ("period", "bucket", "doc_type", "queue", "outcome", "human")
APPROVAL_KEY = ("period", "bucket", "queue", "doc_type", "decision", "reason")
HISTOGRAM_KEY = ("period", "bucket", "metric", "worker", "model", "doc_type", "queue", "label", "bin")


class StepRollup(models.Model):
    """Step attempts per hour x worker x model x prompt version x doc type x outcome x error type."""

    period = models.CharField(max_length=1, choices=Period.choices, default=Period.HOUR)
    bucket = models.DateTimeField()
    worker = models.CharField(max_length=20)
    model = models.CharField(max_length=100, blank=True)
    prompt_version = models.CharField(max_length=50, blank=True)
    doc_type = models.CharField(max_length=20, blank=True)
    outcome = models.CharField(max_length=20)  # the step's status: succeeded, failed, dead_lettered
    error_type = models.CharField(max_length=100, blank=True)

    steps = models.PositiveBigIntegerField(default=0)
    llm_calls = models.PositiveBigIntegerField(default=0)
    tool_calls = models.PositiveBigIntegerField(default=0)
    input_tokens = models.PositiveBigIntegerField(default=0)
    cached_tokens = models.PositiveBigIntegerField(default=0)
    output_tokens = models.PositiveBigIntegerField(default=0)
    reasoning_tokens = models.PositiveBigIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=20, decimal_places=8, default=0)
    latency_ms = models.PositiveBigIntegerField(default=0)

    KEY = STEP_KEY

    class Meta:
        constraints = [models.UniqueConstraint(fields=list(STEP_KEY), name="steprollup_key")]


class TaskRollup(models.Model):
    """Tasks reaching an outcome per hour x doc type x review queue x outcome x human intervention.

    Outcomes are counted when they happen: completed, rejected, dead_lettered, and discarded (an
    operator closing a dead-lettered task for good; see the rules in metrics/rollups.py). "retried"
    rows withdraw the dead_lettered outcomes of tasks an operator sent back, so the charts count
    each task once, at its latest outcome, while every counter only goes up. `work_cost_usd` is the cost of
    the task's succeeded steps (its failed attempts are counted by StepRollup), so that wasted
    spend adds up without counting anything twice.
    """

    period = models.CharField(max_length=1, choices=Period.choices, default=Period.HOUR)
    bucket = models.DateTimeField()
    doc_type = models.CharField(max_length=20, blank=True)
    queue = models.CharField(max_length=100, blank=True)
    outcome = models.CharField(max_length=20)
    human = models.BooleanField(default=False)

    tasks = models.PositiveBigIntegerField(default=0)
    tool_calls = models.PositiveBigIntegerField(default=0)
    tokens = models.PositiveBigIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=20, decimal_places=8, default=0)
    work_cost_usd = models.DecimalField(max_digits=20, decimal_places=8, default=0)

    KEY = TASK_KEY

    class Meta:
        constraints = [models.UniqueConstraint(fields=list(TASK_KEY), name="taskrollup_key")]


class ApprovalRollup(models.Model):
    """Approvals decided per hour x queue x doc type x decision x rejection reason."""

    period = models.CharField(max_length=1, choices=Period.choices, default=Period.HOUR)
    bucket = models.DateTimeField()
    queue = models.CharField(max_length=100)
    doc_type = models.CharField(max_length=20, blank=True)
    decision = models.CharField(max_length=20)
    reason = models.CharField(max_length=50, blank=True)

    approvals = models.PositiveBigIntegerField(default=0)
    wait_seconds = models.FloatField(default=0)

    KEY = APPROVAL_KEY

    class Meta:
        constraints = [models.UniqueConstraint(fields=list(APPROVAL_KEY), name="approvalrollup_key")]


class HistogramRollup(models.Model):
    """Observations per hour x metric x labels x bin: a histogram with fixed bounds (histograms.py).

    `bin` i counts values in (BOUNDS[i-1], BOUNDS[i]]; bin len(BOUNDS) is the overflow (+Inf).
    `total` is the sum of the values, for averages and Prometheus' _sum.
    """

    period = models.CharField(max_length=1, choices=Period.choices, default=Period.HOUR)
    bucket = models.DateTimeField()
    metric = models.CharField(max_length=40)
    worker = models.CharField(max_length=20, blank=True)
    model = models.CharField(max_length=100, blank=True)
    doc_type = models.CharField(max_length=20, blank=True)
    queue = models.CharField(max_length=100, blank=True)
    label = models.CharField(max_length=40, blank=True)  # token type, outcome or decision
    bin = models.PositiveSmallIntegerField()

    count = models.PositiveBigIntegerField(default=0)
    total = models.FloatField(default=0)

    KEY = HISTOGRAM_KEY

    class Meta:
        constraints = [models.UniqueConstraint(fields=list(HISTOGRAM_KEY), name="histogramrollup_key")]
        indexes = [models.Index(fields=["metric", "period", "worker", "bucket"], name="histogram_metric_worker")]
