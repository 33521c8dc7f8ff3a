"""The server's request bodies (pydantic models): what a client may send, checked
before any work starts (a field that fails its check is a 400 naming it).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from thinktank.models.base import Message as PromptMessage
from thinktank.models.base import Sampling
from thinktank.server.tools import MAX_TOOLS, MessageToolCall, ToolChoice, ToolDefinition

#: Limits past which a request is refused as absurd (400), whatever the operator's
#: `RequestLimits`.
MAX_N = 1024
MAX_TOKENS = 1 << 20
MAX_STOPS = 16
MAX_PROMPTS = 64
MAX_LOGIT_BIAS = 1024


class Message(BaseModel):
    """A conversation's message; the tool fields are OpenAI's (see `thinktank.server.tools`)."""

    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant", "tool"]
    #: Required, but null for an assistant message that only calls tools.
    content: str | None = None
    tool_calls: list[MessageToolCall] | None = None
    #: A tool message's: the call it answers.
    tool_call_id: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _tool_fields_fit_the_role(self) -> Message:
        if self.content is None and not (self.role == "assistant" and self.tool_calls):
            raise ValueError("content is required (null only with an assistant's tool_calls)")
        if self.tool_calls is not None and self.role != "assistant":
            raise ValueError("only an assistant message has tool_calls")
        if (self.role == "tool") != (self.tool_call_id is not None):
            raise ValueError("a tool message needs a tool_call_id, and only a tool message has one")
        return self

    def prompt(self) -> PromptMessage:
        """The message as backends take it: the tool fields only where set."""
        message: PromptMessage = {"role": self.role, "content": self.content or ""}
        if self.tool_calls:
            message["tool_calls"] = [call.model_dump() for call in self.tool_calls]
        if self.tool_call_id is not None:
            message["tool_call_id"] = self.tool_call_id
        return message


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
    #: A strategy reply lists its candidates in ``thinktank.candidates`` (else: their count).
    candidates: bool = False


class StreamOptions(BaseModel):
    """``stream_options``: ``include_usage`` adds a last chunk with ``usage``, as OpenAI's."""

    model_config = ConfigDict(extra="forbid")

    include_usage: bool = False


#: The sampling fields beyond OpenAI's pair (temperature, top_p) that the embedded
#: backends take, by vLLM's names (`Sampling`); a strategy has options of the same names.
EXTRA_SAMPLING = ("top_k", "min_p", "presence_penalty", "frequency_penalty", "repetition_penalty")
#: The fields a strategy request may set as its strategy's options (where its spec
#: string does not): these, and ``max_tokens`` (per sample, from ``max_tokens`` or
#: ``max_completion_tokens``).
STRATEGY_FIELDS = ("temperature", "top_p", *EXTRA_SAMPLING)

#: Fields of OpenAI's requests that thinktank cannot honour, with the value that asks
#: for nothing: set to anything else, the request is refused (400 naming the field),
#: never served as if the field were absent.
REFUSED: dict[str, tuple[object, str]] = {
    "response_format": ({"type": "text"}, "thinktank does not constrain the output to a format"),
    "functions": (None, "the legacy functions are not served: use tools"),
    "function_call": (None, "the legacy functions are not served: use tool_choice"),
    "audio": (None, "thinktank writes text only"),
    "modalities": (["text"], "thinktank writes text only"),
    "web_search_options": (None, "thinktank does not search the web"),
    "suffix": (None, "thinktank does not insert text before a suffix"),
}
#: Why an unknown field (kept by pydantic as an extra) is listed as ignored.
NOT_USED = "not a field thinktank uses"


class SamplingRequest(BaseModel):
    """What chat and legacy completion requests share: the model and how to sample it,
    by OpenAI's names (vLLM's for `EXTRA_SAMPLING`, sent at the top level or in the
    `openai` client's ``extra_body``, which lands there). Unknown fields are kept
    (``model_extra``) so that a response can list them as ignored."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    n: int = Field(default=1, ge=1, le=MAX_N)
    temperature: float = Field(default=1.0, ge=0, le=2)
    top_p: float = Field(default=1.0, gt=0, le=1)
    #: vLLM's: -1 (and 0) is off.
    top_k: int | None = Field(default=None, ge=-1)
    min_p: float | None = Field(default=None, ge=0, lt=1)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    repetition_penalty: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    #: OpenAI's: token id (a JSON key, so a string) -> bias in [-100, 100].
    logit_bias: (
        dict[Annotated[int, Field(ge=0)], Annotated[float, Field(ge=-100, le=100)]] | None
    ) = Field(default=None, max_length=MAX_LOGIT_BIAS)
    stream: bool = False
    stream_options: StreamOptions | None = None
    thinktank: ThinktankOptions | None = None

    @field_validator("stop")
    @classmethod
    def _few_stops(cls, stop: str | list[str] | None) -> str | list[str] | None:
        if isinstance(stop, list) and len(stop) > MAX_STOPS:
            raise ValueError(f"at most {MAX_STOPS} stop strings")
        return stop

    @model_validator(mode="after")
    def _stream_options_need_a_stream(self) -> SamplingRequest:
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options is only allowed when stream is true")
        return self

    def include_usage(self) -> bool:
        """Whether a stream ends with a usage chunk."""
        return self.stream_options is not None and self.stream_options.include_usage

    def stops(self) -> tuple[str, ...]:
        """The stop strings (empty ones dropped: they would stop at once)."""
        stops = [self.stop] if isinstance(self.stop, str) else (self.stop or [])
        return tuple(s for s in stops if s)

    def sampling(self, max_tokens: int, top_logprobs: int = 0) -> Sampling:
        """How a plain request's samples are drawn: its fields, `Sampling`'s defaults
        for those it leaves out."""
        extras = {name: getattr(self, name) for name in EXTRA_SAMPLING}
        extras["top_k"] = max(extras["top_k"] or 0, 0)
        return Sampling(
            temperature=self.temperature,
            top_p=self.top_p,
            max_tokens=max_tokens,
            stop=self.stops(),
            seed=self.seed,
            top_logprobs=top_logprobs,
            sample_offset=self.thinktank.sample_offset if self.thinktank else 0,
            logit_bias=self.logit_bias or (),
            **{name: value for name, value in extras.items() if value is not None},
        )

    def refused(self) -> tuple[str, str] | None:
        """The first field set that thinktank cannot honour (`REFUSED`), and why."""
        extra = self.model_extra or {}
        for name, (nothing, why) in REFUSED.items():
            if name in extra and extra[name] is not None and extra[name] != nothing:
                return name, why
        return None

    def ignored(self) -> dict[str, str]:
        """The fields sent that thinktank does not use, each with why (the response's
        ``thinktank.ignored``)."""
        extra = self.model_extra or {}
        return {name: NOT_USED for name in sorted(extra) if name not in REFUSED}


class ChatRequest(SamplingRequest):
    """An OpenAI chat-completions request."""

    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    tools: list[ToolDefinition] | None = Field(default=None, max_length=MAX_TOOLS)
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None

    def sample_tokens(self) -> int | None:
        """Tokens per sample asked for: ``max_completion_tokens``, else ``max_tokens``."""
        return self.max_completion_tokens or self.max_tokens

    def plain_sampling(self) -> Sampling:
        """How a plain request's samples are drawn (256 tokens each unless it says)."""
        top_logprobs = (self.top_logprobs or 0) if self.logprobs else 0
        return self.sampling(self.sample_tokens() or 256, top_logprobs)

    def strategy_options(self) -> dict[str, float | int]:
        """The strategy options the request sets by its fields: the `STRATEGY_FIELDS`
        and ``max_tokens`` it sent (a field left out never overrides a model's
        profile, whatever its default here)."""
        sent = self.model_fields_set
        options = {name: getattr(self, name) for name in STRATEGY_FIELDS if name in sent}
        if options.get("top_k") == -1:
            options["top_k"] = 0
        if self.sample_tokens() is not None:
            options["max_tokens"] = self.sample_tokens()
        return {name: value for name, value in options.items() if value is not None}

    def ignored(self, *, strategy: bool = False) -> dict[str, str]:
        """The fields sent that are not used, each with why; ``strategy``: those a
        strategy request cannot use besides (its samples' logprobs and logit bias)."""
        ignored = super().ignored()
        if self.max_completion_tokens is not None and self.max_tokens is not None:
            ignored["max_tokens"] = "max_completion_tokens is used"
        if strategy and self.logprobs:
            ignored["logprobs"] = "a strategy's reply does not keep its samples' token logprobs"
        if strategy and self.top_logprobs is not None:
            ignored["top_logprobs"] = "a strategy's reply does not keep its samples' token logprobs"
        if strategy and self.logit_bias:
            ignored["logit_bias"] = "no strategy takes a logit bias"
        return ignored


class CompletionRequest(SamplingRequest):
    """An OpenAI legacy completions request (``POST /v1/completions``): text prompts
    continued as they are (no chat template), for base and chat models alike."""

    prompt: str | list[str] = Field(min_length=1)
    max_tokens: int | None = Field(default=16, ge=1, le=MAX_TOKENS)  # OpenAI's default
    #: How many top alternatives each position lists (OpenAI's allow 0-5; here 0-20).
    logprobs: int | None = Field(default=None, ge=0, le=20)
    #: Only false: the reply does not repeat the prompt.
    echo: bool = False
    #: Only 1 or ``n``: every sample is returned, none is picked.
    best_of: int | None = Field(default=None, ge=1)

    @field_validator("prompt")
    @classmethod
    def _few_prompts(cls, prompt: str | list[str]) -> str | list[str]:
        if isinstance(prompt, list) and len(prompt) > MAX_PROMPTS:
            raise ValueError(f"at most {MAX_PROMPTS} prompts")
        return prompt

    @field_validator("echo")
    @classmethod
    def _no_echo(cls, echo: bool) -> bool:
        if echo:
            raise ValueError("only false is served: the reply does not repeat the prompt")
        return echo

    @field_validator("best_of")
    @classmethod
    def _best_of_is_n(cls, best_of: int | None, info: ValidationInfo) -> int | None:
        if best_of not in (None, 1, info.data.get("n")):
            raise ValueError("must be 1 or n: every sample is returned, none is picked")
        return best_of

    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)
