"""ModelVersion row <-> checkpoint metadata: the one translation, both directions.

``ml`` describes a checkpoint with ``ml.checkpoints.CheckpointMetadata`` (arch, class
names, input size, normalisation mean/std, training metrics); a ModelVersion row keeps
the same values in its own fields. Loading a checkpoint passes the row as the loader's
``overrides`` (version_metadata); validation and retraining write what the checkpoint
resolved to back into the row (version_fields_from_metadata).

A blank field on the row (arch "", class_names [], input_size 0, mean/std [], metrics
{}) means "read it from the checkpoint": it is passed as None, which the loader treats
as not given. A filled field takes precedence over the file. Importing this module never
imports torch.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ml.checkpoints import CheckpointMetadata

    from predictions.models import ModelVersion

# The row fields that mirror the checkpoint's metadata (update_fields of a write-back).
METADATA_FIELDS = ("arch", "class_names", "input_size", "mean", "std", "metrics")


def json_safe(value: Any) -> Any:
    """NaN and infinities as None: PostgreSQL's jsonb refuses them (a run without validation data records NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value


def version_metadata(version: ModelVersion) -> dict[str, Any]:
    """The row as overrides for ``ml.checkpoints.load_checkpoint`` / ``Predictor.from_checkpoint``."""
    return {
        "arch": version.arch or None,
        "class_names": list(version.class_names) or None,
        "input_size": version.input_size or None,
        "mean": list(version.mean) or None,
        "std": list(version.std) or None,
        "metrics": dict(version.metrics) or None,
    }


def version_fields_from_metadata(metadata: CheckpointMetadata) -> dict[str, Any]:
    """The ModelVersion field values for a checkpoint's resolved metadata (plain, JSON-safe types)."""
    plain = metadata.to_dict()
    return {field: json_safe(plain[field]) for field in METADATA_FIELDS}
