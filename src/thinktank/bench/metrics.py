"""Metrics computed from per-problem results: intervals, pass@k, majority@k, scaling fits.

pass@k and coverage use the ground truth of every sample: they are upper bounds
on what a perfect selector could reach, never a strategy's accuracy.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from statistics import NormalDist

import numpy as np


def wilson_interval(successes: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion (sound at 0%, 100% and small n)."""
    if n == 0:
        return (0.0, 1.0)
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / n
    center = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    # At 0 or n successes the bound is exactly 0 or 1; rounding would blur it.
    low = 0.0 if successes == 0 else max(0.0, center - half)
    high = 1.0 if successes == n else min(1.0, center + half)
    return (float(low), float(high))


def pass_at_k(n: int, correct: int, k: int) -> float:
    """Unbiased pass@k from n samples of which ``correct`` are right (Chen et al., 2021)."""
    if k > n:
        raise ValueError(f"k={k} exceeds the {n} samples")
    if n - correct < k:
        return 1.0
    return 1.0 - math.comb(n - correct, k) / math.comb(n, k)


def subsets_of(n: int, k: int, *, draws: int = 200, seed: int = 0) -> Iterable[Sequence[int]]:
    """Every k-subset of range(n) when there are at most ``draws``, else ``draws``
    seeded random ones; each in increasing order (sampling order)."""
    if not 1 <= k <= n:
        raise ValueError(f"k={k} must be in 1..{n}")
    if math.comb(n, k) <= draws:
        return itertools.combinations(range(n), k)
    rng = np.random.default_rng(seed)
    return (np.sort(rng.choice(n, k, replace=False)) for _ in range(draws))


def majority_at_k(
    keys: Sequence[str | None],
    correct: Sequence[bool],
    k: int,
    *,
    draws: int = 200,
    seed: int = 0,
) -> float:
    """Expected correctness of a plurality vote over a random k-subset of the samples.

    ``keys`` are the samples' canonical answers (None abstains), ``correct`` their
    correctness. Ties go to the answer sampled first, as in `majority_vote`.
    Exact when there are at most ``draws`` subsets (see `subsets_of`).
    """
    hits = []
    for subset in subsets_of(len(keys), k, draws=draws, seed=seed):
        totals: dict[str, int] = {}
        first: dict[str, int] = {}
        for index in subset:
            key = keys[index]
            if key is not None:
                totals[key] = totals.get(key, 0) + 1
                first.setdefault(key, int(index))
        if not totals:
            hits.append(0.0)
            continue
        winner = max(totals, key=lambda key: (totals[key], -first[key]))
        hits.append(float(correct[first[winner]]))
    return float(np.mean(hits))


def best_of_k(
    scores: Sequence[float | None],
    correct: Sequence[bool],
    k: int,
    *,
    draws: int = 200,
    seed: int = 0,
) -> float:
    """Expected correctness of the best-scored sample of a random k-subset.

    Unscored samples (None) are picked only if nothing in the subset is scored;
    ties go to the sample drawn first, as in best-of-n.
    """
    hits = []
    for subset in subsets_of(len(scores), k, draws=draws, seed=seed):
        best = max(subset, key=lambda i: -math.inf if scores[i] is None else scores[i])
        hits.append(float(correct[best]))
    return float(np.mean(hits))


def false_positive_rate(
    scores: Sequence[float | None], correct: Sequence[bool], threshold: float = 0.5
) -> float | None:
    """Share of wrong, scored samples that the verifier accepts (score >= threshold)."""
    wrong = [s for s, ok in zip(scores, correct, strict=True) if not ok and s is not None]
    return sum(s >= threshold for s in wrong) / len(wrong) if wrong else None


def fit_coverage_power_law(ks: Sequence[int], coverage: Sequence[float]) -> tuple[float, float]:
    """Fit coverage(k) ~ exp(a * k**b) (Large Language Monkeys); returns (a, b).

    Raises ValueError when coverage is constant (nothing to fit).
    """
    from scipy import optimize  # slow to import; only fits need it

    ks_array = np.asarray(ks, dtype=float)
    cov = np.clip(np.asarray(coverage, dtype=float), 1e-6, 1 - 1e-9)
    if np.ptp(cov) < 1e-9:
        raise ValueError("coverage does not change with k")
    # log(-log c) = log(-a) + b log k: a line, which gives the starting point.
    slope, intercept = np.polyfit(np.log(ks_array), np.log(-np.log(cov)), 1)
    (a, b), _ = optimize.curve_fit(
        lambda k, a, b: np.exp(a * np.power(k, b)),
        ks_array,
        cov,
        p0=(-math.exp(intercept), slope),
        maxfev=10_000,
    )
    return float(a), float(b)
