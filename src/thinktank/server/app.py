"""The thinktank server: OpenAI-compatible chat and legacy completions.

``POST /v1/chat/completions`` with ``model`` set to a served model name
(``smollm2``) samples it plainly (``n`` choices); ``STRATEGY/MODEL`` (e.g.
``self-consistency:n=8/smollm2``) or ``extra_body={"thinktank": {"strategy":
...}}`` answers with a strategy: ``n`` independent answers, each the text of its
winning sample, and a ``thinktank`` object (answer, cost, strategy, candidates,
votes, the model that answered, run id). The request's sampling fields are the
strategy's defaults (`thinktank.strategies.with_defaults`): options spelled out
in its spec win; fields nothing uses are listed in ``thinktank.ignored``; fields
thinktank cannot honour are a 400 (`thinktank.server.schema.REFUSED`).
``POST /v1/completions`` continues text prompts on any served model (base models
too). ``usage`` counts every token spent. ``GET /v1/models`` lists the served
models and the strategy/model pairs a request may name. Each request is a run of
the ledger (`thinktank.server.runs`): its calls, question, answer and client.

The server is a trust boundary. The operator decides at start-up which models
(judges and pool members included), process-reward endpoints and strategies
exist; a request names only those, by name (see `thinktank.resolver.ServedResolver`),
and its strategy's options are checked against `RequestLimits`. A client that
disconnects cancels its work.

Errors are OpenAI-style ``{"error": {"message", "type", "param", "code"}}``
with a 4xx status: never a 500 for bad input.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import anyio
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from thinktank.errors import BudgetExhausted, SpecError, ThinktankError
from thinktank.ledger import Ledger
from thinktank.meter import Budget, Meter
from thinktank.models.base import Completion, Model, Sampling, TextCallback
from thinktank.problem import Problem
from thinktank.resolver import ServedResolver
from thinktank.server.limits import RequestLimits
from thinktank.server.replies import StrategyAnswer, chat_choice, reply, text_choice
from thinktank.server.runs import Answered, RequestRun, chat_question, client_of, sampled
from thinktank.server.schema import ChatRequest, CompletionRequest, SamplingRequest
from thinktank.server.streaming import (
    StreamHead,
    TextStreamHead,
    stream_tokens,
    stream_with_progress,
)
from thinktank.server.tools import ToolsRefused, offering_tools, tool_offer
from thinktank.solution import Solution
from thinktank.spec import parse_spec
from thinktank.strategies import (
    BUILTIN_STRATEGIES,
    STRATEGIES,
    Context,
    Strategy,
    build_strategy,
    with_defaults,
)

#: How often a request's work checks that its client is still there.
_DISCONNECT_POLL_SECONDS = 0.25


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
    ``strategies``: the strategy names requests may use (default: every built-in one; a
    plugin's strategy is served only when named here: installing a package is not consent).
    """
    service = Service(models, ledger=ledger, limits=limits, process_rewards=process_rewards,
                      strategies=strategies, max_concurrent=max_concurrent)  # fmt: skip
    app = FastAPI(title="thinktank", summary="Inference-time compute behind the OpenAI API",
                  dependencies=[Depends(_authenticator(api_key))])  # fmt: skip
    _handle_errors(app)
    app.get("/v1/models")(service.list_models)
    app.post("/v1/chat/completions", response_model=None)(service.chat_completions)
    app.post("/v1/completions", response_model=None)(service.completions)
    return app


def _authenticator(api_key: str | None) -> Callable[[Request], None]:
    """The dependency every route has: with ``api_key``, a 401 unless the request
    sends ``Authorization: Bearer KEY``. A dependency, not an HTTP middleware: that
    would hide a client's disconnect."""

    def authenticate(request: Request) -> None:
        if api_key is not None:
            sent = request.headers.get("authorization", "")
            if not secrets.compare_digest(sent.encode(), f"Bearer {api_key}".encode()):
                raise ApiError(401, "missing or wrong API key", code="invalid_api_key")

    return authenticate


def _handle_errors(app: FastAPI) -> None:
    """Every error as an OpenAI-style body: refusals and invalid requests a 4xx naming
    the field at fault, anything else a 500 without a traceback."""

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

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        return _error(500, f"internal error: {type(exc).__name__}", "server_error")


class Service:
    """What the routes serve from, fixed at start-up: the models, process-reward
    endpoints and strategies a request may name, the limits it must keep within, the
    ledger its calls go to, and how many requests are worked on at once."""

    def __init__(
        self,
        models: Sequence[str | Model] | Mapping[str, str | Model],
        *,
        ledger: Ledger | None,
        limits: RequestLimits | None,
        process_rewards: Mapping[str, str] | None,
        strategies: Collection[str] | None,
        max_concurrent: int,
    ) -> None:
        if not isinstance(models, Mapping):
            models = {m if isinstance(m, str) else m.name: m for m in models}
        self.resolver = ServedResolver(models, process_rewards=process_rewards, ledger=ledger)
        self.limits = limits or RequestLimits()
        self.allowed = set(BUILTIN_STRATEGIES if strategies is None else strategies)
        if unknown := {name for name in self.allowed if name not in STRATEGIES}:
            raise SpecError(
                f"unknown strategies {sorted(unknown)} (available: {', '.join(STRATEGIES)})"
            )
        self.ledger = ledger
        self.limiter = anyio.CapacityLimiter(max_concurrent)
        self.nameable = list(_nameable(self.allowed, self.resolver, self.limits))

    async def list_models(self) -> dict[str, Any]:
        """The served models (``owned_by: "thinktank"``), then each strategy that serves
        with its defaults on each of them (``owned_by: "thinktank-strategy"``)."""
        names = self.resolver.model_names
        listed = [(name, "thinktank") for name in names]
        listed += [(f"{strategy}/{name}", "thinktank-strategy")
                   for strategy in self.nameable for name in names]  # fmt: skip
        return {"object": "list", "data": [
            {"id": name, "object": "model", "created": 0, "owned_by": owner}
            for name, owner in listed
        ]}  # fmt: skip

    async def chat_completions(
        self, chat: ChatRequest, request: Request
    ) -> JSONResponse | StreamingResponse:
        """Chat: ``n`` plain samples of a served model, or ``n`` answers by a strategy."""
        _refuse_unserved(chat)
        strategy_spec, model_name = _route(chat, self.resolver.model_names)
        model = self.model_named(model_name)
        if strategy_spec is None:
            model = _offering_tools(chat, model, strategy=False)
            self.check_plain_chat(chat, model, model_name)
            work: Callable[..., Answered] = partial(_plain, chat, model)
            # Token logprobs come with the whole text: what streams is text only.
            streams_text, label = model.capabilities.streaming and not chat.logprobs, "plain"
        else:
            strategy, unused = self.strategy_named(strategy_spec, chat.strategy_options())
            model = _offering_tools(chat, model, strategy=True)
            _problem(chat, "")  # a conversation it cannot answer is refused before any work
            with _over_limits():
                self.limits.check_answers(chat.n)
            work = partial(_solve, chat, model, strategy, self.resolver, unused)
            streams_text, label = False, strategy.spec
        head = StreamHead(chat.model, chat.n, include_usage=chat.include_usage())
        run = RequestRun(self.ledger, label, model_name, chat_question(chat.messages),
                         client_of(chat, request))  # fmt: skip
        return await self.answer(request, chat, work, run, head, streams_text=streams_text)

    async def completions(
        self, body: CompletionRequest, request: Request
    ) -> JSONResponse | StreamingResponse:
        """Legacy completions: each prompt continued as text, ``n`` samples each."""
        _refuse_unserved(body)
        strategy_spec, model_name = _route(body, self.resolver.model_names)
        if strategy_spec is not None:
            raise ApiError(400, "a strategy answers a conversation: send it to POST "
                           "/v1/chat/completions", param="model",
                           code="invalid_strategy")  # fmt: skip
        model = self.model_named(model_name)
        prompts = body.prompts()
        sampling = body.sampling(body.max_tokens or 16, body.logprobs or 0)
        with _over_limits():
            prompt_tokens = sum(model.count_tokens(prompt) for prompt in prompts)
            self.limits.check_plain(body.n * len(prompts), sampling.max_tokens, prompt_tokens)
        work = partial(_complete, body, model, prompts, sampling)
        head = TextStreamHead(body.model, include_usage=body.include_usage())
        # Token logprobs come with the whole text: what streams is text only.
        streams_text = model.capabilities.streaming and body.logprobs is None
        run = RequestRun(self.ledger, "plain", model_name, "\n\n".join(prompts),
                         client_of(body, request))  # fmt: skip
        return await self.answer(request, body, work, run, head, streams_text=streams_text)

    def model_named(self, name: str) -> Model:
        try:
            return self.resolver.model(name)
        except SpecError as exc:
            raise ApiError(404, str(exc), param="model", code="model_not_found") from None

    def strategy_named(
        self, spec: str, defaults: Mapping[str, float | int]
    ) -> tuple[Strategy, dict[str, str]]:
        """The strategy ``spec`` names, its options unset there taken from ``defaults``
        (the request's fields), checked; and each default not used, with why."""
        unused: dict[str, str] = {}
        try:
            # Checked by name first: a plugin not allowed is never even imported.
            if (name := parse_spec(spec)[0]) not in self.allowed:
                served = ", ".join(sorted(self.allowed))
                if name in STRATEGIES:
                    raise SpecError(f"strategy {name!r} is not served here (served: {served})")
                raise SpecError(f"unknown strategy {name!r} (served: {served})")
            strategy, unused = with_defaults(spec, **defaults)
            self.resolver.check(strategy.references())
            self.limits.check_strategy(strategy)
        except (SpecError, ValueError) as exc:
            # An option over a limit that the request's field set is that field's fault.
            field = next((name for name in defaults if name not in unused
                          and str(exc).startswith(f"{name}=")), "model")  # fmt: skip
            raise ApiError(400, str(exc), param=field, code="invalid_strategy") from None
        return strategy, unused

    def check_plain_chat(self, chat: ChatRequest, model: Model, model_name: str) -> None:
        """A 400 for plain chat that ``model`` cannot serve: a base model, or samples
        over the limits."""
        if not model.capabilities.chat:
            raise ApiError(400, f"{model_name} is a base model (it has no chat template): "
                           "send it text to continue at POST /v1/completions",
                           param="model", code="model_not_chat")  # fmt: skip
        with _over_limits():
            prompt_tokens = model.count_tokens([m.prompt() for m in chat.messages])
            self.limits.check_plain(chat.n, chat.plain_sampling().max_tokens, prompt_tokens)

    def meter_maker(
        self, body: SamplingRequest, run: RequestRun, cancel: threading.Event
    ) -> Callable[[], Meter]:
        """Makes the request's meter (under its budget, within the limits) once the
        request has its turn, so that its time budget counts from there."""
        try:
            caps = body.thinktank.budget if body.thinktank else None
            budget = self.limits.budget(Budget(**caps.model_dump()) if caps else None)
        except ValueError as exc:
            raise ApiError(400, str(exc), param="thinktank.budget") from None
        return partial(Meter, budget, ledger=self.ledger, run_id=run.run_id,
                       problem_id=run.run_id, cancel=cancel, strategy=run.strategy)  # fmt: skip

    async def answer(
        self,
        request: Request,
        body: SamplingRequest,
        work: Callable[..., Answered],
        run: RequestRun,
        head: StreamHead,
        *,
        streams_text: bool,
    ) -> JSONResponse | StreamingResponse:
        """The reply ``work(meter)`` builds, as the ledger's ``run``. With ``stream``
        the 200 goes at once and the work follows in the stream: its text as written
        (``streams_text``: ``work(meter, on_text)``) or progress, then each choice whole."""
        cancel = threading.Event()  # set when the client goes away
        new_meter = self.meter_maker(body, run, cancel)
        replying = run.doing(work)
        if not body.stream:
            return await self.respond(request, body, new_meter, replying, cancel)
        if streams_text:
            events = stream_tokens(head, new_meter, replying, cancel, self.limiter)
        else:
            events = stream_with_progress(head, new_meter, replying, cancel, self.limiter)
        return StreamingResponse(events, media_type="text/event-stream")

    async def respond(
        self,
        request: Request,
        body: SamplingRequest,
        new_meter: Callable[[], Meter],
        answer: Callable[[Meter], dict[str, Any]],
        cancel: threading.Event,
    ) -> JSONResponse:
        """``answer(new_meter())`` in a worker thread once the request has its turn;
        stopped if the client goes away meanwhile."""

        def work() -> dict[str, Any] | None:
            if cancel.is_set():  # gone while it waited for its turn
                return None
            try:
                return answer(new_meter())
            except KeyboardInterrupt:  # the meter stopped it: the client has gone
                return None

        result = await _unless_disconnected(request, cancel, partial(
            anyio.to_thread.run_sync, work, limiter=self.limiter))  # fmt: skip
        if result is None:
            raise ApiError(499, "the client closed the request", code="client_closed_request")
        result["model"] = body.model
        return JSONResponse(result)


@contextlib.contextmanager
def _over_limits() -> Iterator[None]:
    """A request over the limits on its size (`RequestLimits`) is a 400 naming ``n``."""
    try:
        yield
    except SpecError as exc:
        raise ApiError(400, str(exc), param="n") from None


def _offering_tools(chat: ChatRequest, model: Model, *, strategy: bool) -> Model:
    """``model`` offered the request's tools (a 400 where they cannot go)."""
    try:
        offer = tool_offer(chat.tools, chat.tool_choice, chat.parallel_tool_calls)
        return offering_tools(model, offer, chat.messages, strategy=strategy)
    except ToolsRefused as exc:
        raise ApiError(400, str(exc), param=exc.param) from None


def _refuse_unserved(body: SamplingRequest) -> None:
    """A 400 naming the first field set that thinktank cannot honour."""
    if refused := body.refused():
        name, why = refused
        raise ApiError(400, f"{name} is not supported: {why}", param=name,
                       code="unsupported_parameter")  # fmt: skip


def _nameable(
    allowed: Collection[str], resolver: ServedResolver, limits: RequestLimits
) -> Iterator[str]:
    """The allowed strategies a request may name as they are (their default options
    build, name only what is served and are within the limits), in registry order."""
    plugins = sorted(name for name in allowed if name not in BUILTIN_STRATEGIES)
    for name in [*BUILTIN_STRATEGIES, *plugins]:
        if name not in allowed:
            continue
        try:
            strategy = build_strategy(name)
            resolver.check(strategy.references())
            limits.check_strategy(strategy)
        except (SpecError, ValueError):
            continue  # e.g. route: it must be told which runs to learn from
        yield name


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

    # Caught inside the task group but raised outside it: raised inside, they would
    # reach the handlers wrapped in an ExceptionGroup (a 500).
    refused: ThinktankError | None = None
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(watch)
        try:
            result = await run()
        except ThinktankError as exc:
            refused = exc
        finally:
            tasks.cancel_scope.cancel()
    if isinstance(refused, BudgetExhausted):
        raise ApiError(400, f"budget: {refused}", param="thinktank.budget")
    if refused is not None:
        raise ApiError(400, str(refused))
    return result


def _route(body: SamplingRequest, served: Sequence[str]) -> tuple[str | None, str]:
    """(strategy spec or None, served model name) from ``model`` and ``extra_body``."""
    name, strategy = body.model, None
    if name not in served:
        for candidate in served:
            if name.endswith("/" + candidate):
                strategy, name = name[: -len(candidate) - 1], candidate
                break
    if body.thinktank and body.thinktank.strategy:
        strategy = body.thinktank.strategy
    return (None if strategy in (None, "") else strategy), name


def _plain(
    chat: ChatRequest, model: Model, meter: Meter, on_text: TextCallback | None = None
) -> Answered:
    """n plain samples of the conversation (a final assistant message is continued)."""
    messages = [m.prompt() for m in chat.messages]
    completions = meter.generate(model, messages, chat.n, chat.plain_sampling(), on_text=on_text)
    choices = [chat_choice(i, c, chat.logprobs) for i, c in enumerate(completions)]
    return Answered(reply("chat.completion", choices, meter, {"ignored": chat.ignored()}),
                    [sampled(completions)])  # fmt: skip


def _complete(
    body: CompletionRequest,
    model: Model,
    prompts: list[str],
    sampling: Sampling,
    meter: Meter,
    on_text: TextCallback | None = None,
) -> Answered:
    """``body.n`` samples of each prompt, continued as text: choice ``i * n + j`` is
    prompt i's sample j (``on_text`` is told each choice's text by that index)."""
    choices: list[dict[str, Any]] = []
    completions: list[Completion] = []
    for prompt in prompts:
        first = len(choices)
        streamed = (
            None if on_text is None else lambda j, text, first=first: on_text(first + j, text)
        )
        for completion in meter.generate(model, prompt, body.n, sampling, on_text=streamed):
            choices.append(text_choice(len(choices), completion, body.logprobs))
            completions.append(completion)
    return Answered(reply("text_completion", choices, meter, {"ignored": body.ignored()}),
                    [sampled(completions)])  # fmt: skip


def _problem(chat: ChatRequest, problem_id: str) -> Problem:
    """The problem a strategy answers: the conversation's last user message, with the
    messages before it (system prompt, earlier turns) as its context. A conversation
    it cannot answer (e.g. one ending with an assistant message) is a 400 naming
    ``messages``."""
    kind = chat.thinktank.kind if chat.thinktank else "math"
    try:
        return Problem.from_messages(problem_id, [m.prompt() for m in chat.messages], kind)
    except ValueError as exc:
        raise ApiError(400, f"messages: {exc}", param="messages") from None


def _solve(
    chat: ChatRequest,
    model: Model,
    strategy: Strategy,
    resolver: ServedResolver,
    unused: Mapping[str, str],
    meter: Meter,
) -> Answered:
    """``chat.n`` answers by ``strategy`` to the conversation's last user message, its
    prompts keeping the whole conversation. Each answer is independent (answer i
    seeded ``seed + i``; fresh seeds without a seed), all at once and within the
    request's one budget; the request's stop strings end every sample. ``unused``:
    the request's fields the strategy did not take as options, with why."""
    problem = _problem(chat, meter.run_id)

    def solve(index: int) -> Solution:
        seed = None if chat.seed is None else chat.seed + index
        ctx = Context(model, meter, seed=seed, resolver=resolver, stop=chat.stops())
        return strategy.solve(problem, ctx)

    if chat.n == 1:
        solutions = [solve(0)]
    else:
        with ThreadPoolExecutor(max_workers=chat.n) as pool:
            solutions = list(pool.map(solve, range(chat.n)))
    called, listed = set(meter.usage_by_model), bool(chat.thinktank and chat.thinktank.candidates)
    answers = [StrategyAnswer.of(solution, model.name, called, list_candidates=listed,
                                 exhausted=meter.exhausted) for solution in solutions]  # fmt: skip
    extra = {**answers[0].details, "strategy": strategy.spec, "budget_exhausted": meter.exhausted,
             "choices": [answer.details for answer in answers],
             "ignored": {**chat.ignored(strategy=True), **unused}}  # fmt: skip
    choices = [answer.choice(i) for i, answer in enumerate(answers)]
    return Answered(reply("chat.completion", choices, meter, extra), solutions)
