"""Human checkpoints: queues of reviewers, approvals, and the auto-approve policy."""
from __future__ import annotations

from decimal import Decimal

from django.conf import settings
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
    sla_minutes = models.PositiveIntegerField(default=240)
    escalation_email = models.EmailField(blank=True)
    expiry_minutes = models.PositiveIntegerField(null=True, blank=True, help_text="Empty: never expires")
    action_kind = models.CharField(max_length=10, choices=ActionKind.choices, default=ActionKind.WEBHOOK)
    webhook_url = models.URLField(blank=True, help_text="Empty: STEWARD_WEBHOOK_URL")
    action_email = models.EmailField(blank=True, help_text="For email actions: where the decision goes")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class RejectionReason(models.Model):
    code = models.SlugField(max_length=50, unique=True)
    label = models.CharField(max_length=200)
    active = models.BooleanField(default=True)

    class Meta:
        ordering = ["label"]

    def __str__(self) -> str:
        return self.label


class AutoApprovePolicy(models.Model):
    """When an action may run without a person. Never for suspected duplicates or disagreements."""

    enabled = models.BooleanField(default=True)
    min_confidence = models.FloatField(default=0.95)
    max_amount = models.DecimalField(max_digits=14, decimal_places=2, default=Decimal("1000.00"))
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "auto-approve policy"

    def __str__(self) -> str:
        return f"auto-approve at confidence >= {self.min_confidence}, amount <= {self.max_amount}"

    @classmethod
    def current(cls) -> "AutoApprovePolicy":
        return cls.objects.order_by("id").first() or cls(enabled=False)


class ApprovalStatus(models.TextChoices):
    """pending -> approved | rejected | expired; auto_approved is created decided."""

    PENDING = "pending", "Pending"
    APPROVED = "approved", "Approved"
    REJECTED = "rejected", "Rejected"
    EXPIRED = "expired", "Expired"
    AUTO_APPROVED = "auto_approved", "Auto-approved"


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
    due_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [
            models.Index(fields=["queue", "status", "created_at", "id"], name="approval_queue_pending"),
            models.Index(fields=["status", "created_at"], name="approval_status_created"),
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
