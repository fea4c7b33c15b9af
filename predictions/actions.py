"""Grid labeling: admin actions for the image changelist (wired into images.admin.ImageAdmin).

Both need the admin to define `has_review_permission(request)`; each decision
becomes a Review row with source GRID, like one made on the review screen.
"""

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.template.response import TemplateResponse

from predictions.models import Label, ModelVersion
from predictions.services.reviews import reviews_confirm_predictions, reviews_set_label

# A grid decision is written row by row in the request; larger sets belong to an import.
GRID_MAX_IMAGES = 1000
PREVIEW_COUNT = 60


class SetLabelForm(forms.Form):
    label = forms.ModelChoiceField(Label.objects.all(), widget=forms.RadioSelect, empty_label=None)


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


@admin.action(description="Set label…", permissions=["review"])
def set_label(modeladmin, request, queryset):
    """Ask for a label (a confirmation page listing the images), then label them all."""
    count = queryset.count()
    if _too_many(modeladmin, request, count):
        return None
    form = SetLabelForm(request.POST if "apply" in request.POST else None)
    if form.is_bound and form.is_valid():
        label = form.cleaned_data["label"]
        labelled = reviews_set_label(images=queryset, label=label, reviewer=request.user)
        modeladmin.message_user(request, f"Labelled {labelled} image(s) “{label}”.", messages.SUCCESS)
        return None
    opts = modeladmin.model._meta
    context = {
        **modeladmin.admin_site.each_context(request),
        "title": "Set label",
        "subtitle": None,
        "opts": opts,
        "app_label": opts.app_label,
        "form": form,
        "count": count,
        "preview": queryset[:PREVIEW_COUNT],
        "selected_ids": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
        "select_across": request.POST.get("select_across", "0"),
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        "media": modeladmin.media,
    }
    return TemplateResponse(request, "admin/predictions/review/set_label_confirmation.html", context)


@admin.action(description="Confirm predictions", permissions=["review"])
def confirm_predictions(modeladmin, request, queryset):
    """Accept the active model's label for every selected image that has a prediction."""
    if _too_many(modeladmin, request, queryset.count()):
        return None
    version = ModelVersion.objects.filter(is_active=True).first()
    if version is None:
        modeladmin.message_user(request, "There is no active model version, so there is nothing to confirm.", messages.WARNING)
        return None
    confirmed, without = reviews_confirm_predictions(images=queryset, reviewer=request.user, model_version=version)
    if confirmed:
        modeladmin.message_user(request, f"Confirmed {confirmed} prediction(s) of {version}.", messages.SUCCESS)
    if without:
        modeladmin.message_user(
            request,
            f"{without} selected image(s) have no prediction from {version} and were left as they were.",
            messages.WARNING,
        )
    return None
