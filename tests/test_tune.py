"""`thinktank tune`: the search space, the split, the recommendation rules, and a real
tuning run on the embedded models with a real ledger."""

from __future__ import annotations

import json

import pytest

from thinktank.bench.suites import load_suite
from thinktank.bench.summary import ConfigSummary
from thinktank.economics import Configuration
from thinktank.errors import ThinktankError
from thinktank.ledger import Ledger
from thinktank.meter import Budget
from thinktank.strategies import build_strategy
from thinktank.tune import Evaluated, recommend, search_space, split_suite, tune

SUITE = "rg:chain_sum?min_terms=2&max_terms=2&min_digits=1&max_digits=1&size=6&seed=3"
SHORT = "max_tokens=40"


def test_default_space_crosses_strategies_with_models_and_runs_each_cascade_once(smollm2, gemma):
    space = search_space(["gemma3-270m", "smollm2"])
    cascades = [c for c in space if c.strategy.startswith("cascade")]
    others = [c for c in space if not c.strategy.startswith("cascade")]
    assert len(cascades) == 3 and len(others) == 2 * 5  # single, n=2/4/8, n=4 at t=1.0
    # The pool runs cheapest first whatever order the models were given in.
    assert all(build_strategy(c.strategy).pool == ["smollm2", "gemma3-270m"] for c in cascades)
    assert {c.model for c in cascades} == {"smollm2"}
    assert len(set(space)) == len(space)
    assert not any(c.strategy.startswith("cascade") for c in search_space(["smollm2"]))


def test_split_is_seeded_disjoint_and_complete():
    suite = load_suite(SUITE)
    dev, held_out = split_suite(suite, 0.5, seed=1)
    ids = lambda s: [t.problem.id for t in s.tasks]  # noqa: E731
    assert len(ids(dev)) == len(ids(held_out)) == 3
    assert not set(ids(dev)) & set(ids(held_out))
    assert sorted(ids(dev) + ids(held_out)) == sorted(ids(suite))
    assert ids(split_suite(suite, 0.5, seed=1)[0]) == ids(dev)
    assert ids(split_suite(suite, 0.5, seed=2)[0]) != ids(dev)
    with pytest.raises(ThinktankError, match="between 0 and 1"):
        split_suite(suite, 1.0, seed=1)


def _evaluated(name: str, cost_per_problem: float, accuracy: float) -> Evaluated:
    problems = 10
    summary = ConfigSummary(
        strategy=name, model="m", suite="s", n_problems=problems, accuracy=accuracy,
        ci95=(0, 1), total_tokens=0, cost_usd=cost_per_problem * problems,
        cost_of_pass_usd=cost_per_problem / accuracy if accuracy else None, seconds=0,
        budget_exhausted=0,
    )  # fmt: skip
    return Evaluated(Configuration(name, "m"), summary)


def test_recommendation_rules():
    # cost-of-pass: cheap 0.5, mid 0.333, dear 0.444, useless none.
    cheap, mid, dear = _evaluated("cheap", 0.1, 0.2), _evaluated("mid", 0.2, 0.6), \
        _evaluated("dear", 0.4, 0.9)  # fmt: skip
    useless = _evaluated("useless", 0.05, 0.0)
    pool = [dear, useless, cheap, mid]
    assert recommend(pool)[0] is mid
    assert recommend(pool, max_cost_per_problem=0.3)[0] is mid
    assert recommend(pool, max_cost_per_problem=0.1)[0] is cheap
    best, reason = recommend(pool, max_cost_per_problem=0.01)
    assert best is None and "at most" in reason
    assert recommend(pool, target_accuracy=0.5)[0] is mid
    assert recommend(pool, target_accuracy=0.85)[0] is dear
    assert recommend(pool, target_accuracy=0.95)[0] is None
    assert recommend([useless])[0] is None
    with pytest.raises(ThinktankError, match="not both"):
        recommend(pool, max_cost_per_problem=1, target_accuracy=0.5)


@pytest.fixture
def ledger(tmp_path):
    return Ledger(tmp_path / "ledger.db")


def _calls(ledger: Ledger, run_ids: list[str]) -> int:
    return sum(len(ledger.calls(run_id)) for run_id in set(run_ids))


def test_a_real_tuning_run_recommends_checks_held_out_and_resumes(smollm2, ledger, tmp_path):
    strategies = [f"single:{SHORT}", f"self-consistency:{SHORT},n=2"]  # as specs print
    outcome = tune(SUITE, ["smollm2"], strategies, ledger=ledger, out_dir=tmp_path / "t", seed=1)
    assert [e.configuration.strategy for e in outcome.evaluated] == strategies  # cheapest first
    assert all(e.summary.n_problems == 3 for e in outcome.evaluated)
    solving = [e for e in outcome.evaluated if e.summary.cost_of_pass_usd is not None]
    lowest = min(solving, key=lambda e: e.summary.cost_of_pass_usd)
    assert outcome.recommended is lowest and "cost-of-pass" in outcome.reason
    # The held-out check ran the recommendation on the other problems only.
    assert outcome.held_out.configuration == outcome.recommended.configuration
    dev_ids = {r.problem_id for r in ledger.results(outcome.run_ids[0])}
    held_ids = {r.problem_id for r in ledger.results(outcome.run_ids[-1])}
    assert len(held_ids) == 3 and not dev_ids & held_ids
    # What the search spent is what the ledger recorded for the development runs.
    dev_runs = outcome.run_ids[: len(outcome.evaluated)]
    paid = sum(c.cost_usd for run_id in dev_runs for c in ledger.calls(run_id))
    assert outcome.spent["cost_usd"] == pytest.approx(paid)
    saved = json.loads((tmp_path / "t" / "tune.json").read_text())
    assert saved["recommended"]["strategy"] == outcome.recommended.configuration.strategy
    assert saved["held_out"]["n_problems"] == 3 and (tmp_path / "t" / "pareto.png").stat().st_size

    calls = _calls(ledger, outcome.run_ids)
    again = tune(SUITE, ["smollm2"], strategies, ledger=ledger, out_dir=tmp_path / "t", seed=1)
    assert _calls(ledger, again.run_ids) == calls  # resumed: nothing solved twice
    assert again.held_out.summary.accuracy == outcome.held_out.summary.accuracy

    # A spent budget stops the search: the first configuration runs, the rest wait.
    capped = tune(SUITE, ["smollm2"], strategies, ledger=ledger, budget=Budget(max_tokens=1),
                  out_dir=tmp_path / "c", seed=1)  # fmt: skip
    assert [e.configuration.strategy for e in capped.evaluated] == strategies[:1]
    assert [c.strategy for c in capped.skipped] == strategies[1:]
