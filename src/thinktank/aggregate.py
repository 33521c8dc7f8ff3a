"""Turning many candidate answers into one: voting."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from thinktank.problem import Kind
from thinktank.verify import answer_key


@dataclass(frozen=True)
class Vote:
    winner: str | None
    #: Votes per answer, best first; each answer shown in the form first sampled.
    counts: dict[str, float]


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
    return Vote(winner=shown[ranked[0]] if ranked else None, counts=counts)
