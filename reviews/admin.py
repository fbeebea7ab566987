from django.contrib import admin

from .models import Approval, AutoApprovePolicy, Queue, RejectionReason


@admin.register(Queue)
class QueueAdmin(admin.ModelAdmin):
    list_display = ("name", "sla_minutes", "action_kind", "webhook_url", "escalation_email")
    filter_horizontal = ("reviewers",)


@admin.register(RejectionReason)
class RejectionReasonAdmin(admin.ModelAdmin):
    list_display = ("code", "label", "active")


@admin.register(AutoApprovePolicy)
class AutoApprovePolicyAdmin(admin.ModelAdmin):
    list_display = ("__str__", "enabled", "min_confidence", "max_amount")


@admin.register(Approval)
class ApprovalAdmin(admin.ModelAdmin):
    list_display = ("id", "task", "queue", "status", "decided_by", "decided_at", "created_at")
    list_filter = ("status", "queue")
    readonly_fields = ("idempotency_key", "created_at")
