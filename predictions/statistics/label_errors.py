"""Label errors: out-of-sample class probabilities and cleanlab's ranking of the given labels.

Confident learning (Northcutt, Jiang & Chuang 2021; the ``cleanlab`` library) finds
labels that are probably wrong from *out-of-sample* predicted probabilities: a model
that learned a label agrees with it, right or wrong, so its probability says nothing
about that label. Two sources of such probabilities:

- a model version's stored prediction of an image it did not train on;
- for images it trained on, :func:`probe_cross_validated_probabilities`: a linear
  probe on the stored embeddings, k-fold cross-validated, so each image's
  probabilities come from a probe fitted on the *other* folds' labels only.

The probe is linear discriminant analysis (one Gaussian per class with a shared,
shrunk covariance; the same model as scikit-learn's
``LinearDiscriminantAnalysis(solver="lsqr", shrinkage=s)``, which the tests check
against). It was chosen over logistic regression for speed: its fit needs only each
fold's sums, per-class sums and Gram matrix, computed in one pass over the
embeddings, so the five fits cost one matrix product over all images plus five d x d
solves (100k x 512: 8 s on the shared 2-core development machine, where five lbfgs
logistic regressions took 20-65 s). The shrinkage towards a scaled identity is the Oracle Approximating
Shrinkage estimate of the pooled within-class covariance (Chen et al. 2010, as in
scikit-learn's ``oas``): large for a few hundred images in 512 dimensions, small
for a hundred thousand. Classes are the columns of the probability matrix; a class
without examples in a fold's training part gets probability 0 there.

:func:`label_issues_rank` hands the probabilities to cleanlab:
``rank.get_label_quality_scores`` (self-confidence: the probability of the given
label; low means doubtful) and ``filter.find_label_issues`` with
``filter_by="low_self_confidence"``: the lowest-scored images, as many as cleanlab's
confident-joint estimate of the number of label errors. The flagged set is thus a
prefix of the score ranking. cleanlab's default (``prune_by_noise_rate``) flagged the
model's own confident mistakes too: on the simulation below (92 % accurate model,
8 % of labels flipped) its precision was 0.73 against 0.87 for the low
self-confidence filter, at the same recall (0.89).

Numpy only at import (no Django, torch or scikit-learn); cleanlab is imported inside
the function that uses it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

K_FOLDS = 5
# cleanlab estimates each source's per-class thresholds from its own rows; a source
# with fewer rows, or with a single label, is ranked together with the other.
MIN_ROWS_PER_SOURCE = 100
# Rows of embeddings converted to float32 at a time (bounds the temporary copies).
_CHUNK_ROWS = 8192


def stratified_folds(labels: np.ndarray, *, folds: int = K_FOLDS, seed: int = 0) -> np.ndarray:
    """Fold number (0..folds-1) of each row: shuffled, then dealt out class by class."""
    labels = np.asarray(labels)
    order = np.random.default_rng(seed).permutation(len(labels))
    order = order[np.argsort(labels[order], kind="stable")]
    fold_of = np.empty(len(labels), dtype=np.int64)
    fold_of[order] = np.arange(len(labels)) % folds
    return fold_of


def oas_shrinkage(covariance: np.ndarray, *, samples: int) -> float:
    """Oracle Approximating Shrinkage of an empirical covariance towards mu * I (scikit-learn's formula)."""
    dim = covariance.shape[0]
    alpha = float(np.mean(covariance**2))
    mu = float(np.trace(covariance)) / dim
    denominator = (samples + 1) * (alpha - mu * mu / dim)
    return 1.0 if denominator <= 0 else min((alpha + mu * mu) / denominator, 1.0)


def probe_cross_validated_probabilities(
    embeddings: np.ndarray,
    labels: np.ndarray,
    *,
    num_classes: int,
    folds: int = K_FOLDS,
    seed: int = 0,
    shrinkage: float | None = None,
) -> np.ndarray:
    """(n, num_classes) out-of-fold probabilities of a shared-covariance Gaussian (LDA) probe.

    ``embeddings``: (n, d), any float dtype (float16 as stored); ``labels``: (n,) class
    indices in 0..num_classes-1, the labels the probe learns. Row i's probabilities
    come from the probe fitted on the rows of the other folds only. ``shrinkage``
    None: the OAS estimate of each fold's training part; a number fixes it.
    """
    labels = np.asarray(labels, dtype=np.int64)
    n, dim = embeddings.shape
    if n != len(labels):
        raise ValueError(f"{n} embeddings but {len(labels)} labels")
    fold_of = stratified_folds(labels, folds=folds, seed=seed)
    data = _centred_float32(embeddings)
    # Sufficient statistics per fold: a training part's are the totals minus its own.
    grams = np.zeros((folds, dim, dim))
    sums = np.zeros((folds, num_classes, dim))
    counts = np.zeros((folds, num_classes))
    for fold in range(folds):
        rows = np.flatnonzero(fold_of == fold)
        part = data[rows]
        grams[fold] = part.T @ part
        one_hot = np.zeros((len(rows), num_classes), dtype=np.float32)
        one_hot[np.arange(len(rows)), labels[rows]] = 1.0
        sums[fold] = one_hot.T @ part
        counts[fold] = one_hot.sum(axis=0)
    probabilities = np.zeros((n, num_classes))
    for fold in range(folds):
        rows = np.flatnonzero(fold_of == fold)
        if not len(rows):
            continue
        coef, intercept, present = _lda_fit(
            gram=grams.sum(axis=0) - grams[fold],
            sums=sums.sum(axis=0) - sums[fold],
            counts=counts.sum(axis=0) - counts[fold],
            shrinkage=shrinkage,
        )
        if not len(present):
            continue
        scores = data[rows] @ coef.T.astype(np.float32) + intercept
        probabilities[np.ix_(rows, present)] = _softmax(scores)
    return probabilities


def _centred_float32(embeddings: np.ndarray) -> np.ndarray:
    mean = np.zeros(embeddings.shape[1])
    for start in range(0, len(embeddings), _CHUNK_ROWS):
        mean += embeddings[start : start + _CHUNK_ROWS].astype(np.float64).sum(axis=0)
    mean = (mean / max(len(embeddings), 1)).astype(np.float32)
    data = np.empty(embeddings.shape, dtype=np.float32)
    for start in range(0, len(embeddings), _CHUNK_ROWS):
        data[start : start + _CHUNK_ROWS] = embeddings[start : start + _CHUNK_ROWS]
        data[start : start + _CHUNK_ROWS] -= mean
    return data


def _lda_fit(
    *, gram: np.ndarray, sums: np.ndarray, counts: np.ndarray, shrinkage: float | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(coef (p, d), intercept (p,), present class indices (p,)) from one training part's sums."""
    present = np.flatnonzero(counts > 0)
    total = counts.sum()
    if total < 2 or not len(present):
        return np.zeros((0, gram.shape[0])), np.zeros(0), np.zeros(0, dtype=np.int64)
    means = sums[present] / counts[present, None]
    # Within-class scatter over n: the priors-weighted class covariances scikit-learn pools.
    covariance = (gram - (means.T * counts[present]) @ means) / total
    amount = oas_shrinkage(covariance, samples=int(total)) if shrinkage is None else shrinkage
    mu = np.trace(covariance) / covariance.shape[0]
    covariance = (1.0 - amount) * covariance
    covariance.flat[:: covariance.shape[0] + 1] += amount * mu
    if mu <= 0:  # every embedding equal: nothing to tell the classes apart
        covariance.flat[:: covariance.shape[0] + 1] += 1.0
    try:
        coef = np.linalg.solve(covariance, means.T).T
    except np.linalg.LinAlgError:  # singular without shrinkage (shrinkage=0 and dead features)
        coef = np.linalg.lstsq(covariance, means.T, rcond=None)[0].T
    intercept = -0.5 * np.einsum("kd,kd->k", means, coef) + np.log(counts[present] / total)
    return coef, intercept, present


def _softmax(scores: np.ndarray) -> np.ndarray:
    scores = scores - scores.max(axis=1, keepdims=True)
    exp = np.exp(scores, dtype=np.float64)
    return exp / exp.sum(axis=1, keepdims=True)


@dataclass(frozen=True)
class Ranking:
    scores: np.ndarray  # (n,) cleanlab's label quality score: the probability of the given label
    is_issue: np.ndarray  # (n,) bool: flagged as a probable label error
    suggested: np.ndarray  # (n,) class index with the highest out-of-sample probability


def label_issues_rank(labels: np.ndarray, pred_probs: np.ndarray, *, sources: np.ndarray | None = None) -> Ranking:
    """Score every given label and flag the probable errors with cleanlab (see the module docstring).

    ``sources`` (n,) names where each row's probabilities come from (say 0 stored
    predictions, 1 the probe): cleanlab runs once per source of at least
    MIN_ROWS_PER_SOURCE rows and two labels, as its per-class thresholds assume one
    model's calibration; smaller sources are ranked together.
    """
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    labels = np.asarray(labels, dtype=np.int64)
    pred_probs = np.asarray(pred_probs, dtype=np.float64)
    n = len(labels)
    if pred_probs.shape[0] != n:
        raise ValueError(f"{n} labels but {pred_probs.shape[0]} probability rows")
    # Stored probabilities are rounded JSON numbers: rows summing to 1 again.
    totals = pred_probs.sum(axis=1, keepdims=True)
    pred_probs = np.divide(pred_probs, totals, out=np.zeros_like(pred_probs), where=totals > 0)
    scores = np.zeros(n)
    is_issue = np.zeros(n, dtype=bool)
    for rows in _ranking_groups(labels, sources):
        group_labels, group_probs = labels[rows], pred_probs[rows]
        scores[rows] = get_label_quality_scores(group_labels, group_probs, method="self_confidence")
        if len(np.unique(group_labels)) >= 2:
            # n_jobs=1: a django-q worker is a daemon process, which may not fork a pool.
            is_issue[rows] = find_label_issues(group_labels, group_probs, filter_by="low_self_confidence", n_jobs=1)
    return Ranking(scores=scores, is_issue=is_issue, suggested=pred_probs.argmax(axis=1) if n else labels.copy())


def _ranking_groups(labels: np.ndarray, sources: np.ndarray | None) -> list[np.ndarray]:
    everything = np.arange(len(labels))
    if sources is None or not len(labels):
        return [everything] if len(labels) else []
    groups = [np.flatnonzero(sources == source) for source in np.unique(sources)]
    if len(groups) > 1 and all(
        len(rows) >= MIN_ROWS_PER_SOURCE and len(np.unique(labels[rows])) >= 2 for rows in groups
    ):
        return groups
    return [everything]


# --- simulation (tests and bench/label_audit.py) ------------------------------------------


@dataclass(frozen=True)
class NoisyLabels:
    true: np.ndarray  # (n,) the true class
    given: np.ndarray  # (n,) the label reviewers gave: the true one, or flipped
    flipped: np.ndarray  # (n,) bool
    pred_probs: np.ndarray  # (n, k) a simulated model's out-of-sample probabilities


def simulate_noisy_labels(
    *,
    n: int,
    num_classes: int = 5,
    flip_rate: float = 0.08,
    seed: int = 0,
    difficulty: float = 3.0,
    difficulty_spread: float = 0.3,
) -> NoisyLabels:
    """Labels with ``flip_rate`` of them flipped uniformly to another class, and a model's probabilities.

    The model: each image has its own separation ``m`` (log-normal around
    ``difficulty`` with ``difficulty_spread``, most images easy, some hard); its logits
    are m * (z + m * onehot(true)) with z standard normal, whose softmax is exactly the
    posterior of the true class, so the model is calibrated: mean confidence equals
    accuracy. The defaults give about 92 % accuracy with 5 classes (90-94 % per draw
    of 1,000), the median confidence 0.996: peaked vectors, a tail of doubtful ones.
    """
    rng = np.random.default_rng(seed)
    true = rng.integers(0, num_classes, n)
    separation = difficulty * np.exp(rng.normal(0.0, difficulty_spread, n))[:, None]
    logits = rng.normal(0.0, 1.0, (n, num_classes))
    logits[np.arange(n), true] += separation[:, 0]
    pred_probs = _softmax(logits * separation)
    flipped = rng.random(n) < flip_rate
    given = true.copy()
    given[flipped] = (true[flipped] + rng.integers(1, num_classes, int(flipped.sum()))) % num_classes
    return NoisyLabels(true=true, given=given, flipped=flipped, pred_probs=pred_probs)


def simulate_embeddings(
    true: np.ndarray, *, num_classes: int, dim: int = 512, separation: float = 0.35, seed: int = 0
) -> np.ndarray:
    """(n, dim) float16 embeddings that carry the true class: a class mean plus noise, rectified like pooled ReLU features."""
    rng = np.random.default_rng(seed)
    means = rng.normal(0.0, separation, (num_classes, dim))
    noise = rng.normal(0.0, 1.0, (len(true), dim)).astype(np.float32)
    return np.maximum(noise + means[true].astype(np.float32) + 0.5, 0.0).astype(np.float16)


def precision_recall(flagged: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """Precision and recall of a flagged mask against the truly wrong labels (1.0 for an empty denominator)."""
    hits = int(np.sum(flagged & truth))
    flagged_count, truth_count = int(np.sum(flagged)), int(np.sum(truth))
    return (hits / flagged_count if flagged_count else 1.0, hits / truth_count if truth_count else 1.0)
