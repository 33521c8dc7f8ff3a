"""What a `Meter`'s calls consumed: the run's `Usage`, each model's and each stage's
share (`UsageBook`), and the wall time of calls that overlap counted once (`OverlapClock`)."""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, fields, replace

from thinktank.models.base import Completion


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


#: The fields a call adds as they are (``seconds`` is added as each sum counts it).
_SUMMED = tuple(field.name for field in fields(Usage) if field.name != "seconds")


def billed(completions: list[Completion], prompt_tokens: int, seconds: float) -> Usage:
    """A finished call's usage as billed, not yet priced: the backend's own prompt count
    (a remote one: ``prompt_tokens`` was a bound), once per backend request."""
    requests: dict[int, list[Completion]] = {}
    for completion in completions:
        requests.setdefault(completion.request, []).append(completion)
    if requests:
        prompt_tokens = sum(group[0].prompt_tokens for group in requests.values())
    return Usage(
        prompt_tokens=prompt_tokens,
        cached_tokens=sum(min(c.cached_tokens for c in group) for group in requests.values()),
        completion_tokens=sum(c.completion_tokens for c in completions),
        thinking_tokens=sum(c.thinking_tokens for c in completions),
        seconds=seconds,
        calls=1,
        completions=len(completions),
    )


class UsageBook:
    """The run's usage and each model's and each stage's share of it. The book has no
    lock of its own: it shares the meter's, so a call's usage can replace its budget
    hold in one locked step (`BudgetGate`)."""

    def __init__(self, lock: threading.Lock) -> None:
        self.total = Usage()
        # Each model's and each stage's share; their seconds are their calls' own (as in
        # the ledger), not the overlap-counted-once wall time of ``total``.
        self._by_model: dict[str, Usage] = {}
        self._by_stage: dict[str, Usage] = {}
        self._lock = lock

    def add(self, model: str, stage: str, call: Usage, wall_seconds: float) -> None:
        """Count one finished ``call`` (its ``seconds`` its own); the total counts
        ``wall_seconds`` instead (lock held)."""
        own = self._by_model.setdefault(model, Usage())
        staged = self._by_stage.setdefault(stage, Usage())
        for usage, seconds in (
            (self.total, wall_seconds),
            (own, call.seconds),
            (staged, call.seconds),
        ):
            for name in _SUMMED:
                setattr(usage, name, getattr(usage, name) + getattr(call, name))
            usage.seconds += seconds

    def by_model(self) -> dict[str, Usage]:
        with self._lock:
            return {name: replace(usage) for name, usage in self._by_model.items()}

    def by_stage(self) -> dict[str, Usage]:
        with self._lock:
            return {stage: replace(usage) for stage, usage in self._by_stage.items()}


class OverlapClock:
    """Wall time spent inside calls, calls that overlap (a search's batch of prompts)
    counted once: a call adds the time since the first of the calls it overlapped
    began, once it is the last of them to end, and 0 before then."""

    def __init__(self) -> None:
        self._in_flight = 0
        self._busy_since = 0.0
        self._lock = threading.Lock()

    def enter(self, started: float) -> None:
        """A call began at ``started``."""
        with self._lock:
            if not self._in_flight:
                self._busy_since = started
            self._in_flight += 1

    def leave(self, ended: float) -> float:
        """A call ended at ``ended``: the wall time it adds."""
        with self._lock:
            self._in_flight -= 1
            return 0.0 if self._in_flight else ended - self._busy_since
