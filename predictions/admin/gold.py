"""Gold images on the image page: a Lead sees whether an image is gold and marks or unmarks it.

Everyone else sees nothing of it (not the field, not the list filter): gold images
are mixed into reviewers' queues without telling. For them, the image page of a gold
image, or of an overlap image still waiting for independent decisions, leaves out
the review fields (the reference label, the others' decisions). The button posts the change
form to ``gold_toggle_view`` (wired in ReviewAdmin.get_urls()), which calls the
same service as the changelist actions in predictions/admin/image_actions.py.
"""

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.db.models.constants import LOOKUP_SEP
from django.shortcuts import get_object_or_404, redirect
from django.urls import reverse
from django.utils.html import format_html
from django.views.decorators.http import require_POST

from images.models import Image
from predictions.selectors.quality import ADJUDICATION, OVERLAP
from predictions.services.quality import LEAD_PERMISSION, images_gold_set

GOLD_HELP = (
    "A gold image's label is the reference: it is mixed into reviewers' queues without telling, "
    "their decisions on it measure their accuracy and never change its label."
)


class GoldPanelMixin:
    """For ImageAdmin: the "Gold" row on the image page and the gold list filter (typed into the
    URL too), for Leads only."""

    def get_readonly_fields(self, request, obj=None):
        return [*super().get_readonly_fields(request, obj), "gold_panel"]

    def get_fieldsets(self, request, obj=None):
        fieldsets = super().get_fieldsets(request, obj)
        if obj is None:
            return fieldsets
        if request.user.has_perm(LEAD_PERMISSION):
            return [*fieldsets, ("Gold", {"fields": ["gold_panel"], "description": GOLD_HELP})]
        if obj.is_gold or (obj.final_label_id is None and obj.label_source in (OVERLAP, ADJUDICATION)):
            # The reviewer may be the next one shown it: neither the reference label nor
            # the other reviewers' independent decisions are theirs to see.
            return [(name, options) for name, options in fieldsets if name != "Review"]
        return fieldsets

    def get_list_filter(self, request):
        filters = list(super().get_list_filter(request))
        return [*filters, "is_gold"] if request.user.has_perm(LEAD_PERMISSION) else filters

    def lookup_allowed(self, lookup, value, request=None):
        # The admin accepts a lookup on any of the model's own fields typed into the URL,
        # list filter or not: ?is_gold=1 would list the gold images with their labels.
        is_lead = request is not None and request.user.has_perm(LEAD_PERMISSION)
        if lookup.split(LOOKUP_SEP)[0] == "is_gold" and not is_lead:
            return False
        return super().lookup_allowed(lookup, value, request)

    def gold_panel(self, image):
        url = reverse("admin:predictions_review_gold", args=[image.pk])
        if image.is_gold:
            return format_html(
                '<strong>Gold</strong> (reference label “{}”) '
                '<button type="submit" class="button" formaction="{}" name="gold" value="0">Unmark gold</button>',
                image.final_label, url,
            )
        if image.final_label_id is None:
            return "Not gold. An image can become gold once a person has labelled it."
        return format_html(
            'Not gold. <button type="submit" class="button" formaction="{}" name="gold" value="1">Mark as gold</button>',
            url,
        )

    gold_panel.short_description = "gold"


@require_POST
def gold_toggle_view(request, image_id: int):
    """Mark (gold=1) or unmark (gold=0) one image, back to its page with a message."""
    if not request.user.has_perm(LEAD_PERMISSION):
        raise PermissionDenied
    image = get_object_or_404(Image, pk=image_id)
    gold = request.POST.get("gold") == "1"
    result = images_gold_set(image_ids=[image.pk], gold=gold)
    if result.changed:
        messages.success(request, f"Image “{image}” is {'now gold' if gold else 'no longer gold'}.")
    else:
        messages.warning(request, f"Image “{image}” was left as it was: {result.skipped_text()}.")
    return redirect("admin:images_image_change", image.pk)
