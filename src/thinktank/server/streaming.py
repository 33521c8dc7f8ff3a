"""Server-sent events for ``stream: true`` chat and legacy completions.

A stream is, in order (each event a ``data: {chunk}`` line of a
``chat.completion.chunk``):

1. at once, one chunk per choice with ``delta: {"role": "assistant", "content": ""}``;
2. while the work runs, either the text as the model writes it (a plain request
   to a backend that streams, without ``logprobs``) or progress chunks: ``choices: []`` and a
   ``thinktank`` object ``{"event": "progress", "calls", "completions",
   "prompt_tokens", "completion_tokens", "cost_usd", "seconds", "leader",
   "leader_share", "voters"}`` (see `thinktank.meter.Progress`; the last three,
   how the strategy's own vote stands, are null until it first counts one), sent
   as each model call ends, as the strategy's vote changes, and at most every
   `PROGRESS_EVERY_SECONDS` while tokens are written. Clients that read only
   ``choices`` skip them, as they skip OpenAI's own usage chunk;
3. for an answer known only once the work is done (a strategy's, or a plain one
   with token logprobs, which the streamed text does not carry), its text, in one
   content chunk per choice (with its ``logprobs``);
4. a finish chunk per choice (``delta: {}`` and its ``finish_reason``);
5. a last chunk with ``choices: []`` and the response's ``thinktank`` object
   with ``"event": "result"``, plus ``usage`` when the request set
   ``stream_options: {"include_usage": true}`` (every other chunk then carries
   ``"usage": null``, as OpenAI's do; without it no chunk has ``usage``);
6. ``data: [DONE]``.

A legacy completion's stream (`TextStreamHead`) is the same but for its chunks'
shape, OpenAI's: ``text_completion`` chunks whose choices are ``{"index", "text",
"logprobs", "finish_reason"}``, no first chunk (1.), and a finish chunk with
``text: ""``. Its text streams as written unless the model cannot stream it or the
request asked for ``logprobs``: each choice's text then comes whole (3.), with its
token logprobs, which the streamed text does not carry.

The 200 is sent before the work starts, so an error met afterwards is one
OpenAI-style event ``{"error": {"message", "type", "param", "code"}}`` that ends
the stream (the `openai` client raises it as an ``APIError``). A client that
disconnects ends the stream, which sets ``cancel``: the work stops at its next token.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any, ClassVar

import anyio

from thinktank.errors import BudgetExhausted, ThinktankError
from thinktank.meter import Meter
from thinktank.models.base import TextCallback
from thinktank.server.tools import tool_call_delta

#: How often, at most, progress is reported while a model call writes tokens.
PROGRESS_EVERY_SECONDS = 0.5

#: Hands an event (kind, payload) from the work's thread to the stream.
Post = Callable[[str, Any], None]


@dataclass(frozen=True)
class StreamHead:
    """What every chunk of one chat stream shares: its id, creation time and model, how
    many choices it streams, and whether the request asked for a usage chunk; and how
    its chunks' choices are shaped (`TextStreamHead`: a legacy completion's)."""

    model: str
    choices: int = 1
    include_usage: bool = False
    id: str = field(default_factory=lambda: f"chatcmpl-{uuid.uuid4().hex}")
    created: int = field(default_factory=lambda: int(time.time()))
    #: The chunks' ``object``.
    object: ClassVar[str] = "chat.completion.chunk"

    def chunk(self, choices: list[dict[str, Any]], **fields: Any) -> str:
        """One chunk event with these choices and top-level fields."""
        body: dict[str, Any] = {"id": self.id, "object": self.object, "created": self.created,
                                "model": self.model, "choices": choices}  # fmt: skip
        if self.include_usage:
            body["usage"] = None  # filled in the last chunk only
        body.update(fields)
        return _event(body)

    def opening(self) -> Iterator[str]:
        """The chunks sent at once: each choice's role."""
        for index in range(self.choices):
            yield self.chunk([_delta(index, {"role": "assistant", "content": ""})])

    def piece(self, index: int, text: str) -> dict[str, Any]:
        """Choice ``index``'s next text, as the model writes it."""
        return _delta(index, {"content": text})

    def whole(self, choice: dict[str, Any]) -> dict[str, Any]:
        """A finished response's choice: its text (and tool calls, logprobs) at once."""
        message = choice["message"]
        delta = _delta(choice["index"], {"content": message["content"],
                                         **tool_call_delta(message)})  # fmt: skip
        return {**delta, "logprobs": choice.get("logprobs")}

    def finish(self, index: int, reason: str) -> dict[str, Any]:
        """Choice ``index``'s last chunk: why it ended."""
        return {"index": index, "delta": {}, "logprobs": None, "finish_reason": reason}


@dataclass(frozen=True)
class TextStreamHead(StreamHead):
    """A legacy completion's stream (``POST /v1/completions``): ``text_completion``
    chunks whose choices carry ``text``, as OpenAI's; nothing is sent before the text."""

    id: str = field(default_factory=lambda: f"cmpl-{uuid.uuid4().hex}")
    object: ClassVar[str] = "text_completion"

    def opening(self) -> Iterator[str]:
        return iter(())

    def piece(self, index: int, text: str) -> dict[str, Any]:
        return {"index": index, "text": text, "logprobs": None, "finish_reason": None}

    def whole(self, choice: dict[str, Any]) -> dict[str, Any]:
        return {**self.piece(choice["index"], choice["text"]), "logprobs": choice["logprobs"]}

    def finish(self, index: int, reason: str) -> dict[str, Any]:
        return {**self.piece(index, ""), "finish_reason": reason}


def stream_tokens(
    head: StreamHead,
    new_meter: Callable[[], Meter],
    answer: Callable[[Meter, TextCallback], dict[str, Any]],
    cancel: threading.Event,
    limit: anyio.CapacityLimiter,
) -> AsyncIterator[str]:
    """The response ``answer(meter, on_text)`` builds, its text streamed as the model
    writes it (a plain request to a backend that streams)."""

    def work(post: Post) -> dict[str, Any]:
        return answer(new_meter(), lambda index, text: post("text", (index, text)))

    return _stream(head, work, cancel, limit, text_at_end=False)


def stream_with_progress(
    head: StreamHead,
    new_meter: Callable[[], Meter],
    answer: Callable[[Meter], dict[str, Any]],
    cancel: threading.Event,
    limit: anyio.CapacityLimiter,
) -> AsyncIterator[str]:
    """The response ``answer(meter)`` builds, with progress chunks while it works and
    its text once it is done (a strategy's answer)."""

    def work(post: Post) -> dict[str, Any]:
        meter = new_meter()
        meter.watch(partial(post, "progress"), every=PROGRESS_EVERY_SECONDS)
        return answer(meter)

    return _stream(head, work, cancel, limit, text_at_end=True)


async def _stream(
    head: StreamHead,
    work: Callable[[Post], dict[str, Any]],
    cancel: threading.Event,
    limit: anyio.CapacityLimiter,
    *,
    text_at_end: bool,
) -> AsyncIterator[str]:
    """Run ``work(post)`` in a thread once the request has its turn, and stream what it
    posts ("text" or "progress") and then the response it returns."""
    send, receive = anyio.create_memory_object_stream[tuple[str, Any]](max_buffer_size=math.inf)
    loop = asyncio.get_running_loop()

    def deliver(event: tuple[str, Any]) -> None:
        with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
            send.send_nowait(event)  # closed: the stream is over and no one reads

    def post(kind: str, payload: Any) -> None:
        # From the model's own thread: hand over without waiting for the event loop.
        loop.call_soon_threadsafe(deliver, (kind, payload))

    def run() -> None:
        if cancel.is_set():  # gone while it waited for its turn
            return
        try:
            post("done", work(post))
        except KeyboardInterrupt:  # the meter stopped it: the client has gone
            return
        except Exception as exc:  # reported in the stream: the 200 is already sent
            post("error", exc)

    async with anyio.create_task_group() as tasks, send, receive:
        tasks.start_soon(partial(anyio.to_thread.run_sync, run, limiter=limit))
        try:
            for event in head.opening():
                yield event
            async for kind, payload in receive:
                if kind == "text":
                    yield head.chunk([head.piece(*payload)])
                elif kind == "progress":
                    yield head.chunk([], thinktank={"event": "progress", **payload.to_dict()})
                elif kind == "done":
                    for event in _ending(head, payload, text=text_at_end):
                        yield event
                    break
                else:
                    yield _error(payload)
                    break
        finally:  # the stream is over, or its client has gone: stop the work at its next token
            cancel.set()


def _ending(head: StreamHead, result: dict[str, Any], *, text: bool) -> Iterator[str]:
    """Each choice's text (with ``text``), each choice's finish reason, the thinktank
    object (and usage, if asked for), then [DONE]."""
    if text:
        for choice in result["choices"]:
            yield head.chunk([head.whole(choice)])
    for choice in result["choices"]:
        yield head.chunk([head.finish(choice["index"], choice["finish_reason"])])
    last: dict[str, Any] = {"thinktank": {**result["thinktank"], "event": "result"}}
    if head.include_usage:
        last["usage"] = result["usage"]
    yield head.chunk([], **last)
    yield "data: [DONE]\n\n"


def _delta(index: int, delta: dict[str, str]) -> dict[str, Any]:
    return {"index": index, "delta": delta, "logprobs": None, "finish_reason": None}


def _error(exc: Exception) -> str:
    """An error met after the 200 was sent, as the stream's last event (no traceback)."""
    param = None
    if isinstance(exc, BudgetExhausted):
        kind, message, param = "invalid_request_error", f"budget: {exc}", "thinktank.budget"
    elif isinstance(exc, ThinktankError):
        kind, message = "invalid_request_error", str(exc)
    else:
        kind, message = "server_error", f"internal error: {type(exc).__name__}"
    return _event({"error": {"message": message, "type": kind, "param": param, "code": None}})


def _event(body: dict[str, Any]) -> str:
    return f"data: {json.dumps(body)}\n\n"
