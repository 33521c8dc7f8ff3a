"""Continuous batching: one thread owns the llama.cpp context and decodes every live
sequence of every call in flight in one ``llama_decode`` per step."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from thinktank.errors import ThinktankError
from thinktank.models.base import CallGroup, current_group_call
from thinktank.models.decoding import CallState, SampleState
from thinktank.models.llamacpp.kv import DecodeStats, Demand, KVCells
from thinktank.models.llamacpp.vocab import Vocabulary


@dataclass
class Request:
    """Up to MAX_BATCH_SEQUENCES samples of one prompt, decoded in lockstep."""

    prompt_ids: tuple[int, ...]
    sequences: list[SampleState]
    call: CallState
    position: int = 0  # KV position of the next token (the same for all its sequences)
    cached_tokens: int = 0  # prompt tokens the prefix cache supplied
    logits: np.ndarray | None = None  # one row per live sequence, to sample from
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None
    cancelled: bool = False  # its caller stopped waiting
    group: CallGroup | None = None  # the calls it is admitted together with
    order: int = 0  # its call's place in the group

    @property
    def demand(self) -> Demand:
        return Demand(len(self.prompt_ids), self.call.max_tokens, len(self.sequences))

    @property
    def live(self) -> list[SampleState]:
        return [s for s in self.sequences if s.finish is None]


class Scheduler:
    """The thread that decodes a model's requests, started by the first one.

    It admits queued requests (first come, first served; a `CallGroup`'s together,
    in its order) as soon as their KV slots and cells are free, prefills their
    prompts, then samples a token for every live sequence and decodes them all in
    one batch, step after step, until each request is done.
    """

    def __init__(
        self, cells: KVCells, vocabulary: Vocabulary, stats: DecodeStats, name: str
    ) -> None:
        self._cells = cells
        self._vocabulary = vocabulary
        self._stats = stats
        self._name = name
        self._queue: deque[Request] = deque()
        self._active: list[Request] = []  # touched by the scheduler thread only
        self._wakeup = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False

    @property
    def queued(self) -> int:
        """Requests waiting to be admitted."""
        return len(self._queue)

    def run(self, requests: list[Request]) -> None:
        """Decode ``requests`` (in the calling thread's call group, if any) beside the
        others in flight; return once all are done, raising the first one's error."""
        group_call = current_group_call()
        if group_call is not None:
            for request in requests:
                request.group, request.order = group_call
        self._submit(requests)
        if group_call is not None:
            group_call[0].arrive(group_call[1])
        try:
            for request in requests:
                request.done.wait()
        except BaseException:
            # Ctrl-C: let the scheduler drop these at its next step before the
            # exception unwinds, so no llama_decode is running as Python exits.
            for request in requests:
                request.cancelled = True
            for request in requests:
                request.done.wait(timeout=30)
            raise
        for request in requests:
            if request.error is not None:
                raise request.error

    def close(self) -> bool:
        """Stop the thread (after the calls in flight) and free the context; False if
        it was closed already."""
        with self._wakeup:
            if self._closed:
                return False
            self._closed = True
            self._wakeup.notify_all()
        if self._thread is not None:
            self._thread.join()
        self._cells.close()
        return True

    def _submit(self, requests: list[Request]) -> None:
        with self._wakeup:
            if self._closed:
                raise ThinktankError(f"{self._name} is closed")
            self._queue.extend(requests)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._serve, name=f"thinktank-{self._name}", daemon=True
                )
                self._thread.start()
            self._wakeup.notify_all()

    # -- the scheduler thread --------------------------------------------------

    def _serve(self) -> None:
        while True:
            with self._wakeup:
                while not self._queue and not self._active and not self._closed:
                    self._wakeup.wait()
                if self._closed and not self._queue and not self._active:
                    return
                admitted = self._admit()
                if not admitted and not self._active:
                    self._wakeup.wait(0.005)  # a call group is still gathering
                    continue
            for request in admitted:
                self._guard(self._prefill, request)
            self._guard(self._step)

    def _guard(self, work: Callable[..., None], *args: Request) -> None:
        """Run scheduler work; a failure ends the requests it touched, not the thread."""
        try:
            work(*args)
        except BaseException as exc:
            for request in args or list(self._active):
                request.error = exc
                self._finish(request)

    def _admit(self) -> list[Request]:
        """Move queued requests (first come, first served) into free KV slots and cells."""
        admitted: list[Request] = []
        while self._queue:
            request = self._queue[0]
            if request.cancelled:
                self._queue.popleft()
                request.done.set()
                continue
            if request.group is not None:
                if not request.group.gathered:
                    break  # first come, first served: nothing overtakes a gathering group
                self._line_up(request.group)
                request = self._queue[0]
            demand = request.demand
            if not self._active and not admitted and not self._cells.holds(demand):
                self._cells.open(demand)  # only while nothing is in flight
            slots = self._cells.admit(demand)
            if slots is None:
                break
            self._queue.popleft()
            for seq, slot in zip(request.sequences, slots, strict=True):
                seq.slot = slot
            self._active.append(request)
            admitted.append(request)
        return admitted

    def _line_up(self, group: CallGroup) -> None:
        """Move the group's queued requests to the front, in the group's order."""
        members = sorted((r for r in self._queue if r.group is group), key=lambda r: r.order)
        rest = [r for r in self._queue if r.group is not group]
        self._queue = deque(members + rest)
        for request in members:
            request.group = None  # lined up: admitted like any other from now on

    def _prefill(self, request: Request) -> None:
        """Put the prompt in the KV cache once for all the request's sequences."""
        slots = [seq.slot for seq in request.sequences]
        request.cached_tokens, last_row = self._cells.prefill(request.prompt_ids, slots)
        request.logits = np.repeat(last_row, len(slots), axis=0)
        request.position = len(request.prompt_ids)

    def _step(self) -> None:
        """Sample one token for every live sequence, then decode them all in one batch."""
        for request in list(self._active):
            if request.cancelled:
                self._finish(request)
                continue
            try:
                self._sample(request)
            except BaseException as exc:  # a caller's callback (progress, prune) raised
                request.error = exc  # it fails its own call, not the others in the batch
                self._finish(request)
                continue
            self._cells.release(s for s in request.sequences if s.finish is not None)
            if not request.live:
                self._finish(request)
        self._cells.compact([seq for request in self._active for seq in request.live])
        # In order of sequence id: llama.cpp's non-unified cache decodes a run of
        # consecutive ids as one micro-batch.
        rows = sorted(((request, seq) for request in self._active for seq in request.live),
                      key=lambda row: row[1].slot)  # fmt: skip
        if not rows:
            return
        logits = self._cells.decode_step(
            [(seq.tokens[-1], request.position, seq.slot) for request, seq in rows]
        )
        row_of = {seq.slot: i for i, (_, seq) in enumerate(rows)}
        for request in self._active:
            request.logits = logits[[row_of[seq.slot] for seq in request.live]]
            request.position += 1

    def _sample(self, request: Request) -> None:
        live, vocabulary = request.live, self._vocabulary
        request.call.step_done(
            live, request.logits, vocabulary.piece, vocabulary.eog, vocabulary.top_logprobs
        )
        self._stats.sampled_tokens += len(live)

    def _finish(self, request: Request) -> None:
        """Release the request's KV slots and cells, and wake its caller."""
        if request in self._active:
            self._active.remove(request)
            self._cells.release(request.sequences)
            self._cells.unreserve(request.demand)
        request.done.set()
