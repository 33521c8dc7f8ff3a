"""`thinktank tune`: the search space, the splits and folds, the recommendation rules,
the cross-validation on fixed scores, and a real tuning run on the embedded models with
a real ledger."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from thinktank.bench.suites import load_suite
from thinktank.bench.summary import ConfigSummary
from thinktank.economics import Configuration
from thinktank.errors import ThinktankError
from thinktank.ledger import Ledger, ResultRow
from thinktank.meter import Budget
from thinktank.strategies import build_strategy
from thinktank.tune import (
    Evaluated,
    Fold,
    Scored,
    TuneOutcome,
    choose_by_folds,
    cross_validate,
    fold_problems,
    recommend,
    search_space,
    split_suite,
    tune,
)

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


def test_folds_hold_each_problem_out_once_and_are_seeded():
    ids = [f"p{i}" for i in range(11)]
    folds = fold_problems(ids, 3, seed=1)
    assert sorted(pid for fold in folds for pid in fold) == sorted(ids)
    assert sorted(len(fold) for fold in folds) == [3, 4, 4]
    assert fold_problems(ids, 3, seed=1) == folds
    assert fold_problems(ids, 3, seed=2) != folds
    with pytest.raises(ThinktankError, match="at least 2 folds"):
        fold_problems(ids, 1, seed=1)
    with pytest.raises(ThinktankError, match="11 problems cannot make 12 folds"):
        fold_problems(ids, 12, seed=1)


def _scored(strategy: str, cost_per_problem: float, solved: set[str], ids: list[str]) -> Scored:
    """A configuration's fixed results: full credit on ``solved``, none elsewhere."""

    def row(pid: str) -> ResultRow:
        return ResultRow(run_id="r", strategy=strategy, model="m", problem_id=pid, answer="a",
                         score=float(pid in solved), sample_keys=[], sample_scores=[],
                         prompt_tokens=1, completion_tokens=1, cost_usd=cost_per_problem,
                         seconds=0, budget_exhausted=False)  # fmt: skip

    rows = [row(pid) for pid in ids]
    config = {"suite": "s", "strategies": [strategy], "models": ["m"]}
    return Scored(Configuration(strategy, "m"), rows, config)


def test_each_fold_chooses_on_the_others_and_warns_when_its_held_out_figure_strays():
    first, second = [f"a{i}" for i in range(8)], [f"b{i}" for i in range(8)]
    ids = first + second
    # Lucky solves exactly the first fold's problems; steady solves 5 of 8 in each, dearer.
    lucky = _scored("lucky", 1e-6, set(first), ids)
    steady = _scored("steady", 3e-6, set(first[:5] + second[:5]), ids)
    folds = cross_validate([lucky, steady], [first, second], "s")
    # Fold 1 chooses on the second fold's problems, where lucky solved nothing.
    assert folds[0].chosen.configuration == steady.configuration
    assert folds[0].chosen.summary.n_problems == 8 and folds[0].chosen.summary.accuracy == 5 / 8
    assert folds[0].held_out.summary.accuracy == 5 / 8 and not folds[0].outside_dev_interval
    # Fold 2 chooses lucky on the first fold's problems (all solved), and it fails held out.
    assert folds[1].chosen.configuration == lucky.configuration
    assert folds[1].chosen.summary.accuracy == 1 and folds[1].held_out.summary.accuracy == 0
    assert folds[1].outside_dev_interval

    evaluated = [s.on(ids, "s") for s in (lucky, steady)]
    recommended, reason = choose_by_folds(folds, evaluated)
    assert recommended is evaluated[0]  # one vote each: the cheaper
    assert "chosen by 1 of 2 folds" in reason and "cost-of-pass" in reason
    outcome = TuneOutcome("s", len(ids), evaluated, [], folds, recommended, reason, None, {})
    [warning] = outcome.warnings
    assert warning.startswith("fold 2: lucky @ m scored 0.00 held out, outside")
    assert outcome.held_out_spread == {"per_fold": [5 / 8, 0.0], "mean": 5 / 16, "min": 0.0,
                                       "max": 5 / 8}  # fmt: skip
    saved = outcome.to_dict()
    assert saved["warnings"] == [warning]
    assert [f["outside_development_interval"] for f in saved["folds"]] == [False, True]

    # Steady on both sides of every fold: no warning.
    calm = cross_validate([steady], [first, second], "s")
    assert not any(f.outside_dev_interval for f in calm)
    assert TuneOutcome("s", len(ids), evaluated[1:], [], calm, None, "", None, {}).warnings == []


def test_the_recommendation_is_the_choice_of_most_folds():
    cheap, mid = _evaluated("cheap", 0.1, 0.2), _evaluated("mid", 0.2, 0.6)

    def fold(number: int, chosen: Evaluated | None) -> Fold:
        return Fold(number, [], chosen, "the rule" if chosen else "none qualified", None)

    assert choose_by_folds([fold(1, mid), fold(2, cheap), fold(3, mid)], [cheap, mid]) == (
        mid, "the rule; chosen by 2 of 3 folds")  # fmt: skip
    assert choose_by_folds([fold(1, None), fold(2, None)], [cheap, mid]) == (None, "none qualified")


def _evaluated(name: str, cost_per_problem: float, accuracy: float) -> Evaluated:
    problems = 10
    summary = ConfigSummary(
        strategy=name, model="m", suite="s", n_problems=problems, accuracy=accuracy,
        ci95=(0, 1), total_tokens=0, cost_usd=cost_per_problem * problems,
        cost_of_pass_usd=cost_per_problem / accuracy if accuracy else None, model_seconds=0,
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


def test_a_real_tuning_run_cross_validates_recommends_and_resumes(smollm2, ledger, tmp_path):
    strategies = [f"single:{SHORT}", f"self-consistency:{SHORT},n=2"]  # as specs print
    outcome = tune(SUITE, ["smollm2"], strategies, folds=3, ledger=ledger, out_dir=tmp_path / "t",
                   seed=1)  # fmt: skip
    assert [e.configuration.strategy for e in outcome.evaluated] == strategies  # cheapest first
    # One run per configuration, every problem scored once: folds re-use the scores.
    assert len(outcome.run_ids) == 2
    results = {run_id: ledger.results(run_id) for run_id in outcome.run_ids}
    assert all(len(rows) == 6 for rows in results.values())
    assert all(e.summary.n_problems == 6 for e in outcome.evaluated)
    all_ids = sorted(r.problem_id for r in results[outcome.run_ids[0]])
    held = [f.held_out_ids for f in outcome.folds]
    assert sorted(pid for ids in held for pid in ids) == all_ids and all(len(i) == 2 for i in held)
    for fold in outcome.folds:
        if fold.chosen is None:
            continue
        # Chosen on the four other problems, checked on its own two, from the same scores.
        run_id = outcome.run_ids[strategies.index(fold.chosen.configuration.strategy)]
        dev = [r for r in results[run_id] if r.problem_id not in fold.held_out_ids]
        own = [r for r in results[run_id] if r.problem_id in fold.held_out_ids]
        assert fold.chosen.summary.accuracy == sum(r.score >= 1 for r in dev) / 4
        assert fold.held_out.summary.accuracy == sum(r.score >= 1 for r in own) / 2
    # The recommendation is the choice of most folds, held out on those folds' problems.
    votes = Counter(f.chosen.configuration for f in outcome.folds if f.chosen)
    recommended = outcome.recommended.configuration
    assert votes[recommended] == max(votes.values()) and "folds" in outcome.reason
    assert outcome.held_out.summary.n_problems == 2 * votes[recommended]
    # What the search spent is what the ledger recorded.
    paid = sum(c.cost_usd for run_id in outcome.run_ids for c in ledger.calls(run_id))
    assert outcome.spent["cost_usd"] == pytest.approx(paid)
    saved = json.loads((tmp_path / "t" / "tune.json").read_text())
    assert [f["held_out_problems"] for f in saved["folds"]] == held
    assert saved["warnings"] == outcome.warnings
    assert saved["held_out_spread"] == outcome.held_out_spread
    assert (tmp_path / "t" / "pareto.png").stat().st_size

    calls = _calls(ledger, outcome.run_ids)
    again = tune(SUITE, ["smollm2"], strategies, folds=3, ledger=ledger, out_dir=tmp_path / "t",
                 seed=1)  # fmt: skip
    assert _calls(ledger, again.run_ids) == calls  # resumed: nothing solved twice
    assert again.to_dict()["folds"] == outcome.to_dict()["folds"]
    # Other folds re-partition the same scores: no model call.
    halves = tune(SUITE, ["smollm2"], strategies, folds=2, ledger=ledger, out_dir=tmp_path / "h",
                  seed=1)  # fmt: skip
    assert halves.run_ids == outcome.run_ids and _calls(ledger, halves.run_ids) == calls
    assert [len(f.held_out_ids) for f in halves.folds] == [3, 3]

    # A spent budget stops the search: the first configuration runs, the rest wait.
    capped = tune(SUITE, ["smollm2"], strategies, folds=3, ledger=ledger,
                  budget=Budget(max_tokens=1), out_dir=tmp_path / "c", seed=1)  # fmt: skip
    assert [e.configuration.strategy for e in capped.evaluated] == strategies[:1]
    assert [c.strategy for c in capped.skipped] == strategies[1:]
