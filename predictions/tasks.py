"""django-q2 entry points. Thin: take ids, call a service, return.

Anything that imports torch is imported inside the function body, so the
cluster's parent process never loads it (CUDA must not be touched before the
workers fork). The dotted names of these functions are what the broker and the
schedules hold (``predictions.tasks.predict_chunk``, migration 0003's
``predictions.tasks.sweep_predictions``): they stay when the code behind them moves.
"""

from predictions.services.chunks import predict_chunk_failed, predict_chunk_run
from predictions.services.sweep import predictions_sweep


def predict_chunk(job_id: int, image_ids: list[int]) -> dict:
    """Predict one chunk of a PredictionJob (queued by services.jobs, run by services.chunks)."""
    return predict_chunk_run(job_id=job_id, image_ids=image_ids)


def predict_chunk_hook(task) -> None:
    """django-q2 result hook: a chunk task that raised marks its job failed, with the error."""
    if task.success:
        return
    predict_chunk_failed(job_id=task.args[0], error=str(task.result))


def sweep_predictions() -> dict:
    """Queue again the images of stalled prediction jobs (services.sweep; a schedule, every minute: migration 0003)."""
    return predictions_sweep()


def validate_model_version(version_id: int) -> str:
    """Load a registered checkpoint and record VALID or INVALID on the version (predictions.services.model_versions)."""
    from predictions.services.model_versions import model_version_validate

    return model_version_validate(version_id=version_id).validation_status


def train_model_version(training_job_id: int) -> int | None:
    """Fine-tune a new model version from reviewed labels (predictions.services.training); its id."""
    from predictions.services.training import training_run

    return training_run(job_id=training_job_id)


def export_csv(job_id: int) -> None:
    """Write a large label CSV export (predictions.services.exports)."""
    from predictions.services.exports import labels_csv_write

    labels_csv_write(job_id=job_id)


def export_training_zip(job_id: int) -> None:
    """Write a training-set zip, one folder per label (predictions.services.exports)."""
    from predictions.services.exports import training_zip_write

    training_zip_write(job_id=job_id)


def import_labels(job_id: int) -> None:
    """Check (dry run) or apply a label CSV in short batches (predictions.services.label_import_jobs)."""
    from predictions.services.label_import_jobs import label_import_job_run

    label_import_job_run(job_id=job_id)


def auto_accept_run(run_id: int) -> dict:
    """Accept the images of a large auto-accept run (predictions.services.auto_accept)."""
    from predictions.services.auto_accept import auto_accept_run_execute

    run = auto_accept_run_execute(run_id=run_id)
    return {"run": run_id, "accepted": run.accepted if run else None}


def train_demo_model(training_job_id: int) -> int | None:
    """Train, register and activate the first run's demo model (predictions.services.demo); its version id."""
    from predictions.services.demo import demo_training_run

    return demo_training_run(job_id=training_job_id)


def audit_labels(audit_id: int) -> dict:
    """Score every human label and flag the probable errors (predictions.services.label_audit)."""
    from predictions.services.label_audit import label_audit_run

    audit = label_audit_run(audit_id=audit_id)
    return {"audit": audit_id, "flagged": audit.flagged if audit else None}
