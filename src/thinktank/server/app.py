"""The thinktank server: an OpenAI-compatible chat-completions endpoint.

``POST /v1/chat/completions`` with ``model`` set to a served model name
(``smollm2``) samples it plainly (``n`` choices); ``STRATEGY/MODEL`` (e.g.
``self-consistency:n=8/smollm2``) or ``extra_body={"thinktank": {"strategy":
...}}`` answers with a strategy: one choice, the text of the winning sample,
and a ``thinktank`` object (answer, cost, strategy, candidates, votes, run id).
``usage`` counts every token spent. ``GET /v1/models`` lists the served models.

The server is a trust boundary. The operator decides at start-up which models
(judges and pool members included), process-reward endpoints and strategies
exist; a request names only those, by name (see `thinktank.resolver.ServedResolver`),
and its strategy's options are checked against `RequestLimits`. A client that
disconnects cancels its work.

Errors are OpenAI-style ``{"error": {"message", "type", "param", "code"}}``
with a 4xx status: never a 500 for bad input.
"""

from __future__ import annotations

import asyncio
import json
import math
import secrets
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Collection, Iterator, Mapping, Sequence
from functools import partial
from typing import Any, Literal

import anyio
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from thinktank.errors import BudgetExhausted, SpecError, ThinktankError
from thinktank.ledger import Ledger
from thinktank.meter import Budget, Meter
from thinktank.models.base import Completion, Model, Sampling, TextCallback
from thinktank.problem import Problem
from thinktank.resolver import ServedResolver
from thinktank.server.limits import RequestLimits
from thinktank.solution import Solution
from thinktank.strategies import STRATEGIES, Context, Strategy, build_strategy

#: Limits past which a request is refused as absurd (400), whatever the operator's
#: `RequestLimits`.
MAX_N = 1024
MAX_TOKENS = 1 << 20
MAX_STOPS = 16
#: How often a request's work checks that its client is still there.
_DISCONNECT_POLL_SECONDS = 0.25


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant"]
    content: str


class BudgetRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_tokens: int | None = Field(default=None, gt=0)
    max_cost_usd: float | None = Field(default=None, gt=0)
    max_seconds: float | None = Field(default=None, gt=0)


class ThinktankOptions(BaseModel):
    """``extra_body={"thinktank": {...}}``."""

    model_config = ConfigDict(extra="forbid")

    strategy: str | None = None
    budget: BudgetRequest | None = None
    #: How a strategy extracts and compares answers.
    kind: Literal["math", "text", "choice", "code"] = "math"
    #: Sample i of the call is sample offset + i of the seed's stream (see `Sampling`).
    sample_offset: int = Field(default=0, ge=0)


class ChatRequest(BaseModel):
    """The fields of an OpenAI chat-completions request thinktank uses; others are ignored."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1)
    messages: list[Message] = Field(min_length=1)
    n: int = Field(default=1, ge=1, le=MAX_N)
    temperature: float = Field(default=1.0, ge=0, le=2)
    top_p: float = Field(default=1.0, gt=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    stream: bool = False
    thinktank: ThinktankOptions | None = None

    @field_validator("stop")
    @classmethod
    def _few_stops(cls, stop: str | list[str] | None) -> str | list[str] | None:
        if isinstance(stop, list) and len(stop) > MAX_STOPS:
            raise ValueError(f"at most {MAX_STOPS} stop strings")
        return stop

    def sampling(self) -> Sampling:
        stops = [self.stop] if isinstance(self.stop, str) else (self.stop or [])
        return Sampling(
            temperature=self.temperature,
            top_p=self.top_p,
            max_tokens=self.max_completion_tokens or self.max_tokens or 256,
            stop=tuple(s for s in stops if s),
            seed=self.seed,
            top_logprobs=(self.top_logprobs or 0) if self.logprobs else 0,
            sample_offset=self.thinktank.sample_offset if self.thinktank else 0,
        )


class ApiError(Exception):
    """A request thinktank refuses, with its HTTP status and OpenAI error fields."""

    def __init__(self, status: int, message: str, *, kind: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None) -> None:  # fmt: skip
        super().__init__(message)
        self.status, self.kind, self.param, self.code = status, kind, param, code


def _error(status: int, message: str, kind: str, param: str | None = None,
           code: str | None = None) -> JSONResponse:  # fmt: skip
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return JSONResponse(body, status_code=status)


def create_app(
    models: Sequence[str | Model] | Mapping[str, str | Model] = ("smollm2",),
    *,
    api_key: str | None = None,
    max_concurrent: int = 4,
    ledger: Ledger | None = None,
    limits: RequestLimits | None = None,
    process_rewards: Mapping[str, str] | None = None,
    strategies: Collection[str] | None = None,
) -> FastAPI:
    """The ASGI app serving ``models``: names to specs or Model objects (a list serves
    each under its spec or name), loaded on first use.

    ``api_key``: requests must send ``Authorization: Bearer KEY`` (else 401).
    ``max_concurrent``: requests worked on at once; the others wait their turn.
    ``limits``: what one request may ask for (`RequestLimits`; its defaults if None).
    ``process_rewards``: ``{NAME: "URL[#MODEL]"}``, which requests name as ``prm@NAME``.
    ``strategies``: the strategy names requests may use (default: every registered one).
    """
    if not isinstance(models, Mapping):
        models = {m if isinstance(m, str) else m.name: m for m in models}
    resolver = ServedResolver(models, process_rewards=process_rewards, ledger=ledger)
    limits = limits or RequestLimits()
    allowed = set(STRATEGIES if strategies is None else strategies)
    if unknown := allowed - set(STRATEGIES):
        raise SpecError(
            f"unknown strategies {sorted(unknown)} (available: {', '.join(STRATEGIES)})"
        )

    def authenticate(request: Request) -> None:
        # A dependency, not an HTTP middleware: that would hide a client's disconnect.
        if api_key is not None:
            sent = request.headers.get("authorization", "")
            if not secrets.compare_digest(sent.encode(), f"Bearer {api_key}".encode()):
                raise ApiError(401, "missing or wrong API key", code="invalid_api_key")

    app = FastAPI(title="thinktank", summary="Inference-time compute behind the OpenAI API",
                  dependencies=[Depends(authenticate)])  # fmt: skip
    limit = anyio.CapacityLimiter(max_concurrent)

    def model_named(name: str) -> Model:
        try:
            return resolver.model(name)
        except SpecError as exc:
            raise ApiError(404, str(exc), param="model", code="model_not_found") from None

    def strategy_named(spec: str) -> Strategy:
        try:
            strategy = build_strategy(spec)
            if strategy.name not in allowed:
                raise SpecError(f"strategy {strategy.name!r} is not served here (served: "
                                f"{', '.join(sorted(allowed))})")  # fmt: skip
            resolver.check(strategy.references())
            limits.check_strategy(strategy)
        except (SpecError, ValueError) as exc:
            raise ApiError(400, str(exc), param="model", code="invalid_strategy") from None
        return strategy

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, str(exc), exc.kind, exc.param, exc.code)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = [str(part) for part in first.get("loc", ()) if part != "body"]
        message = first.get("msg", "invalid request")
        return _error(400, f"{'.'.join(where) or 'body'}: {message}", "invalid_request_error",
                      param=".".join(where) or None)  # fmt: skip

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail), "invalid_request_error")

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [
            {"id": name, "object": "model", "created": 0, "owned_by": "thinktank"}
            for name in resolver.model_names
        ]}  # fmt: skip

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        return _error(500, f"internal error: {type(exc).__name__}", "server_error")

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(
        chat: ChatRequest, request: Request
    ) -> JSONResponse | StreamingResponse:
        strategy_spec, model_name = _route(chat, resolver.model_names)
        model = model_named(model_name)
        strategy = None if strategy_spec is None else strategy_named(strategy_spec)
        if strategy is not None and chat.n != 1:
            raise ApiError(400, "n must be 1 with a strategy: it answers once", param="n")
        if strategy is not None and not _question(chat).strip():
            raise ApiError(400, "a strategy needs a user message to answer", param="messages")
        if strategy is None:
            try:
                prompt_tokens = model.count_tokens([m.model_dump() for m in chat.messages])
                limits.check_plain(chat.n, chat.sampling().max_tokens, prompt_tokens)
            except SpecError as exc:
                raise ApiError(400, str(exc), param="n") from None
        try:
            caps = chat.thinktank.budget if chat.thinktank else None
            budget = limits.budget(Budget(**caps.model_dump()) if caps else None)
        except ValueError as exc:
            raise ApiError(400, str(exc), param="thinktank.budget") from None
        cancel = threading.Event()  # set when the client goes away

        def new_meter() -> Meter:
            # Made once the request has its turn: its time budget counts from there.
            return Meter(budget, ledger=ledger, run_id=uuid.uuid4().hex[:16], cancel=cancel,
                         strategy=strategy.spec if strategy else "plain")  # fmt: skip

        if chat.stream and strategy is None and model.capabilities.streaming:
            return StreamingResponse(_stream_plain(chat, model, new_meter, cancel, limit),
                                     media_type="text/event-stream")  # fmt: skip

        def work() -> dict[str, Any] | None:
            if cancel.is_set():  # gone while it waited for its turn
                return None
            try:
                if strategy is None:
                    return _plain(chat, model, new_meter())
                return _solve(chat, model, strategy, new_meter(), resolver)
            except KeyboardInterrupt:  # the meter stopped it: the client has gone
                return None

        result = await _unless_disconnected(request, cancel, partial(
            anyio.to_thread.run_sync, work, limiter=limit))  # fmt: skip
        if result is None:
            raise ApiError(499, "the client closed the request", code="client_closed_request")
        result["model"] = chat.model
        if chat.stream:  # the answer arrives whole, once the strategy is done
            return StreamingResponse(_sse(result), media_type="text/event-stream")
        return JSONResponse(result)

    return app


async def _unless_disconnected(
    request: Request, cancel: threading.Event, run: Callable[[], Any]
) -> Any:
    """``await run()``, setting ``cancel`` as soon as the client disconnects; a budget
    or spec the work refuses becomes a 400."""

    async def watch() -> None:
        while not cancel.is_set():
            if await request.is_disconnected():
                cancel.set()
                return
            await anyio.sleep(_DISCONNECT_POLL_SECONDS)

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(watch)
        try:
            return await run()
        except BudgetExhausted as exc:
            raise ApiError(400, f"budget: {exc}", param="thinktank.budget") from None
        except ThinktankError as exc:
            raise ApiError(400, str(exc)) from None
        finally:
            tasks.cancel_scope.cancel()


def _route(chat: ChatRequest, served: Sequence[str]) -> tuple[str | None, str]:
    """(strategy spec or None, served model name) from ``model`` and ``extra_body``."""
    name, strategy = chat.model, None
    if name not in served:
        for candidate in served:
            if name.endswith("/" + candidate):
                strategy, name = name[: -len(candidate) - 1], candidate
                break
    if chat.thinktank and chat.thinktank.strategy:
        strategy = chat.thinktank.strategy
    return (None if strategy in (None, "") else strategy), name


def _plain(
    chat: ChatRequest, model: Model, meter: Meter, on_text: TextCallback | None = None
) -> dict[str, Any]:
    """n plain samples of the conversation (a final assistant message is continued)."""
    messages = [m.model_dump() for m in chat.messages]
    completions = meter.generate(model, messages, chat.n, chat.sampling(), on_text=on_text)
    choices = [_choice(i, c.text, c, chat) for i, c in enumerate(completions)]
    return _response(choices, meter, extra=None)


def _question(chat: ChatRequest) -> str:
    """The conversation's last user message ("" without one)."""
    return next((m.content for m in reversed(chat.messages) if m.role == "user"), "")


def _solve(
    chat: ChatRequest, model: Model, strategy: Strategy, meter: Meter, resolver: ServedResolver
) -> dict[str, Any]:
    """One answer by ``strategy`` to the conversation's last user message."""
    kind = chat.thinktank.kind if chat.thinktank else "math"
    problem = Problem(id=meter.run_id, prompt=_question(chat), kind=kind)
    ctx = Context(model, meter, seed=chat.seed, resolver=resolver)
    solution: Solution = strategy.solve(problem, ctx)
    winner = next((c for c in solution.candidates if c.answer == solution.answer), None)
    text = winner.text if winner else (solution.answer or "")
    choice = {"index": 0, "message": {"role": "assistant", "content": text},
              "finish_reason": "stop", "logprobs": None}  # fmt: skip
    extra = {
        "answer": solution.answer,
        "strategy": strategy.spec,
        "candidates": len(solution.candidates),
        "votes": solution.votes,
        "budget_exhausted": meter.exhausted,
        "run_id": meter.run_id,
    }
    return _response([choice], meter, extra)


def _choice(index: int, text: str, completion: Completion, chat: ChatRequest) -> dict[str, Any]:
    logprobs = None
    if chat.logprobs and completion.logprobs is not None:
        tops = completion.top_logprobs or ((),) * len(completion.logprobs)
        logprobs = {"content": [
            {"token": next(iter(top), ""), "logprob": lp, "bytes": None,
             "top_logprobs": [{"token": t, "logprob": v, "bytes": None}
                              for t, v in dict(top).items()]}
            for lp, top in zip(completion.logprobs, tops, strict=False)
        ]}  # fmt: skip
    return {
        "index": index,
        "message": {"role": "assistant", "content": text},
        "finish_reason": "length" if completion.finish_reason in ("length", "budget") else "stop",
        "stop_reason": completion.stop_string,  # vLLM's field: which stop string ended it
        "logprobs": logprobs,
    }


def _response(choices: list[dict], meter: Meter, extra: dict | None) -> dict[str, Any]:
    usage = meter.usage
    body: dict[str, Any] = {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "choices": choices,
        "usage": {
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens,
            "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
            "completion_tokens_details": {"reasoning_tokens": usage.thinking_tokens},
        },
    }
    body["thinktank"] = {**(extra or {}), "cost_usd": usage.cost_usd, "calls": usage.calls,
                         "seconds": usage.seconds}  # fmt: skip
    return body


def _chunk(result: dict[str, Any], choices: list[dict], **extra: Any) -> str:
    chunk = {"id": result["id"], "object": "chat.completion.chunk", "created": result["created"],
             "model": result["model"], "choices": choices, **extra}  # fmt: skip
    return f"data: {json.dumps(chunk)}\n\n"


def _delta(index: int, delta: dict[str, str]) -> dict[str, Any]:
    return {"index": index, "delta": delta, "finish_reason": None}


def _sse_end(result: dict[str, Any]) -> Iterator[str]:
    """Each choice's finish reason, then usage and the thinktank object, then [DONE]."""
    for choice in result["choices"]:
        done = {"index": choice["index"], "delta": {}, "finish_reason": choice["finish_reason"]}
        yield _chunk(result, [done])
    yield _chunk(result, [], usage=result["usage"], thinktank=result["thinktank"])
    yield "data: [DONE]\n\n"


def _sse(result: dict[str, Any]) -> Iterator[str]:
    """A finished response as chat.completion.chunk events (each answer arrives whole)."""
    for choice in result["choices"]:
        yield _chunk(result, [_delta(choice["index"], {"role": "assistant", "content": ""})])
        yield _chunk(result, [_delta(choice["index"], {"content": choice["message"]["content"]})])
    yield from _sse_end(result)


async def _stream_plain(
    chat: ChatRequest,
    model: Model,
    new_meter: Callable[[], Meter],
    cancel: threading.Event,
    limit: anyio.CapacityLimiter,
) -> AsyncIterator[str]:
    """Plain samples streamed token by token as the model writes them."""
    send, receive = anyio.create_memory_object_stream[tuple[str, Any]](max_buffer_size=math.inf)
    head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": chat.model}
    loop = asyncio.get_running_loop()

    def post(kind: str, payload: Any) -> None:
        # From the model's own thread: hand over without waiting for the event loop.
        loop.call_soon_threadsafe(send.send_nowait, (kind, payload))

    def stream(index: int, text: str) -> None:
        post("text", (index, text))

    def work() -> None:
        if cancel.is_set():  # gone while it waited for its turn
            return
        try:
            post("done", _plain(chat, model, new_meter(), stream))
        except KeyboardInterrupt:  # the meter stopped it: the client has gone
            return
        except Exception as exc:  # reported in the stream: the 200 is already sent
            post("error", exc)

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(partial(anyio.to_thread.run_sync, work, limiter=limit))
        try:
            for index in range(chat.n):
                yield _chunk(head, [_delta(index, {"role": "assistant", "content": ""})])
            async for kind, payload in receive:
                if kind == "text":
                    yield _chunk(head, [_delta(payload[0], {"content": payload[1]})])
                    continue
                if kind == "done":
                    for event in _sse_end({**payload, **head}):
                        yield event
                else:
                    message = (
                        str(payload) if isinstance(payload, ThinktankError) else "internal error"
                    )
                    yield f"data: {json.dumps({'error': {'message': message}})}\n\n"
                break
        finally:  # the stream is over, or its client has gone: stop the work at its next token
            cancel.set()
