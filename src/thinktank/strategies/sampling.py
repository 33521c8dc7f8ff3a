"""Repeated sampling: one sample, or many and a majority vote (self-consistency)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from thinktank.aggregate import majority_vote
from thinktank.errors import BudgetExhausted
from thinktank.models.base import Sampling
from thinktank.problem import Problem
from thinktank.prompts import build_prompt, stop_strings
from thinktank.solution import Candidate, Solution
from thinktank.strategies.base import Context, Strategy


def sample_candidates(
    problem: Problem, ctx: Context, n: int, sampling: Sampling
) -> list[Candidate]:
    """``n`` candidates from one batched call; fewer (maybe none) if the budget cuts in."""
    prompt = build_prompt(problem, ctx.model)
    sampling = sampling.with_(stop=sampling.stop + stop_strings(problem, ctx.model))
    try:
        completions = ctx.generate(prompt, n, sampling)
    except BudgetExhausted:
        return []
    return [Candidate.from_completion(c, problem.kind) for c in completions]


@dataclass
class SamplingOptions:
    """The sampling options a strategy's spec string may set; checked when it is built."""

    temperature: float = 0.7
    top_p: float = 1.0
    max_tokens: int = 256

    def __post_init__(self) -> None:
        self.sampling()

    def sampling(self) -> Sampling:
        return Sampling(self.temperature, self.top_p, self.max_tokens)


@dataclass
class Single(SamplingOptions, Strategy):
    """One sample (greedy by default): the baseline every other strategy must beat."""

    name: ClassVar[str] = "single"
    summary: ClassVar[str] = "one sample, its answer (greedy unless temperature > 0)"

    temperature: float = 0.0

    def solve(self, problem: Problem, ctx: Context) -> Solution:
        candidates = sample_candidates(problem, ctx, 1, self.sampling())
        answer = candidates[0].answer if candidates else None
        return Solution(answer=answer, candidates=candidates)


@dataclass
class SelfConsistency(SamplingOptions, Strategy):
    """Sample ``n`` reasoning paths and take the most frequent answer (Wang et al., 2022)."""

    name: ClassVar[str] = "self-consistency"
    summary: ClassVar[str] = "n samples in one batch, majority vote over equivalent answers"

    n: int = 8

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.n < 1:
            raise ValueError("n must be >= 1")

    def solve(self, problem: Problem, ctx: Context) -> Solution:
        candidates = sample_candidates(problem, ctx, self.n, self.sampling())
        vote = majority_vote([c.answer for c in candidates], problem.kind)
        return Solution(answer=vote.winner, candidates=candidates, votes=vote.counts)
