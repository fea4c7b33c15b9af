"""Numbers for the admin index: where the images stand and how reviewing goes today.

A handful of aggregate queries, each served by an index, so the index page
stays cheap with 100k images.
"""

from dataclasses import dataclass, field
from datetime import datetime, time

from django.db.models import Count, Q
from django.utils import timezone

from images.models import Image
from predictions.models import ModelVersion, Prediction, PredictionFailure, Review
from predictions.selectors.versions import model_version_active


def start_of_today() -> datetime:
    """Midnight in the site's time zone: "today" for the counters."""
    return timezone.make_aware(datetime.combine(timezone.localdate(), time.min))


def reviews_today_count(*, reviewer) -> int:
    """Live decisions this reviewer made today (served by the (reviewer, created_at) index)."""
    return Review.objects.filter(
        reviewer=reviewer, created_at__gte=start_of_today(), undone_at__isnull=True
    ).count()


@dataclass(frozen=True)
class ReviewDashboard:
    model_version: ModelVersion | None
    images: int
    predicted: int
    failed: int
    waiting_for_review: int
    reviewed: int
    agreement_rate: float | None
    agreement_sample: int
    reviews_today: list[dict] = field(default_factory=list)

    @property
    def pending_predictions(self) -> int:
        """Images without a prediction (or a failure) from the active version."""
        return max(self.images - self.predicted - self.failed, 0)


def review_dashboard(*, gold_hidden: bool = False) -> ReviewDashboard:
    """With ``gold_hidden`` (predictions.selectors.quality.gold_hidden_from), gold images count as
    waiting, as the image list shows them to such a user: else the difference tells how many there are."""
    version = model_version_active()
    images = Image.objects.count()
    reviewed_images = Image.objects.filter(final_label__isnull=False)
    waits = Q(image__final_label__isnull=True)
    if gold_hidden:
        reviewed_images = reviewed_images.filter(is_gold=False)
        waits |= Q(image__is_gold=True)
    reviewed = reviewed_images.count()
    predicted = failed = waiting = 0
    if version is not None:
        predictions = Prediction.objects.filter(model_version=version)
        predicted = predictions.count()
        waiting = predictions.filter(waits).count()
        failed = PredictionFailure.objects.filter(model_version=version).count()
    # Live decisions that were shown a prediction: how often the model had it right.
    agreement = Review.objects.filter(undone_at__isnull=True, agreed__isnull=False).aggregate(
        total=Count("id"), agreed=Count("id", filter=Q(agreed=True))
    )
    reviews_today = list(
        Review.objects.filter(created_at__gte=start_of_today(), undone_at__isnull=True)
        .values("reviewer__username")
        .annotate(count=Count("id"))
        .order_by("-count", "reviewer__username")
    )
    return ReviewDashboard(
        model_version=version,
        images=images,
        predicted=predicted,
        failed=failed,
        waiting_for_review=waiting,
        reviewed=reviewed,
        agreement_rate=agreement["agreed"] / agreement["total"] if agreement["total"] else None,
        agreement_sample=agreement["total"],
        reviews_today=reviews_today,
    )
