"""The meter: every model call passes here, is fitted into the budget, and is recorded.

A budget is a hard cap. Before each call the meter shrinks it (fewer samples,
then fewer tokens) so that even the worst case fits beside what was spent and
what calls in flight hold: tokens and dollars can never be exceeded, however
many calls run at once. The worst case is held from the fit until the call's
real usage replaces it, in one locked step, so no moment counts neither. It
rests on ``count_tokens``, exact for a local model and an upper bound for a
remote one, and on each backend request paying its own prompt (n prompts for
a backend that is not ``batched``). Time is enforced by a deadline: no call
starts after it, and a local backend checks it between decoding steps, so a
call overruns ``max_seconds`` by at most one step (a remote request already
sent runs to its end).

The meter also keeps each model's share of the usage (`Meter.usage_by_model`,
the same sums as the ledger's rows per model) and each stage's, what the calls
were for (`Meter.usage_by_stage`, `STAGES`), and tells a watcher how the run is
going while it works (`Meter.watch`, `Progress`), the strategy's vote included
(`Meter.report_tally`).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from typing import Any

from thinktank.errors import BudgetExhausted, ThinktankError
from thinktank.ledger import CallLog, CallRecorder, CallRow, Ledger
from thinktank.models.base import (
    Completion,
    Model,
    ProgressCallback,
    Prompt,
    PruneRule,
    Sampling,
    TextCallback,
)

#: What a call is for (its ``stage``, in the ledger and `Meter.usage_by_stage`), so a
#: strategy that calls one model for several things shows what each part cost.
STAGES: dict[str, str] = {
    "sample": "the policy's own samples: answers, reasoning steps, agents' replies",
    "judge": "a model scoring or comparing answers or steps (self-eval, judge@, pairwise)",
    "reward": "a process reward a model writes: P(Yes) of a partial, rollouts",
    "aggregate": "one answer written from others' (an aggregator, a final-answer step)",
    "draft": "a cheaper model's steps that a dearer one checks (speculative reasoning)",
    "plan": "calls that shape later prompts (approaches to try)",
    "summary": "progress summaries passed between parallel paths",
}


def check_stage(stage: str) -> None:
    """Refuse a stage outside `STAGES` (a typo would split a stage's usage in two)."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; one of {', '.join(STAGES)}")


@dataclass(frozen=True)
class Budget:
    """Hard caps for one run; ``None`` means no cap."""

    max_tokens: int | None = None
    max_cost_usd: float | None = None
    max_seconds: float | None = None

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if value is not None and value <= 0:
                raise ValueError(f"budget {name} must be positive, got {value}")


@dataclass(eq=False)  # held and released by identity
class _Hold:
    """A call's worst case, held from its fit until its real usage is recorded."""

    tokens: int
    cost_usd: float
    #: Completion tokens the call has written so far (for `Progress`).
    written: int = 0


@dataclass
class Usage:
    """What a run consumed. ``seconds`` is wall time spent inside model calls (calls
    that overlap count once)."""

    prompt_tokens: int = 0
    #: The part of ``prompt_tokens`` a prefix cache served (cheaper, see `Price`).
    cached_tokens: int = 0
    completion_tokens: int = 0
    #: The part of ``completion_tokens`` that was hidden reasoning (priced apart).
    thinking_tokens: int = 0
    cost_usd: float = 0.0
    seconds: float = 0.0
    calls: int = 0
    completions: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_dict(self) -> dict[str, float | int]:
        return {**asdict(self), "total_tokens": self.total_tokens}


@dataclass(frozen=True)
class Progress:
    """How a run stands while it works: what finished calls spent, plus the completion
    tokens that calls still in flight have written so far (`Meter.watch`), and how the
    strategy's own vote stands (`Meter.report_tally`; None until it reports)."""

    #: Finished calls (interrupted ones included) and the samples they returned.
    calls: int
    completions: int
    prompt_tokens: int
    completion_tokens: int
    #: Of finished calls only: a call's price is known once it ends.
    cost_usd: float
    #: Wall time since the meter was made (the run's start).
    seconds: float
    #: The answer leading the strategy's latest vote, its share of the vote's weight
    #: and how many answers were counted.
    leader: str | None = None
    leader_share: float | None = None
    voters: int | None = None

    def to_dict(self) -> dict[str, float | int | str | None]:
        return asdict(self)


#: Receives a `Progress`, from the thread of the call that made it: it must be quick.
ProgressWatcher = Callable[[Progress], None]


class SampleStore:
    """Seeded samples kept for replay, so strategies compared on a benchmark vote over
    the very same samples (a paired comparison) and each sample is drawn once.

    A seeded sample is fixed by (model, prompt, sampling, seed, index): sample i of
    a call with n samples is sample i of any larger call with the same seed. A
    replayed call is metered as if drawn (tokens and dollars exactly; seconds as
    its samples' share of the original call's): each strategy still pays for
    what it would have drawn alone. A call
    on a stream that another thread is drawing waits for it, then replays.
    """

    def __init__(self) -> None:
        self._samples: dict[tuple, tuple[Completion, float]] = {}
        self._drawing: dict[tuple, threading.Event] = {}
        self._lock = threading.Lock()

    def replay_or_draw(
        self,
        model: Model,
        prompt: Prompt,
        n: int,
        sampling: Sampling,
        draw: Callable[[], tuple[list[Completion], float]],
    ) -> tuple[list[Completion], float]:
        """The call's n completions and seconds: stored ones if all were drawn, else
        ``draw()``'s (then kept)."""
        stream = (model.name, repr(prompt), sampling.with_(sample_offset=0))
        keys = [(stream, sampling.sample_offset + i) for i in range(n)]
        while True:
            with self._lock:
                found = [self._samples.get(key) for key in keys]
                if all(entry is not None for entry in found):
                    return [c for c, _ in found], sum(seconds for _, seconds in found)
                busy = self._drawing.get(stream)
                if busy is None:
                    self._drawing[stream] = drawing = threading.Event()
                    break
            busy.wait()
        try:
            completions, seconds = draw()
            share = seconds / max(len(completions), 1)  # a replay pays its samples' share
            with self._lock:
                for key, completion in zip(keys, completions, strict=False):
                    self._samples.setdefault(key, (completion, share))
        finally:
            with self._lock:
                del self._drawing[stream]
            drawing.set()
        return completions, seconds


class _Watch:
    """A `Meter.watch` watcher, handed one `Progress` at a time (so in order): always
    when a call ends, else only once ``every`` seconds have passed since the last."""

    def __init__(self, watcher: ProgressWatcher, every: float) -> None:
        self._watcher, self._every = watcher, every
        self._told_at = -math.inf
        self._lock = threading.Lock()

    def tell(self, snapshot: Callable[[], Progress], *, call_ended: bool) -> None:
        if not call_ended and time.monotonic() - self._told_at < self._every:
            return  # the cheap check, made without the lock for every token
        with self._lock:
            now = time.monotonic()
            if not call_ended and now - self._told_at < self._every:
                return
            self._told_at = now
            self._watcher(snapshot())


class Meter:
    """Fits calls into a `Budget`, counts their `Usage`, writes one ledger row per call.

    Each call names its ``stage``, one of `STAGES`: ``sample`` (the default),
    ``judge``, ``reward``, ``aggregate``, ``draft``, ``plan``, ``summary``; the
    ledger row and `usage_by_stage` keep it, so a model called both as the policy
    and as its own judge shows what each part cost.

    With a `SampleStore`, seeded calls without a prune rule or deadline are
    replayed from it when it holds their samples.
    """

    def __init__(
        self,
        budget: Budget | None = None,
        *,
        ledger: Ledger | CallLog | None = None,
        run_id: str = "",
        strategy: str = "",
        problem_id: str = "",
        cancel: threading.Event | None = None,
        samples: SampleStore | None = None,
    ) -> None:
        self.budget = budget or Budget()
        self.samples = samples
        #: Once set, calls in flight stop at their next token and new ones are refused,
        #: both raising KeyboardInterrupt (how a bench run stops its other problems).
        self.cancel = cancel
        # Write-only: strategies reach the meter through their context, and the ledger
        # holds the grader's scores.
        self._calls = None if ledger is None else CallRecorder(ledger.record_call)
        self.run_id = run_id
        self.strategy = strategy
        self.problem_id = problem_id
        self.usage = Usage()
        # Each model's share of the usage; its seconds are its calls' own (as in the ledger).
        self._by_model: dict[str, Usage] = {}
        # Each stage's share (`STAGES`), its seconds also its calls' own.
        self._by_stage: dict[str, Usage] = {}
        self._watch: _Watch | None = None
        # The strategy's latest (leader, leader_share, voters), for `Progress`.
        self._tally: tuple[str | None, float | None, int | None] = (None, None, None)
        #: True once the budget has cut a call short or refused one.
        self.exhausted = False
        self._started = time.monotonic()
        self._lock = threading.Lock()
        # Worst cases of calls in flight, so concurrent calls cannot overshoot together
        # (summed when needed: adding and taking away floats would drift).
        self._holds: set[_Hold] = set()
        # Calls in flight, and since when: overlapping calls (a search's batch of
        # prompts) count their wall time once in usage.seconds.
        self._in_flight = 0
        self._busy_since = 0.0

    @property
    def usage_by_model(self) -> dict[str, Usage]:
        """Each model's usage (a copy), by model name: the tokens, calls and dollars sum
        to `usage`; its ``seconds`` are its calls' own, so calls that overlap each count."""
        with self._lock:
            return {name: replace(usage) for name, usage in self._by_model.items()}

    @property
    def usage_by_stage(self) -> dict[str, Usage]:
        """Each stage's usage (a copy), by `STAGES` word, like `usage_by_model`: summing
        to `usage`, the same sums as the ledger's rows per stage."""
        with self._lock:
            return {stage: replace(usage) for stage, usage in self._by_stage.items()}

    def watch(self, watcher: ProgressWatcher, every: float = 0.5) -> None:
        """Call ``watcher`` with the run's `Progress` each time a call ends, and at most
        every ``every`` seconds while calls write tokens. It runs on the calling
        thread: a server hands the event over to its event loop."""
        self._watch = _Watch(watcher, every)

    def report_tally(self, leader: str | None, leader_share: float | None, voters: int) -> None:
        """Note how the strategy's vote stands now (its own vote: nothing here is graded)
        and tell the watcher at once, so a stream shows the leader as it moves."""
        with self._lock:
            self._tally = (leader, leader_share, voters)
        self._tell_watcher(call_ended=True)  # always told, as a call's end is

    def snapshot(self) -> Progress:
        """How the run stands now."""
        with self._lock:
            usage = self.usage
            leader, leader_share, voters = self._tally
            return Progress(
                calls=usage.calls,
                completions=usage.completions,
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens
                + sum(hold.written for hold in self._holds),
                cost_usd=usage.cost_usd,
                seconds=time.monotonic() - self._started,
                leader=leader,
                leader_share=leader_share,
                voters=voters,
            )

    def _tell_watcher(self, *, call_ended: bool) -> None:
        if self._watch is not None:
            self._watch.tell(self.snapshot, call_ended=call_ended)

    @property
    def deadline(self) -> float | None:
        if self.budget.max_seconds is None:
            return None
        return self._started + self.budget.max_seconds

    def generate(
        self,
        model: Model,
        prompt: Prompt,
        n: int = 1,
        sampling: Sampling | None = None,
        *,
        progress: ProgressCallback | None = None,
        prune: PruneRule | None = None,
        on_text: TextCallback | None = None,
        stage: str = "sample",
    ) -> list[Completion]:
        """Call ``model.generate`` within the budget; may return fewer or shorter samples.

        ``on_text`` streams the text as it is written (backends with
        ``capabilities.streaming``); ``stage`` says what the call is for (`STAGES`).
        Raises `BudgetExhausted` when not even one token fits.
        """
        check_stage(stage)
        self._check_cancel()
        sampling = sampling or Sampling()
        prompt_tokens = model.count_tokens(prompt)
        with self._reservation(model, prompt_tokens, n, sampling) as (n, sampling, hold):
            shareable = (
                self.samples is not None
                and sampling.seed is not None
                and prune is None
                and on_text is None
                and self.deadline is None
            )
            wall: float | None = None  # stays None for a replay

            def draw() -> tuple[list[Completion], float]:
                nonlocal wall
                streaming = {"on_text": on_text} if on_text is not None else {}

                def invoke(deadline: float | None, track: ProgressCallback) -> list[Completion]:
                    return model.generate(prompt, n, sampling, deadline=deadline,
                                          progress=track, prune=prune, **streaming)  # fmt: skip

                completions, seconds, wall = self._call(
                    model, stage, prompt_tokens, n, invoke, progress, hold
                )
                return completions, seconds

            if shareable:
                completions, seconds = self.samples.replay_or_draw(model, prompt, n, sampling, draw)
            else:
                completions, seconds = draw()
            # A replay is charged its share of the original call's seconds.
            wall_seconds = seconds if wall is None else wall
            self._settle(model, stage, completions, prompt_tokens, seconds, wall_seconds, hold)
        return completions

    def generate_together(
        self,
        model: Model,
        prompt: Prompt,
        workers: Sequence[str],
        sampling: Sampling | None = None,
        *,
        progress: ProgressCallback | None = None,
        stage: str = "sample",
        **options: Any,
    ) -> list[Completion]:
        """Workers that share one KV cache (``model.generate_together``, Hogwild!) within
        the budget: it may drop workers, then shorten them, as for ``n`` samples.
        One ledger row for the whole session."""
        check_stage(stage)
        if not model.capabilities.shared_cache:
            raise ThinktankError(
                f"{model.name} cannot run workers over one shared KV cache;"
                " use the torch backend (--model torch:smollm2)"
            )
        self._check_cancel()
        sampling = sampling or Sampling()
        # Each worker's header is computed once; headers fed again come out of its max_tokens.
        prompt_tokens = model.count_tokens(prompt) + sum(map(model.count_tokens, workers))
        with self._reservation(model, prompt_tokens, len(workers), sampling) as (n, sampling, hold):

            def invoke(deadline: float | None, track: ProgressCallback) -> list[Completion]:
                return model.generate_together(prompt, workers[:n], sampling, deadline=deadline,
                                               progress=track, **options)  # fmt: skip

            completions, seconds, wall = self._call(
                model, stage, prompt_tokens, n, invoke, progress, hold
            )
            self._settle(model, stage, completions, prompt_tokens, seconds, wall, hold)
        return completions

    def _check_cancel(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise KeyboardInterrupt

    @contextmanager
    def _reservation(
        self, model: Model, prompt_tokens: int, n: int, sampling: Sampling
    ) -> Iterator[tuple[int, Sampling, _Hold]]:
        """Fit the call into the budget and hold its worst case until `_record` swaps it
        for the call's usage (released here if the call never got that far)."""
        with self._lock:
            n, sampling = self._fit(model, prompt_tokens, n, sampling)
            hold = _Hold(*_worst_case(model, prompt_tokens, n, sampling.max_tokens))
            self._holds.add(hold)
        try:
            yield n, sampling, hold
        finally:
            with self._lock:
                self._holds.discard(hold)

    def _settle(
        self,
        model: Model,
        stage: str,
        completions: list[Completion],
        prompt_tokens: int,
        seconds: float,
        wall_seconds: float,
        hold: _Hold,
    ) -> None:
        """Record a finished call as billed: the backend's own prompt count (a remote
        one: ours was a bound), once per backend request."""
        requests: dict[int, list[Completion]] = {}
        for completion in completions:
            requests.setdefault(completion.request, []).append(completion)
        if requests:
            prompt_tokens = sum(group[0].prompt_tokens for group in requests.values())
        self._record(
            model,
            stage,
            len(completions),
            prompt_tokens,
            sum(c.completion_tokens for c in completions),
            seconds,
            cached_tokens=sum(min(c.cached_tokens for c in group) for group in requests.values()),
            thinking_tokens=sum(c.thinking_tokens for c in completions),
            wall_seconds=wall_seconds,
            hold=hold,
        )
        if any(c.finish_reason == "budget" for c in completions):
            self.exhausted = True

    def _call(
        self,
        model: Model,
        stage: str,
        prompt_tokens: int,
        n: int,
        invoke: Callable[[float | None, ProgressCallback], list[Completion]],
        progress: ProgressCallback | None,
        hold: _Hold,
    ) -> tuple[list[Completion], float, float]:
        """The model call itself (``invoke(deadline, progress)``), its seconds, and the
        wall time it adds to usage (0 while an overlapping call is still running); an
        interrupted call is recorded as such. The tokens it writes are counted on its
        ``hold`` for `Progress`."""

        def track(tokens: int) -> None:
            hold.written = tokens
            if self.cancel is not None and self.cancel.is_set():
                raise KeyboardInterrupt
            if progress is not None:
                progress(tokens)
            self._tell_watcher(call_ended=False)

        started = time.monotonic()
        with self._lock:
            self._check_deadline()  # fitted before it, maybe; still none starts after it
            if not self._in_flight:
                self._busy_since = started
            self._in_flight += 1
        try:
            completions = invoke(self.deadline, track)
        except KeyboardInterrupt:
            # Record what the interrupted call had already spent, then let it stop the run.
            seconds = time.monotonic() - started
            self._record(model, stage, n, prompt_tokens, hold.written, seconds, hold=hold)
            raise
        finally:
            ended = time.monotonic()
            with self._lock:
                self._in_flight -= 1
                wall = 0.0 if self._in_flight else ended - self._busy_since
        return completions, ended - started, wall

    def _record(
        self,
        model: Model,
        stage: str,
        n: int,
        prompt_tokens: int,
        completion_tokens: int,
        seconds: float,
        cached_tokens: int = 0,
        wall_seconds: float | None = None,
        thinking_tokens: int = 0,
        hold: _Hold | None = None,
    ) -> None:
        """One ledger row (with the call's own ``seconds``); usage counts
        ``wall_seconds``: 0 for a call that overlapped one still running. The usage
        replaces the call's ``hold`` in the same locked step."""
        cost = model.price.cost(prompt_tokens, completion_tokens, cached_tokens, thinking_tokens)
        with self._lock:
            if hold is not None:
                self._holds.discard(hold)
            own = self._by_model.setdefault(model.name, Usage())
            staged = self._by_stage.setdefault(stage, Usage())
            for usage, usage_seconds in (
                (self.usage, seconds if wall_seconds is None else wall_seconds),
                (own, seconds),
                (staged, seconds),
            ):
                usage.prompt_tokens += prompt_tokens
                usage.cached_tokens += cached_tokens
                usage.completion_tokens += completion_tokens
                usage.thinking_tokens += thinking_tokens
                usage.cost_usd += cost
                usage.seconds += usage_seconds
                usage.calls += 1
                usage.completions += n
        if self._calls is not None:
            self._calls.record_call(
                CallRow(
                    run_id=self.run_id,
                    problem_id=self.problem_id,
                    strategy=self.strategy,
                    model=model.name,
                    n=n,
                    prompt_tokens=prompt_tokens,
                    cached_tokens=cached_tokens,
                    completion_tokens=completion_tokens,
                    thinking_tokens=thinking_tokens,
                    seconds=seconds,
                    cost_usd=cost,
                    stage=stage,
                )
            )
        self._tell_watcher(call_ended=True)

    def _check_deadline(self) -> None:
        """Refuse a call once the time budget is spent (lock held)."""
        deadline = self.deadline
        if deadline is not None and time.monotonic() >= deadline:
            self.exhausted = True
            raise BudgetExhausted("the time budget is spent")

    def _fits(self, model: Model, prompt_tokens: int, n: int, max_tokens: int) -> bool:
        """Whether the worst case of n samples of ``max_tokens`` fits beside what was
        spent and what calls in flight hold (lock held)."""
        tokens, cost = _worst_case(model, prompt_tokens, n, max_tokens)
        if self.budget.max_tokens is not None:
            held = sum(hold.tokens for hold in self._holds)
            if self.usage.total_tokens + held + tokens > self.budget.max_tokens:
                return False
        if self.budget.max_cost_usd is not None:
            held_cost = sum(hold.cost_usd for hold in self._holds)
            # The small shave keeps float rounding from overshooting the cap.
            if self.usage.cost_usd + held_cost + cost > self.budget.max_cost_usd * (1 - 1e-9):
                return False
        return True

    def _fit(
        self, model: Model, prompt_tokens: int, n: int, sampling: Sampling
    ) -> tuple[int, Sampling]:
        """The call shrunk to fit: all of it, else fewer samples, else one shorter one."""
        self._check_deadline()
        fitting = _largest(n, lambda k: self._fits(model, prompt_tokens, k, sampling.max_tokens))
        if fitting == n:
            return n, sampling
        self.exhausted = True
        if fitting:
            return fitting, sampling
        tokens = _largest(sampling.max_tokens - 1, lambda t: self._fits(model, prompt_tokens, 1, t))
        if not tokens:
            raise BudgetExhausted("the budget has no room for another call")
        return 1, sampling.with_(max_tokens=tokens)


def _worst_case(model: Model, prompt_tokens: int, n: int, max_tokens: int) -> tuple[int, float]:
    """The most tokens and dollars n samples of ``max_tokens`` can cost: the prompt is paid
    once per backend request (n of them where the backend is not ``batched``) and every
    completion token at the dearest output price."""
    prompts = prompt_tokens * (1 if model.capabilities.batched else n)
    completion_tokens = n * max_tokens
    price = model.price
    cost = price.cost(prompts, 0) + completion_tokens * price.dearest_output_per_mtok / 1e6
    return prompts + completion_tokens, cost


def _largest(upper: int, fits: Callable[[int], bool]) -> int:
    """The largest k in 1..upper for which ``fits(k)`` (true up to some k, then false),
    or 0 when none is."""
    low, high = 0, upper
    while low < high:
        middle = (low + high + 1) // 2
        if fits(middle):
            low = middle
        else:
            high = middle - 1
    return low
