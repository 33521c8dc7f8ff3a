"""The meter: every model call passes here, is fitted into the budget, and is recorded.

A budget is a hard cap (`BudgetGate`, in ``meter_budget``): before each call the
meter shrinks it so that even the worst case fits beside what was spent and what
calls in flight hold, however many calls run at once. It rests on
``count_tokens``, exact for a local model and an upper bound for a remote one, and
on each backend request paying its own prompt (n prompts for a backend that is not
``batched``). Time is enforced by a deadline: no call starts after it, and a local
backend checks it between decoding steps, so a call overruns ``max_seconds`` by at
most one step (a remote request already sent runs to its end).

Each call's ledger row carries its prompt and what it wrote (``CallRow.prompt``,
``CallRow.outputs``), which the ledger keeps unless it keeps usage only.

The meter also keeps each model's share of the usage (`Meter.usage_by_model`,
the same sums as the ledger's rows per model) and each stage's, what the calls
were for (`Meter.usage_by_stage`, `STAGES`), and tells a watcher how the run is
going while it works (`Meter.watch`, `Progress`), the strategy's vote included
(`Meter.report_tally`). The parts it is made of: ``meter_budget`` (the budget
gate), ``meter_usage`` (usage sums, the overlap clock), ``meter_replay``
(`SampleStore`) and ``meter_progress`` (`Progress`, the watcher).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from thinktank.errors import ThinktankError
from thinktank.ledger import CallLog, CallRecorder, CallRow, Ledger
from thinktank.ledger_texts import WrittenText
from thinktank.meter_budget import Budget, BudgetGate, Hold
from thinktank.meter_progress import Progress, ProgressBoard, ProgressWatcher
from thinktank.meter_replay import SampleStore
from thinktank.meter_usage import OverlapClock, Usage, UsageBook, billed
from thinktank.models.base import (
    Completion,
    Model,
    ProgressCallback,
    Prompt,
    PruneRule,
    Sampling,
    TextCallback,
)

__all__ = [
    "STAGES",
    "Budget",
    "Meter",
    "Progress",
    "ProgressWatcher",
    "SampleStore",
    "Usage",
    "check_stage",
]

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
        self._started = time.monotonic()
        # One lock for the usage and the holds: a call's usage replaces its hold in one step.
        self._lock = threading.Lock()
        self._book = UsageBook(self._lock)
        self._gate = BudgetGate(budget or Budget(), self._book.total, self._lock, self._started)
        self._clock = OverlapClock()
        self._board = ProgressBoard(self._started)

    @property
    def budget(self) -> Budget:
        return self._gate.budget

    @property
    def usage(self) -> Usage:
        """What the run consumed so far (the live sums, not a copy)."""
        return self._book.total

    @property
    def exhausted(self) -> bool:
        """True once the budget has cut a call short or refused one."""
        return self._gate.exhausted

    @property
    def deadline(self) -> float | None:
        """When the time budget is spent (``time.monotonic``); None without one."""
        return self._gate.deadline

    @property
    def usage_by_model(self) -> dict[str, Usage]:
        """Each model's usage (a copy), by model name: the tokens, calls and dollars sum
        to `usage`; its ``seconds`` are its calls' own, so calls that overlap each count."""
        return self._book.by_model()

    @property
    def usage_by_stage(self) -> dict[str, Usage]:
        """Each stage's usage (a copy), by `STAGES` word, like `usage_by_model`: summing
        to `usage`, the same sums as the ledger's rows per stage."""
        return self._book.by_stage()

    def watch(self, watcher: ProgressWatcher, every: float = 0.5) -> None:
        """Call ``watcher`` with the run's `Progress` each time a call ends, and at most
        every ``every`` seconds while calls write tokens. It runs on the calling
        thread: a server hands the event over to its event loop."""
        self._board.watch(watcher, every)

    def report_tally(self, leader: str | None, leader_share: float | None, voters: int) -> None:
        """Note how the strategy's vote stands now (its own vote: nothing here is graded)
        and tell the watcher at once, so a stream shows the leader as it moves."""
        with self._lock:
            self._board.tally = (leader, leader_share, voters)
        self._board.tell(self.snapshot, call_ended=True)  # always told, as a call's end is

    def snapshot(self) -> Progress:
        """How the run stands now."""
        with self._lock:
            return self._board.progress(self.usage, self._gate.written())

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
        with self._gate.reservation(model, prompt_tokens, n, sampling) as (n, sampling, hold):
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
                    model, stage, prompt_tokens, n, invoke, progress, hold, prompt
                )
                return completions, seconds

            if shareable:
                completions, seconds = self.samples.replay_or_draw(model, prompt, n, sampling, draw)
            else:
                completions, seconds = draw()
            # A replay is charged its share of the original call's seconds.
            wall_seconds = seconds if wall is None else wall
            call = billed(completions, prompt_tokens, seconds)
            self._record(model, stage, call, wall_seconds, hold, _Texts(prompt, completions))
            self._gate.note_cut_short(completions)
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
        reservation = self._gate.reservation(model, prompt_tokens, len(workers), sampling)
        with reservation as (n, sampling, hold):

            def invoke(deadline: float | None, track: ProgressCallback) -> list[Completion]:
                return model.generate_together(prompt, workers[:n], sampling, deadline=deadline,
                                               progress=track, **options)  # fmt: skip

            completions, seconds, wall = self._call(
                model, stage, prompt_tokens, n, invoke, progress, hold, prompt
            )
            call = billed(completions, prompt_tokens, seconds)
            self._record(model, stage, call, wall, hold, _Texts(prompt, completions, workers))
            self._gate.note_cut_short(completions)
        return completions

    def _check_cancel(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise KeyboardInterrupt

    def _call(
        self,
        model: Model,
        stage: str,
        prompt_tokens: int,
        n: int,
        invoke: Callable[[float | None, ProgressCallback], list[Completion]],
        progress: ProgressCallback | None,
        hold: Hold,
        prompt: Prompt,
    ) -> tuple[list[Completion], float, float]:
        """The model call itself (``invoke(deadline, progress)``), its seconds, and the
        wall time it adds to usage (0 while an overlapping call is still running); an
        interrupted call is recorded as such. The tokens it writes are counted on its
        ``hold`` for `Progress`."""

        def track(tokens: int) -> None:
            hold.written = tokens
            self._check_cancel()
            if progress is not None:
                progress(tokens)
            self._board.tell(self.snapshot, call_ended=False)

        started = time.monotonic()
        self._gate.check_deadline()  # fitted before it, maybe; still none starts after it
        self._clock.enter(started)
        try:
            completions = invoke(self.deadline, track)
        except KeyboardInterrupt:
            # Record what the interrupted call had already spent, then let it stop the run.
            seconds = time.monotonic() - started
            spent = Usage(prompt_tokens=prompt_tokens, completion_tokens=hold.written,
                          seconds=seconds, calls=1, completions=n)  # fmt: skip
            self._record(model, stage, spent, seconds, hold, _Texts(prompt, []))
            raise
        finally:
            ended = time.monotonic()
            wall = self._clock.leave(ended)
        return completions, ended - started, wall

    def _record(
        self, model: Model, stage: str, call: Usage, wall_seconds: float, hold: Hold,
        texts: _Texts,
    ) -> None:  # fmt: skip
        """Count ``call`` (priced here; its ``seconds`` its own) in place of its ``hold``,
        in one locked step, and write its ledger row; the run's usage counts
        ``wall_seconds``: 0 for a call that overlapped one still running."""
        call.cost_usd = model.price.cost(
            call.prompt_tokens, call.completion_tokens, call.cached_tokens, call.thinking_tokens
        )
        with self._lock:
            self._gate.release(hold)
            self._book.add(model.name, stage, call, wall_seconds)
        if self._calls is not None:
            self._calls.record_call(_ledger_row(self, model.name, stage, call, texts))
        self._board.tell(self.snapshot, call_ended=True)


@dataclass(frozen=True)
class _Texts:
    """What a call was sent and wrote, for its ledger row."""

    prompt: Prompt
    completions: Sequence[Completion]
    workers: Sequence[str] = ()

    def outputs(self) -> tuple[WrittenText, ...]:
        workers = list(self.workers) + [None] * (len(self.completions) - len(self.workers))
        return tuple(
            WrittenText(c.text, c.finish_reason, c.completion_tokens, worker)
            for c, worker in zip(self.completions, workers, strict=False)
        )


def _ledger_row(meter: Meter, model: str, stage: str, call: Usage, texts: _Texts) -> CallRow:
    """The ledger's row for one of ``meter``'s calls."""
    prompt = texts.prompt if isinstance(texts.prompt, str) else list(texts.prompt)
    return CallRow(
        run_id=meter.run_id,
        problem_id=meter.problem_id,
        strategy=meter.strategy,
        model=model,
        n=call.completions,
        prompt_tokens=call.prompt_tokens,
        cached_tokens=call.cached_tokens,
        completion_tokens=call.completion_tokens,
        thinking_tokens=call.thinking_tokens,
        seconds=call.seconds,
        cost_usd=call.cost_usd,
        stage=stage,
        prompt=json.dumps(prompt, default=str),
        outputs=texts.outputs(),
    )
