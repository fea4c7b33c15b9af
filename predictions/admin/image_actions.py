"""Every action that works on a selection of images: the image and upload batch changelists
(wired in by images/admin.py) and the prediction job and failure changelists.

Two permission rules, declared with @admin.action(permissions=[...]) and
implemented once, in ImageActionPermissionsMixin, which every admin listing these
actions inherits:

- "review" (set a label, confirm predictions): predictions.add_review, Reviewers
  and Leads. The review screen reads the same rule. Changing images that already
  have a label also needs predictions.change_review (Leads) and an explicit tick.
- "predict" (retry failed predictions, predict again with the active version):
  predictions.add_predictionjob, as both queue a prediction job. In the roles
  (predictions/roles.py) that is Leads only; an upload queues its own job without it.

Each grid action is one undoable LabelOperation whose Review rows have source GRID.
"""

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import ValidationError
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html
from django.utils.translation import ngettext

from images.models import Image
from predictions.admin.operations import undo_url
from predictions.models import Label, PredictionFailure, PredictionJob
from predictions.selectors.grid import images_relabelled
from predictions.selectors.quality import gold_hidden_from
from predictions.selectors.versions import model_version_active
from predictions.services.jobs import retry_failed_predictions
from predictions.services.model_versions import images_repredict
from predictions.services.operations import OperationResult
from predictions.services.quality import LEAD_PERMISSION, images_gold_set
from predictions.services.reviews import reviews_grid_confirm, reviews_grid_set_label

REVIEW_PERMISSION = "predictions.add_review"
PREDICT_PERMISSION = "predictions.add_predictionjob"
# Changing images that already have a label: Leads only, and only when they tick it.
OVERWRITE_PERMISSION = "predictions.change_review"
OVERWRITE_LABEL = "Also change images that already have a label"
# A grid action runs in the request; larger sets belong to an import (a job in the cluster).
GRID_MAX_IMAGES = 1000
PREVIEW_COUNT = 60


class ImageActionPermissionsMixin:
    """The has_<perm>_permission methods the actions below declare."""

    def has_review_permission(self, request) -> bool:
        return request.user.has_perm(REVIEW_PERMISSION)

    def has_predict_permission(self, request) -> bool:
        return request.user.has_perm(PREDICT_PERMISSION)

    def has_gold_permission(self, request) -> bool:
        return request.user.has_perm(LEAD_PERMISSION)


def job_link(job: PredictionJob) -> str:
    return format_html(
        '<a href="{}">prediction job #{}</a> ({} images)',
        reverse("admin:predictions_predictionjob_change", args=[job.pk]),
        job.pk,
        job.total,
    )


# --- review: set a label, confirm the predictions ------------------------------------
#
# Each is one LabelOperation (predictions.services.operations): by default only
# unreviewed, unclaimed, non-gold images change and the message counts the rest;
# a Lead may tick "Also change images that already have a label", and then sees
# old → new per image before anything changes. The message carries an Undo link.


class SetLabelForm(forms.Form):
    label = forms.ModelChoiceField(Label.objects.all(), widget=forms.RadioSelect, empty_label=None)
    overwrite = forms.BooleanField(required=False, label=OVERWRITE_LABEL)

    def __init__(self, *args, may_overwrite: bool, **kwargs):
        super().__init__(*args, **kwargs)
        if not may_overwrite:
            del self.fields["overwrite"]


def _too_many(modeladmin, request, count: int) -> bool:
    if count <= GRID_MAX_IMAGES:
        return False
    modeladmin.message_user(
        request,
        f"{count} images selected; label at most {GRID_MAX_IMAGES} at once "
        "(filter the list further, or import the labels from a CSV).",
        messages.ERROR,
    )
    return True


def _may_overwrite(request) -> bool:
    return request.user.has_perm(OVERWRITE_PERMISSION)


def _confirmation_page(modeladmin, request, template: str, **context) -> TemplateResponse:
    opts = modeladmin.model._meta
    return TemplateResponse(
        request,
        template,
        {
            **modeladmin.admin_site.each_context(request),
            "subtitle": None,
            "opts": opts,
            "app_label": opts.app_label,
            "selected_ids": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
            "select_across": request.POST.get("select_across", "0"),
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "media": modeladmin.media,
            **context,
        },
    )


def _report(modeladmin, request, result: OperationResult, done: str, *, nothing: str) -> None:
    """One message: what changed, what was skipped and why, and the operation's Undo link."""
    skipped = sum(result.skipped.values())
    text = done if result.changed else nothing
    if skipped:
        text = f"{text}; {skipped} skipped ({result.skipped_text(gold_hidden=gold_hidden_from(request.user))})"
    if not result.changed:
        modeladmin.message_user(request, f"{text}.", messages.WARNING)
        return
    modeladmin.message_user(
        request,
        format_html('{}. <a href="{}" class="undo-operation">Undo</a>', text, undo_url(result.operation, request)),
        messages.SUCCESS,
    )


@admin.action(description="Set label…", permissions=["review"])
def set_label(modeladmin, request, queryset):
    """Ask for a label (a confirmation page listing the images), then label them all as one operation."""
    count = queryset.count()
    if _too_many(modeladmin, request, count):
        return None
    may_overwrite = _may_overwrite(request)
    form = SetLabelForm(request.POST if "apply" in request.POST else None, may_overwrite=may_overwrite)
    if form.is_bound and form.is_valid():
        label = form.cleaned_data["label"]
        overwrite = form.cleaned_data.get("overwrite", False)
        image_ids = list(queryset.values_list("pk", flat=True))
        if overwrite and "overwrite_confirmed" not in request.POST:
            relabelled = images_relabelled(image_ids=image_ids, label=label)
            if relabelled:
                return _confirmation_page(
                    modeladmin, request, "admin/predictions/review/set_label_confirmation.html",
                    title="Change labelled images?", form=form, count=count, label=label, relabelled=relabelled,
                )
        result = reviews_grid_set_label(image_ids=image_ids, label=label, user=request.user, overwrite_reviewed=overwrite)
        _report(
            modeladmin, request, result, f"Labelled {result.changed} image(s) “{label}”", nothing="No image was labelled"
        )
        return None
    reviewed = queryset.filter(final_label__isnull=False).count() if may_overwrite else 0
    return _confirmation_page(
        modeladmin, request, "admin/predictions/review/set_label_confirmation.html",
        title="Set label", form=form, count=count, reviewed=reviewed, preview=queryset[:PREVIEW_COUNT],
    )


@admin.action(description="Confirm predictions", permissions=["review"])
def confirm_predictions(modeladmin, request, queryset):
    """Accept the active model's label for every selected image that has a prediction, as one operation.

    A Lead whose selection holds labelled images that the model disagrees with
    gets a page first: those images old → new, and the option to change them too.
    """
    if _too_many(modeladmin, request, queryset.count()):
        return None
    version = model_version_active()
    if version is None:
        modeladmin.message_user(request, "There is no active model version, so there is nothing to confirm.", messages.WARNING)
        return None
    image_ids = list(queryset.values_list("pk", flat=True))
    may_overwrite = _may_overwrite(request)
    if may_overwrite and "apply" not in request.POST:
        relabelled = images_relabelled(image_ids=image_ids, model_version=version)
        if relabelled:
            return _confirmation_page(
                modeladmin, request, "admin/predictions/review/confirm_predictions_confirmation.html",
                title="Confirm predictions", count=len(image_ids), version=version, relabelled=relabelled,
                overwrite_label=OVERWRITE_LABEL,
            )
    overwrite = may_overwrite and request.POST.get("overwrite") == "on"
    result, without = reviews_grid_confirm(
        image_ids=image_ids, user=request.user, model_version=version, overwrite_reviewed=overwrite
    )
    _report(
        modeladmin, request, result, f"Confirmed {result.changed} prediction(s) of {version}",
        nothing="No prediction was confirmed",
    )
    if without:
        modeladmin.message_user(
            request,
            f"{without} selected image(s) have no prediction from {version} and were left as they were.",
            messages.WARNING,
        )
    return None


# --- predict: retry the failed images, predict again -----------------------------------


def _retry(modeladmin, request, image_ids) -> None:
    job = retry_failed_predictions(image_ids=image_ids, user=request.user)
    if job is None:
        modeladmin.message_user(
            request, "Nothing was queued: no recorded failures of the active model version among them.", messages.WARNING
        )
    else:
        modeladmin.message_user(
            request, ngettext("Queued %d image again.", "Queued %d images again.", job.total) % job.total, messages.SUCCESS
        )


@admin.action(description="Retry failed predictions", permissions=["predict"])
def retry_image_predictions(modeladmin, request, queryset):
    """ImageAdmin: the selected images' recorded failures of the active version."""
    _retry(modeladmin, request, queryset.values_list("pk", flat=True))


@admin.action(description="Retry failed predictions", permissions=["predict"])
def retry_batch_predictions(modeladmin, request, queryset):
    """UploadBatchAdmin: the failures among the selected batches' images."""
    _retry(modeladmin, request, Image.objects.filter(batch__in=queryset).values_list("pk", flat=True))


@admin.action(description="Retry the failed images of the selected jobs", permissions=["predict"])
def retry_failed_images_of_jobs(modeladmin, request, queryset):
    """PredictionJobAdmin."""
    _retry(modeladmin, request, PredictionFailure.objects.filter(job__in=queryset).values_list("image_id", flat=True))


@admin.action(description="Retry the selected failed images", permissions=["predict"])
def retry_selected_failures(modeladmin, request, queryset):
    """PredictionFailureAdmin."""
    _retry(modeladmin, request, queryset.values_list("image_id", flat=True))


def _repredict(modeladmin, request, image_ids) -> None:
    try:
        job = images_repredict(image_ids=image_ids, user=request.user)
    except ValidationError as exc:
        modeladmin.message_user(request, " ".join(exc.messages), messages.ERROR)
        return
    if job is None:
        modeladmin.message_user(request, "Nothing to do: the active version has predicted all of them already.")
    else:
        modeladmin.message_user(request, format_html("Queued {}.", job_link(job)), messages.SUCCESS)


@admin.action(description="Predict with the active model version", permissions=["predict"])
def repredict_images(modeladmin, request, queryset):
    """ImageAdmin: the selected images that the active version has not predicted yet."""
    _repredict(modeladmin, request, list(queryset.values_list("pk", flat=True)))


@admin.action(description="Predict again with the active version", permissions=["predict"])
def repredict_batches(modeladmin, request, queryset):
    """UploadBatchAdmin: the images of the selected batches."""
    _repredict(modeladmin, request, list(Image.objects.filter(batch__in=queryset).values_list("pk", flat=True)))


# --- gold: a Lead's reference labels (predictions/services/quality.py) --------------------


def _gold(modeladmin, request, queryset, *, gold: bool) -> None:
    result = images_gold_set(image_ids=list(queryset.values_list("pk", flat=True)), gold=gold)
    text = f"{result.changed} image(s) {'marked as gold' if gold else 'no longer gold'}"
    if result.skipped:
        text = f"{text}; {sum(result.skipped.values())} left as they were ({result.skipped_text()})"
    modeladmin.message_user(request, f"{text}.", messages.SUCCESS if result.changed else messages.WARNING)


@admin.action(description="Mark as gold", permissions=["gold"])
def mark_gold(modeladmin, request, queryset):
    """ImageAdmin: the selected images' labels become references, mixed into reviewers' queues."""
    _gold(modeladmin, request, queryset, gold=True)


@admin.action(description="Unmark gold", permissions=["gold"])
def unmark_gold(modeladmin, request, queryset):
    """ImageAdmin."""
    _gold(modeladmin, request, queryset, gold=False)
