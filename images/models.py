from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone


class UploadBatch(models.Model):
    """One upload (admin form, API call, import command): what came in and what became of it."""

    class Source(models.TextChoices):
        ADMIN = "admin", "Admin upload"
        API = "api", "API"
        COMMAND = "command", "import_images command"
        DEMO = "demo", "Demo data"

    name = models.CharField(max_length=200, blank=True)
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.ADMIN)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    accepted_count = models.PositiveIntegerField(default=0)
    duplicate_count = models.PositiveIntegerField(default=0)
    rejected_count = models.PositiveIntegerField(default=0)
    # One entry per file that came in: {"file", "status": accepted|duplicate|rejected,
    # "reason", "image_id"}. Kept as a document because it is only ever shown whole.
    report = models.JSONField(default=list, blank=True)
    # Read by predictions/selectors/quality.py when a decision on one of the batch's images is made.
    overlap_share = models.FloatField(
        null=True,
        blank=True,
        validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="Share of this upload's images that get k independent reviews; empty: the global REVIEW_OVERLAP_SHARE",
    )

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "upload batches"

    def __str__(self) -> str:
        return self.name or f"Upload #{self.pk}"


class Image(models.Model):
    # Content-addressed: images/ab/cd/<sha256>.<ext>, set by images.services.
    file = models.FileField(max_length=255)
    thumbnail = models.FileField(max_length=255, blank=True)
    sha256 = models.CharField(max_length=64, unique=True)
    original_name = models.CharField(max_length=255, db_index=True)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    format = models.CharField(max_length=10)
    size_bytes = models.PositiveBigIntegerField()
    uploaded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    uploaded_at = models.DateTimeField(default=timezone.now, db_index=True)
    batch = models.ForeignKey(
        UploadBatch, null=True, blank=True, on_delete=models.SET_NULL, related_name="images"
    )

    # The current decision, denormalised from the latest non-undone Review by
    # predictions.services so the queue, filters and exports need no subquery.
    final_label = models.ForeignKey(
        "predictions.Label", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    reviewed_at = models.DateTimeField(null=True, blank=True)
    review_count = models.PositiveIntegerField(default=0)
    # Source of the current decision (a Review source: screen, grid, import, auto, similar).
    label_source = models.CharField(max_length=16, blank=True, default="")
    # A Lead's reference label: mixed into reviewers' queues to measure them, never changed by them.
    is_gold = models.BooleanField(default=False)

    # 64-bit perceptual hash (ml.hashing) from the upload's validation decode, stored signed.
    phash = models.BigIntegerField(null=True, blank=True, db_index=True)

    # Review claim: who is looking at this image, and until when.
    claimed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    claimed_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-uploaded_at", "-id"]
        permissions = [
            ("export_image", "Can export images and labels"),
        ]
        indexes = [
            models.Index(fields=["final_label", "reviewed_at"], name="image_final_label_idx"),
            models.Index(fields=["reviewed_at"], name="image_reviewed_at_idx"),
            # The few gold images, found without reading every row (the review queue mixes them in).
            models.Index(fields=["id"], condition=models.Q(is_gold=True), name="image_gold_idx"),
            # Images without a label, with why they wait (overlap, adjudication, or none): the
            # reviewer statistics' count of open items and the adjudication backlog read only this.
            models.Index(
                fields=["final_label", "label_source"],
                condition=models.Q(final_label__isnull=True),
                name="image_open_idx",
            ),
        ]

    def __str__(self) -> str:
        return self.original_name
