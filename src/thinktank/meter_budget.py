"""The budget gate: a `Meter`'s calls are fitted into its `Budget`, a hard cap.

Before each call the gate shrinks it (fewer samples, then fewer tokens) so that
even the worst case fits beside what was spent and what calls in flight hold:
tokens and dollars can never be exceeded, however many calls run at once. The
worst case is held from the fit until the call's real usage replaces it, in one
step under the lock the gate shares with the meter's `UsageBook`, so no moment
counts neither. Time is enforced by a deadline: no call starts after it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

from thinktank.errors import BudgetExhausted
from thinktank.meter_usage import Usage
from thinktank.models.base import Completion, Model, Sampling


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
class Hold:
    """A call's worst case, held from its fit until its real usage is recorded."""

    tokens: int
    cost_usd: float
    #: Completion tokens the call has written so far (for `Progress`).
    written: int = 0


class BudgetGate:
    """Fits calls into a `Budget` beside ``spent`` (the run's usage, updated by its
    owner under ``lock``) and what calls in flight hold."""

    def __init__(self, budget: Budget, spent: Usage, lock: threading.Lock, started: float) -> None:
        self.budget = budget
        self._spent = spent
        self._lock = lock
        # Worst cases of calls in flight, so concurrent calls cannot overshoot together
        # (summed when needed: adding and taking away floats would drift).
        self._holds: set[Hold] = set()
        #: True once the budget has cut a call short or refused one.
        self.exhausted = False
        #: When the time budget is spent (``time.monotonic``), None without one.
        self.deadline = None if budget.max_seconds is None else started + budget.max_seconds

    @contextmanager
    def reservation(
        self, model: Model, prompt_tokens: int, n: int, sampling: Sampling
    ) -> Iterator[tuple[int, Sampling, Hold]]:
        """Fit the call into the budget and hold its worst case until `release` swaps
        it for the call's usage (released here if the call never got that far)."""
        with self._lock:
            n, sampling = self._fit(model, prompt_tokens, n, sampling)
            hold = Hold(*_worst_case(model, prompt_tokens, n, sampling.max_tokens))
            self._holds.add(hold)
        try:
            yield n, sampling, hold
        finally:
            with self._lock:
                self._holds.discard(hold)

    def release(self, hold: Hold) -> None:
        """Stop holding ``hold``: its call's usage is being counted (lock held)."""
        self._holds.discard(hold)

    def written(self) -> int:
        """Completion tokens that calls in flight have written so far (lock held)."""
        return sum(hold.written for hold in self._holds)

    def note_cut_short(self, completions: list[Completion]) -> None:
        """Mark the budget exhausted if it cut one of a finished call's samples short."""
        if any(c.finish_reason == "budget" for c in completions):
            self.exhausted = True

    def check_deadline(self) -> None:
        """Refuse a call once the time budget is spent."""
        if self.deadline is not None and time.monotonic() >= self.deadline:
            self.exhausted = True
            raise BudgetExhausted("the time budget is spent")

    def _fits(self, model: Model, prompt_tokens: int, n: int, max_tokens: int) -> bool:
        """Whether the worst case of n samples of ``max_tokens`` fits beside what was
        spent and what calls in flight hold (lock held)."""
        tokens, cost = _worst_case(model, prompt_tokens, n, max_tokens)
        if self.budget.max_tokens is not None:
            held = sum(hold.tokens for hold in self._holds)
            if self._spent.total_tokens + held + tokens > self.budget.max_tokens:
                return False
        if self.budget.max_cost_usd is not None:
            held_cost = sum(hold.cost_usd for hold in self._holds)
            # The small shave keeps float rounding from overshooting the cap.
            if self._spent.cost_usd + held_cost + cost > self.budget.max_cost_usd * (1 - 1e-9):
                return False
        return True

    def _fit(
        self, model: Model, prompt_tokens: int, n: int, sampling: Sampling
    ) -> tuple[int, Sampling]:
        """The call shrunk to fit: all of it, else fewer samples, else one shorter one
        (lock held)."""
        self.check_deadline()
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
