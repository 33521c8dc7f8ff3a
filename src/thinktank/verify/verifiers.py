"""Verifiers: score candidate answers without the ground truth.

A verifier turns (problem, candidates) into one score per candidate in [0, 1].
Model calls go through the strategy's context, so they are metered and
budgeted like any other. Spec strings: ``self-eval``, ``judge@MODEL``,
``public-tests``, ``py:MODULE:FUNCTION`` (a user function
``(problem, candidate) -> float``).
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar, Protocol

from thinktank.errors import BudgetExhausted, ThinktankError
from thinktank.models.base import Model, Prompt, Sampling
from thinktank.problem import Problem
from thinktank.verify.extract import answer_key
from thinktank.verify.sandbox import Limits, python_solution, run_python

if TYPE_CHECKING:
    from thinktank.solution import Candidate
    from thinktank.strategies.base import Context


class Verifier(Protocol):
    name: ClassVar[str]

    def score(self, problem: Problem, candidates: list[Candidate], ctx: Context) -> list[float]:
        """One score in [0, 1] per candidate; higher means more likely correct."""
        ...


class Judge:
    """A model's probability of "Yes" to "Is this answer correct?" (pointwise).

    The judge is the solving model itself (``self-eval``) or another model
    (``judge@MODEL``, e.g. ``judge@gemma3-270m``). One greedy token per
    distinct answer, read from the top log-probabilities:
    P(yes) / (P(yes) + P(no)), 0.5 when neither word is among the top tokens.
    Candidates without an answer score 0.
    """

    name: ClassVar[str] = "judge"
    _QUESTION = "Is the proposed answer correct? Reply Yes or No."

    def __init__(self, model: Model | None = None) -> None:
        self.model = model  # None: the model that solves the problem judges it

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
        judge = self.model or ctx.model
        [completion] = ctx.generate(
            self._prompt(problem, answer, judge.capabilities.chat),
            1,
            Sampling(temperature=0.0, max_tokens=1, top_logprobs=20),
            model=judge,
        )
        return yes_probability(completion.top_logprobs[0] if completion.top_logprobs else {})

    def _prompt(self, problem: Problem, answer: str, chat: bool) -> Prompt:
        question = f"Question: {problem.prompt}\nProposed answer: {answer}\n{self._QUESTION}"
        if chat:
            return [{"role": "user", "content": question}]
        return f"{question}\nAnswer:"


class SelfEvaluation(Judge):
    """The solving model judges its own answers (see `Judge`)."""

    name: ClassVar[str] = "self-eval"


def yes_probability(top: dict[str, float]) -> float:
    """P(yes) / (P(yes) + P(no)) from one position's top tokens (any case, any spacing)."""
    mass = {"yes": 0.0, "no": 0.0}
    for text, logprob in top.items():
        word = text.strip().lower()
        if word in mass:
            mass[word] += math.exp(logprob)
    total = mass["yes"] + mass["no"]
    return mass["yes"] / total if total > 0 else 0.5


class PublicTests:
    """For code: the share of the problem's public tests the candidate passes.

    The tests are what a user would really have (e.g. a docstring's examples),
    run in the sandbox, all in one process. With no public tests every
    candidate scores 0.5: nothing is known.
    """

    name: ClassVar[str] = "public-tests"

    def score(self, problem: Problem, candidates: list[Candidate], ctx: Context) -> list[float]:
        if not problem.public_tests:
            return [0.5] * len(candidates)
        by_code: dict[str, float] = {}
        for candidate in candidates:
            if candidate.answer is not None and candidate.answer not in by_code:
                by_code[candidate.answer] = self._passed(problem, candidate.answer)
        return [0.0 if c.answer is None else by_code[c.answer] for c in candidates]

    def _passed(self, problem: Problem, code: str) -> float:
        checks = "".join(
            f"try:\n    {test}\n    _passed += 1\nexcept BaseException:\n    pass\n"
            for test in problem.public_tests
        )
        program = (
            f"{python_solution(problem.prompt, code)}\n\n_passed = 0\n{checks}print(_passed)\n"
        )
        result = run_python(program, Limits(wall_seconds=5, cpu_seconds=5))
        last = result.stdout.split()[-1:]
        if not result.passed or not last or not last[0].isdigit():
            return 0.0  # crashed, or exited before the checks ran
        return min(int(last[0]), len(problem.public_tests)) / len(problem.public_tests)


class FunctionVerifier:
    """A user's function ``(problem, candidate) -> float``, named ``py:MODULE:FUNCTION``."""

    name: ClassVar[str] = "py"

    def __init__(self, function: Callable[[Problem, Candidate], float]) -> None:
        self.function = function

    def score(self, problem: Problem, candidates: list[Candidate], ctx: Context) -> list[float]:
        return [float(self.function(problem, c)) for c in candidates]


#: Verifiers by name, for spec strings such as ``best-of-n:verifier=self-eval``.
VERIFIERS: dict[str, type[Verifier]] = {
    SelfEvaluation.name: SelfEvaluation,
    PublicTests.name: PublicTests,
}


def build_verifier(spec: str) -> Verifier:
    """``self-eval`` | ``public-tests`` | ``py:MODULE:FUNCTION`` -> a verifier."""
    if spec in VERIFIERS:
        return VERIFIERS[spec]()
    if spec.startswith("judge@"):
        from thinktank.models import load_model

        try:
            return Judge(load_model(spec.removeprefix("judge@")))
        except ThinktankError as exc:
            raise ValueError(f"verifier {spec!r}: {exc}") from None
    if spec.startswith("py:"):
        module_name, _, function_name = spec[3:].rpartition(":")
        try:
            function = getattr(importlib.import_module(module_name), function_name)
        except (ImportError, AttributeError, ValueError) as exc:
            raise ValueError(f"verifier {spec!r}: {exc}") from None
        if not callable(function):
            raise ValueError(f"verifier {spec!r}: {function_name} is not callable")
        return FunctionVerifier(function)
    raise ValueError(
        f"verifier must be one of {', '.join(VERIFIERS)}, judge@MODEL or py:MODULE:FUNCTION"
    )
