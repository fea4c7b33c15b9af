"""ModelVersion row <-> checkpoint metadata (predictions.checkpoint_metadata), through ml's own resolver."""

import math

from ml.checkpoints import CheckpointMetadata, resolve_metadata

from predictions.checkpoint_metadata import (
    METADATA_FIELDS,
    json_safe,
    version_fields_from_metadata,
    version_metadata,
)
from predictions.models import ModelVersion

FILE_METADATA = {
    "arch": "resnet34",
    "class_names": ["cat", "dog"],
    "input_size": 160,
    "mean": [0.5, 0.5, 0.5],
    "std": [0.25, 0.25, 0.25],
    "metrics": {"val_acc": [0.5, 0.75]},
}


def row(**fields) -> ModelVersion:
    values = {
        "arch": "resnet18_custom_head",
        "class_names": ["circle", "square", "star"],
        "input_size": 64,
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
        "metrics": {"val_acc": [0.5, 0.9], "val_f1": 0.8},
    }
    return ModelVersion(name="v", **{**values, **fields})


def row_fields(version: ModelVersion) -> dict:
    return {field: getattr(version, field) for field in METADATA_FIELDS}


def test_row_to_metadata_to_row_gives_the_same_fields():
    version = row()

    resolved = resolve_metadata({}, version_metadata(version))

    assert version_fields_from_metadata(resolved) == row_fields(version)


def test_the_rows_filled_fields_win_over_the_files_metadata():
    version = row()

    resolved = resolve_metadata(FILE_METADATA, version_metadata(version))

    assert version_fields_from_metadata(resolved) == row_fields(version)


def test_a_blank_row_takes_everything_from_the_file():
    version = ModelVersion(name="v", arch="", class_names=[], input_size=0, mean=[], std=[], metrics={})

    overrides = version_metadata(version)
    resolved = resolve_metadata(FILE_METADATA, overrides)

    assert set(overrides) == set(METADATA_FIELDS) and all(value is None for value in overrides.values())
    assert version_fields_from_metadata(resolved) == FILE_METADATA


def test_fields_from_metadata_are_plain_and_json_safe():
    metadata = CheckpointMetadata(
        arch="resnet18", class_names=("a", "b"), input_size=32, mean=(0.5, 0.5, 0.5), std=(0.2, 0.2, 0.2),
        metrics={"val_loss": [float("nan"), 0.3], "best": float("inf")},
    )

    fields = version_fields_from_metadata(metadata)

    assert fields == {
        "arch": "resnet18", "class_names": ["a", "b"], "input_size": 32, "mean": [0.5, 0.5, 0.5],
        "std": [0.2, 0.2, 0.2], "metrics": {"val_loss": [None, 0.3], "best": None},
    }
    assert type(fields["mean"]) is list and type(fields["class_names"]) is list


def test_json_safe_leaves_finite_values_alone():
    value = {"a": [1, 2.5, "x", None], 3: {"b": -math.inf}}

    assert json_safe(value) == {"a": [1, 2.5, "x", None], "3": {"b": None}}
