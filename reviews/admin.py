from django.contrib import admin

from .admin_tools import AuditedAdmin, ImpactPreviewAdmin, ReadOnlyAdmin
from .impact import impact_of_deleting_policy, impact_of_policy
from .models import Approval, AuditEvent, AutoApprovePolicy, Queue, RejectionReason
from .services import queue_deadlines_apply


@admin.register(Queue)
class QueueAdmin(AuditedAdmin):
    list_display = ("name", "sla_minutes", "expiry_minutes", "action_kind", "webhook_url", "escalation_email")
    filter_horizontal = ("reviewers",)
    fieldsets = (
        (None, {"fields": ("name", "description", "reviewers")}),
        ("SLA and expiry", {"fields": ("sla_minutes", "escalation_email", "expiry_minutes")}),
        ("Notifications", {"fields": ("notify_reviewers", "teams_webhook_url", "slack_webhook_url")}),
        ("Action after approval", {"fields": ("action_kind", "webhook_url", "action_email")}),
    )

    def after_change(self, request, obj, changes):
        if "sla_minutes" in changes or "expiry_minutes" in changes:
            return {"pending_deadlines_updated": queue_deadlines_apply(queue=obj)}
        return {}


@admin.register(RejectionReason)
class RejectionReasonAdmin(AuditedAdmin):
    list_display = ("code", "label", "active")


@admin.register(AutoApprovePolicy)
class AutoApprovePolicyAdmin(ImpactPreviewAdmin, AuditedAdmin):
    list_display = ("__str__", "enabled", "min_confidence", "max_amount")
    impact_fields = ("enabled", "min_confidence", "max_amount")
    delete_hint = "With no policy left, nothing is auto-approved: every action waits for a person."

    def impact(self, candidate):
        return impact_of_policy(candidate)

    def impact_of_deleting(self, obj):
        return impact_of_deleting_policy(obj)


@admin.register(Approval)
class ApprovalAdmin(ReadOnlyAdmin):
    """Read-only: decisions go through the inbox, the task page, email links or the API, which
    decide once and leave an audit trail. Not deletable either: a task awaiting approval would be
    left waiting on nothing."""

    list_display = ("id", "task", "queue", "status", "decided_by", "decided_at", "escalated_at", "created_at")
    list_filter = ("status", "queue")
    list_select_related = ("task", "queue", "decided_by")


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "actor_name", "action", "summary", "task")
    list_filter = ("action", "object_type")
    search_fields = ("summary", "actor_name", "object_repr")
    date_hierarchy = "created_at"
    list_select_related = ("task",)
