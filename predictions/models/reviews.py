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


# Live (not undone) decisions made on the review screen: the rows the reviewer statistics count.
SCREEN_LIVE = Q(undone_at__isnull=True, source="screen")


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
            # The reviewer statistics page (predictions/selectors/reviewer_stats.py) counts live
            # screen decisions only: these hold just those rows (bulk operations do not write
            # them), each shaped for one kind of count so that a query reads one range of one
            # index and never the table. source and undone_at are the same in every row but are
            # columns too: Django sends "screen" as a parameter, which SQLite then checks against
            # the table's row unless the index holds it, and SQLite's planner counts an index as
            # covering (and prefers it) only when it holds every column a query names.
            *[
                models.Index(fields=[*fields, "source", "undone_at"], condition=SCREEN_LIVE, name=name)
                for name, fields in (
                    # Lifetime agreement with the model, per reviewer: the narrowest, read whole.
                    ("review_screen_agreed_idx", ["reviewer", "agreed"]),
                    # One reviewer's last days: the week's pace and median, their own chart.
                    ("review_screen_pace_idx", ["reviewer", "created_at", "seconds_spent"]),
                    # Everyone's last days: the chart per day, the team's pace.
                    ("review_screen_time_idx", ["created_at", "queue_order"]),
                    # Gold checks and overlap decisions by image: adjudicated ones, agreement between reviewers.
                    ("review_screen_order_idx", ["queue_order", "image", "label", "reviewer"]),
                )
            ],
        ]

    def __str__(self) -> str:
        return f"{self.label} by {self.reviewer}"
