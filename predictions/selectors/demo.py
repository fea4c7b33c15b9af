"""Where the first run's demo model stands: read by the admin index, the review screen and the API.

The demo model is trained in the cluster (predictions.services.demo) and its progress
kept on a TrainingJob marked ``history["kind"] == "demo"`` (the schema has no field
for the kind of a training job; a demo job also has no base version).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from predictions.models import TrainingJob

DEMO_KIND = "demo"


def demo_training_jobs():
    return TrainingJob.objects.filter(base_version__isnull=True, history__kind=DEMO_KIND)


@dataclass(frozen=True)
class DemoTraining:
    """One demo training job, as people are told about it."""

    job_id: int
    status: str
    epochs: int
    epochs_done: int
    val_acc: float | None
    error: str

    @property
    def finished(self) -> bool:
        return self.status in (TrainingJob.Status.DONE, TrainingJob.Status.FAILED)

    @property
    def failed(self) -> bool:
        return self.status == TrainingJob.Status.FAILED

    @property
    def progress(self) -> str:
        """"epoch 5 of 16, validation accuracy 0.91", or the step before the first epoch ends."""
        if self.failed:
            return f"training failed ({self.error.splitlines()[0] if self.error else 'no reason recorded'})"
        if self.status == TrainingJob.Status.DONE:
            return "ready"
        if self.status == TrainingJob.Status.QUEUED:
            return "queued, waiting for the task cluster"
        if self.epochs_done == 0:
            return f"making the training images, then {self.epochs} epochs"
        if self.epochs_done >= self.epochs:
            return "trained, being registered and activated"
        accuracy = f", validation accuracy {self.val_acc:.2f}" if self.val_acc is not None else ""
        return f"epoch {self.epochs_done} of {self.epochs}{accuracy}"

    @property
    def waiting_message(self) -> str:
        """What the review screen and the API say while there is no model to predict with."""
        if self.failed:
            return (
                f"The demo model's training failed (training job {self.job_id}: {self.error.splitlines()[0]}); "
                "register a model version in the admin, or run `make run` again."
                if self.error
                else f"The demo model's training failed (training job {self.job_id})."
            )
        return f"The demo model is still training ({self.progress}); predictions start when it is ready."


def demo_training_latest() -> DemoTraining | None:
    """The most recent demo training, whatever its state; None when there never was one."""
    job = demo_training_jobs().order_by("-created_at", "-pk").first()
    if job is None:
        return None
    val_acc = (job.history or {}).get("val_acc") or []
    last = val_acc[-1] if val_acc and isinstance(val_acc[-1], (int, float)) else None
    return DemoTraining(
        job_id=job.pk,
        status=job.status,
        epochs=job.epochs,
        epochs_done=job.epochs_done,
        val_acc=last if last is not None and math.isfinite(last) else None,
        error=job.error,
    )


def demo_training_unfinished() -> DemoTraining | None:
    """The demo training people wait for (queued, running, or failed before any model existed); else None."""
    demo = demo_training_latest()
    if demo is None or demo.status == TrainingJob.Status.DONE:
        return None
    return demo
