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


class PredictionJob(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    model_version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="jobs")
    batch = models.ForeignKey(
        "images.UploadBatch", null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs"
    )
    reason = models.CharField(max_length=64, blank=True, help_text="upload, activation, retry, ...")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    total = models.PositiveIntegerField(default=0)
    done = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Last sign of life: queued, a chunk recorded, or its lost chunks queued again
    # (predictions.services.jobs.predictions_sweep looks for jobs without one).
    progressed_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Job #{self.pk} ({self.model_version})"


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


class Review(models.Model):
    """One reviewer decision. Never overwritten: undo marks it, a new decision adds a row."""

    class Source(models.TextChoices):
        SCREEN = "screen", "Review screen"
        GRID = "grid", "Changelist action"
        IMPORT = "import", "Imported"

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
        ]

    def __str__(self) -> str:
        return f"{self.label} by {self.reviewer}"


class TrainingJob(models.Model):
    """Retraining from reviewed labels, run in the cluster; produces an inactive ModelVersion."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    base_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="training_jobs"
    )
    result_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    epochs = models.PositiveSmallIntegerField(default=5)
    learning_rate = models.FloatField(default=1e-3)
    epochs_done = models.PositiveSmallIntegerField(default=0)
    sample_count = models.PositiveIntegerField(default=0)
    history = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Training #{self.pk}"


class ExportJob(models.Model):
    """A large CSV or zip export written in the cluster, downloadable when done."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    kind = models.CharField(max_length=32, default="labels_csv")
    params = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    total = models.PositiveIntegerField(default=0)
    done = models.PositiveIntegerField(default=0)
    file = models.FileField(max_length=255, blank=True)
    error = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Export #{self.pk}"


class ApiToken(models.Model):
    """A per-user bearer token for the JSON endpoint. Only its hash is stored."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, blank=True)
    prefix = models.CharField(max_length=8, db_index=True)
    key_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked = models.BooleanField(default=False)

    class Meta:
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.user})"
