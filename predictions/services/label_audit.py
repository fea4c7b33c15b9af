"""The label audit: find the current human labels that are probably wrong.

Which labels: every image with a current label that a person gave or imported
(``Image.final_label`` set, ``label_source`` not "auto": an auto-accepted label is
the model's own, so the model cannot audit it). Gold images are included; the
review queue leaves them to the Leads.

Out-of-sample probabilities, never from a model that learned the label
(predictions.statistics.label_errors explains both):

- the active version did not train on the image (not in
  ``ModelVersion.trained_images``): its stored ``Prediction.probabilities``, whose
  columns are the version's ``class_names``, mapped to Labels by name;
- it trained on the image: 5-fold cross-validated probabilities of a linear probe
  (LDA) on the version's stored embeddings. The probe learns from every candidate
  image with an embedding (trained on or not), and each image's probabilities come
  from the fit without its fold. Caveat: the embedding itself comes from a network
  that saw the label in training, which may have pulled it towards the given class;
  the probe removes the label's direct use, not that subtler memorisation.

Skipped, and counted in the audit's ``method`` line: no prediction of the active
version; trained on but no embedding; a label the version does not know; a
trained-on image whose label has fewer than 5 embeddings (too few to
cross-validate). Ranking: cleanlab, once per source of probabilities when both are
large enough (see label_issues_rank). Each scored image gets one LabelSuspicion
(given label, suggested label = highest out-of-sample probability, given_by = the
image's ``reviewed_by``, score, is_issue), written in batches of short transactions
with the audit's progress (done/flagged of total).

When: on demand (the admin's "Run audit now", the ``audit_labels`` command) and
after every settings.LABEL_AUDIT_EVERY_REVIEWS new reviews (0: never), see
:func:`label_audit_due_check`.
"""

from __future__ import annotations

import logging
from collections import Counter

import numpy as np
from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F
from django.utils import timezone
from django_q.tasks import async_task

from ml.features import EMBEDDING_DTYPE
from predictions.models import LabelAudit, LabelSuspicion, Review
from predictions.selectors.label_audit import (
    label_audit_candidates_count,
    label_audit_in_progress,
    label_audit_latest,
    label_audit_rows,
    label_audit_trained_image_ids,
    review_id_at,
    review_id_latest,
)
from predictions.selectors.versions import model_version_active
from predictions.services.labels import labels_ensure
from predictions.statistics.label_errors import K_FOLDS, label_issues_rank, probe_cross_validated_probabilities
from reviewtool.batching import id_chunks

logger = logging.getLogger(__name__)

TASK = "predictions.tasks.audit_labels"
WRITE_BATCH = 1000
# Audits whose every scored row is kept; older ones keep their flagged rows only
# (an audit every 500 reviews of 100k labels would otherwise add 100k rows each time).
KEEP_FULL_AUDITS = 3
SOURCE_PREDICTION, SOURCE_PROBE = 0, 1


class Reason:
    ON_DEMAND = "on demand"
    EVERY_N = "every N reviews"
    COMMAND = "command"


class Skip:
    NO_PREDICTION = "no prediction"
    NO_EMBEDDING = "trained on without embedding"
    UNKNOWN_LABEL = "label unknown to the model"
    RARE_LABEL = "too few embeddings of its label"


def label_audit_queue(*, user=None, reason: str = Reason.ON_DEMAND) -> LabelAudit:
    """Queue an audit in the cluster (after commit); an audit already queued or running is returned instead."""
    with transaction.atomic():
        running = label_audit_in_progress()
        if running is not None:
            return running
        audit = LabelAudit.objects.create(created_by=user, reason=reason, model_version=model_version_active())
        transaction.on_commit(lambda: async_task(TASK, audit.pk, task_name=f"label-audit-{audit.pk}"))
    return audit


def label_audit_run(*, audit_id: int) -> LabelAudit | None:
    """Run a queued audit: score every candidate label and record the suspicions.

    A finished (done or failed) audit is left as it is. A running one is started
    over (the task was delivered again because its worker died), its partial rows
    removed first. A failure is recorded on the audit and raised again for the
    task queue.
    """
    started = LabelAudit.objects.filter(
        pk=audit_id, status__in=[LabelAudit.Status.QUEUED, LabelAudit.Status.RUNNING]
    ).update(status=LabelAudit.Status.RUNNING, done=0, flagged=0, error="")
    audit = LabelAudit.objects.select_related("model_version").filter(pk=audit_id).first()
    if audit is None or not started:
        return audit
    try:
        _delete_suspicions(audit_ids=[audit.pk], flagged_too=True)
        _score_and_record(audit)
    except Exception as exc:
        LabelAudit.objects.filter(pk=audit.pk).update(
            status=LabelAudit.Status.FAILED, error=str(exc) or type(exc).__name__, finished_at=timezone.now()
        )
        raise
    LabelAudit.objects.filter(pk=audit.pk).update(status=LabelAudit.Status.DONE, finished_at=timezone.now())
    _prune_older_audits()
    audit.refresh_from_db()
    return audit


def label_audit_run_now(*, user=None, reason: str = Reason.COMMAND) -> LabelAudit:
    """Create and run an audit in this process (the management command)."""
    audit = LabelAudit.objects.create(created_by=user, reason=reason, model_version=model_version_active())
    return label_audit_run(audit_id=audit.pk)


def _score_and_record(audit: LabelAudit) -> None:
    version = audit.model_version or model_version_active()
    if version is None:
        raise ValidationError("There is no active model version to audit the labels with.")
    if audit.model_version_id != version.pk:
        LabelAudit.objects.filter(pk=audit.pk).update(model_version=version)
        audit.model_version = version
    total = label_audit_candidates_count()
    LabelAudit.objects.filter(pk=audit.pk).update(total=total)
    scored = _scored_labels(version=version, total=total)
    method = _method_line(scored)
    LabelAudit.objects.filter(pk=audit.pk).update(method=method[:200])
    logger.info("Label audit #%s: %s", audit.pk, method)
    _write_suspicions(audit, scored)
    LabelAudit.objects.filter(pk=audit.pk).update(done=total)


class _Scored:
    """The arrays of one audit: a row per scored image, plus what was skipped."""

    def __init__(self):
        self.image_ids: list[int] = []
        self.given_by: list[int | None] = []
        self.labels = np.zeros(0, dtype=np.int64)
        self.sources = np.zeros(0, dtype=np.int64)
        self.label_ids: list[int] = []  # column -> Label id
        self.ranking = None
        self.skipped: Counter = Counter()


def _scored_labels(*, version, total: int) -> _Scored:
    scored = _Scored()
    labels_by_name = {name: label.pk for name, label in labels_ensure(names=version.class_names).items()}
    column_of = {}
    for column, name in enumerate(version.class_names):
        column_of.setdefault(labels_by_name.get(name), column)
    column_of.pop(None, None)
    scored.label_ids = [labels_by_name[name] for name in version.class_names]
    num_classes = len(version.class_names)
    trained = label_audit_trained_image_ids(model_version=version)

    image_ids, given_by, columns, sources, probabilities, embeddings, has_embedding = [], [], [], [], [], [], []
    seen = 0
    for row in label_audit_rows(model_version=version, with_embeddings=bool(trained)):
        seen += 1
        column = column_of.get(row.label_id)
        if column is None:
            scored.skipped[Skip.UNKNOWN_LABEL] += 1
            continue
        usable = _embedding_or_none(row.embedding)
        if row.image_id in trained and usable is None:
            scored.skipped[Skip.NO_EMBEDDING] += 1
            continue
        stored = row.probabilities if isinstance(row.probabilities, list) else None
        if row.image_id not in trained and (stored is None or len(stored) != num_classes):
            scored.skipped[Skip.NO_PREDICTION] += 1
            continue
        image_ids.append(row.image_id)
        given_by.append(row.given_by_id)
        columns.append(column)
        sources.append(SOURCE_PROBE if row.image_id in trained else SOURCE_PREDICTION)
        probabilities.append(stored if row.image_id not in trained else None)
        embeddings.append(usable)
        has_embedding.append(usable is not None)
    scored.skipped[Skip.NO_PREDICTION] += max(total - seen, 0)

    labels = np.asarray(columns, dtype=np.int64)
    sources = np.asarray(sources, dtype=np.int64)
    pred_probs = np.zeros((len(labels), num_classes))
    from_model = np.flatnonzero(sources == SOURCE_PREDICTION)
    if len(from_model):
        pred_probs[from_model] = np.asarray([probabilities[i] for i in from_model], dtype=np.float64)
    keep = np.ones(len(labels), dtype=bool)
    probed = np.flatnonzero(sources == SOURCE_PROBE)
    if len(probed):
        keep = _probe_into(pred_probs, keep, labels=labels, sources=sources, embeddings=embeddings,
                           has_embedding=np.asarray(has_embedding), num_classes=num_classes, skipped=scored.skipped)  # fmt: skip
    kept = np.flatnonzero(keep)
    scored.image_ids = [image_ids[i] for i in kept]
    scored.given_by = [given_by[i] for i in kept]
    scored.labels, scored.sources = labels[kept], sources[kept]
    scored.ranking = label_issues_rank(scored.labels, pred_probs[kept], sources=scored.sources)
    return scored


def _embedding_or_none(blob) -> np.ndarray | None:
    if blob is None or not len(blob) or len(blob) % EMBEDDING_DTYPE.itemsize:
        return None
    vector = np.frombuffer(blob, dtype=EMBEDDING_DTYPE)
    return vector if np.isfinite(vector).all() else None


def _probe_into(pred_probs, keep, *, labels, sources, embeddings, has_embedding, num_classes, skipped) -> np.ndarray:
    """Fill the trained-on rows of ``pred_probs`` with the probe's out-of-fold probabilities."""
    rows = np.flatnonzero(has_embedding)
    sizes = Counter(len(embeddings[i]) for i in rows)
    dim = sizes.most_common(1)[0][0]
    # A version's embeddings all have one size; an odd one out cannot join the matrix.
    rows = np.asarray([i for i in rows if len(embeddings[i]) == dim], dtype=np.int64)
    matrix = np.stack([embeddings[i] for i in rows])
    probe_labels = labels[rows]
    probabilities = probe_cross_validated_probabilities(matrix, probe_labels, num_classes=num_classes)
    examples = np.bincount(probe_labels, minlength=num_classes)
    probe_row = {int(i): position for position, i in enumerate(rows)}
    for i in np.flatnonzero(sources == SOURCE_PROBE):
        position = probe_row.get(int(i))
        if position is None:
            keep[i] = False
            skipped[Skip.NO_EMBEDDING] += 1
        elif examples[labels[i]] < K_FOLDS:
            keep[i] = False
            skipped[Skip.RARE_LABEL] += 1
        else:
            pred_probs[i] = probabilities[position]
    return keep


def _method_line(scored: _Scored) -> str:
    counts = Counter(int(source) for source in scored.sources)
    text = (
        f"cleanlab low self-confidence; {counts[SOURCE_PREDICTION]:,} stored predictions, "
        f"{counts[SOURCE_PROBE]:,} {K_FOLDS}-fold embedding probe"
    )
    skipped = sum(scored.skipped.values())
    if skipped:
        text += f"; skipped {skipped:,}: " + ", ".join(f"{n:,} {why}" for why, n in scored.skipped.most_common())
    return text


def _write_suspicions(audit: LabelAudit, scored: _Scored) -> None:
    ranking = scored.ranking
    for chunk in id_chunks(range(len(scored.image_ids)), WRITE_BATCH):
        rows = [
            LabelSuspicion(
                audit=audit,
                image_id=scored.image_ids[i],
                given_label_id=scored.label_ids[scored.labels[i]],
                suggested_label_id=scored.label_ids[ranking.suggested[i]],
                given_by_id=scored.given_by[i],
                score=float(ranking.scores[i]),
                is_issue=bool(ranking.is_issue[i]),
            )
            for i in chunk
        ]
        flagged = sum(row.is_issue for row in rows)
        with transaction.atomic():
            LabelSuspicion.objects.bulk_create(rows)
            LabelAudit.objects.filter(pk=audit.pk).update(done=F("done") + len(rows), flagged=F("flagged") + flagged)


def _delete_suspicions(*, audit_ids: list[int], flagged_too: bool) -> None:
    rows = LabelSuspicion.objects.filter(audit_id__in=audit_ids)
    if not flagged_too:
        rows = rows.filter(is_issue=False)
    while ids := list(rows.values_list("pk", flat=True)[:WRITE_BATCH]):
        with transaction.atomic():
            LabelSuspicion.objects.filter(pk__in=ids).delete()


def _prune_older_audits() -> None:
    finished = LabelAudit.objects.filter(status=LabelAudit.Status.DONE).order_by("-created_at", "-pk")
    older = list(finished.values_list("pk", flat=True)[KEEP_FULL_AUDITS:])
    if older:
        _delete_suspicions(audit_ids=older, flagged_too=False)


# --- the automatic audit ---------------------------------------------------------------------

_NEXT_CHECK_KEY = "label-audit-next-review-id"
_NEXT_CHECK_SECONDS = 600


def label_audit_due_check(*, review_id: int | None = None) -> LabelAudit | None:
    """Queue an audit when settings.LABEL_AUDIT_EVERY_REVIEWS reviews were written since the last one.

    Called on commit wherever reviews are written (review_submit, label_operation_apply).
    "Reviews since" counts Review rows (every source, undone ones too) newer than the
    highest id when the latest audit was queued. Cheap per decision: the review id the
    threshold can fall on first is kept in the process's cache (10 minutes), so a
    decision below it costs no query at all; reaching it costs three small ones (the
    latest audit; its starting id, read backwards from the newest review; the count). While an audit is queued or running, the check waits a tenth of N
    reviews more. Two processes crossing at once queue one audit on SQLite (its
    writes are serialised); on PostgreSQL, rarely, two.
    """
    every = settings.LABEL_AUDIT_EVERY_REVIEWS
    if every <= 0:
        return None
    if review_id is None:
        review_id = review_id_latest()
    next_at = cache.get(_NEXT_CHECK_KEY)
    if next_at is not None and review_id < next_at:
        return None
    latest = label_audit_latest()
    baseline = review_id_at(moment=latest.created_at) if latest is not None else 0
    next_at = baseline + every
    audit = None
    if review_id >= next_at:
        # Ids only bound the count from above (a sequence skips numbers, and on PostgreSQL
        # need not start at 1): count the rows, and wait for exactly the rest.
        since = Review.objects.filter(pk__gt=baseline, pk__lte=review_id).count()
        if since < every:
            next_at = review_id + (every - since)
        elif label_audit_in_progress() is not None:
            next_at = review_id + max(every // 10, 1)
        else:
            audit = label_audit_queue(reason=Reason.EVERY_N)
            next_at = review_id + every
    cache.set(_NEXT_CHECK_KEY, next_at, _NEXT_CHECK_SECONDS)
    return audit


def label_audit_due_check_forget() -> None:
    """Forget the cached threshold (tests; a settings change)."""
    cache.delete(_NEXT_CHECK_KEY)
