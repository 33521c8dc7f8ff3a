"""The one interface every backend implements: `Model.generate`."""

from __future__ import annotations

import operator
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Literal, NotRequired, Protocol, TypedDict, overload, runtime_checkable


class Message(TypedDict):
    """A chat message. The tool fields (OpenAI's) appear only in conversations for a
    model with ``capabilities.tools``: an assistant message's ``tool_calls`` (its
    ``content`` then "" when it has none), and a ``"tool"`` message's ``tool_call_id``."""

    role: Literal["system", "user", "assistant", "tool"]
    content: str
    tool_calls: NotRequired[list[dict[str, Any]]]
    tool_call_id: NotRequired[str]


#: A prompt is either chat messages (rendered by the model's own template) or raw
#: text that the model continues as is. Messages ending with an assistant message
#: ask the model to continue that message (a partial solution), not to answer it.
Prompt = str | Sequence[Message]


def split_reply(messages: Sequence[Message]) -> tuple[list[Message], str]:
    """The messages to render with the chat template, and the reply to continue: the
    content of a final assistant message ("" when the prompt does not end with one)."""
    if messages and messages[-1]["role"] == "assistant":
        return list(messages[:-1]), messages[-1]["content"]
    return list(messages), ""


#: "tool_calls": the model stopped to call tools (`Completion.tool_calls`).
FinishReason = Literal["stop", "length", "budget", "pruned", "tool_calls"]


@dataclass(frozen=True)
class Sampling:
    """How to sample. ``seed=None`` draws a fresh seed, reported on each completion.

    The options have OpenAI's and vLLM's names and meanings, and apply in vLLM's
    order: ``logit_bias`` (token id -> bias, added to the logits; a dict is taken
    too), then the penalties on the biased logits — ``repetition_penalty`` (each
    token of the prompt or the sample so far: a positive logit divided by it, a
    negative one multiplied), ``frequency_penalty`` (minus it times the times the
    sample wrote the token) and ``presence_penalty`` (minus it once, if it wrote
    it) — then ``temperature`` (0: the argmax of the penalised logits), then
    ``top_k`` (the k likeliest; 0: off), then ``top_p`` (the nucleus of what top-k
    kept), then ``min_p`` (tokens at least ``min_p`` times as likely as the
    likeliest). The truncations and penalties are off by default. Reported
    logprobs stay the raw model's at temperature 1. A remote endpoint is sent
    only the options set away from their defaults (`thinktank.models.openai`).
    """

    temperature: float = 0.7
    top_p: float = 1.0
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    seed: int | None = None
    #: Also return the k most likely tokens at each position, with their logprobs.
    top_logprobs: int = 0
    #: Sample i of the call is sample ``sample_offset + i`` of the seed's stream, so
    #: a strategy can draw more samples of a stream it began (backends that take
    #: seeds per sample honour it; the others draw fresh samples).
    sample_offset: int = 0
    top_k: int = 0
    min_p: float = 0.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    #: (token id, bias) pairs sorted by id, so that equal biases hash alike.
    logit_bias: tuple[tuple[int, float], ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.top_k, int) or self.top_k < 0:
            raise ValueError("top_k must be a whole number >= 0 (0: off)")
        if not 0 <= self.min_p < 1:
            raise ValueError("min_p must be in [0, 1)")
        for name in ("presence_penalty", "frequency_penalty"):
            if not -2 <= getattr(self, name) <= 2:
                raise ValueError(f"{name} must be in [-2, 2]")
        if not self.repetition_penalty > 0:
            raise ValueError("repetition_penalty must be > 0 (1: off)")
        object.__setattr__(self, "logit_bias", _logit_bias_pairs(self.logit_bias))
        if self.sample_offset < 0:
            raise ValueError("sample_offset must be >= 0")
        if not 0 <= self.top_logprobs <= 20:
            raise ValueError("top_logprobs must be in 0..20")
        if self.temperature < 0:
            raise ValueError("temperature must be >= 0")
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")
        if self.max_tokens < 1:
            raise ValueError("max_tokens must be >= 1")

    def with_(self, **changes: object) -> Sampling:
        return replace(self, **changes)


def _logit_bias_pairs(
    bias: Mapping[int, float] | Iterable[tuple[int, float]],
) -> tuple[tuple[int, float], ...]:
    """A logit bias given as a dict or as (token id, bias) pairs, checked, as pairs sorted by id."""
    items = bias.items() if isinstance(bias, Mapping) else bias
    try:
        pairs = [(operator.index(token), float(value)) for token, value in items]
    except (TypeError, ValueError):
        raise ValueError(
            f"logit_bias must map whole-number token ids to biases ({{1234: -100}}), not {bias!r}"
        ) from None
    for token, value in pairs:
        if token < 0:
            raise ValueError(f"logit_bias: token id {token} must be >= 0")
        if not -100 <= value <= 100:
            raise ValueError(f"logit_bias: the bias of token {token} must be in [-100, 100]")
    if len({token for token, _ in pairs}) < len(pairs):
        raise ValueError("logit_bias names a token id twice")
    return tuple(sorted(pairs))


@dataclass(frozen=True)
class ToolCall:
    """A function call a model asked for (OpenAI's ``tool_calls[i]``)."""

    id: str
    name: str
    #: The arguments as the model wrote them: JSON text, not checked against the schema.
    arguments: str


@dataclass(frozen=True)
class ToolOffer:
    """The tools a request offers a model, in OpenAI's forms: ``tools`` (function
    definitions), ``choice`` (``tool_choice``: "none", "auto", "required" or a named
    function) and ``parallel`` (``parallel_tool_calls``); None: the endpoint's default."""

    tools: tuple[Mapping[str, Any], ...]
    choice: str | Mapping[str, Any] | None = None
    parallel: bool | None = None


@dataclass(frozen=True)
class Completion:
    """One sampled continuation.

    ``logprobs[i]`` is the model's log-probability (temperature 1, before top-p) of
    ``token_ids[i]``; None when the backend does not expose them.
    ``prompt_tokens`` is the prompt length of the request that produced this
    completion (shared by all its siblings of that ``request``: count it once per
    request, not per completion), of which ``cached_tokens`` came from the
    backend's prefix cache instead of being computed again.
    """

    text: str
    token_ids: tuple[int, ...]
    logprobs: tuple[float, ...] | None
    finish_reason: FinishReason
    prompt_tokens: int
    seed: int | None = None
    cached_tokens: int = 0
    #: With ``Sampling.top_logprobs = k``: per position, the k most likely token
    #: texts and their logprobs (temperature 1), most likely first.
    top_logprobs: tuple[dict[str, float], ...] | None = None
    #: Which of ``Sampling.stop`` ended it (the text stops before it); None when it
    #: ended otherwise (end of turn, length).
    stop_string: str | None = None
    #: The completion's token count when the backend gives no token ids (remote).
    token_count: int | None = None
    #: The part of the completion tokens that was hidden reasoning (billed as such).
    thinking_tokens: int = 0
    #: Which of the call's backend requests produced it: each request pays its own
    #: prompt (a remote server that ignores ``n`` is sent one request per sample).
    request: int = 0
    #: The tool calls it asked for (``finish_reason="tool_calls"``), in order.
    tool_calls: tuple[ToolCall, ...] = ()
    #: What each token of ``logprobs`` wrote, as bytes (a token may hold part of a
    #: character): b"" for an end-of-turn token; joined, they begin with ``text``
    #: (the text stops before a stop string, the tokens may go on). None when the
    #: backend does not say.
    token_bytes: tuple[bytes, ...] | None = None

    @property
    def completion_tokens(self) -> int:
        return len(self.token_ids) if self.token_count is None else self.token_count


@dataclass(frozen=True)
class Capabilities:
    chat: bool = True  # has a chat template (instruction-tuned)
    logprobs: bool = True
    #: n samples share one prefill and decode as one batch; if not, each sample may be
    #: its own request that pays its own prompt (the budget reserves n prompts).
    batched: bool = True
    streaming: bool = False  # generate(..., on_text=...) reports text as it is written
    #: generate_together(...): workers that share one KV cache (Hogwild!), see
    #: `thinktank.models.torch.TorchModel.generate_together`.
    shared_cache: bool = False
    #: with_tools(offer) gives the model offering tools to each request (`ToolCallingModel`).
    tools: bool = False


#: Each `Capabilities` field in words, for messages.
CAPABILITY_WORDS: dict[str, str] = {
    "chat": "a chat template",
    "logprobs": "logprobs",
    "batched": "samples decoded as one batch",
    "streaming": "streamed text",
    "shared_cache": "workers that share one KV cache",
    "tools": "tool calls",
}

#: What each backend can do, known before a model loads (``thinktank models``): a
#: loaded model's capabilities are its backend's, with ``chat`` its own.
BACKEND_CAPABILITIES: dict[str, Capabilities] = {
    "llama.cpp": Capabilities(logprobs=True, batched=True, streaming=True),
    "torch": Capabilities(logprobs=True, batched=True, streaming=True, shared_cache=True),
    "openai": Capabilities(chat=True, logprobs=True, batched=False, tools=True),
}


@dataclass(frozen=True)
class TeamFormat:
    """The fixed text a shared-cache session (``generate_together``, Hogwild!) writes
    into the cache besides the workers' own, and when. Empty fields write nothing.

    ``step_headers``: per worker in order (extra ones unused), what starts each of
    its steps after the first (in the layouts with steps), ``{step}`` replaced by
    the step's number (2, 3, ...); empty: the worker's first header again.
    ``others``, ``pivot`` and ``own`` frame the others' current blocks where a
    layout shows them: a worker sees ``others``, then each other worker's block
    followed by ``pivot``, then ``own``, then its own block (Hogwild!'s "### Work in
    progress (others)" ... "<...>" ... "(own)"). ``check``: once the workers
    together have been fed more than ``check_every`` tokens since the last one, the
    next step to start begins with it (Hogwild!'s "am I doing redundant work?"); 0
    never.
    """

    step_headers: tuple[str, ...] = ()
    others: str = ""
    pivot: str = ""
    own: str = ""
    check: str = ""
    check_every: int = 0

    def __post_init__(self) -> None:
        if self.check_every < 0:
            raise ValueError("check_every must be >= 0")


#: Cached prompt tokens cost this share of the input price unless a price says otherwise
#: (the usual discount of hosted APIs; for a local model: the prefill it skips).
CACHED_INPUT_SHARE = 0.1


@dataclass(frozen=True)
class Price:
    """US dollars per million tokens. ``cached_input_per_mtok`` defaults to
    `CACHED_INPUT_SHARE` of the input price; ``thinking_per_mtok`` (reasoning tokens,
    where a provider bills them apart) to the output price."""

    input_per_mtok: float
    output_per_mtok: float
    cached_input_per_mtok: float | None = None
    thinking_per_mtok: float | None = None
    #: False for a model the price book does not know (a remote model): its calls
    #: are metered at $0, and reports call its cost unknown, never free (`UNPRICED`).
    known: bool = True

    @property
    def dearest_output_per_mtok(self) -> float:
        """What a completion token costs at most: the budget's worst case."""
        return max(self.output_per_mtok, self.thinking_per_mtok or 0.0)

    def cost(
        self,
        prompt_tokens: int,
        completion_tokens: int,
        cached_tokens: int = 0,
        thinking_tokens: int = 0,
    ) -> float:
        """Dollars for a call; ``cached_tokens`` is the part of ``prompt_tokens`` served
        from a prefix cache, ``thinking_tokens`` the part of ``completion_tokens`` that
        was hidden reasoning."""
        cached_price = (
            self.cached_input_per_mtok
            if self.cached_input_per_mtok is not None
            else self.input_per_mtok * CACHED_INPUT_SHARE
        )
        thinking_price = (
            self.thinking_per_mtok if self.thinking_per_mtok is not None else self.output_per_mtok
        )
        return (
            (prompt_tokens - cached_tokens) * self.input_per_mtok
            + cached_tokens * cached_price
            + (completion_tokens - thinking_tokens) * self.output_per_mtok
            + thinking_tokens * thinking_price
        ) / 1e6


#: The price of a model the price book does not know: metered at $0, reported unknown.
UNPRICED = Price(0.0, 0.0, known=False)

#: Called with the number of tokens generated so far in the current call.
ProgressCallback = Callable[[int], None]
#: Called with (sample index within the call, new text) as a streaming backend
#: writes; the pieces of a sample join to its final text (stop string excluded).
TextCallback = Callable[[int, str], None]


class SampleProgress(Sequence[float]):
    """What a prune rule sees of one sample as it is written: the sequence of its
    token logprobs so far, and ``top``, per position the top logprobs (filled only
    with ``Sampling.top_logprobs``), as they will be on its `Completion`. It reads the
    backend's live lists, so a rule may keep per-sample state keyed by it."""

    __slots__ = ("_logprobs", "top")

    def __init__(self, logprobs: list[float], top: list[dict[str, float]]) -> None:
        self._logprobs = logprobs
        self.top = top

    def __len__(self) -> int:
        return len(self._logprobs)

    @overload
    def __getitem__(self, index: int) -> float: ...
    @overload
    def __getitem__(self, index: slice) -> list[float]: ...
    def __getitem__(self, index: int | slice) -> float | list[float]:
        return self._logprobs[index]


#: Called after each token with that sample's `SampleProgress` (a sequence of its
#: token logprobs so far); True stops the sample early (``finish_reason="pruned"``):
#: tokens never written cost nothing.
PruneRule = Callable[[SampleProgress], bool]


class CallGroup:
    """Calls a strategy makes at once, one thread each (`Context.generate_each`).

    A batching backend admits a group's calls together and in the group's
    order once each has either been submitted or returned without reaching
    the model (refused by the budget, replayed): which thread ran first then
    changes nothing, and a seed gives the same samples. After ``patience``
    seconds it stops waiting for stragglers.
    """

    def __init__(self, size: int, patience: float = 2.0) -> None:
        self.size = size
        self.deadline = time.monotonic() + patience
        self._arrived: set[int] = set()
        self._lock = threading.Lock()

    def arrive(self, index: int) -> None:
        with self._lock:
            self._arrived.add(index)

    @property
    def gathered(self) -> bool:
        """Every call is in (or the group has waited long enough)."""
        with self._lock:
            return len(self._arrived) >= self.size or time.monotonic() >= self.deadline


_group_call = threading.local()


@contextmanager
def calling_in_group(group: CallGroup, index: int) -> Iterator[None]:
    """Mark this thread's model calls as call ``index`` of ``group``; it arrives on exit."""
    _group_call.current = (group, index)
    try:
        yield
    finally:
        _group_call.current = None
        group.arrive(index)


def current_group_call() -> tuple[CallGroup, int] | None:
    """The (group, index) this thread is calling as, if any (for backends)."""
    return getattr(_group_call, "current", None)


@runtime_checkable
class Model(Protocol):
    """A language model. Implementations must be safe to call from several threads."""

    name: str
    capabilities: Capabilities
    price: Price

    def count_tokens(self, prompt: Prompt) -> int:
        """Tokens the prompt takes once rendered (what `generate` will prefill): exact
        where the backend has the tokenizer, else an upper bound, so that budgets and
        limits resting on it hold."""
        ...

    def generate(
        self,
        prompt: Prompt,
        n: int = 1,
        sampling: Sampling = Sampling(),
        *,
        deadline: float | None = None,
        progress: ProgressCallback | None = None,
        prune: PruneRule | None = None,
    ) -> list[Completion]:
        """Sample ``n`` completions of ``prompt``.

        ``deadline`` is a `time.monotonic()` instant: decoding stops there and the
        unfinished completions end with ``finish_reason="budget"``. ``prune``
        stops single samples early (see `PruneRule`).
        """
        ...


@runtime_checkable
class ToolCallingModel(Model, Protocol):
    """A model that can be offered tools (``capabilities.tools``)."""

    def with_tools(self, offer: ToolOffer) -> Model:
        """This model offering ``offer`` to every request: the same model (name,
        price, connection) whose completions carry the tool calls it asks for, and
        whose prompts may hold tool messages (see `Message`)."""
        ...


@dataclass
class ModelInfo:
    """An entry of the model registry, shown by `thinktank models`: its backend (a key
    of `BACKEND_CAPABILITIES`) and whether it chats."""

    name: str
    description: str
    load: Callable[[], Model] = field(repr=False)
    backend: str
    chat: bool
