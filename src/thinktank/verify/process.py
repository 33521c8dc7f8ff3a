"""Process rewards: values of partial solutions, for search.

A process reward turns (problem, partials) into one value per partial in [0, 1]:
how likely the partial is on its way to a right answer. None sees the ground
truth. Spec strings:

- ``self-eval``: the solving model's P("Yes") to "is your solution correct so
  far?" asked after its partial reply (one token per partial, all in one batch).
- ``rollout[N][@VERIFIER]``: complete each partial N times (default 2) and
  score the completions with an inference-time verifier (default
  ``agreement``: the share of all rollouts of the batch that give the same
  answer; ``public-tests`` for code). The value is the mean score of the
  partial's rollouts; a finished partial is its own single rollout.
- ``prm@URL[#MODEL]``: an external process reward model behind an
  OpenAI-compatible server with vLLM's pooling API (e.g. ``vllm serve
  Qwen/Qwen2.5-Math-PRM-7B``); see `RemoteProcessReward` for the request. On a
  thinktank server, ``prm@NAME`` names an endpoint its operator configured.

`parse_process_reward` checks a spec's shape; `thinktank.resolver.Resolver` builds it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol

import httpx

from thinktank.errors import ThinktankError
from thinktank.models.base import Completion, Model, Prompt, Sampling
from thinktank.plugins import plugin_names
from thinktank.problem import Problem
from thinktank.prompts import build_prompt, continuation_prompt, stop_strings
from thinktank.solution import Candidate, Partial
from thinktank.verify.verifiers import (
    Agreement,
    ScoringContext,
    Verifier,
    parse_verifier,
    yes_probability,
)


class ProcessReward(Protocol):
    name: ClassVar[str]

    def values(
        self, problem: Problem, partials: Sequence[Partial], ctx: ScoringContext
    ) -> list[float]:
        """One value in [0, 1] per partial; higher means more likely to end right."""
        ...


class SelfEvalReward:
    """The solving model's P("Yes") that its partial solution is correct so far.

    The question follows the partial reply in the same conversation, so its
    prompt starts with the prompt that wrote the reply: on the embedded backend
    the prefix cache serves all but the question. P(yes) / (P(yes) + P(no)) from
    the top log-probabilities of one greedy token; 0.5 for the empty partial and
    when neither word is among the top tokens, 0 when the budget refuses the call.
    """

    name: ClassVar[str] = "self-eval"
    QUESTION = "Is your solution correct so far? Reply Yes or No."

    def values(
        self, problem: Problem, partials: Sequence[Partial], ctx: ScoringContext
    ) -> list[float]:
        judged = [p for p in partials if p.steps]
        greedy = Sampling(temperature=0.0, max_tokens=1, top_logprobs=20)
        asked = [(self.prompt(problem, ctx.model, p), 1, greedy) for p in judged]
        results = iter(ctx.at_stage("reward").generate_each(asked))
        values = []
        for partial in partials:
            if not partial.steps:
                values.append(0.5)
                continue
            completions = next(results)
            top = completions[0].top_logprobs if completions else None
            values.append(yes_probability(top[0]) if top else 0.0)
        return values

    def prompt(self, problem: Problem, model: Model, partial: Partial) -> Prompt:
        """The conversation so far, then the question."""
        prompt = build_prompt(problem, model)
        if isinstance(prompt, str):
            return f"{prompt}{partial.text}\n\nQuestion: {self.QUESTION}\nAnswer:"
        return [
            *prompt,
            {"role": "assistant", "content": partial.text},
            {"role": "user", "content": self.QUESTION},
        ]


class RolloutReward:
    """Complete each partial ``n`` times; its value is its rollouts' mean verifier score.

    Rollouts sample like the search (``sampling``), up to the search's whole
    ``max_tokens``. The verifier scores all rollouts of the batch together, so
    ``agreement`` asks how many rollouts of *all* partials reach the same answer.
    """

    name: ClassVar[str] = "rollout"

    def __init__(self, sampling: Sampling, n: int = 2, verifier: Verifier | None = None) -> None:
        if n < 1:
            raise ValueError("rollout count must be >= 1")
        self.sampling, self.n, self.verifier = sampling, n, verifier or Agreement()

    def values(
        self, problem: Problem, partials: Sequence[Partial], ctx: ScoringContext
    ) -> list[float]:
        open_ = [p for p in partials if not p.finished]
        stops = self.sampling.stop + stop_strings(problem, ctx.model)
        rolling = ctx.at_stage("reward")
        counts = [self.n] * len(open_)
        results = iter(
            continue_partials(problem, rolling, open_, counts, self.sampling.with_(stop=stops))
        )
        owners: list[int] = []
        rollouts: list[Candidate] = []
        for owner, partial in enumerate(partials):
            if partial.finished:
                ends = [partial]
            else:
                ends = [
                    partial.extend(
                        c.text, finished=True, tokens=c.completion_tokens,
                        logprob=sum(c.logprobs or ()),
                    )
                    for c in next(results)
                ]  # fmt: skip
            for end in ends:
                owners.append(owner)
                rollouts.append(Candidate.from_partial(end, problem.kind))
        scores = self.verifier.score(problem, rollouts, ctx) if rollouts else []
        totals, counts = [0.0] * len(partials), [0] * len(partials)
        for owner, score in zip(owners, scores, strict=True):
            totals[owner] += score
            counts[owner] += 1
        # A partial whose rollouts the budget refused is unverified: never preferred.
        return [t / c if c else 0.0 for t, c in zip(totals, counts, strict=True)]


class RemoteProcessReward:
    """A process reward model served over HTTP with vLLM's pooling API.

    For each partial thinktank sends::

        POST {url}/pooling
        {"model": MODEL,
         "messages": [...CONTEXT, {"role": "user", "content": QUESTION},
                      {"role": "assistant", "content": STEP1 SEP STEP2 SEP ...}]}

    (CONTEXT: the conversation before the question, `Problem.context`),
    where SEP (``separator``, by default Qwen2.5-Math-PRM's ``<extra_0>``) follows
    every step, and reads ``data[0].data``: one row per step, either
    ``[p_bad, p_good]`` (a step classifier) or one score. The partial's value is
    the last step's ``p_good`` (a score outside [0, 1] is taken as a logit).
    MODEL defaults to the first model ``GET {url}/v1/models`` lists. These calls
    are not model generations: the meter does not count them.
    """

    name: ClassVar[str] = "prm"

    def __init__(self, url: str, model: str | None = None, *, separator: str = "<extra_0>") -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"process reward model {url!r}: the URL must start with http(s)://")
        self.url = url.rstrip("/").removesuffix("/v1")
        self.model = model
        self.separator = separator
        self._client = httpx.Client(timeout=120)

    def values(
        self, problem: Problem, partials: Sequence[Partial], ctx: ScoringContext
    ) -> list[float]:
        return [self._value(problem, p) if p.steps else 0.5 for p in partials]

    def _value(self, problem: Problem, partial: Partial) -> float:
        reply = "".join(step.strip() + self.separator for step in partial.steps)
        body = {
            "model": self._model_name(),
            "messages": [*problem.messages(), {"role": "assistant", "content": reply}],
        }
        response = self._request("POST", "/pooling", json=body)
        try:
            rows = response["data"][0]["data"]
            last = rows[-1] if isinstance(rows, list) else rows
            score = float(last[-1] if isinstance(last, list) else last)
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise ThinktankError(
                f"process reward model at {self.url}: unexpected response {response!r:.200} "
                f"({type(exc).__name__}: {exc})"
            ) from None
        return score if 0 <= score <= 1 else 1 / (1 + math.exp(-score))

    def _model_name(self) -> str:
        if self.model is None:
            listing = self._request("GET", "/v1/models")
            try:
                self.model = str(listing["data"][0]["id"])
            except (KeyError, IndexError, TypeError) as exc:
                raise ThinktankError(
                    f"process reward model at {self.url}: no model listed; name one as "
                    f"prm@URL#MODEL ({type(exc).__name__}: {exc})"
                ) from None
        return self.model

    def _request(self, method: str, path: str, **kwargs: object) -> dict:
        try:
            response = self._client.request(method, self.url + path, **kwargs)
            response.raise_for_status()
            return response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise ThinktankError(f"process reward model at {self.url}{path}: {exc}") from None


def continue_partials(
    problem: Problem,
    ctx: ScoringContext,
    partials: Sequence[Partial],
    counts: Sequence[int],
    sampling: Sampling,
    *,
    step_tokens: int | None = None,
) -> list[list[Completion]]:
    """``counts[i]`` continuations of ``partials[i]``'s reply, all calls at once. Each
    writes what is left of ``sampling.max_tokens`` after the partial's own tokens,
    at most ``step_tokens`` (if given)."""
    calls = []
    for partial, count in zip(partials, counts, strict=True):
        room = sampling.max_tokens - partial.tokens
        if step_tokens is not None:
            room = min(room, step_tokens)
        prompt = continuation_prompt(problem, ctx.model, partial.text)
        calls.append((prompt, count, sampling.with_(max_tokens=max(1, room))))
    return ctx.generate_each(calls)


_ROLLOUT = re.compile(r"rollout(\d*)(?:@(.+))?")


@dataclass(frozen=True)
class ProcessRewardSpec:
    """A parsed process reward spec: ``name`` (self-eval, rollout or prm) with, for
    rollout, its count and verifier spec; for prm, its endpoint (``URL`` or, on a
    server, the name the operator gave one) and model."""

    name: str
    count: int = 2
    verifier: str = "agreement"
    endpoint: str = ""
    model: str | None = None


def parse_process_reward(spec: str) -> ProcessRewardSpec:
    """``self-eval`` | ``rollout[N][@VERIFIER]`` | ``prm@URL[#MODEL]``, checked for shape
    only: nothing is loaded or contacted (a `Resolver` builds it). A plugin's process
    reward is named as it declares."""
    if spec == SelfEvalReward.name or spec in plugin_names("process-reward"):
        return ProcessRewardSpec(spec)
    if match := _ROLLOUT.fullmatch(spec):
        count, verifier = match.groups()
        if count and int(count) < 1:
            raise ValueError("rollout count must be >= 1")
        verifier = verifier or "agreement"
        parse_verifier(verifier)
        return ProcessRewardSpec("rollout", int(count or 2), verifier)
    if spec.startswith("prm@") and len(spec) > 4:
        endpoint, _, model = spec[4:].partition("#")
        return ProcessRewardSpec("prm", endpoint=endpoint, model=model or None)
    raise ValueError("value must be self-eval, rollout[N][@VERIFIER] or prm@URL[#MODEL]")
