"""A remote backend: any OpenAI-compatible chat-completions endpoint.

Model spec ``openai:MODEL@BASE_URL`` (e.g. ``openai:Qwen/Qwen3-8B@http://localhost:8000/v1``).
The API key is read from the environment variable ``api_key_env`` (default
``OPENAI_API_KEY``; ``?key_env=NAME`` in the spec names another) and is never
logged; local servers that need none get a placeholder.

Requests run on one asyncio loop (a background thread) under a concurrency
limit; the official client retries 429, 5xx and dropped connections with
exponential backoff and enforces timeouts. ``n`` samples are asked for with
the server's ``n`` when it honours it, else as parallel single requests (and a
seed per sample); if some of them fail, the others are kept.

Sampling options go only when set away from their defaults, so a plain OpenAI
endpoint never sees one it lacks: OpenAI's by name, vLLM's (``top_k``, ``min_p``,
``repetition_penalty``) as extra body fields. A 4xx that names one of them, or a
bare 400 once vLLM's were sent, is an error saying which to leave at its default.

Tools: `OpenAIModel.with_tools` (or ``generate(..., tools=ToolOffer(...))``) sends
``tools``, ``tool_choice`` and ``parallel_tool_calls`` as they are; the calls the
model asks for come back as `Completion.tool_calls` with ``finish_reason="tool_calls"``,
and the conversation may hold the assistant's tool calls and ``"tool"`` results.

Usage is what the server bills: its ``usage`` counts (completion and reasoning
tokens included; logprobs never replace them), one prompt per request. Budgets
hold without a tokenizer: `OpenAIModel.count_tokens` is an upper bound, not an
estimate, and a request not yet sent when the deadline passes is not sent (one
already sent runs to its end: its tokens are billed either way).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import threading
import time
from collections.abc import Sequence
from typing import Any

import openai

from thinktank.errors import ThinktankError
from thinktank.models.base import (
    BACKEND_CAPABILITIES,
    UNPRICED,
    Completion,
    FinishReason,
    Price,
    ProgressCallback,
    Prompt,
    PruneRule,
    Sampling,
    ToolCall,
    ToolOffer,
)

#: vLLM's sampling options that OpenAI's API lacks, sent as extra body fields (vLLM
#: reads them there; the official client sends only OpenAI's own by name).
_VLLM_OPTIONS = ("top_k", "min_p", "repetition_penalty")
#: OpenAI's optional sampling options sent as they are (``stop``, ``logit_bias`` and
#: ``seed`` take their own forms).
_OPENAI_OPTIONS = ("top_p", "presence_penalty", "frequency_penalty", "top_logprobs")
_DEFAULTS = Sampling()

#: What a chat template may add to a prompt's text, in tokens: per message (role
#: markers), and once (a default system prompt, the reply's header). A server that
#: bills more raises the latter, so the bound holds from then on.
_TOKENS_PER_MESSAGE = 8
_TEMPLATE_TOKENS = 64
#: What a chat template may add when tools are offered (its instructions for calling
#: them, markers around each definition), beyond the definitions' JSON text.
_TOOLS_TEMPLATE_TOKENS = 256
_TOKENS_PER_TOOL = 16


class OpenAIModel:
    """A model behind an OpenAI-compatible ``/chat/completions`` endpoint."""

    def __init__(
        self,
        model: str,
        base_url: str,
        *,
        api_key_env: str = "OPENAI_API_KEY",
        price: Price | None = None,
        concurrency: int = 16,
        timeout: float = 120.0,
        max_retries: int = 4,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        self.model, self.base_url = model, base_url.rstrip("/")
        self.name = f"openai:{model}@{self.base_url}"
        self.capabilities = BACKEND_CAPABILITIES["openai"]
        self.price = price or UNPRICED  # not in the price book: its cost is unknown
        self._client = openai.AsyncOpenAI(
            api_key=os.environ.get(api_key_env) or "none",
            base_url=self.base_url,
            timeout=timeout,
            max_retries=max_retries,
            # The key and the prompts go to base_url only, never where a redirect points.
            http_client=openai.DefaultAsyncHttpxClient(follow_redirects=False, timeout=timeout),
        )
        self._concurrency = concurrency
        self._server_n: bool | None = None  # does the server honour n? learnt on first use
        self._template_tokens = _TEMPLATE_TOKENS
        self._loop = asyncio.new_event_loop()
        self._limit: asyncio.Semaphore | None = None
        threading.Thread(target=self._loop.run_forever, name=self.name, daemon=True).start()

    def __repr__(self) -> str:
        return f"OpenAIModel(model={self.model!r}, base_url={self.base_url!r})"

    def count_tokens(self, prompt: Prompt, tools: ToolOffer | None = None) -> int:
        """An upper bound on what the server will bill for the prompt (offering
        ``tools``), so that a budget holds (the ledger records the server's own count).
        With no tokenizer here: a token covers at least one byte of text (byte-level
        BPE, SentencePiece with byte fallback), so the text's UTF-8 bytes (tool calls
        and definitions as JSON) plus the template's allowance bound it. A
        characters-per-token estimate would be closer, and could be under."""
        messages = _messages(prompt)
        text_bytes = sum(_message_bytes(m) for m in messages)
        bound = text_bytes + _TOKENS_PER_MESSAGE * len(messages) + self._template_tokens
        if tools is not None:
            definitions = sum(len(json.dumps(tool).encode()) for tool in tools.tools)
            choice = len(json.dumps(tools.choice).encode())
            bound += _TOOLS_TEMPLATE_TOKENS + _TOKENS_PER_TOOL * len(tools.tools)
            bound += definitions + choice
        return bound

    def with_tools(self, offer: ToolOffer) -> OfferingTools:
        """This model offering ``offer`` to every request (see `ToolCallingModel`)."""
        return OfferingTools(self, offer)

    def generate(
        self,
        prompt: Prompt,
        n: int = 1,
        sampling: Sampling | None = None,
        *,
        deadline: float | None = None,
        progress: ProgressCallback | None = None,
        prune: PruneRule | None = None,
        tools: ToolOffer | None = None,
    ) -> list[Completion]:
        """``n`` samples, offering ``tools`` if given; ``prune`` cannot stop a remote
        sample early and is ignored."""
        sampling = sampling or Sampling()
        if n < 1:
            raise ValueError("n must be >= 1")
        future = asyncio.run_coroutine_threadsafe(
            self._generate(_messages(prompt), n, sampling, deadline, tools), self._loop
        )
        try:
            completions = future.result()
        except openai.OpenAIError as exc:
            raise ThinktankError(f"{self.name}: {_describe(exc, sampling)}") from None
        except BaseException:
            future.cancel()
            raise
        if progress is not None:
            progress(sum(c.completion_tokens for c in completions))
        return completions

    async def _generate(
        self,
        messages: list[Any],
        n: int,
        sampling: Sampling,
        deadline: float | None,
        tools: ToolOffer | None,
    ) -> list[Completion]:
        """The samples; each request's completions carry its index (each pays its prompt)."""
        if self._limit is None:
            self._limit = asyncio.Semaphore(self._concurrency)
        completions: list[Completion] = []
        errors: list[BaseException] = []
        if n > 1 and self._server_n is not False and not sampling.sample_offset:
            try:
                completions = await self._request(
                    messages, n, sampling, sampling.seed, 0, deadline, tools
                )
            except openai.BadRequestError as exc:  # taken as "no n here": ask one by one
                if _named_options(exc, sampling):
                    raise  # an option of ours, not n: one by one would fail alike
                errors.append(exc)
            if completions and completions[0].finish_reason == "budget":
                return completions  # not sent: nothing learnt about n
            self._server_n = len(completions) == n
        missing = n - len(completions)
        if missing:
            first = sampling.sample_offset + len(completions)
            seeds = [
                None if sampling.seed is None else sampling.seed + first + i for i in range(missing)
            ]
            results = await asyncio.gather(
                *(
                    self._request(messages, 1, sampling, seed, request, deadline, tools)
                    for request, seed in enumerate(seeds, start=1)
                ),
                return_exceptions=True,
            )
            for result in results:
                if isinstance(result, BaseException):
                    errors.append(result)
                else:
                    completions.extend(result)
        if not completions:
            raise ThinktankError(f"{self.name}: {_describe(errors[-1], sampling)}") from None
        return completions

    async def _request(
        self,
        messages: list[Any],
        n: int,
        sampling: Sampling,
        seed: int | None,
        request: int,
        deadline: float | None,
        tools: ToolOffer | None,
    ) -> list[Completion]:
        """One request's completions; empty ones that end with the budget when the
        deadline passes before the request is sent."""
        extra = _vllm_options(sampling)
        if messages[-1]["role"] == "assistant":  # continue a partial reply (vLLM's flags)
            extra |= {"continue_final_message": True, "add_generation_prompt": False}
        options: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "n": n,
            "temperature": sampling.temperature,
            "max_tokens": sampling.max_tokens,
            "logprobs": True,
            "extra_body": extra or None,
            **_openai_options(sampling),
        }
        if seed is not None:
            options["seed"] = seed
        if tools is not None:
            options |= _tool_options(tools)
        assert self._limit is not None
        async with self._limit:  # a request may wait here past the deadline
            if deadline is not None and time.monotonic() >= deadline:
                return [_unsent(seed, request)] * n
            response = await self._client.chat.completions.create(**options)
        bound = self.count_tokens(messages, tools)
        if response.usage is None:  # nothing billed is known: count the worst case
            return _completions(response, seed, sampling.stop, request, bound, sampling.max_tokens)
        # A template longer than the allowance: widen it, so the bound holds from now on.
        self._template_tokens += max(0, response.usage.prompt_tokens - bound)
        return _completions(response, seed, sampling.stop, request)


def _unsent(seed: int | None, request: int) -> Completion:
    """A sample whose request was never sent: no text, nothing billed."""
    return Completion(text="", token_ids=(), logprobs=None, finish_reason="budget",
                      prompt_tokens=0, seed=seed, token_count=0, request=request)  # fmt: skip


class OfferingTools:
    """An `OpenAIModel` offering tools to every request (`OpenAIModel.with_tools`): the
    same name, price, connection and limits, so its calls are metered as the model's."""

    def __init__(self, model: OpenAIModel, offer: ToolOffer) -> None:
        self.model, self.offer = model, offer
        self.name, self.capabilities, self.price = model.name, model.capabilities, model.price

    def __repr__(self) -> str:
        return f"{self.model!r}.with_tools({len(self.offer.tools)} tools)"

    def count_tokens(self, prompt: Prompt) -> int:
        return self.model.count_tokens(prompt, self.offer)

    def generate(
        self,
        prompt: Prompt,
        n: int = 1,
        sampling: Sampling | None = None,
        *,
        deadline: float | None = None,
        progress: ProgressCallback | None = None,
        prune: PruneRule | None = None,
    ) -> list[Completion]:
        return self.model.generate(prompt, n, sampling, deadline=deadline, progress=progress,
                                   prune=prune, tools=self.offer)  # fmt: skip

    def with_tools(self, offer: ToolOffer) -> OfferingTools:
        return OfferingTools(self.model, offer)


def _tool_options(offer: ToolOffer) -> dict[str, Any]:
    """The request fields that offer the tools: only those the offer sets."""
    options: dict[str, Any] = {"tools": [dict(tool) for tool in offer.tools]}
    if offer.choice is not None:
        options["tool_choice"] = offer.choice
    if offer.parallel is not None:
        options["parallel_tool_calls"] = offer.parallel
    return options


def _messages(prompt: Prompt) -> list[Any]:
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)


def _message_bytes(message: Any) -> int:
    """The UTF-8 bytes of a message's text: its content, tool calls (as JSON) and the
    id of the call a tool message answers."""
    calls = message.get("tool_calls")
    return (
        len((message.get("content") or "").encode())
        + (len(json.dumps(calls).encode()) if calls else 0)
        + len((message.get("tool_call_id") or "").encode())
    )


def _tool_calls(message: Any) -> tuple[ToolCall, ...]:
    """The function calls a response message asks for (other kinds of call have none)."""
    return tuple(
        ToolCall(id=call.id, name=call.function.name, arguments=call.function.arguments)
        for call in getattr(message, "tool_calls", None) or ()
        if getattr(call, "function", None) is not None
    )


def _finish_reason(choice: Any, tool_calls: Sequence[ToolCall]) -> FinishReason:
    """A choice's finish reason in thinktank's terms: a cut text is "length"; a model
    that asked for tools says "tool_calls" (some servers say "stop" then)."""
    if choice.finish_reason == "length":
        return "length"
    if tool_calls or choice.finish_reason == "tool_calls":
        return "tool_calls"
    return "stop"


def _completions(
    response: Any,
    seed: int | None,
    stops: Sequence[str],
    request: int,
    unbilled_prompt: int = 0,
    unbilled_max_tokens: int = 0,
) -> list[Completion]:
    """The response's choices as completions, with the token counts the server bills:
    its usage, shared out among the choices (in proportion to their visible tokens
    where logprobs show them, hidden reasoning evenly). A response without usage is
    counted at ``unbilled_prompt`` and ``unbilled_max_tokens`` per choice, its worst case."""
    usage = response.usage
    choices = sorted(response.choices, key=lambda c: c.index)
    contents = [c.logprobs.content if c.logprobs and c.logprobs.content else None for c in choices]
    if usage is None:
        prompt_tokens, cached, thinking = unbilled_prompt, 0, 0
        total = unbilled_max_tokens * len(choices)
    else:
        prompt_tokens, total = usage.prompt_tokens, usage.completion_tokens
        details = getattr(usage, "prompt_tokens_details", None)
        cached = (getattr(details, "cached_tokens", None) or 0) if details else 0
        reasoning = getattr(usage, "completion_tokens_details", None)
        thinking = (getattr(reasoning, "reasoning_tokens", None) or 0) if reasoning else 0
        thinking = min(thinking, total)  # part of the completion tokens, never more
    thinking_shares = _share_out(thinking, [1] * len(choices))
    visible_shares = _share_out(total - thinking, [len(c) if c else 0 for c in contents])
    out = []
    for choice, content, hidden, visible in zip(
        choices, contents, thinking_shares, visible_shares, strict=True
    ):
        stop_reason = getattr(choice, "stop_reason", None)
        tool_calls = _tool_calls(choice.message)
        out.append(
            Completion(
                text=choice.message.content or "",
                token_ids=(),
                token_count=hidden + visible,
                logprobs=tuple(t.logprob for t in content) if content else None,
                token_bytes=tuple(_token_bytes(t) for t in content) if content else None,
                finish_reason=_finish_reason(choice, tool_calls),
                tool_calls=tool_calls,
                prompt_tokens=prompt_tokens,
                seed=seed,
                cached_tokens=cached,
                thinking_tokens=hidden,
                request=request,
                top_logprobs=(
                    tuple({t.token: t.logprob for t in (p.top_logprobs or ())} for p in content)
                    if content and any(p.top_logprobs for p in content)
                    else None
                ),
                stop_string=stop_reason if isinstance(stop_reason, str) and stop_reason in stops
                else None,
            )
        )  # fmt: skip
    return out


def _token_bytes(token: Any) -> bytes:
    """What a logprobs entry's token wrote: its ``bytes`` where the server gives them."""
    return bytes(token.bytes) if getattr(token, "bytes", None) is not None else token.token.encode()


def _share_out(total: int, weights: Sequence[int]) -> list[int]:
    """``total`` split in proportion to ``weights`` (evenly when all are 0), in whole
    tokens that add up to it exactly: what the server billed, no more, no less."""
    if not any(weights):
        weights = [1] * len(weights)
    whole = sum(weights)
    shares = [total * w // whole for w in weights]
    by_remainder = sorted(range(len(weights)), key=lambda i: -(total * weights[i] % whole))
    for i in by_remainder[: total - sum(shares)]:
        shares[i] += 1
    return shares


def _openai_options(sampling: Sampling) -> dict[str, Any]:
    """OpenAI's optional parameters that ``sampling`` sets (the seed is per request)."""
    options = {name: getattr(sampling, name) for name in _OPENAI_OPTIONS if _is_set(sampling, name)}
    if sampling.stop:
        options["stop"] = list(sampling.stop)
    if sampling.logit_bias:
        options["logit_bias"] = {str(token): bias for token, bias in sampling.logit_bias}
    return options


def _vllm_options(sampling: Sampling) -> dict[str, Any]:
    """vLLM's parameters beyond OpenAI's that ``sampling`` sets; none at their defaults,
    so that a plain OpenAI endpoint never sees one."""
    return {name: getattr(sampling, name) for name in _VLLM_OPTIONS if _is_set(sampling, name)}


def _is_set(sampling: Sampling, name: str) -> bool:
    return getattr(sampling, name) != getattr(_DEFAULTS, name)


def _sent_options(sampling: Sampling) -> list[str]:
    """The names of the sampling options a request with ``sampling`` carries."""
    seed = ["seed"] if sampling.seed is not None else []
    return [*seed, *_openai_options(sampling), *_vllm_options(sampling)]


def _named_options(error: openai.APIStatusError, sampling: Sampling) -> list[str]:
    """The options we sent that a 4xx reply names (its message, ``param`` or body)."""
    if not 400 <= error.status_code < 500:
        return []
    said = f"{error.message} {error.param} {error.body}"
    return [name for name in _sent_options(sampling) if re.search(rf"\b{name}\b", said)]


def _describe(error: BaseException, sampling: Sampling) -> str:
    if isinstance(error, openai.APIConnectionError):
        return f"cannot reach the endpoint ({error.__cause__ or error})"
    if isinstance(error, openai.APIStatusError):
        said = f"HTTP {error.status_code}: {_brief(error.message)}"
        named = _named_options(error, sampling)
        extras = list(_vllm_options(sampling))
        if not named and error.status_code == 400 and extras:
            return (
                f"the endpoint rejected the request ({said}); it may not take vLLM's "
                f"{', '.join(extras)}, sent as extra body fields: leave "
                f"{_at_defaults(extras)} to send OpenAI's parameters only"
            )
        if named:
            return (
                f"the endpoint rejected {', '.join(named)} ({said}): leave "
                f"{_at_defaults(named)} for this endpoint"
            )
        return said
    return str(error)


def _at_defaults(names: Sequence[str]) -> str:
    """``Sampling`` options named with their defaults: "top_k=0, min_p=0.0"."""
    return ", ".join(f"{name}={getattr(_DEFAULTS, name)!r}" for name in names)


def _brief(message: str, limit: int = 200) -> str:
    return message if len(message) <= limit else message[: limit - 3] + "..."


def parse_spec(spec: str) -> tuple[str, str, str]:
    """``openai:MODEL@BASE_URL[?key_env=NAME]`` -> (model, base URL, key variable)."""
    rest = spec.removeprefix("openai:")
    for scheme in ("@https://", "@http://"):
        model, found, url = rest.partition(scheme)
        if found and model:
            url, _, query = (scheme[1:] + url).partition("?key_env=")
            return model, url, query or "OPENAI_API_KEY"
    raise ValueError(f"model spec {spec!r}: expected openai:MODEL@http(s)://HOST[:PORT]/v1")
