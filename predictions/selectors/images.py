"""Reads about images relative to a model version, shared by the image admin, the review screen and exports.

The images app knows nothing of predictions; what an image's prediction or
review status is, and how far an upload batch is predicted, is read here. The
image admin (images/admin.py, the one images module that imports predictions)
uses these for its columns and filters.

Everything "relative to the active model version" (predictions.selectors.versions)
takes that version's id once and annotates it into a single query, so a
changelist page costs the same number of queries for 5 rows as for 100.
"""

from __future__ import annotations

from django.db import models
from django.db.models import (
    Case,
    Count,
    Exists,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Value,
    When,
)
from django.db.models.functions import Coalesce

from images.models import Image, UploadBatch
from images.selectors import MediaKind
from predictions.models import ExportJob, Prediction, PredictionFailure
from predictions.selectors.versions import model_version_active_id


class ReviewStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    PREDICTED = "predicted", "Predicted"
    FAILED = "failed", "Prediction failed"
    REVIEWED = "reviewed", "Reviewed"


def images_with_active_prediction(
    queryset: QuerySet[Image], *, version_id: int | None = None, gold_as_open: bool = False
) -> QuerySet[Image]:
    """Annotate the active version's prediction and the review status of each image.

    Adds ``predicted_label_name``, ``predicted_confidence`` and ``review_status``
    (a ReviewStatus value), and for filters the aliases ``has_active_prediction``
    and ``prediction_failed``. With ``gold_as_open`` (for those
    predictions.selectors.quality.gold_hidden_from), a gold image's status is an
    open image's.

    Each is a correlated subquery on the (image, model_version) unique index,
    not a join: count() leaves out the annotations it does not need, but never
    a join, so the changelist paginator's COUNT over 100k images paid two
    lookups per row for columns that cannot change it. A page's rows cost the
    same lookups either way.
    """
    if version_id is None:
        version_id = model_version_active_id()
    reviewed = image_labelled_q(gold_as_open=gold_as_open)
    if version_id is None:
        return queryset.alias(
            has_active_prediction=Value(False),
            prediction_failed=Value(False),
        ).annotate(
            predicted_label_name=Value(None, output_field=models.CharField()),
            predicted_confidence=Value(None, output_field=models.FloatField()),
            review_status=Case(
                When(reviewed, then=Value(ReviewStatus.REVIEWED.value)),
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
            When(reviewed, then=Value(ReviewStatus.REVIEWED.value)),
            When(has_active_prediction=True, then=Value(ReviewStatus.PREDICTED.value)),
            When(prediction_failed=True, then=Value(ReviewStatus.FAILED.value)),
            default=Value(ReviewStatus.PENDING.value),
        ),
    )


def image_labelled_q(*, gold_as_open: bool = False) -> Q:
    """The images with a label (a gold one has none with ``gold_as_open``): the reviewed status,
    and the image list's label filter for those predictions.selectors.quality.gold_hidden_from."""
    return Q(final_label__isnull=False, is_gold=False) if gold_as_open else Q(final_label__isnull=False)


def images_with_review_status(
    queryset: QuerySet[Image], status: str, *, gold_as_open: bool = False
) -> QuerySet[Image]:
    """Filter a queryset of images_with_active_prediction() on its review status (gold images
    as open ones with ``gold_as_open``).

    Plain conditions on the joined columns rather than on the CASE expression, so
    the database can use its indexes.
    """
    reviewed = image_labelled_q(gold_as_open=gold_as_open)
    if status == ReviewStatus.REVIEWED:
        return queryset.filter(reviewed)
    unreviewed = queryset.exclude(reviewed) if gold_as_open else queryset.filter(final_label__isnull=True)
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
    version_id = model_version_active_id()
    if version_id is None:
        return queryset.none()
    return queryset.filter(predictions__model_version_id=version_id, predictions__label_id=label_id)


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
        version_id = model_version_active_id()
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


# --- private media -----------------------------------------------------------------


def export_file_kind(path: str) -> str | None:
    """MediaKind.EXPORT when an export job's file is ``path``, else None.

    Registered with images.hooks.private_media_register (predictions.apps), so
    the private media view serves export files without importing predictions.
    """
    return MediaKind.EXPORT if ExportJob.objects.filter(file=path).exists() else None
