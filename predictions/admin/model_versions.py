"""Admin: model versions and training jobs (the label taxonomy is in predictions/admin/labels.py).

Model versions are for Leads (``predictions.change_modelversion``): registering a
checkpoint, activating it, comparing two versions, the metrics page and retraining.
Everything here delegates to predictions.services.model_versions/training and
predictions.selectors.metrics; nothing imports torch.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db.models import Count, IntegerField, OuterRef, Subquery
from django.http import HttpRequest, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.templatetags.static import static
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from predictions import charts
from predictions.admin.auto_accept_views import AutoAcceptView
from predictions.admin.embeddings import fill_missing_embeddings
from predictions.admin.image_actions import job_link
from predictions.admin.model_version_delete import ModelVersionDeleteMixin, delete_selected
from predictions.admin.progress_views import LiveProgressMixin
from predictions.admin.readonly import ReadOnlyAdminMixin
from predictions.forms import ModelVersionAddForm, TrainingForm
from predictions.models import ModelVersion, Prediction, TrainingJob
from predictions.selectors.metrics import (
    ImageScope,
    reviewed_label_counts,
    training_metrics_summary,
    version_metrics,
    version_metrics_left_out,
    versions_compare,
)
from predictions.selectors.versions import model_version_active
from predictions.services.model_versions import (
    model_version_activate,
    model_version_predict_missing,
    model_version_register,
    model_version_revalidate,
)
from predictions.services.training import training_job_create

COMPARE_PAGE_SIZE = 50


def _error(modeladmin, request, exc: ValidationError) -> None:
    modeladmin.message_user(request, " ".join(exc.messages), messages.ERROR)


def _metric_rows(metrics: dict) -> list[tuple[str, str]]:
    """The checkpoint's training metrics as (name, shown value); the per-epoch history is left to the training job."""
    def shown(value) -> str:
        if isinstance(value, float):
            return f"{value:.4f}"
        return "-" if value is None else str(value)

    return [(key, shown(value)) for key, value in sorted(metrics.items()) if key != "history"]


# --- model version actions ---------------------------------------------------------


@admin.action(description="Activate the selected version (and predict the images it lacks)", permissions=["change"])
def activate(modeladmin, request, queryset):
    if queryset.count() != 1:
        modeladmin.message_user(request, "Select exactly one version to activate.", messages.WARNING)
        return
    version = queryset.get()
    try:
        job = model_version_activate(version=version, user=request.user, predict_missing=True)
    except ValidationError as exc:
        _error(modeladmin, request, exc)
        return
    modeladmin.log_change(request, version, "Activated.")
    if job is None:
        modeladmin.message_user(request, f"{version} is active. Every image already has a prediction from it.")
    else:
        modeladmin.message_user(
            request,
            format_html("{} is active; the images it has not predicted yet are queued: {}.", version, job_link(job)),
            messages.SUCCESS,
        )


@admin.action(description="Predict missing images with the selected versions", permissions=["change"])
def predict_missing_images(modeladmin, request, queryset):
    for version in queryset:
        try:
            job = model_version_predict_missing(version=version, user=request.user)
        except ValidationError as exc:
            _error(modeladmin, request, exc)
            continue
        if job is None:
            modeladmin.message_user(request, f"{version}: every image already has a prediction (or a recorded failure).")
        else:
            modeladmin.message_user(request, format_html("{}: queued {}.", version, job_link(job)), messages.SUCCESS)


@admin.action(description="Compare two versions", permissions=["change"])
def compare_two_versions(modeladmin, request, queryset):
    versions = list(queryset.order_by("created_at", "pk")[:3])
    if len(versions) != 2:
        modeladmin.message_user(request, "Select exactly two versions to compare.", messages.WARNING)
        return None
    return HttpResponseRedirect(
        reverse("admin:predictions_modelversion_compare", args=[versions[0].pk, versions[1].pk])
    )


@admin.action(description="Train a new version from reviewed labels", permissions=["train"])
def train_from_reviews(modeladmin, request, queryset):
    if queryset.count() != 1:
        modeladmin.message_user(request, "Select the one version to start from.", messages.WARNING)
        return None
    return HttpResponseRedirect(reverse("admin:predictions_modelversion_train", args=[queryset.get().pk]))


@admin.action(description="Validate the selected checkpoints again", permissions=["change"])
def validate_again(modeladmin, request, queryset):
    for version in queryset:
        try:
            model_version_revalidate(version=version)
        except ValidationError as exc:
            _error(modeladmin, request, exc)
        else:
            modeladmin.message_user(request, f"{version}: validation queued.")


# --- admins --------------------------------------------------------------------------


@admin.register(ModelVersion)
class ModelVersionAdmin(ModelVersionDeleteMixin, admin.ModelAdmin):
    list_display = [
        "name", "arch", "class_count", "is_active", "validation", "prediction_count",
        "training_metrics", "metrics_link", "created_at",
    ]
    list_display_links = ["name"]
    list_filter = ["is_active", "validation_status", "arch"]
    search_fields = ["name", "notes"]
    date_hierarchy = "created_at"
    actions = [
        activate, predict_missing_images, fill_missing_embeddings, compare_two_versions, train_from_reviews,
        validate_again, delete_selected,
    ]
    add_form = ModelVersionAddForm
    add_fieldsets = [
        ("Checkpoint", {"fields": ["checkpoint_upload", "existing_checkpoint", "name", "notes"]}),
        (
            "Metadata",
            {
                "fields": ["arch", "class_names_text", "input_size", "mean_text", "std_text"],
                "description": "Leave blank what the checkpoint records; what you fill in here wins over it.",
            },
        ),
    ]
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "name", "notes", "is_active", "validation_status", "validation_error",
                    "checkpoint", "created_by", "created_at",
                ]
            },
        ),
        ("Metadata", {"fields": ["arch", "class_list", "input_size", "mean", "std"]}),
        ("Training metrics (from the checkpoint)", {"fields": ["metrics"], "classes": ["collapse"]}),
    ]
    readonly_fields = [
        "is_active", "validation_status", "validation_error", "checkpoint", "created_by", "created_at",
        "arch", "class_list", "input_size", "mean", "std", "metrics",
    ]

    # --- permissions: model versions are for those who may change them (Leads)

    def has_view_permission(self, request, obj=None):
        return self.has_change_permission(request, obj)

    def has_train_permission(self, request):
        return request.user.has_perm("predictions.add_trainingjob")

    def _require_change(self, request: HttpRequest) -> None:
        if not self.has_change_permission(request):
            raise PermissionDenied

    # --- changelist

    def get_queryset(self, request):
        predictions = (
            Prediction.objects.filter(model_version=OuterRef("pk"))
            .order_by()
            .values("model_version")
            .annotate(count=Count("pk"))
            .values("count")
        )
        return super().get_queryset(request).annotate(
            prediction_total=Subquery(predictions, output_field=IntegerField())
        )

    @admin.display(description="classes")
    def class_count(self, version: ModelVersion) -> int:
        return len(version.class_names)

    @admin.display(description="validation", ordering="validation_status")
    def validation(self, version: ModelVersion) -> str:
        icon = {"valid": "yes", "invalid": "no", "pending": "unknown"}[version.validation_status]
        return format_html(
            '<img src="{}" alt="{}" title="{}"> {}',
            static(f"admin/img/icon-{icon}.svg"),
            version.validation_status,
            version.validation_error,
            version.get_validation_status_display(),
        )

    @admin.display(description="predictions", ordering="prediction_total")
    def prediction_count(self, version: ModelVersion) -> int:
        return version.prediction_total or 0

    @admin.display(description="training metrics")
    def training_metrics(self, version: ModelVersion) -> str:
        return training_metrics_summary(version.metrics) or "-"

    @admin.display(description="reviewed metrics")
    def metrics_link(self, version: ModelVersion) -> str:
        url = reverse("admin:predictions_modelversion_metrics", args=[version.pk])
        return format_html('<a href="{}">Metrics</a>', url)

    @admin.display(description="class names")
    def class_list(self, version: ModelVersion) -> str:
        return format_html_join(", ", "{}", ((name,) for name in version.class_names)) or "-"

    def changelist_view(self, request, extra_context=None):
        active = model_version_active()
        return super().changelist_view(request, extra_context={"active_version": active, **(extra_context or {})})

    # --- add: upload or choose a checkpoint; the service registers and queues validation

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = self.add_form
            kwargs["fields"] = ModelVersionAddForm.Meta.fields
        return super().get_form(request, obj, change=change, **kwargs)

    def get_fieldsets(self, request, obj=None):
        return self.add_fieldsets if obj is None else self.fieldsets

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else self.readonly_fields

    def save_model(self, request, obj, form, change):
        if change:
            super().save_model(request, obj, form, change)
            return
        registered = model_version_register(
            name=form.cleaned_data["name"], user=request.user, **form.registration_kwargs()
        )
        # The service made the row; the admin's log entry and redirect continue with it.
        obj.pk = registered.pk
        obj.refresh_from_db()

    def response_add(self, request, obj, post_url_continue=None):
        self.message_user(
            request,
            "The checkpoint is being validated in the task queue; its result shows on this page.",
            messages.INFO,
        )
        return HttpResponseRedirect(reverse("admin:predictions_modelversion_change", args=[obj.pk]))

    # --- extra pages

    def get_urls(self):
        view = self.admin_site.admin_view
        auto_accept = AutoAcceptView.as_view(admin_site=self.admin_site, model_admin=self)
        return [
            path("<int:pk>/metrics/", view(self.metrics_view), name="predictions_modelversion_metrics"),
            path("<int:pk>/train/", view(self.train_view), name="predictions_modelversion_train"),
            path("<int:pk>/auto-accept/", view(auto_accept), name="predictions_modelversion_auto_accept"),
            path("compare/<int:a>/<int:b>/", view(self.compare_view), name="predictions_modelversion_compare"),
            *super().get_urls(),
        ]

    def _page_context(self, request, title: str, **extra) -> dict:
        return {**self.admin_site.each_context(request), "opts": self.opts, "title": title, **extra}

    def metrics_view(self, request, pk: int):
        self._require_change(request)
        version = get_object_or_404(ModelVersion, pk=pk)
        scope = ImageScope.parse(request.GET.get("images"))
        report = version_metrics(version=version, scope=scope)
        context = self._page_context(
            request,
            f"Metrics of {version.name} against reviewed labels",
            version=version,
            report=report,
            scope=scope,
            left_out=version_metrics_left_out(version=version, scope=scope),
            training_metrics=_metric_rows(version.metrics),
            confusion_svg=charts.confusion_matrix_svg(
                matrix=report.confusion, row_labels=report.confusion_rows, col_labels=report.class_names
            ) if not report.is_empty else "",
            histogram_svg=charts.confidence_histogram_svg(bins=report.bins) if report.sample_count else "",
            calibration_svg=charts.calibration_svg(bins=report.bins) if report.sample_count else "",
        )
        return TemplateResponse(request, "admin/predictions/modelversion/metrics.html", context)

    def compare_view(self, request, a: int, b: int):
        self._require_change(request)
        version_a, version_b = get_object_or_404(ModelVersion, pk=a), get_object_or_404(ModelVersion, pk=b)
        comparison = versions_compare(a=version_a, b=version_b, scope=ImageScope.parse(request.GET.get("images")))
        page = Paginator(comparison.differing_images, COMPARE_PAGE_SIZE).get_page(request.GET.get("page"))
        context = self._page_context(
            request, f"{version_a.name} compared with {version_b.name}", comparison=comparison, page=page
        )
        return TemplateResponse(request, "admin/predictions/modelversion/compare.html", context)

    def train_view(self, request, pk: int):
        if not (self.has_change_permission(request) and self.has_train_permission(request)):
            raise PermissionDenied
        base = get_object_or_404(ModelVersion, pk=pk)
        form = TrainingForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                job = training_job_create(
                    base_version=base,
                    epochs=form.cleaned_data["epochs"],
                    learning_rate=form.cleaned_data["learning_rate"],
                    user=request.user,
                )
            except ValidationError as exc:
                _error(self, request, exc)
            else:
                self.message_user(
                    request,
                    format_html(
                        'Training queued: <a href="{}">training job #{}</a>. The new version appears here, '
                        "inactive, when it is done.",
                        reverse("admin:predictions_trainingjob_change", args=[job.pk]),
                        job.pk,
                    ),
                    messages.SUCCESS,
                )
                return HttpResponseRedirect(reverse("admin:predictions_trainingjob_changelist"))
        context = self._page_context(
            request,
            f"Train a new version from reviewed labels, starting from {base.name}",
            base=base,
            form=form,
            counts=reviewed_label_counts(class_names=base.class_names),
        )
        return TemplateResponse(request, "admin/predictions/modelversion/train.html", context)


@admin.register(TrainingJob)
class TrainingJobAdmin(LiveProgressMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    """Started from the model version changelist, with its base version."""

    list_display = [
        "__str__", "base_version", "status", "progress", "sample_count", "result",
        "created_by", "created_at", "finished_at",
    ]
    list_filter = ["status", "base_version"]
    list_select_related = ["base_version", "result_version", "created_by"]
    fields = [
        "base_version", "status", "progress", "epochs", "learning_rate", "sample_count", "result", "error",
        "last_epoch", "created_by", "created_at", "started_at", "finished_at",
    ]
    readonly_fields = fields
    live_fields = ["status", "progress", "sample_count", "result", "error", "last_epoch", "started_at", "finished_at"]

    @admin.display(description="epochs")
    def progress(self, job: TrainingJob) -> str:
        return format_html(
            '<progress value="{}" max="{}" style="width: 6em; vertical-align: middle;"></progress> {} / {}',
            job.epochs_done, job.epochs or 1, job.epochs_done, job.epochs,
        )

    @admin.display(description="new version")
    def result(self, job: TrainingJob) -> str:
        if job.result_version is None:
            return "-"
        return format_html(
            '<a href="{}">{}</a>',
            reverse("admin:predictions_modelversion_change", args=[job.result_version_id]),
            job.result_version,
        )

    @admin.display(description="last epoch")
    def last_epoch(self, job: TrainingJob) -> str:
        parts = [
            f"{key} {values[-1]:.3f}"
            for key, values in (job.history or {}).items()
            if isinstance(values, list) and values and isinstance(values[-1], (int, float))
        ]
        return ", ".join(parts) or "-"
