"""compute-optimal is Snell et al.'s strategy: a question's difficulty, estimated from
verifier-scored probe samples, picks how its fixed budget is spent, by a table learned
on development problems. batch-allocation is the technique that had its name before.

The formulas run on hand-made numbers; the control flow on the scripted model of
test_search, with a py: verifier that scores every sample of a problem alike (so each
difficulty is known in advance); one test runs the real embedded model, tiny budget.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

import thinktank
from thinktank.aggregate import majority_vote
from thinktank.errors import SpecError, ThinktankError
from thinktank.ledger import Ledger
from thinktank.meter import Meter
from thinktank.problem import Problem
from thinktank.strategies import build_strategy
from thinktank.strategies.allocate import (
    BatchAllocation,
    ComputeOptimal,
    best_choices,
    difficulty_level,
    estimated_difficulty,
    quantile_edges,
)
from thinktank.strategies.base import Context
from thinktank.strategies.sampling import SelfConsistency
from thinktank.strategies.search import BeamSearch
from thinktank.tune import fit_compute_optimal

from .test_search import ScriptedModel, ScriptedReward

#: The verifier's score of every sample of these problems (difficulty: 1 - score) ...
PROBLEM_SCORES = {"easy": 0.9, "middling": 0.45, "hard": 0.1}
PROBLEM_SCORES |= {f"dev-{i}": score for i, score in enumerate([0.95, 0.8, 0.6, 0.4, 0.25, 0.05])}
#: ... and of the samples of any other problem, by their answer.
ANSWER_SCORES = {"1": 0.2, "2": 0.9, "3": 0.5}
VERIFIER = "py:tests.test_faithful_compute_optimal:scripted_score"


def scripted_score(problem: Problem, candidate) -> float:
    if problem.id in PROBLEM_SCORES:
        return PROBLEM_SCORES[problem.id]
    return ANSWER_SCORES.get(candidate.answer, 0.0)


class SeededModel(ScriptedModel):
    """The scripted model, saying which seed drew each sample as the real backends do
    (so that a later call can continue the same seeded stream)."""

    def generate(self, prompt, n=1, sampling=None, **options):
        drawn = super().generate(prompt, n, sampling, **options)
        return [replace(c, seed=sampling.seed) for c in drawn]


def scripted_context(seed: int) -> Context:
    return Context(SeededModel(), Meter(), seed=seed)


def compute_optimal(**options) -> ComputeOptimal:
    return ComputeOptimal(verifier=VERIFIER, **options)


@pytest.fixture
def scripted_beam_values(monkeypatch):
    """Beam search valued by the scripted reward: no model calls."""
    monkeypatch.setattr(BeamSearch, "process_reward", lambda self, p, ctx: ScriptedReward())


def problem(problem_id: str) -> Problem:
    return Problem(id=problem_id, prompt="What is 1 + 2?", kind="math")


# -- the formulas, by hand ----------------------------------------------------------


def test_difficulty_is_one_minus_the_mean_verifier_score_an_unanswered_sample_scoring_0():
    assert estimated_difficulty([0.9, None, 0.5, 0.2]) == pytest.approx(1 - 1.6 / 4)
    assert estimated_difficulty([1.0, 1.0]) == 0.0
    assert estimated_difficulty([]) == 1.0  # nothing drawn: the hardest


def test_a_difficulty_on_an_edge_takes_the_lower_level():
    edges = [0.2, 0.4, 0.6, 0.8]
    levels = {0.0: 0, 0.2: 0, 0.21: 1, 0.5: 2, 0.8: 3, 0.81: 4, 1.0: 4}
    assert {d: difficulty_level(d, edges) for d in levels} == levels


def test_development_difficulties_are_cut_into_quantiles():
    difficulties = [0.7, 0.1, 0.4, 1.0, 0.3, 0.9, 0.2, 0.6, 0.5, 0.8]
    # Linear interpolation over the sorted ten: the k/5 quantile sits at 9k/5.
    edges = quantile_edges(difficulties, 5)
    assert edges == pytest.approx([0.28, 0.46, 0.64, 0.82])
    counts = [0] * 5
    for d in difficulties:
        counts[difficulty_level(d, edges)] += 1
    assert counts == [2, 2, 2, 2, 2]


def test_each_level_takes_the_choice_that_solved_most_of_its_problems():
    difficulties = [0.1, 0.15, 0.5, 0.55, 0.6, 0.9, 0.95]
    solved = {  # per problem, as above
        "majority": [1, 1, 0, 0, 0, 1, 0],
        "best-of-n": [1, 0, 0, 1, 0, 0, 1],
        "beam": [0, 1, 1, 1, 1, 0, 0],
    }
    # Levels: (0, 0.3] (0.3, 0.7] (0.7, 0.8] (0.8, 1].
    picked = best_choices(difficulties, solved, [0.3, 0.7, 0.8])
    assert picked[0] == "majority"  # 2 of 2, against 1 and 1
    assert picked[1] == "beam"  # 3 of 3
    assert picked[2] == "beam"  # no problem there: the best over all (4 of 7)
    assert picked[3] == "majority"  # 1 and 1: the tie goes to the choice named first


# -- the strategy, on the scripted model ------------------------------------------------


@pytest.mark.parametrize(
    ("problem_id", "level", "choice"),
    [("easy", 1, "majority"), ("middling", 2, "weighted-best-of-n"), ("hard", 3, "beam")],
)
def test_a_questions_difficulty_picks_its_levels_choice(
    problem_id, level, choice, scripted_beam_values
):
    strategy = compute_optimal(n=8, probe=2, edges="0.3/0.7",
                               choices="majority/weighted-best-of-n/beam")  # fmt: skip
    solution = strategy.solve(problem(problem_id), scripted_context(seed=3))
    difficulty = 1 - PROBLEM_SCORES[problem_id]
    assert solution.trace[0] == {"difficulty": pytest.approx(difficulty, abs=1e-4),
                                 "level": level, "choice": choice}  # fmt: skip
    searched = any("step" in entry for entry in solution.trace[1:])
    assert searched == (choice == "beam")


@pytest.mark.parametrize("choice", ["majority", "best-of-n", "weighted-best-of-n", "beam"])
@pytest.mark.parametrize(("n", "probe"), [(8, 2), (5, 4), (16, 4)])
def test_the_budget_of_n_generations_is_never_exceeded(n, probe, choice, scripted_beam_values):
    strategy = compute_optimal(n=n, probe=probe, edges="", choices=choice)
    ctx = scripted_context(seed=n)
    strategy.solve(problem("middling"), ctx)
    calls = ctx.model.calls  # (the reply continued, samples asked)
    assert calls[0] == ("", probe)  # the probe comes first, and is part of the budget
    if choice != "beam":
        assert calls[1:] == [("", n - probe)]  # the rest of the budget, no more
        return
    per_step: dict[int, int] = {}
    for reply, asked in calls[1:]:
        per_step[reply.count(". ")] = per_step.get(reply.count(". "), 0) + asked
    assert per_step and max(per_step.values()) <= n - probe


def test_the_sample_choices_draw_exactly_self_consistencys_n_samples():
    for seed in range(3):
        mine = compute_optimal(n=6, probe=2, edges="", choices="majority")
        solution = mine.solve(problem("other"), scripted_context(seed=seed))
        plain = SelfConsistency(n=6).solve(problem("other"), scripted_context(seed=seed))
        assert [c.text for c in solution.candidates] == [c.text for c in plain.candidates]
        assert solution.answer == plain.answer


def test_weighted_best_of_n_answers_with_the_highest_sum_of_scores():
    differed = False  # seeds are tried until the weighted vote and best-of-n disagree
    for seed in range(60):
        strategy = compute_optimal(n=6, probe=2, edges="", choices="weighted-best-of-n")
        solution = strategy.solve(problem("other"), scripted_context(seed=seed))
        answers = [c.answer for c in solution.candidates]
        totals = {a: sum(ANSWER_SCORES[b] for b in answers if b == a) for a in set(answers)}
        if sorted(totals.values())[-2:-1] == [max(totals.values())]:
            continue  # a tie: broken by sampling order, not by the formula
        assert solution.answer == max(totals, key=totals.__getitem__)
        assert [c.score for c in solution.candidates] == [ANSWER_SCORES[a] for a in answers]
        differed |= solution.answer != max(answers, key=ANSWER_SCORES.__getitem__)
        if differed:
            break
    assert differed


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("compute-optimal:probe=16", "probe < n"),
        ("compute-optimal:edges=0.6/0.3,choices=beam/beam/beam", "ascending"),
        ("compute-optimal:edges=0.5/x,choices=beam/beam/beam", "numbers"),
        ("compute-optimal:edges=0.5,choices=beam", "one choice per level"),
        ("compute-optimal:edges=,choices=lookahead", "taken from"),
        ("compute-optimal:value=oracle", "value must be"),
    ],
)
def test_bad_compute_optimal_specs_fail_clearly(spec, message):
    with pytest.raises(SpecError, match=message):
        build_strategy(spec)


# -- learning the table on development problems -----------------------------------------


def dev_suite(tmp_path) -> str:
    path = tmp_path / "dev.jsonl"
    rows = [{"id": pid, "question": f"What is {i} + 1?", "answer": str(i % 3 + 1)}
            for i, pid in enumerate(p for p in PROBLEM_SCORES if p.startswith("dev-"))]  # fmt: skip
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return f"jsonl:{path}"


def test_fit_learns_quantile_edges_and_each_levels_most_accurate_choice(
    tmp_path, scripted_beam_values
):
    ledger = Ledger(tmp_path / "ledger.db")
    choices = ("majority", "best-of-n", "beam")
    strategy = compute_optimal(n=4, probe=2, max_tokens=64)
    fit = fit_compute_optimal(dev_suite(tmp_path), SeededModel(), strategy, choices=choices,
                              levels=3, ledger=ledger, concurrency=1)  # fmt: skip
    dev = {pid: 1 - score for pid, score in PROBLEM_SCORES.items() if pid.startswith("dev-")}
    # Six difficulties 0.05 0.2 0.4 0.6 0.75 0.95: the 1/3 and 2/3 quantiles at 5/3 and 10/3.
    edges = [0.2 + (0.4 - 0.2) * 2 / 3, 0.6 + (0.75 - 0.6) / 3]
    assert fit.strategy.level_edges == pytest.approx(edges, abs=1e-6)
    # Each level's choice: the most problems of that level solved, ties to the first.
    scores = {(r.strategy, r.problem_id): r.score for r in ledger.results(fit.run_id)}
    specs = {c: build_strategy(f"{strategy.spec},edges=,choices={c}").spec for c in choices}
    for level, entry in enumerate(fit.levels):
        members = [p for p, d in dev.items() if difficulty_level(d, edges) == level]
        wins = {c: sum(scores[(specs[c], p)] >= 1 for p in members) for c in choices}
        best = max(wins.values())
        assert entry["problems"] == len(members) == 2
        assert entry["choice"] == next(c for c in choices if wins[c] == best)
        assert entry["accuracy"] == {c: wins[c] / 2 for c in choices}
    assert fit.strategy.level_choices == [entry["choice"] for entry in fit.levels]
    assert build_strategy(fit.strategy.spec) == fit.strategy  # the table travels in the spec


def test_fit_refuses_another_strategy_and_too_few_problems(tmp_path):
    with pytest.raises(ThinktankError, match="fits compute-optimal"):
        fit_compute_optimal(dev_suite(tmp_path), SeededModel(), "self-consistency")
    with pytest.raises(ThinktankError, match="levels need"):
        fit_compute_optimal(dev_suite(tmp_path), SeededModel(), compute_optimal(), levels=7)


# -- the real model --------------------------------------------------------------------


def test_compute_optimal_on_the_real_model_spends_by_its_probe(isolated_home):
    solution = thinktank.solve(
        "State the final answer: 6 + 3 =", seed=0,
        strategy="compute-optimal:n=3,probe=1,max_tokens=16,edges=0.5,choices=majority/beam",
    )  # fmt: skip
    probe = solution.candidates[0]
    difficulty = 1 - (probe.score or 0.0)
    assert solution.trace[0]["difficulty"] == pytest.approx(difficulty, abs=1e-4)
    level = 1 if difficulty <= 0.5 else 2
    assert solution.trace[0]["level"] == level
    if level == 1:  # majority over the probe and two more samples of its stream
        assert len(solution.candidates) == 3
        vote = majority_vote([c.answer for c in solution.candidates], "math")
        assert solution.answer == vote.winner
    else:
        assert solution.trace[0]["choice"] == "beam" and len(solution.trace) > 1


# -- batch-allocation: compute-optimal's old technique, under its own name ---------------


def test_batch_allocation_still_gives_the_doubtful_problems_the_batchs_samples():
    # At most one sample more a problem: more than the doubtful ones can take.
    strategy = build_strategy("batch-allocation:n=3,probe=2,max_n=3")
    assert isinstance(strategy, BatchAllocation) and strategy.batched
    contexts = [scripted_context(seed=seed) for seed in range(8)]
    solutions = strategy.solve_batch([problem(f"p{i}") for i in range(8)], contexts)
    unanimous = [len({c.answer for c in s.candidates[:2]}) == 1 for s in solutions]
    assert 0 < sum(unanimous) < len(unanimous)  # both kinds, so both branches ran
    extras = [s.trace[0]["extra_samples"] for s in solutions]
    assert extras == [0 if u else 1 for u in unanimous]
