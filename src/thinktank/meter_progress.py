"""How a run stands while it works (`Progress`), told to a watcher (`Meter.watch`)."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from thinktank.meter_usage import Usage


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


class Watch:
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


class ProgressBoard:
    """What a `Meter` tells of its run while it works: the watcher (`Meter.watch`) and
    the strategy's latest vote (`Meter.report_tally`)."""

    def __init__(self, started: float) -> None:
        self._started = started
        self._watch: Watch | None = None
        #: The strategy's latest (leader, leader_share, voters), set under the meter's lock.
        self.tally: tuple[str | None, float | None, int | None] = (None, None, None)

    def watch(self, watcher: ProgressWatcher, every: float) -> None:
        self._watch = Watch(watcher, every)

    def progress(self, usage: Usage, written: int) -> Progress:
        """The run's `Progress`: ``usage`` so far and the completion tokens ``written``
        by calls still in flight (read under the meter's lock, so none counts twice)."""
        leader, leader_share, voters = self.tally
        return Progress(
            calls=usage.calls,
            completions=usage.completions,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens + written,
            cost_usd=usage.cost_usd,
            seconds=time.monotonic() - self._started,
            leader=leader,
            leader_share=leader_share,
            voters=voters,
        )

    def tell(self, snapshot: Callable[[], Progress], *, call_ended: bool) -> None:
        """Tell the watcher, if there is one (`Watch.tell`)."""
        if self._watch is not None:
            self._watch.tell(snapshot, call_ended=call_ended)
