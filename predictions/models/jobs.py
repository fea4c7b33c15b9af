"""Background work and its progress: prediction, training, export and label-import jobs."""

from django.conf import settings
from django.db import models
from django.utils import timezone

from .versions import ModelVersion


class JobStatus(models.TextChoices):
    """The life of every background job (predictions, training, exports)."""

    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"


class PredictionJob(models.Model):
    Status = JobStatus

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
    # (predictions.services.sweep.predictions_sweep looks for jobs without one).
    progressed_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Job #{self.pk} ({self.model_version})"


class TrainingJob(models.Model):
    """Retraining from reviewed labels, run in the cluster; produces an inactive ModelVersion."""

    Status = JobStatus

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

    Status = JobStatus

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


class LabelImportJob(models.Model):
    """A label CSV checked (dry run) or applied in the cluster, in short batched transactions."""

    Status = JobStatus

    file = models.FileField(max_length=255)
    file_name = models.CharField(max_length=255, blank=True)
    dry_run = models.BooleanField(default=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    total_rows = models.PositiveIntegerField(default=0)
    rows_checked = models.PositiveIntegerField(default=0)
    rows_applied = models.PositiveIntegerField(default=0)
    # Counts by outcome and the first problems, each naming its row.
    report = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    operation = models.ForeignKey(
        "predictions.LabelOperation", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Label import #{self.pk}"
