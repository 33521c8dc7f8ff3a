"""What a strategy returns: the answer, every candidate behind it, and what it cost."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from thinktank.meter import Usage
from thinktank.models.base import Completion
from thinktank.problem import Kind
from thinktank.verify import extract_answer


@dataclass(frozen=True)
class Candidate:
    """One sampled solution and the answer extracted from it."""

    text: str
    answer: str | None
    finish_reason: str
    completion_tokens: int
    #: Log-probability of the whole sample, and per token: confidences that
    #: weighted votes use. None when the backend gives no logprobs.
    logprob: float | None = None
    mean_logprob: float | None = None
    #: A verifier's score, when a strategy used one.
    score: float | None = None
    #: Who drew it, for strategies that pool several kinds of sampler (a prompt
    #: variant, a temperature, a model): truth inference estimates each one's
    #: reliability.
    worker: str | None = None

    @classmethod
    def from_completion(
        cls, completion: Completion, kind: Kind, worker: str | None = None
    ) -> Candidate:
        logprobs = completion.logprobs
        return cls(
            worker=worker,
            text=completion.text,
            answer=extract_answer(completion.text, kind),
            finish_reason=completion.finish_reason,
            completion_tokens=completion.completion_tokens,
            logprob=sum(logprobs) if logprobs else None,
            mean_logprob=sum(logprobs) / len(logprobs) if logprobs else None,
        )

    @classmethod
    def from_partial(cls, partial: Partial, kind: Kind, score: float | None = None) -> Candidate:
        """A search's (finished) partial solution as a candidate."""
        return cls(
            text=partial.text,
            answer=extract_answer(partial.text, kind),
            finish_reason="stop" if partial.finished else "length",
            completion_tokens=partial.tokens,
            logprob=partial.logprob,
            mean_logprob=partial.logprob / partial.tokens if partial.tokens else None,
            score=score,
        )


@dataclass(frozen=True, eq=False)
class Partial:
    """A partial solution: the steps of the model's reply written so far.

    Each step keeps the delimiter that ended it, so ``text`` is exactly what the
    model continues from. Partials are compared by identity: two that read the
    same are still two particles, two beams.
    """

    steps: tuple[str, ...] = ()
    #: The reply is complete (the model ended it, or it ran out of steps or tokens).
    finished: bool = False
    #: Completion tokens behind these steps, and their total log-probability.
    tokens: int = 0
    logprob: float = 0.0
    #: The partial this one extends by one step (None for the empty root).
    parent: Partial | None = None

    @property
    def text(self) -> str:
        return "".join(self.steps)

    def extend(self, step: str, *, finished: bool, tokens: int, logprob: float) -> Partial:
        """This partial plus one step of ``tokens`` tokens."""
        return Partial(
            steps=(*self.steps, step),
            finished=finished,
            tokens=self.tokens + tokens,
            logprob=self.logprob + logprob,
            parent=self,
        )


@dataclass
class Solution:
    """The result of `Strategy.solve`; `thinktank.solve` fills in usage and run identity."""

    answer: str | None
    candidates: list[Candidate]
    #: Votes per answer (display form), in the order the aggregator ranked them.
    votes: dict[str, float] = field(default_factory=dict)
    usage: Usage = field(default_factory=Usage)
    budget_exhausted: bool = False
    strategy: str = ""
    model: str = ""
    problem_id: str = ""
    run_id: str = ""
    trace: list[dict[str, Any]] = field(default_factory=list)
    #: Further answers, best first, for strategies that answer with k guesses
    #: (pass@k output). A benchmark's accuracy scores ``answer`` alone, the one
    #: committed to; whether any guess is right is reported apart (pass@k output).
    alternatives: list[str] = field(default_factory=list)

    @property
    def answers(self) -> list[str | None]:
        """The answer, then the alternatives."""
        return [self.answer, *self.alternatives]

    def to_dict(self) -> dict[str, Any]:
        return {
            "answer": self.answer,
            "usage": self.usage.to_dict(),
            "candidates": [asdict(c) for c in self.candidates],
            "votes": self.votes,
            "budget_exhausted": self.budget_exhausted,
            "strategy": self.strategy,
            "model": self.model,
            "problem_id": self.problem_id,
            "run_id": self.run_id,
            "trace": self.trace,
            "alternatives": self.alternatives,
        }
