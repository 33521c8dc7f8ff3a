"""The meter: every model call passes here, is fitted into the budget, and is recorded.

A budget is a hard cap. Before each call the meter shrinks it (fewer samples,
then fewer tokens) so that even the worst case fits: tokens and dollars can
never be exceeded. Time is enforced by a deadline that the backend checks
between decoding steps, so a call overruns ``max_seconds`` by at most one step.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

from thinktank.errors import BudgetExhausted, ThinktankError
from thinktank.ledger import CallLog, CallRow, Ledger
from thinktank.models.base import (
    Completion,
    Model,
    ProgressCallback,
    Prompt,
    PruneRule,
    Sampling,
    TextCallback,
)


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


class Meter:
    """Fits calls into a `Budget`, counts their `Usage`, writes one ledger row per call.

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
        self.ledger = ledger
        self.run_id = run_id
        self.strategy = strategy
        self.problem_id = problem_id
        self.usage = Usage()
        #: True once the budget has cut a call short or refused one.
        self.exhausted = False
        self._started = time.monotonic()
        self._lock = threading.Lock()
        # Worst cases of calls in flight, so concurrent calls cannot overshoot together.
        self._reserved_tokens = 0
        self._reserved_cost = 0.0
        # Calls in flight, and since when: overlapping calls (a search's batch of
        # prompts) count their wall time once in usage.seconds.
        self._in_flight = 0
        self._busy_since = 0.0

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
    ) -> list[Completion]:
        """Call ``model.generate`` within the budget; may return fewer or shorter samples.

        ``on_text`` streams the text as it is written (backends with
        ``capabilities.streaming``). Raises `BudgetExhausted` when not even one
        token fits.
        """
        self._check_cancel()
        sampling = sampling or Sampling()
        prompt_tokens = model.count_tokens(prompt)
        with self._reservation(model, prompt_tokens, n, sampling) as (n, sampling):
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

                completions, seconds, wall = self._call(model, prompt_tokens, n, invoke, progress)
                return completions, seconds

            if shareable:
                completions, seconds = self.samples.replay_or_draw(model, prompt, n, sampling, draw)
            else:
                completions, seconds = draw()
        # A replay is charged its share of the original call's seconds.
        self._settle(model, completions, prompt_tokens, seconds, seconds if wall is None else wall)
        return completions

    def generate_together(
        self,
        model: Model,
        prompt: Prompt,
        workers: Sequence[str],
        sampling: Sampling | None = None,
        *,
        progress: ProgressCallback | None = None,
        **options: Any,
    ) -> list[Completion]:
        """Workers that share one KV cache (``model.generate_together``, Hogwild!) within
        the budget: it may drop workers, then shorten them, as for ``n`` samples.
        One ledger row for the whole session."""
        if not model.capabilities.shared_cache:
            raise ThinktankError(
                f"{model.name} cannot run workers over one shared KV cache;"
                " use the torch backend (--model torch:smollm2)"
            )
        self._check_cancel()
        sampling = sampling or Sampling()
        # Each worker's header is computed once; headers fed again come out of its max_tokens.
        prompt_tokens = model.count_tokens(prompt) + sum(map(model.count_tokens, workers))
        with self._reservation(model, prompt_tokens, len(workers), sampling) as (n, sampling):

            def invoke(deadline: float | None, track: ProgressCallback) -> list[Completion]:
                return model.generate_together(prompt, workers[:n], sampling, deadline=deadline,
                                               progress=track, **options)  # fmt: skip

            completions, seconds, wall = self._call(model, prompt_tokens, n, invoke, progress)
        self._settle(model, completions, prompt_tokens, seconds, wall)
        return completions

    def _check_cancel(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise KeyboardInterrupt

    @contextmanager
    def _reservation(
        self, model: Model, prompt_tokens: int, n: int, sampling: Sampling
    ) -> Iterator[tuple[int, Sampling]]:
        """Fit the call into the budget and hold its worst case while it runs."""
        with self._lock:
            n, sampling = self._fit(model, prompt_tokens, n, sampling)
            worst_tokens = prompt_tokens + n * sampling.max_tokens
            worst_cost = model.price.cost(prompt_tokens, 0) + (
                n * sampling.max_tokens * model.price.dearest_output_per_mtok / 1e6
            )
            self._reserved_tokens += worst_tokens
            self._reserved_cost += worst_cost
        try:
            yield n, sampling
        finally:
            with self._lock:
                self._reserved_tokens -= worst_tokens
                self._reserved_cost -= worst_cost

    def _settle(
        self,
        model: Model,
        completions: list[Completion],
        prompt_tokens: int,
        seconds: float,
        wall_seconds: float,
    ) -> None:
        """Record a finished call: the backend's own prompt count when it gave one."""
        if completions:  # the backend's own count (a remote one: ours was an estimate)
            prompt_tokens = completions[0].prompt_tokens
        self._record(
            model,
            len(completions),
            prompt_tokens,
            sum(c.completion_tokens for c in completions),
            seconds,
            cached_tokens=min((c.cached_tokens for c in completions), default=0),
            thinking_tokens=sum(c.thinking_tokens for c in completions),
            wall_seconds=wall_seconds,
        )
        if any(c.finish_reason == "budget" for c in completions):
            self.exhausted = True

    def _call(
        self,
        model: Model,
        prompt_tokens: int,
        n: int,
        invoke: Callable[[float | None, ProgressCallback], list[Completion]],
        progress: ProgressCallback | None,
    ) -> tuple[list[Completion], float, float]:
        """The model call itself (``invoke(deadline, progress)``), its seconds, and the
        wall time it adds to usage (0 while an overlapping call is still running); an
        interrupted call is recorded as such."""
        generated = 0

        def track(tokens: int) -> None:
            nonlocal generated
            generated = tokens
            if self.cancel is not None and self.cancel.is_set():
                raise KeyboardInterrupt
            if progress is not None:
                progress(tokens)

        started = time.monotonic()
        with self._lock:
            if not self._in_flight:
                self._busy_since = started
            self._in_flight += 1
        try:
            completions = invoke(self.deadline, track)
        except KeyboardInterrupt:
            # Record what the interrupted call had already spent, then let it stop the run.
            self._record(model, n, prompt_tokens, generated, time.monotonic() - started)
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
        n: int,
        prompt_tokens: int,
        completion_tokens: int,
        seconds: float,
        cached_tokens: int = 0,
        wall_seconds: float | None = None,
        thinking_tokens: int = 0,
    ) -> None:
        """One ledger row (with the call's own ``seconds``); usage counts
        ``wall_seconds``: 0 for a call that overlapped one still running."""
        cost = model.price.cost(prompt_tokens, completion_tokens, cached_tokens, thinking_tokens)
        with self._lock:
            self.usage.prompt_tokens += prompt_tokens
            self.usage.cached_tokens += cached_tokens
            self.usage.completion_tokens += completion_tokens
            self.usage.thinking_tokens += thinking_tokens
            self.usage.cost_usd += cost
            self.usage.seconds += seconds if wall_seconds is None else wall_seconds
            self.usage.calls += 1
            self.usage.completions += n
        if self.ledger is not None:
            self.ledger.record_call(
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
                )
            )

    def _completion_room(self, model: Model, prompt_tokens: int) -> float:
        """How many completion tokens the budget still allows after this prompt."""
        room = math.inf
        if self.budget.max_tokens is not None:
            spent = self.usage.total_tokens + self._reserved_tokens
            room = self.budget.max_tokens - spent - prompt_tokens
        if self.budget.max_cost_usd is not None:
            price = model.price
            spent = self.usage.cost_usd + self._reserved_cost
            left_micro = (self.budget.max_cost_usd - spent) * 1e6
            left_micro -= prompt_tokens * price.input_per_mtok
            if left_micro < 0:
                return 0
            if price.dearest_output_per_mtok > 0:
                # The small shave keeps float rounding from overshooting the cap.
                room = min(room, left_micro * (1 - 1e-9) / price.dearest_output_per_mtok)
        return room

    def _fit(
        self, model: Model, prompt_tokens: int, n: int, sampling: Sampling
    ) -> tuple[int, Sampling]:
        deadline = self.deadline
        if deadline is not None and time.monotonic() >= deadline:
            self.exhausted = True
            raise BudgetExhausted("the time budget is spent")
        room = self._completion_room(model, prompt_tokens)
        if room < 1:
            self.exhausted = True
            raise BudgetExhausted("the budget has no room for another call")
        if n * sampling.max_tokens <= room:
            return n, sampling
        self.exhausted = True
        if sampling.max_tokens <= room:
            return int(room // sampling.max_tokens), sampling
        return 1, sampling.with_(max_tokens=int(room))
