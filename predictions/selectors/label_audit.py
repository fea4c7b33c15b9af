"""Reads of the label audit: what an audit scores, its results, and the "Suspected label errors" queue.

The queue order serves the flagged images of the latest finished audit that are
not re-checked yet. "Not re-checked" is read from the image's denormalised
``reviewed_at`` (the time of its latest live review): a review made after the
audit was queued takes the image out, and undoing that review puts it back. As
long as that holds, the image's ``reviewed_by`` is the suspicion's ``given_by``,
so "not to the reviewer who gave the label" is a condition on the image too: every
step of the queue is a primary-key join, as in the other orders.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass
from datetime import timedelta

from django.db.models import OuterRef, Q, QuerySet, Subquery
from django.utils import timezone

from images.models import Image
from predictions.models import LabelAudit, LabelSuspicion, ModelVersion, Prediction, Review
from reviewtool.batching import IN_QUERY_MAX_IDS, id_chunks

# A queued or running audit older than this was lost (its worker died, or no cluster
# ran): it no longer holds back the next automatic one.
AUDIT_STALE_AFTER = timedelta(hours=1)
_READ_CHUNK = 2000


def label_audit_latest_finished() -> LabelAudit | None:
    """The audit whose results the review queue and the export show: the latest that finished."""
    return (
        LabelAudit.objects.filter(status=LabelAudit.Status.DONE)
        .select_related("model_version")
        .order_by("-created_at", "-pk")
        .first()
    )


def label_audit_latest() -> LabelAudit | None:
    """The latest audit, in whatever state."""
    return LabelAudit.objects.order_by("-created_at", "-pk").first()


def label_audit_in_progress(*, now=None) -> LabelAudit | None:
    """A queued or running audit that is not stale (see AUDIT_STALE_AFTER), or None."""
    now = now or timezone.now()
    return (
        LabelAudit.objects.filter(
            status__in=[LabelAudit.Status.QUEUED, LabelAudit.Status.RUNNING], created_at__gte=now - AUDIT_STALE_AFTER
        )
        .order_by("-created_at", "-pk")
        .first()
    )


def review_id_latest() -> int:
    """The highest Review id so far (0 when none): one primary-key index seek."""
    return Review.objects.order_by("-pk").values_list("pk", flat=True).first() or 0


def review_id_at(*, moment) -> int:
    """The highest Review id created at or before ``moment``.

    Reads the reviews newer than ``moment`` backwards by primary key until the
    first older one: cheap when few reviews came since, as between two audits.
    """
    return Review.objects.filter(created_at__lte=moment).order_by("-pk").values_list("pk", flat=True).first() or 0


# --- what an audit scores ----------------------------------------------------------------------


@dataclass(frozen=True)
class AuditRow:
    image_id: int
    label_id: int
    given_by_id: int | None
    probabilities: list[float] | None  # the version's stored prediction, aligned with its class_names
    embedding: bytes | memoryview | None


def label_audit_candidates_count() -> int:
    """Images an audit looks at: a current label that a person gave or imported (auto-accepted ones are the model's own)."""
    return _candidate_images().count()


def _candidate_images() -> QuerySet[Image]:
    return Image.objects.filter(final_label__isnull=False).exclude(label_source=Review.Source.AUTO)


def label_audit_trained_image_ids(*, model_version: ModelVersion) -> set[int]:
    """The images ``model_version`` learned from (its retraining's reviewed labels)."""
    through = ModelVersion.trained_images.through
    return set(through.objects.filter(modelversion_id=model_version.pk).values_list("image_id", flat=True))


def label_audit_rows(*, model_version: ModelVersion, with_embeddings: bool) -> Iterator[AuditRow]:
    """Each candidate image that has a prediction of ``model_version``, with its label and that prediction.

    One query, streamed (``iterator``): no ORDER BY, which would sort every row, and
    no chunking by LIMIT, which on SQLite re-scans the version's predictions per chunk.
    """
    fields = ["image_id", "image__final_label_id", "image__reviewed_by_id", "probabilities"]
    if with_embeddings:
        fields.append("embedding")
    predictions = (
        Prediction.objects.filter(model_version=model_version, image__final_label__isnull=False)
        .exclude(image__label_source=Review.Source.AUTO)
        .order_by()
        .values_list(*fields)
    )
    for values in predictions.iterator(chunk_size=_READ_CHUNK):
        yield AuditRow(
            image_id=values[0],
            label_id=values[1],
            given_by_id=values[2],
            probabilities=values[3],
            embedding=values[4] if with_embeddings else None,
        )


# --- results -----------------------------------------------------------------------------------


def label_suspicions_flagged(*, audit: LabelAudit) -> QuerySet[LabelSuspicion]:
    """The audit's flagged labels, most doubtful first, with what a listing shows."""
    return (
        LabelSuspicion.objects.filter(audit=audit, is_issue=True)
        .select_related("image", "given_label", "suggested_label", "given_by")
        .order_by("score", "pk")
    )


def label_suspect_scores(*, audit: LabelAudit | None, image_ids: Collection[int]) -> dict[int, float]:
    """image id -> the audit's score of its label, for the images it scored."""
    if audit is None:
        return {}
    scores: dict[int, float] = {}
    for chunk in id_chunks(list(image_ids), IN_QUERY_MAX_IDS):
        scores.update(
            LabelSuspicion.objects.filter(audit=audit, image_id__in=chunk).values_list("image_id", "score")
        )
    return scores


# --- the review queue's "Suspected label errors" order -------------------------------------------


def label_suspects_open_image_q(*, audit: LabelAudit | None, prefix: str = "") -> Q:
    """Images the suspects order may serve: flagged by ``audit``, not re-checked since, not gold.

    With ``prefix`` "image__" it filters predictions. All conditions sit in one Q, so
    they apply to the same suspicion row (one join).
    """
    if audit is None:
        return Q(pk__in=[])
    return Q(
        **{
            f"{prefix}suspicions__audit": audit,
            f"{prefix}suspicions__is_issue": True,
            f"{prefix}final_label__isnull": False,
            f"{prefix}reviewed_at__lte": audit.created_at,
            # A Lead's reference label: reviewers never change it (the audit page still lists it).
            f"{prefix}is_gold": False,
        }
    )


def label_suspects_not_by_q(*, reviewer, prefix: str = "") -> Q:
    """Not to the reviewer who gave the label (an image without a known labeller goes to anyone)."""
    return ~Q(**{f"{prefix}reviewed_by": reviewer})


SUSPECTS_ORDER_BY = ("image__suspicions__score", "id")


def label_suspicions_by_image(*, audit: LabelAudit | None, image_ids: Collection[int]) -> dict[int, LabelSuspicion]:
    """image id -> the audit's suspicion of its label (given and suggested labels loaded)."""
    if audit is None or not image_ids:
        return {}
    rows = LabelSuspicion.objects.filter(audit=audit, image_id__in=list(image_ids)).select_related(
        "given_label", "suggested_label"
    )
    return {suspicion.image_id: suspicion for suspicion in rows}


def label_suspect_is_open(*, image_id: int) -> bool:
    """Whether the image is in the suspects order now (flagged by the latest finished audit, not re-checked)."""
    audit = label_audit_latest_finished()
    return Image.objects.filter(label_suspects_open_image_q(audit=audit), pk=image_id).exists()


def review_items_suspicion(*, items: list[dict], predictions: list[Prediction]) -> list[dict]:
    """Add "suspicion" (given and suggested label, score) to the review screen's items whose
    image is an open suspect of the latest finished audit; other items are left as they are."""
    audit = label_audit_latest_finished()
    if audit is None or not items:
        return items
    open_ids = set(
        Image.objects.filter(
            label_suspects_open_image_q(audit=audit), pk__in=[p.image_id for p in predictions]
        ).values_list("pk", flat=True)
    )
    suspicions = label_suspicions_by_image(audit=audit, image_ids=open_ids)
    for item in items:
        suspicion = suspicions.get(item["image"]["id"])
        if suspicion is not None:
            item["suspicion"] = {
                "audit": audit.pk,
                "given_label_id": suspicion.given_label_id,
                "given_label": suspicion.given_label.name,
                "suggested_label_id": suspicion.suggested_label_id,
                "suggested_label": suspicion.suggested_label.name,
                "score": suspicion.score,
            }
    return items


def label_suspect_score_subquery(*, audit: LabelAudit | None) -> Subquery:
    """For Image rows: the audit's score of the image's current label; NULL when the audit did not
    score it or the label changed since (an export's `suspect_score`; the (audit, image) index serves it)."""
    scores = LabelSuspicion.objects.filter(
        audit=audit.pk if audit else None, image=OuterRef("pk"), given_label=OuterRef("final_label")
    )
    return Subquery(scores.values("score")[:1])
