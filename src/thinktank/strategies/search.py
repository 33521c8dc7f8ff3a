"""Search over partial solutions: step-level beam search, particle filtering and
particle Gibbs (Puri et al.), A*-decoding, and tree search with a soft value
backup (DTS*, Jain et al.).

A partial solution (`Partial`) is the steps of the reply written so far; a step
ends at a delimiter (``split``: sentence, line, paragraph, or ``re:PATTERN``).
`Stepper` writes the next step of many partials in one batch: each partial is
the problem's prompt with the reply begun, so on the embedded backend its
prompt extends its parent's, which the prefix cache holds: siblings copy the
parent's KV cells instead of prefilling the shared prefix again. A process
reward (`verify.process`: ``self-eval``, ``rollout``, ``prm@URL``) values
partials. Every algorithm stops at the budget and answers with the best it has.
"""

from __future__ import annotations

import heapq
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import numpy as np

from thinktank.aggregate import majority_vote
from thinktank.models.base import Completion
from thinktank.problem import Kind, Problem
from thinktank.prompts import stop_strings
from thinktank.resolver import Reference, check_shape, named
from thinktank.solution import Candidate, Partial, Solution
from thinktank.spec import option
from thinktank.strategies.base import Context, Strategy
from thinktank.strategies.sampling import SamplingOptions
from thinktank.verify import answer_key
from thinktank.verify.process import ProcessReward, continue_partials
from thinktank.verify.verifiers import Verifier

#: Named step delimiters: the stop strings that end a step.
SPLITS: dict[str, tuple[str, ...]] = {
    "sentence": (". ", "\n\n"),
    "line": ("\n",),
    "paragraph": ("\n\n",),
}
ANSWER_RULES = ("best", "vote")
#: How a particle's reward becomes its log-weight, and how particle Gibbs picks a reference.
WEIGHT_TRANSFORMS = ("logit", "value")
REFERENCE_RULES = ("sample", "best")
#: Rewards are clipped this far inside (0, 1) before their logit (as Puri et al.'s code does).
LOGIT_CLIP = 1e-7
#: How tree search backs rewards up, and when a node takes a new child.
BACKUP_RULES = ("soft", "mean")
EXPANSION_RULES = ("full", "ucb")


@dataclass
class SearchOptions(SamplingOptions):
    """What every search shares: how steps are cut and how the answer is chosen.

    ``max_tokens`` caps a whole solution. ``answer=best`` answers with the
    highest-valued finished solution, ``vote`` with the majority of the
    finished ones weighted by value.
    """

    split: str = option("sentence", "what ends a step: sentence, line, paragraph or re:PATTERN")
    answer: str = option("best", "best (the highest-valued solution) or vote (value-weighted)")

    def __post_init__(self) -> None:
        super().__post_init__()
        split_pattern(self.split)
        if self.answer not in ANSWER_RULES:
            raise ValueError(f"answer must be one of {', '.join(ANSWER_RULES)}")


@dataclass
class ValuedSearch(SearchOptions):
    """A search that writes one step at a time (at most ``step_tokens`` tokens, at
    most ``max_steps`` steps) guided by a process reward (``value``, see
    `verify.process`)."""

    value: str | ProcessReward = option(
        "self-eval", "process reward that values partial solutions (self-eval, ...)"
    )
    step_tokens: int = option(48, "tokens a step may write at most")
    max_steps: int = option(12, "steps a solution may take at most")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.step_tokens < 1 or self.max_steps < 1:
            raise ValueError("step_tokens and max_steps must be >= 1")
        check_shape("process-reward", self.value)

    def references(self) -> Iterator[Reference]:
        yield from named("process-reward", self.value)

    def process_reward(self, problem: Problem, ctx: Context) -> ProcessReward:
        return ctx.resolver.process_reward(self.value, self.sampling(ctx.model, problem.kind))

    def step(
        self, stepper: Stepper, partials: Sequence[Partial], counts: Sequence[int]
    ) -> list[list[Partial]]:
        """`Stepper.extend` with this search's step limits."""
        return stepper.extend(
            partials, counts, step_tokens=self.step_tokens, max_steps=self.max_steps
        )


def split_pattern(split: str) -> re.Pattern[str]:
    """The regex that ends a step: a named split's delimiters, or ``re:PATTERN``."""
    if split in SPLITS:
        return re.compile("|".join(re.escape(d) for d in SPLITS[split]))
    if split.startswith("re:") and len(split) > 3:
        try:
            return re.compile(split[3:])
        except re.error as exc:
            raise ValueError(f"split {split!r}: {exc}") from None
    raise ValueError(f"split must be one of {', '.join(SPLITS)} or re:PATTERN")


def split_steps(text: str, pattern: re.Pattern[str]) -> list[str]:
    """``text`` cut after each delimiter match; the steps join back to ``text``."""
    steps, start = [], 0
    for match in pattern.finditer(text):
        if match.end() > start:
            steps.append(text[start : match.end()])
            start = match.end()
    if start < len(text) or not steps:
        steps.append(text[start:])
    return steps


class Stepper:
    """Writes steps of partial solutions for one problem, many partials per batch.

    With ``keep_tree`` it keeps every partial it writes and the values given to them
    (`values`), and `answer` adds the whole tree to the trace (`SearchRecord`).
    """

    def __init__(
        self, problem: Problem, ctx: Context, options: SearchOptions, *, keep_tree: bool = False
    ) -> None:
        self.problem, self.ctx, self.options = problem, ctx, options
        self.sampling = options.sampling(ctx.model, problem.kind)
        self.pattern = split_pattern(options.split)
        # A base model's own stop strings end the whole answer, never just a step.
        ends = stop_strings(problem, ctx.model)
        self.delimiters = tuple(d for d in SPLITS.get(options.split, ()) if d not in ends)
        self.record = SearchRecord() if keep_tree else None

    def values(self, reward: ProcessReward, partials: Sequence[Partial]) -> list[float]:
        """The process reward's values of ``partials`` (kept for the tree)."""
        values = reward.values(self.problem, partials, self.ctx)
        if self.record is not None:
            self.record.valued(partials, values)
        return values

    def extend(
        self,
        partials: Sequence[Partial],
        counts: Sequence[int],
        *,
        step_tokens: int,
        max_steps: int,
    ) -> list[list[Partial]]:
        """``counts[i]`` next steps of ``partials[i]``, all in one batch; fewer (maybe
        none) where the budget cuts in. A step past ``max_steps`` (or the solution's
        ``max_tokens``) ends the solution."""
        stops = self.delimiters + stop_strings(self.problem, self.ctx.model)
        sampling = self.sampling.with_(stop=stops)
        written = continue_partials(
            self.problem, self.ctx, partials, counts, sampling, step_tokens=step_tokens
        )
        children = [
            [self._child(p, c, max_steps) for c in done]
            for p, done in zip(partials, written, strict=True)
        ]
        self._keep(c for group in children for c in group)
        return children

    def complete(self, partials: Sequence[Partial], counts: Sequence[int]) -> list[list[Partial]]:
        """``counts[i]`` rollouts of ``partials[i]`` to the end, each cut into its steps."""
        sampling = self.sampling.with_(stop=stop_strings(self.problem, self.ctx.model))
        written = continue_partials(self.problem, self.ctx, partials, counts, sampling)
        ends = [
            [self._chain(p, c) for c in done] for p, done in zip(partials, written, strict=True)
        ]
        self._keep(node for group in ends for end in group for node in _lineage(end))
        return ends

    def _keep(self, partials: Iterator[Partial]) -> None:
        if self.record is not None:
            self.record.wrote(partials)

    def _child(self, parent: Partial, completion: Completion, max_steps: int) -> Partial:
        text, finished = completion.text, completion.finish_reason != "length"
        if completion.stop_string in self.delimiters:
            text, finished = text + completion.stop_string, False
        elif (
            not self.delimiters and (match := self.pattern.search(text)) and match.end() < len(text)
        ):
            text, finished = text[: match.end()], False  # a regex split: cut after the match
        tokens = completion.completion_tokens
        child = parent.extend(
            text, finished=finished, tokens=tokens, logprob=sum(completion.logprobs or ())
        )
        if child.tokens >= self.sampling.max_tokens or len(child.steps) >= max_steps:
            return replace(child, finished=True)  # out of room: the reply ends here
        return child

    def _chain(self, parent: Partial, completion: Completion) -> Partial:
        """The finished partial a rollout ends in, one `Partial` per step on the way;
        the rollout's tokens are shared out by the steps' lengths."""
        steps = split_steps(completion.text, self.pattern)
        total_chars = max(1, sum(len(s) for s in steps))
        logprob = sum(completion.logprobs or ())
        node = parent
        for i, step in enumerate(steps):
            share = len(step) / total_chars
            node = node.extend(
                step,
                finished=i == len(steps) - 1,
                tokens=round(completion.completion_tokens * share),
                logprob=logprob * share,
            )
        return node

    def answer(
        self,
        scored: Sequence[tuple[Partial, float]],
        trace: list[dict],
        *,
        values: Mapping[int, float] | None = None,
    ) -> Solution:
        """The solution from valued partials: best or value-weighted vote over the
        finished ones. With none finished, the best partial is completed first
        (if the budget allows). With ``keep_tree`` the trace ends with the tree;
        ``values`` (by ``id`` of a partial) are the search's own values of its nodes,
        where it has them."""
        finished = [(p, v) for p, v in scored if p.finished]
        if not finished and scored:
            best, value = max(scored, key=lambda item: item[1])
            ends = self.complete([best], [1])[0]
            finished = [(ends[0] if ends else best, value)]
        candidates = [Candidate.from_partial(p, self.problem.kind, v) for p, v in finished]
        kind = self.problem.kind
        if self.options.answer == "vote":
            vote = majority_vote([c.answer for c in candidates], kind, [v for _, v in finished])
            self.ctx.report_vote(vote)
            answer, votes = vote.winner, vote.counts
        else:
            ranked = sorted((c for c in candidates if c.answer is not None), key=lambda c: -c.score)
            votes = {}
            for c in ranked:
                votes.setdefault(c.answer, c.score)
            answer = ranked[0].answer if ranked else None
        if self.record is not None:
            self.record.valued([p for p, _ in finished], [v for _, v in finished])
            chosen = _committed(finished, candidates, answer, kind)
            trace.append({"tree": self.record.nodes(chosen, values or {})})
        return Solution(answer, candidates, votes=votes, trace=trace)


def _committed(
    finished: Sequence[tuple[Partial, float]],
    candidates: Sequence[Candidate],
    answer: str | None,
    kind: Kind,
) -> Partial | None:
    """The finished partial the answer stands on: the highest-valued one with that
    answer (with no answer, the highest-valued one: the search's best attempt)."""
    key = None if answer is None else answer_key(answer, kind)
    backing = [
        (value, i)
        for i, ((_, value), c) in enumerate(zip(finished, candidates, strict=True))
        if key is None or (c.answer is not None and answer_key(c.answer, kind) == key)
    ]
    return finished[max(backing, key=lambda item: item[0])[1]][0] if backing else None


class SearchRecord:
    """Every partial a search wrote and the values it gave them, drawn as the trace's
    ``tree`` entry: one node per partial, the root (the empty reply) first."""

    def __init__(self) -> None:
        self._written: list[Partial] = []
        self._seen: set[int] = set()  # ids of the partials written (kept alive by _written)
        self._values: dict[int, float] = {}

    def wrote(self, partials: Iterator[Partial]) -> None:
        """The partials a step or rollout wrote (ones already kept are skipped)."""
        for partial in partials:
            if id(partial) not in self._seen:
                self._seen.add(id(partial))
                self._written.append(partial)

    def valued(self, partials: Sequence[Partial], values: Sequence[float]) -> None:
        """Values the search gave ``partials`` (a later one replaces an earlier)."""
        for partial, value in zip(partials, values, strict=True):
            self._values[id(partial)] = float(value)

    def nodes(self, chosen: Partial | None, values: Mapping[int, float]) -> list[dict[str, Any]]:
        """The tree, parents before children: ``{"id", "parent", "step", "finished",
        "tokens"`` (the step's own), ``"value"`` (``values``, else the last value the
        search gave it, else None), ``"chosen"`` (on the path to ``chosen``)``}``."""
        path = {id(p) for p in _lineage(chosen)} if chosen is not None else set()
        root = {"id": 0, "parent": None, "step": "", "finished": False, "tokens": 0,
                "value": None, "chosen": chosen is not None}  # fmt: skip
        ids: dict[int, int] = {}
        tree = [root]
        for written in self._written:
            # Ancestors the search made itself (not through this stepper) join first.
            for partial in _lineage(written):
                if id(partial) in ids:
                    continue
                parent = partial.parent
                if parent is not None and not parent.steps and id(parent) in values:
                    root["value"] = round(float(values[id(parent)]), 4)  # tree search's root
                ids[id(partial)] = len(tree)
                value = values.get(id(partial), self._values.get(id(partial)))
                tree.append({
                    "id": len(tree),
                    "parent": ids.get(id(parent), 0) if parent is not None else 0,
                    "step": partial.steps[-1],
                    "finished": partial.finished,
                    "tokens": partial.tokens - (parent.tokens if parent is not None else 0),
                    "value": None if value is None else round(float(value), 4),
                    "chosen": id(partial) in path,
                })  # fmt: skip
        return tree


@dataclass
class BeamSearch(ValuedSearch, Strategy):
    """Step-level beam search: each of ``beams`` partials writes ``expand`` next steps,
    and the ``beams`` best by value among them and the finished ones are kept."""

    name: ClassVar[str] = "beam"
    summary: ClassVar[str] = "keep the k best partial solutions by process reward, step by step"
    example: ClassVar[str] = "beam:beams=4,expand=4,split=line"

    beams: int = option(4, "partial solutions kept after each step")
    expand: int = option(4, "next steps each beam writes")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.beams < 1 or self.expand < 1:
            raise ValueError("beams and expand must be >= 1")

    def solve(self, problem: Problem, ctx: Context) -> Solution:
        stepper = Stepper(problem, ctx, self, keep_tree=True)
        reward = self.process_reward(problem, ctx)
        kept: list[tuple[Partial, float]] = [(Partial(), 0.0)]
        trace: list[dict] = []
        for step in range(self.max_steps):
            open_ = [p for p, _ in kept if not p.finished]
            if not open_:
                break
            # The root writes every beam's first steps: beams x expand of them.
            width = self.expand if step else self.beams * self.expand
            children = [
                c for group in self.step(stepper, open_, [width] * len(open_)) for c in group
            ]
            if not children:
                break  # the budget is spent
            values = stepper.values(reward, children)
            pool = [(p, v) for p, v in kept if p.finished] + list(
                zip(children, values, strict=True)
            )
            kept = sorted(pool, key=lambda item: -item[1])[: self.beams]
            trace.append({"step": step, "pool": len(pool), "kept": len(kept),
                          "values": [round(v, 4) for _, v in kept]})  # fmt: skip
        return stepper.answer(kept, trace)


@dataclass
class ParticleFilter(ValuedSearch, Strategy):
    """Particle filtering (Puri et al., 2025, "A Probabilistic Inference Approach to
    Inference-Time Scaling of LLMs using Particle-Based Monte Carlo Methods",
    Algorithm 1; with ``iterations`` > 1, particle Gibbs, Algorithm 2).

    Each open particle writes one step and is valued by the process reward
    r̂ of its whole partial (the paper's "model-based aggregation"); the
    ``particles`` are then resampled with replacement from
    softmax(w / ``weight_temperature``), where w = logit(r̂) (``weight_transform=
    logit``, the paper's and its reference code's weights: the reward read as a
    Bernoulli acceptance probability, its log-odds a log-weight; rewards
    (0.9, 0.5, 0.1) resample as 0.89 / 0.10 / 0.01). Rewards are clipped to
    [1e-7, 1 - 1e-7] first, as the reference code does. ``weight_transform=value``
    is this strategy's earlier rule, softmax(r̂ / T) on the raw reward, which
    resamples (0.9, 0.5, 0.1) almost uniformly (0.47 / 0.32 / 0.21). A finished
    particle keeps its final value and can still be resampled; the sweep ends when
    every particle is finished (or at ``max_steps``).

    Particle Gibbs: after each sweep a reference particle is drawn from the
    sweep's finished particles by the same weights (``reference=sample``,
    Algorithm 2 line 5); the next sweep runs with it as particle 0: at step t its
    first t steps are valued and weighted beside the N - 1 free particles, the free
    ones are resampled from all N (so the reference's prefix can be forked), and
    the reference itself is never replaced. ``reference=best`` is the earlier rule
    (the highest-valued finished particle). ``iterations`` counts every sweep, the
    first plain one included (the reference code's ``num_iterations``).

    Defaults: ``weight_temperature=1`` (Algorithm 1's plain softmax; Algorithm 3's
    tempered chains divide by T). The paper samples steps at temperature 0.8;
    here ``temperature`` is the model's profile's unless set. Deliberate
    differences: ``answer=best`` picks the highest-valued finished particle of
    every sweep pooled (the reference code takes the last sweep's), ``vote`` the
    value-weighted vote; and steps end at ``split`` delimiters rather than the
    paper's "## Step" format.
    """

    name: ClassVar[str] = "particle-filter"
    summary: ClassVar[str] = "particles extended step by step, resampled by process reward"
    example: ClassVar[str] = "particle-filter:particles=8,weight_transform=value"

    particles: int = option(8, "partial solutions resampled after each step")
    weight_temperature: float = option(1.0, "softmax temperature of the resampling weights")
    weight_transform: str = option(
        "logit", "resampling weight: logit of the reward (the paper's) or value"
    )
    iterations: int = option(1, "sweeps; more than 1 is particle Gibbs")
    reference: str = option("sample", "particle Gibbs' reference: sample (by weight) or best")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.particles < 1 or self.iterations < 1:
            raise ValueError("particles and iterations must be >= 1")
        if self.weight_temperature <= 0:
            raise ValueError("weight_temperature must be > 0")
        if self.weight_transform not in WEIGHT_TRANSFORMS:
            raise ValueError(f"weight_transform must be one of {', '.join(WEIGHT_TRANSFORMS)}")
        if self.reference not in REFERENCE_RULES:
            raise ValueError(f"reference must be one of {', '.join(REFERENCE_RULES)}")

    def weights(self, values: Sequence[float]) -> np.ndarray:
        """The resampling distribution over particles valued ``values``."""
        return resampling_weights(values, self.weight_transform, self.weight_temperature)

    def solve(self, problem: Problem, ctx: Context) -> Solution:
        stepper = Stepper(problem, ctx, self, keep_tree=True)
        reward = self.process_reward(problem, ctx)
        rng = np.random.default_rng(ctx.seed)
        trace: list[dict] = []
        reference: Partial | None = None
        ends: list[tuple[Partial, float]] = []
        for sweep in range(self.iterations):
            particles = self._sweep(problem, ctx, stepper, reward, rng, reference, trace, sweep)
            ends.extend(particles)
            finished = [item for item in particles if item[0].finished]
            if not finished:
                break  # the budget ran out mid-sweep
            if sweep + 1 < self.iterations:
                reference = self._reference(finished, rng, trace, sweep)
        return stepper.answer(ends, trace)

    def _reference(
        self,
        finished: Sequence[tuple[Partial, float]],
        rng: np.random.Generator,
        trace: list[dict],
        sweep: int,
    ) -> Partial:
        """The next sweep's reference particle, chosen among a sweep's finished ones."""
        if self.reference == "best":
            pick = max(range(len(finished)), key=lambda i: finished[i][1])
            trace.append({"sweep": sweep, "reference": pick})
        else:
            weights = self.weights([v for _, v in finished])
            pick = int(rng.choice(len(finished), p=weights))
            trace.append({"sweep": sweep, "reference": pick,
                          "reference_weights": weights.tolist()})  # fmt: skip
        return finished[pick][0]

    def _sweep(
        self,
        problem: Problem,
        ctx: Context,
        stepper: Stepper,
        reward: ProcessReward,
        rng: np.random.Generator,
        reference: Partial | None,
        trace: list[dict],
        sweep: int,
    ) -> list[tuple[Partial, float]]:
        lineage = _lineage(reference) if reference else []
        particles = [Partial()] * self.particles
        values = [0.0] * self.particles
        for step in range(self.max_steps):
            open_ = [
                i for i, p in enumerate(particles) if not p.finished and not (lineage and i == 0)
            ]
            if not open_ and not (lineage and not particles[0].finished):
                break
            # Particles that are one object (copies from resampling) share one call.
            groups: dict[int, list[int]] = {}
            for i in open_:
                groups.setdefault(id(particles[i]), []).append(i)
            members = list(groups.values())
            children = self.step(
                stepper, [particles[g[0]] for g in members], [len(g) for g in members]
            )
            changed: list[int] = []
            for group, written in zip(members, children, strict=True):
                for i, child in zip(group, written, strict=False):
                    particles[i] = child
                    changed.append(i)
            if open_ and not changed:
                break  # the budget is spent
            if lineage and not particles[0].finished:
                particles[0] = lineage[min(step, len(lineage) - 1)]  # the reference's next step
                changed.append(0)
            new_values = stepper.values(reward, [particles[i] for i in changed])
            for i, value in zip(changed, new_values, strict=True):
                values[i] = value
            weighed, weights = values, self.weights(values)
            picks = rng.choice(self.particles, size=self.particles, p=weights)
            if lineage:
                picks[0] = 0  # the reference survives resampling
            particles = [particles[i] for i in picks]
            values = [values[i] for i in picks]
            trace.append({"sweep": sweep, "step": step, "values": weighed,
                          "weights": weights.tolist(), "resampled": len(particles),
                          "finished": sum(p.finished for p in particles)})  # fmt: skip
        return list(zip(particles, values, strict=True))


@dataclass
class ParticleGibbs(ParticleFilter):
    """Particle Gibbs (Puri et al., 2025, Algorithm 2): `ParticleFilter` sweeps, each
    conditioned on a reference particle drawn by weight from the sweep before
    (``reference=best`` keeps the earlier rule: the last sweep's best)."""

    name: ClassVar[str] = "particle-gibbs"
    summary: ClassVar[str] = "particle filtering sweeps, each keeping a reference drawn by weight"
    example: ClassVar[str] = "particle-gibbs:particles=4,iterations=3"

    iterations: int = 2


@dataclass
class AStarDecoding(ValuedSearch, Strategy):
    """A*-decoding: a priority queue of partials ordered by f = g + h, where g is
    ``step_cost`` per step written and h = 1 - value. The best partial writes
    ``expand`` next steps; the first finished partial to come out of the queue is
    the answer. At most ``max_expansions`` expansions (and the budget)."""

    name: ClassVar[str] = "a-star"
    summary: ClassVar[str] = "best-first search over partials by steps taken + (1 - value)"
    example: ClassVar[str] = "a-star:expand=4,max_expansions=16"

    expand: int = option(4, "next steps the best partial writes when expanded")
    max_expansions: int = option(16, "expansions at most")
    step_cost: float = option(0.02, "cost of a step written: f = steps x step_cost + 1 - value")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.expand < 1 or self.max_expansions < 1:
            raise ValueError("expand and max_expansions must be >= 1")
        if self.step_cost < 0:
            raise ValueError("step_cost must be >= 0")

    def solve(self, problem: Problem, ctx: Context) -> Solution:
        stepper = Stepper(problem, ctx, self, keep_tree=True)
        reward = self.process_reward(problem, ctx)
        root = Partial()
        frontier: list[tuple[float, int, Partial, float]] = [(1.0, 0, root, 0.0)]
        trace: list[dict] = [{"push": 0, "f": 1.0}]
        seen: list[tuple[Partial, float]] = []
        for _ in range(self.max_expansions):
            if not frontier:
                break
            f, node_id, node, value = heapq.heappop(frontier)
            trace.append({"pop": node_id, "f": f})
            if node.finished:
                return stepper.answer([(node, value)], trace)
            [children] = self.step(stepper, [node], [self.expand])
            if not children:
                break  # the budget is spent
            for child, child_value in zip(children, stepper.values(reward, children),
                                          strict=True):  # fmt: skip
                child_id = len(seen) + 1
                child_f = self.step_cost * len(child.steps) + 1.0 - child_value
                heapq.heappush(frontier, (child_f, child_id, child, child_value))
                trace.append({"push": child_id, "f": child_f})
                seen.append((child, child_value))
        # No finished partial came out of the queue: answer with the best one seen.
        return stepper.answer([(p, v) for p, v in seen if p.finished] or seen, trace)


@dataclass(eq=False)
class TreeNode:
    """A tree-search node: a partial, its children, the rollouts that passed it, and
    its backed-up value (`SearchTree.back_up`)."""

    partial: Partial
    parent: TreeNode | None = None
    children: list[TreeNode] = field(default_factory=list)
    rollouts: list[int] = field(default_factory=list)  # ids of the rollouts below
    value: float = 0.0  # 0 before any rollout passed it
    pending: int = 0  # selections of this batch not rolled out yet (virtual visits)
    branching: int = 0  # new children this batch will add


@dataclass
class TreeSearch(SearchOptions, Strategy):
    """Diffusion Tree Search, DTS* (Jain et al., 2025, "Diffusion Tree Sampling:
    Scalable inference-time alignment of diffusion models"), over text steps.

    The tree's nodes are partials; an edge is one step the model wrote. Each
    iteration descends from the root: a node with fewer than ``branching``
    children takes a new one (expansion; ``expansion=full``), otherwise the
    descent moves to the child of highest UCT score v̂(child) + ``exploration``
    · sqrt(log(N(node) + 1) / (N(child) + 1)). From there a rollout completes the
    partial to the end and every step it wrote becomes a node. Its terminal
    reward r (``verifier``, formerly ``reward``: a verifier such as ``agreement`` or
    ``self-eval``, never the ground truth) is backed up by the soft Bellman equation:
    v̂(leaf) = r, v̂(node) = (1/λ) log mean_children exp(λ v̂(child))
    (``backup=soft``, λ = ``backup_lambda``), the estimate of
    V(x) = (1/λ) log E[exp(λ r) | x] with the children as draws from the model;
    so a node's value leans toward its best subtree, the more so as λ grows. As
    λ → 0 it tends to the plain mean of the children's values.
    ``backup=mean`` is this strategy's earlier rule: the mean reward of the
    rollouts below (UCT's average, which counts each child by its visits).
    ``expansion=ucb`` is its earlier expansion rule: a new branch is opened
    only when its score (the node's own value plus the bonus at zero visits)
    is at least the best child's UCT score. Anytime: ``rollouts`` rollouts in all,
    ``batch`` selected at once.

    Defaults: ``backup_lambda=1`` (the project page's target p(x)·exp(r(x)); the
    paper tunes λ per task and its value for text is not stated in what we could
    read), ``exploration=0.5`` and ``branching=3`` (ours; the paper's constants
    for text were not knowable either). Deliberate differences: rollouts are
    selected ``batch`` at a time, with virtual visits so one batch spreads out,
    and the bonus adds 1 to both counts so an unvisited child scores finitely;
    since ``agreement`` rewards change with every rollout, each backup recomputes
    every value from all rewards (for a fixed reward that is the paper's
    incremental backup); and the answer is chosen by ``answer`` over all
    rollouts (the best-rewarded, or the reward-weighted vote), not by a last
    greedy descent.
    """

    name: ClassVar[str] = "tree-search"
    summary: ClassVar[str] = "rollouts grow a tree; terminal rewards soft-backed-up; UCT selection"
    example: ClassVar[str] = "tree-search:rollouts=16,branching=3,verifier=self-eval"

    rollouts: int = option(16, "rollouts in all")
    batch: int = option(4, "rollouts selected at once")
    branching: int = option(3, "children a node takes before the descent picks one by UCT")
    exploration: float = option(0.5, "UCT's exploration weight")
    verifier: str | Verifier = option(
        "agreement",
        "verifier that rewards finished rollouts (agreement, self-eval)",
        formerly="reward",
    )
    backup: str = option("soft", "value backup: soft (soft Bellman) or mean")
    backup_lambda: float = option(1.0, "lambda of the soft backup: higher leans to the best child")
    expansion: str = option(
        "full", "full (up to branching children) or ucb (when it beats the best)"
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.rollouts < 1 or self.batch < 1 or self.branching < 1:
            raise ValueError("rollouts, batch and branching must be >= 1")
        if self.exploration < 0:
            raise ValueError("exploration must be >= 0")
        if self.backup not in BACKUP_RULES:
            raise ValueError(f"backup must be one of {', '.join(BACKUP_RULES)}")
        if self.backup_lambda <= 0:
            raise ValueError("backup_lambda must be > 0 (backup=mean is its limit at 0)")
        if self.expansion not in EXPANSION_RULES:
            raise ValueError(f"expansion must be one of {', '.join(EXPANSION_RULES)}")
        check_shape("verifier", self.verifier)

    def references(self) -> Iterator[Reference]:
        yield from named("verifier", self.verifier)

    def solve(self, problem: Problem, ctx: Context) -> Solution:
        return self.grow(problem, ctx)[0]

    def grow(self, problem: Problem, ctx: Context) -> tuple[Solution, SearchTree]:
        """`solve`, and the tree it grew (values backed up from ``tree.rewards``)."""
        tree = SearchTree(
            self.branching, self.exploration,
            backup=self.backup, backup_lambda=self.backup_lambda, expansion=self.expansion,
        )  # fmt: skip
        stepper = Stepper(problem, ctx, self, keep_tree=True)
        verifier = ctx.resolver.verifier(self.verifier)
        ends: list[Partial] = []
        trace: list[dict] = []
        while len(ends) < self.rollouts:
            chosen = tree.select(min(self.batch, self.rollouts - len(ends)))
            if not chosen:
                break  # every branch is finished
            groups: dict[int, list[TreeNode]] = {}
            for node in chosen:
                groups.setdefault(id(node), []).append(node)
            starts = [group[0] for group in groups.values()]
            written = stepper.complete(
                [n.partial for n in starts], [len(g) for g in groups.values()]
            )
            tree.settle(chosen)
            new = [(start, end) for start, group in zip(starts, written, strict=True)
                   for end in group]  # fmt: skip
            if not new:
                break  # the budget is spent
            for start, end in new:
                tree.add_rollout(start, end)
                ends.append(end)
            candidates = [Candidate.from_partial(p, problem.kind) for p in ends]
            if self.verifier == "agreement":  # agreement changes with every rollout: rescore all
                tree.rewards = verifier.score(problem, candidates, ctx)
            else:
                tree.rewards += verifier.score(problem, candidates[len(tree.rewards) :], ctx)
            tree.back_up()
            best = max(range(len(ends)), key=lambda r: tree.rewards[r])
            trace.append({"rollouts": len(ends), "nodes": tree.size,
                          "root_value": round(tree.root.value, 4),
                          "best_answer": candidates[best].answer})  # fmt: skip
        values = {id(node.partial): node.value for node in tree.nodes()}
        solution = stepper.answer(list(zip(ends, tree.rewards, strict=True)), trace, values=values)
        return solution, tree


class SearchTree:
    """The tree `TreeSearch` grows; ``rewards[r]`` is rollout r's terminal reward."""

    def __init__(
        self,
        branching: int,
        exploration: float,
        *,
        backup: str = "soft",
        backup_lambda: float = 1.0,
        expansion: str = "full",
    ) -> None:
        self.branching, self.exploration = branching, exploration
        self.backup, self.backup_lambda, self.expansion = backup, backup_lambda, expansion
        self.root = TreeNode(Partial())
        self.rewards: list[float] = []
        self.size = 1

    def select(self, count: int) -> list[TreeNode]:
        """Up to ``count`` nodes to roll out from (one may be chosen several times)."""
        chosen = []
        for _ in range(count):
            node = self._descend()
            if node is None:
                break
            node.pending += 1
            node.branching += 1
            chosen.append(node)
        return chosen

    def settle(self, chosen: Sequence[TreeNode]) -> None:
        """Forget the batch's virtual visits once its rollouts are back."""
        for node in chosen:
            node.pending = node.branching = 0

    def add_rollout(self, start: TreeNode, end: Partial) -> None:
        """Hang a rollout's steps below ``start`` and count it at every node above."""
        rollout = len(self.root.rollouts)
        node = start
        for partial in _lineage(end)[len(start.partial.steps) :]:
            node.children.append(TreeNode(partial, parent=node))
            node = node.children[-1]
            self.size += 1
        while node is not None:
            node.rollouts.append(rollout)
            node = node.parent

    def nodes(self) -> list[TreeNode]:
        """Every node, each after its parent."""
        stack, order = [self.root], []
        while stack:
            order.append(stack.pop())
            stack.extend(order[-1].children)
        return order

    def back_up(self) -> None:
        """Every node's value from ``rewards``: see `TreeSearch` (``backup``)."""
        for node in reversed(self.nodes()):  # children before their parents
            if not node.rollouts:
                node.value = 0.0
            elif self.backup == "mean":
                node.value = sum(self.rewards[r] for r in node.rollouts) / len(node.rollouts)
            elif not node.children:  # a rollout's end
                node.value = self.rewards[node.rollouts[0]]
            else:
                node.value = soft_value([c.value for c in node.children], self.backup_lambda)

    def _descend(self) -> TreeNode | None:
        node = self.root
        while True:
            visits = len(node.rollouts) + node.pending
            options = [c for c in node.children if self._open(c)]
            if not node.partial.finished and len(node.children) + node.branching < self.branching:
                if self.expansion == "full" or not options:
                    return node
                branch = node.value + self._bonus(visits, 0)
                if branch >= max(self._ucb(c, visits) for c in options):
                    return node
            if not options:
                return None
            node = max(options, key=lambda c: self._ucb(c, visits))

    def _ucb(self, node: TreeNode, parent_visits: int) -> float:
        return node.value + self._bonus(parent_visits, len(node.rollouts) + node.pending)

    def _bonus(self, parent_visits: int, visits: int) -> float:
        return self.exploration * math.sqrt(math.log(parent_visits + 1) / (visits + 1))

    def _open(self, node: TreeNode) -> bool:
        """Whether a rollout can still start at or below ``node``."""
        if node.partial.finished:
            return False
        if len(node.children) + node.branching < self.branching:
            return True
        return any(self._open(c) for c in node.children)


def soft_value(values: Sequence[float], lam: float) -> float:
    """(1/λ) log mean exp(λ v) over ``values``: DTS's soft Bellman backup of a node's
    children (computed shifted by the largest, so exp cannot overflow)."""
    top = max(values)
    return top + math.log(sum(math.exp(lam * (v - top)) for v in values) / len(values)) / lam


def _lineage(partial: Partial) -> list[Partial]:
    """``partial``'s ancestors after the root, oldest first, then ``partial`` itself."""
    chain = []
    node: Partial | None = partial
    while node is not None and node.steps:
        chain.append(node)
        node = node.parent
    return chain[::-1]


def resampling_weights(
    values: Sequence[float], transform: str = "logit", temperature: float = 1.0
) -> np.ndarray:
    """softmax(w / ``temperature``) over particles valued ``values`` (rewards in [0, 1]).

    ``transform=logit``: w = log(r / (1 - r)), r clipped to [1e-7, 1 - 1e-7]
    (Puri et al.; at temperature 1 the weights are the odds r / (1 - r),
    normalised). ``transform=value``: w = r.
    """
    rewards = np.asarray(values, dtype=float)
    if transform == "logit":
        rewards = np.clip(rewards, LOGIT_CLIP, 1 - LOGIT_CLIP)
        rewards = np.log(rewards / (1 - rewards))
    shifted = np.exp((rewards - rewards.max()) / temperature)
    return shifted / shifted.sum()
