"""Cascades over the two embedded models: the real SmolLM2 and Gemma 3, a real ledger."""

from __future__ import annotations

from collections import Counter

import pytest

import thinktank
from thinktank.ledger import Ledger
from thinktank.meter import Budget
from thinktank.strategies.route import vote_confidence
from thinktank.verify import answer_key

QUESTIONS = ("What is 7 + 5?", "What is 3 * 4?", "What is 9 - 6?")


@pytest.fixture
def ledger(tmp_path):
    return Ledger(tmp_path / "ledger.db")


def _models_that_paid(ledger: Ledger, run_id: str) -> list[str]:
    return [call.model for call in ledger.calls(run_id)]


def test_vote_confidence_never_reaches_one():
    assert vote_confidence(4, 4) == pytest.approx(0.8)
    assert vote_confidence(0, 4) == 0 and vote_confidence(0, 0) == 0
    assert vote_confidence(2, 4) < vote_confidence(3, 4) < 1


BOTH = ["smollm2", "gemma3-270m"]


@pytest.mark.parametrize(("threshold", "paid"), [(0, BOTH[:1]), (1, BOTH)])
def test_threshold_zero_never_escalates_and_one_always_does(threshold, paid, gemma, ledger):
    spec = f"cascade:threshold={threshold},max_tokens=32"
    for question in QUESTIONS[:2]:
        solution = thinktank.solve(question, strategy=spec, seed=1, ledger=ledger)
        assert _models_that_paid(ledger, solution.run_id) == paid
        assert [step["model"] for step in solution.trace] == paid
        # The answer is the vote of the model that answered last.
        assert solution.answer == solution.trace[-1]["answer"]
        assert {c.worker for c in solution.candidates} == set(paid)


def test_it_escalates_exactly_when_the_cheap_vote_is_not_confident(gemma, ledger):
    threshold = 0.5
    spec = f"cascade:threshold={threshold},max_tokens=32"
    for question in QUESTIONS:
        solution = thinktank.solve(question, strategy=spec, seed=2, ledger=ledger)
        first = solution.trace[0]
        escalated = first["confidence"] < threshold
        assert len(solution.trace) == (2 if escalated else 1)
        assert _models_that_paid(ledger, solution.run_id)[-1] == solution.trace[-1]["model"]
        cheap = [c for c in solution.candidates if c.worker == "smollm2"]
        keys = Counter(answer_key(c.answer, "math") for c in cheap if c.answer is not None)
        winner = max(keys.values(), default=0)
        assert first["confidence"] == pytest.approx(winner / (len(cheap) + 1), abs=1e-4)


def test_one_budget_caps_every_model_of_the_cascade(gemma):
    solution = thinktank.solve("What is 7 + 5?", strategy="cascade:threshold=1,max_tokens=64",
                               seed=1, budget=Budget(max_tokens=300))  # fmt: skip
    assert solution.usage.total_tokens <= 300
