"""Model versions: register a checkpoint, validate it in the cluster, activate it.

A version is registered as PENDING with whatever metadata the user gave (blank fields
mean "read it from the checkpoint": arch "", class_names [], input_size 0, mean/std []).
Validation loads the checkpoint the way the predictor will (``weights_only``, strict
state dict, class count), runs one forward pass, fills the blank fields from the
checkpoint's metadata and records VALID or INVALID with the reason. Only a VALID
version can be activated. torch is imported inside the validating function only: it
runs in the cluster (or in the ``register_model`` command), never in the web process.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files import File
from django.db import IntegrityError, transaction
from django_q.tasks import async_task

from predictions.checkpoint_metadata import METADATA_FIELDS, version_fields_from_metadata, version_metadata
from predictions.models import AutoAcceptRun, ModelVersion, Prediction, PredictionFailure, PredictionJob, Review
from predictions.selectors.versions import model_version_active
from predictions.services import jobs
from predictions.services.labels import labels_ensure

logger = logging.getLogger(__name__)


def weights_dir() -> Path:
    return Path(settings.WEIGHTS_DIR).resolve()


def weights_dir_checkpoints() -> list[str]:
    """Checkpoint files already under WEIGHTS_DIR, as names relative to it."""
    root = weights_dir()
    if not root.is_dir():
        return []
    return sorted(
        str(path.relative_to(root))
        for path in root.rglob("*")
        if path.is_file() and path.suffix in (".pth", ".pt", ".ckpt", ".bin")
    )


def _checkpoint_name_in_weights_dir(path: Path) -> str | None:
    """The storage name of ``path`` when the file already lives under WEIGHTS_DIR."""
    resolved = path.resolve()
    try:
        return str(resolved.relative_to(weights_dir()))
    except ValueError:
        return None


def _storage_path(storage, name: str) -> Path | None:
    try:
        return Path(storage.path(name)).resolve()
    except NotImplementedError:
        return None


def model_version_register(
    *,
    name: str,
    checkpoint_file: File | None = None,
    checkpoint_path: str | Path | None = None,
    arch: str | None = None,
    class_names: Sequence[str] | None = None,
    input_size: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    notes: str = "",
    user=None,
    validate_now: bool = False,
) -> ModelVersion:
    """Record a new, inactive model version and validate its checkpoint.

    ``checkpoint_file`` is stored in the weights storage; ``checkpoint_path`` is used
    where it is when it lies under WEIGHTS_DIR and copied there otherwise. Validation
    runs in the cluster once the row is committed, or right here with ``validate_now``
    (command line).
    """
    if (checkpoint_file is None) == (checkpoint_path is None):
        raise ValidationError("Give either a checkpoint file or the path of one, not both.")
    with transaction.atomic():
        if ModelVersion.objects.filter(name=name).exists():
            raise ValidationError(f"A model version named {name!r} exists already.")
        version = ModelVersion(
            name=name,
            arch=(arch or "").strip(),
            class_names=list(class_names or []),
            input_size=input_size or 0,
            mean=list(mean or []),
            std=list(std or []),
            notes=notes,
            validation_status=ModelVersion.Validation.PENDING,
            created_by=user if user is not None and user.is_authenticated else None,
        )
        _checkpoint_store(version, checkpoint_file=checkpoint_file, checkpoint_path=checkpoint_path)
        version.save()
        if not validate_now:
            _validation_queue(version)
    if validate_now:
        return model_version_validate(version_id=version.pk)
    return version


def _checkpoint_store(version: ModelVersion, *, checkpoint_file: File | None, checkpoint_path) -> None:
    if checkpoint_file is not None:
        version.checkpoint.save(Path(checkpoint_file.name).name, checkpoint_file, save=False)
        return
    path = Path(checkpoint_path)
    if not path.is_file():
        raise ValidationError(f"{path}: checkpoint file not found")
    existing_name = _checkpoint_name_in_weights_dir(path)
    # Only where the weights storage is that folder: on the object store (MEDIA_STORAGE=s3) the file is uploaded.
    if existing_name is not None and _storage_path(version.checkpoint.storage, existing_name) == path.resolve():
        version.checkpoint.name = existing_name
        return
    with path.open("rb") as handle:
        version.checkpoint.save(path.name, File(handle), save=False)


def _validation_queue(version: ModelVersion) -> None:
    version_id = version.pk
    transaction.on_commit(
        lambda: async_task(
            "predictions.tasks.validate_model_version",
            version_id,
            task_name=f"validate model version {version_id}",
        )
    )


def _checkpoint_check(version: ModelVersion):
    """Load the checkpoint as the predictor would and run one forward pass; CheckpointError if unusable."""
    import torch

    from ml.checkpoints import CheckpointError, load_checkpoint

    try:
        with version.checkpoint.open("rb") as handle:
            loaded = load_checkpoint(handle, overrides=version_metadata(version))
    except (FileNotFoundError, OSError) as exc:
        raise CheckpointError(f"the checkpoint file cannot be read ({exc.__class__.__name__}: {exc})") from exc
    size = loaded.metadata.input_size
    try:
        with torch.inference_mode():
            output = loaded.model(torch.zeros(1, 3, size, size))
    except Exception as exc:  # any failure of the architecture at this size is the finding
        raise CheckpointError(f"the model does not run on {size}x{size} input: {exc}") from exc
    if tuple(output.shape) != (1, loaded.metadata.num_classes):
        raise CheckpointError(
            f"the model outputs shape {list(output.shape)} for one image; expected "
            f"[1, {loaded.metadata.num_classes}] (one score per class name)"
        )
    return loaded.metadata


def model_version_validate(*, version_id: int) -> ModelVersion:
    """Check the version's checkpoint and record VALID (blank metadata filled in) or INVALID with the reason."""
    from ml.checkpoints import CheckpointError

    version = ModelVersion.objects.get(pk=version_id)
    # The load runs outside any transaction: it can take seconds, and SQLite would
    # hold its write lock all that time.
    try:
        metadata = _checkpoint_check(version)
    except CheckpointError as exc:
        version.validation_status = ModelVersion.Validation.INVALID
        version.validation_error = f"{Path(version.checkpoint.name).name}: {exc}"
        version.save(update_fields=["validation_status", "validation_error"])
        logger.warning("Model version %s is invalid: %s", version.pk, version.validation_error)
        # A refused file is never loaded again (a hostile upload would otherwise stay in WEIGHTS_DIR).
        _checkpoint_forget_on_commit(version)
        return version

    with transaction.atomic():
        # The row's own metrics were passed as overrides, so they win over the file's here.
        for field, value in version_fields_from_metadata(metadata).items():
            setattr(version, field, value)
        version.validation_status = ModelVersion.Validation.VALID
        version.validation_error = ""
        version.save(update_fields=[*METADATA_FIELDS, "validation_status", "validation_error"])
        labels_ensure(names=version.class_names)
    logger.info("Model version %s is valid: %s, %d classes", version.pk, version.arch, len(version.class_names))
    return version


def model_version_activate(*, version: ModelVersion, user, predict_missing: bool = True) -> PredictionJob | None:
    """Make ``version`` the one active version; queue the images it has not predicted yet.

    Returns the PredictionJob queued for the missing images, or None.
    """
    version.refresh_from_db(fields=["validation_status", "validation_error", "is_active"])
    if version.validation_status != ModelVersion.Validation.VALID:
        reason = {
            ModelVersion.Validation.PENDING: "its checkpoint has not been validated yet",
            ModelVersion.Validation.INVALID: f"its checkpoint is invalid ({version.validation_error})",
        }[version.validation_status]
        raise ValidationError(f"{version.name} cannot be activated: {reason}.")
    try:
        with transaction.atomic():
            ModelVersion.objects.filter(is_active=True).exclude(pk=version.pk).update(is_active=False)
            ModelVersion.objects.filter(pk=version.pk).update(is_active=True)
            version.is_active = True
            job = (
                jobs.predict_missing(model_version=version, user=user, reason="activation")
                if predict_missing
                else None
            )
    except IntegrityError as exc:
        # The single-active constraint: another version was activated at the same moment.
        raise ValidationError(
            f"{version.name} was not activated: another version was activated at the same time; try again."
        ) from exc
    logger.info("Model version %s (%s) activated by %s", version.pk, version.name, user)
    return job


def model_version_predict_missing(*, version: ModelVersion, user) -> PredictionJob | None:
    """Queue the images ``version`` has not predicted yet (active or not: to compare versions)."""
    if version.validation_status != ModelVersion.Validation.VALID:
        raise ValidationError(f"{version.name} cannot predict: its checkpoint is not valid.")
    return jobs.predict_missing(model_version=version, user=user, reason="predict missing")


def images_repredict(*, image_ids: Sequence[int], user) -> PredictionJob | None:
    """Queue the given images for the active version (those it has not predicted yet).

    A prediction is deterministic for a version and an image, so images the active
    version has predicted already are not run again.
    """
    if model_version_active() is None:
        raise ValidationError("There is no active, valid model version to predict with.")
    return jobs.enqueue_predictions(image_ids=image_ids, reason="repredict", user=user)


def model_version_revalidate(*, version: ModelVersion) -> None:
    """Mark the version pending and validate it again in the cluster (after its metadata was edited)."""
    if version.is_active:
        raise ValidationError(f"{version.name} is active; activate another version before changing it.")
    if not version.checkpoint or not version.checkpoint.storage.exists(version.checkpoint.name):
        raise ValidationError(
            f"{version.name}: its checkpoint file was removed when it was found invalid; register the file again."
        )
    ModelVersion.objects.filter(pk=version.pk).update(
        validation_status=ModelVersion.Validation.PENDING, validation_error=""
    )
    _validation_queue(version)


# --- deleting a version -------------------------------------------------------------


def model_version_deletion_counts(*, versions: Sequence[ModelVersion]) -> dict[str, int]:
    """What deleting ``versions`` removes (by the admin's plural names), and the reviews it leaves.

    ``"reviews kept"`` counts the decisions made on their predictions: they stay,
    only their link to the prediction is cleared (Review.prediction is SET_NULL).
    """
    ids = [version.pk for version in versions]
    return {
        "predictions": Prediction.objects.filter(model_version__in=ids).count(),
        "prediction failures": PredictionFailure.objects.filter(model_version__in=ids).count(),
        "prediction jobs": PredictionJob.objects.filter(model_version__in=ids).count(),
        "auto-accept runs": AutoAcceptRun.objects.filter(model_version__in=ids).count(),
        "reviews kept": Review.objects.filter(prediction__model_version__in=ids).count(),
    }


def model_version_delete(*, version: ModelVersion, user=None) -> None:
    """Delete an inactive version with its predictions, failures and jobs; its checkpoint file after commit.

    The active version is refused: the JSON endpoint and the review queue would
    have none (activate another first). A chunk of its jobs still running in the
    cluster ends quietly (predictions.services.chunk_record finds its job gone).
    """
    with transaction.atomic():
        # Read again inside the write: it may have been activated since the page was shown.
        current = ModelVersion.objects.filter(pk=version.pk).only("pk", "is_active", "name", "checkpoint").first()
        if current is None:
            return
        if current.is_active:
            raise ValidationError(
                f"{current.name} is the active version and cannot be deleted; activate another version first."
            )
        current.delete()
        _checkpoint_forget_on_commit(version)
    logger.info("Model version %s (%s) deleted by %s", version.pk, version.name, user)


def _checkpoint_forget_on_commit(version: ModelVersion) -> None:
    """Remove the version's checkpoint file once this commits, unless another version uses the same file.

    The row (when it stays: a version found invalid) forgets the name too: a file
    registered later may be given the freed name, and validating this version again
    would then check that file and take its metadata.
    """
    name, storage, version_id = version.checkpoint.name, version.checkpoint.storage, version.pk

    def forget() -> None:
        if not name or ModelVersion.objects.filter(checkpoint=name).exclude(pk=version_id).exists():
            return
        try:
            storage.delete(name)
        except OSError as exc:
            logger.warning("Could not remove checkpoint file %s of model version %s: %s", name, version_id, exc)
        else:
            ModelVersion.objects.filter(pk=version_id, checkpoint=name).update(checkpoint="")
            logger.info("Removed checkpoint file %s of model version %s", name, version_id)

    transaction.on_commit(forget)


def version_name_for_upload(filename: str) -> str:
    """A free version name derived from a checkpoint file name ("resnet18_model.pth" -> "resnet18_model")."""
    base = Path(filename).stem or "model"
    name, number = base, 2
    while ModelVersion.objects.filter(name=name).exists():
        name = f"{base}-{number}"
        number += 1
    return name[:100]

