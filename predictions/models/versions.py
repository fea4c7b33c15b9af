"""The taxonomy and the model versions that predict it."""

from django.conf import settings
from django.core.files.storage import storages
from django.db import models
from django.db.models import Q
from django.utils import timezone


def weights_storage():
    return storages["weights"]


class Label(models.Model):
    """The taxonomy reviewers choose from; model class names map onto it by name."""

    name = models.CharField(max_length=100, unique=True)
    order = models.PositiveSmallIntegerField(default=0)
    key = models.CharField(max_length=1, blank=True, help_text="Keyboard key on the review screen.")

    class Meta:
        ordering = ["order", "name"]

    def __str__(self) -> str:
        return self.name


class ModelVersion(models.Model):
    class Validation(models.TextChoices):
        PENDING = "pending", "Pending"
        VALID = "valid", "Valid"
        INVALID = "invalid", "Invalid"

    name = models.CharField(max_length=100, unique=True)
    arch = models.CharField("architecture", max_length=64, default="resnet18_custom_head")
    checkpoint = models.FileField(storage=weights_storage, max_length=255)
    class_names = models.JSONField(default=list)
    input_size = models.PositiveSmallIntegerField(default=224)
    mean = models.JSONField(default=list)
    std = models.JSONField(default=list)
    is_active = models.BooleanField(default=False)
    validation_status = models.CharField(
        max_length=16, choices=Validation.choices, default=Validation.PENDING
    )
    validation_error = models.TextField(blank=True)
    metrics = models.JSONField(default=dict, blank=True, help_text="Training metrics from the checkpoint.")
    notes = models.TextField(blank=True)
    # The reviewed images a retraining learned from: metrics and the label audit
    # score only the others with this version's predictions.
    trained_images = models.ManyToManyField("images.Image", blank=True, related_name="+")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["is_active"], condition=Q(is_active=True), name="single_active_model_version"
            ),
        ]

    def __str__(self) -> str:
        return self.name
