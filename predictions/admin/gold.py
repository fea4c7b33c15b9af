"""Gold images in the image admin: a Lead sees whether an image is gold and marks or unmarks it.

Everyone else (predictions.selectors.quality.gold_hidden_from) sees nothing of it:
gold images are mixed into reviewers' queues without telling. For them the image
list shows a gold image as an open one (no final label, an open image's status,
sorted and filtered so, no lookup on the fields that differ typed into the URL),
and the image page of an image without a label, or of a gold one, leaves out the
review fields (the reference label, the others' decisions on an overlap image
still waiting for independent ones). The button posts the change form to ``gold_toggle_view``
(wired in ReviewAdmin.get_urls()), which calls the same service as the changelist
actions in predictions/admin/image_actions.py.
"""

from django.contrib import admin, messages
from django.core.exceptions import FieldDoesNotExist, PermissionDenied
from django.db.models import Case, CharField, F, When
from django.db.models.constants import LOOKUP_SEP
from django.shortcuts import get_object_or_404, redirect
from django.urls import reverse
from django.utils.html import format_html
from django.views.decorators.http import require_POST

from images.models import Image
from predictions.models import Label
from predictions.selectors.images import image_labelled_q
from predictions.selectors.quality import gold_hidden_from, image_label_seen_id
from predictions.services.quality import LEAD_PERMISSION, images_gold_set

GOLD_HELP = (
    "A gold image's label is the reference: it is mixed into reviewers' queues without telling, "
    "their decisions on it measure their accuracy and never change its label."
)


class GoldPanelMixin:
    """For ImageAdmin: the "Gold" row on the image page and the gold list filter for Leads; for
    everyone else, the list's label column and filter with gold images as open ones."""

    def get_readonly_fields(self, request, obj=None):
        return [*super().get_readonly_fields(request, obj), "gold_panel"]

    def get_fieldsets(self, request, obj=None):
        fieldsets = super().get_fieldsets(request, obj)
        if obj is None:
            return fieldsets
        if request.user.has_perm(LEAD_PERMISSION):
            return [*fieldsets, ("Gold", {"fields": ["gold_panel"], "description": GOLD_HELP})]
        if image_label_seen_id(image=obj, user=request.user) is None:
            # The reviewer may be the next one shown it: neither the reference label nor the
            # other reviewers' independent decisions (an overlap image's) are theirs to see,
            # and a gold image's page is an open one's.
            return [(name, options) for name, options in fieldsets if name != "Review"]
        return fieldsets

    def get_list_filter(self, request):
        filters = list(super().get_list_filter(request))
        if not gold_hidden_from(request.user):
            return [*filters, "is_gold"]
        return [LabelSeenFilter if item == "final_label" else item for item in filters]

    def get_list_display(self, request):
        columns = super().get_list_display(request)
        if not gold_hidden_from(request.user):
            return columns
        return [("label_seen" if column == "final_label" else column) for column in columns]

    @admin.display(
        description="final label",
        ordering=Case(When(is_gold=True, then=None), default=F("final_label__name"), output_field=CharField()),
    )
    def label_seen(self, image):
        """The final label column for those gold_hidden_from: none on a gold image, sorted so too."""
        return None if image.is_gold else image.final_label

    def lookup_allowed(self, lookup, value, request=None):
        # The admin accepts a lookup on any of the model's own fields typed into the URL,
        # list filter or not: ?is_gold=1 would list the gold images, ?final_label_id=3 the
        # gold ones among the images labelled 3. Only the list's own filters answer.
        if (request is None or gold_hidden_from(request.user)) and _field_name(lookup) in GOLD_REVEALING:
            own = {item.parameter_name for item in self.get_list_filter(request) if isinstance(item, type)}
            if request is None or lookup not in own:
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


# The fields that differ between a gold image and an open one.
GOLD_REVEALING = {"is_gold", "final_label", "reviewed_by", "reviewed_at", "review_count", "label_source"}


def _field_name(lookup: str) -> str | None:
    """The Image field a lookup starts from, by its name (final_label_id is final_label)."""
    try:
        return Image._meta.get_field(lookup.split(LOOKUP_SEP)[0]).name
    except FieldDoesNotExist:
        return None


class LabelSeenFilter(admin.SimpleListFilter):
    """The final label filter for those gold_hidden_from: a gold image has no label. The same
    parameter as the Leads' filter on the field, so that a link to one label's images serves
    both ("no label" is final_label__isnull there, "none" here)."""

    title = "final label"
    parameter_name = "final_label__id__exact"
    NONE = "none"

    def lookups(self, request, model_admin):
        return [*((str(label.pk), label.name) for label in Label.objects.all()), (self.NONE, "No label")]

    def queryset(self, request, queryset):
        labelled = image_labelled_q(gold_as_open=True)
        if self.value() == self.NONE:
            return queryset.exclude(labelled)
        if self.value() and self.value().isdigit():
            return queryset.filter(labelled, final_label_id=int(self.value()))
        return queryset


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
