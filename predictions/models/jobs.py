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


class BackgroundJob(models.Model):
    """What every job run in the cluster records: its status and error, who asked, when, and when it ended."""

    Status = JobStatus

    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    error = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True
        ordering = ["-created_at"]


class PredictionJob(BackgroundJob):
    model_version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="jobs")
    batch = models.ForeignKey(
        "images.UploadBatch", null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs"
    )
    reason = models.CharField(max_length=64, blank=True, help_text="upload, activation, retry, ...")
    total = models.PositiveIntegerField(default=0)
    done = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    # Last sign of life: queued, a chunk recorded, or its lost chunks queued again
    # (predictions.services.sweep.predictions_sweep looks for jobs without one).
    progressed_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"Job #{self.pk} ({self.model_version})"


class TrainingJob(BackgroundJob):
    """Retraining from reviewed labels, run in the cluster; produces an inactive ModelVersion."""

    base_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="training_jobs"
    )
    result_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    epochs = models.PositiveSmallIntegerField(default=5)
    learning_rate = models.FloatField(default=1e-3)
    epochs_done = models.PositiveSmallIntegerField(default=0)
    sample_count = models.PositiveIntegerField(default=0)
    history = models.JSONField(default=dict, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"Training #{self.pk}"


class ExportJob(BackgroundJob):
    """A large CSV or zip export written in the cluster, downloadable when done."""

    kind = models.CharField(max_length=32, default="labels_csv")
    params = models.JSONField(default=dict, blank=True)
    total = models.PositiveIntegerField(default=0)
    done = models.PositiveIntegerField(default=0)
    file = models.FileField(max_length=255, blank=True)

    def __str__(self) -> str:
        return f"Export #{self.pk}"


class LabelImportJob(BackgroundJob):
    """A label CSV checked (dry run) or applied in the cluster, in short batched transactions."""

    file = models.FileField(max_length=255)
    file_name = models.CharField(max_length=255, blank=True)
    dry_run = models.BooleanField(default=True)
    total_rows = models.PositiveIntegerField(default=0)
    rows_checked = models.PositiveIntegerField(default=0)
    rows_applied = models.PositiveIntegerField(default=0)
    # Counts by outcome and the first problems, each naming its row.
    report = models.JSONField(default=dict, blank=True)
    operation = models.ForeignKey(
        "predictions.LabelOperation", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    def __str__(self) -> str:
        return f"Label import #{self.pk}"
