"""Deleting model versions in the admin (ModelVersionAdmin's delete page and delete action).

The active version is refused with a message (activate another first; the
service refuses too). The confirmation page shows counts, not a list of every
prediction (a version may have 100k), and says how many reviews stay: they
keep their label and only lose their link to the prediction. The service
(predictions.services.model_versions.model_version_delete) removes the
checkpoint file after commit.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.contrib.admin.actions import delete_selected as django_delete_selected
from django.core.exceptions import ValidationError
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html

from predictions.services.model_versions import model_version_delete, model_version_deletion_counts

KEPT = "reviews kept"


def _active_refused(modeladmin, request, version) -> None:
    modeladmin.message_user(
        request, f"{version} is the active version and cannot be deleted; activate another version first.",
        messages.ERROR,
    )


# Named as Django's own action, so it takes that one's place on this changelist.
@admin.action(description="Delete selected model versions", permissions=["delete"])
def delete_selected(modeladmin, request, queryset):
    active = queryset.filter(is_active=True).first()
    if active is not None:
        _active_refused(modeladmin, request, active)
        return None
    response = django_delete_selected(modeladmin, request, queryset)
    if isinstance(response, TemplateResponse):
        response.context_data["reviews_kept"] = model_version_deletion_counts(versions=list(queryset))[KEPT]
    return response


class ModelVersionDeleteMixin:
    delete_confirmation_template = "admin/predictions/modelversion/delete_confirmation.html"
    delete_selected_confirmation_template = "admin/predictions/modelversion/delete_selected_confirmation.html"

    def delete_view(self, request, object_id, extra_context=None):
        version = self.get_object(request, object_id)
        if version is not None and version.is_active:
            _active_refused(self, request, version)
            return HttpResponseRedirect(reverse("admin:predictions_modelversion_change", args=[version.pk]))
        kept = model_version_deletion_counts(versions=[version])[KEPT] if version is not None else 0
        return super().delete_view(request, object_id, {**(extra_context or {}), "reviews_kept": kept})

    def get_deleted_objects(self, objs, request):
        """Counts instead of Django's list of every related row; nothing else is needed than "delete model version"."""
        versions = list(objs)
        counts = model_version_deletion_counts(versions=versions)
        counts.pop(KEPT)
        deleted = [
            format_html(
                'Model version: <a href="{}">{}</a>',
                reverse("admin:predictions_modelversion_change", args=[version.pk]),
                version,
            )
            for version in versions
        ]
        model_count = {"model versions": len(versions), **{name: count for name, count in counts.items() if count}}
        perms_needed = set() if self.has_delete_permission(request) else {"model version"}
        return deleted, model_count, perms_needed, []

    def delete_model(self, request, obj):
        model_version_delete(version=obj, user=request.user)

    def delete_queryset(self, request, queryset):
        for version in queryset:
            try:
                model_version_delete(version=version, user=request.user)
            except ValidationError as exc:
                self.message_user(request, " ".join(exc.messages), messages.ERROR)
