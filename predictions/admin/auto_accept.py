"""Admin: auto-accept runs. Read-only records (started from a model version's "Auto-accept…"
page or the auto_accept command), each undone as a whole by a Lead.
"""

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils.html import format_html

from predictions.admin.auto_accept_views import PERMISSION
from predictions.admin.readonly import ReadOnlyAdminMixin
from predictions.models import AutoAcceptRun
from predictions.selectors.auto_accept import auto_accept_run_progress
from predictions.services.auto_accept import auto_accept_run_undo


def _undo(modeladmin, request, run: AutoAcceptRun) -> None:
    try:
        reopened = auto_accept_run_undo(run=run, user=request.user)
    except ValidationError as exc:
        modeladmin.message_user(request, " ".join(exc.messages), messages.ERROR)
        return
    modeladmin.log_change(request, run, "Undone.")
    modeladmin.message_user(request, f"{run} undone: {reopened} images have their previous label back.", messages.SUCCESS)


@admin.action(description="Undo the selected runs", permissions=["undo"])
def undo_runs(modeladmin, request, queryset):
    for run in queryset.select_related("operation"):
        _undo(modeladmin, request, run)


@admin.register(AutoAcceptRun)
class AutoAcceptRunAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "__str__", "model_version", "promise", "threshold_shown", "bound_shown", "audit_sample",
        "progress", "status", "undone", "created_by", "created_at",
    ]
    list_filter = ["status", "model_version", "created_at"]
    list_select_related = ["model_version", "created_by", "operation"]
    date_hierarchy = "created_at"
    actions = [undo_runs]
    fields = [
        "model_version", "promise", "threshold_shown", "bound_shown", "audit_sample", "needed", "progress",
        "status", "error", "undone", "operation", "created_by", "created_at", "finished_at",
    ]
    readonly_fields = fields
    change_form_template = "admin/predictions/autoacceptrun/change_form.html"

    # Runs are the record of what was accepted and why: undone, never deleted.
    def has_delete_permission(self, request, obj=None):
        return False

    def has_undo_permission(self, request):
        return request.user.has_perm(PERMISSION)

    @admin.display(description="asked")
    def promise(self, run: AutoAcceptRun) -> str:
        return f"error <= {run.max_error:.1%} at {run.confidence:.0%} confidence"

    @admin.display(description="threshold", ordering="threshold")
    def threshold_shown(self, run: AutoAcceptRun) -> str:
        if run.threshold is None:
            return f"none: sample too small, ~{run.needed} more audit reviews needed" if run.needed else "-"
        return f"{run.threshold:.4f}"

    @admin.display(description="guaranteed error", ordering="bound")
    def bound_shown(self, run: AutoAcceptRun) -> str:
        return "-" if run.bound is None else f"<= {run.bound:.2%}"

    @admin.display(description="accepted")
    def progress(self, run: AutoAcceptRun) -> str:
        done = auto_accept_run_progress(run=run)
        return format_html(
            '<progress value="{}" max="{}" style="width: 6em; vertical-align: middle;"></progress> {} / {}',
            done, run.total or 1, done, run.total,
        )

    @admin.display(description="undone")
    def undone(self, run: AutoAcceptRun) -> str:
        operation = run.operation
        if operation is None or operation.undone_at is None:
            return "-"
        return f"{operation.undone_at:%Y-%m-%d %H:%M} by {operation.undone_by or '?'}"

    def get_urls(self):
        return [
            path("<int:pk>/undo/", self.admin_site.admin_view(self.undo_view), name="predictions_autoacceptrun_undo"),
            *super().get_urls(),
        ]

    def undo_view(self, request, pk: int):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_undo_permission(request):
            raise PermissionDenied
        _undo(self, request, get_object_or_404(AutoAcceptRun.objects.select_related("operation"), pk=pk))
        return HttpResponseRedirect(reverse("admin:predictions_autoacceptrun_change", args=[pk]))

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = {**(extra_context or {}), "can_undo": self.has_undo_permission(request)}
        return super().change_view(request, object_id, form_url, extra_context)
