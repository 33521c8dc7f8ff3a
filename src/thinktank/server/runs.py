"""Each server request as a run of the ledger (command ``serve``), as ``thinktank solve``
makes one: its strategy (``plain`` for plain sampling), the served model it named, its
question, its client, its answer, and its transcripts, beside the calls it paid for.
So ``thinktank ledger --command serve`` and ``thinktank logs`` show what was asked of
the server, by whom, and what it cost.

A run starts when its request's work gets its turn (a request refused before that
leaves no run) and is finished however that work ends: with its answer, or with
none when the work failed or its client went away.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from fastapi import Request

from thinktank.ledger import Ledger
from thinktank.ledger_texts import Transcript
from thinktank.meter import Meter
from thinktank.models.base import Completion
from thinktank.server.schema import Message, SamplingRequest
from thinktank.solution import Candidate, Solution

#: The most of a request's ``user`` field that the ledger keeps as its client.
MAX_CLIENT_CHARS = 64


@dataclass(frozen=True)
class Answered:
    """What a request's work built: the reply, and the solutions (one per strategy
    answer; plain samples as one) that its run's transcripts keep."""

    reply: dict[str, Any]
    solutions: list[Solution]


@dataclass(frozen=True)
class RequestRun:
    """One request as the ledger's run (``ledger`` None: none is kept)."""

    ledger: Ledger | None
    #: The strategy's spec, or ``plain``.
    strategy: str
    #: The served model the request named.
    model: str
    question: str
    #: The request's ``user`` field, else the client's address (never its API key).
    client: str | None
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])

    def doing(self, work: Callable[..., Answered]) -> Callable[..., dict[str, Any]]:
        """``work(meter, ...)`` as this run: started before it, finished after it
        (also when it raises), its solutions stored as transcripts; returns the reply."""

        def run(meter: Meter, *rest: Any) -> dict[str, Any]:
            if self.ledger is None:
                return work(meter, *rest).reply
            self.ledger.start_run(self.run_id, "serve", strategy=self.strategy,
                                  model=self.model, question=self.question,
                                  client=self.client)  # fmt: skip
            answered: Answered | None = None
            try:
                answered = work(meter, *rest)
            finally:
                self._finish(self.ledger, meter, answered)
            return answered.reply

        return run

    def _finish(self, ledger: Ledger, meter: Meter, answered: Answered | None) -> None:
        """The run's answer (the first solution's; None without one) and transcripts:
        a strategy's answer i > 0 under problem ``RUN_ID:i``."""
        solutions = answered.solutions if answered is not None else []
        exhausted = meter.exhausted or any(s.budget_exhausted for s in solutions)
        answer = solutions[0].answer if solutions else None
        ledger.finish_run(self.run_id, answer=answer, budget_exhausted=exhausted)
        for index, solution in enumerate(solutions):
            problem_id = self.run_id if index == 0 else f"{self.run_id}:{index}"
            solved = replace(solution, strategy=self.strategy, model=self.model,
                             problem_id=problem_id, run_id=self.run_id)  # fmt: skip
            ledger.record_transcript(self.run_id, self.strategy, self.model, problem_id,
                                     Transcript(self.question, None, solved.to_dict()))  # fmt: skip


def sampled(completions: Sequence[Completion]) -> Solution:
    """Plain samples as one solution: each a candidate (no answer extracted from it),
    the first one's text its answer."""
    candidates = [Candidate(c.text, None, c.finish_reason, c.completion_tokens)
                  for c in completions]  # fmt: skip
    return Solution(answer=candidates[0].text if candidates else None, candidates=candidates)


def chat_question(messages: Sequence[Message]) -> str:
    """A conversation's question: its last user message (else its last message)."""
    asked = [message.content or "" for message in messages if message.role == "user"]
    return asked[-1] if asked else messages[-1].content or ""


def client_of(body: SamplingRequest, request: Request) -> str | None:
    """Who sent the request: its OpenAI ``user`` field when it has one (cut to
    `MAX_CLIENT_CHARS`), else the peer's host (no port)."""
    user = (body.model_extra or {}).get("user")
    if isinstance(user, str) and user.strip():
        return user.strip()[:MAX_CLIENT_CHARS]
    return request.client.host if request.client else None
