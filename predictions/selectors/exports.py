"""Reads behind the exports: the annotated image rows, the training-set rows.

Every export walks one queryset built here, so a row never needs a query of its
own: the prediction of the chosen model version is a LEFT JOIN (a
FilteredRelation on the unique image+version pair), the latest live review's
`agreed` a correlated subquery, and the names of the users, batch and final
label are joined in by the values() the export reads.
"""

import os
import re
from collections.abc import Iterator
from typing import NamedTuple

from django.db.models import F, FilteredRelation, OuterRef, Q, QuerySet, Subquery

from images.models import Image
from predictions.models import ExportJob, ModelVersion, Review
from predictions.selectors.splits import training_split
from reviewtool.batching import id_chunks


def image_export_queryset(*, queryset: QuerySet[Image], model_version: ModelVersion | None) -> QuerySet[Image]:
    """The images of `queryset` with everything one export row shows.

    Adds `export_predicted_label`, `export_confidence`, `export_probabilities`
    (of `model_version`'s prediction, None without one) and `export_agreed`
    (the latest live review's agreement with the model). The annotation names
    are prefixed so they cannot clash with annotations of the changelist's own
    queryset, which this is usually applied to.
    """
    latest_live_review = Review.objects.filter(image=OuterRef("pk"), undone_at__isnull=True).order_by(
        "-created_at", "-id"
    )
    return (
        # The export reads values(), which prefetching cannot apply to.
        queryset.prefetch_related(None)
        .annotate(
            export_prediction=FilteredRelation(
                "predictions",
                condition=Q(predictions__model_version=model_version.pk if model_version else None),
            ),
            export_predicted_label=F("export_prediction__label__name"),
            export_confidence=F("export_prediction__confidence"),
            export_probabilities=F("export_prediction__probabilities"),
            export_agreed=Subquery(latest_live_review.values("agreed")[:1]),
        )
    )


def export_job_images(*, job: ExportJob) -> list[int]:
    """The image ids a background export was started for, in the order they were shown."""
    return [int(pk) for pk in job.params.get("image_ids", [])]


_UNSAFE_FOLDER_CHARACTERS = re.compile(r'[\\/:*?"<>|\x00-\x1f]')


def label_folder_name(label: str) -> str:
    """A label as a folder name: no path separators or characters Windows refuses, never '.' or '..'."""
    name = _UNSAFE_FOLDER_CHARACTERS.sub("_", label).strip()
    return name if name.strip(".") else f"label_{name.replace('.', '_') or 'empty'}"


def training_member_name(*, label: str, sha256: str, file_name: str, image_format: str) -> str:
    """Where a training image lies under the root of a training zip: `<label>/<sha256>.<ext>`.

    The zip's members and every training CSV's paths are this name, so a CSV works
    next to the unpacked zip whatever machine it is on.
    """
    extension = os.path.splitext(file_name)[1].lower() or f".{image_format.lower()}"
    return f"{label_folder_name(label)}/{sha256}{extension}"


class TrainingRow(NamedTuple):
    path: str  # relative to the training zip's root (training_member_name)
    label: str
    split: str  # "train" or "validation"
    file: str  # the storage name, for the image's URL


def training_set_rows(*, queryset: QuerySet[Image], chunk_size: int = 2000) -> Iterator[TrainingRow]:
    """A TrainingRow for each reviewed image of `queryset`, streamed in chunks.

    `split` keeps a near-duplicate group always on one side (predictions.selectors.splits).
    """
    reviewed = (
        queryset.prefetch_related(None)
        .filter(final_label__isnull=False)
        .annotate(training_label=F("final_label__name"))
        .values_list("pk", "file", "training_label", "sha256", "format")
        .order_by("pk")
    )
    for rows in id_chunks(reviewed.iterator(chunk_size=chunk_size), chunk_size):
        split = training_split(image_ids=[row[0] for row in rows])
        for pk, name, label, sha256, image_format in rows:
            path = training_member_name(label=label, sha256=sha256, file_name=name, image_format=image_format)
            yield TrainingRow(path=path, label=label, split=split[pk], file=name)
