"""The model-version action that fills the embeddings a version's older predictions lack.

Its own module so predictions/admin/model_versions.py stays a list of declarations;
the work is predictions.services.jobs.embeddings_fill (a job with progress).
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.utils.html import format_html

from predictions.admin.image_actions import job_link
from predictions.services.jobs import embeddings_fill


@admin.action(description="Fill missing embeddings of the selected versions", permissions=["change"])
def fill_missing_embeddings(modeladmin, request, queryset):
    for version in queryset:
        try:
            job = embeddings_fill(model_version=version, user=request.user)
        except ValidationError as exc:
            modeladmin.message_user(request, " ".join(exc.messages), messages.ERROR)
            continue
        if job is None:
            modeladmin.message_user(request, f"{version}: every prediction already has its embedding.")
        else:
            modeladmin.message_user(request, format_html("{}: queued {}.", version, job_link(job)), messages.SUCCESS)
