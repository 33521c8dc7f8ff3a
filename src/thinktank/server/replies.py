"""The bodies of the server's replies: OpenAI's chat and legacy completion objects,
each choice with the tokens it actually wrote, and thinktank's ``thinktank`` object.

Per-token fields name the token written at each position (its text, its UTF-8
``bytes``) with its top alternatives; the tokens listed are those whose text the
reply holds, so they join to it: an end-of-turn token and the tokens of a stop
string the text stops before are left out (the last one cut to what was written).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Literal

from thinktank.meter import Meter
from thinktank.models.base import Completion
from thinktank.server.tools import tool_call_fields
from thinktank.solution import Candidate, Solution

#: A completion's finish reason as OpenAI names it (any other: "stop"): a text cut by
#: ``max_tokens`` or by the budget is "length".
FINISH_REASONS = {"length": "length", "budget": "length", "tool_calls": "tool_calls"}


def finish_reason(reason: str) -> str:
    return FINISH_REASONS.get(reason, "stop")


@dataclass(frozen=True)
class WrittenToken:
    """One token of a reply: what it wrote, its logprob and its top alternatives."""

    data: bytes
    logprob: float
    top: dict[str, float]

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


def written_tokens(completion: Completion) -> list[WrittenToken] | None:
    """The tokens that wrote ``completion.text``, in order (None without logprobs).
    A backend that does not say what each token wrote gives empty texts."""
    if completion.logprobs is None:
        return None
    count = len(completion.logprobs)
    tops = completion.top_logprobs or ({},) * count
    if completion.token_bytes is None:
        return [
            WrittenToken(b"", lp, dict(top))
            for lp, top in zip(completion.logprobs, tops, strict=False)
        ]
    length, used, tokens = len(completion.text.encode()), 0, []
    for data, logprob, top in zip(completion.token_bytes, completion.logprobs, tops, strict=False):
        if used >= length:
            break  # what follows wrote nothing of the text (end of turn, a stop string)
        tokens.append(WrittenToken(data[: length - used], logprob, dict(top)))
        used += len(data)
    return tokens


def chat_choice(index: int, completion: Completion, logprobs: bool) -> dict[str, Any]:
    """A chat choice for one sample (``logprobs``: with its tokens, if it has any)."""
    tokens = written_tokens(completion) if logprobs else None
    content = None
    if tokens is not None:
        content = [{"token": t.text, "logprob": t.logprob, "bytes": list(t.data),
                    "top_logprobs": [{"token": alt, "logprob": value, "bytes": list(alt.encode())}
                                     for alt, value in t.top.items()]}
                   for t in tokens]  # fmt: skip
    return {
        "index": index,
        "message": {
            "role": "assistant",
            "content": completion.text,
            **tool_call_fields(completion),
        },
        "finish_reason": finish_reason(completion.finish_reason),
        "stop_reason": completion.stop_string,  # vLLM's field: which stop string ended it
        "logprobs": None if content is None else {"content": content},
    }


def text_choice(index: int, completion: Completion, logprobs: int | None) -> dict[str, Any]:
    """A legacy completion choice (``logprobs``: how many alternatives per token; None
    for no token fields)."""
    tokens = written_tokens(completion) if logprobs is not None else None
    fields = None
    if tokens is not None:
        offsets, written = [], b""
        for token in tokens:
            offsets.append(len(written.decode("utf-8", errors="ignore")))
            written += token.data
        fields = {"tokens": [t.text for t in tokens],
                  "token_logprobs": [t.logprob for t in tokens],
                  "top_logprobs": [t.top for t in tokens], "text_offset": offsets}  # fmt: skip
    return {
        "index": index,
        "text": completion.text,
        "finish_reason": finish_reason(completion.finish_reason),
        "stop_reason": completion.stop_string,
        "logprobs": fields,
    }


@dataclass(frozen=True)
class StrategyAnswer:
    """One strategy answer as a reply shows it: the winning sample's text, why it
    ended, and the ``thinktank`` details of the choice."""

    text: str
    finish_reason: str
    details: dict[str, Any]

    @classmethod
    def of(
        cls,
        solution: Solution,
        model: str,
        called: Collection[str],
        *,
        list_candidates: bool,
        exhausted: bool,
    ) -> StrategyAnswer:
        """``solution`` on ``model`` (by name); ``called``: the names of the models the
        run called, so a candidate whose worker is one of them is credited to it (a
        cascade's, a router's); ``list_candidates``: candidates as a list, not a count;
        ``exhausted``: the budget cut the run short (its reason when no sample won)."""
        # The last sample giving the answer: a cascade's are its last model's, which answered.
        giving = [c for c in solution.candidates if c.answer == solution.answer]
        winner = giving[-1] if giving else None
        text = winner.text if winner else (solution.answer or "")
        if winner is not None:
            reason = finish_reason(winner.finish_reason)
        else:
            reason = "length" if exhausted else "stop"

        def model_of(candidate: Candidate | None) -> str:
            worker = candidate.worker if candidate else None
            return worker if worker in called else model

        candidates: int | list[dict[str, Any]] = len(solution.candidates)
        if list_candidates:
            candidates = [{"text": c.text, "answer": c.answer, "score": c.score,
                           "mean_logprob": c.mean_logprob, "finish_reason": c.finish_reason,
                           "completion_tokens": c.completion_tokens, "worker": c.worker,
                           "model": model_of(c)} for c in solution.candidates]  # fmt: skip
        details = {"answer": solution.answer, "votes": solution.votes,
                   "model": model_of(winner), "candidates": candidates,
                   "candidate_count": len(solution.candidates)}  # fmt: skip
        return cls(text, reason, details)

    def choice(self, index: int) -> dict[str, Any]:
        return {"index": index, "message": {"role": "assistant", "content": self.text},
                "finish_reason": self.finish_reason, "logprobs": None}  # fmt: skip


def reply(
    kind: Literal["chat.completion", "text_completion"],
    choices: list[dict[str, Any]],
    meter: Meter,
    extra: dict[str, Any],
) -> dict[str, Any]:
    """The response body: ``choices``, ``usage`` (every token the meter counted) and
    the ``thinktank`` object (``extra``, then cost, calls, seconds, usage by model and
    by stage)."""
    usage = meter.usage
    body: dict[str, Any] = {
        "id": f"{'chatcmpl' if kind == 'chat.completion' else 'cmpl'}-{uuid.uuid4().hex}",
        "object": kind,
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
    by_model = {name: own.to_dict() for name, own in meter.usage_by_model.items()}
    by_stage = {stage: own.to_dict() for stage, own in meter.usage_by_stage.items()}
    body["thinktank"] = {**extra, "run_id": meter.run_id, "cost_usd": usage.cost_usd,
                         "calls": usage.calls, "seconds": usage.seconds,
                         "usage_by_model": by_model, "usage_by_stage": by_stage}  # fmt: skip
    return body
