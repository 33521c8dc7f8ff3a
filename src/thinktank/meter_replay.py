"""Replay of seeded samples for a `Meter` (`SampleStore`)."""

from __future__ import annotations

import threading
from collections.abc import Callable

from thinktank.models.base import Completion, Model, Prompt, Sampling


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
