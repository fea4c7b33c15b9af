"""Label similar: give the unreviewed images most like a reviewed one its label, as one undoable operation.

Which images: those the preview showed (predictions.selectors.similar: those
the rule may change, or to a user not told which images are gold, those that look
unreviewed; at least the threshold similar, at most LABEL_SIMILAR_MAX).
How: predictions.services.operations, the rule every bulk change follows (only
unreviewed, unclaimed, non-gold images change; each gets a Review with source
"similar", so ``label_source`` says so; undone as a whole).
"""

from __future__ import annotations

from django.core.exceptions import ValidationError

from images.models import Image
from predictions.models import LabelOperation, Prediction, Review
from predictions.selectors.quality import gold_hidden_from
from predictions.selectors.similar import similar_unreviewed_images
from predictions.selectors.versions import model_version_active
from predictions.services.operations import LabelDecision, OperationResult, label_operation_apply
from reviewtool.batching import IN_QUERY_MAX_IDS, id_chunks


def label_similar_apply(*, image: Image, threshold: float, user) -> OperationResult:
    """Give ``image``'s label to the unreviewed images at least ``threshold`` similar to it."""
    if image.final_label_id is None:
        raise ValidationError(f"{image} has no label yet: review it first.")
    if not 0 <= threshold <= 1:
        raise ValidationError("The similarity is between 0 and 1.")
    version = model_version_active()
    similar = similar_unreviewed_images(
        image_id=image.pk, threshold=threshold, model_version=version, gold_hidden=gold_hidden_from(user)
    )
    predictions: dict[int, tuple[int, int]] = {}
    if version is not None:
        for ids in id_chunks([item.image_id for item in similar], IN_QUERY_MAX_IDS):
            rows = Prediction.objects.filter(model_version=version, image_id__in=ids)
            for image_id, prediction_id, label_id in rows.values_list("image_id", "pk", "label_id"):
                predictions[image_id] = (prediction_id, label_id)
    decisions = [
        LabelDecision(
            image_id=item.image_id,
            label_id=image.final_label_id,
            prediction_id=predictions.get(item.image_id, (None, None))[0],
            predicted_label_id=predictions.get(item.image_id, (None, None))[1],
        )
        for item in similar
    ]
    return label_operation_apply(
        kind=LabelOperation.Kind.SIMILAR,
        decisions=decisions,
        user=user,
        source=Review.Source.SIMILAR,
        description=f"Like image #{image.pk} ({image.original_name}), similarity >= {threshold:.2f}: "
        f"{image.final_label}",
        params={"image_id": image.pk, "threshold": threshold, "label_id": image.final_label_id,
                "model_version_id": version.pk if version else None},  # fmt: skip
    )
