"""Admin: label imports. The Import button of the review history, and the jobs that run big files.

A file up to settings.LABEL_IMPORT_SYNC_MAX_ROWS rows goes through
django-import-export's screen (preview, per-row errors, confirm); a bigger one
becomes a LabelImportJob checked in the cluster, whose page shows its progress
and, for a clean dry run, a button to apply it. Both use
predictions.services.label_imports, and an applied file is one undoable
LabelOperation. Needs predictions.import_review (Leads); changing images already
reviewed needs predictions.change_review as well, and the importer's explicit choice.
"""

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils.decorators import method_decorator
from django.utils.html import format_html, format_html_join
from django.views.decorators.http import require_POST
from import_export.admin import ImportMixin
from import_export.formats.base_formats import CSV
from import_export.forms import ConfirmImportForm, ImportForm

from predictions.admin.operations import undo_url
from predictions.admin.readonly import ReadOnlyAdminMixin
from predictions.models import LabelImportJob
from predictions.resources import LabelImportResource
from predictions.services.label_import_jobs import (
    label_import_job_apply_start,
    label_import_job_delete,
    label_import_job_overwrites,
    label_import_job_start,
)
from predictions.services.label_imports import label_csv_row_count

IMPORT_PERMISSION = "predictions.import_review"
OVERWRITE_PERMISSION = "predictions.change_review"
OVERWRITE_HELP = (
    "Also change images that are already reviewed or open on someone's review screen "
    "(never gold images). Off: those rows are skipped and counted."
)


def may_overwrite_reviewed(user) -> bool:
    return user.has_perm(OVERWRITE_PERMISSION)


class LabelImportForm(ImportForm):
    overwrite_reviewed = forms.BooleanField(label="Change reviewed images", required=False, help_text=OVERWRITE_HELP)


class LabelConfirmImportForm(ConfirmImportForm):
    overwrite_reviewed = forms.BooleanField(required=False, widget=forms.HiddenInput())


class ReviewImportMixin(ImportMixin):
    """Import existing labels (sha256 or file name, label) as Reviews, with the dry-run preview."""

    resource_classes = [LabelImportResource]
    import_formats = [CSV]
    import_form_class = LabelImportForm
    confirm_form_class = LabelConfirmImportForm
    # The LabelOperation is the record of an import, and how it is undone.
    skip_admin_log = True

    def _overwrite_chosen(self, request, form) -> bool:
        return bool(form is not None and form.cleaned_data.get("overwrite_reviewed")) and may_overwrite_reviewed(
            request.user
        )

    def create_import_form(self, request):
        form = super().create_import_form(request)
        if not may_overwrite_reviewed(request.user):
            del form.fields["overwrite_reviewed"]
        return form

    def get_confirm_form_initial(self, request, import_form):
        initial = super().get_confirm_form_initial(request, import_form)
        if import_form is not None:
            initial["overwrite_reviewed"] = self._overwrite_chosen(request, import_form)
        return initial

    def get_import_data_kwargs(self, **kwargs):
        overwrite = self._overwrite_chosen(kwargs["request"], kwargs.get("form"))
        return {**super().get_import_data_kwargs(**kwargs), "overwrite_reviewed": overwrite}

    def import_action(self, request, **kwargs):
        # A file too big for one request is checked in the cluster instead of previewed here.
        if request.method == "POST" and self.has_import_permission(request):
            form = self.create_import_form(request)
            try:
                rows = _row_count(form.cleaned_data["import_file"]) if form.is_valid() else 0
            except ValidationError as exc:  # a file the csv module cannot read: said here, not as a server error
                messages.error(request, f"{form.cleaned_data['import_file'].name}: {' '.join(exc.messages)}")
                return HttpResponseRedirect(request.get_full_path())
            if rows > settings.LABEL_IMPORT_SYNC_MAX_ROWS:
                job = label_import_job_start(
                    file=form.cleaned_data["import_file"],
                    user=request.user,
                    dry_run=True,
                    overwrite_reviewed=self._overwrite_chosen(request, form),
                )
                messages.info(
                    request,
                    f"{job.file_name} has {job.total_rows} rows: it is checked in the background. "
                    "Apply it from this page when the dry run is done.",
                )
                return HttpResponseRedirect(reverse("admin:predictions_labelimportjob_change", args=[job.pk]))
        return super().import_action(request, **kwargs)

    def add_success_message(self, result, request):
        if result.has_errors() or result.has_validation_errors():
            # Nothing was applied (the data changed between preview and confirm).
            messages.error(
                request, "Nothing imported: some rows are no longer valid. Upload the file again to see why."
            )
            return
        applied = getattr(result, "operation_result", None)
        if applied is None:
            messages.success(request, "Import finished: the file changes no label.")
            return
        skipped = applied.skipped_text()
        messages.success(
            request,
            format_html(
                'Import finished: {} label(s) recorded as imported reviews ({}, <a href="{}">undo</a>){}',
                applied.changed,
                applied.operation,
                undo_url(applied.operation),
                f"; skipped: {skipped}." if skipped else ".",
            ),
        )


def _row_count(upload) -> int:
    try:
        return label_csv_row_count(file=upload)
    except (UnicodeDecodeError, ValueError):
        return 0  # import-export's own reading reports the problem


@admin.register(LabelImportJob)
class LabelImportJobAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Big label files, checked and applied in the cluster; started from the review history's Import."""

    list_display = ["__str__", "file_name", "kind", "status", "progress", "created_by", "created_at", "finished_at"]
    list_filter = ["dry_run", "status"]
    list_select_related = ["created_by", "operation"]
    date_hierarchy = "created_at"
    fields = [
        "file_name", "kind", "status", "progress", "applied", "summary", "problems", "error", "operation_link",
        "created_by", "created_at", "finished_at",
    ]  # fmt: skip
    readonly_fields = fields

    @admin.display(description="kind", ordering="dry_run")
    def kind(self, job: LabelImportJob) -> str:
        kind = "Dry run" if job.dry_run else "Apply"
        return f"{kind}, changing reviewed images" if label_import_job_overwrites(job) else kind

    @admin.display(description="rows checked")
    def progress(self, job: LabelImportJob) -> str:
        return format_html(
            '<progress value="{}" max="{}" style="width: 6em; vertical-align: middle;"></progress> {} / {}',
            job.rows_checked, job.total_rows or 1, job.rows_checked, job.total_rows,
        )  # fmt: skip

    @admin.display(description="rows applied")
    def applied(self, job: LabelImportJob) -> str:
        if job.dry_run:
            return "-"
        changed = (job.report or {}).get("applied", {}).get("changed")
        written = f" ({changed} labels changed)" if changed is not None else ""
        return format_html("{} / {}{}", job.rows_applied, (job.report or {}).get("change", "?"), written)

    @admin.display(description="operation")
    def operation_link(self, job: LabelImportJob) -> str:
        operation = job.operation
        if operation is None:
            return "-"
        undo = "" if operation.undone_at else format_html(' (<a href="{}">undo</a>)', undo_url(operation))
        return format_html("{}{}", operation, undo)

    @admin.display(description="outcome")
    def summary(self, job: LabelImportJob) -> str:
        report = job.report or {}
        if "rows" not in report:
            return "-"
        lines = [
            (f"{report['change']} would change a label" if job.dry_run else f"{report['change']} to change",),
            (f"{report['unchanged']} change nothing (no label, the current one, or a repeat)",),
            *((f"{count} skipped: {reason}",) for reason, count in report.get("skipped", {}).items()),
            (f"{report['invalid']} invalid",),
        ]
        skipped_at_apply = report.get("applied", {}).get("skipped", {})
        lines += [(f"{count} left alone when applied: {reason}",) for reason, count in skipped_at_apply.items()]
        return format_html("<ul>{}</ul>", format_html_join("", "<li>{}</li>", lines))

    @admin.display(description="invalid rows")
    def problems(self, job: LabelImportJob) -> str:
        problems = (job.report or {}).get("problems", [])
        if not problems:
            return "-"
        rows = (
            (problem["row"], "; ".join(f"{name}: {message}" for name, message in problem["errors"].items()))
            for problem in problems
        )
        more = (job.report or {}).get("invalid", 0) - len(problems)
        return format_html(
            "<table><tr><th>row</th><th>problem</th></tr>{}</table>{}",
            format_html_join("", "<tr><td>{}</td><td>{}</td></tr>", rows),
            f"… and {more} more" if more > 0 else "",
        )

    @staticmethod
    def has_apply_permission(request, job: LabelImportJob) -> bool:
        return request.user.has_perm(IMPORT_PERMISSION) and (
            not label_import_job_overwrites(job) or may_overwrite_reviewed(request.user)
        )

    def may_apply(self, request, job: LabelImportJob) -> bool:
        clean_dry_run = job.dry_run and job.status == LabelImportJob.Status.DONE and not job.report.get("invalid")
        return clean_dry_run and self.has_apply_permission(request, job)

    def get_urls(self):
        apply = self.admin_site.admin_view(self.apply_view)
        return [path("<int:object_id>/apply/", apply, name="predictions_labelimportjob_apply"), *super().get_urls()]

    @staticmethod
    def _running(job) -> bool:
        return job is not None and job.status in (LabelImportJob.Status.QUEUED, LabelImportJob.Status.RUNNING)

    def changelist_view(self, request, extra_context=None):
        running = LabelImportJob.objects.filter(
            status__in=[LabelImportJob.Status.QUEUED, LabelImportJob.Status.RUNNING]
        ).exists()
        return super().changelist_view(request, {**(extra_context or {}), "imports_running": running})

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        # The page reloads itself while the job runs, and offers to apply a clean dry run.
        context["job_running"] = self._running(obj)
        context["can_apply"] = obj is not None and self.may_apply(request, obj)
        return super().render_change_form(request, context, add=add, change=change, form_url=form_url, obj=obj)

    @method_decorator(require_POST)
    def apply_view(self, request, object_id: int):
        """Apply a clean dry run's file as a new job (in the cluster), then show that job."""
        job = get_object_or_404(LabelImportJob, pk=object_id)
        if not (self.has_view_permission(request, job) and self.has_apply_permission(request, job)):
            raise PermissionDenied
        try:
            applying = label_import_job_apply_start(job=job, user=request.user)
        except ValidationError as exc:
            self.message_user(request, " ".join(exc.messages), messages.ERROR)
            return HttpResponseRedirect(reverse("admin:predictions_labelimportjob_change", args=[job.pk]))
        self.message_user(request, f"{job.file_name} is being applied in the background.", messages.INFO)
        return HttpResponseRedirect(reverse("admin:predictions_labelimportjob_change", args=[applying.pk]))

    def delete_model(self, request, obj):
        label_import_job_delete(job=obj)

    def delete_queryset(self, request, queryset):
        for job in queryset:
            label_import_job_delete(job=job)

