"""Which model version: the one rule every screen, job, export and endpoint reads.

"The active version" is the version marked active AND validated (VALID): a version
whose checkpoint was not checked cannot be trusted to predict, so it counts as no
active version everywhere (review queue, dashboard, exports, worker, JSON endpoint).
The services keep the two together already (model_version_activate refuses a version
that is not VALID, model_version_revalidate refuses the active one, and the admin
shows both fields read-only), so the VALID condition only matters for a row changed
outside them; it makes every reader agree on it.

An explicitly chosen version (a reviewer picking one in the queue, a Lead exporting or
reading the metrics of an older one) is returned whatever its validation: its stored
predictions are worth reading even when it cannot predict.
"""

from predictions.models import ModelVersion


def _active_versions():
    return ModelVersion.objects.filter(is_active=True, validation_status=ModelVersion.Validation.VALID)


def model_version_active() -> ModelVersion | None:
    """The version new images are predicted with and screens show by default: active and VALID."""
    return _active_versions().first()


def model_version_active_id() -> int | None:
    """The id of model_version_active(), without loading the row."""
    return _active_versions().values_list("pk", flat=True).first()


def model_version_or_active(*, version_id: int | None) -> ModelVersion | None:
    """The version with ``version_id`` (whatever its validation; None if it does not exist), else the active one."""
    if version_id is not None:
        return ModelVersion.objects.filter(pk=version_id).first()
    return model_version_active()
