"""Known-truth simulations of the auto-accept chooser, shared by its tests and the benchmark.

A finite population of (confidence, correct) pairs stands for one model version's
images with their true labels known. Each run draws a uniformly random audit sample
without replacement, as the "Audit (random)" review order does, lets the chooser pick a
threshold, and measures the REALISED error among all population items at or above it.
An oracle that knows every label accepts the most items whose realised error is within
the target; the chooser's accepted count is compared with it.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from predictions.statistics.acceptance import acceptance_threshold_choose

# Most images near-certain and almost always right, a quarter spread out and often
# wrong, as a fine-tuned classifier on a new user's images tends to look.
DEFAULT_MIX = ((0.75, 1000.0, 1.0), (0.25, 5.0, 2.0))


@dataclass(frozen=True)
class AcceptanceSimulation:
    runs: int
    exceedance_rate: float  # share of runs whose accepted items had realised error > max_error
    mean_accepted: float  # population items accepted, averaged over runs (0 when none chosen)
    oracle_accepted: int
    no_threshold_rate: float  # share of runs where the sample supported no threshold

    @property
    def accepted_ratio(self) -> float:
        """Mean accepted over what the oracle accepts (the issue's benchmark asks >= 0.7)."""
        return self.mean_accepted / self.oracle_accepted if self.oracle_accepted else float("nan")


def population_miscalibrated(
    *,
    size: int,
    seed: int,
    mix: Sequence[tuple[float, float, float]] = DEFAULT_MIX,
    power: float = 2.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Confidences from a Beta mixture (weight, a, b) and correctness with P(right) = conf ** power.

    power > 1 makes the model over-confident (power 2: an image at confidence 0.9 is right
    81% of the time), so raw confidence is not calibrated and a cut-off read off it would
    break its promise.
    """
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(size, np.asarray([weight for weight, _, _ in mix], dtype=float))
    confidences = np.concatenate([rng.beta(a, b, size=count) for count, (_, a, b) in zip(counts, mix)])
    correct = rng.random(size) < confidences**power
    return confidences, correct


def acceptance_simulate(
    *,
    confidences: np.ndarray,
    correct: np.ndarray,
    sample_size: int,
    runs: int,
    max_error: float,
    confidence: float,
    seed: int,
) -> AcceptanceSimulation:
    """Run the chooser on `runs` independent random audit samples of one known population."""
    confidences = np.asarray(confidences, dtype=float)
    correct = np.asarray(correct, dtype=bool)
    population = confidences.size
    ascending = np.sort(confidences)
    order = np.argsort(-confidences, kind="stable")
    cumulative_errors = np.cumsum(~correct[order])
    rng = np.random.default_rng(seed)

    exceeded = 0
    none = 0
    accepted_total = 0
    for _ in range(runs):
        audit = rng.choice(population, size=sample_size, replace=False)
        decision = acceptance_threshold_choose(
            confidences=confidences[audit], correct=correct[audit], max_error=max_error, confidence=confidence
        )
        if decision.threshold is None:
            none += 1
            continue
        accepted = population - int(np.searchsorted(ascending, decision.threshold, side="left"))
        accepted_total += accepted
        exceeded += int(cumulative_errors[accepted - 1] > max_error * accepted)
    return AcceptanceSimulation(
        runs=runs,
        exceedance_rate=exceeded / runs,
        mean_accepted=accepted_total / runs,
        oracle_accepted=oracle_accepted(confidences=confidences, correct=correct, max_error=max_error),
        no_threshold_rate=none / runs,
    )


def oracle_accepted(*, confidences: np.ndarray, correct: np.ndarray, max_error: float) -> int:
    """Items at or above the lowest threshold whose realised error is <= max_error (0 if none)."""
    confidences = np.asarray(confidences, dtype=float)
    order = np.argsort(-confidences, kind="stable")
    ranked = confidences[order]
    cumulative_errors = np.cumsum(~np.asarray(correct, dtype=bool)[order])
    # A threshold accepts whole groups of equal confidence: only group ends are thresholds.
    ends = np.nonzero(np.r_[ranked[1:] != ranked[:-1], True])[0]
    within = cumulative_errors[ends] <= max_error * (ends + 1)
    return int(ends[within][-1] + 1) if within.any() else 0
