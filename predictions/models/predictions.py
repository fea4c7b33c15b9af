"""What a model version said about an image, or why it could not say."""

from django.db import models
from django.utils import timezone

from .jobs import PredictionJob
from .versions import Label, ModelVersion


class Prediction(models.Model):
    image = models.ForeignKey("images.Image", on_delete=models.CASCADE, related_name="predictions")
    model_version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="predictions")
    label = models.ForeignKey(Label, on_delete=models.PROTECT, related_name="predictions")
    confidence = models.FloatField()
    # Top-1 minus top-2 probability: the review queue's uncertainty order.
    margin = models.FloatField()
    # Aligned with model_version.class_names.
    probabilities = models.JSONField()
    inference_ms = models.FloatField(null=True, blank=True)
    # The model's penultimate features from the same forward pass, float16 bytes
    # (ml.features); null for rows made before embeddings were stored.
    embedding = models.BinaryField(null=True, blank=True, editable=False)
    job = models.ForeignKey(PredictionJob, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["image", "model_version"], name="one_prediction_per_image_and_version"),
        ]
        indexes = [
            models.Index(fields=["model_version", "margin"], name="prediction_queue_margin_idx"),
            models.Index(fields=["model_version", "confidence"], name="prediction_queue_conf_idx"),
            models.Index(fields=["model_version", "label"], name="prediction_version_label_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.label} ({self.confidence:.0%})"


class PredictionFailure(models.Model):
    """An image the model could not predict, with the reason; removed when a retry succeeds."""

    image = models.ForeignKey("images.Image", on_delete=models.CASCADE, related_name="prediction_failures")
    model_version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="failures")
    job = models.ForeignKey(PredictionJob, null=True, blank=True, on_delete=models.SET_NULL, related_name="failures")
    message = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["image", "model_version"], name="one_failure_per_image_and_version"),
        ]

    def __str__(self) -> str:
        return self.message
