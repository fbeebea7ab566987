"""Human checkpoints: queues of reviewers, approvals, and the auto-approve policy."""
from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q

from orchestrator.models import new_idempotency_key


class Queue(models.Model):
    class ActionKind(models.TextChoices):
        WEBHOOK = "webhook", "Webhook POST"
        EMAIL = "email", "Email with the decision"

    name = models.SlugField(max_length=100, unique=True)
    description = models.CharField(max_length=200, blank=True)
    reviewers = models.ManyToManyField(settings.AUTH_USER_MODEL, blank=True, related_name="review_queues")
    sla_minutes = models.PositiveIntegerField(
        default=240, help_text="Still pending after this long: escalated (escalation email, flagged in the inbox)",
        validators=[MinValueValidator(1, "At least 1 minute: with 0, every approval is escalated as it arrives.")],
    )
    escalation_email = models.EmailField(blank=True)
    expiry_minutes = models.PositiveIntegerField(
        null=True, blank=True,
        help_text="Still pending after this long: expired, the task ends rejected and the action never runs. "
                  "Empty: never expires",
    )
    action_kind = models.CharField(max_length=10, choices=ActionKind.choices, default=ActionKind.WEBHOOK)
    webhook_url = models.URLField(blank=True, help_text="Empty: STEWARD_WEBHOOK_URL")
    action_email = models.EmailField(
        blank=True, help_text="For email actions: where the decision goes. Empty: each of the queue's reviewers who "
                              "has an email address (with none, the action is dead-lettered)")
    notify_reviewers = models.BooleanField(
        default=True, help_text="Email each reviewer (with their own approve and reject links) when an approval arrives"
    )
    teams_webhook_url = models.URLField(max_length=500, blank=True, help_text="Microsoft Teams incoming webhook")
    slack_webhook_url = models.URLField(max_length=500, blank=True, help_text="Slack incoming webhook")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        # An approval expiring first is never escalated: nobody hears it was late, it just ends rejected.
        if self.expiry_minutes is not None and self.sla_minutes and self.expiry_minutes <= self.sla_minutes:
            raise ValidationError({"expiry_minutes": (
                f"Longer than the SLA ({self.sla_minutes} minutes): approvals would expire before anyone is told "
                "they are late. Leave it empty for approvals that never expire.")})


class RejectionReason(models.Model):
    code = models.SlugField(max_length=50, unique=True,
                            help_text="What the API returns for decisions with this reason; keep it once used")
    label = models.CharField(max_length=200, help_text="What reviewers pick from, and what decisions show")
    active = models.BooleanField(
        default=True, help_text="Unticked: retired. Reviewers no longer see it; past decisions keep it.")

    class Meta:
        ordering = ["label"]

    def __str__(self) -> str:
        return self.label

    def clean(self) -> None:
        if not self.active and not RejectionReason.objects.filter(active=True).exclude(pk=self.pk).exists():
            raise ValidationError({"active": "This is the only active reason: with none, reviewers could not reject "
                                             "anything. Add or reactivate another first."})


# A validator message is %-formatted with the value: "%%" is a percent sign.
CONFIDENCE_RANGE = "Confidence is between 0 and 1, as the classifier reports it: 0.95 means 95%% sure."
NO_NEGATIVE_CEILING = "The amount ceiling cannot be negative: enter 0 or more."


class AutoApprovePolicy(models.Model):
    """When an action may run without a person. Never for suspected duplicates or disagreements."""

    enabled = models.BooleanField(default=True)
    # Compared with Task.confidence, which classify reports from 0 to 1.
    min_confidence = models.FloatField(
        default=0.95, validators=[MinValueValidator(0, CONFIDENCE_RANGE), MaxValueValidator(1, CONFIDENCE_RANGE)],
        help_text="From 0 to 1: documents classified with less confidence always go to a person",
    )
    max_amount = models.DecimalField(
        max_digits=14, decimal_places=2, default=Decimal("1000.00"),
        validators=[MinValueValidator(0, NO_NEGATIVE_CEILING)],
        help_text="Documents above this amount always go to a person",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "auto-approve policy"

    def __str__(self) -> str:
        return f"auto-approve at confidence >= {self.min_confidence}, amount <= {self.max_amount}"

    @classmethod
    def current(cls) -> "AutoApprovePolicy":
        return cls.objects.order_by("id").first() or cls(enabled=False)


class ApprovalStatus(models.TextChoices):
    """pending -> approved | rejected | expired | superseded; auto_approved is created decided.

    superseded: a reviewer's correction made the rules route the task to another queue; a new
    pending approval there (`replaced_by`) takes over, and the task keeps waiting.
    expired: nobody decided before the queue's expiry; fails closed (the task ends rejected).
    """

    PENDING = "pending", "Pending"
    APPROVED = "approved", "Approved"
    REJECTED = "rejected", "Rejected"
    EXPIRED = "expired", "Expired"
    AUTO_APPROVED = "auto_approved", "Auto-approved"
    SUPERSEDED = "superseded", "Moved to another queue"


class ActionStatus(models.TextChoices):
    """not_started -> sending -> done. `sending` left behind by a crash is resent with the same key."""

    NOT_STARTED = "not_started", "Not started"
    SENDING = "sending", "Sending"
    DONE = "done", "Done"


class Approval(models.Model):
    task = models.ForeignKey("orchestrator.Task", on_delete=models.CASCADE, related_name="approvals")
    queue = models.ForeignKey(Queue, on_delete=models.PROTECT, related_name="approvals")
    action_kind = models.CharField(max_length=10, choices=Queue.ActionKind.choices)
    action_summary = models.TextField()
    action_data = models.JSONField(default=dict)
    reasons = models.JSONField(default=list, blank=True, help_text="Why a person must look")

    status = models.CharField(max_length=20, choices=ApprovalStatus.choices, default=ApprovalStatus.PENDING)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    rejection_reason = models.ForeignKey(
        RejectionReason, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    comment = models.TextField(blank=True)
    # {"field": {"from": original, "to": corrected}}
    corrections = models.JSONField(default=dict, blank=True)

    idempotency_key = models.CharField(max_length=64, unique=True, default=new_idempotency_key)
    action_status = models.CharField(
        max_length=12, choices=ActionStatus.choices, default=ActionStatus.NOT_STARTED
    )
    action_sent_at = models.DateTimeField(null=True, blank=True)
    due_at = models.DateTimeField(null=True, blank=True, help_text="SLA: escalated when still pending then")
    expires_at = models.DateTimeField(null=True, blank=True, help_text="Expired (task rejected) when still pending then")
    escalated_at = models.DateTimeField(null=True, blank=True)
    notified_at = models.DateTimeField(null=True, blank=True, help_text="When the queue's reviewers were told")
    # The approval this one took over from, after a correction moved the task to this queue.
    replaces = models.OneToOneField(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="replaced_by"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [
            models.Index(fields=["queue", "status", "created_at", "id"], name="approval_queue_pending"),
            models.Index(fields=["status", "created_at"], name="approval_status_created"),
            # Per-queue "past SLA" counts in the inbox.
            models.Index(fields=["queue", "status", "due_at"], name="approval_queue_due"),
            # The review sweep's scans stay small however long the backlog.
            models.Index(fields=["due_at"], condition=Q(status="pending", escalated_at__isnull=True),
                         name="approval_to_escalate"),
            models.Index(fields=["expires_at"], condition=Q(status="pending", expires_at__isnull=False),
                         name="approval_to_expire"),
            models.Index(fields=["created_at"], condition=Q(status="pending", notified_at__isnull=True),
                         name="approval_to_notify"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["task"], condition=Q(status="pending"), name="approval_one_pending_per_task"
            ),
        ]

    def __str__(self) -> str:
        return f"Approval {self.pk} ({self.status}) for task {self.task_id}"

    @property
    def is_decided(self) -> bool:
        return self.status != ApprovalStatus.PENDING


class EmailLink(models.Model):
    """One emailed approve/reject link: bound to one approval and one reviewer, usable once.

    The link itself is a signed token (reviews/links.py) carrying these ids and the nonce; the
    row is what makes it single use.
    """

    approval = models.ForeignKey(Approval, on_delete=models.CASCADE, related_name="email_links")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    nonce = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    used_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"Email link for approval {self.approval_id} to {self.user_id}"


class AuditEvent(models.Model):
    """Who did what, when, to which object, with the details: decisions, corrections, moves,
    escalations, expiries and changes to the review policy in admin. Append-only."""

    class Action(models.TextChoices):
        APPROVED = "approval.approved", "Approved"
        REJECTED = "approval.rejected", "Rejected"
        MOVED = "approval.moved", "Corrected and moved to another queue"
        ESCALATED = "approval.escalated", "Escalated past its SLA"
        EXPIRED = "approval.expired", "Expired undecided"
        CREATED = "config.created", "Created in admin"
        CHANGED = "config.changed", "Changed in admin"
        DELETED = "config.deleted", "Deleted in admin"

    created_at = models.DateTimeField(auto_now_add=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Kept when the user is deleted; "system" for the review sweep.
    actor_name = models.CharField(max_length=150)
    action = models.CharField(max_length=30, choices=Action.choices)
    summary = models.CharField(max_length=500)
    object_type = models.CharField(max_length=100, help_text="app_label.model")
    object_id = models.CharField(max_length=64)
    object_repr = models.CharField(max_length=200)
    task = models.ForeignKey(
        "orchestrator.Task", null=True, blank=True, on_delete=models.SET_NULL, related_name="audit_events"
    )
    data = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["task", "created_at"], name="audit_task_created"),
            models.Index(fields=["object_type", "object_id", "created_at"], name="audit_object_created"),
            models.Index(fields=["created_at"], name="audit_created"),
        ]

    def __str__(self) -> str:
        return f"{self.actor_name}: {self.summary}"
