"""Admin: reviews. The history of decisions (read-only) and the keyboard review screen.

The screen is one page plus four small JSON endpoints (next, decide, skip,
undo), all admin views behind `predictions.add_review`; the page's script
keeps the next image preloaded and posts decisions in the background.
"""

from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import JsonResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.decorators import method_decorator
from django.utils.html import format_html
from django.views.decorators.http import require_POST

from images.models import UploadBatch
from predictions.admin.exports import ReviewImportMixin
from predictions.models import Label, ModelVersion, Prediction, Review
from predictions.selectors.dashboard import reviews_today_count
from predictions.selectors.queue import (
    QueueFilters,
    QueueOrder,
    label_shortcuts,
    queue_model_version,
    review_queue,
    review_queue_size_estimate,
)
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
TOP_K = 5


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
        )


def _item_payload(prediction: Prediction, *, model_version: ModelVersion, labels_by_name: dict[str, Label]) -> dict:
    """What the screen needs to show one image: its URLs, the prediction and the top-k bars."""
    image = prediction.image
    ranked = sorted(
        zip(model_version.class_names, prediction.probabilities, strict=False), key=lambda pair: pair[1], reverse=True
    )
    return {
        "image": {
            "id": image.pk,
            "name": image.original_name,
            "url": image.file.url,
            "thumbnail_url": image.thumbnail.url if image.thumbnail else None,
            "width": image.width,
            "height": image.height,
            "change_url": reverse("admin:images_image_change", args=[image.pk]),
        },
        "prediction": {
            "id": prediction.pk,
            "label_id": prediction.label_id,
            "label": prediction.label.name,
            "confidence": prediction.confidence,
            "margin": prediction.margin,
            "top": [
                {
                    "label_id": labels_by_name[name].pk if name in labels_by_name else None,
                    "label": name,
                    "probability": probability,
                }
                for name, probability in ranked[:TOP_K]
            ],
        },
    }


def _int_or_none(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _int_list(values, *, limit: int = 20) -> list[int]:
    return [number for number in (_int_or_none(value) for value in values[:limit]) if number is not None]


@admin.register(Review)
class ReviewAdmin(ReviewImportMixin, admin.ModelAdmin):
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
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_review_permission(self, request) -> bool:
        return request.user.has_perm("predictions.add_review")

    @admin.display(description="image", ordering="image__original_name")
    def image_name(self, review):
        url = reverse("admin:images_image_change", args=[review.image_id])
        return format_html('<a href="{}">{}</a>', url, review.image)

    def changelist_view(self, request, extra_context=None):
        extra_context = {**(extra_context or {}), "can_review": self.has_review_permission(request)}
        return super().changelist_view(request, extra_context)

    def get_urls(self):
        def wrap(view):
            return self.admin_site.admin_view(view)

        return [
            path("screen/", wrap(self.screen_view), name="predictions_review_screen"),
            path("screen/next/", wrap(self.next_view), name="predictions_review_next"),
            path("screen/decide/", wrap(self.decide_view), name="predictions_review_decide"),
            path("screen/skip/", wrap(self.skip_view), name="predictions_review_skip"),
            path("screen/undo/", wrap(self.undo_view), name="predictions_review_undo"),
        ] + super().get_urls()

    # --- the review screen -------------------------------------------------

    def _check_review_permission(self, request) -> None:
        if not self.has_review_permission(request):
            raise PermissionDenied

    def _queue_choice(self, request) -> tuple[ReviewQueueForm, QueueFilters, ModelVersion | None]:
        form = ReviewQueueForm(request.GET)
        filters = form.queue_filters()
        return form, filters, queue_model_version(filters=filters)

    def _claim(self, request, filters: QueueFilters, *, count: int, held: list[int]) -> list[Prediction]:
        return review_claim_next(
            reviewer=request.user,
            filters=filters,
            count=count,
            exclude_image_ids=held,
            skipped_image_ids=request.session.get(SKIPPED_SESSION_KEY, []),
        )

    def _payloads(self, predictions: list[Prediction], model_version: ModelVersion | None) -> list[dict]:
        if not predictions:
            return []
        labels_by_name = {label.name: label for label in Label.objects.all()}
        return [_item_payload(p, model_version=model_version, labels_by_name=labels_by_name) for p in predictions]

    def screen_view(self, request):
        self._check_review_permission(request)
        form, filters, model_version = self._queue_choice(request)
        items = self._payloads(self._claim(request, filters, count=2, held=[]), model_version)
        left = 0
        more_left = False
        if model_version is not None:
            queue = review_queue(reviewer=request.user, filters=filters, model_version=model_version)
            left, more_left = review_queue_size_estimate(queue=queue)
        query = request.GET.urlencode()
        shortcuts = label_shortcuts()
        config = {
            "urls": {
                name: reverse(f"admin:predictions_review_{name}") + (f"?{query}" if query else "")
                for name in ("next", "decide", "skip", "undo")
            },
            "items": items,
            "labels": [{"id": s.label.pk, "name": s.label.name, "key": s.key} for s in shortcuts],
            "left": left,
            "more_left": more_left,
            "reviewed_today": reviews_today_count(reviewer=request.user),
        }
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Review images",
            "is_nav_sidebar_enabled": False,  # the image gets the room
            "form": form,
            "model_version": model_version,
            "shortcuts": shortcuts,
            "config": config,
        }
        return TemplateResponse(request, "admin/predictions/review/screen.html", context)

    @staticmethod
    def _error(message: str, *, status: int = 400) -> JsonResponse:
        return JsonResponse({"error": message}, status=status)

    @method_decorator(require_POST)
    def next_view(self, request):
        """Claim and return the next `count` images as {"items": [...]}; `exclude`: the ones the screen holds."""
        self._check_review_permission(request)
        _form, filters, model_version = self._queue_choice(request)
        count = min(max(_int_or_none(request.POST.get("count")) or 1, 1), 5)
        held = _int_list(request.POST.getlist("exclude"))
        return JsonResponse({"items": self._payloads(self._claim(request, filters, count=count, held=held), model_version)})

    @method_decorator(require_POST)
    def decide_view(self, request):
        """Record a decision: image, label (an id, or "confirm" for the model's label), seconds."""
        self._check_review_permission(request)
        body = request.POST
        image_id = _int_or_none(body.get("image"))
        if image_id is None:
            return self._error("Which image? Send its id as 'image'.")
        label = body.get("label")
        label_id = None if label == "confirm" else _int_or_none(label)
        if label_id is None and label != "confirm":
            return self._error("Send a label id as 'label', or 'confirm' to accept the prediction.")
        seconds = body.get("seconds")
        try:
            seconds = max(float(seconds), 0.0) if seconds is not None else None
        except (TypeError, ValueError):
            seconds = None
        _form, _filters, model_version = self._queue_choice(request)
        try:
            review = review_decide(
                reviewer=request.user,
                image_id=image_id,
                label_id=label_id,
                prediction_id=_int_or_none(body.get("prediction")),
                model_version=model_version,
                seconds_spent=seconds,
            )
        except ReviewConflict as conflict:
            return self._error(str(conflict), status=409)
        except ValidationError as error:
            return self._error(" ".join(error.messages))
        return JsonResponse(
            {
                "review": review.pk,
                "label": review.label.name,
                "agreed": review.agreed,
                "reviewed_today": reviews_today_count(reviewer=request.user),
            }
        )

    @method_decorator(require_POST)
    def skip_view(self, request):
        """Pass on an image: its claim is released and it comes back to this reviewer last."""
        self._check_review_permission(request)
        image_id = _int_or_none(request.POST.get("image"))
        if image_id is None:
            return self._error("Which image? Send its id as 'image'.")
        review_claim_release(reviewer=request.user, image_ids=[image_id])
        skipped = [pk for pk in request.session.get(SKIPPED_SESSION_KEY, []) if pk != image_id]
        request.session[SKIPPED_SESSION_KEY] = (skipped + [image_id])[-SKIPPED_KEPT:]
        return JsonResponse({"skipped": image_id})

    @method_decorator(require_POST)
    def undo_view(self, request):
        """Take back the given (else the latest) decision; the image comes back as {"item": ...}."""
        self._check_review_permission(request)
        review = review_undo_last(reviewer=request.user, review_id=_int_or_none(request.POST.get("review")))
        if review is None:
            return self._error("Nothing to undo.", status=404)
        _form, _filters, model_version = self._queue_choice(request)
        prediction = review.prediction
        if prediction is None and model_version is not None:
            prediction = Prediction.objects.filter(image_id=review.image_id, model_version=model_version).first()
        item = None
        if prediction is not None:
            prediction = Prediction.objects.select_related("image", "label", "model_version").get(pk=prediction.pk)
            item = self._payloads([prediction], prediction.model_version)[0]
        return JsonResponse(
            {"undone": review.pk, "item": item, "reviewed_today": reviews_today_count(reviewer=request.user)}
        )
