from django.contrib import admin
from django.contrib.admin.utils import unquote
from django.contrib.auth import get_user_model
from django.db.models import Q

from orchestrator.roles import ADMIN, REVIEWER

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

    def formfield_for_manytomany(self, db_field, request, **kwargs):
        # Only people who can decide here (services.user_can_decide): anyone else listed is sent
        # no links and cannot decide. Those already listed stay offered, so saving never drops
        # them unseen.
        if db_field.name == "reviewers":
            can_decide = Q(groups__name__in=(REVIEWER, ADMIN)) | Q(is_superuser=True)
            object_id = request.resolver_match.kwargs.get("object_id")
            if object_id:
                can_decide |= Q(review_queues__pk=unquote(object_id))
            kwargs["queryset"] = (
                get_user_model().objects.filter(is_active=True).filter(can_decide)
                .distinct().order_by("username")
            )
        field = super().formfield_for_manytomany(db_field, request, **kwargs)
        if db_field.name == "reviewers":
            field.help_text = ("Only people with the reviewer or admin role can decide, and only they are offered "
                               "here. Each is emailed links for new approvals when notifications are on.")
        return field

    def after_change(self, request, obj, changes):
        if "sla_minutes" in changes or "expiry_minutes" in changes:
            return {"pending_deadlines_updated": queue_deadlines_apply(queue=obj)}
        return {}


@admin.register(RejectionReason)
class RejectionReasonAdmin(AuditedAdmin):
    """A reason reviewers gave is kept by their decisions (Approval.rejection_reason, PROTECT):
    it is retired (Active unticked), never deleted."""

    list_display = ("code", "label", "active")
    list_filter = ("active",)
    delete_confirmation_template = "admin/reviews/rejectionreason/delete_confirmation.html"

    def get_readonly_fields(self, request, obj=None):
        # The code is what the API answers for past decisions: once given, renaming it rewrites them.
        if obj is not None and Approval.objects.filter(rejection_reason=obj).exists():
            return ("code",)
        return ()

    def get_deleted_objects(self, objs, request):
        # Django lists the decisions as objects this account may not delete, as if another could;
        # they are history that keeps the reason, so show them as what protects it.
        deleted, counts, perms_needed, protected = super().get_deleted_objects(objs, request)
        used = Approval.objects.filter(rejection_reason__in=list(objs)).order_by("id")
        if used.exists():
            perms_needed = set()
            protected = [str(approval) for approval in used[:20]] + (
                [f"… and {used.count() - 20} more"] if used.count() > 20 else [])
        return deleted, counts, perms_needed, protected


@admin.register(AutoApprovePolicy)
class AutoApprovePolicyAdmin(ImpactPreviewAdmin, AuditedAdmin):
    list_display = ("__str__", "enabled", "min_confidence", "max_amount")
    impact_fields = ("enabled", "min_confidence", "max_amount")
    delete_hint = "With no policy left, nothing is auto-approved: every action waits for a person."

    def has_add_permission(self, request) -> bool:
        # One policy: only the first is read (AutoApprovePolicy.current), a second would be ignored.
        return super().has_add_permission(request) and not AutoApprovePolicy.objects.exists()

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
