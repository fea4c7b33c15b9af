"""The image page as a place to browse and label: previous/next, label keys, no Save buttons.

``ImagePageMixin`` goes on ImageAdmin (images/admin.py):

- Every field of the image page is read-only, so it shows no Save buttons (a Close
  button instead), whatever the user's permissions.
- "Previous" and "next" follow the image list the page was opened from: its filters,
  search and sort order travel in ``_changelist_filters`` (the admin's preserved
  filters), and the neighbours are found in one query by window functions over that
  list (LAG/LEAD of the id), so no list of ids is fetched. The arrow keys follow them.
- A reviewer (``predictions.add_review``) sets the label with the review screen's keys
  or buttons: one image through the grid actions' service and rules (only an unreviewed,
  unclaimed, non-gold image changes; the message says why not otherwise, and carries
  the operation's Undo link), then the page moves on to the next image of the list.
"""

from __future__ import annotations

from copy import copy

from django.contrib import messages
from django.contrib.admin.exceptions import DisallowedModelAdminLookup
from django.contrib.admin.options import IncorrectLookupParameters
from django.core.exceptions import PermissionDenied
from django.db.models import F, OrderBy, Q
from django.db.models.functions import Lag, Lead
from django.db.models.expressions import Window
from django.http import HttpRequest, QueryDict
from django.shortcuts import get_object_or_404, redirect
from django.template.loader import render_to_string
from django.templatetags.static import static
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.http import urlencode
from django.views.decorators.http import require_POST

from images.models import Image
from predictions.admin.image_actions import REVIEW_PERMISSION
from predictions.admin.operations import undo_url
from predictions.models import Label
from predictions.selectors.quality import gold_hidden_from, image_label_seen_id
from predictions.selectors.queue import label_shortcuts
from predictions.services.reviews import reviews_grid_set_label

FILTERS_PARAMETER = "_changelist_filters"


def _order_expressions(ordering) -> list:
    """A queryset's order_by() terms as expressions a Window accepts."""
    expressions = []
    for term in ordering:
        if isinstance(term, str):
            expressions.append(F(term[1:]).desc() if term.startswith("-") else F(term).asc())
        elif isinstance(term, OrderBy):
            expressions.append(term)
        else:
            expressions.append(term.asc())
    return expressions


class ImagePageMixin:
    """For ImageAdmin: the "browse" row on top of the image page, its label view, no Save buttons."""

    # --- the list the page was opened from ---------------------------------------

    def _listing_queryset(self, request: HttpRequest, filters: str):
        """The image list's queryset, filtered, searched and ordered as the changelist at `filters` was."""
        listing_request = copy(request)
        listing_request.GET = QueryDict(filters)
        list_display = list(self.get_list_display(listing_request))
        if self.get_actions(listing_request):
            # The changelist numbers its columns (the ?o= sort parameter) with the checkbox first.
            list_display = ["action_checkbox", *list_display]
        changelist_class = self.get_changelist(listing_request)

        class Listing(changelist_class):
            def get_results(self, request):
                pass  # the neighbours need the queryset, not a page of it and its counts

        listing = Listing(
            listing_request, self.model, list_display, self.get_list_display_links(listing_request, list_display),
            self.get_list_filter(listing_request), self.date_hierarchy, self.get_search_fields(listing_request),
            self.get_list_select_related(listing_request), self.list_per_page, self.list_max_show_all,
            self.list_editable, self, self.sortable_by, self.search_help_text,
        )  # fmt: skip
        return listing.queryset

    def image_neighbours(self, request: HttpRequest, image_id: int) -> tuple[int | None, int | None]:
        """The ids before and after `image_id` in the list the page was opened from (None at an end)."""
        filters = request.GET.get(FILTERS_PARAMETER, "")
        try:
            listing = self._listing_queryset(request, filters)
        except (IncorrectLookupParameters, DisallowedModelAdminLookup):  # a list the person may not see
            listing = self._listing_queryset(request, "")
        order = _order_expressions(listing.query.order_by or self.model._meta.ordering)
        rows = (
            listing.order_by()
            .values("pk")
            .annotate(
                previous_id=Window(Lag("pk"), order_by=order),
                next_id=Window(Lead("pk"), order_by=order),
            )
            .filter(Q(previous_id=image_id) | Q(next_id=image_id))
            .values_list("pk", "previous_id", "next_id")
        )
        before = after = None
        for pk, previous_id, next_id in rows:
            if previous_id == image_id:
                after = pk
            if next_id == image_id:
                before = pk
        return before, after

    def _image_url(self, image_id: int | None, filters: str, *, view: str = "change") -> str | None:
        if image_id is None:
            return None
        url = reverse(f"admin:images_image_{view}", args=[image_id])
        return f"{url}?{urlencode({FILTERS_PARAMETER: filters})}" if filters else url

    # --- the page ------------------------------------------------------------------

    def change_view(self, request, object_id, form_url="", extra_context=None):
        # Every field is read-only: a Save button would save nothing.
        no_save = {"show_save": False, "show_save_and_continue": False, "show_save_and_add_another": False}
        return super().change_view(request, object_id, form_url, extra_context={**no_save, **(extra_context or {})})

    def get_object(self, request, object_id, from_field=None):
        image = super().get_object(request, object_id, from_field)
        if image is not None:
            image.browse_request = request  # read by image_browse, which the admin calls with the image only
        return image

    def get_readonly_fields(self, request, obj=None):
        return [*super().get_readonly_fields(request, obj), "image_browse"]

    def get_fieldsets(self, request, obj=None):
        fieldsets = super().get_fieldsets(request, obj)
        return fieldsets if obj is None else [(None, {"fields": ["image_browse"]}), *fieldsets]

    def image_browse(self, image: Image) -> str:
        request = image.browse_request
        filters = request.GET.get(FILTERS_PARAMETER, "")
        before, after = self.image_neighbours(request, image.pk)
        # Keys on a gold image too for those not told which are gold (its page is an open one's):
        # the label is refused as on an image claimed on the review screen.
        looks_open = image_label_seen_id(image=image, user=request.user) is None
        may_label = request.user.has_perm(REVIEW_PERMISSION) and looks_open
        return render_to_string(
            "admin/predictions/image_browse.html",
            {
                "previous_url": self._image_url(before, filters),
                "next_url": self._image_url(after, filters),
                "shortcuts": label_shortcuts() if may_label else [],
                "label_url": self._image_url(image.pk, filters, view="label"),
                "script": static("predictions/image_page.js"),
            },
        )

    image_browse.short_description = "browse"

    # --- labelling from the page ---------------------------------------------------

    def get_urls(self):
        label = self.admin_site.admin_view(require_POST(self.image_label_view))
        return [path("<int:image_id>/label/", label, name="images_image_label"), *super().get_urls()]

    def image_label_view(self, request, image_id: int):
        """Set one image's label as a grid action would, then show the next image of the list."""
        if not request.user.has_perm(REVIEW_PERMISSION):
            raise PermissionDenied
        image = get_object_or_404(Image, pk=image_id)
        label = get_object_or_404(Label, pk=request.POST.get("label") or 0)
        filters = request.GET.get(FILTERS_PARAMETER, "")
        # Before the label changes: a list of unreviewed images would lose this one.
        _, after = self.image_neighbours(request, image.pk)
        result = reviews_grid_set_label(image_ids=[image.pk], label=label, user=request.user, overwrite_reviewed=False)
        if result.changed:
            self.message_user(
                request,
                format_html(
                    '{} labelled “{}”. <a href="{}" class="undo-operation">Undo</a>',
                    image, label, undo_url(result.operation, request),
                ),
                messages.SUCCESS,
            )
            return redirect(self._image_url(after, filters) or self._image_url(image.pk, filters))
        skipped = result.skipped_text(gold_hidden=gold_hidden_from(request.user))
        self.message_user(request, f"{image} was not labelled: {skipped}.", messages.WARNING)
        return redirect(self._image_url(image.pk, filters))
