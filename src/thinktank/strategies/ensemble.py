"""Ensembles of samplers: votes pooled over several prompts, temperatures or models.

``diverse-prompts`` (DIV-SE) varies the prompt by asking the model for
approaches first; ``truth-inference`` treats each (model, prompt variant,
temperature) as a worker and, over a benchmark batch, learns how far to trust
each one (Dawid-Skene) instead of counting every vote the same.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from thinktank.aggregate import dawid_skene, majority_vote
from thinktank.models.base import Sampling
from thinktank.models.profiles import sampling_profile
from thinktank.problem import Problem
from thinktank.prompts import PROMPT_VARIANTS, build_prompt
from thinktank.solution import Candidate, Solution
from thinktank.spec import option
from thinktank.strategies.base import Context, Strategy
from thinktank.strategies.sampling import ManySamples, sample_candidates, sample_completions

#: Approaches used when the model proposes fewer distinct ones than asked for.
FALLBACK_APPROACHES = (
    "Work through it step by step, writing each intermediate result.",
    "Restate the problem in your own words first, then solve it.",
    "Solve it, then check the result by a different method before answering.",
    "Break it into smaller parts and combine their results.",
)
_LISTED = re.compile(r"^\s*(?:\d+[.):]|[-*•])\s*(.+?)\s*$", re.MULTILINE)


def equal_shares(n: int, parts: int) -> list[int]:
    """``n`` samples split over ``parts`` as evenly as possible, the first ones larger."""
    return [n // parts + (i < n % parts) for i in range(parts)]


@dataclass
class DiversePrompts(ManySamples, Strategy):
    """DIV-SE (Naik et al., 2023): diversity of thought from the prompt, not the sampler.

    The model first lists ``approaches`` different ways to solve the problem
    (one greedy call); each approach becomes its own prompt, gets an equal
    share of the ``n`` samples, and all samples vote together. Where the model
    lists too few usable approaches, fixed generic ones fill in (the trace says
    which were the model's).
    """

    name: ClassVar[str] = "diverse-prompts"
    summary: ClassVar[str] = "the model proposes approaches; one prompt each; votes pooled"
    example: ClassVar[str] = "diverse-prompts:n=12,approaches=3"

    n: int = option(12, "samples in all, shared equally by the approaches")
    approaches: int = option(3, "approaches the model proposes, one prompt each")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 1 <= self.approaches <= self.n:
            raise ValueError("approaches must be in 1..n")

    def solve(self, problem: Problem, ctx: Context) -> Solution:
        proposed = self._propose(problem, ctx)
        chosen = (proposed + [a for a in FALLBACK_APPROACHES if a not in proposed])[
            : self.approaches
        ]
        candidates: list[Candidate] = []
        # No worker labels: approach i differs from problem to problem, so there is
        # no reliability of "approach i" across a batch to estimate.
        for approach, share in zip(chosen, equal_shares(self.n, len(chosen)), strict=True):
            candidates += sample_candidates(
                problem,
                ctx,
                share,
                self.sampling(ctx.model, problem.kind),
                prompt=build_prompt(problem, ctx.model, approach=approach),
            )
        vote = majority_vote([c.answer for c in candidates], problem.kind)
        ctx.report_vote(vote)
        trace = [{"approach": a, "proposed_by_model": a in proposed} for a in chosen]
        return Solution(answer=vote.winner, candidates=candidates, votes=vote.counts, trace=trace)

    def _propose(self, problem: Problem, ctx: Context) -> list[str]:
        ask = (
            f"List {self.approaches} different approaches to solving the problem below, "
            "one per numbered line. Describe each approach in one sentence; do not solve "
            f"the problem.\n\nProblem: {problem.transcript()}"
        )
        prompt = (
            [{"role": "user", "content": ask}]
            if ctx.model.capabilities.chat
            else f"{ask}\n\nApproaches:\n1."
        )
        sampling = Sampling(temperature=0.0, max_tokens=48 * self.approaches)
        planning = ctx.at_stage("plan")
        [listing] = sample_completions(problem, planning, 1, sampling, prompt=prompt) or [None]
        if listing is None:
            return []
        text = listing.text if ctx.model.capabilities.chat else "1." + listing.text
        found = [m.strip() for m in _LISTED.findall(text) if len(m.strip()) >= 8]
        return list(dict.fromkeys(found))[: self.approaches]


@dataclass
class TruthInference(Strategy):
    """Workers of different prompt variants and temperatures, aggregated by Dawid-Skene.

    Each (model, prompt variant, temperature) is a worker that draws an equal
    share of the ``n`` samples. Alone, a problem gets the plain majority of all
    workers' answers. Over a benchmark batch the runner calls `revise_batch`:
    EM estimates every worker's reliability from its agreement with the
    consensus across all problems, and each problem's answer becomes the one the
    reliable workers back. No ground truth is used: agreement is the only signal.
    ``variants`` and ``temperatures`` are lists separated by "/".
    """

    name: ClassVar[str] = "truth-inference"
    summary: ClassVar[str] = (
        "prompt-variant x temperature workers; Dawid-Skene weights over the bench batch"
    )
    example: ClassVar[str] = "truth-inference:n=12,variants=instruct/plain,temperatures=0.5/1.0"

    n: int = option(16, "samples in all, shared equally by the workers")
    variants: str = option(
        "instruct/step-by-step", "prompt variants, /-joined: instruct, step-by-step, plain"
    )
    temperatures: str = option(
        "0.7/1.0", "temperatures, /-joined: each variant x temperature is a worker"
    )
    top_p: float | None = option(
        None, "nucleus: keep the likeliest tokens up to this probability (None: the model's)"
    )
    max_tokens: int | None = option(None, "tokens a sample may write at most (None: the model's)")

    def __post_init__(self) -> None:
        Sampling().with_(**self._options_set)  # checks them
        for variant in self._variants:
            if variant not in PROMPT_VARIANTS:
                raise ValueError(f"variants must be taken from {', '.join(PROMPT_VARIANTS)}")
        try:
            temperatures = self._temperatures
        except ValueError:
            raise ValueError("temperatures must be numbers separated by '/'") from None
        if any(t < 0 for t in temperatures):
            raise ValueError("temperatures must be >= 0")
        if not self._variants or not temperatures:
            raise ValueError("give at least one variant and one temperature")
        if self.n < len(self._variants) * len(temperatures):
            raise ValueError("n must give every worker (variant x temperature) a sample")

    @property
    def _variants(self) -> list[str]:
        return [v.strip() for v in self.variants.split("/") if v.strip()]

    @property
    def _temperatures(self) -> list[float]:
        return [float(t) for t in self.temperatures.split("/") if t.strip()]

    @property
    def _options_set(self) -> dict[str, float | int]:
        values = {"top_p": self.top_p, "max_tokens": self.max_tokens}
        return {name: value for name, value in values.items() if value is not None}

    def solve(self, problem: Problem, ctx: Context) -> Solution:
        workers = [(v, t) for v in self._variants for t in self._temperatures]
        profile = sampling_profile(ctx.model).for_kind(problem.kind).with_(**self._options_set)
        candidates: list[Candidate] = []
        for (variant, temperature), share in zip(
            workers, equal_shares(self.n, len(workers)), strict=True
        ):
            candidates += sample_candidates(
                problem,
                ctx,
                share,
                profile.with_(temperature=temperature),
                prompt=build_prompt(problem, ctx.model, variant=variant),
                worker=f"{ctx.model.name}|{variant}|T={temperature:g}",
            )
        vote = majority_vote([c.answer for c in candidates], problem.kind)
        ctx.report_vote(vote)
        return Solution(answer=vote.winner, candidates=candidates, votes=vote.counts)

    def revise_batch(
        self, items: Sequence[Sequence[tuple[str, str | None]]]
    ) -> tuple[list[str | None], dict[str, float]]:
        """Each problem's answer key by Dawid-Skene over the batch, and each worker's
        estimated reliability. ``items`` holds every problem's (worker, answer key)."""
        estimate = dawid_skene(items)
        return estimate.answers, estimate.reliability
