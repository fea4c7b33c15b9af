"""Prediction rows from ``ml`` results: the one place a model's answer becomes a database row.

Both writers use it: the worker recording a chunk (predictions.services.chunk_record)
and the JSON endpoint storing what it predicted (predictions.services.api_predictions).
Each writes the rows its own way (the worker upserts under its job's lock, the
endpoint keeps a prediction already there), but what a row holds is decided here:
the label by name (created through labels_ensure if the taxonomy lacks it), the
confidence, the margin the review queue sorts by, and the probabilities aligned
with the version's class names, rounded to 6 places (JSON size; far below any
difference a reviewer or a metric can see), and the embedding from the same
forward pass as float16 bytes (ml.features; null when the model has none or
STORE_EMBEDDINGS is off).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING

from django.utils import timezone

from ml.features import embedding_to_bytes
from predictions.models import ModelVersion, Prediction, PredictionJob
from predictions.services.labels import labels_ensure

if TYPE_CHECKING:
    import ml.predictor

PROBABILITY_DECIMALS = 6


def prediction_rows_build(
    *,
    model_version: ModelVersion,
    results: Mapping[int, ml.predictor.Prediction],
    inference_ms: float | None,
    job: PredictionJob | None = None,
    created_at: datetime | None = None,
) -> list[Prediction]:
    """Unsaved Prediction rows of ``model_version``, one per ``image id -> result`` of ``results``."""
    if not results:
        return []
    # The version's class names first, so labels new to the taxonomy are added in the model's order.
    labels = labels_ensure(names=[*model_version.class_names, *(result.label for result in results.values())])
    created_at = created_at or timezone.now()
    return [
        Prediction(
            image_id=image_id,
            model_version=model_version,
            label=labels[result.label],
            confidence=float(result.confidence),
            margin=float(result.margin),
            probabilities=[round(float(p), PROBABILITY_DECIMALS) for p in result.probabilities],
            inference_ms=inference_ms,
            embedding=embedding_bytes(result),
            job=job,
            created_at=created_at,
        )
        for image_id, result in results.items()
    ]


def embedding_bytes(result: ml.predictor.Prediction) -> bytes | None:
    """What a Prediction row stores of ``result``'s embedding (None: the model gave none)."""
    embedding = getattr(result, "embedding", None)
    return None if embedding is None else embedding_to_bytes(embedding)
