"""Routing between models: answer with a cheap model, and pay for a dearer one only
when the cheap answer is not confident (FrugalGPT-style cascades); send each query
to the configuration a router learned from the ledger expects to be cheapest per
correct answer (Hybrid LLM, the Avengers); or let the cheap model write each step
and the dear one judge it, rewriting only the weak steps (SpecReason).

Every model's calls go through the same meter, so the ledger shows which model
paid for what, and one budget caps them all.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import ClassVar

from thinktank.aggregate import majority_vote
from thinktank.problem import Problem
from thinktank.resolver import Reference
from thinktank.router import FEATURES, METHODS, OBJECTIVES, Router
from thinktank.solution import Candidate, Partial, Solution
from thinktank.strategies.base import Context, Strategy
from thinktank.strategies.sampling import ManySamples, sample_candidates
from thinktank.strategies.search import Stepper, ValuedSearch
from thinktank.verify import answer_key
from thinktank.verify.verifiers import parse_verifier

#: Separates the model specs of a pool in a spec string (specs may hold "/" and ":").
POOL_SEPARATOR = "+"


def vote_confidence(winner_votes: float, samples: int) -> float:
    """The winner's smoothed vote share, votes / (samples + 1): one unseen sample's worth
    of doubt, so even a unanimous vote stays below 1 and no answer at all is 0."""
    return winner_votes / (samples + 1)


@dataclass
class Cascade(ManySamples, Strategy):
    """A cascade over ``models`` (cheapest first, joined by "+"): each in turn answers
    by self-consistency over ``n`` samples; its answer stands when its confidence is
    at least ``threshold``, else the next model is asked. The confidence
    (``signal``) is ``vote`` (`vote_confidence`) or a verifier spec, e.g.
    ``self-eval`` (the answering model's P("Yes") that its winning answer is
    correct) or ``judge@MODEL``: the verifier's score of the winning answer. The
    last model's answer stands whatever its confidence. ``threshold=0`` never
    escalates; ``threshold=1`` always goes to the last model."""

    name: ClassVar[str] = "cascade"
    summary: ClassVar[str] = "cheap model first; escalate when its vote is not confident"

    models: str = f"smollm2{POOL_SEPARATOR}gemma3-270m"
    threshold: float = 0.5
    n: int = 4
    signal: str = "vote"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.threshold <= 1:
            raise ValueError("threshold must be in [0, 1]")
        if not all(self.pool):
            raise ValueError(f"models must be model specs joined by {POOL_SEPARATOR!r}")
        if self.signal != "vote":
            parse_verifier(self.signal)

    def references(self) -> Iterator[Reference]:
        yield from (("model", spec) for spec in self.pool)
        if self.signal != "vote":
            yield "verifier", self.signal

    @property
    def pool(self) -> list[str]:
        return _pool(self.models)

    def solve(self, problem: Problem, ctx: Context) -> Solution:
        candidates: list[Candidate] = []
        trace = []
        # The verifier behind the confidence; None for the vote.
        verifier = None if self.signal == "vote" else ctx.resolver.verifier(self.signal)
        for rank, spec in enumerate(self.pool):
            model = ctx.resolver.model(spec)
            asking = replace(ctx, model=model)
            asked = sample_candidates(
                problem, asking, self.n, self.sampling(asking.model, problem.kind)
            )
            candidates += [replace(c, worker=model.name) for c in asked]
            vote = majority_vote([c.answer for c in asked], problem.kind)
            if verifier is None:
                confidence = vote_confidence(next(iter(vote.counts.values()), 0), len(asked))
            else:  # the verifier's score of a sample that gives the winning answer
                winning = _giving(asked, vote.winner, problem.kind)
                confidence = verifier.score(problem, [winning], asking)[0] if winning else 0.0
            trace.append({"model": model.name, "answer": vote.winner,
                          "confidence": round(confidence, 4)})  # fmt: skip
            if confidence >= self.threshold or rank == len(self.pool) - 1:
                return Solution(answer=vote.winner, candidates=candidates, votes=vote.counts,
                                trace=trace)  # fmt: skip
        raise AssertionError("unreachable: the last model always answers")


def _giving(candidates: list[Candidate], answer: str | None, kind: str) -> Candidate | None:
    """The first candidate whose answer is equivalent to ``answer``."""
    if answer is None:
        return None
    key = answer_key(answer, kind)
    return next((c for c in candidates if c.answer and answer_key(c.answer, kind) == key), None)


def _pool(models: str) -> list[str]:
    return [spec.strip() for spec in models.split(POOL_SEPARATOR)]


@dataclass
class SpecReason(ValuedSearch, Strategy):
    """Speculative reasoning (SpecReason, Pan et al., 2025) over ``models`` = SMALL+LARGE:
    the small model writes each step; the large one values the reasoning so far with
    a process reward (``value``, by default its own P(Yes) that it is correct) and,
    when the value is below ``threshold``, writes that step itself instead. Steps
    are cut as in the searches (``split``, ``step_tokens``, ``max_steps``)."""

    name: ClassVar[str] = "spec-reason"
    summary: ClassVar[str] = "small model writes each step; large one scores it, rewrites weak ones"

    models: str = f"smollm2{POOL_SEPARATOR}gemma3-270m"
    threshold: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.threshold <= 1:
            raise ValueError("threshold must be in [0, 1]")
        if len(_pool(self.models)) != 2 or not all(_pool(self.models)):
            raise ValueError(f"models must be two model specs joined by {POOL_SEPARATOR!r}")

    def references(self) -> Iterator[Reference]:
        yield from (("model", spec) for spec in _pool(self.models))
        yield from super().references()

    def solve(self, problem: Problem, ctx: Context) -> Solution:
        small, large = (replace(ctx, model=ctx.resolver.model(spec)) for spec in _pool(self.models))
        drafts, rewrites = Stepper(problem, small, self), Stepper(problem, large, self)
        reward = self.process_reward(problem, ctx)
        partial, value, trace = Partial(), 0.0, []
        while not partial.finished:
            proposed = self.step(drafts, [partial], [1])[0]
            if not proposed:  # the budget refused the call
                break
            value = reward.values(problem, proposed, large)[0]
            writer, step = small, proposed[0]
            if value < self.threshold:
                rewritten = self.step(rewrites, [partial], [1])[0]
                if rewritten:
                    writer, step = large, rewritten[0]
            trace.append({"step": len(step.steps), "value": round(value, 4),
                          "written_by": writer.model.name})  # fmt: skip
            partial = step
        if not partial.steps:
            return Solution(answer=None, candidates=[], trace=trace)
        return drafts.answer([(partial, value)], trace)


#: Separates the bench run ids a router learns from.
RUN_SEPARATOR = "+"


@dataclass
class Route(Strategy):
    """Send each query to one configuration (a strategy on a model) chosen before
    anything is spent, by a `Router` learned from the bench runs ``runs`` (ids joined
    by "+") in the ledger (``ledger``: a path; default the usual one; on a server, the
    server's own, and a request cannot name one). ``method``:
    clusters (the Avengers) or classifier; ``features``: tfidf or minilm;
    ``objective``: cost-of-pass (the lowest expected cost per correct answer) or
    accuracy. A query that was a training problem is routed by the router learned
    without it, so its own outcome never decides; learn from runs over other
    problems (a `thinktank.tune.split_suite` development split, say) to route with all the data.
    """

    name: ClassVar[str] = "route"
    summary: ClassVar[str] = "a router learned from bench runs picks strategy and model per query"

    runs: str = ""
    method: str = "clusters"
    features: str = "tfidf"
    objective: str = "cost-of-pass"
    clusters: int = 4
    ledger: str = ""
    _router: Router | None = field(default=None, init=False, repr=False, compare=False)
    _training: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False,
                                      compare=False)  # fmt: skip

    def __post_init__(self) -> None:
        if not self.run_ids:
            raise ValueError(f"runs must name bench runs joined by {RUN_SEPARATOR!r}")
        for option, value, allowed in (("method", self.method, METHODS),
                                       ("features", self.features, FEATURES),
                                       ("objective", self.objective, OBJECTIVES)):  # fmt: skip
            if value not in allowed:
                raise ValueError(f"{option} must be one of {', '.join(allowed)}")

    @property
    def run_ids(self) -> list[str]:
        return [run.strip() for run in self.runs.split(RUN_SEPARATOR) if run.strip()]

    def references(self) -> Iterator[Reference]:
        if self.ledger:
            yield "ledger", self.ledger

    def router(self, ctx: Context) -> Router:
        """The router, learned on first use (once, however many problems run at once)."""
        with self._training:
            if self._router is None:
                data = ctx.resolver.routing_data(self.run_ids, self.ledger)
                self._router = Router(data, self.method, self.features, self.objective,
                                      self.clusters)  # fmt: skip
            return self._router

    def solve(self, problem: Problem, ctx: Context) -> Solution:
        from thinktank.strategies import build_strategy

        router = self.router(ctx)
        seen = router.seen(problem.prompt)
        if seen:  # its own outcome, which the evaluator saw, must not route it
            router = router.without(problem.prompt)
        chances = router.chances([problem.prompt])[0]
        configuration = router.data.configurations[router.choose([problem.prompt])[0]]
        strategy = build_strategy(configuration.strategy)
        ctx.resolver.check(strategy.references())
        model = ctx.resolver.model(configuration.model)
        solution = strategy.solve(problem, replace(ctx, model=model))
        routed = {
            "routed_to": configuration.label,
            "chances": {c.label: round(float(p), 4)
                        for c, p in zip(router.data.configurations, chances, strict=True)},
            "left_out_of_training": seen,
        }  # fmt: skip
        return replace(solution, trace=[routed, *solution.trace])
