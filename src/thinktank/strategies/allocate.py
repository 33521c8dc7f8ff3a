"""Spending test-time compute by difficulty.

`ComputeOptimal` is Snell et al.'s compute-optimal strategy: each question has a fixed
budget, and how to spend it (best-of-N, a verifier-weighted vote, beam search) is
chosen by the question's estimated difficulty, from a table learned on development
problems (`thinktank.tune.fit_compute_optimal`). `BatchAllocation` is a different
technique: the method stays majority vote and the samples move between the
questions of a batch, to those in doubt.
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import ClassVar

import numpy as np

from thinktank.aggregate import majority_vote
from thinktank.models.base import Completion
from thinktank.problem import Problem
from thinktank.resolver import Reference, check_shape, named
from thinktank.solution import Candidate, Solution
from thinktank.spec import option
from thinktank.strategies.base import Context, Strategy
from thinktank.strategies.sampling import (
    BestOfN,
    ManySamples,
    SamplingOptions,
    continue_stream,
    sample_completions,
    verified_choice,
)
from thinktank.strategies.search import BeamSearch
from thinktank.verify.process import ProcessReward
from thinktank.verify.verifiers import Verifier

#: What `ComputeOptimal` may spend a question's budget on.
CHOICES = ("majority", "best-of-n", "weighted-best-of-n", "beam")
#: Separates the bin edges and the per-bin choices in a spec string.
LIST_SEPARATOR = "/"


@dataclass
class ComputeOptimal(SamplingOptions, Strategy):
    """Compute-optimal test-time scaling (Snell et al., 2024, "Scaling LLM Test-Time
    Compute Optimally...", §3.2 and §5.2): for a fixed budget of ``n`` generations a
    question, estimate the question's difficulty, then spend the budget the way that
    did best on development problems of that difficulty.

    Difficulty is the paper's model-predicted kind (no oracle): ``probe`` samples
    are scored by ``verifier`` and the difficulty is 1 - their mean score (a sample
    without an answer scores 0). It falls in one of ``len(edges) + 1`` levels
    (``edges``: ascending, "/"-joined; a difficulty on an edge takes the lower
    level), and the level's entry of ``choices`` spends the rest:

    - ``majority``, ``best-of-n``, ``weighted-best-of-n``: ``n - probe`` more samples of
      the probe's seeded stream, so all ``n`` are exactly self-consistency's (or
      best-of-n's) ``n`` samples; then the majority, the verifier's best, or the
      paper's best-of-N weighted (the answer whose samples' scores sum highest). A
      verifier scores all ``n`` together (one that compares samples sees them all).
    - ``beam``: the paper's beam search with ``n - probe`` generations a step:
      ``(n - probe) // expand`` beams, each writing ``expand`` next steps (their M,
      default 4), valued by the process reward ``value``; the finished beams vote
      weighted by value, as the paper's final best-of-N weighted does.

    Without a learned table the defaults stand in: five levels of equal width, and
    the paper's finding (§5.2, Fig. 3) that best-of-N does as well as beam search on
    the easiest questions (levels 1-2) and beam search better on the harder ones.
    Those bins are not the paper's (its are quantiles of the test set's
    difficulty), so learn a table on development problems of your own:
    `thinktank.tune.fit_compute_optimal` bins them into ``levels`` quantiles (the
    paper's 5) and takes each level's most accurate choice.

    Until issue 18 this name ran a batch-level allocation of majority-vote samples
    by doubt; that technique is now `BatchAllocation` (``batch-allocation``).

    Deliberate differences: the paper estimates difficulty from 2048 samples and
    does not count them; here the probe is part of the budget (the sample-based
    choices reuse it). Its verifier is a trained PRM (last-step score); the
    default here is the model's own P(Yes) (``self-eval``). Its selection ranges
    over search hyperparameters too (beam width sqrt(N) or 4, lookahead search)
    and over revision strategies (sequential vs parallel revisions, which need a
    revision model); here the menu is `CHOICES` with one beam width, ``expand``,
    and BeamSearch's own step limits. The budget counts generations, as the
    paper's does; verifier and process-reward calls are not generations (the
    meter's token budget still caps them all). The defaults ``n=16`` and
    ``probe=4`` are this project's choice (the paper sweeps budgets of 4-256).
    """

    name: ClassVar[str] = "compute-optimal"
    summary: ClassVar[str] = "a fixed budget; the probe's difficulty picks the method (Snell)"
    example: ClassVar[str] = "compute-optimal:n=16,probe=4,choices=majority/majority/beam/beam/beam"

    n: int = option(16, "generations per question, the probe's included")
    probe: int = option(4, "samples that gauge the question's difficulty")
    verifier: str | Verifier = option(
        "self-eval", "verifier that scores the probe and picks best-of-n answers"
    )
    value: str | ProcessReward = option(
        "self-eval", "process reward that values the beam choice's steps"
    )
    expand: int = option(4, "next steps each beam writes (the beam choice)")
    edges: str = option("0.2/0.4/0.6/0.8", "difficulties between the levels, ascending, /-joined")
    choices: str = option(
        "weighted-best-of-n/weighted-best-of-n/beam/beam/beam",
        "each level's method, easiest first: majority, best-of-n, weighted-best-of-n, beam",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 1 <= self.probe < self.n:
            raise ValueError("need 1 <= probe < n (the probe is part of the budget)")
        if self.expand < 1:
            raise ValueError("expand must be >= 1")
        edges, choices = self.level_edges, self.level_choices  # both checked there
        if len(choices) != len(edges) + 1:
            raise ValueError(
                f"choices must name one choice per level: {len(edges) + 1} for "
                f"{len(edges)} edges, got {len(choices)}"
            )
        check_shape("verifier", self.verifier)
        check_shape("process-reward", self.value)

    @property
    def level_edges(self) -> list[float]:
        """The difficulties that separate the levels, ascending."""
        try:
            edges = [float(e) for e in _split(self.edges)]
        except ValueError:
            raise ValueError(f"edges must be numbers joined by {LIST_SEPARATOR!r}") from None
        if any(not 0 <= e <= 1 for e in edges) or edges != sorted(edges):
            raise ValueError("edges must be ascending difficulties in [0, 1]")
        return edges

    @property
    def level_choices(self) -> list[str]:
        """What each level spends its budget on, easiest level first."""
        choices = _split(self.choices)
        if not choices or any(c not in CHOICES for c in choices):
            raise ValueError(
                f"choices must be taken from {', '.join(CHOICES)}, joined by {LIST_SEPARATOR!r}"
            )
        return choices

    def references(self) -> Iterator[Reference]:
        yield from named("verifier", self.verifier)
        if "beam" in self.level_choices:
            yield from named("process-reward", self.value)

    def probe_strategy(self) -> Strategy:
        """best-of-n over the probe's samples: the very calls the probe makes, so a bench
        run of it gives development problems the difficulty this strategy would see."""
        return BestOfN(n=self.probe, verifier=self.verifier, **self.options_set())

    def beam_search(self) -> BeamSearch:
        """The beam search ``beam`` runs: ``n - probe`` generations a step."""
        budget = self.n - self.probe
        return BeamSearch(beams=max(1, budget // self.expand), expand=min(self.expand, budget),
                          value=self.value, answer="vote", **self.options_set())  # fmt: skip

    def solve(self, problem: Problem, ctx: Context) -> Solution:
        sampling = self.sampling(ctx.model, problem.kind)
        drawn = sample_completions(problem, ctx, self.probe, sampling)
        probed = self._scored(problem, ctx, drawn)
        difficulty = estimated_difficulty([c.score for c in probed])
        level = difficulty_level(difficulty, self.level_edges)
        choice = self.level_choices[level]
        trace = [{"difficulty": round(difficulty, 4), "level": level + 1, "choice": choice}]
        if not drawn:  # the budget refused even the probe
            return Solution(answer=None, candidates=[], trace=trace)
        if choice == "beam":
            searched = self.beam_search().solve(problem, ctx)
            return replace(searched, candidates=probed + searched.candidates,
                           trace=trace + searched.trace)  # fmt: skip
        more = sample_completions(
            problem, ctx, self.n - self.probe, continue_stream(sampling, drawn, len(drawn))
        )
        pool = [Candidate.from_completion(c, problem.kind) for c in drawn + more]
        if choice == "majority":
            vote = majority_vote([c.answer for c in pool], problem.kind)
            ctx.report_vote(vote)
            return Solution(vote.winner, pool, votes=vote.counts, trace=trace)
        chosen = verified_choice(problem, ctx, pool, self.verifier)
        if choice == "weighted-best-of-n":
            scores = [c.score or 0.0 for c in chosen.candidates]
            vote = majority_vote([c.answer for c in chosen.candidates], problem.kind, scores)
            ctx.report_vote(vote)
            return Solution(vote.winner, chosen.candidates, votes=vote.counts, trace=trace)
        return replace(chosen, trace=trace)

    def _scored(
        self, problem: Problem, ctx: Context, drawn: Sequence[Completion]
    ) -> list[Candidate]:
        candidates = [Candidate.from_completion(c, problem.kind) for c in drawn]
        return verified_choice(problem, ctx, candidates, self.verifier).candidates


def _split(values: str) -> list[str]:
    return [v.strip() for v in values.split(LIST_SEPARATOR) if v.strip()]


def estimated_difficulty(scores: Sequence[float | None]) -> float:
    """Snell et al.'s model-predicted difficulty: 1 - the verifier's mean score over the
    samples (None, a sample without an answer, counts 0); no samples at all: 1."""
    if not scores:
        return 1.0
    return 1.0 - sum(s or 0.0 for s in scores) / len(scores)


def difficulty_level(difficulty: float, edges: Sequence[float]) -> int:
    """The level (0 = easiest) of ``difficulty``: how many edges lie below it (one it
    equals does not)."""
    return bisect.bisect_left(edges, difficulty)


def quantile_edges(difficulties: Sequence[float], levels: int) -> list[float]:
    """The edges that cut development difficulties into ``levels`` quantiles (the
    paper's binning; linear interpolation between the sorted values)."""
    if levels < 1:
        raise ValueError("levels must be >= 1")
    if not difficulties:
        raise ValueError("no development difficulties to bin")
    cuts = np.quantile(np.asarray(difficulties, dtype=float), np.arange(1, levels) / levels)
    return [float(c) for c in cuts]


def best_choices(
    difficulties: Sequence[float], solved: Mapping[str, Sequence[float]], edges: Sequence[float]
) -> list[str]:
    """Each level's choice: the one that solved the most development problems of that
    level (``solved[choice][i]``: 1 if it solved problem i). Ties go to the choice
    named first; a level no problem fell in takes the best choice over all of them."""
    if not solved:
        raise ValueError("no choices to pick from")
    levels = [difficulty_level(d, edges) for d in difficulties]

    def best(members: Sequence[int]) -> str:
        return max(solved, key=lambda choice: sum(solved[choice][i] for i in members))

    overall = best(range(len(difficulties)))
    picked = []
    for level in range(len(edges) + 1):
        members = [i for i, lv in enumerate(levels) if lv == level]
        picked.append(best(members) if members else overall)
    return picked


@dataclass
class BatchAllocation(ManySamples, Strategy):
    """Difficulty-adaptive allocation of a batch's samples (thinktank's own technique;
    named ``compute-optimal`` before issue 18, which gave that name to Snell et al.'s
    `ComputeOptimal`). ``probe`` samples of every problem gauge its difficulty, the
    share of them not agreeing with their winner; the rest of a total of ``n``
    samples a problem on average goes to the problems in proportion to a weight of
    that doubt (at most ``max_n`` a problem), and each answers by majority vote over
    all its samples. ``rule=doubt`` weighs by the doubt itself; ``rule=middle`` by
    doubt x (1 - doubt), which also starves the problems whose probe agrees on
    nothing (Snell et al. find the hardest problems gain least from more search). A
    unanimous probe gets nothing more. A problem solved alone (``thinktank.solve``)
    may take up to ``max_n``.

    Unlike Snell et al.'s strategy it keeps one method and moves samples between
    problems: a batch's budget is fixed, not each question's.

    A problem's samples are one seeded stream, self-consistency's: on a benchmark
    where samples are shared, exactly its first samples.
    """

    name: ClassVar[str] = "batch-allocation"
    summary: ClassVar[str] = "a batch's samples go to doubtful probes (was compute-optimal)"
    example: ClassVar[str] = "batch-allocation:n=4,max_n=16,rule=middle"
    batched: ClassVar[bool] = True

    n: int = option(4, "samples a problem gets on average over the batch")
    probe: int = option(2, "samples of every problem that gauge its doubt")
    max_n: int = option(16, "samples one problem may take at most")
    rule: str = option("doubt", "what the rest follows: doubt, or middle (doubt x (1 - doubt))")

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
                ctx.report_vote(vote)
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
