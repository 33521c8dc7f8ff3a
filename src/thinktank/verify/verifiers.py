"""Verifiers: score candidate answers without the ground truth.

A verifier turns (problem, candidates) into one score per candidate in [0, 1].
Model calls go through the strategy's context, so they are metered and
budgeted like any other. Spec strings: ``self-eval``, ``judge@MODEL``,
``pairwise[@MODEL]``, ``public-tests``, ``agreement``, ``py:MODULE:FUNCTION`` (a user
function ``(problem, candidate) -> float``); `parse_verifier` checks their shape and
`thinktank.resolver.Resolver.verifier` builds them.
"""

from __future__ import annotations

import importlib
import math
import sys
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, ClassVar, Protocol

from thinktank.errors import BudgetExhausted, ThinktankError
from thinktank.models.base import Completion, Model, Prompt, Sampling
from thinktank.plugins import plugin_names
from thinktank.problem import Problem
from thinktank.verify.extract import answer_key
from thinktank.verify.harness import candidate_functions, run_tests
from thinktank.verify.sandbox import Limits

if TYPE_CHECKING:
    from thinktank.solution import Candidate


class ScoringContext(Protocol):
    """What verifiers and process rewards use of the context a strategy hands them
    (a `thinktank.strategies.base.Context` is one): named here, in the layer below
    strategies, so that scoring never imports the strategies it serves."""

    model: Model

    def at_stage(self, stage: str) -> ScoringContext:
        """The context for another part (``judge``, ``reward``), on the same meter."""
        ...

    def generate(
        self, prompt: Prompt, n: int, sampling: Sampling, *, model: Model | None = None
    ) -> list[Completion]:
        """``n`` samples through the meter, from ``self.model`` or ``model``."""
        ...

    def generate_each(
        self, calls: Sequence[tuple[Prompt, int, Sampling]], *, model: Model | None = None
    ) -> list[list[Completion]]:
        """Several ``(prompt, n, sampling)`` calls at once; a refused one returns none."""
        ...


class Verifier(Protocol):
    name: ClassVar[str]

    def score(
        self, problem: Problem, candidates: list[Candidate], ctx: ScoringContext
    ) -> list[float]:
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

    def score(
        self, problem: Problem, candidates: list[Candidate], ctx: ScoringContext
    ) -> list[float]:
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

    def _judge(self, problem: Problem, answer: str, ctx: ScoringContext) -> float:
        judge = self.model or ctx.model
        [completion] = ctx.at_stage("judge").generate(
            self._prompt(problem, answer, judge.capabilities.chat),
            1,
            Sampling(temperature=0.0, max_tokens=1, top_logprobs=20),
            model=judge,
        )
        return yes_probability(completion.top_logprobs[0] if completion.top_logprobs else {})

    def _prompt(self, problem: Problem, answer: str, chat: bool) -> Prompt:
        return _ask(
            f"Question: {problem.transcript()}\nProposed answer: {answer}\n{self._QUESTION}", chat
        )


class SelfEvaluation(Judge):
    """The solving model judges its own answers (see `Judge`)."""

    name: ClassVar[str] = "self-eval"


class PairwiseJudge:
    """A model compares answers two at a time: "Which answer is correct, A or B?"

    Every pair of distinct answers is shown in both orders (which cancels the
    judge's taste for the first or second position), and P(A) / (P(A) + P(B))
    is read from the top log-probabilities of one greedy token. An answer's
    score is its mean probability of winning against the others; the only
    answer scores 1. Pairs grow as the square of the distinct answers: at most
    ``MAX_ANSWERS`` (the most frequent) are compared, the rest score 0. The
    judge is the solving model (``pairwise``) or another (``pairwise@MODEL``).
    """

    name: ClassVar[str] = "pairwise"
    MAX_ANSWERS = 6
    _QUESTION = "Which proposed answer is correct? Reply A or B."

    def __init__(self, model: Model | None = None) -> None:
        self.model = model

    def score(
        self, problem: Problem, candidates: list[Candidate], ctx: ScoringContext
    ) -> list[float]:
        counts: dict[str, int] = {}
        shown: dict[str, str] = {}
        for c in candidates:
            if c.answer is not None:
                key = answer_key(c.answer, problem.kind)
                counts[key] = counts.get(key, 0) + 1
                shown.setdefault(key, c.answer)
        keys = sorted(counts, key=lambda key: -counts[key])[: self.MAX_ANSWERS]
        wins = dict.fromkeys(keys, 0.0)
        for i, first in enumerate(keys):
            for second in keys[i + 1 :]:
                try:
                    p_first = (
                        self._prefers_a(problem, shown[first], shown[second], ctx)
                        + 1.0
                        - self._prefers_a(problem, shown[second], shown[first], ctx)
                    ) / 2
                except BudgetExhausted:
                    p_first = 0.5  # undecided
                wins[first] += p_first
                wins[second] += 1.0 - p_first
        rivals = max(len(keys) - 1, 1)
        by_key = {key: 1.0 if len(keys) == 1 else win / rivals for key, win in wins.items()}
        return [
            0.0 if c.answer is None else by_key.get(answer_key(c.answer, problem.kind), 0.0)
            for c in candidates
        ]

    def _prefers_a(self, problem: Problem, a: str, b: str, ctx: ScoringContext) -> float:
        judge = self.model or ctx.model
        prompt = _ask(
            f"Question: {problem.transcript()}\nProposed answer A: {a}\nProposed answer B: {b}\n"
            f"{self._QUESTION}",
            judge.capabilities.chat,
        )
        [completion] = ctx.at_stage("judge").generate(
            prompt, 1, Sampling(temperature=0.0, max_tokens=1, top_logprobs=20), model=judge
        )
        top = completion.top_logprobs[0] if completion.top_logprobs else {}
        return option_probability(top, "a", "b")


def _ask(question: str, chat: bool) -> Prompt:
    """A judging question as a chat message, or as text a base model answers after."""
    return [{"role": "user", "content": question}] if chat else f"{question}\nAnswer:"


def yes_probability(top: dict[str, float]) -> float:
    """P(yes) / (P(yes) + P(no)) from one position's top tokens (any case, any spacing)."""
    return option_probability(top, "yes", "no")


def option_probability(top: dict[str, float], option: str, other: str) -> float:
    """P(option) / (P(option) + P(other)) from one position's top tokens, any case and
    spacing; 0.5 when neither is among them."""
    mass = {option: 0.0, other: 0.0}
    for text, logprob in top.items():
        word = text.strip().lower()
        if word in mass:
            mass[word] += math.exp(logprob)
    total = mass[option] + mass[other]
    return mass[option] / total if total > 0 else 0.5


class PublicTests:
    """For code: the share of the problem's public tests the candidate passes.

    The tests are what a user would really have (e.g. a docstring's examples). They
    run where the candidate's code cannot reach them (`thinktank.verify.harness`),
    against the functions the prompt leaves for it to write. With no public tests,
    or a prompt that is not Python, every candidate scores 0.5: nothing is known.
    """

    name: ClassVar[str] = "public-tests"

    def score(
        self, problem: Problem, candidates: list[Candidate], ctx: ScoringContext
    ) -> list[float]:
        functions = candidate_functions(problem.prompt)
        if not problem.public_tests or not functions:
            return [0.5] * len(candidates)
        by_code: dict[str, float] = {}
        for candidate in candidates:
            if candidate.answer is not None and candidate.answer not in by_code:
                verdict = run_tests(problem.prompt, candidate.answer, problem.public_tests,
                                    functions=functions, limits=Limits(wall_seconds=5,
                                    cpu_seconds=5))  # fmt: skip
                by_code[candidate.answer] = verdict.share
        return [0.0 if c.answer is None else by_code[c.answer] for c in candidates]


class Agreement:
    """Self-consistency as a verifier: the share of the candidates that give the same
    answer (0 without an answer). Needs no model call."""

    name: ClassVar[str] = "agreement"

    def score(
        self, problem: Problem, candidates: list[Candidate], ctx: ScoringContext
    ) -> list[float]:
        kind = problem.kind
        keys = [None if c.answer is None else answer_key(c.answer, kind) for c in candidates]
        counts = Counter(key for key in keys if key is not None)
        return [0.0 if key is None else counts[key] / len(keys) for key in keys]


class FunctionVerifier:
    """A user's function ``(problem, candidate) -> float``, named ``py:MODULE:FUNCTION``."""

    name: ClassVar[str] = "py"

    def __init__(self, function: Callable[[Problem, Candidate], float]) -> None:
        self.function = function

    def score(
        self, problem: Problem, candidates: list[Candidate], ctx: ScoringContext
    ) -> list[float]:
        return [self._score_one(problem, c) for c in candidates]

    def _score_one(self, problem: Problem, candidate: Candidate) -> float:
        """The function's score, or a `ThinktankError` saying where it failed: the
        user's code, not thinktank's, so where in it matters more than our stack."""
        name = f"py:{self.function.__module__}:{getattr(self.function, '__qualname__', '?')}"
        try:
            score = self.function(problem, candidate)
            return float(score)
        except Exception as exc:
            frame = traceback.extract_tb(exc.__traceback__)[-1]
            raise ThinktankError(
                f"verifier {name} failed on problem {problem.id}: {type(exc).__name__}: {exc}"
                f" (at {frame.filename}:{frame.lineno}); it must return a number for"
                " (problem, candidate)"
            ) from None


#: Verifiers by name, for spec strings such as ``best-of-n:verifier=self-eval``.
VERIFIERS: dict[str, type[Verifier]] = {
    SelfEvaluation.name: SelfEvaluation,
    PairwiseJudge.name: PairwiseJudge,
    PublicTests.name: PublicTests,
    Agreement.name: Agreement,
}
#: Verifiers that another model runs: ``NAME@MODEL``.
JUDGES: dict[str, type[Judge | PairwiseJudge]] = {"judge": Judge, "pairwise": PairwiseJudge}


@dataclass(frozen=True)
class VerifierSpec:
    """A parsed verifier spec: ``name`` (a key of `VERIFIERS` or `JUDGES`, or ``py``) and
    what follows it: the judging model's spec, or ``MODULE:FUNCTION``."""

    name: str
    argument: str | None = None


def parse_verifier(spec: str) -> VerifierSpec:
    """``self-eval`` | ``pairwise[@MODEL]`` | ``judge@MODEL`` | ``public-tests`` |
    ``agreement`` | ``py:MODULE:FUNCTION``, checked for shape only: nothing is loaded
    or imported (a `Resolver` does that). A plugin's verifier is named as it declares."""
    if spec in VERIFIERS or spec in plugin_names("verifier"):
        return VerifierSpec(spec)
    name, at, model = spec.partition("@")
    if at and name in JUDGES and model.strip():
        return VerifierSpec(name, model.strip())
    if spec.startswith("py:"):
        module, _, function = spec[3:].rpartition(":")
        if module and function.isidentifier():
            return VerifierSpec("py", spec[3:])
    raise ValueError(
        f"verifier must be one of {', '.join(VERIFIERS)}, judge@MODEL, pairwise@MODEL"
        f" or py:MODULE:FUNCTION (got {spec!r})"
    )


def import_function(target: str) -> Callable[[Problem, Candidate], float]:
    """The user's function ``MODULE:FUNCTION`` (importing the module runs its code)."""
    module_name, _, function_name = target.rpartition(":")
    try:
        function = getattr(_import_module(module_name), function_name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ValueError(f"verifier py:{target}: {exc}") from None
    if not callable(function):
        raise ValueError(f"verifier py:{target}: {function_name} is not callable")
    return function


def _import_module(name: str) -> ModuleType:
    """``importlib.import_module(name)``, also finding a module in the current
    directory, as ``python`` would for a script there (the ``thinktank`` command's
    own directory is on ``sys.path`` instead). Appended, so it shadows nothing."""
    top = name.partition(".")[0]
    here = str(Path.cwd())
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name != top:
            raise  # the module was found: something it imports was not
        if here not in sys.path:
            sys.path.append(here)
            return _import_module(name)
        raise ModuleNotFoundError(
            f"No module named {top!r} on PYTHONPATH or in the current directory ({here})",
            name=top,
        ) from None
