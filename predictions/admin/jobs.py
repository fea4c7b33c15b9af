"""Admin: prediction jobs, predictions and prediction failures.

All three are records written by the pipeline, so they are read-only here; the
one thing a user does with them is queue the failed images again (the retry
actions live with the other image actions, in image_actions.py).
"""

from django.contrib import admin
from django.urls import path
from django.utils.html import format_html

from predictions.admin.image_actions import (
    ImageActionPermissionsMixin,
    retry_failed_images_of_jobs,
    retry_selected_failures,
)
from predictions.admin.progress_views import LiveProgressMixin, dashboard_progress_view
from predictions.admin.readonly import ReadOnlyAdminMixin
from predictions.models import Prediction, PredictionFailure, PredictionJob


class PipelineRecordAdmin(ReadOnlyAdminMixin, ImageActionPermissionsMixin, admin.ModelAdmin):
    """Rows the pipeline writes; their retry actions follow the image actions' "predict" rule."""


@admin.register(PredictionJob)
class PredictionJobAdmin(LiveProgressMixin, PipelineRecordAdmin):
    list_display = ["__str__", "model_version", "reason", "status", "progress", "batch", "created_by", "created_at", "finished_at"]
    list_filter = ["status", "reason", "model_version", "created_at"]
    list_select_related = ["model_version", "batch", "created_by"]
    date_hierarchy = "created_at"
    actions = [retry_failed_images_of_jobs]
    fields = [
        "model_version", "batch", "reason", "status", "progress", "error",
        "created_by", "created_at", "started_at", "finished_at",
    ]
    readonly_fields = fields

    def get_urls(self):
        # The admin index's live dashboard (templates/admin/index.html) asks here.
        dashboard = self.admin_site.admin_view(dashboard_progress_view)
        return [path("dashboard-progress/", dashboard, name="predictions_dashboard_progress"), *super().get_urls()]

    @admin.display(description="progress")
    def progress(self, job: PredictionJob) -> str:
        settled = job.done + job.failed
        failed = format_html(" ({} failed)", job.failed) if job.failed else ""
        return format_html(
            '<progress value="{}" max="{}" style="width: 6em; vertical-align: middle;"></progress> {} / {}{}',
            settled, job.total or 1, job.done, job.total, failed,
        )


@admin.register(Prediction)
class PredictionAdmin(PipelineRecordAdmin):
    list_display = ["image", "model_version", "label", "confidence_percent", "margin", "job", "created_at"]
    list_filter = ["model_version", "label"]
    list_select_related = ["image", "model_version", "label", "job__model_version"]
    search_fields = ["image__original_name", "=image__sha256"]
    # Counting a large table on every changelist page costs more than it tells.
    show_full_result_count = False
    fields = ["image", "model_version", "label", "confidence", "margin", "probabilities", "inference_ms", "job", "created_at"]
    readonly_fields = fields

    @admin.display(description="confidence", ordering="confidence")
    def confidence_percent(self, prediction: Prediction) -> str:
        return f"{prediction.confidence:.1%}"


@admin.register(PredictionFailure)
class PredictionFailureAdmin(PipelineRecordAdmin):
    list_display = ["image", "model_version", "message", "job", "created_at"]
    list_filter = ["model_version"]
    list_select_related = ["image", "model_version", "job__model_version"]
    search_fields = ["image__original_name", "=image__sha256", "message"]
    actions = [retry_selected_failures]
    fields = ["image", "model_version", "job", "message", "created_at"]
    readonly_fields = fields
