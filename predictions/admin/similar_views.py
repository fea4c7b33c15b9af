"""More like this (the image page, the review screen) and the "label similar" page.

- ``SimilarPanelMixin`` puts the most similar images on ImageAdmin's change page.
- ``ReviewSimilarView``: the review screen's strip, JSON (wired in ReviewAdmin.get_urls()).
- ``LabelSimilarView``: from a reviewed image, a similarity threshold, a preview of the
  unreviewed images above it, and one undoable operation giving them its label
  (predictions.services.similar). For reviewers (``predictions.add_review``).

The reads are predictions.selectors.similar; a gold image's label is never shown
or handed on here to anyone but a Lead (it is the reference reviewers are measured against).
"""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import JsonResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html
from django.utils.http import urlencode
from django.views import View

from images.models import Image
from predictions.admin.operations import undo_url
from predictions.admin.review_views import ReviewScreenMixin
from predictions.selectors.similar import LABEL_SIMILAR_MAX, SimilarImage, similar_images, similar_unreviewed_images
from predictions.selectors.quality import gold_hidden_from, image_label_seen_id
from predictions.services.similar import label_similar_apply

DEFAULT_THRESHOLD = 0.9


def _thumbnail_url(item: SimilarImage) -> str | None:
    return Image._meta.get_field("thumbnail").storage.url(item.thumbnail) if item.thumbnail else None


def _may_label_like(user, image: Image) -> bool:
    """Whether ``user`` may hand on ``image``'s label (it has one they see; a gold one only a Lead)."""
    return image_label_seen_id(image=image, user=user) is not None and user.has_perm("predictions.add_review")


class SimilarPanelMixin:
    """For ImageAdmin: "More like this" on the image page, with the link to label similar images."""

    def get_object(self, request, object_id, from_field=None):
        image = super().get_object(request, object_id, from_field)
        if image is not None:
            image.similar_may_label = _may_label_like(request.user, image)  # read by similar_panel
        return image

    def get_readonly_fields(self, request, obj=None):
        return [*super().get_readonly_fields(request, obj), "similar_panel"]

    def get_fieldsets(self, request, obj=None):
        fieldsets = super().get_fieldsets(request, obj)
        return fieldsets if obj is None else [*fieldsets, ("More like this", {"fields": ["similar_panel"]})]

    def similar_panel(self, image):
        items = similar_images(image_id=image.pk)
        may_label = getattr(image, "similar_may_label", False)
        return render_to_string("admin/predictions/similar/panel.html", {
            "items": [{"item": item, "thumbnail_url": _thumbnail_url(item)} for item in items],
            "label_url": reverse("admin:predictions_review_label_similar", args=[image.pk]) if may_label else "",
        })  # fmt: skip

    similar_panel.short_description = "most similar (active model)"


class ReviewSimilarView(ReviewScreenMixin, View):
    """{"items": [...]}: the images most like one image, for the review screen's strip."""

    def get(self, request, image_id: int):
        items = similar_images(image_id=image_id)
        return JsonResponse({
            "items": [
                {
                    "id": item.image_id,
                    "name": item.name,
                    "similarity": item.similarity,
                    "label": item.label,
                    "reviewed": item.reviewed,
                    "thumbnail_url": _thumbnail_url(item),
                    "change_url": reverse("admin:images_image_change", args=[item.image_id]),
                }
                for item in items
            ]
        })  # fmt: skip


class ThresholdForm(forms.Form):
    threshold = forms.FloatField(
        min_value=0, max_value=1, initial=DEFAULT_THRESHOLD, label="Similarity at least",
        widget=forms.NumberInput(attrs={"step": "0.01"}),
        help_text="Cosine similarity of the active model's embeddings: 1 is the same picture.",
    )  # fmt: skip


class LabelSimilarView(View):
    """GET: the preview for a threshold; POST: label the images it shows."""

    admin_site = None
    model_admin = None

    def dispatch(self, request, image_id: int):
        if not self.model_admin.has_review_permission(request):
            raise PermissionDenied
        self.image = get_object_or_404(Image.objects.select_related("final_label"), pk=image_id)
        # A gold image has no label to those not told which are gold: the same answer as an open one's.
        if image_label_seen_id(image=self.image, user=request.user) is None:
            messages.warning(request, f"{self.image} has no label yet: review it first, then label similar images.")
            return redirect("admin:images_image_change", self.image.pk)
        return super().dispatch(request, image_id)

    def get(self, request, image_id: int):
        form = ThresholdForm(request.GET if "threshold" in request.GET else None)
        threshold = form.cleaned_data["threshold"] if form.is_valid() else DEFAULT_THRESHOLD
        preview = similar_unreviewed_images(
            image_id=self.image.pk, threshold=threshold, gold_hidden=gold_hidden_from(request.user)
        )
        return self._render(request, form=form, threshold=threshold, preview=preview)

    def post(self, request, image_id: int):
        form = ThresholdForm(request.POST)
        if not form.is_valid():
            return self._render(request, form=form, threshold=DEFAULT_THRESHOLD, preview=[])
        try:
            result = label_similar_apply(image=self.image, threshold=form.cleaned_data["threshold"], user=request.user)
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))
            return redirect("admin:images_image_change", self.image.pk)
        text = f"“{self.image.final_label}” given to {result.changed} similar image(s)"
        if result.skipped:
            text += f"; left alone: {result.skipped_text(gold_hidden=gold_hidden_from(request.user))}"
        if result.changed:
            back = reverse("admin:images_image_change", args=[self.image.pk])
            undo = f"{undo_url(result.operation)}?{urlencode({'next': back})}"
            messages.success(request, format_html('{}. <a href="{}" class="undo-operation">Undo</a>', text, undo))
        else:
            messages.warning(request, f"{text}.")
        return redirect("admin:images_image_change", self.image.pk)

    def _render(self, request, *, form, threshold: float, preview: list[SimilarImage]):
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model_admin.opts,
            "title": f"Label images like {self.image}",
            "image": self.image,
            "form": form,
            "threshold": threshold,
            "preview": [{"item": item, "thumbnail_url": _thumbnail_url(item)} for item in preview],
            "limit": LABEL_SIMILAR_MAX,
        }
        return TemplateResponse(request, "admin/predictions/similar/label_similar.html", context)
