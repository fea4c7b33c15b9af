"""How good the labels are: auto-accept runs and label audits."""

from django.conf import settings
from django.db import models
from django.utils import timezone

from .jobs import BackgroundJob
from .reviews import LabelOperation
from .versions import Label, ModelVersion


class AutoAcceptRun(BackgroundJob):
    """One auto-accept: the promise asked for, the threshold chosen and what it accepted.

    The bound is computed from the uniformly random audit sample of reviews of
    this version's predictions (predictions.statistics.acceptance); the accepted
    images' reviews belong to ``operation``, which undoes the run as a whole.
    """

    model_version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="auto_accept_runs")
    max_error = models.FloatField()
    confidence = models.FloatField()
    dry_run = models.BooleanField(default=False)
    threshold = models.FloatField(null=True, blank=True)
    bound = models.FloatField(null=True, blank=True)
    audit_sample = models.PositiveIntegerField(default=0)
    needed = models.PositiveIntegerField(null=True, blank=True)
    accepted = models.PositiveIntegerField(default=0)
    total = models.PositiveIntegerField(default=0)
    operation = models.OneToOneField(
        LabelOperation, null=True, blank=True, on_delete=models.SET_NULL, related_name="auto_accept_run"
    )

    def __str__(self) -> str:
        return f"Auto-accept #{self.pk} ({self.model_version})"


class LabelAudit(BackgroundJob):
    """One run of the label audit (confident learning over out-of-sample probabilities)."""

    model_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="label_audits"
    )
    method = models.CharField(max_length=200, blank=True)
    total = models.PositiveIntegerField(default=0)
    done = models.PositiveIntegerField(default=0)
    flagged = models.PositiveIntegerField(default=0)
    reason = models.CharField(max_length=64, blank=True, help_text="on demand, every N reviews, command")
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    def __str__(self) -> str:
        return f"Label audit #{self.pk}"


class LabelSuspicion(models.Model):
    """One scored label of an audit: the given label, the one suggested, and how doubtful it is."""

    # An audit writes a row per scored label (100k at a time): only the indexes its
    # reads need. The audit's rows are found through the unique (audit, image) and
    # ranking indexes; labels and users are never looked up from here.
    audit = models.ForeignKey(LabelAudit, on_delete=models.CASCADE, related_name="suspicions", db_index=False)
    image = models.ForeignKey("images.Image", on_delete=models.CASCADE, related_name="suspicions")
    given_label = models.ForeignKey(Label, on_delete=models.CASCADE, related_name="+", db_index=False)
    suggested_label = models.ForeignKey(Label, on_delete=models.CASCADE, related_name="+", db_index=False)
    given_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", db_index=False
    )
    # cleanlab's label quality score: low means probably wrong.
    score = models.FloatField()
    is_issue = models.BooleanField(default=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["audit", "image"], name="one_suspicion_per_audit_and_image"),
        ]
        indexes = [
            models.Index(fields=["audit", "is_issue", "score"], name="suspicion_audit_rank_idx"),
        ]
