"""Routing between models: answer with a cheap model, and pay for a dearer one only
when the cheap answer is not confident (FrugalGPT-style cascades, Hybrid LLM).

Every model's calls go through the same meter, so the ledger shows which model
paid for what, and one budget caps them all.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

from thinktank.aggregate import majority_vote
from thinktank.models import load_model
from thinktank.problem import Problem
from thinktank.solution import Candidate, Solution
from thinktank.strategies.base import Context, Strategy
from thinktank.strategies.sampling import ManySamples, sample_candidates

#: Separates the model specs of a pool in a spec string (specs may hold "/" and ":").
POOL_SEPARATOR = "+"


def vote_confidence(winner_votes: float, samples: int) -> float:
    """The winner's smoothed vote share, votes / (samples + 1): one unseen sample's worth
    of doubt, so even a unanimous vote stays below 1 and no answer at all is 0."""
    return winner_votes / (samples + 1)


@dataclass
class Cascade(ManySamples, Strategy):
    """A cascade over ``models`` (cheapest first, joined by "+"): each in turn answers
    by self-consistency over ``n`` samples; its answer stands when its confidence
    (`vote_confidence`) is at least ``threshold``, else the next model is asked.
    The last model's answer stands whatever its confidence. ``threshold=0`` never
    escalates; ``threshold=1`` always goes to the last model."""

    name: ClassVar[str] = "cascade"
    summary: ClassVar[str] = "cheap model first; escalate when its vote is not confident"

    models: str = f"smollm2{POOL_SEPARATOR}gemma3-270m"
    threshold: float = 0.5
    n: int = 4

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.threshold <= 1:
            raise ValueError("threshold must be in [0, 1]")
        if not all(self.pool):
            raise ValueError(f"models must be model specs joined by {POOL_SEPARATOR!r}")

    @property
    def pool(self) -> list[str]:
        return [spec.strip() for spec in self.models.split(POOL_SEPARATOR)]

    def solve(self, problem: Problem, ctx: Context) -> Solution:
        candidates: list[Candidate] = []
        trace = []
        for rank, spec in enumerate(self.pool):
            model = load_model(spec)
            asked = sample_candidates(problem, replace(ctx, model=model), self.n, self.sampling())
            candidates += [replace(c, worker=model.name) for c in asked]
            vote = majority_vote([c.answer for c in asked], problem.kind)
            winner_votes = next(iter(vote.counts.values()), 0)
            confidence = vote_confidence(winner_votes, len(asked))
            trace.append({"model": model.name, "answer": vote.winner,
                          "confidence": round(confidence, 4)})  # fmt: skip
            if confidence >= self.threshold or rank == len(self.pool) - 1:
                return Solution(answer=vote.winner, candidates=candidates, votes=vote.counts,
                                trace=trace)  # fmt: skip
        raise AssertionError("unreachable: the last model always answers")
