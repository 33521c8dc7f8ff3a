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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import ClassVar

from thinktank.aggregate import majority_vote
from thinktank.models.base import Model, Prompt, Sampling
from thinktank.problem import Problem
from thinktank.prompts import build_prompt
from thinktank.resolver import Reference, check_shape, named
from thinktank.router import FEATURES, METHODS, OBJECTIVES, Router
from thinktank.solution import Candidate, Partial, Solution
from thinktank.spec import option
from thinktank.strategies.base import Context, Strategy
from thinktank.strategies.registry import build_strategy
from thinktank.strategies.sampling import ManySamples, sample_candidates
from thinktank.strategies.search import Stepper, ValuedSearch
from thinktank.verify import answer_key
from thinktank.verify.verifiers import Verifier

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
    (``verifier``, formerly ``signal``) is ``vote`` (`vote_confidence`) or a verifier
    spec, e.g. ``self-eval`` (the answering model's P("Yes") that its winning answer is
    correct) or ``judge@MODEL``: the verifier's score of the winning answer. The
    last model's answer stands whatever its confidence. ``threshold=0`` never
    escalates; ``threshold=1`` always goes to the last model."""

    name: ClassVar[str] = "cascade"
    summary: ClassVar[str] = "cheap model first; escalate when its vote is not confident"
    example: ClassVar[str] = "cascade:models=smollm2+gemma3-270m,threshold=0.7"

    models: str = option(
        f"smollm2{POOL_SEPARATOR}gemma3-270m", "model specs, cheapest first, joined by +"
    )
    threshold: float = option(0.5, "confidence at which an answer stands (0: never escalate)")
    n: int = option(4, "samples each model votes with")
    verifier: str | Verifier = option(
        "vote", "confidence: vote (the winner's smoothed share) or a verifier", formerly="signal"
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.threshold <= 1:
            raise ValueError("threshold must be in [0, 1]")
        if not all(self.pool):
            raise ValueError(f"models must be model specs joined by {POOL_SEPARATOR!r}")
        if self.verifier != "vote":
            check_shape("verifier", self.verifier)

    def references(self) -> Iterator[Reference]:
        yield from (("model", spec) for spec in self.pool)
        if self.verifier != "vote":
            yield from named("verifier", self.verifier)

    @property
    def pool(self) -> list[str]:
        return _pool(self.models)

    def own_models(self) -> list[str]:
        return self.pool

    def solve(self, problem: Problem, ctx: Context) -> Solution:
        candidates: list[Candidate] = []
        trace = []
        # The verifier behind the confidence; None for the vote.
        verifier = None if self.verifier == "vote" else ctx.resolver.verifier(self.verifier)
        for rank, spec in enumerate(self.pool):
            model = ctx.resolver.model(spec)
            asking = replace(ctx, model=model)
            asked = sample_candidates(
                problem, asking, self.n, self.sampling(asking.model, problem.kind)
            )
            candidates += [replace(c, worker=model.name) for c in asked]
            vote = majority_vote([c.answer for c in asked], problem.kind)
            ctx.report_vote(vote)  # this rung's
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


#: How SpecReason's large model judges a drafted step: ``step-score`` (the paper's:
#: a 0-9 score of the last step) or ``value`` (a process reward of the reasoning so far).
SPEC_REASON_JUDGES = ("step-score", "value")
#: Each judge's scale (its judgements run from 0 to this) and default acceptance.
_JUDGE_SCALES = {"step-score": 9.0, "value": 1.0}
_DEFAULT_THRESHOLDS = {"step-score": 7.0, "value": 0.5}
#: What the large model is asked of each drafted step, worded after SpecReason's
#: prompt; its reply is begun so that its next token is the score.
STEP_SCORE_QUESTION = (
    "Judge only the last reasoning step: is it factually correct, and does it follow"
    " logically from the steps before it? Ignore style, wording and overall usefulness."
    " Give it a score from 0 to 9."
)
STEP_SCORE_REPLY = "The score of the last step is: "


def step_score(text: str) -> int:
    """SpecReason's score from the judge's one greedy token: the digit it wrote, 0 for
    anything else (the reference code's default, ``greedy``, scoring)."""
    token = text.strip()
    return int(token) if len(token) == 1 and token in "0123456789" else 0


def step_score_prompt(problem: Problem, model: Model, partial: Partial) -> Prompt:
    """The problem, the reasoning so far (its last step is the one judged), the
    question, and the judge's reply begun."""
    prompt = build_prompt(problem, model)
    if isinstance(prompt, str):
        return (f"{prompt}{partial.text}\n\nQuestion: {STEP_SCORE_QUESTION}\n"
                f"Answer: {STEP_SCORE_REPLY}")  # fmt: skip
    return [
        *prompt,
        {"role": "assistant", "content": partial.text},
        {"role": "user", "content": STEP_SCORE_QUESTION},
        {"role": "assistant", "content": STEP_SCORE_REPLY},
    ]


@dataclass
class SpecReason(ValuedSearch, Strategy):
    """Speculative reasoning (SpecReason, Pan et al., 2025) over ``models`` =
    SMALL+LARGE: the small model drafts each step; the large one judges the draft
    and, when the judgement is below ``threshold``, writes that step itself.

    ``judge=step-score`` (the paper's): the large model reads the reasoning so
    far and scores its last step, the draft, from 0 to 9 in one greedy token (one
    that is not a single digit scores 0, as in the reference code's default
    ``greedy`` scoring); the draft stands at ``threshold`` (default 7, the
    paper's) or more. ``judge=value`` (thinktank's earlier rule): a process reward
    of the reasoning so far (``value``, by default the large model's P(Yes) that
    it is correct), in [0, 1]; the draft stands at ``threshold`` (default 0.5)
    or more. ``value`` serves this judge only. Steps are cut as in the searches
    (``split``, ``step_tokens``, ``max_steps``).

    Deliberate differences: steps end at ``split`` (sentences by default; the
    paper's end at blank lines); the reference code's expected-score variant
    (``average``) is not offered."""

    name: ClassVar[str] = "spec-reason"
    summary: ClassVar[str] = "small model writes each step; large one scores it, rewrites weak ones"
    example: ClassVar[str] = "spec-reason:models=smollm2+gemma3-270m,threshold=6"

    models: str = option(
        f"smollm2{POOL_SEPARATOR}gemma3-270m", "SMALL+LARGE: the drafting and the judging model"
    )
    judge: str = option("step-score", "step-score (the large model scores 0-9) or value")
    threshold: float | None = option(
        None, "judgement at which a draft stands (None: 7, or 0.5 for value)"
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.judge not in SPEC_REASON_JUDGES:
            raise ValueError(f"judge must be one of {', '.join(SPEC_REASON_JUDGES)}")
        scale = _JUDGE_SCALES[self.judge]
        if self.threshold is not None and not 0 <= self.threshold <= scale:
            raise ValueError(f"threshold must be in [0, {scale:g}] for judge={self.judge}")
        if len(_pool(self.models)) != 2 or not all(_pool(self.models)):
            raise ValueError(f"models must be two model specs joined by {POOL_SEPARATOR!r}")

    @property
    def acceptance(self) -> float:
        """The judgement at or above which a draft stands."""
        return _DEFAULT_THRESHOLDS[self.judge] if self.threshold is None else self.threshold

    def references(self) -> Iterator[Reference]:
        yield from (("model", spec) for spec in _pool(self.models))
        yield from super().references()

    def solve(self, problem: Problem, ctx: Context) -> Solution:
        small, large = (replace(ctx, model=ctx.resolver.model(spec)) for spec in _pool(self.models))
        # The small model's steps are drafts; the large one's rewrites are the answer's own.
        drafts = Stepper(problem, small.at_stage("draft"), self)
        rewrites = Stepper(problem, large, self)
        judge = self._judgement(problem, ctx)
        key = "score" if self.judge == "step-score" else "value"
        partial, judged, trace = Partial(), 0.0, []
        while not partial.finished:
            proposed = self.step(drafts, [partial], [1])[0]
            if not proposed:  # the budget refused the call
                break
            judged = judge(proposed[0], large)
            writer, step = small, proposed[0]
            if judged < self.acceptance:
                rewritten = self.step(rewrites, [partial], [1])[0]
                if rewritten:
                    writer, step = large, rewritten[0]
            trace.append({"step": len(step.steps), key: round(judged, 4),
                          "written_by": writer.model.name})  # fmt: skip
            partial = step
        if not partial.steps:
            return Solution(answer=None, candidates=[], trace=trace)
        return drafts.answer([(partial, judged / _JUDGE_SCALES[self.judge])], trace)

    def _judgement(self, problem: Problem, ctx: Context) -> Callable[[Partial, Context], float]:
        """How the large model (in the context given) judges a drafted partial."""
        if self.judge == "value":
            reward = self.process_reward(problem, ctx)
            return lambda drafted, large: reward.values(problem, [drafted], large)[0]
        greedy = Sampling(temperature=0.0, max_tokens=1)

        def score(drafted: Partial, large: Context) -> float:
            prompt = step_score_prompt(problem, large.model, drafted)
            replies = large.at_stage("judge").generate_each([(prompt, 1, greedy)])[0]
            return step_score(replies[0].text) if replies else 0  # refused: not accepted

        return score


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
    example: ClassVar[str] = "route:runs=RUN1+RUN2,objective=accuracy"

    runs: str = option("", "the bench runs to learn from, ids joined by + (required)")
    method: str = option("clusters", "the router: clusters or classifier")
    features: str = option("tfidf", "query features: tfidf or minilm")
    objective: str = option("cost-of-pass", "what the router minimises: cost-of-pass or accuracy")
    clusters: int = option(4, "clusters of queries (method=clusters)")
    ledger: str = option("", "the ledger file holding the runs (empty: the usual one)")
    _router: Router | None = field(default=None, init=False, repr=False, compare=False)
    _training: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False,
                                      compare=False)  # fmt: skip

    def __post_init__(self) -> None:
        if not self.run_ids:
            raise ValueError(f"runs must name bench runs joined by {RUN_SEPARATOR!r}")
        for name, value, allowed in (("method", self.method, METHODS),
                                     ("features", self.features, FEATURES),
                                     ("objective", self.objective, OBJECTIVES)):  # fmt: skip
            if value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}")

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
        router = self.router(ctx)
        query = problem.transcript()  # a follow-up question is routed with its conversation
        seen = router.seen(query)
        if seen:  # its own outcome, which the evaluator saw, must not route it
            router = router.without(query)
        chances = router.chances([query])[0]
        configuration = router.data.configurations[router.choose([query])[0]]
        strategy = build_strategy(configuration.strategy)
        ctx.resolver.check(strategy.references())
        model = ctx.resolver.model(configuration.model)
        solution = strategy.solve(problem, replace(ctx, model=model))
        # Candidates that do not say who drew them were drawn by the routed-to model.
        candidates = [c if c.worker else replace(c, worker=model.name) for c in solution.candidates]
        routed = {
            "routed_to": configuration.label,
            "chances": {c.label: round(float(p), 4)
                        for c, p in zip(router.data.configurations, chances, strict=True)},
            "left_out_of_training": seen,
        }  # fmt: skip
        return replace(solution, candidates=candidates, trace=[routed, *solution.trace])
