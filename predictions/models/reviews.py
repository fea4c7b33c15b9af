"""Human decisions: append-only Review rows, and the bulk operations that group them for undo."""

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from .predictions import Prediction
from .versions import Label


class LabelOperation(models.Model):
    """One bulk change of labels, undone as a whole.

    Every Review a grid action, an import, an auto-accept run or "label similar"
    writes points here. Undo marks those reviews undone; each image's current
    label then follows its latest live review again, which restores exactly the
    label it had before (or a later decision made since).
    """

    class Kind(models.TextChoices):
        GRID_CONFIRM = "grid_confirm", "Confirm predictions"
        GRID_SET = "grid_set", "Set label"
        IMPORT = "import", "Label import"
        AUTO_ACCEPT = "auto_accept", "Auto-accept"
        SIMILAR = "similar", "Label similar"

    kind = models.CharField(max_length=16, choices=Kind.choices)
    description = models.CharField(max_length=300, blank=True)
    params = models.JSONField(default=dict, blank=True)
    image_count = models.PositiveIntegerField(default=0)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    undone_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    undone_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} #{self.pk}"


class Review(models.Model):
    """One reviewer decision. Never overwritten: undo marks it, a new decision adds a row."""

    class Source(models.TextChoices):
        SCREEN = "screen", "Review screen"
        GRID = "grid", "Changelist action"
        IMPORT = "import", "Imported"
        AUTO = "auto", "Auto-accepted"
        SIMILAR = "similar", "Label similar"

    image = models.ForeignKey("images.Image", on_delete=models.CASCADE, related_name="reviews")
    reviewer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="reviews")
    label = models.ForeignKey(Label, on_delete=models.PROTECT, related_name="reviews")
    prediction = models.ForeignKey(
        Prediction, null=True, blank=True, on_delete=models.SET_NULL, related_name="reviews",
        help_text="The prediction the reviewer was shown.",
    )
    agreed = models.BooleanField(null=True, help_text="Agreed with the model's top-1 label.")
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.SCREEN)
    seconds_spent = models.FloatField(null=True, blank=True)
    # Which queue order served the image on the review screen ("audit" marks the
    # uniformly random sample that auto-accept's bound is computed from).
    queue_order = models.CharField(max_length=16, blank=True, default="")
    operation = models.ForeignKey(
        LabelOperation, null=True, blank=True, on_delete=models.PROTECT, related_name="reviews"
    )
    created_at = models.DateTimeField(default=timezone.now)
    undone_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        permissions = [
            ("import_review", "Can import labels"),
        ]
        indexes = [
            models.Index(fields=["image", "created_at"], name="review_image_time_idx"),
            models.Index(fields=["reviewer", "created_at"], name="review_reviewer_time_idx"),
            # The review screen's "reviewed today" count reads only this index
            # (the one above needs each row's undone_at).
            models.Index(
                fields=["reviewer", "created_at"], condition=Q(undone_at__isnull=True), name="review_reviewer_live_idx"
            ),
            models.Index(
                fields=["queue_order", "prediction"], condition=Q(undone_at__isnull=True), name="review_live_order_idx"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.label} by {self.reviewer}"
