"""Verifiers: score candidate answers without the ground truth.

A verifier turns (problem, candidates) into one score per candidate in [0, 1],
spending model calls through the strategy's context (so they are metered and
budgeted like any other call).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, ClassVar, Protocol

from thinktank.errors import BudgetExhausted
from thinktank.models.base import Prompt, Sampling
from thinktank.problem import Problem
from thinktank.verify.extract import answer_key

if TYPE_CHECKING:
    from thinktank.solution import Candidate
    from thinktank.strategies.base import Context


class Verifier(Protocol):
    name: ClassVar[str]

    def score(self, problem: Problem, candidates: list[Candidate], ctx: Context) -> list[float]:
        """One score in [0, 1] per candidate; higher means more likely correct."""
        ...


class SelfEvaluation:
    """The model's own probability of "Yes" to "Is this answer correct?".

    One greedy token per distinct answer, read from the top log-probabilities:
    P(yes) / (P(yes) + P(no)), 0.5 when neither word is among the top tokens.
    Candidates without an answer score 0.
    """

    name: ClassVar[str] = "self-eval"
    _QUESTION = "Is the proposed answer correct? Reply Yes or No."

    def score(self, problem: Problem, candidates: list[Candidate], ctx: Context) -> list[float]:
        by_answer: dict[str, float] = {}
        scores = []
        for candidate in candidates:
            if candidate.answer is None:
                scores.append(0.0)
                continue
            key = answer_key(candidate.answer, problem.kind)
            if key not in by_answer:
                try:
                    by_answer[key] = self._judge(problem, candidate.answer, ctx)
                except BudgetExhausted:
                    by_answer[key] = 0.0  # unverified: never preferred over a verified answer
            scores.append(by_answer[key])
        return scores

    def _judge(self, problem: Problem, answer: str, ctx: Context) -> float:
        [completion] = ctx.generate(
            self._prompt(problem, answer, ctx.model.capabilities.chat),
            1,
            Sampling(temperature=0.0, max_tokens=1, top_logprobs=20),
        )
        return yes_probability(completion.top_logprobs[0] if completion.top_logprobs else {})

    def _prompt(self, problem: Problem, answer: str, chat: bool) -> Prompt:
        question = f"Question: {problem.prompt}\nProposed answer: {answer}\n{self._QUESTION}"
        if chat:
            return [{"role": "user", "content": question}]
        return f"{question}\nAnswer:"


def yes_probability(top: dict[str, float]) -> float:
    """P(yes) / (P(yes) + P(no)) from one position's top tokens (any case, any spacing)."""
    mass = {"yes": 0.0, "no": 0.0}
    for text, logprob in top.items():
        word = text.strip().lower()
        if word in mass:
            mass[word] += math.exp(logprob)
    total = mass["yes"] + mass["no"]
    return mass["yes"] / total if total > 0 else 0.5


#: Verifiers by name, for spec strings such as ``best-of-n:verifier=self-eval``.
VERIFIERS: dict[str, type[Verifier]] = {SelfEvaluation.name: SelfEvaluation}
