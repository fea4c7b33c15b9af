"""Reads behind the exports: the annotated image rows, the training-set rows.

Every export walks one queryset built here, so a row never needs a query of its
own: the prediction of the chosen model version is a LEFT JOIN (a
FilteredRelation on the unique image+version pair), the latest live review's
`agreed` a correlated subquery, and the names of the users, batch and final
label are joined in by the values() the export reads.
"""

from collections.abc import Iterator

from django.core.files.storage import Storage
from django.db.models import F, FilteredRelation, OuterRef, Q, QuerySet, Subquery

from images.models import Image
from predictions.models import ExportJob, ModelVersion, Review


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


def storage_training_path(*, storage: Storage, name: str) -> str:
    """Where `ml.train` finds a stored file: its absolute path when the storage
    is on this machine's disk, else the storage name (then relative to wherever
    the files are copied)."""
    try:
        return storage.path(name)
    except NotImplementedError:
        return name


def training_set_rows(
    *, queryset: QuerySet[Image], storage: Storage, chunk_size: int = 2000
) -> Iterator[tuple[str, str]]:
    """(path, label) for the reviewed images of `queryset`, streamed in chunks."""
    reviewed = (
        queryset.prefetch_related(None)
        .filter(final_label__isnull=False)
        .annotate(training_label=F("final_label__name"))
        .values_list("file", "training_label")
        .order_by("pk")
    )
    for name, label in reviewed.iterator(chunk_size=chunk_size):
        yield storage_training_path(storage=storage, name=name), label
