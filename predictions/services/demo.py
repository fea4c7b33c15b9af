"""The first run's demo model, trained in the task cluster while the tool is already up.

``manage.py bootstrap`` (the first half of ``make run``) calls ``demo_setup_queue`` when
no model version exists: it records a TrainingJob and queues ``demo_training_run``
(task ``predictions.tasks.train_demo_model``), then ``manage.py serve`` starts the web
server and the cluster at once. The task generates the demo images unless they are
there, trains with the demo recipe (``ml.demo_data.build_demo_checkpoint``, the same
code as ``python -m ml.train``) into WEIGHTS_DIR/demo.pth, registers and activates that
checkpoint (activation queues every image uploaded meanwhile) and imports the small
demo upload. With demo.pth already there (a new database, old weights) it only
registers, activates and imports.

The job is told apart from retraining jobs by ``history["kind"] == "demo"`` (and no base
version): the schema has no field for it, and the history JSON already belongs to the
job. The same JSON keeps the job's parameters, so the task takes only the job id.
torch is imported inside the task only (through ml.train): the cluster's parent never
touches CUDA.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.utils import timezone
from django_q.tasks import async_task

from images.models import Image, UploadBatch
from predictions.checkpoint_metadata import json_safe
from predictions.models import ModelVersion, TrainingJob
from predictions.selectors.demo import DEMO_KIND, demo_training_jobs
from predictions.selectors.versions import model_version_active

logger = logging.getLogger(__name__)

DEMO_VERSION_NAME = "demo"
DEMO_CHECKPOINT = "demo.pth"
DEMO_UPLOAD_COUNT = 40
# Not the seed of the training images: the demo upload is new to the model.
DEMO_UPLOAD_SEED = 1
# The demo training takes 3-8 minutes on two busy cores; a cluster that kills tasks
# sooner (Q_TIMEOUT) would kill it.
DEMO_TRAINING_SECONDS = 900
# What the job's history keeps besides the per-epoch metrics.
_PARAMS = ("kind", "data_dir", "images_per_class", "input_size", "import_upload")


@dataclass(frozen=True)
class DemoRecipe:
    """How much the demo model trains: the product's recipe (ml.demo_data) unless the
    environment shrinks it (DEMO_IMAGES_PER_CLASS, DEMO_EPOCHS, DEMO_INPUT_SIZE: tests)."""

    images_per_class: int
    epochs: int
    input_size: int

    @property
    def image_count(self) -> int:
        from ml.demo_data import CLASS_NAMES

        return self.images_per_class * len(CLASS_NAMES)

    @classmethod
    def from_environment(cls) -> DemoRecipe:
        from ml.demo_data import CLASS_NAMES, DEMO_COUNT, DEMO_EPOCHS, DEMO_INPUT_SIZE

        return cls(
            images_per_class=_env_positive_int("DEMO_IMAGES_PER_CLASS", DEMO_COUNT // len(CLASS_NAMES)),
            epochs=_env_positive_int("DEMO_EPOCHS", DEMO_EPOCHS),
            input_size=_env_positive_int("DEMO_INPUT_SIZE", DEMO_INPUT_SIZE),
        )


def _env_positive_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ImproperlyConfigured(f"{name}={raw!r}: expected a positive integer")
    return value


def demo_checkpoint_path() -> Path:
    return Path(settings.WEIGHTS_DIR) / DEMO_CHECKPOINT


def demo_setup_queue(*, user, data_dir: Path) -> TrainingJob | None:
    """On a first run (no model version at all), queue the demo model's task; None otherwise.

    A demo job left queued or running by a cluster that stopped (Ctrl-C during the
    first run) is marked failed and a new one takes over: bootstrap runs before the
    cluster starts, so nothing is working on it. Should its old task be redelivered,
    it finds its job failed and does nothing.
    """
    if ModelVersion.objects.exists():
        return None
    recipe = DemoRecipe.from_environment()
    from ml.demo_data import DEMO_LR

    timeout = settings.Q_CLUSTER.get("timeout")
    if timeout and timeout < DEMO_TRAINING_SECONDS and not demo_checkpoint_path().is_file():
        logger.warning(
            "The task cluster stops tasks after %s s (Q_TIMEOUT); the demo training may need up to %s s.",
            timeout, DEMO_TRAINING_SECONDS,
        )  # fmt: skip
    with transaction.atomic():
        previous = demo_training_jobs().order_by("-created_at", "-pk").first()
        # Only an empty tool gets the demo upload; images uploaded while an earlier
        # attempt trained do not take it away.
        import_upload = bool(previous.history.get("import_upload")) if previous else not Image.objects.exists()
        job = TrainingJob.objects.create(
            epochs=recipe.epochs,
            learning_rate=DEMO_LR,
            sample_count=recipe.image_count,
            created_by=user if user is not None and user.is_authenticated else None,
            history={
                "kind": DEMO_KIND,
                "data_dir": str(data_dir),
                "images_per_class": recipe.images_per_class,
                "input_size": recipe.input_size,
                "import_upload": import_upload,
            },
        )
        demo_training_jobs().filter(status__in=[TrainingJob.Status.QUEUED, TrainingJob.Status.RUNNING]).exclude(
            pk=job.pk
        ).update(
            status=TrainingJob.Status.FAILED,
            error=f"Interrupted: the task cluster stopped before it finished; training job {job.pk} took over.",
            finished_at=timezone.now(),
        )
        transaction.on_commit(
            lambda: async_task(
                "predictions.tasks.train_demo_model", job.pk, task_name=f"demo model (training job {job.pk})"
            )
        )
    return job


def demo_training_run(*, job_id: int) -> int | None:
    """The task: train (unless demo.pth exists), register, activate, import the demo upload.

    Records DONE with the version, or FAILED with the error. A job already finished
    (done, failed, or taken over by a newer one) is left as it is: returns its version id.
    """
    job = TrainingJob.objects.get(pk=job_id)
    if job.status in (TrainingJob.Status.DONE, TrainingJob.Status.FAILED):
        return job.result_version_id
    params = {key: job.history[key] for key in _PARAMS if key in job.history}
    TrainingJob.objects.filter(pk=job.pk).update(
        status=TrainingJob.Status.RUNNING, started_at=timezone.now(), epochs_done=0, history=params, error=""
    )
    try:
        version = _demo_version(job, params)
        _demo_upload(job, params)
    except Exception as exc:
        logger.exception("Demo model: training job %s failed", job.pk)
        TrainingJob.objects.filter(pk=job.pk).update(
            status=TrainingJob.Status.FAILED, error=f"{exc.__class__.__name__}: {exc}"[:4000],
            finished_at=timezone.now(),
        )  # fmt: skip
        return None
    TrainingJob.objects.filter(pk=job.pk).update(
        status=TrainingJob.Status.DONE, result_version=version, finished_at=timezone.now()
    )
    return version.pk


def _demo_version(job: TrainingJob, params: dict) -> ModelVersion:
    from ml.demo_data import CLASS_NAMES
    from predictions.services.labels import labels_ensure
    from predictions.services.model_versions import (
        model_version_activate,
        model_version_register,
        model_version_validate,
    )

    checkpoint = demo_checkpoint_path()
    if checkpoint.is_file():
        logger.info("Demo model: %s exists, registering it without training.", checkpoint)
    else:
        _demo_checkpoint_train(job, params, checkpoint)
    TrainingJob.objects.filter(pk=job.pk).update(epochs_done=job.epochs)

    version = ModelVersion.objects.filter(name=DEMO_VERSION_NAME).first()
    if version is None:
        # The taxonomy in the demo's own order (on a fresh install: keys 1-5 on the review screen).
        labels_ensure(names=CLASS_NAMES)
        version = model_version_register(
            name=DEMO_VERSION_NAME,
            checkpoint_path=checkpoint,
            notes="Demo model: five shapes, trained on generated images on the first `make run`.",
            user=job.created_by,
            validate_now=True,
        )
    elif version.validation_status == ModelVersion.Validation.PENDING:  # an attempt stopped while validating
        version = model_version_validate(version_id=version.pk)
    if version.validation_status != ModelVersion.Validation.VALID:
        raise ValueError(f"the demo checkpoint is not usable: {version.validation_error}")
    # A version someone activated while the demo trained stays active.
    if model_version_active() is None:
        prediction_job = model_version_activate(version=version, user=job.created_by)
        waiting = prediction_job.total if prediction_job is not None else 0
        logger.info(
            "Demo model: version %r is active; %d image(s) uploaded meanwhile queued for prediction.",
            version.name, waiting,
        )  # fmt: skip
    return version


def _demo_checkpoint_train(job: TrainingJob, params: dict, checkpoint: Path) -> None:
    from ml.demo_data import build_demo_checkpoint

    train_dir = Path(params["data_dir"]) / "train"
    count = job.sample_count
    started = time.monotonic()
    logger.info(
        "Demo model: training on %d generated images in %s (made first where missing), %d epochs; "
        "progress on the admin index.",
        count, train_dir, job.epochs,
    )  # fmt: skip

    def on_epoch(epoch: int, history: dict[str, list[float]]) -> None:
        TrainingJob.objects.filter(pk=job.pk).update(epochs_done=epoch, history={**params, **json_safe(history)})
        logger.info(
            "Demo model: epoch %d of %d, validation accuracy %.3f (%.0f s).",
            epoch, job.epochs, history["val_acc"][-1], time.monotonic() - started,
        )  # fmt: skip

    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    # Written aside and renamed, so an interrupted run never leaves a half file behind.
    partial = checkpoint.with_name(f"{checkpoint.name}.partial-{job.pk}")
    try:
        build_demo_checkpoint(
            train_dir,
            partial,
            count=count,
            epochs=job.epochs,
            input_size=params["input_size"],
            device=settings.INFERENCE_DEVICE,
            progress=False,
            on_epoch=on_epoch,
        )
        os.replace(partial, checkpoint)
    finally:
        partial.unlink(missing_ok=True)
    logger.info("Demo model: trained in %.0f s into %s.", time.monotonic() - started, checkpoint)


def _demo_upload(job: TrainingJob, params: dict) -> UploadBatch | None:
    """The small demo upload, once, for a tool that had no images when the demo was queued."""
    from images.services import upload_files
    from ml.demo_data import generate

    if not params.get("import_upload") or UploadBatch.objects.filter(source=UploadBatch.Source.DEMO).exists():
        return None
    upload_dir = Path(params["data_dir"]) / "upload"
    paths = sorted(upload_dir.glob("*/*.jpg"))
    if len(paths) < DEMO_UPLOAD_COUNT:
        generate(upload_dir, count=DEMO_UPLOAD_COUNT, seed=DEMO_UPLOAD_SEED, progress=False)
        paths = sorted(upload_dir.glob("*/*.jpg"))
    # Interleave the classes and hide them: the file names must not give the answer away.
    paths = sorted(paths, key=lambda path: path.stem.rsplit("_", 1)[-1])[:DEMO_UPLOAD_COUNT]
    with contextlib.ExitStack() as stack:
        files = [
            (f"demo-{number:03d}.jpg", stack.enter_context(path.open("rb")))
            for number, path in enumerate(paths, start=1)
        ]
        batch = upload_files(
            files=files, user=job.created_by, source=UploadBatch.Source.DEMO, name="Demo images"
        )
    logger.info("Demo model: imported %d demo images; the cluster predicts them next.", batch.accepted_count)
    return batch
