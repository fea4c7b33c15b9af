"""Admin: reviews. The history of decisions (read-only, with the label import) and the
keyboard review screen, whose views live in predictions/admin/review_views.py.
"""

from django.contrib import admin
from django.urls import path, reverse
from django.utils.html import format_html

from predictions.admin.gold import gold_toggle_view
from predictions.admin.image_actions import ImageActionPermissionsMixin
from predictions.admin.label_imports import ReviewImportMixin
from predictions.admin.readonly import ReadOnlyAdminMixin
from predictions.admin.review_views import (
    ReviewDecideView,
    ReviewNextView,
    ReviewScreenView,
    ReviewSkipView,
    ReviewUndoView,
)
from predictions.admin.reviewer_stats_views import ReviewerStatsView
from predictions.admin.similar_views import LabelSimilarView, ReviewSimilarView
from predictions.models import Review
from predictions.selectors.quality import gold_hidden_from, reviews_visible_to


@admin.register(Review)
class ReviewAdmin(ReviewImportMixin, ReadOnlyAdminMixin, ImageActionPermissionsMixin, admin.ModelAdmin):
    list_display = ("image_name", "label", "agreed", "reviewer", "source", "created_at", "undone_at", "seconds_spent")
    list_filter = (
        "reviewer",
        "label",
        "source",
        "agreed",
        ("undone_at", admin.EmptyFieldListFilter),
        "created_at",
    )
    search_fields = ("image__original_name",)
    list_select_related = ("image", "label", "reviewer")
    date_hierarchy = "created_at"
    raw_id_fields = ("image", "prediction")
    # Import-export's changelist (the Import button) with the review screen's link added.
    import_export_change_list_template = "admin/predictions/review/change_list.html"

    # The history is never edited or deleted (that would also leave the images'
    # current labels stale): decisions are made on the screen or the image
    # changelist, and taken back with undo.
    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="image", ordering="image__original_name")
    def image_name(self, review):
        url = reverse("admin:images_image_change", args=[review.image_id])
        return format_html('<a href="{}">{}</a>', url, review.image)

    def get_queryset(self, request):
        return reviews_visible_to(user=request.user, reviews=super().get_queryset(request))

    # A decision's queue order says "gold" on a gold check: not for those gold_hidden_from.
    def get_exclude(self, request, obj=None):
        exclude = list(super().get_exclude(request, obj) or [])
        return [*exclude, "queue_order"] if gold_hidden_from(request.user) else exclude

    def lookup_allowed(self, lookup, value, request=None):
        if request is not None and gold_hidden_from(request.user) and lookup.split("__")[0] == "queue_order":
            return False
        return super().lookup_allowed(lookup, value, request)

    def changelist_view(self, request, extra_context=None):
        extra_context = {**(extra_context or {}), "can_review": self.has_review_permission(request)}
        return super().changelist_view(request, extra_context)

    def get_urls(self):
        def view(view_class):
            return self.admin_site.admin_view(view_class.as_view(admin_site=self.admin_site, model_admin=self))

        return [
            path("screen/", view(ReviewScreenView), name="predictions_review_screen"),
            path("screen/next/", view(ReviewNextView), name="predictions_review_next"),
            path("screen/decide/", view(ReviewDecideView), name="predictions_review_decide"),
            path("screen/skip/", view(ReviewSkipView), name="predictions_review_skip"),
            path("screen/undo/", view(ReviewUndoView), name="predictions_review_undo"),
            path("screen/similar/<int:image_id>/", view(ReviewSimilarView), name="predictions_review_similar"),
            path("similar/<int:image_id>/label/", view(LabelSimilarView), name="predictions_review_label_similar"),
            path("gold/<int:image_id>/", self.admin_site.admin_view(gold_toggle_view), name="predictions_review_gold"),
            path("stats/", view(ReviewerStatsView), name="predictions_review_stats"),
        ] + super().get_urls()
