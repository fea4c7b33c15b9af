"""django-q2 entry points. Thin: take ids, call a service, return.

Anything that imports torch is imported inside the function body, so the
cluster's parent process never loads it (CUDA must not be touched before the
workers fork).
"""

from predictions.services.jobs import predict_chunk_failed, predict_chunk_run


def predict_chunk(job_id: int, image_ids: list[int]) -> dict:
    """Predict one chunk of a PredictionJob (queued by predictions.services.jobs)."""
    return predict_chunk_run(job_id=job_id, image_ids=image_ids)


def predict_chunk_hook(task) -> None:
    """django-q2 result hook: a chunk task that raised marks its job failed, with the error."""
    if task.success:
        return
    predict_chunk_failed(job_id=task.args[0], error=str(task.result))
