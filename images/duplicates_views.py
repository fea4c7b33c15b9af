"""Admin screens for near-duplicates: the image changelist's filter and the page of groups.

Wired in images/admin.py (``ImageAdmin.list_filter`` and ``get_urls``); the reads
are images.duplicates. Anyone who may view images may view these (Uploaders,
Reviewers, Leads): they change nothing.
"""

from __future__ import annotations

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.template.response import TemplateResponse

from ml.hashing import NEAR_DUPLICATE_DISTANCE

from .duplicates import duplicates_find, images_near_duplicate_filter
from .models import Image

GROUPS_PER_PAGE = 50


class NearDuplicateFilter(admin.SimpleListFilter):
    title = "near-duplicates"
    parameter_name = "near_duplicates"

    def lookups(self, request, model_admin):
        return [("yes", "Yes"), ("no", "No")]

    def queryset(self, request, queryset):
        if self.value() in ("yes", "no"):
            return images_near_duplicate_filter(queryset, flagged=self.value() == "yes")
        return queryset


def near_duplicates_view(request, *, model_admin):
    """Groups of near-duplicate images, largest first, with the pairs that join them."""
    if not model_admin.has_view_permission(request):
        raise PermissionDenied
    found = duplicates_find()
    page = Paginator(found.groups, GROUPS_PER_PAGE).get_page(request.GET.get("page"))
    ids = {pk for group in page for pk in group.image_ids}
    images = Image.objects.in_bulk(ids) if ids else {}
    groups = [
        {
            "images": [images[pk] for pk in group.image_ids if pk in images],
            "pairs": group.pairs,
        }
        for group in page
    ]
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.opts,
        "title": "Near-duplicate images",
        "page": page,
        "groups": groups,
        "group_count": len(found.groups),
        "image_count": len(found.image_ids),
        "distance": NEAR_DUPLICATE_DISTANCE,
    }
    return TemplateResponse(request, "admin/images/image/near_duplicates.html", context)
