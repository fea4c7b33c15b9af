"""The auto-accept threshold: its bound, its sample-size arithmetic and, by simulation
against known truth, its promise."""

import math

import numpy as np
import pytest
from scipy.stats import binom, binomtest

from predictions.statistics.acceptance import (
    acceptance_threshold_choose,
    acceptance_thresholds_per_class,
    binomial_upper_bound,
    sample_size_required,
)
from predictions.statistics.simulation import acceptance_simulate, oracle_accepted, population_miscalibrated


def slack(probability: float, runs: int) -> float:
    """Three binomial standard deviations of an observed share of `runs` runs."""
    return 3.0 * math.sqrt(probability * (1.0 - probability) / runs)


def test_upper_bound_at_the_edge_of_two_percent():
    assert binomial_upper_bound(errors=0, n=149, confidence=0.95) <= 0.02
    assert binomial_upper_bound(errors=0, n=148, confidence=0.95) > 0.02
    # With no errors the bound has a closed form: 1 - delta ** (1 / n).
    assert binomial_upper_bound(errors=0, n=149, confidence=0.95) == pytest.approx(1 - 0.05 ** (1 / 149))


@pytest.mark.parametrize("confidence", [0.8, 0.9, 0.95, 0.99])
@pytest.mark.parametrize(("errors", "n"), [(0, 1), (0, 30), (1, 30), (3, 50), (7, 300), (29, 30), (120, 500)])
def test_upper_bound_matches_scipy_exact_interval(errors, n, confidence):
    # A two-sided exact interval at level 1 - 2*delta has the one-sided bound at 1 - delta as its top.
    two_sided = binomtest(errors, n).proportion_ci(confidence_level=1 - 2 * (1 - confidence), method="exact")
    assert binomial_upper_bound(errors=errors, n=n, confidence=confidence) == pytest.approx(two_sided.high, rel=1e-9)


def test_upper_bound_without_information_is_one():
    assert binomial_upper_bound(errors=5, n=5, confidence=0.95) == 1.0
    assert binomial_upper_bound(errors=0, n=0, confidence=0.95) == 1.0


@pytest.mark.parametrize("kwargs", [dict(errors=3, n=2), dict(errors=-1, n=2), dict(errors=0, n=10, confidence=1.0)])
def test_upper_bound_refuses_nonsense(kwargs):
    with pytest.raises(ValueError):
        binomial_upper_bound(**{"confidence": 0.95, **kwargs})


def test_sample_size_required_is_the_smallest_that_passes():
    assert sample_size_required(errors=0, max_error=0.02, confidence=0.95) == 149  # ln(20)/0.02 ~ 150
    assert sample_size_required(errors=0, max_error=0.01, confidence=0.95) == 299
    assert sample_size_required(errors=0, max_error=0.02, confidence=0.95) == math.ceil(math.log(0.05) / math.log(0.98))
    for errors in range(6):
        for max_error, confidence in [(0.02, 0.95), (0.05, 0.9), (0.01, 0.99)]:
            n = sample_size_required(errors=errors, max_error=max_error, confidence=confidence)
            assert binomial_upper_bound(errors=errors, n=n, confidence=confidence) <= max_error
            assert binomial_upper_bound(errors=errors, n=n - 1, confidence=confidence) > max_error


def test_clean_sample_of_149_accepts_everything_and_148_nothing():
    rng = np.random.default_rng(1)
    scores = rng.uniform(0.5, 1.0, 149)
    decision = acceptance_threshold_choose(confidences=scores, correct=[True] * 149, max_error=0.02, confidence=0.95)
    assert decision.threshold == scores.min()
    assert (decision.sample_size, decision.sample_above, decision.errors_above) == (149, 149, 0)
    assert decision.bound == pytest.approx(binomial_upper_bound(errors=0, n=149, confidence=0.95))
    assert decision.needed is None

    short = acceptance_threshold_choose(confidences=scores[:148], correct=[True] * 148, max_error=0.02, confidence=0.95)
    assert short.threshold is None and short.bound is None
    assert short.needed == 1


def test_scan_stops_at_the_first_failure_and_returns_the_last_pass():
    # 400 items, confidence falling with rank; one error at rank 200 (1-based), everything wrong below 300.
    scores = np.linspace(0.999, 0.5, 400)
    right = np.ones(400, bool)
    right[199] = False
    right[300:] = False
    decision = acceptance_threshold_choose(confidences=scores, correct=right, max_error=0.02, confidence=0.95)
    # Ranks 149..199 pass with 0 errors; rank 200 holds 1 error and needs 236 items: the scan stops
    # there, although ranks 236..299 would pass again (taking those would be multiple testing).
    assert decision.sample_above == 199
    assert decision.threshold == pytest.approx(scores[198])
    assert decision.errors_above == 0


def test_candidates_too_thin_to_pass_do_not_end_the_scan():
    # Without skipping, the top candidate (1 item, bound 0.95) would fail and nothing would be accepted.
    scores = np.linspace(0.99, 0.6, 200)
    decision = acceptance_threshold_choose(confidences=scores, correct=[True] * 200, max_error=0.02, confidence=0.95)
    assert decision.sample_above == 200


def test_ties_are_accepted_or_refused_together():
    scores = [0.99] * 100 + [0.9] * 100
    decision = acceptance_threshold_choose(confidences=scores, correct=[True] * 200, max_error=0.02, confidence=0.95)
    assert decision.threshold == 0.9 and decision.sample_above == 200


def test_explicit_candidates_count_the_sample_above_each():
    scores = np.linspace(0.999, 0.5, 300)
    decision = acceptance_threshold_choose(
        confidences=scores, correct=[True] * 300, max_error=0.02, confidence=0.95, candidates=[0.95, 0.8, 0.7, 0.6, 0.4]
    )
    assert decision.threshold == 0.4 and decision.sample_above == 300
    assert [round(point[1], 6) for point in decision.curve] == [
        round(float((scores >= t).mean()), 6) for t in (0.95, 0.8, 0.7, 0.6, 0.4)
    ]


def test_curve_is_a_thinned_descending_preview_that_contains_the_choice():
    rng = np.random.default_rng(2)
    scores = rng.random(1000)
    right = rng.random(1000) < scores**0.02
    decision = acceptance_threshold_choose(confidences=scores, correct=right, max_error=0.05, confidence=0.95)
    thresholds = [point[0] for point in decision.curve]
    assert len(decision.curve) <= 101
    assert thresholds == sorted(thresholds, reverse=True)
    assert decision.threshold in thresholds
    coverages = [point[1] for point in decision.curve]
    assert coverages == sorted(coverages) and coverages[-1] == 1.0


def test_needed_with_no_sample_and_with_a_clean_small_one():
    assert acceptance_threshold_choose(confidences=[], correct=[], max_error=0.02, confidence=0.95).needed == 149
    clean = acceptance_threshold_choose(confidences=[0.9] * 100, correct=[True] * 100, max_error=0.02, confidence=0.95)
    assert clean.needed == 49


def test_needed_counts_random_reviews_that_land_above_an_error():
    """An error at rank 100 of 120: only a clean region above it can pass, and new random
    reviews land there at 99/120; adding that many clean ones spread like the sample passes."""
    scores = np.linspace(0.999, 0.7, 120)
    right = np.ones(120, bool)
    right[99] = False
    decision = acceptance_threshold_choose(confidences=scores, correct=right, max_error=0.02, confidence=0.95)
    assert decision.threshold is None
    assert decision.needed == math.ceil(120 * (149 / 99 - 1))  # 61

    more = np.quantile(scores, (np.arange(decision.needed) + 0.5) / decision.needed)
    grown = acceptance_threshold_choose(
        confidences=np.r_[scores, more], correct=np.r_[right, np.ones(more.size, bool)], max_error=0.02, confidence=0.95
    )
    assert grown.threshold is not None and grown.threshold > scores[99]


def test_needed_is_large_when_the_most_confident_item_is_wrong():
    # Every test contains that error; only reviews more confident than it can ever pass.
    scores = np.linspace(0.999, 0.7, 200)
    right = np.ones(200, bool)
    right[0] = False
    decision = acceptance_threshold_choose(confidences=scores, correct=right, max_error=0.02, confidence=0.95)
    assert decision.threshold is None
    assert decision.needed > 100 * 149


def test_refuses_mismatched_or_invalid_input():
    with pytest.raises(ValueError):
        acceptance_threshold_choose(confidences=[0.9, 0.8], correct=[True], max_error=0.02, confidence=0.95)
    with pytest.raises(ValueError):
        acceptance_threshold_choose(confidences=[0.9], correct=[True], max_error=0.0, confidence=0.95)
    with pytest.raises(ValueError):
        acceptance_threshold_choose(confidences=[float("nan")], correct=[True], max_error=0.02, confidence=0.95)


def test_guarantee_on_a_miscalibrated_model():
    """The issue's benchmark: 500 random audit samples of 300 from 20,000 images whose
    accuracy is confidence squared, target 2% at 95%.

    Asserts the realised error among accepted images exceeds 2% in at most 5% + 3 sd
    (0.05 + 0.029) of runs: if the true exceedance probability were exactly 5% this fails
    with probability P(Bin(500, 0.05) > 39) ~ 0.2%; the chooser's own rate here is lower
    (measured 2.4%). Also asserts usefulness: mean accepted >= 0.5 of the oracle's
    (measured 0.78; the issue's benchmark asks 0.7). Fixed seeds: deterministic.
    """
    confidences, correct = population_miscalibrated(size=20_000, seed=0)
    assert 0.10 < float(np.mean(~correct)) < 0.15  # raw confidence overstates accuracy
    result = acceptance_simulate(
        confidences=confidences, correct=correct, sample_size=300, runs=500, max_error=0.02, confidence=0.95, seed=100
    )
    assert result.exceedance_rate <= 0.05 + slack(0.05, 500)
    assert result.accepted_ratio >= 0.5
    assert result.oracle_accepted > 0.7 * confidences.size

    # The population is one where a naive cut-off breaks the promise: the same scan with
    # a 50% "bound" (about the plug-in error rate) exceeds the target far more often.
    naive = acceptance_simulate(
        confidences=confidences, correct=correct, sample_size=300, runs=500, max_error=0.02, confidence=0.5, seed=100
    )
    assert naive.exceedance_rate > 0.2


def test_guarantee_where_it_is_tightest():
    """Confidence carries no information and every threshold's error is ~2.1%, just above
    the 2% target: whatever is accepted breaks the target, so the exceedance rate is the
    chance of accepting anything (~ (1 - 0.021) ** 149 ~ 4.2%), close to the 5% allowed.

    2,000 runs; asserts exceedance <= 5% + 3 sd (0.0646): at a true 5% the test fails with
    probability P(Bin(2000, 0.05) > 129) ~ 0.2%. A chooser at a 90% level breaks this bound
    (measured ~8%), so the check has teeth. Fixed seeds: deterministic.
    """
    rng = np.random.default_rng(7)
    size = 20_000
    confidences = rng.beta(5, 1, size)
    correct = np.ones(size, bool)
    correct[rng.choice(size, int(0.021 * size), replace=False)] = False
    assert oracle_accepted(confidences=confidences, correct=correct, max_error=0.02) < 0.5 * size

    result = acceptance_simulate(
        confidences=confidences, correct=correct, sample_size=300, runs=2000, max_error=0.02, confidence=0.95, seed=3
    )
    bound = 0.05 + slack(0.05, 2000)
    assert 0.02 < result.exceedance_rate <= bound
    weaker = acceptance_simulate(
        confidences=confidences, correct=correct, sample_size=300, runs=2000, max_error=0.02, confidence=0.90, seed=3
    )
    assert weaker.exceedance_rate > bound


def test_stated_failure_rates_of_the_simulation_tests():
    # The numbers the two docstrings above quote.
    assert binom.sf(math.floor(500 * (0.05 + slack(0.05, 500))), 500, 0.05) < 0.005
    assert binom.sf(math.floor(2000 * (0.05 + slack(0.05, 2000))), 2000, 0.05) < 0.005


def test_per_class_thresholds_hold_together():
    """Three predicted classes of unequal difficulty, each with accuracy conf ** power;
    500 runs of a 900-image audit sample; the union of the per-class acceptances must
    exceed 2% in at most 5% + 3 sd of runs (failure rate at a true 5%: ~0.2%)."""
    rng = np.random.default_rng(11)
    parts = [population_miscalibrated(size=10_000, seed=20 + i, power=power) for i, power in enumerate((1.5, 2, 3))]
    confidences = np.concatenate([c for c, _ in parts])
    correct = np.concatenate([r for _, r in parts])
    predicted = np.repeat(np.array(["cat", "dog", "fox"]), 10_000)
    exceeded = 0
    runs = 500
    for _ in range(runs):
        audit = rng.choice(confidences.size, 900, replace=False)
        decisions = acceptance_thresholds_per_class(
            confidences=confidences[audit],
            correct=correct[audit],
            predicted=predicted[audit],
            classes=["cat", "dog", "fox"],
            max_error=0.02,
            confidence=0.95,
        )
        accepted = np.zeros(confidences.size, bool)
        for name, decision in decisions.items():
            assert decision.confidence == pytest.approx(1 - 0.05 / 3)
            if decision.threshold is not None:
                accepted |= (predicted == name) & (confidences >= decision.threshold)
        if accepted.any() and np.mean(~correct[accepted]) > 0.02:
            exceeded += 1
    assert exceeded / runs <= 0.05 + slack(0.05, runs)
