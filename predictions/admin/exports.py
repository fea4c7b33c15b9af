"""Admin: label export of images, and the background export jobs.

`ImageExportMixin` goes on the image admin (images/admin.py): django-import-export's
admin mixin with this tool's rules added: CSV (plain, or with a byte order mark for
Excel), files named by what they hold and the day ("labels-2026-11-29.csv"), a
background ExportJob above settings.EXPORT_SYNC_MAX_ROWS, and training-set actions.
The label import is in predictions/admin/label_imports.py.
"""

import csv
import os

from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.core.files.storage import default_storage
from django.http import FileResponse, Http404, HttpResponseRedirect, StreamingHttpResponse
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils import timezone
from django.utils.cache import patch_cache_control
from django.utils.html import format_html
from import_export.admin import ExportActionMixin
from import_export.formats.base_formats import CSV
from import_export.forms import SelectableFieldsExportForm

from predictions.admin.readonly import ReadOnlyAdminMixin
from predictions.models import ExportJob
from predictions.resources import (
    EXPORT_RESOURCES,
    ImageLabelResource,
    ImageLabelWithProbabilitiesResource,
    ImageLabelWithSuspectScoreResource,
    file_url_function,
)
from predictions.selectors.exports import training_set_rows
from predictions.services.exports import (
    EXPORT_KIND_NAMES,
    TRAINING_SET_STEM,
    export_job_delete,
    labels_csv_export_start,
    training_zip_export_start,
)

EXPORT_PERMISSION = "images.export_image"


class ExcelCSV(CSV):
    """CSV that Excel opens as UTF-8: the same text after a byte order mark.

    Without the mark Excel reads a CSV in the machine's legacy code page, and
    "Überprüfung_größe_日本.jpg" comes out as mojibake. Python reads it with
    encoding "utf-8-sig" (pandas skips the mark by itself).
    """

    def get_title(self):
        return "csv for Excel (UTF-8 with BOM)"

    def export_data(self, dataset, **kwargs):
        return "\ufeff" + dataset.export("csv", **kwargs)

    def can_import(self):
        return False


class ExportForm(SelectableFieldsExportForm):
    """import-export's export form, with plain CSV chosen to begin with."""

    def __init__(self, formats, resources, **kwargs):
        super().__init__(formats, resources, **kwargs)
        self.fields["format"].choices = [choice for choice in self.fields["format"].choices if choice[0]]
        self.fields["format"].initial = "0"


class _Echo:
    """A file-like object whose write returns the line, for streaming csv.writer output."""

    def write(self, value: str) -> str:
        return value


@admin.action(
    permissions=["export"],
    description="Export training set CSV (path,label,split,image_url) of selected reviewed images",
)
def export_training_csv(modeladmin, request, queryset):
    """Stream `path,label,split,image_url` rows of the reviewed images: the CSV `python -m ml.train --data` reads.

    Paths are relative to the root of the training zip, the same `<label>/<sha256>.<ext>`
    as its labels.csv: the CSV works next to an unpacked zip of the same images, on
    any machine, and a script can fetch the files into that layout from `image_url`
    (with an API token). Values are written as they are, without the formula escaping
    of the label export: this file is read by the trainer, and an escaped label would
    be a different class.
    """
    writer = csv.writer(_Echo())
    image_url = file_url_function(base_url=request.build_absolute_uri("/"))

    def lines():
        yield writer.writerow(("path", "label", "split", "image_url"))
        for row in training_set_rows(queryset=queryset):
            yield writer.writerow((row.path, row.label, row.split, image_url(row.file)))

    response = StreamingHttpResponse(lines(), content_type="text/csv; charset=utf-8")
    filename = f"{TRAINING_SET_STEM}-{timezone.localdate():%Y-%m-%d}.csv"
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


@admin.action(permissions=["export"], description="Build training zip (one folder per label) of selected images")
def export_training_zip(modeladmin, request, queryset):
    image_ids = list(queryset.filter(final_label__isnull=False).order_by("pk").values_list("pk", flat=True))
    if not image_ids:
        modeladmin.message_user(request, "None of the selected images is reviewed yet; no zip built.", messages.WARNING)
        return None
    job = training_zip_export_start(image_ids=image_ids, user=request.user)
    return _export_started_response(modeladmin, request, job)


def _export_started_response(modeladmin, request, job: ExportJob):
    """Tell the user the export runs in the background, with a link to follow it."""
    job_url = reverse("admin:predictions_exportjob_change", args=[job.pk])
    modeladmin.message_user(
        request,
        format_html(
            '{} of {} images runs in the background. <a href="{}">Follow it and download the file when done</a>.',
            job,
            job.total,
            job_url,
        ),
        messages.INFO,
    )
    if request.user.has_perm("predictions.view_exportjob"):
        return HttpResponseRedirect(job_url)
    changelist_url = reverse(f"admin:{modeladmin.opts.app_label}_{modeladmin.opts.model_name}_changelist")
    return HttpResponseRedirect(f"{changelist_url}?{request.GET.urlencode()}" if request.GET else changelist_url)


class _TooBigForTheRequest(Exception):
    """More rows than settings.EXPORT_SYNC_MAX_ROWS: the export runs as an ExportJob."""

    def __init__(self, *, queryset, export_form):
        super().__init__()
        self.queryset = queryset
        self.export_form = export_form


class ImageExportMixin(ExportActionMixin):
    """Label export for the image changelist: the Export button (current filters and
    search), the "Export selected" action, and the training-set actions.

    Up to settings.EXPORT_SYNC_MAX_ROWS rows the file is the response, as
    import-export makes it; above, an ExportJob writes it in the cluster.
    """

    resource_classes = [ImageLabelResource, ImageLabelWithProbabilitiesResource, ImageLabelWithSuspectScoreResource]
    show_change_form_export = False  # one image's row is on its page already
    # CSV only: the format the background export writes, and the one the
    # formula neutralisation is made for; the second has Excel's byte order mark.
    export_formats = [CSV, ExcelCSV]
    export_form_class = ExportForm

    def _chosen_export_resource(self, request) -> type[ImageLabelResource]:
        # The export form posts the resource's index; it was validated before the file is made.
        classes = self.get_export_resource_classes(request)
        index = request.POST.get("resource", "0")
        return classes[int(index)] if index.isdigit() and int(index) < len(classes) else classes[0]

    def get_export_filename(self, request, queryset, file_format):
        return self._chosen_export_resource(request).export_filename(
            day=timezone.localdate(), extension=file_format.get_extension()
        )

    def get_export_resource_kwargs(self, request, **kwargs):
        return {**super().get_export_resource_kwargs(request, **kwargs), "base_url": request.build_absolute_uri("/")}

    def get_valid_export_item_pks(self, request):
        # The library's default lists every image id in the table; only the
        # posted ids the user's changelist can show are valid.
        posted = request.POST.getlist("export_items")
        return list(self.get_queryset(request).filter(pk__in=posted).values_list("pk", flat=True))

    def get_actions(self, request):
        actions = super().get_actions(request)
        if self.has_export_permission(request):
            for action in (export_training_csv, export_training_zip):
                actions[action.__name__] = self.get_action(action)
        return actions

    def _export_in_background(self, request, queryset, *, resource_class, fields=None, excel=False):
        job = labels_csv_export_start(
            image_ids=list(queryset.values_list("pk", flat=True)),
            user=request.user,
            resource_key=resource_class.export_key,
            fields=fields,
            base_url=request.build_absolute_uri("/"),
            byte_order_mark=excel,
        )
        return _export_started_response(self, request, job)

    # Big exports go to the cluster. import-export's public hook between the chosen
    # rows and the response is get_export_data(), which must return the file's
    # content (ExportMixin.export_action builds the HttpResponse around it), so it
    # hands a big queryset back to export_action() by raising, and export_action()
    # answers with the ExportJob instead. Both are public, documented methods.

    def get_export_data(self, file_format, request, queryset, **kwargs):
        if queryset.count() > settings.EXPORT_SYNC_MAX_ROWS:
            if not self.has_export_permission(request):
                raise PermissionDenied
            raise _TooBigForTheRequest(queryset=queryset, export_form=kwargs.get("export_form"))
        return super().get_export_data(file_format, request, queryset, **kwargs)

    def export_action(self, request):
        # The Export button and the export form of "Export selected" both end here.
        try:
            return super().export_action(request)
        except _TooBigForTheRequest as big:
            formats = self.get_export_formats()
            return self._export_in_background(
                request,
                big.queryset,
                resource_class=self.choose_export_resource_class(big.export_form, request),
                fields=self.get_export_resource_fields_from_form(big.export_form),
                excel=formats[int(big.export_form.cleaned_data["format"])] is ExcelCSV,
            )

    def export_admin_action(self, request, queryset):
        # A selection too big for the request goes straight to the cluster with
        # every column: posting its ids back through the export form would
        # exceed Django's form-field limit.
        if queryset.count() > settings.EXPORT_SYNC_MAX_ROWS:
            return self._export_in_background(request, queryset, resource_class=ImageLabelResource)
        return super().export_admin_action(request, queryset)


class ExportKindFilter(admin.SimpleListFilter):
    """The kinds in words ("Training zip"), not as stored ("training_zip"); the field has no choices."""

    title = "kind"
    parameter_name = "kind"

    def lookups(self, request, model_admin):
        return list(EXPORT_KIND_NAMES.items())

    def queryset(self, request, queryset):
        return queryset.filter(kind=self.value()) if self.value() else queryset


@admin.register(ExportJob)
class ExportJobAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Made by the export actions; viewed, downloaded and deleted here."""

    list_display = [
        "__str__", "kind_name", "status", "progress", "created_by", "created_at", "finished_at", "download",
    ]  # fmt: skip
    list_filter = [ExportKindFilter, "status"]
    list_select_related = ["created_by"]
    readonly_fields = [
        "kind_name", "status", "progress", "download", "error", "created_by", "created_at", "finished_at", "columns",
    ]  # fmt: skip
    fields = readonly_fields
    date_hierarchy = "created_at"

    @admin.display(description="kind", ordering="kind")
    def kind_name(self, job: ExportJob) -> str:
        return EXPORT_KIND_NAMES.get(job.kind, job.kind)

    @admin.display(description="progress")
    def progress(self, job: ExportJob) -> str:
        if not job.total:
            return "-"
        return f"{job.done} / {job.total} ({job.done * 100 // job.total}%)"

    @admin.display(description="columns")
    def columns(self, job: ExportJob) -> str:
        if job.kind != "labels_csv":
            return "-"
        resource = EXPORT_RESOURCES.get(job.params.get("resource"), ImageLabelResource)
        excel = " (csv for Excel)" if job.params.get("byte_order_mark") else ""
        return f"{resource.Meta.name}{excel}: " + (", ".join(job.params.get("fields") or []) or "all")

    @admin.display(description="file")
    def download(self, job: ExportJob) -> str:
        if job.status != ExportJob.Status.DONE or not job.file:
            return "-"
        return format_html(
            '<a href="{}">Download {}</a>',
            reverse("admin:predictions_exportjob_download", args=[job.pk]),
            os.path.basename(job.file.name),
        )

    def get_urls(self):
        return [
            path(
                "<int:object_id>/download/",
                self.admin_site.admin_view(self.download_view),
                name="predictions_exportjob_download",
            ),
            *super().get_urls(),
        ]

    def download_view(self, request, object_id: int):
        """Stream a finished export's file to a user who may export images."""
        if not (self.has_view_permission(request) and request.user.has_perm(EXPORT_PERMISSION)):
            raise PermissionDenied
        job = get_object_or_404(ExportJob, pk=object_id)
        if job.status != ExportJob.Status.DONE or not job.file:
            raise Http404("This export has no file yet.")
        try:
            handle = default_storage.open(job.file.name, "rb")
        except FileNotFoundError as exc:
            raise Http404("The export's file is gone from the storage.") from exc
        response = FileResponse(handle, as_attachment=True, filename=os.path.basename(job.file.name))
        patch_cache_control(response, private=True, no_cache=True)
        return response

    def changelist_view(self, request, extra_context=None):
        running = ExportJob.objects.filter(status__in=[ExportJob.Status.QUEUED, ExportJob.Status.RUNNING]).exists()
        return super().changelist_view(request, {**(extra_context or {}), "exports_running": running})

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        # The page reloads itself while the file is being written (see the template).
        running = (ExportJob.Status.QUEUED, ExportJob.Status.RUNNING)
        context["export_running"] = obj is not None and obj.status in running
        return super().render_change_form(request, context, add=add, change=change, form_url=form_url, obj=obj)

    def delete_model(self, request, obj):
        export_job_delete(job=obj)

    def delete_queryset(self, request, queryset):
        for job in queryset:
            export_job_delete(job=job)
