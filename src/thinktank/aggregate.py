"""Turning many candidate answers into one: voting, and truth inference over a batch."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from thinktank.problem import Kind
from thinktank.verify import answer_key


@dataclass(frozen=True)
class Vote:
    winner: str | None
    #: Votes per answer, best first; each answer shown in the form first sampled.
    counts: dict[str, float]
    #: How many answers were counted (candidates without one abstain).
    voters: int

    @property
    def winner_share(self) -> float | None:
        """The winner's share of the counted weight; None without a winner or weight."""
        total = sum(self.counts.values())
        if self.winner is None or total <= 0:
            return None
        return self.counts[self.winner] / total


def majority_vote(
    answers: Sequence[str | None], kind: Kind, weights: Sequence[float] | None = None
) -> Vote:
    """Plurality over equivalent answers (see `answer_key`); candidates with no answer abstain.

    Ties go to the answer that was sampled first, so the result is deterministic
    for a given sample order.
    """
    weights = weights if weights is not None else [1] * len(answers)
    totals: dict[str, float] = {}
    shown: dict[str, str] = {}
    for answer, weight in zip(answers, weights, strict=True):
        if answer is None:
            continue
        key = answer_key(answer, kind)
        shown.setdefault(key, answer)
        totals[key] = totals.get(key, 0) + weight
    # sorted() is stable and dicts keep first-seen order: ties keep sampling order.
    ranked = sorted(totals, key=lambda key: -totals[key])
    counts = {shown[key]: totals[key] for key in ranked}
    voters = sum(answer is not None for answer in answers)
    return Vote(winner=shown[ranked[0]] if ranked else None, counts=counts, voters=voters)


@dataclass(frozen=True)
class TruthEstimate:
    """What `dawid_skene` infers from a batch of labelled items."""

    #: Per item, the most probable true label (None: nobody answered).
    answers: list[str | None]
    #: Per item, each observed label's posterior probability of being the truth.
    posteriors: list[dict[str, float]]
    #: Per worker, the estimated probability that a label it gives is the truth.
    reliability: dict[str, float]
    iterations: int


def dawid_skene(
    items: Sequence[Sequence[tuple[str, str | None]]],
    *,
    max_iterations: int = 100,
    tolerance: float = 1e-6,
) -> TruthEstimate:
    """Truth inference over a batch (Dawid & Skene, 1979), one-coin form, by EM.

    ``items[i]`` lists the (worker, label) pairs given for item i; a worker may
    label an item several times, and a None label abstains. Answers are open-ended,
    so each worker has one reliability p: it gives the true label with
    probability p and, when wrong, one of the item's other observed labels
    uniformly. EM starts from the majority vote's shares and alternates the
    posterior over each item's labels (E) with each worker's expected share of
    true labels, smoothed by a Beta(2, 2) prior (M). Workers that agree with the
    consensus across the batch gain weight on every item.
    """
    labelled = [[(w, label) for w, label in item if label is not None] for item in items]
    posteriors = [_shares(item) for item in labelled]
    workers = sorted({w for item in labelled for w, _ in item})
    reliability = dict.fromkeys(workers, 0.5)
    iterations = 0
    for iterations in range(1, max_iterations + 1):  # noqa: B007 - reported below
        reliability = _worker_reliability(labelled, posteriors, workers)
        updated = [_posterior(item, reliability) for item in labelled]
        change = max(
            (abs(p.get(label, 0.0) - q[label]) for p, q in zip(posteriors, updated, strict=True)
             for label in q),
            default=0.0,
        )  # fmt: skip
        posteriors = updated
        if change < tolerance:
            break
    answers = [max(p, key=p.__getitem__) if p else None for p in posteriors]
    return TruthEstimate(answers, posteriors, reliability, iterations)


def _shares(item: list[tuple[str, str]]) -> dict[str, float]:
    counts: dict[str, float] = {}
    for _, label in item:
        counts[label] = counts.get(label, 0.0) + 1.0
    return {label: count / len(item) for label, count in counts.items()}


def _worker_reliability(
    items: list[list[tuple[str, str]]], posteriors: list[dict[str, float]], workers: list[str]
) -> dict[str, float]:
    right = dict.fromkeys(workers, 1.0)  # Beta(2, 2): one right and one wrong label seen
    given = dict.fromkeys(workers, 2.0)
    for item, posterior in zip(items, posteriors, strict=True):
        for worker, label in item:
            right[worker] += posterior[label]
            given[worker] += 1.0
    return {w: right[w] / given[w] for w in workers}


def _posterior(item: list[tuple[str, str]], reliability: dict[str, float]) -> dict[str, float]:
    labels = list(dict.fromkeys(label for _, label in item))
    if len(labels) <= 1:
        return dict.fromkeys(labels, 1.0)
    log_scores = dict.fromkeys(labels, 0.0)
    for worker, given in item:
        p = reliability[worker]
        for label in labels:
            log_scores[label] += math.log(p if given == label else (1 - p) / (len(labels) - 1))
    top = max(log_scores.values())
    weights = {label: math.exp(score - top) for label, score in log_scores.items()}
    total = sum(weights.values())
    return {label: weight / total for label, weight in weights.items()}
