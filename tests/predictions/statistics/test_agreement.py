"""Reviewer quality statistics: textbook values, library cross-checks, and simulated
reviewers whose true error rates are known."""

import math

import numpy as np
import pytest
from scipy.stats import binom, binomtest

from predictions.statistics.agreement import (
    cohen_kappa,
    krippendorff_alpha_nominal,
    krippendorff_alpha_per_class,
    proportion_interval,
)

CLASSES = np.array(["bird", "cat", "dog", "fox", "owl"])


def reviewer_labels(rng, truth: np.ndarray, error_rate: float) -> np.ndarray:
    """A reviewer who is wrong with probability error_rate, then picks a wrong class uniformly."""
    index = np.searchsorted(CLASSES, truth)
    wrong = rng.random(truth.size) < error_rate
    shift = rng.integers(1, CLASSES.size, truth.size)
    return CLASSES[np.where(wrong, (index + shift) % CLASSES.size, index)]


# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", section C: four
# observers, twelve units, nominal values, missing data (None). Published alpha = 0.743.
KRIPPENDORFF_2011_C = {
    "A": [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
    "B": [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
    "C": [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
    "D": [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
}


def by_unit(observers: dict[str, list]) -> dict[int, list]:
    return {unit: [values[unit] for values in observers.values()] for unit in range(len(next(iter(observers.values()))))}


def test_alpha_reproduces_krippendorff_2011_nominal_example():
    alpha = krippendorff_alpha_nominal(by_unit(KRIPPENDORFF_2011_C))
    assert round(alpha, 3) == 0.743
    # By hand from the paper's coincidence matrix: n = 40 pairable values (unit 12 has one),
    # o_cc = (7, 10, 8, 4, 3), n_c = (9, 13, 10, 5, 3);
    # alpha = ((n-1) sum o_cc - sum n_c(n_c-1)) / (n(n-1) - sum n_c(n_c-1)) = 904 / 1216.
    same_by_chance = sum(n_c * (n_c - 1) for n_c in (9, 13, 10, 5, 3))
    assert alpha == pytest.approx((39 * 32 - same_by_chance) / (40 * 39 - same_by_chance))
    assert alpha == pytest.approx(904 / 1216)


def test_alpha_reproduces_krippendorff_2011_binary_example():
    # Section A: two observers, ten units, binary values; published alpha = 0.095.
    mary = [0, 1, 0, 0, 0, 0, 0, 0, 1, 0]
    dave = [1, 1, 1, 0, 0, 1, 0, 0, 0, 0]
    alpha = krippendorff_alpha_nominal({unit: [m, d] for unit, (m, d) in enumerate(zip(mary, dave))})
    assert round(alpha, 3) == 0.095
    assert alpha == pytest.approx(1 - 19 * 8 / (2 * 14 * 6))


def test_alpha_for_two_raters_is_scotts_pi_with_the_small_sample_correction():
    rng = np.random.default_rng(5)
    truth = rng.choice(CLASSES, 300)
    a, b = reviewer_labels(rng, truth, 0.2), reviewer_labels(rng, truth, 0.3)
    p_o = float(np.mean(a == b))
    pooled = np.concatenate([a, b])
    p_e = sum(float(np.mean(pooled == c)) ** 2 for c in CLASSES)
    scott_pi = (p_o - p_e) / (1 - p_e)
    n = pooled.size
    expected = 1 - (n - 1) / n * (1 - scott_pi)
    assert krippendorff_alpha_nominal({i: [x, y] for i, (x, y) in enumerate(zip(a, b))}) == pytest.approx(expected)


def test_alpha_ignores_lone_ratings_and_missing_values_and_is_label_blind():
    units = by_unit(KRIPPENDORFF_2011_C)
    base = krippendorff_alpha_nominal(units)
    assert krippendorff_alpha_nominal({**units, "lone": ["x"], "empty": [None, None]}) == pytest.approx(base)
    renamed = {unit: [None if v is None else f"class-{v}" for v in values] for unit, values in units.items()}
    assert krippendorff_alpha_nominal(renamed) == pytest.approx(base)


def test_alpha_degenerate_cases_are_nan():
    assert math.isnan(krippendorff_alpha_nominal({}))
    assert math.isnan(krippendorff_alpha_nominal({1: ["cat"], 2: ["dog", None]}))
    assert math.isnan(krippendorff_alpha_nominal({1: ["cat", "cat"], 2: ["cat", "cat", "cat"]}))
    assert krippendorff_alpha_nominal({1: ["cat", "cat"], 2: ["dog", "dog"]}) == 1.0


def test_alpha_per_class_with_two_classes_equals_the_overall_alpha():
    mary = [0, 1, 0, 0, 0, 0, 0, 0, 1, 0]
    dave = [1, 1, 1, 0, 0, 1, 0, 0, 0, 0]
    units = {unit: [m, d] for unit, (m, d) in enumerate(zip(mary, dave))}
    per_class = krippendorff_alpha_per_class(units)
    assert set(per_class) == {0, 1}
    assert per_class[0] == pytest.approx(krippendorff_alpha_nominal(units))
    assert per_class[1] == pytest.approx(krippendorff_alpha_nominal(units))


def test_alpha_per_class_finds_the_class_reviewers_confuse():
    """Three reviewers per image; one of them calls most foxes dogs. Fox and dog lose
    reliability, the other classes keep it (fixed seed; margins are many standard errors)."""
    rng = np.random.default_rng(8)
    truth = rng.choice(CLASSES, 1500)
    careful = [reviewer_labels(rng, truth, 0.02) for _ in range(2)]
    confuser = reviewer_labels(rng, truth, 0.02)
    confuser[(truth == "fox") & (rng.random(truth.size) < 0.7)] = "dog"
    units = {i: [careful[0][i], careful[1][i], confuser[i]] for i in range(truth.size)}
    per_class = krippendorff_alpha_per_class(units)
    for clear in ("bird", "cat", "owl"):
        assert per_class[clear] > 0.9
    assert per_class["fox"] < 0.8 and per_class["dog"] < 0.85
    assert min(per_class["bird"], per_class["cat"], per_class["owl"]) > krippendorff_alpha_nominal(units)


def test_kappa_by_hand_and_its_degenerate_cases():
    # p_o = 0.7; p_e = 0.5*0.6 + 0.5*0.4 = 0.5; kappa = 0.4.
    a = ["y"] * 5 + ["n"] * 5
    b = ["y", "y", "y", "y", "n", "y", "y", "n", "n", "n"]
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    assert cohen_kappa(a, a) == 1.0
    assert math.isnan(cohen_kappa([], []))
    assert math.isnan(cohen_kappa(["cat"] * 4, ["cat"] * 4))  # one category, no variation: undefined
    assert cohen_kappa(["cat"] * 4, ["dog"] * 4) == 0.0  # p_e = 0: never agreeing is chance level here
    with pytest.raises(ValueError):
        cohen_kappa(["cat"], ["cat", "dog"])


def test_kappa_matches_scikit_learn():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(9)
    for error_a, error_b, size in [(0.1, 0.3, 50), (0.5, 0.5, 400), (0.02, 0.9, 200), (0.0, 0.0, 30)]:
        truth = rng.choice(CLASSES, size)
        a, b = reviewer_labels(rng, truth, error_a), reviewer_labels(rng, truth, error_b)
        assert cohen_kappa(list(a), list(b)) == pytest.approx(sklearn_metrics.cohen_kappa_score(a, b))


def test_kappa_of_random_reviewers_is_near_zero_and_of_careful_ones_near_one():
    """2,000 items. Random reviewers: kappa's standard error is ~0.011, so |kappa| < 0.1 is
    ~9 s.e. (failure rate < 1e-15). Careful ones (1% error each): expected kappa ~0.975,
    s.e. ~0.004, so > 0.95 is ~6 s.e. Fixed seed: deterministic."""
    rng = np.random.default_rng(10)
    truth = rng.choice(CLASSES, 2000)
    random_a, random_b = rng.choice(CLASSES, 2000), rng.choice(CLASSES, 2000)
    assert abs(cohen_kappa(list(random_a), list(random_b))) < 0.1
    careful_a, careful_b = reviewer_labels(rng, truth, 0.01), reviewer_labels(rng, truth, 0.01)
    assert cohen_kappa(list(careful_a), list(careful_b)) > 0.95
    # The same two pairs as overlap data for alpha, with a third rating on a third of the items.
    third = np.where(rng.random(2000) < 1 / 3, reviewer_labels(rng, truth, 0.01), None)
    assert abs(krippendorff_alpha_nominal({i: [random_a[i], random_b[i]] for i in range(2000)})) < 0.1
    assert krippendorff_alpha_nominal({i: [careful_a[i], careful_b[i], third[i]] for i in range(2000)}) > 0.95


def test_proportion_interval_matches_scipy():
    for successes, n in [(49, 50), (0, 10), (10, 10), (30, 60), (57, 60)]:
        for confidence in (0.9, 0.95, 0.99):
            exact = binomtest(successes, n).proportion_ci(confidence_level=confidence, method="exact")
            wilson = binomtest(successes, n).proportion_ci(confidence_level=confidence, method="wilson")
            assert proportion_interval(successes=successes, n=n, confidence=confidence) == pytest.approx(
                (exact.low, exact.high)
            )
            assert proportion_interval(
                successes=successes, n=n, confidence=confidence, method="wilson"
            ) == pytest.approx((wilson.low, wilson.high))
    assert proportion_interval(successes=0, n=0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        proportion_interval(successes=3, n=2)


def exact_coverage(p: float, n: int) -> float:
    """P(the interval from Bin(n, p) successes contains p): the interval's true coverage."""
    return sum(
        binom.pmf(k, n, p) for k in range(n + 1) if proportion_interval(successes=k, n=n)[0] <= p <= proportion_interval(successes=k, n=n)[1]
    )


@pytest.mark.parametrize("error_rate", [0.02, 0.10, 0.25])
def test_gold_accuracy_interval_covers_the_true_accuracy(error_rate):
    """300 repetitions of a reviewer labelling 60 gold images with a known error rate
    (wrong labels uniform over the other classes). The 95% exact interval must cover the
    true accuracy in >= 93% of them. Its true coverage here is >= 96.3% for each rate
    (computed below), so each case fails with probability < 2e-3 (asserted below).
    Fixed seed: deterministic."""
    rng = np.random.default_rng(int(error_rate * 1000))
    accuracy, gold, repetitions = 1.0 - error_rate, 60, 300
    coverage = exact_coverage(accuracy, gold)
    assert coverage >= 0.95
    assert binom.cdf(math.ceil(0.93 * repetitions) - 1, repetitions, coverage) < 2e-3

    covered = 0
    for _ in range(repetitions):
        truth = rng.choice(CLASSES, gold)
        right = int(np.sum(reviewer_labels(rng, truth, error_rate) == truth))
        low, high = proportion_interval(successes=right, n=gold)
        covered += low <= accuracy <= high
    assert covered / repetitions >= 0.93
