"""Metrics and economics, checked against brute force and known values."""

from __future__ import annotations

import itertools
import math
from collections import Counter

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from thinktank.bench.metrics import (
    best_of_k,
    false_positive_rate,
    fit_coverage_power_law,
    majority_at_k,
    pass_at_k,
    wilson_interval,
)
from thinktank.economics import cost_of_pass, pareto_front


@given(n=st.integers(1, 9), data=st.data())
def test_pass_at_k_equals_brute_force_over_subsets(n, data):
    correct = data.draw(st.integers(0, n))
    k = data.draw(st.integers(1, n))
    flags = [True] * correct + [False] * (n - correct)
    subsets = list(itertools.combinations(flags, k))
    expected = sum(any(s) for s in subsets) / len(subsets)
    assert pass_at_k(n, correct, k) == pytest.approx(expected)


def test_majority_at_k_is_exact_at_n_and_matches_enumeration_below():
    keys = ["7", "9", "7", None, "9", "9"]
    correct = [True, False, True, False, False, False]
    assert majority_at_k(keys, correct, 6) == 0.0  # "9" wins 3 to 2
    # k = 2 by enumeration: vote with ties to the first sampled.
    hits = []
    for subset in itertools.combinations(range(6), 2):
        votes = Counter(keys[i] for i in subset if keys[i] is not None)
        if not votes:
            hits.append(0)
            continue
        best = max(votes.values())
        winner = next(keys[i] for i in subset if keys[i] is not None and votes[keys[i]] == best)
        hits.append(correct[keys.index(winner)])
    assert majority_at_k(keys, correct, 2, draws=4000) == pytest.approx(np.mean(hits), abs=0.03)


def test_wilson_interval_known_values():
    low, high = wilson_interval(24, 30)
    assert (round(low, 3), round(high, 3)) == (0.627, 0.905)
    assert wilson_interval(0, 10)[0] == 0.0
    assert wilson_interval(10, 10)[1] == 1.0


def test_power_law_fit_recovers_its_parameters():
    ks = np.arange(1, 65)
    coverage = np.exp(-1.5 * ks**-0.4)
    a, b = fit_coverage_power_law(ks, coverage)
    assert a == pytest.approx(-1.5, rel=1e-3) and b == pytest.approx(-0.4, rel=1e-3)
    with pytest.raises(ValueError):
        fit_coverage_power_law([1, 2, 3], [0.5, 0.5, 0.5])


def test_cost_of_pass_and_pareto_front():
    assert cost_of_pass(0.02, 0.5) == pytest.approx(0.04)
    assert math.isinf(cost_of_pass(0.02, 0.0))
    points = [(1.0, 0.5), (2.0, 0.4), (3.0, 0.8), (0.5, 0.1)]
    assert pareto_front(points) == [3, 0, 2]  # (2.0, 0.4) is beaten by (1.0, 0.5)


def test_best_of_k_matches_enumeration_and_ends_at_best_of_n():
    scores = [0.2, 0.9, None, 0.9, 0.4]
    correct = [True, False, True, True, False]
    # k = n: the first of the two 0.9s (sample 1) is picked, and it is wrong.
    assert best_of_k(scores, correct, 5) == 0.0
    # k = 1: a random single sample.
    assert best_of_k(scores, correct, 1) == pytest.approx(3 / 5)
    hits = []
    for subset in itertools.combinations(range(5), 2):
        scored = [i for i in subset if scores[i] is not None] or list(subset)
        best = max(scored, key=lambda i: scores[i] if scores[i] is not None else -1)
        hits.append(correct[best])
    assert best_of_k(scores, correct, 2) == pytest.approx(np.mean(hits))


def test_false_positive_rate_counts_accepted_wrong_samples():
    scores = [0.9, 0.6, 0.1, None, 0.95]
    correct = [True, False, False, False, False]
    assert false_positive_rate(scores, correct) == pytest.approx(2 / 3)
    assert false_positive_rate([0.9], [True]) is None
