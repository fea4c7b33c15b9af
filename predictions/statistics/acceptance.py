"""Auto-accept threshold with a stated guarantee on the error it lets through.

The sample: a UNIFORMLY RANDOM audit sample of images predicted by one model version,
each reviewed by a person, giving (model confidence, was the model's label right).
Only reviews served by the "Audit (random)" order qualify. Reviews made in uncertainty
order (or any order that depends on the confidence, the label or the image) are a
biased sample: they over-represent hard images, and a bound computed from them is
not a bound on the population. Nothing here can detect such a sample; the caller
must not pass one.

The guarantee: with probability at least `confidence` over the draw of the audit
sample, the share of wrong labels among ALL the version's images whose confidence is
at or above the chosen threshold is at most `max_error`. It does not assume the
model's confidence is calibrated; confidence is only used to order the images.
"""

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

# A chart of the coverage/bound trade-off needs no more points than this.
CURVE_POINTS = 100


def binomial_upper_bound(*, errors: int, n: int, confidence: float) -> float:
    """Exact one-sided Clopper–Pearson upper confidence bound for an error rate.

    Method: the largest p for which seeing `errors` or fewer errors in `n` trials still
    has probability at least 1 - confidence, i.e. the `confidence` quantile of
    Beta(errors + 1, n - errors) (1.0 when errors == n, and when n == 0: no data).
    Assumptions: the n trials are independent with one common error probability, as
    for a uniformly random sample with replacement; for a sample without replacement
    from a finite population it errs on the safe side (the hypergeometric is less
    dispersed than the binomial, Hoeffding 1963), negligibly so when the sample is a
    small share of the population.
    Sample: `errors` wrong labels among `n` randomly audited images.
    """
    _check_probability("confidence", confidence)
    if n < 0 or errors < 0 or errors > n:
        raise ValueError(f"need 0 <= errors <= n, got errors={errors}, n={n}")
    return float(_upper_bounds(np.asarray([errors]), np.asarray([n]), confidence)[0])


def sample_size_required(*, errors: int, max_error: float, confidence: float) -> int:
    """The fewest audited images, `errors` of them wrong, whose upper bound is <= max_error.

    Method: the Clopper–Pearson bound falls as n grows for fixed errors, so the answer
    is found by doubling then bisection. With no errors it is ceil(ln(delta) / ln(1 -
    max_error)) with delta = 1 - confidence, about ln(1/delta)/max_error: 149 for 2% at
    95%, 299 for 1% at 95%; each extra error found raises it (236 with one error for 2%
    at 95%).
    """
    _check_probability("max_error", max_error)
    _check_probability("confidence", confidence)
    if errors < 0:
        raise ValueError(f"errors must be >= 0, got {errors}")
    return _size_required(int(errors), float(max_error), float(confidence))


@lru_cache(maxsize=1024)
def _size_required(errors: int, max_error: float, confidence: float) -> int:
    return int(_sizes_required(np.asarray([errors]), max_error, confidence)[0])


@dataclass(frozen=True)
class AcceptanceDecision:
    """What the chooser decided and what it rests on.

    threshold: accept images with confidence >= threshold; None when the sample
        supports no threshold (then see `needed`).
    bound: Clopper–Pearson upper bound on the error rate above the threshold (None
        with no threshold).
    sample_size: random audit reviews used (n); sample_above / errors_above: those at
        or above the threshold and how many of them the model got wrong.
    curve: (threshold, share of the sample at or above it, upper bound) per candidate,
        from the highest threshold down, at most about CURVE_POINTS of them, for a
        preview chart (the bound is the guarantee only down to the chosen threshold:
        below it the sequence of tests has stopped).
    needed: when threshold is None, an estimate of how many more random audit reviews
        would let a threshold pass if none of them found an error; None otherwise.
    """

    threshold: float | None
    bound: float | None
    sample_size: int
    sample_above: int
    errors_above: int
    max_error: float
    confidence: float
    curve: list[tuple[float, float, float]] = field(default_factory=list)
    needed: int | None = None

    @property
    def sample_coverage(self) -> float:
        """Share of the audit sample at or above the threshold: an estimate of the share accepted."""
        return self.sample_above / self.sample_size if self.sample_size else 0.0


def acceptance_threshold_choose(
    *,
    confidences: Sequence[float],
    correct: Sequence[bool],
    max_error: float,
    confidence: float,
    candidates: Sequence[float] | None = None,
) -> AcceptanceDecision:
    """The lowest confidence threshold whose accepted images have error <= max_error, with probability >= confidence.

    Method: Learn-then-Test (Angelopoulos et al., 2021) with fixed-sequence testing.
    Candidate thresholds are scanned from high to low. At each threshold t the null
    hypothesis "the error rate among the population's images with confidence >= t
    exceeds max_error" is rejected when the one-sided Clopper–Pearson upper bound at
    level `confidence` (see `binomial_upper_bound`) of the errors among the k sample
    items with confidence >= t is <= max_error. The scan stops at the first threshold
    not rejected and returns the last one rejected. Because each hypothesis is tested
    at level delta = 1 - confidence and the order is fixed before the labels are seen,
    the chance that any rejected threshold is wrong is at most delta, with no
    multiplicity correction (Bauer 1991; Hsu & Berger 1999).

    Candidates default to the sample's distinct confidences, high to low: the finest
    scan, the limit of a fine fixed grid (between two sample confidences the sample
    cannot tell thresholds apart, and this picks the higher, safer end). Candidates
    with so few sample items above them that even zero errors could not pass
    (k < sample_size_required(errors=0, ...)) are not tests but certain failures that
    would end the scan before it starts; they are skipped. Which ones they are depends
    only on the confidences, never on the labels, so the order is still fixed before
    the test. A consequence worth knowing: an error among the top ~ln(1/delta)/max_error
    sample items ends the scan at its first step.

    Assumptions: the audit sample is uniformly random among the version's images: ONLY
    reviews from the "Audit (random)" order qualify; reviews made in uncertainty order
    over-represent the least confident images and must never be passed here (module
    docstring). Labels given by reviewers are the truth, and the images to be accepted
    are the population the sample was drawn from (same version, same pool). Confidence
    need not be calibrated. The guarantee is checked by simulation against known truth
    in tests/predictions/statistics/test_acceptance.py (500 and 2,000 random audit
    samples: realised error above target in 2.4% and 4.0% of runs, against 5% allowed).

    Sample: confidences[i] is the model's confidence for audited image i, correct[i]
    whether its predicted label was what the reviewer chose. Nothing is accepted before
    about ln(1/delta)/max_error error-free reviews (149 for 2% at 95%); with 300 of them,
    on a simulated over-confident model, it accepts ~78% of what an oracle knowing every
    label would. When nothing passes, `needed` estimates how many more random reviews
    would let a threshold pass if they found no error; it is very large when an error
    sits among the most confident sample items, since every test then contains it.
    """
    _check_probability("max_error", max_error)
    _check_probability("confidence", confidence)
    scores = np.asarray(confidences, dtype=float).reshape(-1)
    right = np.asarray(correct, dtype=bool).reshape(-1)
    if scores.shape != right.shape:
        raise ValueError(f"confidences and correct differ in length: {scores.size} != {right.size}")
    if not np.all(np.isfinite(scores)):
        raise ValueError("confidences must be finite numbers")
    n = int(scores.size)
    thresholds, above, errors = _candidate_counts(scores, right, candidates)
    bounds = _upper_bounds(errors, above, confidence)
    first_possible = sample_size_required(errors=0, max_error=max_error, confidence=confidence)

    scanned = np.nonzero(above >= first_possible)[0]
    passed = bounds[scanned] <= max_error
    stops = np.nonzero(~passed)[0]
    run = int(stops[0]) if stops.size else int(passed.size)
    chosen = int(scanned[run - 1]) if run else None

    curve = _curve(thresholds, above, bounds, n, chosen)
    if chosen is None:
        return AcceptanceDecision(
            threshold=None,
            bound=None,
            sample_size=n,
            sample_above=0,
            errors_above=0,
            max_error=max_error,
            confidence=confidence,
            curve=curve,
            needed=_reviews_needed(above, errors, n, max_error, confidence, first_possible),
        )
    return AcceptanceDecision(
        threshold=float(thresholds[chosen]),
        bound=float(bounds[chosen]),
        sample_size=n,
        sample_above=int(above[chosen]),
        errors_above=int(errors[chosen]),
        max_error=max_error,
        confidence=confidence,
        curve=curve,
    )


def acceptance_thresholds_per_class(
    *,
    confidences: Sequence[float],
    correct: Sequence[bool],
    predicted: Sequence[Hashable],
    classes: Sequence[Hashable],
    max_error: float,
    confidence: float,
) -> dict[Hashable, AcceptanceDecision]:
    """One threshold per predicted class, all holding together with probability >= confidence.

    Method: `acceptance_threshold_choose` on each class's share of the sample at level
    1 - delta / len(classes) (Bonferroni), so with probability >= confidence every
    class's accepted images have error <= max_error at once, and so does their union
    (a weighted average of rates each <= max_error).
    Assumptions: as for `acceptance_threshold_choose`; `classes` is the version's full
    list of class names, fixed before the sample is seen (not the classes that happen to
    appear in it), else the correction would depend on the data.
    Sample: the same uniformly random audit sample, with each item's predicted label.
    The items predicted as one class are a uniformly random sample of the population's
    images predicted as that class, so each class needs its own ~ln(K/delta)/max_error
    items: with a few hundred audit reviews a single threshold usually accepts more;
    compare the two before offering per-class thresholds.
    """
    _check_probability("confidence", confidence)
    if not classes:
        raise ValueError("classes must name the version's classes")
    labels = np.asarray(predicted, dtype=object).reshape(-1)
    scores = np.asarray(confidences, dtype=float).reshape(-1)
    right = np.asarray(correct, dtype=bool).reshape(-1)
    if not (labels.shape == scores.shape == right.shape):
        raise ValueError("confidences, correct and predicted differ in length")
    level = 1.0 - (1.0 - confidence) / len(classes)
    decisions = {}
    for name in classes:
        mine = labels == name
        decisions[name] = acceptance_threshold_choose(
            confidences=scores[mine], correct=right[mine], max_error=max_error, confidence=level
        )
    return decisions


def _check_probability(name: str, value: float) -> None:
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name} must be strictly between 0 and 1, got {value}")


def _upper_bounds(errors: np.ndarray, n: np.ndarray, confidence: float) -> np.ndarray:
    errors = np.asarray(errors, dtype=float)
    n = np.asarray(n, dtype=float)
    bounds = np.ones_like(n)
    informative = errors < n
    # The Beta(errors + 1, n - errors) quantile; scipy.special's ufunc is scipy.stats.beta.ppf without its overhead.
    from scipy.special import betaincinv  # here: Django's start-up (the admin imports this) stays without scipy

    bounds[informative] = betaincinv(errors[informative] + 1.0, n[informative] - errors[informative], confidence)
    return bounds


def _sizes_required(errors: np.ndarray, max_error: float, confidence: float) -> np.ndarray:
    errors = np.asarray(errors, dtype=np.int64)
    low = errors.copy()  # bound is 1.0 at n == errors: never passes
    high = np.maximum(errors + 1, 1)
    while True:
        failing = _upper_bounds(errors, high, confidence) > max_error
        if not failing.any():
            break
        low = np.where(failing, high, low)
        high = np.where(failing, high * 2, high)
    while np.any(high - low > 1):
        middle = (low + high) // 2
        passing = _upper_bounds(errors, middle, confidence) <= max_error
        high = np.where(passing, middle, high)
        low = np.where(passing, low, middle)
    return high


def _candidate_counts(scores: np.ndarray, right: np.ndarray, candidates: Sequence[float] | None):
    """Thresholds (descending), sample items at or above each, and errors among them."""
    order = np.argsort(-scores, kind="stable")
    ranked = scores[order]
    cumulative_errors = np.cumsum(~right[order])
    if candidates is None:
        group_ends = np.nonzero(np.r_[ranked[1:] != ranked[:-1], True])[0] if ranked.size else np.array([], int)
        return ranked[group_ends], group_ends + 1, cumulative_errors[group_ends]
    thresholds = np.unique(np.asarray(candidates, dtype=float))[::-1]
    above = scores.size - np.searchsorted(np.sort(scores), thresholds, side="left")
    errors = np.where(above > 0, cumulative_errors[np.maximum(above - 1, 0)] if scores.size else 0, 0)
    return thresholds, above, errors


def _curve(thresholds, above, bounds, n: int, chosen: int | None) -> list[tuple[float, float, float]]:
    if not thresholds.size:
        return []
    keep = np.unique(np.linspace(0, thresholds.size - 1, min(CURVE_POINTS, thresholds.size)).round().astype(int))
    if chosen is not None:
        keep = np.union1d(keep, [chosen])
    return [(float(thresholds[i]), float(above[i]) / n if n else 0.0, float(bounds[i])) for i in keep]


def _reviews_needed(above, errors, n: int, max_error: float, confidence: float, first_possible: int) -> int:
    """More random, error-free reviews after which the scan's first test would pass.

    Estimate: new reviews land at or above each candidate in the proportion the sample
    does (k/n), so after m of them a candidate holds k * (1 + m/n) items and the same
    errors. The scan's first test is at the highest candidate holding first_possible
    items; it passes once its scaled count reaches what its errors require. With no
    errors in the sample this is first_possible - n (about ln(1/delta)/max_error - n).
    """
    if n == 0:
        return first_possible
    previous = np.r_[0, above[:-1]]  # sample items above the next-higher candidate
    occupied = above > 0
    if not occupied.any():
        return first_possible
    required = np.asarray([_size_required(int(e), max_error, confidence) for e in errors[occupied]])
    scale = np.maximum(1.0, required / above[occupied])
    # Candidate j is the first tested for scales in [first_possible/k_j, first_possible/k_prev).
    prior = previous[occupied]
    reachable = scale < np.where(prior > 0, first_possible / np.maximum(prior, 1), np.inf)
    best = float(np.min(scale[reachable]))
    return max(1, math.ceil(n * (best - 1.0) - 1e-9))
