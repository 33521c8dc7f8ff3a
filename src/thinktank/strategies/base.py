"""The strategy interface: `Strategy.solve(problem, ctx) -> Solution`."""

from __future__ import annotations

import itertools
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from thinktank.aggregate import Vote
from thinktank.errors import BudgetExhausted
from thinktank.meter import Meter, check_stage
from thinktank.models.base import (
    CallGroup,
    Completion,
    Model,
    ProgressCallback,
    Prompt,
    PruneRule,
    Sampling,
    calling_in_group,
)
from thinktank.problem import Problem
from thinktank.resolver import Reference, Resolver
from thinktank.solution import Solution


@dataclass
class Context:
    """What a strategy works with: the model, the meter every call goes through, a seed,
    and the `Resolver` that turns the names in its options into models, verifiers and
    process rewards (the server's knows only what its operator configured).

    It holds no ground truth: a strategy cannot reach the reference answer, and the
    meter records calls write-only (a `thinktank.ledger.CallRecorder`), so the
    ledger's results, which hold the grader's scores, are out of reach too; in a
    bench run the resolver refuses to read the run in progress. (Python code can
    always dig through the interpreter itself; a strategy is code its user chose to
    run, and this keeps the ground truth out of everything it is handed.)
    """

    model: Model
    meter: Meter
    seed: int | None = None
    progress: ProgressCallback | None = None
    resolver: Resolver = field(default_factory=Resolver)
    #: Stop strings that end every sample drawn through this context, besides each
    #: call's own (a server request's ``stop``).
    stop: tuple[str, ...] = ()
    #: What this context's calls are for, in the ledger and ``usage_by_stage`` (a
    #: `thinktank.meter.STAGES` word); `at_stage` makes a context for another part.
    stage: str = "sample"
    _calls: itertools.count = field(default_factory=itertools.count, repr=False)

    def __post_init__(self) -> None:
        check_stage(self.stage)

    def at_stage(self, stage: str) -> Context:
        """This context for another part of the strategy (a judge, an aggregator):
        the same meter and the same seed counter, so seeds do not move."""
        return replace(self, stage=stage)

    def generate(
        self,
        prompt: Prompt,
        n: int,
        sampling: Sampling,
        *,
        prune: PruneRule | None = None,
        model: Model | None = None,
    ) -> list[Completion]:
        """Sample through the meter, from ``self.model`` unless another ``model`` is named
        (a judge, a cheaper model). Each call's seed is derived from ``self.seed``."""
        sampling = self._seeded(sampling)
        return self.meter.generate(
            model or self.model,
            prompt,
            n,
            sampling,
            progress=self.progress,
            prune=prune,
            stage=self.stage,
        )

    def generate_each(
        self, calls: Sequence[tuple[Prompt, int, Sampling]], *, model: Model | None = None
    ) -> list[list[Completion]]:
        """Make several calls at once, each ``(prompt, n, sampling)``: the embedded backend
        decodes them in one batch. A call the budget refuses returns no completions.

        Seeds are derived in the calls' order and the calls form a `CallGroup`, so
        results do not depend on which thread runs first.
        """
        calls = [(prompt, n, self._seeded(sampling)) for prompt, n, sampling in calls]
        group = CallGroup(len(calls))

        def call(index: int) -> list[Completion]:
            prompt, n, sampling = calls[index]
            with calling_in_group(group, index):
                try:
                    return self.meter.generate(
                        model or self.model, prompt, n, sampling, stage=self.stage
                    )
                except BudgetExhausted:
                    return []

        if len(calls) <= 1:
            return [call(i) for i in range(len(calls))]
        with ThreadPoolExecutor(max_workers=len(calls)) as pool:
            return list(pool.map(call, range(len(calls))))

    def generate_together(
        self, prompt: Prompt, workers: Sequence[str], sampling: Sampling, **options: Any
    ) -> list[Completion]:
        """Workers that write at once into one shared KV cache (Hogwild!), through the
        meter; ``options`` go to the backend's ``generate_together``."""
        return self.meter.generate_together(
            self.model,
            prompt,
            workers,
            self._seeded(sampling),
            progress=self.progress,
            stage=self.stage,
            **options,
        )

    def report_vote(self, vote: Vote) -> None:
        """Tell the meter how the strategy's vote stands (its leader, the leader's share,
        the answers counted), so a stream shows who is winning while it works."""
        self.meter.report_tally(vote.winner, vote.winner_share, vote.voters)

    def _seeded(self, sampling: Sampling) -> Sampling:
        """The call's sampling with its seed derived from ``self.seed`` and the
        context's stop strings added."""
        if extra := tuple(s for s in self.stop if s not in sampling.stop):
            sampling = sampling.with_(stop=sampling.stop + extra)
        call = next(self._calls)
        if self.seed is not None and sampling.seed is None:
            return sampling.with_(seed=self.seed * 1_000_003 + call)
        return sampling


class Strategy(ABC):
    """A way of spending inference compute on a problem.

    Subclasses are dataclasses whose fields are the options of their spec string,
    so ``self-consistency:n=16`` builds ``SelfConsistency(n=16)``; each is declared
    with `thinktank.spec.option`, its default and its meaning for people.
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    #: A spec string that builds it, shown by ``thinktank strategies NAME``.
    example: ClassVar[str]

    @abstractmethod
    def solve(self, problem: Problem, ctx: Context) -> Solution:
        """Answer ``problem``. Return the best answer so far if the budget runs out."""

    def solve_batch(
        self, problems: Sequence[Problem], contexts: Sequence[Context]
    ) -> list[Solution]:
        """Answer several problems, each through its own context (its meter, its seed).

        By default each is solved alone, in turn. A strategy that shares a budget
        across a batch (batch-allocation) overrides this and sets
        ``batched = True``, so a benchmark hands it the whole batch at once.
        """
        return [self.solve(p, ctx) for p, ctx in zip(problems, contexts, strict=True)]

    #: True for strategies whose `solve_batch` needs the whole batch at once.
    batched: ClassVar[bool] = False
    #: What the strategy needs its model to do (`Capabilities` field names): without a
    #: model named, `thinktank.models.default_model_for` picks one that can.
    needs: ClassVar[frozenset[str]] = frozenset()

    def references(self) -> Iterator[Reference]:
        """The names this strategy's options hold that ``ctx.resolver`` resolves (models,
        verifiers, process rewards, a ledger), so that they are checked before it runs."""
        return iter(())

    def own_models(self) -> list[str]:
        """The models it calls whatever model it is run on (a cascade's pool, cheapest
        first); empty when it samples the model it is given. For estimates made
        before it runs (`thinktank.tune`)."""
        return []

    def samples_per_problem(self) -> int:
        """About how many samples one problem costs it from each model it calls (its
        ``n`` option where it has one), for estimates made before it runs."""
        return int(getattr(self, "n", 1))

    def revise_batch(
        self, items: Sequence[Sequence[tuple[str, str | None]]]
    ) -> tuple[list[str | None], dict[str, float]] | None:
        """Re-answer a whole benchmark batch at once; None keeps every answer as solved.

        ``items`` holds each problem's (worker, answer key) pairs, one per sample.
        A strategy that pools evidence across problems (truth inference) returns
        each problem's answer key and each worker's estimated reliability; the
        benchmark runner calls this once every problem is solved.
        """
        return None

    @property
    def spec(self) -> str:
        """The spec string that rebuilds this strategy."""
        from thinktank.spec import options_string

        options = options_string(self, only_changed=True)
        return f"{self.name}:{options}" if options else self.name
