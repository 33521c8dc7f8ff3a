"""Verifier and process-reward options given as objects from Python: used as they are
(real embedded model, real ledger), shown in the spec as a placeholder that cannot be
rebuilt, and refused where only names are allowed (a server, a Ray worker)."""

from __future__ import annotations

import pytest

import thinktank
from thinktank.bench.distributed import RayExecutor
from thinktank.bench.runner import plan_bench, run_bench
from thinktank.errors import SpecError
from thinktank.ledger import Ledger
from thinktank.resolver import Resolver, ServedResolver
from thinktank.strategies import BeamSearch, BestOfN, build_strategy

NOT_REBUILT = "an object option cannot be rebuilt from its spec: register it as a plugin"


class SecondWins:
    """Scores the second candidate it is shown 1 and every other 0."""

    name = "second-wins"

    def score(self, problem, candidates, ctx) -> list[float]:
        return [float(i == 1) for i in range(len(candidates))]


class SecondStepWins:
    """Values the second partial it is shown 1 and every other 0; remembers how many."""

    name = "second-step-wins"

    def __init__(self) -> None:
        self.shown: list[int] = []

    def values(self, problem, partials, ctx) -> list[float]:
        self.shown.append(len(partials))
        return [float(i == 1) for i in range(len(partials))]


def test_a_verifier_object_picks_the_answer_and_shows_as_a_placeholder(isolated_home):
    strategy = BestOfN(n=2, max_tokens=8, verifier=SecondWins())
    # Seed 2: both samples state a number, and not the same one.
    solution = thinktank.solve("Pick a whole number from 1 to 100.", strategy=strategy, seed=2)
    first, second = solution.candidates
    assert first.answer is not None and first.answer != second.answer
    assert [first.score, second.score] == [0.0, 1.0]
    assert solution.answer == second.answer
    assert solution.strategy == "best-of-n:max_tokens=8,n=2,verifier=<SecondWins>"
    assert {row.strategy for row in Ledger().calls(solution.run_id)} == {solution.strategy}


def test_a_process_reward_object_values_a_search(isolated_home):
    reward = SecondStepWins()
    strategy = BeamSearch(beams=1, expand=2, step_tokens=4, max_steps=1, max_tokens=8, value=reward)
    solution = thinktank.solve("What is 2 + 2?", strategy=strategy, seed=0, kind="text")
    assert reward.shown and reward.shown[0] == 2
    assert "value=<SecondStepWins>" in solution.strategy


def test_a_placeholder_spec_cannot_be_rebuilt():
    spec = BestOfN(n=2, verifier=SecondWins()).spec
    with pytest.raises(SpecError, match=NOT_REBUILT):
        build_strategy(spec)


def test_only_the_open_resolver_takes_objects():
    verifier, reward = SecondWins(), SecondStepWins()
    assert Resolver().verifier(verifier) is verifier
    assert Resolver().process_reward(reward, sampling=None) is reward
    assert not list(BestOfN(verifier=verifier).references())
    served = ServedResolver({"smollm2": "smollm2"})
    with pytest.raises(SpecError, match="by name"):
        served.verifier(verifier)
    with pytest.raises(SpecError, match="by name"):
        served.process_reward(reward, sampling=None)


def test_a_bench_on_ray_refuses_an_object_option_before_it_runs(tmp_path):
    ledger = Ledger(tmp_path / "ledger.db")
    suite = "rg:chain_sum?min_terms=2&max_terms=2&min_digits=1&max_digits=1&size=1&seed=3"
    plan = plan_bench(suite, [BestOfN(n=2, verifier=SecondWins())], ["smollm2"], ledger=ledger)
    with pytest.raises(SpecError, match=NOT_REBUILT):
        run_bench(plan, ledger=ledger, executor=RayExecutor())
    assert ledger.results(plan.run_id) == []
