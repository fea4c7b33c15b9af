"""Reviewer quality: accuracy on gold images and agreement between reviewers.

The samples: gold images (a Lead's verified label, mixed into a reviewer's queue
without telling) give each reviewer's accuracy; images reviewed independently by
several reviewers (overlap, the others' decisions hidden) give agreement. Labels are
nominal categories (class names or ids): agreement counts only same/different.
"""

import math
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from typing import Literal



def proportion_interval(
    *,
    successes: int,
    n: int,
    confidence: float = 0.95,
    method: Literal["exact", "wilson"] = "exact",
) -> tuple[float, float]:
    """Two-sided confidence interval for a proportion, e.g. a reviewer's gold accuracy.

    Method: "exact" (the default) is the Clopper–Pearson interval, the quantiles
    (1-confidence)/2 of Beta(s, n-s+1) and (1+confidence)/2 of Beta(s+1, n-s): its
    coverage is at least `confidence` for every true accuracy and every n, which
    matters at the accuracies reviewers have (0.95 to 1.0), where the Wilson score
    interval's coverage dips below nominal for small n (Brown, Cai & DasGupta 2001).
    "wilson" is the Wilson score interval, shorter on average, offered for comparison.
    With n == 0 the interval is (0.0, 1.0): no gold decisions, no information.
    Assumptions: the n decisions are independent with one common probability of being
    right: gold images drawn at random into the queue, the reviewer not knowing which.
    Sample: `successes` decisions that matched the gold label among `n` gold decisions.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be strictly between 0 and 1, got {confidence}")
    if n < 0 or successes < 0 or successes > n:
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return 0.0, 1.0
    # scipy here, not at the top: Django's start-up (the admin imports this) stays without it.
    from scipy.special import betaincinv
    from scipy.stats import norm

    tail = (1.0 - confidence) / 2.0
    if method == "exact":
        low = 0.0 if successes == 0 else float(betaincinv(successes, n - successes + 1, tail))
        high = 1.0 if successes == n else float(betaincinv(successes + 1, n - successes, 1.0 - tail))
        return low, high
    if method == "wilson":
        z = float(norm.ppf(1.0 - tail))
        share = successes / n
        centre = (share + z * z / (2 * n)) / (1 + z * z / n)
        half = z / (1 + z * z / n) * math.sqrt(share * (1 - share) / n + z * z / (4 * n * n))
        return max(0.0, centre - half), min(1.0, centre + half)
    raise ValueError(f"unknown method {method!r}: use 'exact' or 'wilson'")


def cohen_kappa(a: Sequence[Hashable], b: Sequence[Hashable]) -> float:
    """Cohen's kappa of two raters who labelled the same items: 1 perfect, 0 chance, < 0 worse.

    Method: (p_o - p_e) / (1 - p_e), p_o the share of items both gave the same label,
    p_e the agreement expected by chance from each rater's own label frequencies
    (Cohen 1960). Degenerate cases: no items, or both raters using one and the same
    label for every item (p_e == 1, 0/0), return nan: with no variation there is no
    chance-corrected agreement to measure (scikit-learn's cohen_kappa_score gives nan
    there too); show it as "not enough data", not as perfect.
    Assumptions: a[i] and b[i] are the two raters' independent labels of item i, neither
    seeing the other's (the overlap queue hides them).
    Sample: the items both reviewed.
    """
    if len(a) != len(b):
        raise ValueError(f"the two raters' labels differ in length: {len(a)} != {len(b)}")
    return cohen_kappa_from_table(Counter(zip(a, b)))


def cohen_kappa_from_table(table: Mapping[tuple[Hashable, Hashable], int]) -> float:
    """Cohen's kappa (see cohen_kappa) from the two raters' contingency table: (label of
    the first, label of the second) -> items, as a database's GROUP BY returns it."""
    n = sum(table.values())
    if n == 0:
        return float("nan")
    observed = sum(count for (x, y), count in table.items() if x == y) / n
    counts_a: Counter = Counter()
    counts_b: Counter = Counter()
    for (x, y), count in table.items():
        counts_a[x] += count
        counts_b[y] += count
    expected = sum(counts_a[label] * counts_b.get(label, 0) for label in counts_a) / (n * n)
    if expected >= 1.0:
        return float("nan")
    return (observed - expected) / (1.0 - expected)


def krippendorff_alpha_nominal(units: Mapping[Hashable, Sequence[Hashable | None]]) -> float:
    """Krippendorff's alpha for nominal labels, any number of raters per item, missing allowed.

    Method: the coincidence-matrix definition (Krippendorff 2011, "Computing
    Krippendorff's Alpha-Reliability", section C). A unit with m_u >= 2 labels adds, for
    each ordered pair of its labels from different raters, 1/(m_u - 1) to the coincidence
    o[c][k]; n_c = sum_k o[c][k], n = sum_c n_c. Then alpha = 1 - D_o / D_e with
    D_o = sum_{c != k} o[c][k] and D_e = sum_{c != k} n_c n_k / (n - 1). 1 is perfect
    agreement, 0 agreement at chance, negative systematic disagreement. Units with fewer
    than 2 labels are ignored (not pairable); None labels are missing. Returns nan when
    there is nothing to compare (no pairable unit) or no variation at all (a single label
    value overall, D_e == 0): alpha is undefined there.
    Assumptions: each label in a unit comes from a different rater who labelled it
    independently; raters need not be the same across units.
    Sample: units maps an item to the labels it received.
    """
    return alpha_from_coincidences(coincidences(label_lists(units)))


def krippendorff_alpha_per_class(units: Mapping[Hashable, Sequence[Hashable | None]]) -> dict[Hashable, float]:
    """Alpha per label, one label against the rest: how reliably reviewers tell that class apart.

    Method: for each label c seen in a pairable unit, every label becomes "c" or "not c"
    and `krippendorff_alpha_nominal` is computed on that binary data. A class nobody
    disagrees about but that also never varies (every pairable label is c) gives nan.
    Assumptions and sample as for `krippendorff_alpha_nominal`.
    """
    return alpha_per_class_from_coincidences(coincidences(label_lists(units)))


def label_lists(units: Mapping[Hashable, Sequence[Hashable | None]]) -> Counter:
    """How many units received each list of labels: what the coincidences depend on."""
    return Counter(map(tuple, units.values()))


def coincidences(lists: Mapping[Sequence[Hashable | None], int]) -> Counter:
    """(c, k) -> o[c][k] (see krippendorff_alpha_nominal) from how many units received each
    list of labels (`label_lists`); lists of fewer than 2 labels, None left out, add nothing.

    Taking the lists counted lets a caller that aggregates in the database pass a few
    dozen (list, units) rows instead of one per unit: thousands of overlap images share a
    handful of label lists. The order within a list does not matter.
    """
    result: Counter = Counter()
    for labels, units_alike in lists.items():
        values = [value for value in labels if value is not None]
        if len(values) < 2:
            continue
        weight = units_alike / (len(values) - 1)
        counts = Counter(values)
        for c, count_c in counts.items():
            for k, count_k in counts.items():
                # Ordered pairs of different raters: c with itself pairs count_c * (count_c - 1) ways.
                pairs = count_c * (count_c - 1) if c == k else count_c * count_k
                if pairs:
                    result[(c, k)] += pairs * weight
    return result


def alpha_from_coincidences(table: Mapping[tuple[Hashable, Hashable], float]) -> float:
    """Nominal alpha from the coincidences o[c][k] (see krippendorff_alpha_nominal)."""
    totals: Counter = Counter()
    for (c, _), value in table.items():
        totals[c] += value
    n = sum(totals.values())
    if n == 0:
        return float("nan")
    disagreement_observed = sum(value for (c, k), value in table.items() if c != k)
    same_by_chance = sum(total * total for total in totals.values())
    disagreement_expected = (n * n - same_by_chance) / (n - 1)
    if disagreement_expected <= 0:
        return float("nan")
    return 1.0 - disagreement_observed / disagreement_expected


def alpha_per_class_from_coincidences(table: Mapping[tuple[Hashable, Hashable], float]) -> dict[Hashable, float]:
    """Alpha per label, one against the rest (see krippendorff_alpha_per_class): the binary
    coincidences are sums of the nominal ones (c with c, c with another, two others)."""
    per_class = {}
    for label in sorted({c for c, _ in table}, key=repr):
        binary: Counter = Counter()
        for (c, k), value in table.items():
            binary[(c == label, k == label)] += value
        per_class[label] = alpha_from_coincidences(binary)
    return per_class
