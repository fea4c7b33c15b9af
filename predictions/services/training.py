"""Retraining from reviewed labels, in the cluster.

``training_job_create`` records a TrainingJob and queues it; ``training_run`` (the task)
fine-tunes the base version's weights on every reviewed image whose label is one of its
classes, with its architecture and preprocessing, writes the checkpoint into the
weights storage and registers it as a new, inactive version, with the images it was trained
on in ``trained_images`` (its metrics leave them out). torch is imported inside
``training_run`` only.
"""

from __future__ import annotations

import io
import logging
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.db import transaction
from django.utils import timezone
from django_q.tasks import async_task

from images.models import Image
from predictions.checkpoint_metadata import json_safe, version_fields_from_metadata, version_metadata
from predictions.models import ModelVersion, TrainingJob
from predictions.selectors.metrics import reviewed_label_counts
from predictions.selectors.splits import VALIDATION, training_split
from predictions.services.model_versions import model_version_validate
from reviewtool.batching import IN_QUERY_MAX_IDS, id_chunks

logger = logging.getLogger(__name__)

MIN_CLASSES = 2


def training_job_create(
    *, base_version: ModelVersion, epochs: int, learning_rate: float, user
) -> TrainingJob:
    """Record a retraining of ``base_version`` and queue it once the row is committed."""
    if base_version.validation_status != ModelVersion.Validation.VALID:
        raise ValidationError(f"{base_version.name} cannot be retrained: its checkpoint is not valid.")
    with transaction.atomic():
        job = TrainingJob.objects.create(
            base_version=base_version,
            epochs=epochs,
            learning_rate=learning_rate,
            created_by=user if user is not None and user.is_authenticated else None,
        )
        transaction.on_commit(
            lambda: async_task(
                "predictions.tasks.train_model_version", job.pk, task_name=f"training job {job.pk}"
            )
        )
    return job


def _image_source(image: Image):
    """A local path where the storage has one (no copy in memory), else the bytes."""
    storage = image.file.storage
    try:
        return storage.path(image.file.name)
    except NotImplementedError:
        with storage.open(image.file.name, "rb") as handle:
            return handle.read()


def training_samples(*, class_names: list[str]) -> tuple[list[int], list[tuple[Any, int]]]:
    """The ids of every image reviewed with one of ``class_names``, and its (image source, class index)."""
    index = {name: i for i, name in enumerate(class_names)}
    images = (
        Image.objects.filter(final_label__name__in=class_names)
        .select_related("final_label")
        .only("pk", "file", "final_label__name")
        .order_by("pk")
    )
    ids, samples = [], []
    for image in images.iterator():
        ids.append(image.pk)
        samples.append((_image_source(image), index[image.final_label.name]))
    return ids, samples


def trained_images_record(*, version: ModelVersion, image_ids: list[int]) -> None:
    """Record the images ``version`` was trained on (its training and validation split alike:
    both shaped it), so its metrics can leave them out. Images deleted meanwhile are skipped."""
    through = ModelVersion.trained_images.through
    for chunk in id_chunks(image_ids, IN_QUERY_MAX_IDS):
        existing = Image.objects.filter(pk__in=chunk).values_list("pk", flat=True)
        through.objects.bulk_create(
            [through(modelversion_id=version.pk, image_id=image_id) for image_id in existing], ignore_conflicts=True
        )


def training_run(*, job_id: int) -> int | None:
    """Train the job's new version; record DONE with the version, or FAILED with the error.

    Idempotent: a job already DONE is not trained again (a redelivered task returns its
    result version).
    """
    job = TrainingJob.objects.select_related("base_version").get(pk=job_id)
    if job.status == TrainingJob.Status.DONE:
        return job.result_version_id
    TrainingJob.objects.filter(pk=job.pk).update(
        status=TrainingJob.Status.RUNNING, started_at=timezone.now(), epochs_done=0, history={}, error=""
    )
    try:
        version = _train(job)
    except Exception as exc:
        logger.exception("Training job %s failed", job.pk)
        TrainingJob.objects.filter(pk=job.pk).update(
            status=TrainingJob.Status.FAILED, error=f"{exc.__class__.__name__}: {exc}"[:4000],
            finished_at=timezone.now(),
        )
        return None
    TrainingJob.objects.filter(pk=job.pk).update(
        status=TrainingJob.Status.DONE, result_version=version, finished_at=timezone.now()
    )
    return version.pk


def _train(job: TrainingJob) -> ModelVersion:
    from ml.checkpoints import load_checkpoint, save_checkpoint
    from ml.train import train_from_samples

    base = job.base_version
    if base is None:
        raise ValueError("the base model version was deleted")
    class_names = list(base.class_names)
    image_ids, samples = training_samples(class_names=class_names)
    seen_classes = {label for _, label in samples}
    TrainingJob.objects.filter(pk=job.pk).update(sample_count=len(samples))
    if len(seen_classes) < MIN_CLASSES:
        raise ValueError(
            f"not enough reviewed images: {len(samples)} reviewed with the classes of {base.name}, "
            f"covering {len(seen_classes)} class(es); at least {MIN_CLASSES} classes are needed"
        )

    def on_epoch(epoch: int, history: dict[str, list[float]]) -> None:
        TrainingJob.objects.filter(pk=job.pk).update(epochs_done=epoch, history=json_safe(history))

    # Fine-tuning: the base's weights, classes and preprocessing are the starting point.
    with base.checkpoint.open("rb") as checkpoint:
        base_checkpoint = load_checkpoint(checkpoint, overrides=version_metadata(base))
    # Validation by near-duplicate group, as the training-set export splits it: a copy of a
    # validation image never sits in training.
    sides = training_split(image_ids=image_ids)
    model, history, metadata = train_from_samples(
        samples,
        class_names=class_names,
        validation=[sides[pk] == VALIDATION for pk in image_ids],
        arch=base_checkpoint.metadata.arch,
        preprocessing=base_checkpoint.metadata.preprocessing,
        epochs=job.epochs,
        lr=job.learning_rate,
        device=settings.INFERENCE_DEVICE,
        on_epoch=on_epoch,
        progress=False,
        initial_state=base_checkpoint.model.state_dict(),
    )
    skipped = reviewed_label_counts(class_names=class_names).other
    metadata.metrics = {
        **metadata.metrics,
        "training_job": job.pk,
        "base_version": base.name,
        "reviewed_outside_classes": skipped,
    }
    buffer = io.BytesIO()
    save_checkpoint(buffer, model=model, metadata=metadata)

    name = _result_name(base, job)
    version = ModelVersion(
        name=name,
        **version_fields_from_metadata(metadata),
        notes=(
            f"Trained by training job {job.pk} from {len(samples)} reviewed images, base {base.name}; "
            f"{skipped} reviewed images with labels outside its classes were left out."
        ),
        created_by=job.created_by,
        validation_status=ModelVersion.Validation.PENDING,
    )
    version.checkpoint.save(f"retrained/{name}.pth", ContentFile(buffer.getvalue()), save=False)
    version.save()
    trained_images_record(version=version, image_ids=image_ids)
    # The same check as any registered checkpoint: it proves the file loads as it will be served.
    version = model_version_validate(version_id=version.pk)
    if version.validation_status != ModelVersion.Validation.VALID:
        raise ValueError(f"the trained checkpoint does not validate: {version.validation_error}")
    logger.info("Training job %s produced model version %s (%s)", job.pk, version.pk, name)
    return version


def _result_name(base: ModelVersion, job: TrainingJob) -> str:
    name = f"{base.name[:80]}-retrain-{job.pk}"
    if ModelVersion.objects.filter(name=name).exists():  # an earlier attempt of this job got this far
        name = f"{name}-{timezone.now():%Y%m%d%H%M%S}"
    return name
