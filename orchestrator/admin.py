from datetime import date

from django.contrib import admin, messages
from django.utils.html import format_html

from reviews.admin_tools import AuditedAdmin, ImpactPreviewAdmin, OneByOneDeleteAdmin, ReadOnlyAdmin
from reviews.impact import impact_of_deleting_rule, impact_of_rule

from .models import (
    ApiToken, Budget, BulkRetry, BulkRetryItem, DeadLetter, ModelPrice, OperatorAction, RoutingRule, Step, SweepAction,
    SweepRun, Task, WorkerConfig,
)


@admin.register(RoutingRule)
class RoutingRuleAdmin(ImpactPreviewAdmin, AuditedAdmin):
    """Saving a change that affects routing first previews its impact on the last 1,000 routed
    tasks; every change is in the audit trail (reviews/admin_tools.py). RoutingRule.clean() refuses
    a condition the route step cannot apply, before any preview. Deleting one shows its impact too. No list_editable: the list saves
    without the preview, and a rule switched off or moved ahead reroutes as much as a new value."""

    list_display = ("name", "condition_shown", "priority", "queue", "requires_approval", "active")
    list_filter = ("active", "doc_type", "queue")
    impact_fields = ("priority", "doc_type", "field", "operator", "value", "queue", "requires_approval", "active")
    delete_hint = "To stop a rule for a while, untick Active on its page instead: it keeps its place and history."

    # The name is free text and is not read when routing: after a threshold changes it may still
    # give the old one. The condition is shown next to it here and on the task and review pages.
    @admin.display(description="condition")
    def condition_shown(self, rule: RoutingRule) -> str:
        said = rule.name_misleads()
        return f"{rule.condition} (the name says {said})" if said else rule.condition

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change, **kwargs)
        help_text = "Free text, not read when routing: pages show the rule's condition next to it."
        said = obj.name_misleads() if obj is not None else ""
        if said:
            # The admin shows help text as HTML: escape the condition (a text value is the admin's own).
            help_text = format_html("The name says {}, but the rule matches {}. {}", said, obj.condition, help_text)
        form.base_fields["name"].help_text = help_text
        return form

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        said = obj.name_misleads()
        if said:
            messages.warning(request, f"The name \"{obj.name}\" says {said}, but the rule matches "
                                      f"{obj.condition}. Saved as it is: rename it if the number is the old threshold.")

    def impact(self, candidate):
        return impact_of_rule(candidate)

    def impact_of_deleting(self, obj):
        return impact_of_deleting_rule(obj)


@admin.register(Budget)
class BudgetAdmin(OneByOneDeleteAdmin, AuditedAdmin):
    list_display = ("name", "max_llm_calls", "max_tool_calls", "max_tokens", "max_cost_usd", "active")

    def has_delete_permission(self, request, obj=None) -> bool:
        # As switching it off (Budget.clean): without an active budget no ceiling stops a loop.
        if obj is not None and obj.active and not Budget.objects.filter(active=True).exclude(pk=obj.pk).exists():
            return False
        return super().has_delete_permission(request, obj)


@admin.register(ModelPrice)
class ModelPriceAdmin(OneByOneDeleteAdmin, AuditedAdmin):
    list_display = ("model", "input_per_1m", "cached_input_per_1m", "output_per_1m", "effective_from")
    list_filter = ("model",)

    def has_delete_permission(self, request, obj=None) -> bool:
        # As WorkerConfig.clean refuses a model with no price in force: without it, every call of
        # a worker's model would count as $0 and the cost budget would never stop a task.
        today = date.today()
        if obj is not None and obj.effective_from <= today and WorkerConfig.objects.filter(model=obj.model).exists():
            if not ModelPrice.objects.filter(model=obj.model, effective_from__lte=today).exclude(pk=obj.pk).exists():
                return False
        return super().has_delete_permission(request, obj)


@admin.register(WorkerConfig)
class WorkerConfigAdmin(AuditedAdmin):
    list_display = ("worker", "model", "version", "max_retries", "timeout_s", "updated_at")


class ReadOnlyInline(admin.TabularInline):
    """Rows that are history (attempts, outcomes, log lines): listed with their parent, never edited."""

    extra = 0
    max_num = 0
    can_delete = False

    def get_readonly_fields(self, request, obj=None):
        return self.fields


class StepInline(ReadOnlyInline):
    model = Step
    fields = ("worker", "attempt", "status", "model", "llm_calls", "tool_calls", "cost_usd", "latency_ms", "error_type")


# Tasks and dead letters are for looking at here, never for editing or deleting: they change only
# through the pipeline, the reviewers' decisions and the operators' triage, which keep every task in
# one status with an owner (nothing disappears) and leave an audit trail. An edit here would do
# neither: a status without an owner, a lease nobody holds, a dead letter gone with no resolution.


@admin.register(Task)
class TaskAdmin(ReadOnlyAdmin):
    list_display = ("id", "filename", "status", "doc_type", "routed_to", "created_at")
    list_filter = ("status", "doc_type", "routed_to")
    search_fields = ("filename", "external_ref", "content_sha256")
    inlines = [StepInline]


@admin.register(DeadLetter)
class DeadLetterAdmin(ReadOnlyAdmin):
    list_display = ("id", "task", "worker", "error_type", "status", "created_at")
    list_filter = ("status", "error_type", "worker")


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Listed and revoked (deleted) here, never made or changed: a token is made by
    `manage.py create_api_token`, which shows it once (only its hash is stored, so a row added here
    would be no token at all), and moving one to another user would hand its holder their roles."""

    list_display = ("prefix", "user", "created_at", "last_used_at")
    readonly_fields = ("user", "key_hash", "prefix", "created_at", "last_used_at")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


# --- History: operators' actions, bulk retries and the sweeper's log (read-only) -------------


@admin.register(OperatorAction)
class OperatorActionAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "user", "action", "dead_letter", "task")
    list_filter = ("action",)
    date_hierarchy = "created_at"


class BulkRetryItemInline(ReadOnlyInline):
    model = BulkRetryItem
    fields = ("dead_letter", "task", "status", "note", "enqueued_at", "finished_at")


@admin.register(BulkRetry)
class BulkRetryAdmin(ReadOnlyAdmin):
    list_display = ("id", "description", "status", "total", "enqueued", "succeeded", "failed_again", "created_by",
                    "created_at")
    list_filter = ("status",)
    inlines = [BulkRetryItemInline]


class SweepActionInline(ReadOnlyInline):
    model = SweepAction
    fields = ("task", "action", "reason", "step", "lease_owner", "created_at")


@admin.register(SweepRun)
class SweepRunAdmin(ReadOnlyAdmin):
    list_display = ("started_at", "finished_at", "actions_count")
    date_hierarchy = "started_at"
    inlines = [SweepActionInline]
