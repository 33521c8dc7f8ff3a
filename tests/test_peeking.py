"""Strategies never see ground truth, not through the ledger either.

A bench run writes the grader's scores to the ledger while later strategies are
still solving the same problems. A strategy that finds the ledger through what it
is handed (its context, its meter, its resolver) could copy an earlier
strategy's right answers. This one tries every way it is offered.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import ClassVar

import pytest

import thinktank
from thinktank.errors import SpecError
from thinktank.ledger import Ledger
from thinktank.solution import Solution
from thinktank.strategies import Strategy

from .conftest import reachable


@dataclass
class AlwaysFour(Strategy):
    name: ClassVar[str] = "always-four"
    summary: ClassVar[str] = "test double: answers 4"

    def solve(self, problem, ctx):
        return Solution(answer="4", candidates=[])


@dataclass
class Peek(Strategy):
    """Copies an earlier strategy's answer when the ledger says it scored 1."""

    name: ClassVar[str] = "peek"
    summary: ClassVar[str] = "test double: reads the grader's scores if it can"
    #: What it found and what refused it (class-level: fields would change its spec).
    found: ClassVar[list] = []
    refused: ClassVar[list] = []

    def solve(self, problem, ctx):
        ledgers = [obj for obj in reachable(ctx) if isinstance(obj, Ledger | sqlite3.Connection)]
        self.found += ledgers
        # The run in progress by its id, a prefix of it, and as the latest run.
        for name in (ctx.meter.run_id, ctx.meter.run_id[:7], "last"):
            try:
                ctx.resolver.routing_data([name])
            except SpecError as refusal:
                self.refused.append(str(refusal))
        for ledger in ledgers:
            if isinstance(ledger, Ledger):
                for row in ledger.results(ctx.meter.run_id):
                    if row.problem_id == problem.id and row.score == 1.0:
                        return Solution(answer=row.answer, candidates=[])
        return Solution(answer="no idea", candidates=[])


@pytest.fixture
def fours(tmp_path) -> str:
    path = tmp_path / "fours.jsonl"
    rows = [{"question": q, "answer": "4"} for q in ("2 + 2?", "3 + 1?", "1 + 3?")]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return f"jsonl:{path}"


def test_a_strategy_cannot_copy_scores_from_the_ledger(fours, tmp_path):
    peek = Peek()
    peek.found.clear()
    peek.refused.clear()
    # The default ledger: the one a route strategy's resolver opens.
    result = thinktank.benchmark(fours, [AlwaysFour(), peek], ledger=Ledger(), concurrency=1)
    accuracy = {s.strategy: s.accuracy for s in result.summaries}
    assert accuracy == {"always-four": 1.0, "peek": 0.0}
    assert peek.found == []
    assert len(peek.refused) == 9
    assert all("run in progress" in refusal for refusal in peek.refused)
