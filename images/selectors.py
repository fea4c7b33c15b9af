"""Reads of the images app that the admin, the review screen and exports share.

Everything "relative to the active model version" takes that version's id once
and annotates it into a single query, so a changelist page costs the same number
of queries for 5 rows as for 100.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from django.db import models
from django.db.models import (
    Case,
    Count,
    Exists,
    OuterRef,
    QuerySet,
    Subquery,
    Value,
    When,
)
from django.db.models.functions import Coalesce

from predictions.models import ExportJob, ModelVersion, Prediction, PredictionFailure

from .models import Image, UploadBatch


class ReviewStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    PREDICTED = "predicted", "Predicted"
    FAILED = "failed", "Prediction failed"
    REVIEWED = "reviewed", "Reviewed"


def active_model_version_id() -> int | None:
    return ModelVersion.objects.filter(is_active=True).values_list("pk", flat=True).first()


def images_with_active_prediction(queryset: QuerySet[Image], *, version_id: int | None = None) -> QuerySet[Image]:
    """Annotate the active version's prediction and the review status of each image.

    Adds ``predicted_label_name``, ``predicted_confidence`` and ``review_status``
    (a ReviewStatus value), and for filters the aliases ``has_active_prediction``
    and ``prediction_failed``.

    Each is a correlated subquery on the (image, model_version) unique index,
    not a join: count() leaves out the annotations it does not need, but never
    a join, so the changelist paginator's COUNT over 100k images paid two
    lookups per row for columns that cannot change it. A page's rows cost the
    same lookups either way.
    """
    if version_id is None:
        version_id = active_model_version_id()
    if version_id is None:
        return queryset.alias(
            has_active_prediction=Value(False),
            prediction_failed=Value(False),
        ).annotate(
            predicted_label_name=Value(None, output_field=models.CharField()),
            predicted_confidence=Value(None, output_field=models.FloatField()),
            review_status=Case(
                When(final_label__isnull=False, then=Value(ReviewStatus.REVIEWED.value)),
                default=Value(ReviewStatus.PENDING.value),
            ),
        )
    # One prediction per (image, version) at most: no ordering needed.
    prediction = Prediction.objects.filter(image=OuterRef("pk"), model_version_id=version_id).order_by()
    failures = PredictionFailure.objects.filter(image=OuterRef("pk"), model_version_id=version_id)
    return queryset.alias(
        has_active_prediction=Exists(prediction),
        prediction_failed=Exists(failures),
    ).annotate(
        predicted_label_name=Subquery(prediction.values("label__name")[:1]),
        predicted_confidence=Subquery(prediction.values("confidence")[:1]),
        review_status=Case(
            When(final_label__isnull=False, then=Value(ReviewStatus.REVIEWED.value)),
            When(has_active_prediction=True, then=Value(ReviewStatus.PREDICTED.value)),
            When(prediction_failed=True, then=Value(ReviewStatus.FAILED.value)),
            default=Value(ReviewStatus.PENDING.value),
        ),
    )


def images_with_review_status(queryset: QuerySet[Image], status: str) -> QuerySet[Image]:
    """Filter a queryset of images_with_active_prediction() on its review status.

    Plain conditions on the joined columns rather than on the CASE expression, so
    the database can use its indexes.
    """
    if status == ReviewStatus.REVIEWED:
        return queryset.filter(final_label__isnull=False)
    unreviewed = queryset.filter(final_label__isnull=True)
    if status == ReviewStatus.PREDICTED:
        return unreviewed.filter(has_active_prediction=True)
    unpredicted = unreviewed.filter(has_active_prediction=False)
    if status == ReviewStatus.FAILED:
        return unpredicted.filter(prediction_failed=True)
    return unpredicted.filter(prediction_failed=False)


def images_predicted_as(queryset: QuerySet[Image], *, label_id: int) -> QuerySet[Image]:
    """The images the active version predicted as this label.

    A join (at most one row per image and version), so the database starts
    from the prediction's label index rather than looking up every image.
    """
    return queryset.filter(predictions__model_version__is_active=True, predictions__label_id=label_id)


def images_predicted_by(queryset: QuerySet[Image], *, version_id: int) -> QuerySet[Image]:
    return queryset.filter(Exists(Prediction.objects.filter(image=OuterRef("pk"), model_version_id=version_id)))


def image_predictions(*, image: Image, top_k: int = 5) -> list[dict]:
    """Each model version's prediction of ``image``, with its top-k probabilities."""
    predictions = image.predictions.select_related("model_version", "label").order_by(
        "-model_version__is_active", "-model_version__created_at"
    )
    result = []
    for prediction in predictions:
        class_names = prediction.model_version.class_names or []
        pairs = sorted(zip(class_names, prediction.probabilities or []), key=lambda pair: pair[1], reverse=True)
        result.append(
            {
                "prediction": prediction,
                "version": prediction.model_version,
                "top": [{"name": name, "probability": p, "percent": round(p * 100, 1)} for name, p in pairs[:top_k]],
            }
        )
    return result


# --- upload batches --------------------------------------------------------------


def batches_with_progress(queryset: QuerySet[UploadBatch], *, version_id: int | None = None) -> QuerySet[UploadBatch]:
    """Annotate ``predicted_count`` and ``failed_count`` for the active version."""
    if version_id is None:
        version_id = active_model_version_id()
    if version_id is None:
        return queryset.annotate(predicted_count=Value(0), failed_count=Value(0))

    def count_per_batch(model) -> Coalesce:
        rows = (
            model.objects.filter(image__batch=OuterRef("pk"), model_version_id=version_id)
            .order_by()
            .values("image__batch")
            .annotate(n=Count("pk"))
            .values("n")
        )
        return Coalesce(Subquery(rows, output_field=models.IntegerField()), 0)

    return queryset.annotate(
        predicted_count=count_per_batch(Prediction), failed_count=count_per_batch(PredictionFailure)
    )


def batch_prediction_failures(*, batch: UploadBatch, version_id: int | None = None) -> QuerySet[PredictionFailure]:
    failures = PredictionFailure.objects.filter(image__batch=batch).select_related("image", "model_version")
    if version_id is not None:
        failures = failures.filter(model_version_id=version_id)
    return failures.order_by("image_id")


def failed_image_ids(*, image_ids=None, batch_ids=None) -> list[int]:
    """Images with a failed prediction by the active version, among the given ones."""
    version_id = active_model_version_id()
    if version_id is None:
        return []
    failures = PredictionFailure.objects.filter(model_version_id=version_id)
    if image_ids is not None:
        failures = failures.filter(image_id__in=list(image_ids))
    if batch_ids is not None:
        failures = failures.filter(image__batch_id__in=list(batch_ids))
    return list(failures.order_by("image_id").values_list("image_id", flat=True).distinct())


# --- private media ---------------------------------------------------------------


class MediaKind:
    IMAGE = "image"
    THUMBNAIL = "thumbnail"
    EXPORT = "export"


# Stored names are content-addressed (see images.services), so the sha256 in
# the path finds the row through its unique index; the name must then match
# exactly what the row holds.
_CONTENT_ADDRESSED = re.compile(r"^(images|thumbnails)/[0-9a-f]{2}/[0-9a-f]{2}/(?P<sha256>[0-9a-f]{64})[^/]*$")


@dataclass(frozen=True)
class _Paths:
    file: str
    thumbnail: str


def media_file_kind(*, path: str) -> str | None:
    """What ``path`` (a storage name) is, or None when nothing in the database points at it."""
    if not path or "\x00" in path or "\\" in path or path.startswith("/") or ".." in path.split("/"):
        return None
    match = _CONTENT_ADDRESSED.match(path)
    if match:
        row = Image.objects.filter(sha256=match["sha256"]).values_list("file", "thumbnail").first()
        if row is None:
            return None
        paths = _Paths(*row)
        if path == paths.file:
            return MediaKind.IMAGE
        if path == paths.thumbnail:
            return MediaKind.THUMBNAIL
        return None
    if ExportJob.objects.filter(file=path).exists():
        return MediaKind.EXPORT
    return None
