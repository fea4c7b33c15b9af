"""What the review screen shows of one queue item, as the JSON its script reads.

An item is one prediction: the image's URLs and size, the predicted label and
the top-k bars (and, for a flagged label of the latest label audit, "suspicion":
the given and suggested labels and the score). The screen's views (predictions/admin/review_views.py) claim the
predictions; this module only reads and shapes them.
"""

from django.urls import reverse

from predictions.models import Label, ModelVersion, Prediction, Review
from predictions.selectors.label_audit import review_items_suspicion
from predictions.selectors.quality import review_items_quality

TOP_K = 5


def _item(prediction: Prediction, *, model_version: ModelVersion, labels_by_name: dict[str, Label]) -> dict:
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
            "similar_url": reverse("admin:predictions_review_similar", args=[image.pk]),
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


def review_items(*, predictions: list[Prediction], model_version: ModelVersion | None) -> list[dict]:
    """The screen's items for claimed predictions (image and label loaded) of ``model_version``."""
    if not predictions:
        return []
    labels_by_name = {label.name: label for label in Label.objects.all()}
    items = [_item(p, model_version=model_version, labels_by_name=labels_by_name) for p in predictions]
    items = review_items_suspicion(items=items, predictions=predictions)
    return review_items_quality(items=items, predictions=predictions)


def review_item_undone(*, review: Review, model_version: ModelVersion | None) -> dict | None:
    """The item an undone decision puts back on the screen: the prediction it was made on,
    else the queue version's prediction of the image; None when the image has neither. (Not
    asked for an image a decision made since labelled: recent_decisions.image_label_given_since.)"""
    prediction = review.prediction
    if prediction is None and model_version is not None:
        prediction = Prediction.objects.filter(image_id=review.image_id, model_version=model_version).first()
    if prediction is None:
        return None
    prediction = Prediction.objects.select_related("image", "label", "model_version").get(pk=prediction.pk)
    return review_items(predictions=[prediction], model_version=prediction.model_version)[0]
