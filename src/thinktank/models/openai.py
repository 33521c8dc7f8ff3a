"""A remote backend: any OpenAI-compatible chat-completions endpoint.

Model spec ``openai:MODEL@BASE_URL`` (e.g. ``openai:Qwen/Qwen3-8B@http://localhost:8000/v1``).
The API key is read from the environment variable ``api_key_env`` (default
``OPENAI_API_KEY``; ``?key_env=NAME`` in the spec names another) and is never
logged; local servers that need none get a placeholder.

Requests run on one asyncio loop (a background thread) under a concurrency
limit; the official client retries 429, 5xx and dropped connections with
exponential backoff and enforces timeouts. ``n`` samples are asked for with
the server's ``n`` when it honours it, else as parallel single requests (and a
seed per sample); if some of them fail, the others are kept. Usage is the
server's own count.
"""

from __future__ import annotations

import asyncio
import math
import os
import threading
from collections.abc import Sequence
from typing import Any

import openai

from thinktank.errors import ThinktankError
from thinktank.models.base import (
    Capabilities,
    Completion,
    Price,
    ProgressCallback,
    Prompt,
    PruneRule,
    Sampling,
)

#: Characters per token, to estimate a prompt's size before sending it (budgets).
_CHARS_PER_TOKEN = 4


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
        self.capabilities = Capabilities(chat=True, logprobs=True, batched=False)
        self.price = price or Price(0.0, 0.0)
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
        self._loop = asyncio.new_event_loop()
        self._limit: asyncio.Semaphore | None = None
        threading.Thread(target=self._loop.run_forever, name=self.name, daemon=True).start()

    def __repr__(self) -> str:
        return f"OpenAIModel(model={self.model!r}, base_url={self.base_url!r})"

    def count_tokens(self, prompt: Prompt) -> int:
        """An estimate (no tokenizer here); the ledger records the server's own count."""
        if isinstance(prompt, str):
            return max(1, math.ceil(len(prompt) / _CHARS_PER_TOKEN))
        text = "".join(m["content"] for m in prompt)
        return math.ceil(len(text) / _CHARS_PER_TOKEN) + 4 * len(prompt)  # + role markers

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
        """``n`` samples; ``prune`` cannot stop a remote sample early and is ignored."""
        sampling = sampling or Sampling()
        if n < 1:
            raise ValueError("n must be >= 1")
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        future = asyncio.run_coroutine_threadsafe(
            self._generate(list(messages), n, sampling), self._loop
        )
        try:
            completions = future.result()
        except openai.OpenAIError as exc:
            raise ThinktankError(f"{self.name}: {_describe(exc)}") from None
        except BaseException:
            future.cancel()
            raise
        if progress is not None:
            progress(sum(c.completion_tokens for c in completions))
        return completions

    async def _generate(self, messages: list[Any], n: int, sampling: Sampling) -> list[Completion]:
        if self._limit is None:
            self._limit = asyncio.Semaphore(self._concurrency)
        completions: list[Completion] = []
        errors: list[BaseException] = []
        if n > 1 and self._server_n is not False and not sampling.sample_offset:
            try:
                completions = await self._request(messages, n, sampling, sampling.seed)
            except openai.BadRequestError as exc:  # taken as "no n here": ask one by one
                errors.append(exc)
            self._server_n = len(completions) == n
        missing = n - len(completions)
        if missing:
            first = sampling.sample_offset + len(completions)
            seeds = [
                None if sampling.seed is None else sampling.seed + first + i for i in range(missing)
            ]
            results = await asyncio.gather(
                *(self._request(messages, 1, sampling, seed) for seed in seeds),
                return_exceptions=True,
            )
            for result in results:
                if isinstance(result, BaseException):
                    errors.append(result)
                else:
                    completions.extend(result)
        if not completions:
            raise ThinktankError(f"{self.name}: {_describe(errors[-1])}") from None
        return completions

    async def _request(
        self, messages: list[Any], n: int, sampling: Sampling, seed: int | None
    ) -> list[Completion]:
        extra: dict[str, Any] = {}
        if messages[-1]["role"] == "assistant":  # continue a partial reply (vLLM's flags)
            extra = {"continue_final_message": True, "add_generation_prompt": False}
        options: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "n": n,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "max_tokens": sampling.max_tokens,
            "logprobs": True,
            "extra_body": extra or None,
        }
        if sampling.stop:
            options["stop"] = list(sampling.stop)
        if seed is not None:
            options["seed"] = seed
        if sampling.top_logprobs:
            options["top_logprobs"] = sampling.top_logprobs
        assert self._limit is not None
        async with self._limit:
            response = await self._client.chat.completions.create(**options)
        return _completions(response, seed, sampling.stop)


def _completions(response: Any, seed: int | None, stops: Sequence[str]) -> list[Completion]:
    """The response's choices as completions, with the server's token counts."""
    usage = response.usage
    prompt_tokens = usage.prompt_tokens if usage else 0
    details = getattr(usage, "prompt_tokens_details", None) if usage else None
    cached = (getattr(details, "cached_tokens", None) or 0) if details else 0
    choices = sorted(response.choices, key=lambda c: c.index)
    total = usage.completion_tokens if usage else 0
    reasoning = getattr(usage, "completion_tokens_details", None) if usage else None
    thinking = (getattr(reasoning, "reasoning_tokens", None) or 0) if reasoning else 0
    out = []
    for i, choice in enumerate(choices):
        content = choice.logprobs.content if choice.logprobs and choice.logprobs.content else None
        if content is not None:
            tokens = len(content)
        else:  # no per-choice count: share the call's total out
            tokens = total // len(choices) + (i < total % len(choices))
        stop_reason = getattr(choice, "stop_reason", None)
        out.append(
            Completion(
                text=choice.message.content or "",
                token_ids=(),
                token_count=tokens,
                logprobs=tuple(t.logprob for t in content) if content else None,
                finish_reason="length" if choice.finish_reason == "length" else "stop",
                prompt_tokens=prompt_tokens,
                seed=seed,
                cached_tokens=cached,
                # The call's reasoning tokens, shared out like an unknown completion count.
                thinking_tokens=thinking // len(choices) + (i < thinking % len(choices)),
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


def _describe(error: BaseException) -> str:
    if isinstance(error, openai.APIConnectionError):
        return f"cannot reach the endpoint ({error.__cause__ or error})"
    if isinstance(error, openai.APIStatusError):
        return f"HTTP {error.status_code}: {error.message}"
    return str(error)


def parse_spec(spec: str) -> tuple[str, str, str]:
    """``openai:MODEL@BASE_URL[?key_env=NAME]`` -> (model, base URL, key variable)."""
    rest = spec.removeprefix("openai:")
    for scheme in ("@https://", "@http://"):
        model, found, url = rest.partition(scheme)
        if found and model:
            url, _, query = (scheme[1:] + url).partition("?key_env=")
            return model, url, query or "OPENAI_API_KEY"
    raise ValueError(f"model spec {spec!r}: expected openai:MODEL@http(s)://HOST[:PORT]/v1")
