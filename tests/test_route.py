"""Cascades over the two embedded models: the real SmolLM2 and Gemma 3, a real ledger."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

import thinktank
from thinktank.bench.suites import load_suite
from thinktank.economics import Configuration
from thinktank.errors import SpecError, ThinktankError
from thinktank.ledger import Ledger
from thinktank.meter import Budget
from thinktank.router import METHODS, Router, RoutingData
from thinktank.strategies.route import vote_confidence
from thinktank.tune import split_suite
from thinktank.verify import answer_key

from .test_bench import Guesses, sums_endpoint, sums_suite

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


# A router on made-up outcomes: "cheap" solves the additions, "dear" solves everything
# at twice the price, "weak" solves nothing.
ADDITIONS = [f"What is {a} plus {b}?" for a, b in [(1, 2), (3, 4), (5, 1), (2, 7), (6, 3)]]
RIDDLES = [f"Name the {w} colour of a {t} in winter." for w, t in
           [("usual", "fox"), ("rare", "hare"), ("odd", "owl"), ("main", "stoat"),
            ("pale", "wolf")]]  # fmt: skip
CHEAP, DEAR, WEAK = (Configuration("single", m) for m in ("cheap", "dear", "weak"))


def _made_up() -> RoutingData:
    solved = [[1, 1, 0]] * len(ADDITIONS) + [[0, 1, 0]] * len(RIDDLES)
    costs = [[1.0, 2.0, 1.0]] * (len(ADDITIONS) + len(RIDDLES))
    return RoutingData(ADDITIONS + RIDDLES, [CHEAP, DEAR, WEAK], np.array(solved, float),
                       np.array(costs))  # fmt: skip


NEW_ADDITION, NEW_RIDDLE = "What is 8 plus 1?", "Name the usual colour of a hare in winter."


@pytest.mark.parametrize("method", METHODS)
def test_the_router_sends_each_kind_of_query_where_an_answer_is_cheapest(method):
    router = Router(_made_up(), method=method, clusters=2)
    picks = [router.data.configurations[i] for i in router.choose([NEW_ADDITION, NEW_RIDDLE])]
    assert picks == [CHEAP, DEAR]
    chances = router.chances([NEW_ADDITION, NEW_RIDDLE])
    assert chances[0, 0] > 0.5 > chances[1, 0]  # cheap: likely on additions, not on riddles
    assert (chances[:, 2] < 0.5).all()  # weak: never likely


def test_the_accuracy_objective_pays_for_the_surest_configuration():
    router = Router(_made_up(), clusters=2, objective="accuracy")
    # In the additions' cluster cheap's rate is smoothed toward its overall rate, dear's is 1.
    assert [router.data.configurations[i] for i in router.choose([NEW_ADDITION])] == [DEAR]


def test_minilm_features_route_by_meaning():
    router = Router(_made_up(), features="minilm", clusters=2)
    assert router.choose(["How much is four added to five?"]) == [0]
    assert router.choose(["What colour does an arctic fox turn in winter?"]) == [1]


def test_router_and_spec_errors_are_clear():
    with pytest.raises(ThinktankError, match="method"):
        Router(_made_up(), method="oracle")
    with pytest.raises(ThinktankError, match="features"):
        Router(_made_up(), features="bag")
    with pytest.raises(SpecError, match="runs"):
        thinktank.build_strategy("route")
    with pytest.raises(SpecError, match="objective"):
        thinktank.build_strategy("route:runs=x,objective=speed")


def test_a_router_learned_from_a_bench_run_routes_held_out_problems(gemma, tmp_path):
    ledger = Ledger(tmp_path / "ledger.db")
    suite = load_suite("rg:chain_sum?min_terms=2&max_terms=2&min_digits=1&max_digits=2"
                       "&size=8&seed=5")  # fmt: skip
    dev, held_out = split_suite(suite, 0.5, seed=0)
    trained = thinktank.benchmark(dev, ["single:max_tokens=40"], BOTH, ledger=ledger,
                                  concurrency=1)  # fmt: skip
    data = RoutingData.from_ledger(ledger, [trained.run_id])
    assert sorted(data.texts) == sorted(t.problem.prompt for t in dev.tasks)
    assert [c.model for c in data.configurations] == sorted(BOTH, key=lambda m: f"single @ {m}")
    by_text = {t.problem.id: t.problem.prompt for t in dev.tasks}
    for row in ledger.results(trained.run_id):  # the table is the ledger's, row by row
        column = [c.model for c in data.configurations].index(row.model)
        line = data.texts.index(by_text[row.problem_id])
        assert data.solved[line, column] == (row.score >= 1)
        assert data.costs[line, column] == pytest.approx(row.cost_usd)

    spec = f"route:runs={trained.run_id},ledger={ledger.path},clusters=2"
    routed = thinktank.benchmark(held_out, [spec], ["smollm2"], ledger=ledger, concurrency=1)
    router = Router(data, clusters=2)
    expected = {t.problem.id: data.configurations[router.choose([t.problem.prompt])[0]].model
                for t in held_out.tasks}  # fmt: skip
    for row in ledger.results(routed.run_id):
        paid = {c.model for c in ledger.calls(routed.run_id) if c.problem_id == row.problem_id}
        assert paid == {expected[row.problem_id]}
    assert not any(router.seen(t.problem.prompt) for t in held_out.tasks)

    # A training problem is routed by a router that never saw its outcome.
    again = thinktank.benchmark(dev, [spec], ["smollm2"], ledger=ledger, concurrency=1)
    for row in ledger.results(again.run_id):
        text = by_text[row.problem_id]
        others = [i for i, t in enumerate(data.texts) if t != text]
        blind = Router(data.take(others), clusters=2)
        expected_model = data.configurations[blind.choose([text])[0]].model
        paid = {c.model for c in ledger.calls(again.run_id) if c.problem_id == row.problem_id}
        assert paid == {expected_model}
    solution = thinktank.solve(dev.tasks[0].problem, strategy=spec, ledger=ledger)
    assert solution.trace[0]["left_out_of_training"] is True


@pytest.mark.parametrize("threshold", [0.0, 0.9, 1.0])
def test_spec_reason_rewrites_exactly_the_steps_the_large_model_values_below_threshold(
    threshold, gemma, ledger
):
    spec = f"spec-reason:judge=value,threshold={threshold},max_tokens=64,step_tokens=24,max_steps=4"
    solution = thinktank.solve("What is 7 + 5?", strategy=spec, seed=3, ledger=ledger)
    assert solution.trace, "at least one step was written"
    for step in solution.trace:
        rewritten = step["value"] < threshold
        assert step["written_by"] == ("gemma3-270m" if rewritten else "smollm2")
    calls = ledger.calls(solution.run_id)
    large_writes = [c for c in calls if c.model == "gemma3-270m" and c.completion_tokens > 1]
    rewrites = sum(step["written_by"] == "gemma3-270m" for step in solution.trace)
    # The large model writes only the rewritten steps; otherwise it only scores (one token).
    assert len(large_writes) <= rewrites
    if threshold == 0:
        assert rewrites == 0 and not large_writes
    assert {c.model for c in calls} == set(BOTH)  # both paid: the small drafts, the large judges


def test_a_cascade_can_escalate_on_the_models_own_judgement(gemma, ledger):
    spec = "cascade:verifier=self-eval,threshold=0.6,max_tokens=32"
    for question in QUESTIONS:
        solution = thinktank.solve(question, strategy=spec, seed=4, ledger=ledger)
        first = solution.trace[0]
        assert 0 <= first["confidence"] <= 1
        assert len(solution.trace) == (2 if first["confidence"] < 0.6 else 1)
        calls = ledger.calls(solution.run_id)
        # Each model asked: its n samples, then one greedy token judging its winner.
        assert [(c.model, c.n) for c in calls[:2]] == [("smollm2", 4), ("smollm2", 1)]
        assert calls[1].completion_tokens == 1
    with pytest.raises(SpecError, match="verifier"):
        thinktank.build_strategy("cascade:verifier=gut-feeling")


def test_router_labels_are_committed_answers_and_unpriced_runs_are_refused(smollm2, tmp_path):
    ledger = Ledger(tmp_path / "ledger.db")
    suite = sums_suite(tmp_path / "sums.jsonl")
    guesses, right = Guesses(), Guesses(wrong_first=False)
    trained = thinktank.benchmark(suite, [guesses, right], [smollm2], ledger=ledger)
    data = RoutingData.from_ledger(ledger, [trained.run_id])
    solved = dict(zip([c.strategy for c in data.configurations], data.solved.T, strict=True))
    # The pass@k output's right second guess never makes a label: its first is wrong.
    assert solved[guesses.spec].tolist() == [0.0] * 3
    assert solved[right.spec].tolist() == [1.0] * 3

    endpoint = sums_endpoint()
    try:
        remote = f"openai:mystery@{endpoint.url}/v1"  # no price: its cost is unknown
        unpriced = thinktank.benchmark(suite, ["single:max_tokens=8"], [remote], ledger=ledger)
        with pytest.raises(ThinktankError, match="has no price"):
            RoutingData.from_ledger(ledger, [unpriced.run_id])
    finally:
        endpoint.close()
