from django.contrib import admin

from reviews.admin_tools import AuditedAdmin, ImpactPreviewAdmin
from reviews.impact import impact_of_rule

from .models import ApiToken, Budget, DeadLetter, ModelPrice, RoutingRule, Step, Task, WorkerConfig


@admin.register(RoutingRule)
class RoutingRuleAdmin(ImpactPreviewAdmin, AuditedAdmin):
    """Saving a change that affects routing first previews its impact on the last 1,000 routed
    tasks; every change is in the audit trail (reviews/admin_tools.py)."""

    list_display = ("name", "priority", "doc_type", "field", "operator", "value", "queue", "requires_approval", "active")
    list_editable = ("priority", "active")
    list_filter = ("active", "doc_type", "queue")
    impact_fields = ("priority", "doc_type", "field", "operator", "value", "queue", "requires_approval", "active")

    def impact(self, candidate):
        return impact_of_rule(candidate)


@admin.register(Budget)
class BudgetAdmin(admin.ModelAdmin):
    list_display = ("name", "max_llm_calls", "max_tool_calls", "max_tokens", "max_cost_usd", "active")


@admin.register(ModelPrice)
class ModelPriceAdmin(admin.ModelAdmin):
    list_display = ("model", "input_per_1m", "cached_input_per_1m", "output_per_1m", "effective_from")
    list_filter = ("model",)


@admin.register(WorkerConfig)
class WorkerConfigAdmin(admin.ModelAdmin):
    list_display = ("worker", "model", "version", "max_retries", "timeout_s", "updated_at")


class StepInline(admin.TabularInline):
    model = Step
    extra = 0
    can_delete = False
    fields = ("worker", "attempt", "status", "model", "llm_calls", "tool_calls", "cost_usd", "latency_ms", "error_type")
    readonly_fields = fields


@admin.register(Task)
class TaskAdmin(admin.ModelAdmin):
    list_display = ("id", "filename", "status", "doc_type", "routed_to", "created_at")
    list_filter = ("status", "doc_type", "routed_to")
    search_fields = ("filename", "external_ref", "content_sha256")
    readonly_fields = ("content_sha256", "created_at", "updated_at")
    inlines = [StepInline]


@admin.register(DeadLetter)
class DeadLetterAdmin(admin.ModelAdmin):
    list_display = ("id", "task", "worker", "error_type", "status", "created_at")
    list_filter = ("status", "error_type", "worker")


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ("prefix", "user", "created_at", "last_used_at")
    readonly_fields = ("key_hash", "prefix", "created_at", "last_used_at")
