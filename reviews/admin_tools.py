"""Admin building blocks for the review policy (queues, rejection reasons, the auto-approve policy,
routing rules):

- AuditedAdmin: every add, change and delete leaves an AuditEvent with the values before and
  after, and who did it (Django's own admin history only says "Changed value").
- ReadOnlyAdmin: records that are history (audit trails, logs): viewable, never edited or deleted.
- OneByOneDeleteAdmin: no "Delete selected", for rows whose delete page checks something first.
- ImpactPreviewAdmin: saving a change that affects routing first shows how the last 1,000 routed
  tasks would route under the new values compared with now, with a button to save it for real.
  Deleting one shows the same on its delete page; there is no bulk delete, which would skip it.
"""
from __future__ import annotations

from django.contrib import admin
from django.contrib.admin.options import IS_POPUP_VAR
from django.contrib.admin.utils import unquote
from django.template.response import TemplateResponse

from .audit import audit_record, describe_changes, snapshot, snapshot_diff
from .models import AuditEvent

CONFIRM = "_impact_confirmed"


def _before_store(request) -> dict:
    if not hasattr(request, "_audit_before"):
        request._audit_before = {}
    return request._audit_before


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class AuditedAdmin(admin.ModelAdmin):
    # The History button shows the audit trail's values before and after, not only "Changed Value.".
    object_history_template = "admin/reviews/object_history_audited.html"

    def history_view(self, request, object_id, extra_context=None):
        events = list(AuditEvent.objects.filter(object_type=self.model._meta.label_lower,
                                                object_id=str(unquote(object_id))).order_by("-created_at", "-id")[:200])
        for event in events:
            data = event.data or {}
            pairs = data.get("changes") or {name: [None, value] for name, value in (data.get("values") or {}).items()}
            event.field_changes = [(name, [_in_words(value) for value in values]) for name, values in pairs.items()]
        return super().history_view(request, object_id, {**(extra_context or {}), "audit_events": events})

    def save_model(self, request, obj, form, change):
        stored = type(obj)._default_manager.filter(pk=obj.pk).first() if change and obj.pk else None
        _before_store(request)[id(obj)] = snapshot(stored) if stored is not None else None
        super().save_model(request, obj, form, change)

    def save_related(self, request, form, formsets, change):
        # After the many-to-many values are saved, so a queue's reviewers are in the snapshot.
        super().save_related(request, form, formsets, change)
        obj = form.instance
        before = _before_store(request).pop(id(obj), None)
        after = snapshot(obj)
        name = obj._meta.verbose_name
        if change and before is not None:
            changes = snapshot_diff(before, after)
            if not changes:
                return
            data = {"changes": changes, **self.after_change(request, obj, changes)}
            audit_record(action=AuditEvent.Action.CHANGED, obj=obj, actor=request.user, data=data,
                         summary=f"changed {name} \"{obj}\": {describe_changes(changes)}")
        else:
            audit_record(action=AuditEvent.Action.CREATED, obj=obj, actor=request.user, data={"values": after},
                         summary=f"created {name} \"{obj}\"")

    def after_change(self, request, obj, changes: dict) -> dict:
        """Hook: act on a saved change; returns extra data for its audit event."""
        return {}

    def _audit_delete(self, request, obj) -> None:
        audit_record(action=AuditEvent.Action.DELETED, obj=obj, actor=request.user, data={"values": snapshot(obj)},
                     summary=f"deleted {obj._meta.verbose_name} \"{obj}\"")

    def delete_model(self, request, obj):
        # Recorded first, inside the admin's transaction: a delete that fails takes its event along.
        self._audit_delete(request, obj)
        super().delete_model(request, obj)

    def delete_queryset(self, request, queryset):
        for obj in queryset:
            self._audit_delete(request, obj)
        super().delete_queryset(request, queryset)


def _in_words(value):
    """A value as the History page shows it: a list (a queue's reviewers) as names, not Python's repr."""
    if isinstance(value, (list, tuple)):
        return ", ".join(str(item) for item in value) or "(none)"
    return value


class OneByOneDeleteAdmin(admin.ModelAdmin):
    """No "Delete selected": each row is deleted from its own page, whose check (the impact a
    deletion would have, a guard on the last one of its kind) the bulk action would skip."""

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions


class ImpactPreviewAdmin(OneByOneDeleteAdmin):
    """Subclasses set `impact_fields` (a change to any of them is previewed), `impact()` and
    `impact_of_deleting()`."""

    impact_fields: tuple[str, ...] = ()
    delete_confirmation_template = "admin/reviews/delete_with_impact.html"
    delete_hint = ""

    def impact(self, candidate):
        raise NotImplementedError

    def impact_of_deleting(self, obj):
        raise NotImplementedError

    def delete_view(self, request, object_id, extra_context=None):
        obj = self.get_object(request, unquote(object_id))
        if obj is not None and request.method != "POST":
            extra_context = {**(extra_context or {}), "impact": self.impact_of_deleting(obj),
                             "delete_hint": self.delete_hint}
        return super().delete_view(request, object_id, extra_context)

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        if (request.method == "POST" and CONFIRM not in request.POST and IS_POPUP_VAR not in request.POST
                and "_saveasnew" not in request.POST):
            preview = self._impact_preview(request, object_id)
            if preview is not None:
                return preview
        return super().changeform_view(request, object_id, form_url, extra_context)

    def _impact_preview(self, request, object_id):
        """The preview page for a valid POST that changes routing; None lets the admin go on as
        usual (invalid form: it shows the errors; nothing routing-related changed: it saves)."""
        obj = None
        if object_id:
            obj = self.get_object(request, unquote(object_id))
            if obj is None or not self.has_change_permission(request, obj):
                return None
        elif not self.has_add_permission(request):
            return None
        before = snapshot(obj) if obj is not None else {}
        form = self.get_form(request, obj, change=obj is not None)(request.POST, request.FILES, instance=obj)
        if not form.is_valid():
            return None
        if obj is not None and not set(form.changed_data) & set(self.impact_fields):
            return None
        candidate = form.instance  # validated, not saved
        changes = snapshot_diff(before, snapshot(candidate)) if obj is not None else {}
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "original": obj,
            "candidate": candidate,
            "title": f"Impact of this change to {self.model._meta.verbose_name} \"{candidate}\"",
            "changes": changes,
            "impact": self.impact(candidate),
            "hidden": [(key, value) for key in request.POST for value in request.POST.getlist(key)
                       if key not in ("csrfmiddlewaretoken", CONFIRM)],
            "confirm_name": CONFIRM,
        }
        return TemplateResponse(request, "admin/reviews/impact_preview.html", context)
