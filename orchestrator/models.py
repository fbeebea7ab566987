"""Tasks, their steps (durable checkpoints), dead letters, and the admin-tuned configuration."""
from __future__ import annotations

import re
import uuid
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Q
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast, Lower
from django.urls import reverse


class TaskStatus(models.TextChoices):
    """Where a task is. Legal transitions:

    queued -> running -> (awaiting_approval -> queued -> running) -> completed | rejected
    running -> queued (transient failure, retried after a backoff; or its lease ran out)
    any non-terminal -> dead_lettered -> queued (retry) | discarded

    Every non-terminal task has an owner: a queued message, a running worker holding a lease, a
    pending approval, or an open dead letter.
    """

    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    AWAITING_APPROVAL = "awaiting_approval", "Awaiting approval"
    COMPLETED = "completed", "Completed"
    REJECTED = "rejected", "Rejected"
    DEAD_LETTERED = "dead_lettered", "Dead-lettered"
    DISCARDED = "discarded", "Discarded"


TERMINAL_STATUSES = (TaskStatus.COMPLETED, TaskStatus.REJECTED, TaskStatus.DISCARDED)


class DocType(models.TextChoices):
    INVOICE = "Invoice"
    CONTRACT = "Contract"
    REPORT = "Report"
    EMAIL = "Email"
    OTHER = "Other"


class Source(models.TextChoices):
    UPLOAD = "upload", "Upload page"
    API = "api", "API"
    CLI = "cli", "Command line"
    DEMO = "demo", "Demo"


class UsageFields(models.Model):
    """Model and tool usage: per step attempt on Step, summed over all attempts on Task."""

    llm_calls = models.PositiveIntegerField(default=0)
    tool_calls = models.PositiveIntegerField(default=0)
    input_tokens = models.PositiveBigIntegerField(default=0)
    cached_tokens = models.PositiveBigIntegerField(default=0)
    output_tokens = models.PositiveBigIntegerField(default=0)
    reasoning_tokens = models.PositiveBigIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=14, decimal_places=8, default=Decimal("0"))

    class Meta:
        abstract = True


# Extracted fields that verify looks up (duplicates, a counterparty's history), as indexed expressions.
# Cast: compared as plain text (a JSON key's own "exact" would parse the value as JSON on SQLite).
INVOICE_NUMBER_KEY = Cast(KeyTextTransform("invoice_number", "fields"), models.TextField())
COUNTERPARTY_KEY = Lower(KeyTextTransform("counterparty", "fields"))


class Task(UsageFields):
    status = models.CharField(max_length=20, choices=TaskStatus.choices, default=TaskStatus.QUEUED)
    # The next worker to run ("" once finished). Steps before it have succeeded.
    current_step = models.CharField(max_length=20, default="classify", blank=True)

    content = models.TextField()
    content_sha256 = models.CharField(max_length=64, db_index=True)
    filename = models.CharField(max_length=255, blank=True)
    source = models.CharField(max_length=10, choices=Source.choices, default=Source.UPLOAD)
    external_ref = models.CharField(max_length=255, blank=True)
    submitted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    idempotency_key = models.CharField(max_length=255, blank=True)
    duplicate_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="duplicates"
    )

    # Results so far.
    doc_type = models.CharField(max_length=20, choices=DocType.choices, blank=True)
    confidence = models.FloatField(null=True, blank=True)
    fields = models.JSONField(default=dict, blank=True)
    findings = models.JSONField(default=list, blank=True)
    routed_to = models.CharField(max_length=100, blank=True)
    route_reason = models.TextField(blank=True)
    action_result = models.JSONField(default=dict, blank=True)

    # Usage totals (UsageFields) are over every step attempt: failed attempts cost money too.

    # Ownership, for the sweeper.
    lease_owner = models.CharField(max_length=200, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    not_before = models.DateTimeField(null=True, blank=True)
    enqueued_at = models.DateTimeField(null=True, blank=True)
    recoveries = models.PositiveIntegerField(default=0)
    # Failed attempts of the current step since it became current (or since an operator's retry).
    step_attempts = models.PositiveIntegerField(default=0)

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        # Lists page newest first by id (keyset pagination); ids grow with creation time.
        ordering = ["-id"]
        indexes = [
            # What verify's tools look up (orchestrator/workers/verify.py), so they stay fast as history grows.
            models.Index(INVOICE_NUMBER_KEY, name="task_invoice_number"),
            models.Index(COUNTERPARTY_KEY, name="task_counterparty"),
            models.Index(fields=["status", "-id"], name="task_status_id"),
            models.Index(fields=["doc_type", "-id"], name="task_doctype_id"),
            models.Index(fields=["routed_to", "-id"], name="task_route_id"),
            models.Index(fields=["created_at"], name="task_created"),
            models.Index(fields=["status", "lease_expires_at"], name="task_status_lease"),
            models.Index(fields=["status", "enqueued_at"], name="task_status_enqueued"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["submitted_by", "idempotency_key"],
                condition=~Q(idempotency_key=""),
                name="task_unique_idempotency_key",
            ),
        ]

    def __str__(self) -> str:
        return f"Task {self.pk} ({self.filename or 'untitled'})"

    def get_absolute_url(self) -> str:
        return reverse("task-detail", args=[self.pk])

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def title(self) -> str:
        return self.filename or self.external_ref or f"Task {self.pk}"

    @property
    def amount(self) -> Decimal | None:
        value = (self.fields or {}).get("amount")
        try:
            return Decimal(str(value)) if value is not None else None
        except Exception:
            return None


class StepStatus(models.TextChoices):
    """running -> succeeded | failed (retried later) | dead_lettered (no more tries)."""

    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed, will retry"
    DEAD_LETTERED = "dead_lettered", "Failed, dead-lettered"


class Step(UsageFields):
    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="steps")
    worker = models.CharField(max_length=20)
    attempt = models.PositiveIntegerField(default=1)
    status = models.CharField(max_length=20, choices=StepStatus.choices)

    input = models.JSONField(default=dict, blank=True)
    output = models.JSONField(default=dict, blank=True)
    # The exchange with the model: messages sent, raw answers, tool calls with their results.
    transcript = models.JSONField(default=list, blank=True)
    model = models.CharField(max_length=100, blank=True)
    prompt_version = models.CharField(max_length=50, blank=True)
    simulated = models.BooleanField(default=False)

    latency_ms = models.PositiveIntegerField(default=0)

    error_type = models.CharField(max_length=100, blank=True)
    error_message = models.TextField(blank=True)
    retry_after_s = models.FloatField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)

    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    # Added to the monitoring rollups yet? Steps are counted in batches after they commit
    # (metrics.rollups.rollups_catch_up), off the checkpoint's hot path.
    counted = models.BooleanField(default=False)

    class Meta:
        ordering = ["started_at", "id"]
        indexes = [
            models.Index(fields=["task", "started_at"], name="step_task_started"),
            # The catch-up's queue: small, whatever the history.
            models.Index(fields=["id"], condition=Q(counted=False), name="step_uncounted"),
        ]
        constraints = [
            # Invariant 2: a succeeded step is never run (or paid for) again.
            models.UniqueConstraint(
                fields=["task", "worker"],
                condition=Q(status="succeeded"),
                name="step_succeeds_once",
            ),
            models.UniqueConstraint(fields=["task", "worker", "attempt"], name="step_attempt_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.worker} #{self.attempt} of task {self.task_id}"


class DeadLetterStatus(models.TextChoices):
    """open -> retried | discarded."""

    OPEN = "open", "Open"
    RETRIED = "retried", "Retried"
    DISCARDED = "discarded", "Discarded"


class DeadLetter(models.Model):
    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="dead_letters")
    step = models.ForeignKey(Step, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    worker = models.CharField(max_length=20, blank=True)
    error_type = models.CharField(max_length=100)
    message = models.TextField()
    traceback = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=1)
    fingerprint = models.CharField(max_length=64, db_index=True)
    evidence = models.JSONField(default=dict, blank=True)
    # Copied from the task when the letter is created, so triage filters and groups on one table.
    doc_type = models.CharField(max_length=20, blank=True)
    queue = models.CharField(max_length=100, blank=True)
    # Edit-and-retry: {"by", "at", "step", "fields": {name: {"from", "to"}}, "doc_type": {...}}.
    # The originals stay in the failed step's input and in "from".
    edits = models.JSONField(default=dict, blank=True)

    status = models.CharField(max_length=10, choices=DeadLetterStatus.choices, default=DeadLetterStatus.OPEN)
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolution_note = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["status", "-id"], name="dl_status_id"),
            models.Index(fields=["status", "fingerprint"], name="dl_status_fingerprint"),
            # A group's open letters, newest first (triage's list of one group).
            models.Index(fields=["fingerprint", "-id"], condition=Q(status="open"), name="dl_open_fp_id"),
            models.Index(fields=["status", "created_at"], name="dl_status_created"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["task"], condition=Q(status="open"), name="dl_one_open_per_task"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.error_type} on task {self.task_id}"


# A number as people write one in a rule's name: 10,000 or 10000 or 2.5.
NUMBER_IN_NAME = re.compile(r"\d(?:[\d,]*\d)?(?:\.\d+)?")


class RoutingRule(models.Model):
    """A deterministic business rule: documents that match go to `queue`.

    Rules are tried by ascending priority; the first match wins. A rule with no doc type matches
    every type, one with no field condition matches every document of its type.
    """

    class Operator(models.TextChoices):
        GT = "gt", ">"
        GTE = "gte", ">="
        LT = "lt", "<"
        LTE = "lte", "<="
        EQ = "eq", "="

    name = models.CharField(max_length=100)
    priority = models.PositiveIntegerField(default=100)
    doc_type = models.CharField(max_length=20, choices=DocType.choices, blank=True)
    field = models.CharField(max_length=50, blank=True, help_text="Extracted field, e.g. amount")
    operator = models.CharField(max_length=3, choices=Operator.choices, blank=True)
    value = models.CharField(max_length=100, blank=True)
    queue = models.ForeignKey("reviews.Queue", on_delete=models.PROTECT, related_name="rules")
    requires_approval = models.BooleanField(
        default=True, help_text="Off: auto-approval is allowed under the auto-approve policy."
    )
    active = models.BooleanField(default=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["priority", "id"]

    def __str__(self) -> str:
        return self.name

    @property
    def condition(self) -> str:
        """What the rule matches, in words, from its fields: "Invoice with amount > 10,000", "every
        Contract". Pages show it next to the name, which is free text an admin may leave saying an
        old threshold; the route step records it with each task it routes."""
        from .workers.route import to_decimal

        if not self.field:
            return f"every {self.doc_type or 'document'}"
        number = to_decimal(self.value)
        value = f"{number:,f}" if number is not None and number.is_finite() else f'"{self.value}"'
        return f"{self.doc_type or 'any document'} with {self.field} {self.get_operator_display()} {value}"

    def name_misleads(self) -> str:
        """The numbers the name gives ("10,000") when none of them is the threshold, else "". Only
        for a warning: a name may carry numbers that are not thresholds."""
        from .workers.route import to_decimal

        threshold = to_decimal(self.value) if self.field else None
        said = NUMBER_IN_NAME.findall(self.name)
        if threshold is None or not threshold.is_finite() or not said:
            return ""
        if any(to_decimal(number.replace(",", "")) == threshold for number in said):
            return ""
        return " and ".join(said)

    def clean(self) -> None:
        """Only a condition the route step can apply as written (workers/route.py, rule_matches):
        a field the rules read for this document type, an operator, and a value of the field's
        kind. Anything else would silently never match, and its documents would fall through to
        the rules below it."""
        from .workers.route import rule_fields, to_decimal

        value = (self.value or "").strip()
        if not self.field:
            if self.operator or value:
                raise ValidationError({"field": "Choose the field this condition compares, or clear the operator "
                                                "and the value to match every document of this type."})
            return
        readable = rule_fields(self.doc_type)
        kind = readable.get(self.field)
        if kind is None:
            documents = f"{self.doc_type} documents" if self.doc_type else "documents"
            raise ValidationError({"field": f"Rules cannot read \"{self.field}\" on {documents}. "
                                            f"Fields they can read: {', '.join(sorted(readable))}."})
        errors = {}
        if not self.operator:
            errors["operator"] = f"Choose how to compare {self.field} with the value."
        if not value:
            errors["value"] = f"Enter the value to compare {self.field} with."
        elif kind == "number":
            number = to_decimal(value)
            if number is None or not number.is_finite():
                errors["value"] = (f"{self.field} is compared as a number: enter one such as 10000 (no currency "
                                   f"sign or thousands separators), not \"{value}\".")
        elif self.operator and self.operator != self.Operator.EQ:
            errors["operator"] = (f"{self.field} is text: it can only be compared with \"=\" "
                                  "(ignoring case), not ordered.")
        if errors:
            raise ValidationError(errors)


class Budget(models.Model):
    """Per-task ceilings, checked before every model call. The active row with the lowest id applies."""

    name = models.CharField(max_length=100, unique=True)
    max_llm_calls = models.PositiveIntegerField(
        "max LLM calls", default=30, help_text="Per task, over all its steps and retries")
    max_tool_calls = models.PositiveIntegerField(default=40, help_text="Per task: verify's lookups")
    max_tokens = models.PositiveIntegerField(default=200_000, help_text="Per task: input and output tokens together")
    max_cost_usd = models.DecimalField(
        "max cost (USD)", max_digits=10, decimal_places=4, default=Decimal("1.00"),
        help_text="Per task, in US dollars, priced from the model prices")
    active = models.BooleanField(
        default=True, help_text="Only one budget applies: the active one created first. A task over it is "
                                "dead-lettered as a suspected loop.")
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        """No ceiling that stops every task (the first check, before any call, would find it
        reached), and never no budget at all: invariant 6 needs one to check."""
        errors = {}
        stops_all = "a ceiling of 0 stops every task before its first model call and dead-letters it as a suspected loop."
        for name in ("max_llm_calls", "max_tool_calls", "max_tokens"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                errors[name] = f"At least 1: {stops_all}"
        if self.max_cost_usd is not None and self.max_cost_usd <= 0:
            errors["max_cost_usd"] = f"More than $0: {stops_all}"
        if not self.active and not Budget.objects.filter(active=True).exclude(pk=self.pk).exists():
            errors["active"] = ("This is the only active budget: switched off, tasks would run with no ceiling at all "
                                "and a looping agent would never be stopped. Make another budget active first.")
        if errors:
            raise ValidationError(errors)


# A negative price would make calls lower a task's cost, so the cost budget would never stop it.
NO_NEGATIVE_PRICE = MinValueValidator(0, "A price cannot be negative: enter 0 or more (0 for a free model).")


class ModelPrice(models.Model):
    """Price per 1M tokens by kind. Reasoning tokens are billed as output (they are part of it)."""

    model = models.CharField(max_length=100)
    input_per_1m = models.DecimalField(max_digits=10, decimal_places=4, validators=[NO_NEGATIVE_PRICE],
                                       help_text="US dollars per 1M input tokens")
    cached_input_per_1m = models.DecimalField(
        max_digits=10, decimal_places=4, validators=[NO_NEGATIVE_PRICE],
        help_text="US dollars per 1M input tokens the provider served from its prompt cache")
    output_per_1m = models.DecimalField(max_digits=10, decimal_places=4, validators=[NO_NEGATIVE_PRICE],
                                        help_text="US dollars per 1M output tokens (reasoning tokens included)")
    effective_from = models.DateField(
        help_text="From this day on, calls of this model cost this, until a later price of the same model")

    class Meta:
        ordering = ["model", "-effective_from"]
        constraints = [
            models.UniqueConstraint(fields=["model", "effective_from"], name="price_model_date_unique")
        ]

    def __str__(self) -> str:
        return f"{self.model} from {self.effective_from}"


class TuningVersion(models.Model):
    """One row: bumped whenever an admin changes what workers read on every task (orchestrator/tuning.py)."""

    version = models.PositiveBigIntegerField(default=0)

    def __str__(self) -> str:
        return f"tuning version {self.version}"


class WorkerConfig(models.Model):
    """How one worker kind calls the model. A changed prompt gets a new version (clean())."""

    worker = models.CharField(max_length=20, unique=True, help_text="classify, extract or verify")
    model = models.CharField(
        max_length=100, help_text="Model name, or deployment name on Azure OpenAI. Needs a model price in force")
    prompt = models.TextField(help_text="extract: {doc_type} and {schema} are filled in for each document")
    version = models.CharField(max_length=50, default="v1",
                               help_text="Recorded on every step; give a changed prompt a new one")
    max_retries = models.PositiveIntegerField(
        default=4, help_text="Retries of transient failures (timeouts, 429, 5xx) before the task is dead-lettered")
    timeout_s = models.FloatField("timeout (seconds)", default=30, help_text="Seconds one model call may take")
    max_reasks = models.PositiveIntegerField(default=2, help_text="Re-asks after an invalid answer")
    max_tool_rounds = models.PositiveIntegerField(
        default=6, help_text="Verify: model turns with tool calls before it counts as a loop")
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.worker} ({self.model}, {self.version})"

    def clean(self) -> None:
        """Only what the workers can run with: each of these saved fine and then failed quietly
        (calls counted as $0 with no price) or loudly (every call timing out, every verify
        taken for a loop) on every task."""
        from datetime import date

        from django.conf import settings

        errors = {}
        models_used = ("classify", "extract", "verify")
        if self.worker not in models_used:
            errors["worker"] = (f"There is no worker \"{self.worker}\": the workers that call a model are "
                                f"{', '.join(models_used)}.")
        if self.model and not ModelPrice.objects.filter(model=self.model, effective_from__lte=date.today()).exists():
            errors["model"] = (f"No price for \"{self.model}\" is in force today: add it under Model prices first "
                               "(on Azure OpenAI, under the deployment name). Without one its calls count as $0 and "
                               "the cost budget never stops a task.")
        # The lease is renewed at most every third of it, so a call must end within two thirds.
        longest = int(settings.STEWARD_LEASE_S * 2 / 3)
        if self.timeout_s is not None and not 1 <= self.timeout_s <= longest:
            errors["timeout_s"] = (f"The timeout is in seconds, from 1 to {longest}: shorter, every call times out "
                                   f"and every task is dead-lettered; longer than two thirds of the task's lease "
                                   f"(STEWARD_LEASE_S, {settings.STEWARD_LEASE_S:g} s), the sweeper may hand the "
                                   "task to another worker while the call is still running.")
        if self.worker == "verify" and self.max_tool_rounds == 0:
            errors["max_tool_rounds"] = ("Verify needs at least 1 round with tool calls: with 0, its first tool "
                                         "call is taken for a loop and every task is dead-lettered.")
        if self.worker == "extract" and self.prompt and not ("{doc_type}" in self.prompt and "{schema}" in self.prompt):
            errors["prompt"] = ("The extract prompt must keep {doc_type} and {schema}: they give the model the "
                                "document type and the JSON schema its answer must follow.")
        stored = WorkerConfig.objects.filter(pk=self.pk).values("prompt", "version").first() if self.pk else None
        if stored and stored["prompt"] != self.prompt and stored["version"] == self.version:
            errors["version"] = (f"You changed the prompt: give it a new version (it is \"{self.version}\"), so "
                                 "each step says which prompt it ran with.")
        if errors:
            raise ValidationError(errors)


class ApiToken(models.Model):
    """A bearer token for the JSON API; it carries its user's roles. Only the hash is stored."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    key_hash = models.CharField(max_length=64, unique=True)
    prefix = models.CharField(max_length=12)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.prefix}… for {self.user}"


class LoginFailure(models.Model):
    """Wrong passwords for one user name since the first of them (orchestrator/login.py). In the
    database, not a cache, so that every web process on every machine counts the same tries."""

    username_hash = models.CharField(max_length=64, unique=True, help_text="SHA-256 of the user name, lowercased")
    failures = models.PositiveIntegerField(default=0)
    first_failure_at = models.DateTimeField(db_index=True)

    def __str__(self) -> str:
        return f"{self.failures} failed logins since {self.first_failure_at:%Y-%m-%d %H:%M}"


def new_idempotency_key() -> str:
    return uuid.uuid4().hex


# --- Operators: audit, bulk retry, the sweeper's log -------------------------------------------


class OperatorAction(models.Model):
    """Audit trail of every triage action: who did what to which dead letter, task or bulk retry."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    action = models.CharField(max_length=30)
    dead_letter = models.ForeignKey(DeadLetter, null=True, blank=True, on_delete=models.CASCADE,
                                    related_name="actions")
    task = models.ForeignKey(Task, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    bulk_retry = models.ForeignKey("BulkRetry", null=True, blank=True, on_delete=models.CASCADE,
                                   related_name="actions")
    detail = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self.action} by {self.user} at {self.created_at:%Y-%m-%d %H:%M}"


class BulkRetryStatus(models.TextChoices):
    """running -> paused (by a person or the circuit breaker) -> running; running -> completed;
    running | paused -> cancelled."""

    RUNNING = "running", "Running"
    PAUSED = "paused", "Paused"
    COMPLETED = "completed", "Completed"
    CANCELLED = "cancelled", "Cancelled"


class BulkRetry(models.Model):
    """Many dead letters sent back at a pace the model provider can take.

    The selection is resolved to items when it is created; the state lives here (not in the
    broker), so a restarted worker or a lost message only delays it: the sweeper re-sends ticks.
    """

    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    description = models.CharField(max_length=300)
    selection = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=10, choices=BulkRetryStatus.choices, default=BulkRetryStatus.RUNNING)
    rate_per_minute = models.PositiveIntegerField(default=60)
    # Circuit breaker: pause when at least `breaker_threshold` of the last `breaker_window`
    # settled items failed again (counting only items settled since the last resume).
    breaker_threshold = models.FloatField(default=0.5)
    breaker_window = models.PositiveIntegerField(default=20)
    breaker_min_settled = models.PositiveIntegerField(default=5)
    breaker_reset_at = models.DateTimeField(null=True, blank=True)
    paused_reason = models.TextField(blank=True)

    total = models.PositiveIntegerField(default=0)
    enqueued = models.PositiveIntegerField(default=0)
    succeeded = models.PositiveIntegerField(default=0)
    failed_again = models.PositiveIntegerField(default=0)
    skipped = models.PositiveIntegerField(default=0)

    # The pacing clock: items enqueued since `paced_since` may not exceed the rate.
    paced_since = models.DateTimeField(null=True, blank=True)
    paced_count = models.PositiveIntegerField(default=0)
    # The next tick's due time; a tick claims it by compare-and-set so only one chain runs.
    next_tick_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        verbose_name_plural = "bulk retries"
        indexes = [models.Index(fields=["status", "next_tick_at"], name="bulk_status_tick")]

    def __str__(self) -> str:
        return f"Bulk retry {self.pk}: {self.description}"

    def get_absolute_url(self) -> str:
        return reverse("bulk-retry-detail", args=[self.pk])

    @property
    def pending(self) -> int:
        return self.total - self.enqueued - self.skipped

    @property
    def in_flight(self) -> int:
        return self.enqueued - self.succeeded - self.failed_again


class BulkRetryItemStatus(models.TextChoices):
    """pending -> enqueued -> succeeded | failed_again; pending -> skipped (no longer open)."""

    PENDING = "pending", "Waiting its turn"
    ENQUEUED = "enqueued", "Sent back, running"
    SUCCEEDED = "succeeded", "Went through"
    FAILED_AGAIN = "failed_again", "Failed again"
    SKIPPED = "skipped", "Skipped"


class BulkRetryItem(models.Model):
    bulk_retry = models.ForeignKey(BulkRetry, on_delete=models.CASCADE, related_name="items")
    dead_letter = models.ForeignKey(DeadLetter, on_delete=models.CASCADE, related_name="+")
    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="+")
    status = models.CharField(max_length=15, choices=BulkRetryItemStatus.choices,
                              default=BulkRetryItemStatus.PENDING)
    note = models.TextField(blank=True)
    enqueued_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["bulk_retry", "status", "id"], name="bulkitem_status")]
        constraints = [
            models.UniqueConstraint(fields=["bulk_retry", "dead_letter"], name="bulkitem_once_per_letter"),
        ]


class SweepRun(models.Model):
    """One run of the sweeper: when, how long, and what it did (its actions below)."""

    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    report = models.JSONField(default=dict, blank=True)
    actions_count = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["actions_count", "-id"], name="sweeprun_actions")]


class SweepAction(models.Model):
    """What the sweeper did to one task: requeued, dead-lettered, resumed or closed it, and why."""

    sweep = models.ForeignKey(SweepRun, on_delete=models.CASCADE, related_name="actions")
    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="sweep_actions")
    action = models.CharField(max_length=20)
    reason = models.CharField(max_length=200)
    step = models.CharField(max_length=20, blank=True)
    lease_owner = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]


class DeadLetterGroup(models.Model):
    """One row per failure fingerprint: how many of its dead letters are open, and when it was
    first and last seen. Kept by the dead-letter services in the same transaction as each change
    (create +1, any resolution -1), so the triage page reads its groups without counting 100,000
    rows; filtered views count the matching rows instead (selectors.open_dead_letters)."""

    fingerprint = models.CharField(max_length=64, unique=True)
    worker = models.CharField(max_length=20, blank=True)
    error_type = models.CharField(max_length=100)
    # The latest occurrence, as the group's example.
    doc_type = models.CharField(max_length=20, blank=True)
    message = models.TextField()
    example_id = models.BigIntegerField(null=True)
    open_count = models.IntegerField(default=0)
    first_seen = models.DateTimeField()
    last_seen = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["-open_count", "fingerprint"], name="dlgroup_open")]

    def __str__(self) -> str:
        return f"{self.error_type} at {self.worker or '-'}: {self.open_count} open"
