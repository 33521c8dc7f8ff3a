"""Repeated sampling: one sample, or many turned into one answer.

By vote (plain, probability-weighted, pruned, confidence-filtered, adaptive)
or by a verifier's pick (best-of-n, best-of-majority). Every strategy here
samples through `sample_completions`: one batched call per round.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import ClassVar

import numpy as np

from thinktank.aggregate import Vote, majority_vote
from thinktank.errors import BudgetExhausted
from thinktank.models.base import (
    Completion,
    Model,
    Prompt,
    PruneRule,
    SampleProgress,
    Sampling,
)
from thinktank.models.profiles import sampling_profile
from thinktank.problem import Kind, Problem
from thinktank.prompts import build_prompt, stop_strings
from thinktank.resolver import Reference, check_shape, named
from thinktank.solution import Candidate, Solution
from thinktank.spec import option
from thinktank.strategies.base import Context, Strategy
from thinktank.verify import answer_key
from thinktank.verify.verifiers import Verifier


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

    temperature: float | None = option(None, "sampling temperature, 0 greedy (None: the model's)")
    top_p: float | None = option(
        None, "nucleus: keep the likeliest tokens up to this probability (None: the model's)"
    )
    top_k: int | None = option(None, "keep the k likeliest tokens, 0 all (None: the model's)")
    min_p: float | None = option(
        None, "drop tokens under min_p times the likeliest's probability (None: the model's)"
    )
    max_tokens: int | None = option(None, "tokens a sample may write at most (None: the model's)")
    presence_penalty: float | None = option(
        None, "subtracted once from each token the sample wrote (None: the model's)"
    )
    frequency_penalty: float | None = option(
        None, "subtracted per time the sample wrote the token (None: the model's)"
    )
    repetition_penalty: float | None = option(
        None, "divides the logits of tokens already seen, 1 off (None: the model's)"
    )

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

    n: int = option(8, "samples drawn")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.n < 1:
            raise ValueError("n must be >= 1")


@dataclass
class Single(SamplingOptions, Strategy):
    """One sample (greedy by default): the baseline every other strategy must beat."""

    name: ClassVar[str] = "single"
    summary: ClassVar[str] = "one sample, its answer (greedy unless temperature > 0)"
    example: ClassVar[str] = "single:temperature=0.7"

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
    example: ClassVar[str] = "self-consistency:n=16,temperature=0.9"

    def solve(self, problem: Problem, ctx: Context) -> Solution:
        candidates = sample_candidates(problem, ctx, self.n, self.sampling(ctx.model, problem.kind))
        vote = majority_vote([c.answer for c in candidates], problem.kind)
        ctx.report_vote(vote)
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
    example: ClassVar[str] = "weighted-vote:n=16,weight=sequence-prob"

    weight: str = option(
        "mean-logprob", "a vote's weight: mean-logprob (mean token probability) or sequence-prob"
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.weight not in WEIGHTS:
            raise ValueError(f"weight must be one of {', '.join(WEIGHTS)}")

    def solve(self, problem: Problem, ctx: Context) -> Solution:
        candidates = sample_candidates(problem, ctx, self.n, self.sampling(ctx.model, problem.kind))
        weights = confidence_weights(candidates, self.weight)
        vote = majority_vote([c.answer for c in candidates], problem.kind, weights)
        ctx.report_vote(vote)
        return Solution(answer=vote.winner, candidates=candidates, votes=vote.counts)


#: RPC's ways to prune reasoning paths before the vote (`ReasoningPrunedConsistency`).
RPC_PRUNING = ("weibull", "sigma", "none")


@dataclass
class ReasoningPrunedConsistency(ManySamples, Strategy):
    """RPC, Reasoning-Pruning Perplexity Consistency (Zhou et al., 2025, "Bridging
    Internal Probability and Self-Consistency"), as in the authors' code
    (``compute_rpc.py``): Reasoning Pruning, then Perplexity Consistency.

    A path's probability p is its geometric-mean token probability, exp(mean
    logprob), as the authors' code uses. Reasoning Pruning (``prune=weibull``) fits
    a mixture of two Weibull distributions to the n probabilities by maximum
    likelihood (weight of the first in [0.2, 0.8], shapes and scales >= 0.01, from
    (0.5, 1, 1, 1.5, 2), as the authors do); the component of the higher mean is the
    high-probability one, and a path is pruned when it more likely belongs to the
    other one *and* its p is below the mean p (`weibull_pruned`). Perplexity
    Consistency then scores each answer by the summed p of the distinct reasoning
    paths reaching it: identical texts are one path, counted once (else it would be
    a probability-weighted vote), and the best-scored answer wins (ties: the first
    sampled). ``prune=none`` is Perplexity Consistency alone (the paper's PC).

    Deliberate differences: the fit's log-likelihood floors each density at 1e-300
    so a path at a density's zero cannot make it infinite; a path is identified by
    its text alone (the authors' code by text and probability, which batching can
    perturb in the last bits). Without log-probabilities (some remote backends)
    nothing is pruned and each distinct path counts 1. thinktank's earlier rpc is
    ``rpc:prune=sigma,unique_paths=false``: paths more than ``prune_sigmas``
    standard deviations below the mean p are dropped, every sample votes by its p.
    """

    name: ClassVar[str] = "rpc"
    summary: ClassVar[str] = (
        "prune low-probability paths (Weibull mixture), then sum p over distinct paths"
    )
    example: ClassVar[str] = "rpc:n=8,prune=sigma,unique_paths=false"

    prune: str = option("weibull", "pruning before the vote: weibull (mixture fit), sigma or none")
    prune_sigmas: float = option(
        1.0, "with prune=sigma: paths this many std devs below the mean p are cut"
    )
    unique_paths: bool = option(
        True, "identical paths count once (false: every sample votes by its p)"
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.prune not in RPC_PRUNING:
            raise ValueError(f"prune must be one of {', '.join(RPC_PRUNING)}")
        if self.prune_sigmas < 0:
            raise ValueError("prune_sigmas must be >= 0")

    def solve(self, problem: Problem, ctx: Context) -> Solution:
        candidates = sample_candidates(problem, ctx, self.n, self.sampling(ctx.model, problem.kind))
        probabilities = confidence_weights(candidates, "mean-logprob")
        known = all(c.mean_logprob is not None for c in candidates)
        if self.prune == "weibull" and known:
            pruned = weibull_pruned(probabilities)
        elif self.prune == "sigma" and known:
            pruned = sigma_pruned(probabilities, self.prune_sigmas)
        else:
            pruned = [False] * len(candidates)
        seen: set[str] = set()
        voters, weights, duplicates = [], [], 0
        for candidate, p, cut in zip(candidates, probabilities, pruned, strict=True):
            if cut:
                continue
            if self.unique_paths and candidate.text in seen:
                duplicates += 1
                continue
            seen.add(candidate.text)
            voters.append(candidate.answer)
            weights.append(p)
        vote = majority_vote(voters, problem.kind, weights)
        ctx.report_vote(vote)
        trace = [{"kept": len(voters), "pruned": sum(pruned), "duplicates": duplicates}]
        return Solution(answer=vote.winner, candidates=candidates, votes=vote.counts, trace=trace)


def weibull_pruned(probabilities: Sequence[float]) -> list[bool]:
    """RPC's Reasoning Pruning: per path, whether it goes (see `ReasoningPrunedConsistency`).

    A path below the mean probability is pruned when the fitted two-Weibull
    mixture's low component explains it better than the high one."""
    from scipy.optimize import minimize  # slow to import; only this rule needs it

    p = np.asarray(probabilities, dtype=float)
    below = _below(p, p.mean() if len(p) else 0.0)
    if not below.any():  # nothing could be pruned: no fit needed
        return [False] * len(p)

    def densities(params: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        w1, k1, lam1, k2, lam2 = params
        return w1 * _weibull_pdf(p, k1, lam1), (1 - w1) * _weibull_pdf(p, k2, lam2)

    def negative_log_likelihood(params: np.ndarray) -> float:
        first, second = densities(params)
        return -float(np.sum(np.log(np.maximum(first + second, 1e-300))))

    with np.errstate(all="ignore"):  # the optimiser probes extreme shapes
        fit = minimize(
            negative_log_likelihood,
            x0=[0.5, 1.0, 1.0, 1.5, 2.0],
            bounds=[(0.2, 0.8), (0.01, None), (0.01, None), (0.01, None), (0.01, None)],
        )
        first, second = densities(fit.x)
    _, k1, lam1, k2, lam2 = fit.x
    if _weibull_mean(k1, lam1) < _weibull_mean(k2, lam2):  # the first is the high one
        first, second = second, first
    return [bool(b) for b in below & (first < second)]


def _weibull_pdf(x: np.ndarray, shape: float, scale: float) -> np.ndarray:
    return (shape / scale) * (x / scale) ** (shape - 1) * np.exp(-((x / scale) ** shape))


def _weibull_mean(shape: float, scale: float) -> float:
    return scale * math.gamma(1 + 1 / shape)


def sigma_pruned(probabilities: Sequence[float], sigmas: float) -> list[bool]:
    """Per path, whether its probability is more than ``sigmas`` standard deviations
    below the mean (thinktank's earlier stand-in for RPC's pruning)."""
    p = np.asarray(probabilities, dtype=float)
    floor = p.mean() - sigmas * p.std() if len(p) else 0.0
    return [bool(b) for b in _below(p, floor)]


def _below(p: np.ndarray, floor: float) -> np.ndarray:
    # Rounding can put the mean of equal values just above them all; equal is not below.
    return (p < floor) & ~np.isclose(p, floor, rtol=1e-9, atol=0.0)


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
    """Self-consistency that stops sampling once the vote is decided (Aggarwal et al.,
    2023, "Let's Sample Step by Step": Adaptive-Consistency, its Beta stopping rule).

    Samples come in batches of ``batch``; after each, the stopping rule asks how
    likely the leading answer is to stay ahead of the runner-up: with counts
    a and b, P(p_a > p_b) under a Beta(a + 1, b + 1) posterior. Sampling stops
    when that reaches ``confidence``, or at ``max_n`` samples. The batches are
    one seeded stream, the one self-consistency with the same seed draws from
    (on a benchmark, where samples are shared, exactly its first samples), and
    the prompt is prefilled once (prefix cache).

    The defaults are the paper's and its code's: one sample at a time, confidence
    0.95, at most 40 samples. The one deliberate difference is ``batch``: more than
    one sample per round shares a batched decode, and may draw up to batch - 1
    samples past the point where the rule would have stopped. thinktank's earlier
    defaults, tuned on the problems they were reported on (benchmarks/RESULTS.md,
    issue 4), are the spec ``adaptive-consistency:max_n=16,batch=2,confidence=0.8``.
    """

    name: ClassVar[str] = "adaptive-consistency"
    summary: ClassVar[str] = "samples one at a time until the vote is decided (Beta rule)"
    example: ClassVar[str] = "adaptive-consistency:max_n=16,batch=2,confidence=0.8"

    max_n: int = option(40, "samples at most")
    batch: int = option(1, "samples drawn per round")
    confidence: float = option(0.95, "stop once P(the leader stays ahead) reaches this")

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
            ctx.report_vote(vote)
            decided = decision_confidence(list(vote.counts.values()))
            trace.append({"samples": len(candidates), "confidence": decided})
            if decided >= self.confidence:
                break
        return Solution(answer=vote.winner, candidates=candidates, votes=vote.counts, trace=trace)


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
    example: ClassVar[str] = "best-of-n:n=8,verifier=self-eval"

    verifier: str | Verifier = option(
        "self-eval", "verifier that scores each sample (self-eval, judge@MODEL, ...)"
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        check_shape("verifier", self.verifier)  # a malformed spec fails when it is built

    def references(self) -> Iterator[Reference]:
        yield from named("verifier", self.verifier)

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
    example: ClassVar[str] = "best-of-majority:n=16,min_share=0.125,k=2"

    n: int = 16
    min_share: float = option(0.125, "share of the votes an answer needs to be a candidate")
    verifier: str | Verifier = option(
        "self-eval", "verifier that ranks the candidates (self-eval, judge@MODEL, ...)"
    )
    k: int = option(1, "answers to give: the verifier's k best candidates (pass@k output)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.min_share <= 1:
            raise ValueError("min_share must be in (0, 1]")
        if self.k < 1:
            raise ValueError("k must be >= 1")
        if self.k > self.n:
            raise ValueError(f"k={self.k} answers cannot come from n={self.n} samples: k <= n")
        if self.k * self.min_share > 1 + 1e-9:
            raise ValueError(
                f"at most {int(1 / self.min_share)} answers can each hold min_share="
                f"{self.min_share:g} of the votes, so k={self.k} is impossible:"
                " lower k or min_share"
            )
        check_shape("verifier", self.verifier)

    def references(self) -> Iterator[Reference]:
        yield from named("verifier", self.verifier)

    def solve(self, problem: Problem, ctx: Context) -> Solution:
        candidates = sample_candidates(problem, ctx, self.n, self.sampling(ctx.model, problem.kind))
        vote = majority_vote([c.answer for c in candidates], problem.kind)
        ctx.report_vote(vote)  # the frequency vote; the verifier then picks among the frequent
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
    verifier: str | Verifier,
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
    """DeepConf (Fu et al., 2025, "Deep Think with Confidence"): traces the model was
    unsure of are filtered out or stopped early, and the rest vote weighted by
    confidence. As in the paper (section 3) and the authors' scripts
    (``helper.py``, ``deepconf-online.py``, ``analysis_offline.py``):

    - Token confidence: C_i = -(1/k) sum_j log P_i(j) over the ``top_logprobs`` = k
      likeliest tokens at position i (`token_confidences`; k = 20, what the authors
      ask vLLM for). Higher is surer.
    - Group confidence: the mean C_i over each ``window`` consecutive tokens, sliding
      by one token (`group_confidences`; 2048, the authors' group size); a trace
      shorter than the window is one group.
    - Trace confidence (``measure``, `TRACE_CONFIDENCES`): ``lowest`` group,
      ``bottom-10`` (the mean of its lowest 10% of groups), ``tail`` (the mean C_i
      of its last ``window`` tokens, the authors' 2048) or ``mean`` (the paper's
      average-confidence baseline).
    - ``mode=offline``: all ``n`` traces are sampled; those with an answer set the
      bar at their 100(1 - ``keep``) percentile (numpy's linear interpolation, as
      the authors); traces at or over it vote, each weighted by its confidence.
      ``keep`` = 0.1 is DeepConf-low, 0.9 DeepConf-high.
    - ``mode=online`` (Algorithm 2; ``measure`` must be ``lowest``): ``warmup`` =
      N_init traces are sampled in full and set the bar s at the same percentile of
      their lowest group confidences; the other n - warmup traces stop as soon as
      their latest full group's confidence falls below s (the tokens they would
      have written are saved). Warm-up traces at or over s and the traces that
      finished with a lowest group at or over s vote, weighted by it.

    Defaults: the paper's N_init = 16, keep 10% (DeepConf-low, the authors' online
    script), window 2048, k = 20; ``n`` = 32 is a choice (the paper's budgets are
    256-512 traces). Deliberate differences: the paper's adaptive sampling (stop
    drawing traces once the leading answer holds tau of the vote) is left out, as
    in the authors' online script: the traces after the warm-up are one batch.
    Top logprobs are keyed by token text, so two tokens that read alike count
    once (the likelier), and vLLM's extra entry for a sampled token outside the
    top k is not added; positions without top logprobs (some remote servers) are
    skipped. On traces shorter than ``window`` nothing is stopped early and the
    lowest group is the mean: for short budgets set ``window`` to a fraction of
    ``max_tokens``. Warm-up samples ask for top logprobs, so a benchmark does not
    share them with other strategies. ``confidence=sampled-logprob`` makes C_i
    the sampled token's logprob and weighs votes by exp(confidence):
    ``deepconf:n=16,warmup=4,window=16,keep=0.5,confidence=sampled-logprob`` is
    thinktank's earlier deepconf (whose bar used the lower, not linear, quantile).
    """

    name: ClassVar[str] = "deepconf"
    summary: ClassVar[str] = (
        "top-k token confidence; weak traces dropped (offline) or stopped early (online)"
    )
    example: ClassVar[str] = "deepconf:n=32,warmup=16,keep=0.9"

    n: int = 32
    warmup: int = option(16, "online: traces sampled in full to set the confidence bar")
    window: int = option(2048, "tokens per group whose mean token confidence is taken")
    keep: float = option(0.1, "share of traces kept: 0.1 DeepConf-low, 0.9 DeepConf-high")
    mode: str = option("online", "online (weak traces stopped early) or offline (filtered after)")
    measure: str = option("lowest", "a trace's confidence: lowest group, bottom-10, tail or mean")
    top_logprobs: int = option(20, "likeliest tokens per position a token's confidence averages")
    confidence: str = option(
        "top-k", "token confidence: top-k (mean -logprob of the top k) or sampled-logprob"
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mode not in ("online", "offline"):
            raise ValueError("mode must be online or offline")
        if self.measure not in TRACE_CONFIDENCES:
            raise ValueError(f"measure must be one of {', '.join(TRACE_CONFIDENCES)}")
        if self.mode == "online" and self.measure != "lowest":
            raise ValueError("online DeepConf stops on group confidence: measure must be lowest")
        if self.mode == "online" and not 1 <= self.warmup <= self.n:
            raise ValueError(f"warmup must be in 1..n (n={self.n}, warmup={self.warmup})")
        if self.window < 1:
            raise ValueError("window must be >= 1")
        if not 0 < self.keep <= 1:
            raise ValueError("keep must be in (0, 1]")
        if not 1 <= self.top_logprobs <= 20:
            raise ValueError("top_logprobs must be in 1..20")
        if self.confidence not in TOKEN_CONFIDENCES:
            raise ValueError(f"confidence must be one of {', '.join(TOKEN_CONFIDENCES)}")

    def sampling(self, model: Model, kind: str) -> Sampling:
        sampling = super().sampling(model, kind)
        if self.confidence == "top-k":
            return sampling.with_(top_logprobs=self.top_logprobs)
        return sampling

    def confidences_of(
        self, logprobs: Sequence[float] | None, top: Sequence[Mapping[str, float]] | None
    ) -> list[float] | None:
        """A trace's confidence per token, from its logprobs and top logprobs; None
        when the backend gave neither."""
        if self.confidence == "sampled-logprob":
            return list(logprobs) if logprobs else None
        return token_confidences(top) if top else None

    def weight(self, confidence: float) -> float:
        """A voter's weight: its confidence (positive for top-k; exp of a logprob)."""
        return math.exp(confidence) if self.confidence == "sampled-logprob" else confidence

    def solve(self, problem: Problem, ctx: Context) -> Solution:
        sampling = self.sampling(ctx.model, problem.kind)
        if self.mode == "offline":
            candidates = self._scored(sample_completions(problem, ctx, self.n, sampling), problem)
            bar = keep_bar([c.score for c in candidates if c.answer is not None], self.keep)
        else:
            warm = sample_completions(problem, ctx, self.warmup, sampling)
            candidates = self._scored(warm, problem)
            bar = keep_bar([c.score for c in candidates], self.keep)
            if warm and self.n > self.warmup:
                ctx.report_vote(self._vote(candidates, bar, problem.kind)[1])  # the warm-up's
                stop = GroupConfidenceStop(bar, self.window, self.confidences_of)
                rest = sample_completions(
                    problem,
                    ctx,
                    self.n - self.warmup,
                    continue_stream(sampling, warm, self.warmup),
                    prune=stop if math.isfinite(bar) else None,
                )
                candidates += self._scored(rest, problem)
        voters, vote = self._vote(candidates, bar, problem.kind)
        ctx.report_vote(vote)
        pruned = sum(c.finish_reason == "pruned" for c in candidates)
        trace = [{"bar": bar, "voters": len(voters), "pruned": pruned}]
        return Solution(answer=vote.winner, candidates=candidates, votes=vote.counts, trace=trace)

    def _vote(
        self, candidates: list[Candidate], bar: float, kind: Kind
    ) -> tuple[list[Candidate], Vote]:
        """The candidates that vote (not pruned, at or over the bar) and their vote,
        weighted by confidence (unweighted when any confidence is unknown)."""
        voters = [c for c in candidates if c.finish_reason != "pruned"
                  and (c.score is None or c.score >= bar)]  # fmt: skip
        unweighted = any(c.score is None for c in voters)
        weights = [1.0 if unweighted else self.weight(c.score) for c in voters]
        return voters, majority_vote([c.answer for c in voters], kind, weights)

    def _scored(self, completions: Sequence[Completion], problem: Problem) -> list[Candidate]:
        """Candidates scored with their trace confidence (None without logprobs)."""
        scored = []
        for completion in completions:
            confidences = self.confidences_of(completion.logprobs, completion.top_logprobs)
            score = (
                TRACE_CONFIDENCES[self.measure](confidences, self.window) if confidences else None
            )
            scored.append(replace(Candidate.from_completion(completion, problem.kind), score=score))
        return scored


#: DeepConf's token confidences: from the top-k logprobs (the paper's), or the
#: sampled token's logprob (thinktank's earlier deepconf).
TOKEN_CONFIDENCES = ("top-k", "sampled-logprob")


def token_confidences(top: Sequence[Mapping[str, float]]) -> list[float]:
    """DeepConf's token confidence at each position: minus the mean of its top-k
    logprobs (positions without any are skipped)."""
    return [-sum(position.values()) / len(position) for position in top if position]


def group_confidences(confidences: Sequence[float], window: int) -> list[float]:
    """The mean confidence of every ``window`` consecutive tokens (sliding by one);
    one group of them all when there are no more than ``window``."""
    if len(confidences) <= window:
        return [sum(confidences) / len(confidences)] if confidences else []
    sums = np.cumsum(np.concatenate(([0.0], np.asarray(confidences, dtype=float))))
    return ((sums[window:] - sums[:-window]) / window).tolist()


def lowest_group_confidence(confidences: Sequence[float], window: int) -> float:
    """The trace's weakest stretch: its lowest group confidence."""
    return min(group_confidences(confidences, window))


def bottom_group_confidence(confidences: Sequence[float], window: int) -> float:
    """The mean of the trace's lowest 10% of group confidences (at least one group)."""
    groups = sorted(group_confidences(confidences, window))
    lowest = groups[: max(1, int(len(groups) * 0.1))]
    return sum(lowest) / len(lowest)


def tail_confidence(confidences: Sequence[float], window: int) -> float:
    """The mean confidence of the trace's last ``window`` tokens."""
    tail = confidences[-window:]
    return sum(tail) / len(tail)


def mean_confidence(confidences: Sequence[float], window: int) -> float:
    """The mean confidence of all the trace's tokens (``window`` is not used)."""
    return sum(confidences) / len(confidences)


#: A trace's confidence from its token confidences and the group size (non-empty).
TRACE_CONFIDENCES: dict[str, Callable[[Sequence[float], int], float]] = {
    "lowest": lowest_group_confidence,
    "bottom-10": bottom_group_confidence,
    "tail": tail_confidence,
    "mean": mean_confidence,
}


def keep_bar(confidences: Sequence[float | None], keep: float) -> float:
    """The confidence that the top ``keep`` share of traces reach: the 100(1 - keep)
    percentile (linear interpolation); -inf without confidences: nothing is cut."""
    known = [c for c in confidences if c is not None]
    if not known:
        return -math.inf
    return float(np.percentile(known, 100 * (1 - keep)))


#: A trace's token confidences from its logprobs and top logprobs (None: unknown).
ConfidenceSource = Callable[[Sequence[float], Sequence[Mapping[str, float]]], list[float] | None]


class GroupConfidenceStop:
    """DeepConf's online early stop, a `PruneRule`: a sample stops once the mean
    confidence of its last ``window`` tokens is below ``bar`` (checked once it has
    that many). Token confidences are computed once per position and kept per sample."""

    def __init__(
        self,
        bar: float,
        window: int,
        confidences: ConfidenceSource,
    ) -> None:
        self.bar = bar
        self.window = window
        self._confidences = confidences
        self._seen: dict[SampleProgress, tuple[int, list[float]]] = {}

    def __call__(self, progress: SampleProgress) -> bool:
        done, kept = self._seen.get(progress, (0, []))
        new = self._confidences(progress[done:], progress.top[done:])
        kept.extend(new or ())
        self._seen[progress] = (len(progress), kept)
        if len(kept) < self.window:
            return False
        return sum(kept[-self.window :]) / self.window < self.bar
