"""What one request to the server may ask for: set by the operator at start-up.

A request's budget is clamped to ``tokens`` and ``seconds`` (the meter holds it as
a hard cap: they also cap how long a request holds the model), and every integer
option of its strategy is checked against the limit of its kind: parallel width
(``samples``), sequential depth (``steps``) or tokens of one sample or step
(``sample_tokens``). An option over its limit is refused, never silently lowered.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from thinktank.errors import SpecError
from thinktank.meter import Budget
from thinktank.strategies import Strategy
from thinktank.verify.process import parse_process_reward

LimitKind = Literal["samples", "steps", "sample_tokens"]

#: The kind of each integer option of the built-in strategies. An option not listed
#: (a plugin's) counts as samples, the tightest, so that it is limited too.
OPTION_KINDS: dict[str, LimitKind] = {
    **dict.fromkeys(("n", "max_n", "probe", "warmup", "batch", "k", "approaches", "beams",
                     "expand", "particles", "rollouts", "branching", "agents", "proposers",
                     "paths", "workers", "clusters", "top_logprobs"), "samples"),
    **dict.fromkeys(("rounds", "layers", "iterations", "max_steps", "max_expansions"), "steps"),
    **dict.fromkeys(("max_tokens", "step_tokens", "summary_tokens", "window", "interval",
                     "check_every", "final_tokens"), "sample_tokens"),
}  # fmt: skip

#: The `thinktank serve` option that sets each limit.
FLAGS = {"tokens": "--max-request-tokens", "seconds": "--max-request-seconds",
         "samples": "--max-request-samples", "steps": "--max-request-steps",
         "sample_tokens": "--max-sample-tokens"}  # fmt: skip
_UNITS = {"samples": "samples", "steps": "steps", "sample_tokens": "tokens per sample or step"}


@dataclass(frozen=True)
class RequestLimits:
    #: Every token one request spends, all its calls and samples together.
    tokens: int = 32_768
    #: Wall time one request may hold the model.
    seconds: float = 120.0
    #: Parallel width: ``n``, samples, agents, beams, particles, rollouts, workers...
    samples: int = 64
    #: Sequential depth: rounds, layers, iterations, steps, expansions.
    steps: int = 32
    #: Tokens of one sample or one step (``max_tokens``, ``step_tokens``...).
    sample_tokens: int = 8192

    def __post_init__(self) -> None:
        for name, value in dataclasses.asdict(self).items():
            if value <= 0:
                raise ValueError(f"request limit {name} must be positive, got {value}")

    def budget(self, asked: Budget | None) -> Budget:
        """The request's budget: what it asked for, within the server's caps."""
        asked = asked or Budget()
        tokens = min(asked.max_tokens or self.tokens, self.tokens)
        seconds = min(asked.max_seconds or self.seconds, self.seconds)
        return Budget(max_tokens=tokens, max_cost_usd=asked.max_cost_usd, max_seconds=seconds)

    def check_plain(self, n: int, max_tokens: int, prompt_tokens: int) -> None:
        """n samples of at most max_tokens each after the prompt, before any is drawn
        (so that the budget never has to drop samples the request asked for)."""
        self._within("n", n, "samples")
        self._within("max_tokens", max_tokens, "sample_tokens")
        if prompt_tokens + n * max_tokens > self.tokens:
            raise SpecError(
                f"the prompt ({prompt_tokens} tokens) and n x max_tokens = {n * max_tokens} "
                f"are over this server's limit of {self.tokens} tokens per request "
                f"({FLAGS['tokens']})"
            )

    def check_answers(self, n: int) -> None:
        """``n`` strategy answers to one request: each as wide as its strategy, so the
        count of answers is held to the samples limit too."""
        self._within("n", n, "samples")

    def check_strategy(self, strategy: Strategy) -> None:
        """Every integer option within its kind's limit; rollout counts are samples."""
        for field in dataclasses.fields(strategy):  # type: ignore[arg-type]
            value = getattr(strategy, field.name)
            if field.init and isinstance(value, int) and not isinstance(value, bool):
                self._within(field.name, value, OPTION_KINDS.get(field.name, "samples"))
        for kind, spec in strategy.references():
            reward = parse_process_reward(spec) if kind == "process-reward" else None
            if reward is not None and reward.name == "rollout":
                self._within("rollouts of value", reward.count, "samples")

    def _within(self, option: str, value: int, kind: LimitKind) -> None:
        limit = getattr(self, kind)
        if value > limit:
            raise SpecError(
                f"{option}={value} is over this server's limit of {limit} {_UNITS[kind]} "
                f"({FLAGS[kind]})"
            )
