"""What the JSON endpoint does with the files it is sent: predict them, and store them on request.

Files are decoded from memory (each request's own uploaded files; nothing is
written to a shared folder) and go through the model in batches of
INFERENCE_BATCH_SIZE with the process's cached predictor, which the caller
passes in: importing this module does not import torch.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING

from django.conf import settings
from django.db import transaction

from images.models import UploadBatch
from images.services import batch_add_rejections, upload_files
from predictions.models import ModelVersion, Prediction, PredictionFailure
from predictions.services.prediction_rows import prediction_rows_build

if TYPE_CHECKING:
    import ml.predictor

UploadedFiles = Sequence[tuple[str, IO[bytes]]]


@dataclass
class FileOutcome:
    """One sent file: its prediction, or the reason it has none; its stored image when stored."""

    name: str
    prediction: ml.predictor.Prediction | None = None
    error: str = ""
    image_id: int | None = None


@dataclass
class UploadsPrediction:
    outcomes: list[FileOutcome]
    inference_ms: float | None  # per image

    @property
    def failed(self) -> bool:
        return any(outcome.prediction is None for outcome in self.outcomes)


def uploads_predict(*, files: UploadedFiles, predictor: ml.predictor.Predictor) -> UploadsPrediction:
    """Predict every file, in the order sent; a file that does not decode gets its reason.

    ``predictor`` is the process's cached one (``predictions.inference.get_predictor``).
    """
    from ml.decode import ImageDecodeError

    started = time.perf_counter()
    outcomes = []
    for name, result in predictor.predict_sources(files, max_pixels=settings.IMAGE_MAX_PIXELS):
        if isinstance(result, ImageDecodeError):
            outcomes.append(FileOutcome(name=name, error=result.reason))
        else:
            outcomes.append(FileOutcome(name=name, prediction=result))
    predicted = sum(outcome.prediction is not None for outcome in outcomes)
    inference_ms = (time.perf_counter() - started) * 1000 / predicted if predicted else None
    return UploadsPrediction(outcomes=outcomes, inference_ms=inference_ms)


@transaction.atomic
def uploads_store(
    *, files: UploadedFiles, result: UploadsPrediction, model_version: ModelVersion, user
) -> UploadBatch:
    """Store the files that were predicted, as an admin upload would, with the predictions already made.

    Files that did not decode are not sent to storage (they would only be
    rejected again; and a zip archive sent here must not be expanded): the
    batch counts and reports them as rejected, with their reasons. The
    prediction rows are written in the same transaction as the images, so the
    prediction job the upload queues once it commits finds them predicted and
    has nothing to do. A prediction that already exists is kept.
    """
    predicted = [(file, outcome) for file, outcome in zip(files, result.outcomes) if outcome.prediction is not None]
    batch = upload_files(files=[file for file, _ in predicted], user=user, source=UploadBatch.Source.API)
    _match_report(predicted, batch.report)
    # They were sent too: the batch counts them, after the stored ones, with their reasons.
    batch_add_rejections(
        batch=batch, rejections=[(outcome.name, outcome.error) for outcome in result.outcomes if outcome.prediction is None]
    )

    # The same image sent twice is one stored image with one prediction.
    stored = list({outcome.image_id: outcome for _, outcome in predicted if outcome.image_id is not None}.values())
    Prediction.objects.bulk_create(
        prediction_rows_build(
            model_version=model_version,
            results={outcome.image_id: outcome.prediction for outcome in stored},
            inference_ms=result.inference_ms,
        ),
        ignore_conflicts=True,
    )
    PredictionFailure.objects.filter(
        model_version=model_version, image_id__in=[outcome.image_id for outcome in stored]
    ).delete()
    return batch


def _match_report(predicted: list[tuple[tuple[str, IO[bytes]], FileOutcome]], report: list[dict]) -> None:
    """Set each outcome's image_id from the batch report.

    The report has one entry per file, in order, named as sent; only a file
    named ``*.zip`` (a picture that is also a valid archive) could expand into
    several, so entries are matched by name going forward rather than by position.
    """
    cursor = 0
    for (name, _), outcome in predicted:
        for position in range(cursor, len(report)):
            if report[position]["file"] == name:
                outcome.image_id = report[position].get("image_id")
                cursor = position + 1
                break

