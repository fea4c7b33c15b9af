"""How well a model version agrees with the reviewers.

``classification_report`` is a pure function over plain lists (easy to check by hand);
``version_metrics`` reads the pairs it needs from the database. The label space is the
version's ``class_names``. A reviewed label outside it (the taxonomy grew after the
model was trained) cannot be predicted by the model at all, so those images are kept
out of accuracy, F1, precision and recall; they are counted and shown as an extra
"other" row of the confusion matrix, so what the model says about them stays visible.

A version retrained here is not scored on the images it was trained on (they
flatter it): metrics and comparisons read the held-out images by default, count
the training images they leave out, and can read the training images alone
(``ImageScope``; ``ModelVersion.trained_images`` records them).

numpy only: the web process must not import torch (torchmetrics would).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from django.db.models import Count, F, FilteredRelation, Q, QuerySet

from images.models import Image
from predictions.models import ModelVersion, Prediction

OTHER = "other"
CALIBRATION_BINS = 10


class ImageScope:
    """Which images a version is scored on: those it was not trained on (the default), or only those."""

    HELD_OUT = "held-out"
    TRAINING = "training"
    ALL = (HELD_OUT, TRAINING)

    @classmethod
    def parse(cls, value: str | None) -> str:
        """A query parameter's value as a scope; anything else is the default."""
        return value if value in cls.ALL else cls.HELD_OUT


def _trained_image_ids(versions: Sequence[ModelVersion]) -> QuerySet:
    """The ids of the images any of ``versions`` was trained on, as a subquery."""
    return ModelVersion.trained_images.through.objects.filter(modelversion__in=versions).values("image_id")


def _scoped(queryset: QuerySet, *, image_field: str, versions: Sequence[ModelVersion], scope: str) -> QuerySet:
    trained = {f"{image_field}__in": _trained_image_ids(versions)}
    return queryset.filter(**trained) if scope == ImageScope.TRAINING else queryset.exclude(**trained)


@dataclass(frozen=True)
class ClassMetrics:
    name: str
    # None where undefined: precision of a class never predicted, recall of a class
    # never seen, F1 of a class neither predicted nor seen.
    precision: float | None
    recall: float | None
    f1: float | None
    support: int
    predicted: int


@dataclass(frozen=True)
class ConfidenceBin:
    low: float
    high: float
    count: int
    correct: int
    mean_confidence: float | None

    @property
    def wrong(self) -> int:
        return self.count - self.correct

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.count if self.count else None


@dataclass(frozen=True)
class ClassificationReport:
    class_names: list[str]
    sample_count: int  # in the label space
    other_count: int  # reviewed outside the label space
    correct: int
    accuracy: float | None
    macro_f1: float | None
    per_class: list[ClassMetrics]
    # rows: true class (class_names, then OTHER when other_count), columns: predicted class.
    confusion: list[list[int]]
    confusion_rows: list[str]
    # CALIBRATION_BINS equal-width confidence bins over [0, 1], in-space samples only.
    bins: list[ConfidenceBin]
    expected_calibration_error: float | None
    other_predicted_as: dict[str, int] = field(default_factory=dict)

    @property
    def is_empty(self) -> bool:
        return self.sample_count == 0 and self.other_count == 0


def classification_report(
    *,
    y_true: Sequence[str],
    y_pred: Sequence[str],
    confidence: Sequence[float],
    class_names: Sequence[str],
) -> ClassificationReport:
    """Accuracy, macro-F1, per-class precision/recall/support, confusion matrix, calibration.

    ``y_true`` are reviewed label names, ``y_pred`` the version's top-1 label names (always
    in ``class_names``), ``confidence`` its top-1 probabilities.
    """
    if not len(y_true) == len(y_pred) == len(confidence):
        raise ValueError("y_true, y_pred and confidence must have the same length")
    class_names = list(class_names)
    k = len(class_names)
    index = {name: i for i, name in enumerate(class_names)}
    unknown_predictions = sorted({name for name in y_pred if name not in index})
    if unknown_predictions:
        raise ValueError(f"predicted labels outside the class names: {', '.join(unknown_predictions)}")

    # OTHER gets index k on the true side only.
    true_idx = np.array([index.get(name, k) for name in y_true], dtype=np.int64)
    pred_idx = np.array([index[name] for name in y_pred], dtype=np.int64)
    conf = np.asarray(confidence, dtype=np.float64)

    full = np.bincount(true_idx * k + pred_idx, minlength=(k + 1) * k).reshape(k + 1, k)
    matrix = full[:k]
    other_row = full[k]
    other_count = int(other_row.sum())

    in_space = true_idx < k
    n = int(in_space.sum())
    tp = np.diag(matrix)
    support = matrix.sum(axis=1)
    predicted = matrix.sum(axis=0)
    correct = int(tp.sum())

    per_class = [
        ClassMetrics(
            name=name,
            precision=_ratio(tp[i], predicted[i]),
            recall=_ratio(tp[i], support[i]),
            f1=_ratio(2 * tp[i], 2 * tp[i] + (predicted[i] - tp[i]) + (support[i] - tp[i])),
            support=int(support[i]),
            predicted=int(predicted[i]),
        )
        for i, name in enumerate(class_names)
    ]
    defined_f1 = [c.f1 for c in per_class if c.f1 is not None]

    bins = _confidence_bins(conf[in_space], (true_idx == pred_idx)[in_space])
    ece = (
        sum(b.count / n * abs(b.accuracy - b.mean_confidence) for b in bins if b.count)
        if n
        else None
    )

    rows = [*class_names, OTHER] if other_count else list(class_names)
    confusion = [list(map(int, row)) for row in (full if other_count else matrix)]
    return ClassificationReport(
        class_names=class_names,
        sample_count=n,
        other_count=other_count,
        correct=correct,
        accuracy=correct / n if n else None,
        macro_f1=float(np.mean(defined_f1)) if defined_f1 else None,
        per_class=per_class,
        confusion=confusion,
        confusion_rows=rows,
        bins=bins,
        expected_calibration_error=ece,
        other_predicted_as={name: int(c) for name, c in zip(class_names, other_row) if c},
    )


def _ratio(numerator, denominator) -> float | None:
    return float(numerator) / float(denominator) if denominator else None


def _confidence_bins(confidence: np.ndarray, correct: np.ndarray) -> list[ConfidenceBin]:
    edges = np.linspace(0.0, 1.0, CALIBRATION_BINS + 1)
    # Right-open bins, except that a confidence of exactly 1.0 falls in the last one.
    which = np.clip(np.floor(confidence * CALIBRATION_BINS).astype(np.int64), 0, CALIBRATION_BINS - 1)
    bins = []
    for b in range(CALIBRATION_BINS):
        members = which == b
        count = int(members.sum())
        bins.append(
            ConfidenceBin(
                low=float(edges[b]),
                high=float(edges[b + 1]),
                count=count,
                correct=int(correct[members].sum()),
                mean_confidence=float(confidence[members].mean()) if count else None,
            )
        )
    return bins


def version_metrics(*, version: ModelVersion, scope: str = ImageScope.HELD_OUT) -> ClassificationReport:
    """The report for ``version`` over the reviewed images it has predicted, in ``scope``:
    by default those it was not trained on."""
    reviewed = Prediction.objects.filter(model_version=version, image__final_label__isnull=False)
    rows = (
        _scoped(reviewed, image_field="image_id", versions=[version], scope=scope)
        .order_by()
        .values_list("image__final_label__name", "label__name", "confidence")
    )
    y_true, y_pred, confidence = zip(*rows) if rows else ((), (), ())
    return classification_report(
        y_true=y_true, y_pred=y_pred, confidence=confidence, class_names=version.class_names
    )


def version_metrics_left_out(*, version: ModelVersion, scope: str = ImageScope.HELD_OUT) -> int:
    """How many reviewed images ``version`` predicted are outside ``scope`` (for the held-out
    scope: the training images it leaves out)."""
    reviewed = Prediction.objects.filter(model_version=version, image__final_label__isnull=False)
    other = ImageScope.TRAINING if scope == ImageScope.HELD_OUT else ImageScope.HELD_OUT
    return _scoped(reviewed, image_field="image_id", versions=[version], scope=other).count()


def training_metrics_summary(metrics: dict) -> str:
    """A one-line digest of the training metrics a checkpoint recorded (changelist column)."""
    parts = []
    for key in ("val_accuracy", "val_acc", "accuracy", "val_f1", "val_macro_f1", "macro_f1", "f1"):
        value = metrics.get(key)
        if isinstance(value, list) and value:
            value = value[-1]
        if isinstance(value, (int, float)):
            parts.append(f"{key} {value:.3f}")
    return ", ".join(parts)


@dataclass(frozen=True)
class VersionComparison:
    a: ModelVersion
    b: ModelVersion
    both_predicted: int
    differ: int
    # Images whose top-1 labels differ, annotated with label_a, confidence_a, label_b,
    # confidence_b; newest first.
    differing_images: QuerySet
    scope: str = ImageScope.HELD_OUT
    # Images both predicted that are outside the scope (for the held-out scope: those
    # either version was trained on).
    left_out: int = 0


def versions_compare(*, a: ModelVersion, b: ModelVersion, scope: str = ImageScope.HELD_OUT) -> VersionComparison:
    """Top-1 agreement of two versions on the images both have predicted, in ``scope``: by
    default those neither was trained on.

    One join per version on Prediction (unique per image and version), so the count
    and each page of the differing images are single queries.
    """
    predicted_by_both = Image.objects.annotate(
        prediction_a=FilteredRelation("predictions", condition=Q(predictions__model_version=a)),
        prediction_b=FilteredRelation("predictions", condition=Q(predictions__model_version=b)),
    ).filter(prediction_a__isnull=False, prediction_b__isnull=False)
    both = _scoped(predicted_by_both, image_field="pk", versions=[a, b], scope=scope)
    # Labels are shared rows matched by name, so comparing ids compares names even when
    # the two versions order their classes differently.
    differing = (
        both.annotate(
            label_a_id=F("prediction_a__label_id"),
            label_b_id=F("prediction_b__label_id"),
            label_a=F("prediction_a__label__name"),
            label_b=F("prediction_b__label__name"),
            confidence_a=F("prediction_a__confidence"),
            confidence_b=F("prediction_b__confidence"),
        )
        .exclude(label_a_id=F("label_b_id"))
        .select_related("final_label")
        .order_by("-uploaded_at", "-id")
    )
    both_predicted = both.count()
    return VersionComparison(
        a=a, b=b, both_predicted=both_predicted, differ=differing.count(), differing_images=differing, scope=scope,
        left_out=predicted_by_both.count() - both_predicted,
    )


@dataclass(frozen=True)
class ReviewedCounts:
    per_class: dict[str, int]  # every class name, in order, zero included
    other: int  # reviewed with a label outside the class names

    @property
    def total(self) -> int:
        return sum(self.per_class.values())


def reviewed_label_counts(*, class_names: Sequence[str]) -> ReviewedCounts:
    """How many images carry each reviewed label: what a retraining would learn from."""
    counts = dict(
        Image.objects.filter(final_label__isnull=False)
        .order_by()
        .values_list("final_label__name")
        .annotate(count=Count("pk"))
    )
    per_class = {name: counts.pop(name, 0) for name in class_names}
    return ReviewedCounts(per_class=per_class, other=sum(counts.values()))
