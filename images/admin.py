"""Admin for images and upload batches.

Uploading goes through ImageAdmin's "upload/" page (the Add buttons lead there).
Querysets come from images.selectors; writes go through images.services. The
actions on the image and batch lists come from predictions/admin/image_actions.py.
"""

from __future__ import annotations

from functools import partial

from django.contrib import admin
from django.db import models
from django.shortcuts import redirect
from django.template.loader import render_to_string
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.safestring import mark_safe
from django.views.decorators.csrf import csrf_exempt

from predictions.admin.exports import ImageExportMixin
from predictions.admin.gallery import ImageGalleryMixin
from predictions.admin.gold import GoldPanelMixin
from predictions.admin.image_page import ImagePageMixin
from predictions.admin.progress_views import LiveProgressMixin, batch_progress_finished
from predictions.admin.similar_views import SimilarPanelMixin
from predictions.admin.image_actions import (
    ImageActionPermissionsMixin,
    confirm_predictions,
    mark_gold,
    repredict_batches,
    repredict_images,
    retry_batch_predictions,
    retry_image_predictions,
    set_label,
    unmark_gold,
)
from predictions.models import Label, ModelVersion
from predictions.selectors import images as selectors
from predictions.selectors.quality import gold_hidden_from, reviews_visible_to
from predictions.selectors.versions import model_version_active_id

from . import services
from .duplicates_views import NearDuplicateFilter, near_duplicates_view
from . import upload_views
from .models import Image, UploadBatch
from .services import FileStatus

REPORT_ROWS_SHOWN = 1000


# --- filters -----------------------------------------------------------------------


class ReviewStatusFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status"

    def lookups(self, request, model_admin):
        return selectors.ReviewStatus.choices

    def queryset(self, request, queryset):
        if self.value() in selectors.ReviewStatus.values:
            gold_as_open = gold_hidden_from(request.user)
            return selectors.images_with_review_status(queryset, self.value(), gold_as_open=gold_as_open)
        return queryset


class PredictedLabelFilter(admin.SimpleListFilter):
    title = "predicted label (active model)"
    parameter_name = "predicted_label"

    def lookups(self, request, model_admin):
        return [(str(label.pk), label.name) for label in Label.objects.all()]

    def queryset(self, request, queryset):
        if self.value() and self.value().isdigit():
            return selectors.images_predicted_as(queryset, label_id=int(self.value()))
        return queryset


class ModelVersionFilter(admin.SimpleListFilter):
    title = "predicted by model version"
    parameter_name = "model_version"

    def lookups(self, request, model_admin):
        return [(str(version.pk), version.name) for version in ModelVersion.objects.only("pk", "name")]

    def queryset(self, request, queryset):
        if self.value() and self.value().isdigit():
            return selectors.images_predicted_by(queryset, version_id=int(self.value()))
        return queryset


class BatchFilter(admin.SimpleListFilter):
    """The latest uploads; any batch can be chosen through ?batch=<id> (the batch page links it)."""

    title = "upload batch"
    parameter_name = "batch"
    recent = 20

    def lookups(self, request, model_admin):
        return [(str(batch.pk), str(batch)) for batch in UploadBatch.objects.only("pk", "name")[: self.recent]]

    def queryset(self, request, queryset):
        if self.value() and self.value().isdigit():
            return queryset.filter(batch_id=int(self.value()))
        return queryset


# --- images ------------------------------------------------------------------------


@admin.register(Image)
class ImageAdmin(
    ImagePageMixin, GoldPanelMixin, SimilarPanelMixin, ImageGalleryMixin, ImageExportMixin, ImageActionPermissionsMixin,
    admin.ModelAdmin,
):
    list_display = [
        "thumbnail_tag",
        "original_name",
        "predicted_label",
        "confidence",
        "final_label",
        "status",
        "uploaded_at",
    ]
    list_display_links = ["thumbnail_tag", "original_name"]
    list_filter = [
        ReviewStatusFilter, PredictedLabelFilter, "final_label", BatchFilter, ModelVersionFilter, NearDuplicateFilter,
    ]
    search_fields = ["original_name", "=sha256"]
    list_select_related = ["final_label"]
    list_per_page = 100
    show_full_result_count = False
    # Import-export's changelist with a link to the near-duplicate groups.
    import_export_change_list_template = "admin/images/image/change_list.html"
    actions = [retry_image_predictions, set_label, confirm_predictions, repredict_images, mark_gold, unmark_gold]
    readonly_fields = [
        "preview",
        "original_name",
        "format",
        "width",
        "height",
        "size_bytes",
        "sha256",
        "file",
        "uploaded_by",
        "uploaded_at",
        "batch",
        "final_label",
        "reviewed_by",
        "reviewed_at",
        "review_count",
        "predictions_panel",
        "failures_panel",
        "review_history",
    ]
    fieldsets = [
        (None, {"fields": ["preview", "original_name", ("format", "width", "height", "size_bytes"), "sha256", "file"]}),
        ("Upload", {"fields": ["uploaded_by", "uploaded_at", "batch"]}),
        ("Predictions", {"fields": ["predictions_panel", "failures_panel"]}),
        ("Review", {"fields": ["final_label", "reviewed_by", "reviewed_at", "review_count", "review_history"]}),
    ]

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        return selectors.images_with_active_prediction(queryset, gold_as_open=gold_hidden_from(request.user))

    def get_urls(self):
        # The upload views check CSRF themselves (images/upload_views.py says why).
        upload = self.admin_site.admin_view(csrf_exempt(partial(upload_views.upload_view, model_admin=self)))
        upload_part = self.admin_site.admin_view(csrf_exempt(partial(upload_views.upload_part_view, model_admin=self)))
        finish = self.admin_site.admin_view(partial(upload_views.upload_finish_view, model_admin=self))
        duplicates = self.admin_site.admin_view(partial(near_duplicates_view, model_admin=self))
        prefix = f"{self.opts.app_label}_{self.opts.model_name}"
        return [
            path("upload/", upload, name=f"{prefix}_upload"),
            path("upload/part/", upload_part, name=f"{prefix}_upload_part"),
            path("upload/<int:batch_id>/finish/", finish, name=f"{prefix}_upload_finish"),
            path("near-duplicates/", duplicates, name=f"{self.opts.app_label}_{self.opts.model_name}_near_duplicates"),
            *super().get_urls(),
        ]

    def add_view(self, request, form_url="", extra_context=None):
        return redirect("admin:images_image_upload")

    def delete_model(self, request, obj):
        services.images_delete(images=[obj])

    # An image's predictions, failures and reviews describe only it and go with it:
    # "delete image" (Leads) is enough, although the review history's own admin
    # refuses to delete a review by itself (undo is how a decision is taken back).
    def get_deleted_objects(self, objs, request):
        deleted, counts, perms_needed, protected = super().get_deleted_objects(objs, request)
        if self.has_delete_permission(request):
            owned = {
                relation.related_model._meta.verbose_name
                for relation in Image._meta.related_objects
                if relation.on_delete is models.CASCADE
            }
            perms_needed = perms_needed - owned
        return deleted, counts, perms_needed, protected

    def delete_queryset(self, request, queryset):
        services.images_delete(images=queryset)

    @admin.display(description="")
    def thumbnail_tag(self, image):
        if image.thumbnail:
            return format_html(
                '<img src="{}" alt="" width="64" height="64" loading="lazy" style="object-fit: cover">',
                image.thumbnail.url,
            )
        return mark_safe(
            '<span title="Thumbnail not made yet" style="display:inline-block;width:64px;height:64px;'
            'background:var(--darkened-bg);"></span>'
        )

    @admin.display(description="predicted", ordering="predicted_label_name")
    def predicted_label(self, image):
        return image.predicted_label_name or "–"

    @admin.display(description="confidence", ordering="predicted_confidence")
    def confidence(self, image):
        return "–" if image.predicted_confidence is None else f"{image.predicted_confidence:.0%}"

    @admin.display(description="status", ordering="review_status")
    def status(self, image):
        return selectors.ReviewStatus(image.review_status).label

    @admin.display(description="image")
    def preview(self, image):
        return format_html(
            '<a href="{0}"><img src="{0}" alt="{1}" style="max-width: 512px; max-height: 512px"></a>',
            image.file.url,
            image.original_name,
        )

    @admin.display(description="predictions")
    def predictions_panel(self, image):
        return render_to_string(
            "admin/images/image/predictions_panel.html", {"predictions": selectors.image_predictions(image=image)}
        )

    @admin.display(description="prediction failures")
    def failures_panel(self, image):
        failures = image.prediction_failures.select_related("model_version").order_by("-created_at")
        return render_to_string("admin/images/image/failures_panel.html", {"failures": failures})

    @admin.display(description="review history")
    def review_history(self, image):
        user = image.browse_request.user  # set by ImagePageMixin.get_object
        reviews = reviews_visible_to(
            user=user, reviews=image.reviews.select_related("reviewer", "label", "prediction__label", "operation")
        )
        return render_to_string(
            "admin/images/image/review_history.html",
            {
                "reviews": reviews,
                "next": reverse("admin:images_image_change", args=[image.pk]),
                "gold_hidden": gold_hidden_from(user),
            },
        )


# --- upload batches ----------------------------------------------------------------


@admin.register(UploadBatch)
class UploadBatchAdmin(LiveProgressMixin, ImageActionPermissionsMixin, admin.ModelAdmin):
    list_display = [
        "__str__",
        "source",
        "created_by",
        "created_at",
        "accepted_count",
        "duplicate_count",
        "rejected_count",
        "progress",
    ]
    list_filter = ["source", "created_at"]
    search_fields = ["name"]
    list_select_related = ["created_by"]
    show_full_result_count = False
    actions = [retry_batch_predictions, repredict_batches]
    fieldsets = [
        (None, {"fields": ["name", "source", "created_by", "created_at"]}),
        ("Files", {"fields": ["accepted", "near_duplicates", "duplicates", "rejected"]}),
        ("Predictions (active model)", {"fields": ["progress", "failed_predictions"]}),
        ("Review", {"fields": ["overlap_share"]}),
    ]
    readonly_fields = [
        "name",
        "source",
        "created_by",
        "created_at",
        "accepted",
        "near_duplicates",
        "duplicates",
        "rejected",
        "progress",
        "failed_predictions",
    ]

    # The page's bar follows the cluster (predictions/admin/progress_views.py).
    live_fields = ["progress", "failed_predictions"]

    def get_queryset(self, request):
        return selectors.batches_with_progress(super().get_queryset(request))

    def progress_finished(self, batch):
        return batch_progress_finished(batch)

    # A batch is the record of an upload: only its overlap share is edited (by
    # whoever holds images.change_uploadbatch: Leads), and new ones come from the
    # upload page. Saved alone, so the counts an upload still in progress writes stay its own.
    def save_model(self, request, obj, form, change):
        obj.save(update_fields=["overlap_share"] if change else None)

    def add_view(self, request, form_url="", extra_context=None):
        return redirect("admin:images_image_upload")

    def has_add_permission(self, request):
        return request.user.has_perm("images.add_image")

    @admin.display(description="predicted")
    def progress(self, batch):
        failed = format_html(", <strong>{} failed</strong>", batch.failed_count) if batch.failed_count else ""
        return format_html(
            '<progress value="{}" max="{}"></progress> {} / {}{}',
            batch.predicted_count,
            max(batch.accepted_count, 1),
            batch.predicted_count,
            batch.accepted_count,
            failed,
        )

    @admin.display(description="accepted")
    def accepted(self, batch):
        url = reverse("admin:images_image_changelist") + f"?batch={batch.pk}"
        return format_html('{} image(s) stored — <a href="{}">show them</a>', batch.accepted_count, url)

    @admin.display(description="near-duplicates (stored)")
    def near_duplicates(self, batch):
        entries = [entry for entry in batch.report if entry.get("duplicate_of") and entry.get("image_id")]
        template = "admin/images/uploadbatch/near_duplicates_table.html"
        return render_to_string(template, {"entries": entries[:REPORT_ROWS_SHOWN]})

    @admin.display(description="duplicates")
    def duplicates(self, batch):
        return self._report_table(batch, FileStatus.DUPLICATE)

    @admin.display(description="rejected")
    def rejected(self, batch):
        return self._report_table(batch, FileStatus.REJECTED)

    @admin.display(description="failed predictions")
    def failed_predictions(self, batch):
        failures = selectors.batch_prediction_failures(batch=batch, version_id=model_version_active_id())
        return render_to_string(
            "admin/images/uploadbatch/failures_table.html", {"failures": failures[:REPORT_ROWS_SHOWN]}
        )

    def _report_table(self, batch, status: str):
        entries = [entry for entry in batch.report if entry.get("status") == status]
        return render_to_string(
            "admin/images/uploadbatch/report_table.html",
            {
                "entries": entries[:REPORT_ROWS_SHOWN],
                "more": max(0, len(entries) - REPORT_ROWS_SHOWN),
                "link_images": status == FileStatus.DUPLICATE,
            },
        )
