"""Repeated sampling: one sample, or many turned into one answer.

By vote (plain, probability-weighted, pruned, confidence-filtered, adaptive)
or by a verifier's pick (best-of-n, best-of-majority). Every strategy here
samples through `sample_completions`: one batched call per round.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import ClassVar

from thinktank.aggregate import majority_vote
from thinktank.errors import BudgetExhausted
from thinktank.models.base import Completion, Model, Prompt, PruneRule, Sampling
from thinktank.models.profiles import sampling_profile
from thinktank.problem import Problem
from thinktank.prompts import build_prompt, stop_strings
from thinktank.resolver import Reference
from thinktank.solution import Candidate, Solution
from thinktank.strategies.base import Context, Strategy
from thinktank.verify import answer_key
from thinktank.verify.verifiers import parse_verifier


def sample_completions(
    problem: Problem,
    ctx: Context,
    n: int,
    sampling: Sampling,
    prune: PruneRule | None = None,
    *,
    prompt: Prompt | None = None,
) -> list[Completion]:
    """``n`` samples from one batched call; fewer (maybe none) if the budget cuts in.

    ``prompt`` defaults to the problem's standard prompt (`build_prompt`).
    """
    prompt = prompt if prompt is not None else build_prompt(problem, ctx.model)
    sampling = sampling.with_(stop=sampling.stop + stop_strings(problem, ctx.model))
    try:
        return ctx.generate(prompt, n, sampling, prune=prune)
    except BudgetExhausted:
        return []


def sample_candidates(
    problem: Problem,
    ctx: Context,
    n: int,
    sampling: Sampling,
    *,
    prompt: Prompt | None = None,
    worker: str | None = None,
) -> list[Candidate]:
    """`sample_completions`, each with its extracted answer (and ``worker``, if named)."""
    completions = sample_completions(problem, ctx, n, sampling, prompt=prompt)
    return [Candidate.from_completion(c, problem.kind, worker) for c in completions]


def continue_stream(sampling: Sampling, drawn: list[Completion], offset: int) -> Sampling:
    """Sampling that draws the next samples of the seeded stream ``drawn`` came from."""
    if not drawn or drawn[0].seed is None:
        return sampling
    return sampling.with_(seed=drawn[0].seed, sample_offset=offset)


#: The `Sampling` options a strategy's spec string may set.
SAMPLING_OPTIONS = (
    "temperature", "top_p", "top_k", "min_p", "max_tokens",
    "presence_penalty", "frequency_penalty", "repetition_penalty",
)  # fmt: skip


@dataclass
class SamplingOptions:
    """The sampling options a strategy's spec string may set; checked when it is built.

    An option left unset (None) takes the model's default for the kind of problem:
    its sampling profile (`thinktank.models.profiles`).
    """

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    max_tokens: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repetition_penalty: float | None = None

    def __post_init__(self) -> None:
        Sampling().with_(**self.options_set())  # checks them

    def options_set(self) -> dict[str, float | int]:
        """The sampling options this strategy sets (the rest are the model's)."""
        values = {name: getattr(self, name) for name in SAMPLING_OPTIONS}
        return {name: value for name, value in values.items() if value is not None}

    def sampling(self, model: Model, kind: str) -> Sampling:
        """How to sample ``model`` on a problem of ``kind``: its profile, then these options."""
        return sampling_profile(model).for_kind(kind).with_(**self.options_set())


@dataclass
class ManySamples(SamplingOptions):
    """Sampling options plus ``n``, the number of samples."""

    n: int = 8

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.n < 1:
            raise ValueError("n must be >= 1")


@dataclass
class Single(SamplingOptions, Strategy):
    """One sample (greedy by default): the baseline every other strategy must beat."""

    name: ClassVar[str] = "single"
    summary: ClassVar[str] = "one sample, its answer (greedy unless temperature > 0)"

    temperature: float | None = 0.0

    def solve(self, problem: Problem, ctx: Context) -> Solution:
        candidates = sample_candidates(problem, ctx, 1, self.sampling(ctx.model, problem.kind))
        answer = candidates[0].answer if candidates else None
        return Solution(answer=answer, candidates=candidates)


@dataclass
class SelfConsistency(ManySamples, Strategy):
    """Sample ``n`` reasoning paths and take the most frequent answer (Wang et al., 2022)."""

    name: ClassVar[str] = "self-consistency"
    summary: ClassVar[str] = "n samples in one batch, majority vote over equivalent answers"

    def solve(self, problem: Problem, ctx: Context) -> Solution:
        candidates = sample_candidates(problem, ctx, self.n, self.sampling(ctx.model, problem.kind))
        vote = majority_vote([c.answer for c in candidates], problem.kind)
        return Solution(answer=vote.winner, candidates=candidates, votes=vote.counts)


WEIGHTS = ("mean-logprob", "sequence-prob")


@dataclass
class WeightedVote(ManySamples, Strategy):
    """Self-consistency where each sample's vote counts by the model's confidence in it.

    ``mean-logprob`` weighs by the geometric mean token probability
    (exp of the mean log-probability); ``sequence-prob`` by the whole sample's
    probability, normalized over the n samples.
    """

    name: ClassVar[str] = "weighted-vote"
    summary: ClassVar[str] = "n samples, votes weighted by sequence or mean token probability"

    weight: str = "mean-logprob"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.weight not in WEIGHTS:
            raise ValueError(f"weight must be one of {', '.join(WEIGHTS)}")

    def solve(self, problem: Problem, ctx: Context) -> Solution:
        candidates = sample_candidates(problem, ctx, self.n, self.sampling(ctx.model, problem.kind))
        weights = confidence_weights(candidates, self.weight)
        vote = majority_vote([c.answer for c in candidates], problem.kind, weights)
        return Solution(answer=vote.winner, candidates=candidates, votes=vote.counts)


@dataclass
class ReasoningPrunedConsistency(ManySamples, Strategy):
    """RPC (Zhou et al., 2025): prune low-probability reasoning paths, then a
    perplexity-consistency vote.

    Each sample's probability is its geometric-mean token probability. Samples
    more than ``prune_sigmas`` standard deviations below the mean are dropped
    (the paper fits a Weibull mixture to find them; this is the simple
    stand-in), and the rest vote weighted by their probability.
    """

    name: ClassVar[str] = "rpc"
    summary: ClassVar[str] = "drop low-probability paths, then a probability-weighted vote"

    prune_sigmas: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()

    def solve(self, problem: Problem, ctx: Context) -> Solution:
        candidates = sample_candidates(problem, ctx, self.n, self.sampling(ctx.model, problem.kind))
        weights = confidence_weights(candidates, "mean-logprob")
        mean = sum(weights) / len(weights) if weights else 0.0
        spread = math.sqrt(sum((w - mean) ** 2 for w in weights) / len(weights)) if weights else 0.0
        floor = mean - self.prune_sigmas * spread
        kept = [(c, w) for c, w in zip(candidates, weights, strict=True) if w >= floor]
        vote = majority_vote([c.answer for c, _ in kept], problem.kind, [w for _, w in kept])
        trace = [{"kept": len(kept), "pruned": len(candidates) - len(kept), "floor": floor}]
        return Solution(answer=vote.winner, candidates=candidates, votes=vote.counts, trace=trace)


def confidence_weights(candidates: list[Candidate], weight: str) -> list[float]:
    """One weight per candidate; all 1.0 when the backend gave no log-probabilities."""
    if any(c.logprob is None for c in candidates):
        return [1.0] * len(candidates)
    if weight == "mean-logprob":
        return [math.exp(c.mean_logprob) for c in candidates]
    best = max(c.logprob for c in candidates)  # normalized: exp of raw sums underflows
    return [math.exp(c.logprob - best) for c in candidates]


@dataclass
class AdaptiveConsistency(SamplingOptions, Strategy):
    """Self-consistency that stops sampling once the vote is decided (Aggarwal et al., 2023).

    Samples come in batches of ``batch``; after each, the stopping rule asks how
    likely the leading answer is to stay ahead of the runner-up: with counts
    a and b, P(p_a > p_b) under a Beta(a + 1, b + 1) posterior. Sampling stops
    when that reaches ``confidence``, or at ``max_n`` samples. The batches are
    one seeded stream, the one self-consistency with the same seed draws from
    (on a benchmark, where samples are shared, exactly its first samples), and
    the prompt is prefilled once (prefix cache).

    The defaults (batches of 2, confidence 0.8) were chosen on held-out
    problems (chain_sum and products, seed 2; see benchmarks/RESULTS.md): the
    paper's 0.95 saved only 10-15% of SmolLM2's tokens, whose votes are spread.
    """

    name: ClassVar[str] = "adaptive-consistency"
    summary: ClassVar[str] = "samples in small batches until the vote is decided (Beta rule)"

    max_n: int = 16
    batch: int = 2
    confidence: float = 0.8

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 1 <= self.batch <= self.max_n:
            raise ValueError("batch must be in 1..max_n")
        if not 0.5 < self.confidence < 1:
            raise ValueError("confidence must be in (0.5, 1)")

    def solve(self, problem: Problem, ctx: Context) -> Solution:
        candidates: list[Candidate] = []
        trace = []
        vote = majority_vote([], problem.kind)
        sampling = self.sampling(ctx.model, problem.kind)
        while len(candidates) < self.max_n:
            n = min(self.batch, self.max_n - len(candidates))
            drawn = sample_completions(problem, ctx, n, sampling)
            if not drawn:  # the budget ran out
                break
            candidates += [Candidate.from_completion(c, problem.kind) for c in drawn]
            # The next batch continues the same seeded stream (its prompt is cached).
            sampling = continue_stream(sampling, drawn, len(candidates))
            vote = majority_vote([c.answer for c in candidates], problem.kind)
            decided = decision_confidence(list(vote.counts.values()))
            trace.append({"samples": len(candidates), "confidence": decided})
            if decided >= self.confidence:
                break
        return Solution(answer=vote.winner, candidates=candidates, votes=vote.counts, trace=trace)


@dataclass
class ComputeOptimal(ManySamples, Strategy):
    """Compute-optimal allocation across a batch (Snell et al., 2024): ``probe`` samples
    of every problem gauge its difficulty, the share of them not agreeing with their
    winner; the rest of a total of ``n`` samples a problem on average goes to the
    problems in proportion to a weight of that doubt (at most ``max_n`` a problem),
    and each answers by majority vote over all its samples. ``rule=doubt`` weighs by
    the doubt itself; ``rule=middle`` by doubt x (1 - doubt), which also starves
    the problems whose probe agrees on nothing (Snell et al. find the hardest
    problems gain least from more search). A unanimous probe gets nothing more. A
    problem solved alone (``thinktank.solve``) may take up to ``max_n``.

    A problem's samples are one seeded stream, self-consistency's: on a benchmark
    where samples are shared, exactly its first samples.
    """

    name: ClassVar[str] = "compute-optimal"
    summary: ClassVar[str] = "probe samples gauge difficulty; the batch's samples go to hard ones"
    batched: ClassVar[bool] = True

    n: int = 4
    probe: int = 2
    max_n: int = 16
    rule: str = "doubt"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 1 <= self.probe <= self.n <= self.max_n:
            raise ValueError("need 1 <= probe <= n <= max_n")
        if self.rule not in ALLOCATION_RULES:
            raise ValueError(f"rule must be one of {', '.join(ALLOCATION_RULES)}")

    def solve(self, problem: Problem, ctx: Context) -> Solution:
        return self.solve_batch([problem], [ctx])[0]

    def solve_batch(
        self, problems: Sequence[Problem], contexts: Sequence[Context]
    ) -> list[Solution]:
        jobs = list(zip(problems, contexts, strict=True))
        samplings = [self.sampling(ctx.model, problem.kind) for problem, ctx in jobs]
        with ThreadPoolExecutor(max_workers=max(1, min(8, len(jobs)))) as pool:
            probes = list(pool.map(
                lambda job, sampling: sample_completions(*job, self.probe, sampling),
                jobs, samplings,
            ))  # fmt: skip
            doubts = [_doubt(drawn, p.kind) for drawn, (p, _) in zip(probes, jobs, strict=True)]
            extra_total = (self.n - self.probe) * len(jobs)
            if len(jobs) == 1:
                extra_total = self.max_n - self.probe
            weights = [ALLOCATION_RULES[self.rule](d) for d in doubts]
            extras = allocate(weights, extra_total, self.max_n - self.probe)

            def finish(index: int) -> Solution:
                (problem, ctx), drawn = jobs[index], probes[index]
                more = []
                if extras[index] and drawn:
                    stream = continue_stream(samplings[index], drawn, len(drawn))
                    more = sample_completions(problem, ctx, extras[index], stream)
                candidates = [Candidate.from_completion(c, problem.kind) for c in drawn + more]
                vote = majority_vote([c.answer for c in candidates], problem.kind)
                trace = [{"probe_doubt": round(doubts[index], 4), "extra_samples": len(more)}]
                return Solution(vote.winner, candidates, votes=vote.counts, trace=trace)

            return list(pool.map(finish, range(len(jobs))))


#: How a problem's doubt weighs in the allocation.
ALLOCATION_RULES: dict[str, Callable[[float], float]] = {
    "doubt": lambda doubt: doubt,
    "middle": lambda doubt: doubt * (1 - doubt),
}


def _doubt(drawn: Sequence[Completion], kind: str) -> float:
    """The share of samples that do not give the winning answer (1 without samples)."""
    if not drawn:
        return 1.0
    vote = majority_vote([Candidate.from_completion(c, kind).answer for c in drawn], kind)
    return 1.0 - next(iter(vote.counts.values()), 0) / len(drawn)


def allocate(weights: Sequence[float], total: int, cap: int) -> list[int]:
    """Split ``total`` samples in proportion to ``weights``, at most ``cap`` each, by the
    highest-averages rule (each next sample to the largest weight / (given + 1));
    problems of weight 0 get none, so fewer than ``total`` may be given."""
    given = [0] * len(weights)
    queue = [(-w, i) for i, w in enumerate(weights) if w > 0 and cap > 0]
    heapq.heapify(queue)
    for _ in range(total):
        if not queue:
            break
        _, i = heapq.heappop(queue)
        given[i] += 1
        if given[i] < cap:
            heapq.heappush(queue, (-weights[i] / (given[i] + 1), i))
    return given


def decision_confidence(counts: list[float]) -> float:
    """P(the leading answer's share beats the runner-up's) under a Beta posterior."""
    from scipy.special import betainc  # slow to import; only this rule needs it

    if not counts:
        return 0.0
    ranked = [*sorted(counts, reverse=True), 0.0]
    leader, runner_up = ranked[0], ranked[1]
    # P(X > 1/2) for X ~ Beta(leader + 1, runner_up + 1), the leader's share of the two.
    return float(1.0 - betainc(leader + 1, runner_up + 1, 0.5))


@dataclass
class BestOfN(ManySamples, Strategy):
    """Sample n answers, score each with a verifier, keep the best-scored one.

    Ties (and equal scores) go to the answer sampled first. With an imperfect
    verifier, accuracy can fall as n grows ("Inference Scaling fLaws").
    """

    name: ClassVar[str] = "best-of-n"
    summary: ClassVar[str] = "n samples, the one a verifier scores highest (self-eval, ...)"

    verifier: str = "self-eval"

    def __post_init__(self) -> None:
        super().__post_init__()
        parse_verifier(self.verifier)  # a malformed spec fails when the strategy is built

    def references(self) -> Iterator[Reference]:
        yield "verifier", self.verifier

    def solve(self, problem: Problem, ctx: Context) -> Solution:
        candidates = sample_candidates(problem, ctx, self.n, self.sampling(ctx.model, problem.kind))
        return verified_choice(problem, ctx, candidates, self.verifier)


@dataclass
class BestOfMajority(ManySamples, Strategy):
    """Best-of-Majority (Di et al., 2025): only answers sampled often enough are
    candidates; among them the verifier's favourite wins.

    Filtering by frequency first keeps a flawed verifier from promoting a rare
    wrong answer, so accuracy should not degrade as n grows. With ``k`` > 1 it
    answers with the verifier's k best frequent answers (pass@k output: a
    benchmark's accuracy scores the first, and reports apart whether any is right).
    """

    name: ClassVar[str] = "best-of-majority"
    summary: ClassVar[str] = "answers with >= min_share of the votes, then the verifier's best"

    n: int = 16
    min_share: float = 0.125
    verifier: str = "self-eval"
    #: Answers to give (pass@k output): the verifier's k best frequent answers.
    k: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.min_share <= 1:
            raise ValueError("min_share must be in (0, 1]")
        if self.k < 1:
            raise ValueError("k must be >= 1")
        parse_verifier(self.verifier)

    def references(self) -> Iterator[Reference]:
        yield "verifier", self.verifier

    def solve(self, problem: Problem, ctx: Context) -> Solution:
        candidates = sample_candidates(problem, ctx, self.n, self.sampling(ctx.model, problem.kind))
        vote = majority_vote([c.answer for c in candidates], problem.kind)
        threshold = self.min_share * len(candidates)
        # The leader always stays in, even when no answer reaches the threshold.
        ranked = list(vote.counts.items())
        frequent = {answer_key(answer, problem.kind) for i, (answer, count) in enumerate(ranked)
                    if count >= threshold or i == 0}  # fmt: skip
        solution = verified_choice(
            problem,
            ctx,
            candidates,
            self.verifier,
            eligible=lambda c: answer_key(c.answer, problem.kind) in frequent,
        )
        solution.alternatives = list(solution.votes)[1 : self.k]
        return solution


def verified_choice(
    problem: Problem,
    ctx: Context,
    candidates: list[Candidate],
    verifier: str,
    eligible: Callable[[Candidate], bool] = lambda c: True,
) -> Solution:
    """Score the eligible answered candidates and answer with the best (first of ties).

    Only eligible candidates are verified (the others keep ``score=None``);
    ``votes`` ranks each distinct verified answer by its best score.
    """
    chosen = [c for c in candidates if c.answer is not None and eligible(c)]
    scores = iter(ctx.resolver.verifier(verifier).score(problem, chosen, ctx))
    scored = [
        replace(c, score=next(scores)) if c.answer is not None and eligible(c) else c
        for c in candidates
    ]
    verified = [c for c in scored if c.score is not None]
    best = max(verified, key=lambda c: c.score, default=None)  # max keeps the first of ties
    ranking: dict[str, tuple[str, float]] = {}  # answer key -> (first form, best score)
    for c in sorted(verified, key=lambda c: -c.score):
        ranking.setdefault(answer_key(c.answer, problem.kind), (c.answer, c.score))
    votes = dict(ranking.values())
    return Solution(answer=best.answer if best else None, candidates=scored, votes=votes)


@dataclass
class DeepConf(ManySamples, Strategy):
    """Confidence-filtered voting with early stopping (DeepConf-style, Fu et al., 2025).

    A trace's confidence is its weakest stretch: the lowest mean token
    log-probability over any ``window`` consecutive tokens. ``warmup`` traces
    are sampled in full and set the bar at the confidence that ``keep`` of them
    reach; the other traces are stopped as soon as a window falls below the
    bar (the tokens they would have written are saved). Traces under the bar
    are dropped and the rest vote, weighted by exp(confidence).
    """

    name: ClassVar[str] = "deepconf"
    summary: ClassVar[str] = (
        "confidence-weighted vote; low-confidence traces dropped or stopped early"
    )

    n: int = 16
    warmup: int = 4
    window: int = 16
    keep: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 1 <= self.warmup <= self.n:
            raise ValueError("warmup must be in 1..n")
        if self.window < 1:
            raise ValueError("window must be >= 1")
        if not 0 < self.keep <= 1:
            raise ValueError("keep must be in (0, 1]")

    def solve(self, problem: Problem, ctx: Context) -> Solution:
        sampling = self.sampling(ctx.model, problem.kind)
        warm = sample_completions(problem, ctx, self.warmup, sampling)
        bar = _quantile([lowest_window_confidence(c.logprobs, self.window) for c in warm
                         if c.logprobs], 1 - self.keep)  # fmt: skip
        rest: list[Completion] = []
        if warm and self.n > self.warmup:
            window = self.window

            def weak(logprobs: Sequence[float]) -> bool:
                return len(logprobs) >= window and sum(logprobs[-window:]) / window < bar

            rest = sample_completions(
                problem,
                ctx,
                self.n - self.warmup,
                continue_stream(sampling, warm, self.warmup),
                prune=weak,
            )
        candidates = [
            replace(
                Candidate.from_completion(c, problem.kind),
                score=lowest_window_confidence(c.logprobs, self.window) if c.logprobs else None,
            )
            for c in warm + rest
        ]
        voters = [c for c in candidates if c.finish_reason != "pruned"
                  and (c.score is None or c.score >= bar)]  # fmt: skip
        vote = majority_vote(
            [c.answer for c in voters],
            problem.kind,
            [1.0 if c.score is None else math.exp(c.score) for c in voters],
        )
        pruned = sum(c.finish_reason == "pruned" for c in candidates)
        trace = [{"bar": bar, "voters": len(voters), "pruned": pruned}]
        return Solution(answer=vote.winner, candidates=candidates, votes=vote.counts, trace=trace)


def lowest_window_confidence(logprobs: Sequence[float], window: int) -> float:
    """The lowest mean log-probability over ``window`` consecutive tokens (all, if fewer)."""
    if len(logprobs) <= window:
        return sum(logprobs) / len(logprobs) if logprobs else 0.0
    total = sum(logprobs[:window])
    lowest = total
    for i in range(window, len(logprobs)):
        total += logprobs[i] - logprobs[i - window]
        lowest = min(lowest, total)
    return lowest / window


def _quantile(values: list[float], q: float) -> float:
    """The q-quantile of values (lower interpolation); -inf for no values: nothing is cut."""
    if not values:
        return -math.inf
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
