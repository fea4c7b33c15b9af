"""The keyboard review screen: one page and four small JSON endpoints (next, decide, skip, undo).

Kept out of ReviewAdmin the way Django keeps AutocompleteJsonView out of
ModelAdmin: class-based views given ``admin_site`` and ``model_admin``, wired in
ReviewAdmin.get_urls() through admin_site.admin_view (login, CSRF, no caching).
Every view needs the admin's review permission. The page's script
(predictions/static/predictions/review.js) keeps the next image preloaded and
posts decisions in the background. The strip of recent decisions is the undo
history and comes from the server (predictions/selectors/recent_decisions.py), so
undo survives a reload: decide answers carry the new entry, undo answers the strip.
"""

from functools import cached_property

from django import forms
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import JsonResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.views import View

from images.models import UploadBatch
from predictions.models import Label, ModelVersion
from predictions.selectors.dashboard import reviews_today_count
from predictions.selectors.demo import demo_training_unfinished
from predictions.selectors.queue import (
    QueueFilters,
    QueueOrder,
    label_shortcuts,
    review_queue,
    review_queue_size_estimate,
)
from predictions.selectors.recent_decisions import (
    image_label_given_since,
    review_decision_entry,
    review_recent_decisions,
    review_undone_message,
)
from predictions.selectors.review_items import review_item_undone, review_items
from predictions.selectors.versions import model_version_or_active
from predictions.services.quality import LEAD_PERMISSION
from predictions.services.reviews import (
    ReviewConflict,
    review_claim_next,
    review_claim_release,
    review_decide,
    review_undo_last,
)

# Image ids a reviewer skipped this session: they come back only when nothing else is left.
SKIPPED_SESSION_KEY = "review_skipped_image_ids"
SKIPPED_KEPT = 500
# Image ids the audit order served this reviewer: only decisions on these join the
# random sample (an undo can bring back an image another order served).
AUDIT_SESSION_KEY = "review_audit_image_ids"
ENDPOINTS = ("next", "decide", "skip", "undo")


class ReviewQueueForm(forms.Form):
    """The screen's queue choice, read from its querystring."""

    order = forms.ChoiceField(choices=QueueOrder.choices, required=False)
    model_version = forms.ModelChoiceField(
        ModelVersion.objects.all(), required=False, empty_label="Active version"
    )
    batch = forms.ModelChoiceField(UploadBatch.objects.all(), required=False, empty_label="All batches")
    label = forms.ModelChoiceField(Label.objects.all(), required=False, empty_label="Any", label="Predicted label")
    confidence_min = forms.FloatField(
        min_value=0, max_value=1, required=False, label="Confidence from",
        widget=forms.NumberInput(attrs={"step": "0.05", "placeholder": "0"}),
    )
    confidence_max = forms.FloatField(
        min_value=0, max_value=1, required=False, label="to",
        widget=forms.NumberInput(attrs={"step": "0.05", "placeholder": "1"}),
    )
    include_auto = forms.BooleanField(required=False, label="Include auto-accepted")

    def clean(self):
        cleaned = super().clean()
        low, high = cleaned.get("confidence_min"), cleaned.get("confidence_max")
        if low is not None and high is not None and low > high:
            raise ValidationError("The lowest confidence is above the highest.")
        return cleaned

    def queue_filters(self) -> QueueFilters:
        """The chosen filters; the defaults (active version, most uncertain first) when invalid."""
        if not self.is_valid():
            return QueueFilters()
        data = self.cleaned_data
        return QueueFilters(
            order=data["order"] or QueueOrder.UNCERTAINTY,
            model_version_id=data["model_version"].pk if data["model_version"] else None,
            batch_id=data["batch"].pk if data["batch"] else None,
            label_id=data["label"].pk if data["label"] else None,
            confidence_min=data["confidence_min"],
            confidence_max=data["confidence_max"],
            include_auto=data["include_auto"],
        )


def _int_or_none(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _int_list(values, *, limit: int = 20) -> list[int]:
    return [number for number in (_int_or_none(value) for value in values[:limit]) if number is not None]


def _no_model_reason() -> str:
    demo = demo_training_unfinished()
    return demo.waiting_message if demo is not None else ""


def _error(message: str, *, status: int = 400) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


class ReviewScreenMixin:
    """What every screen view shares: the admin it belongs to, the permission and the queue choice."""

    admin_site = None
    model_admin = None

    def dispatch(self, request, *args, **kwargs):
        # A wrong method is answered 405 before the permission, as require_POST did.
        method = request.method.lower()
        if method not in self.http_method_names or not hasattr(self, method):
            return self.http_method_not_allowed(request, *args, **kwargs)
        if not self.model_admin.has_review_permission(request):
            raise PermissionDenied
        return super().dispatch(request, *args, **kwargs)

    @cached_property
    def queue_form(self) -> ReviewQueueForm:
        # The endpoints carry the page's querystring, so they serve the queue the page shows.
        form = ReviewQueueForm(self.request.GET)
        if not self.request.user.has_perm(LEAD_PERMISSION):
            # Adjudication is a Lead's; asking for it gives a reviewer the default queue.
            order = form.fields["order"]
            order.choices = [choice for choice in order.choices if choice[0] != QueueOrder.ADJUDICATION]
        return form

    @cached_property
    def filters(self) -> QueueFilters:
        return self.queue_form.queue_filters()

    @cached_property
    def model_version(self) -> ModelVersion | None:
        return model_version_or_active(version_id=self.filters.model_version_id)

    def claimed_items(self, *, count: int, held: list[int]) -> list[dict]:
        predictions = review_claim_next(
            reviewer=self.request.user,
            filters=self.filters,
            count=count,
            exclude_image_ids=held,
            skipped_image_ids=self.request.session.get(SKIPPED_SESSION_KEY, []),
        )
        if self.filters.order == QueueOrder.AUDIT and predictions:
            served = self.request.session.get(AUDIT_SESSION_KEY, [])
            self.request.session[AUDIT_SESSION_KEY] = (served + [p.image_id for p in predictions])[-SKIPPED_KEPT:]
        return review_items(predictions=predictions, model_version=self.model_version)


class ReviewScreenView(ReviewScreenMixin, View):
    """The page: the first two images claimed, the labels' keys and the endpoints' URLs."""

    def get(self, request):
        model_version = self.model_version
        left, more_left = 0, False
        if model_version is not None:
            queue = review_queue(reviewer=request.user, filters=self.filters, model_version=model_version)
            left, more_left = review_queue_size_estimate(queue=queue)
        query = request.GET.urlencode()
        shortcuts = label_shortcuts()
        config = {
            "urls": {
                name: reverse(f"admin:predictions_review_{name}") + (f"?{query}" if query else "")
                for name in ENDPOINTS
            },
            "items": self.claimed_items(count=2, held=[]),
            "labels": [{"id": s.label.pk, "name": s.label.name, "key": s.key} for s in shortcuts],
            "left": left,
            "more_left": more_left,
            "reviewed_today": reviews_today_count(reviewer=request.user),
            "recent": review_recent_decisions(reviewer=request.user),
        }
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model_admin.opts,
            "title": "Review images",
            "is_nav_sidebar_enabled": False,  # the image gets the room
            "form": self.queue_form,
            "model_version": model_version,
            # On a first run, why there is nothing yet: the demo model is still training.
            "no_model_reason": _no_model_reason() if model_version is None else "",
            "shortcuts": shortcuts,
            "config": config,
        }
        return TemplateResponse(request, "admin/predictions/review/screen.html", context)


class ReviewNextView(ReviewScreenMixin, View):
    """Claim and return the next `count` images as {"items": [...]}; `exclude`: the ones the screen holds."""

    def post(self, request):
        count = min(max(_int_or_none(request.POST.get("count")) or 1, 1), 5)
        held = _int_list(request.POST.getlist("exclude"))
        return JsonResponse({"items": self.claimed_items(count=count, held=held)})


class ReviewDecideView(ReviewScreenMixin, View):
    """Record a decision: image, label (an id, or "confirm" for the model's label), seconds."""

    def post(self, request):
        body = request.POST
        image_id = _int_or_none(body.get("image"))
        if image_id is None:
            return _error("Which image? Send its id as 'image'.")
        label = body.get("label")
        label_id = None if label == "confirm" else _int_or_none(label)
        if label_id is None and label != "confirm":
            return _error("Send a label id as 'label', or 'confirm' to accept the prediction.")
        seconds = body.get("seconds")
        try:
            seconds = max(float(seconds), 0.0) if seconds is not None else None
        except (TypeError, ValueError):
            seconds = None
        try:
            review = review_decide(
                reviewer=request.user,
                image_id=image_id,
                label_id=label_id,
                prediction_id=_int_or_none(body.get("prediction")),
                model_version=self.model_version,
                seconds_spent=seconds,
                queue_order=self.queue_order(image_id),
                include_auto=self.filters.include_auto,
            )
        except ReviewConflict as conflict:
            return _error(str(conflict), status=409)
        except ValidationError as error:
            return _error(" ".join(error.messages))
        return JsonResponse(
            {
                "review": review.pk,
                "label": review.label.name,
                "agreed": review.agreed,
                "reviewed_today": reviews_today_count(reviewer=request.user),
                "decision": review_decision_entry(review=review),
            }
        )

    def queue_order(self, image_id: int) -> str:
        """The order that served the image, as the review records it."""
        order = self.filters.order
        if order == QueueOrder.AUDIT and image_id not in self.request.session.get(AUDIT_SESSION_KEY, []):
            return ""
        return order


class ReviewSkipView(ReviewScreenMixin, View):
    """Pass on an image: its claim is released and it comes back to this reviewer last."""

    def post(self, request):
        image_id = _int_or_none(request.POST.get("image"))
        if image_id is None:
            return _error("Which image? Send its id as 'image'.")
        review_claim_release(reviewer=request.user, image_ids=[image_id])
        skipped = [pk for pk in request.session.get(SKIPPED_SESSION_KEY, []) if pk != image_id]
        request.session[SKIPPED_SESSION_KEY] = (skipped + [image_id])[-SKIPPED_KEPT:]
        return JsonResponse({"skipped": image_id})


class ReviewUndoView(ReviewScreenMixin, View):
    """Take back the given (else the latest) screen decision of this reviewer, even one made before a
    reload; the image comes back as {"item": ...}, with a message naming it and the strip as it is now."""

    def post(self, request):
        try:
            review = review_undo_last(reviewer=request.user, review_id=_int_or_none(request.POST.get("review")))
        except ReviewConflict as conflict:
            return _error(str(conflict), status=409)
        if review is None:
            return _error("Nothing to undo.", status=404)
        # Labelled by a decision made since: the image is not open again, and the message says so.
        kept = image_label_given_since(review=review)
        return JsonResponse(
            {
                "undone": review.pk,
                "message": review_undone_message(review=review, kept=kept),
                "item": None if kept else review_item_undone(review=review, model_version=self.model_version),
                "reviewed_today": reviews_today_count(reviewer=request.user),
                "recent": review_recent_decisions(reviewer=request.user),
            }
        )

