"""Admin: label audits. Their list with progress, a "Run audit now" button for Leads, and
each audit's page of flagged labels (views in predictions/admin/label_audit_views.py)."""

from django.contrib import admin
from django.urls import path, reverse
from django.utils.html import format_html

from predictions.admin.label_audit_views import LabelAuditFlaggedView, LabelAuditRunView
from predictions.admin.readonly import ReadOnlyAdminMixin
from predictions.models import LabelAudit
from predictions.selectors.label_audit import label_audit_in_progress

RUN_PERMISSION = "predictions.add_labelaudit"


@admin.register(LabelAudit)
class LabelAuditAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "__str__", "status", "reason", "model_version", "progress", "flagged_link", "created_by", "created_at",
        "finished_at",
    ]  # fmt: skip
    list_filter = ["status", "reason", "model_version"]
    list_select_related = ["model_version", "created_by"]
    date_hierarchy = "created_at"
    fields = [
        "status", "reason", "model_version", "progress", "flagged_link", "method", "error", "created_by",
        "created_at", "finished_at",
    ]  # fmt: skip
    readonly_fields = fields

    def has_run_permission(self, request) -> bool:
        """Running an audit is a Lead's call (Leads hold every predictions permission)."""
        return request.user.has_perm(RUN_PERMISSION)

    @admin.display(description="progress")
    def progress(self, audit: LabelAudit) -> str:
        return format_html(
            '<progress value="{}" max="{}" style="width: 6em; vertical-align: middle;"></progress> {} / {}',
            audit.done, audit.total or 1, audit.done, audit.total,
        )  # fmt: skip

    @admin.display(description="flagged", ordering="flagged")
    def flagged_link(self, audit: LabelAudit) -> str:
        if audit.status != LabelAudit.Status.DONE:
            return str(audit.flagged)
        url = reverse("admin:predictions_labelaudit_flagged", args=[audit.pk])
        return format_html('<a href="{}">{} flagged</a>', url, audit.flagged)

    def changelist_view(self, request, extra_context=None):
        extra_context = {
            **(extra_context or {}),
            "can_run_audit": self.has_run_permission(request),
            "audit_running": label_audit_in_progress() is not None,
        }
        return super().changelist_view(request, extra_context)

    def get_urls(self):
        def view(view_class):
            return self.admin_site.admin_view(view_class.as_view(admin_site=self.admin_site, model_admin=self))

        return [
            path("run/", view(LabelAuditRunView), name="predictions_labelaudit_run"),
            path("<int:audit_id>/flagged/", view(LabelAuditFlaggedView), name="predictions_labelaudit_flagged"),
        ] + super().get_urls()
