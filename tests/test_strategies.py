"""Spec strings, the registry, and the sampling strategies on the real model."""

from __future__ import annotations

import itertools
import math
import warnings

import pytest
from hypothesis import given
from hypothesis import strategies as st

import thinktank
from thinktank.aggregate import majority_vote
from thinktank.errors import SpecError
from thinktank.ledger import Ledger
from thinktank.meter import Budget
from thinktank.resolver import Resolver
from thinktank.spec import parse_spec
from thinktank.strategies import STRATEGIES, SelfConsistency, build_strategy
from thinktank.strategies.allocate import allocate
from thinktank.strategies.sampling import (
    confidence_weights,
    decision_confidence,
)
from thinktank.verify import answer_key
from thinktank.verify.verifiers import option_probability, yes_probability


def test_spec_strings_build_configured_strategies():
    strategy = build_strategy("self-consistency:n=16, temperature=0.5")
    assert strategy == SelfConsistency(n=16, temperature=0.5)
    assert build_strategy(strategy.spec) == strategy
    assert parse_spec("single") == ("single", {})


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "empty"),
        ("nope", "unknown strategy"),
        ("self-consistency:n", "key=value"),
        ("self-consistency:n=eight", "not a valid int"),
        ("self-consistency:m=8", "no option 'm'"),
        ("self-consistency:n=0", "n must be >= 1"),
        ("self-consistency:n=2,n=3", "given twice"),
        ("single:temperature=-1", "temperature"),
        ("weighted-vote:weight=loudest", "weight must be one of"),
        ("adaptive-consistency:batch=50", "batch must be in"),
        ("adaptive-consistency:confidence=1.5", "confidence"),
        ("best-of-n:verifier=oracle", "verifier must be one of"),
        ("best-of-n:verifier=py:no_such_module:f", "No module named"),
        ("best-of-majority:min_share=0", "min_share"),
        ("deepconf:warmup=40", "warmup must be in"),
        ("deepconf:keep=0", "keep must be in"),
        ("best-of-majority:k=0", "k must be"),
        ("best-of-n:verifier=pairwise@no-such-model", "unknown model"),
        ("diverse-prompts:n=4,approaches=5", "approaches must be in"),
        ("truth-inference:variants=shouting", "variants must be taken from"),
        ("truth-inference:temperatures=hot/cold", "temperatures must be numbers"),
        ("truth-inference:n=3", "every worker"),
        ("hogwild:workers=9", "workers must be in"),
        ("hogwild:layout=diagonal", "layout must be token, step, combined or independent"),
        ("hogwild:until=never", "until must be"),
        ("cascade:threshold=1.5", "threshold must be in"),
        ("cascade:models=smollm2++gemma3-270m", "models must be model specs"),
    ],
)
def test_bad_specs_fail_clearly(spec, message):
    with pytest.raises(SpecError, match=message):
        Resolver().check(build_strategy(spec).references())  # what solve and bench do first


@pytest.mark.parametrize(("name", "old"), [("cascade", "signal"), ("tree-search", "reward")])
def test_a_renamed_scorer_option_still_builds_by_its_old_name_and_warns(name, old):
    with pytest.warns(DeprecationWarning, match=f"option '{old}' is now called 'verifier'"):
        by_old_name = build_strategy(f"{name}:{old}=self-eval")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the new name warns of nothing
        by_new_name = build_strategy(f"{name}:verifier=self-eval")
    assert by_old_name == by_new_name and by_new_name.verifier == "self-eval"
    assert by_old_name.spec == f"{name}:verifier=self-eval"  # recorded by the new name
    with pytest.raises(SpecError, match=f"give verifier only \\({old} is its old name\\)"):
        build_strategy(f"{name}:{old}=self-eval,verifier=agreement")


def test_registry_lists_every_strategy_once():
    assert set(STRATEGIES) == {
        "single",
        "self-consistency",
        "weighted-vote",
        "adaptive-consistency",
        "best-of-n",
        "best-of-majority",
        "deepconf",
        "rpc",
        "diverse-prompts",
        "truth-inference",
        "beam",
        "particle-filter",
        "particle-gibbs",
        "a-star",
        "tree-search",
        "debate",
        "mixture-of-agents",
        "leap",
        "hogwild",
        "cascade",
        "route",
        "spec-reason",
        "compute-optimal",
        "batch-allocation",
    }


def test_self_consistency_votes_over_real_samples(isolated_home):
    solution = thinktank.solve(
        "State the final answer: 6 + 3 =",
        strategy="self-consistency:n=8,max_tokens=48",
        seed=11,
    )
    assert solution.usage.completions == 8 and solution.usage.calls == 1
    assert len(solution.candidates) == 8
    assert sum(solution.votes.values()) == sum(c.answer is not None for c in solution.candidates)
    top = max(solution.votes.values())
    assert solution.votes[solution.answer] == top
    rows = Ledger().calls(solution.run_id)
    assert [r.n for r in rows] == [8]
    assert rows[0].completion_tokens == solution.usage.completion_tokens
    # Same seed, same run.
    again = thinktank.solve(
        "State the final answer: 6 + 3 =", strategy="self-consistency:n=8,max_tokens=48", seed=11
    )
    assert [c.text for c in again.candidates] == [c.text for c in solution.candidates]


def test_budget_cut_returns_best_so_far_and_says_so():
    solution = thinktank.solve(
        "What is 2 + 2?",
        strategy="self-consistency:n=8,max_tokens=64",
        budget=Budget(max_tokens=120),
        seed=3,
    )
    assert solution.budget_exhausted
    assert solution.usage.total_tokens <= 120
    assert 1 <= len(solution.candidates) < 8


def test_budget_with_no_room_gives_no_answer_not_an_error():
    solution = thinktank.solve("What is 2 + 2?", strategy="single", budget=Budget(max_tokens=5))
    assert solution.answer is None and solution.budget_exhausted
    assert solution.usage.calls == 0


def test_single_is_greedy_and_deterministic():
    first = thinktank.solve("What is 2 + 2?", strategy="single:max_tokens=40")
    second = thinktank.solve("What is 2 + 2?", strategy="single:max_tokens=40")
    assert first.candidates[0].text == second.candidates[0].text
    assert first.usage.completions == 1


def test_base_model_gets_a_few_shot_prompt(gemma):
    solution = thinktank.solve("What is 2 + 6?", model=gemma, strategy="single:max_tokens=24")
    assert solution.model == "gemma3-270m"
    # The stop strings end the answer before the model invents the next question.
    assert "Question:" not in solution.candidates[0].text
    assert solution.answer is not None


def test_weighted_vote_weighs_real_samples_by_their_probability():
    solution = thinktank.solve(
        "State the final answer: 6 + 3 =",
        strategy="weighted-vote:n=6,max_tokens=48,weight=sequence-prob",
        seed=5,
    )
    weights = confidence_weights(solution.candidates, "sequence-prob")
    assert max(weights) == pytest.approx(1.0)  # normalized to the most likely sample
    assert all(0 < w <= 1 for w in weights)
    totals: dict[str, float] = {}
    for candidate, weight in zip(solution.candidates, weights, strict=True):
        if candidate.answer is not None:
            key = answer_key(candidate.answer, "math")
            totals[key] = totals.get(key, 0.0) + weight
    assert answer_key(solution.answer, "math") == max(totals, key=totals.get)
    assert sum(solution.votes.values()) == pytest.approx(sum(totals.values()))


def test_decision_confidence_follows_the_beta_rule():
    assert decision_confidence([4]) == pytest.approx(1 - 0.5**5)
    assert decision_confidence([2, 2]) == pytest.approx(0.5)
    assert decision_confidence([3, 1]) < decision_confidence([4]) < decision_confidence([8])
    assert decision_confidence([]) == 0.0


def test_adaptive_consistency_stops_when_decided_and_not_before():
    """Each step's confidence is the Beta rule on the votes so far; a run stops at the
    first decided step or at max_n. Seeds are tried until one run was undecided at
    first and then stopped early, so both rules are seen to act (which seed does it
    depends on the model's numerics, so none is hard-coded)."""
    stopped_early_after_doubt = False
    for seed in range(8):
        run = thinktank.solve(
            "What is 1 + 1?",
            strategy="adaptive-consistency:max_n=16,batch=4,max_tokens=32,temperature=0.3,"
            "confidence=0.95",
            seed=seed,
        )
        steps = run.trace
        assert [step["samples"] for step in steps] == [4 * (i + 1) for i in range(len(steps))]
        assert run.usage.completions == steps[-1]["samples"] and run.usage.calls == len(steps)
        for step in steps:
            votes = majority_vote([c.answer for c in run.candidates[: step["samples"]]], "math")
            confidence = decision_confidence(list(votes.counts.values()))
            assert step["confidence"] == pytest.approx(confidence)
        assert all(step["confidence"] < 0.95 for step in steps[:-1])  # not before
        assert steps[-1]["confidence"] >= 0.95 or steps[-1]["samples"] == 16  # when decided
        if len(steps) > 1 and steps[-1]["samples"] < 16:
            stopped_early_after_doubt = True
            break
    assert stopped_early_after_doubt


def test_yes_probability_reads_yes_and_no_in_any_form():
    assert yes_probability({" Yes": math.log(0.3), "no": math.log(0.1), "2": -1.0}) == (
        pytest.approx(0.75)
    )
    assert yes_probability({"The": -0.1}) == 0.5
    assert option_probability({"A": math.log(0.2), " b": math.log(0.6)}, "a", "b") == (
        pytest.approx(0.25)
    )


def test_best_of_n_keeps_the_answer_its_verifier_scores_highest(isolated_home):
    solution = thinktank.solve(
        "What is 3 + 4?", strategy="best-of-n:n=4,max_tokens=48,verifier=self-eval", seed=1
    )
    scored = [c for c in solution.candidates if c.answer is not None]
    assert scored and all(0.0 <= c.score <= 1.0 for c in scored)
    best = max(c.score for c in scored)
    assert solution.votes[solution.answer] == pytest.approx(best)
    # One sampling call, then one judging call per distinct answer, all metered.
    distinct = {answer_key(c.answer, "math") for c in scored}
    assert solution.usage.calls == 1 + len(distinct)
    rows = Ledger().calls(solution.run_id)
    assert sum(r.n for r in rows) == solution.usage.completions == 4 + len(distinct)


def prefer_short_answers(problem, candidate) -> float:
    """A user verifier for the test below: shorter answers score higher."""
    return 1.0 / (1 + len(candidate.answer or ""))


def test_a_user_function_verifier_from_a_module_path():
    solution = thinktank.solve(
        "What is 3 + 4?",
        strategy="best-of-n:n=4,max_tokens=48,verifier=py:tests.test_strategies:prefer_short_answers",
        seed=1,
    )
    scored = [c for c in solution.candidates if c.answer is not None]
    assert all(c.score == pytest.approx(prefer_short_answers(None, c)) for c in scored)
    assert len(solution.answer) == min(len(c.answer) for c in scored)
    assert solution.usage.calls == 1  # the user's function made no model calls


def test_best_of_majority_verifies_only_frequent_answers():
    solution = thinktank.solve(
        "What is 3 + 4?", strategy="best-of-majority:n=8,max_tokens=48,min_share=0.25", seed=1
    )
    counts = {}
    for c in solution.candidates:
        if c.answer is not None:
            key = answer_key(c.answer, "math")
            counts[key] = counts.get(key, 0) + 1
    for c in solution.candidates:
        frequent = c.answer is not None and counts[answer_key(c.answer, "math")] >= 2
        assert (c.score is not None) == frequent
    assert counts[answer_key(solution.answer, "math")] >= 2


def test_another_model_can_judge_and_its_calls_are_metered_under_its_name(gemma):
    solution = thinktank.solve(
        "What is 3 + 4?", strategy="best-of-n:n=4,max_tokens=48,verifier=judge@gemma3-270m", seed=1
    )
    rows = Ledger().calls(solution.run_id)
    judged = {answer_key(c.answer, "math") for c in solution.candidates if c.answer is not None}
    assert [r.model for r in rows] == ["smollm2"] + ["gemma3-270m"] * len(judged)
    assert all(r.completion_tokens == 1 for r in rows[1:])
    assert sum(r.cost_usd for r in rows) == pytest.approx(solution.usage.cost_usd)
    with pytest.raises(SpecError, match="unknown model"):  # before anything is spent
        thinktank.solve("What is 3 + 4?", strategy="best-of-n:verifier=judge@no-such-model")


def test_best_of_majority_keeps_the_leader_when_no_answer_is_frequent():
    # min_share=1: no answer holds every vote unless all agree; the leader is still verified.
    solution = thinktank.solve(
        "What is 3 + 4?", strategy="best-of-majority:n=8,max_tokens=48,min_share=1", seed=1
    )
    scored = {answer_key(c.answer, "math") for c in solution.candidates if c.score is not None}
    leader = answer_key(next(iter(majority_vote(
        [c.answer for c in solution.candidates], "math").counts)), "math")  # fmt: skip
    assert scored == {leader}
    assert answer_key(solution.answer, "math") == leader


def test_adaptive_consistency_batches_reuse_the_cached_prompt():
    adaptive = thinktank.solve(
        "What is 3 + 4?",
        strategy="adaptive-consistency:max_n=6,batch=2,max_tokens=24,confidence=0.99",
        seed=5,
    )
    calls = Ledger().calls(adaptive.run_id)
    assert len(calls) == len(adaptive.trace) > 1
    # Later batches take the prompt from the prefix cache instead of decoding it again.
    assert all(c.cached_tokens == c.prompt_tokens for c in calls[1:])
    assert adaptive.usage.cached_tokens == sum(c.cached_tokens for c in calls) > 0


def test_pairwise_judge_compares_every_pair_of_distinct_answers_both_ways(isolated_home):
    for seed in range(3, 11):  # until the samples disagree: then there are pairs to compare
        solution = thinktank.solve(
            "What is 3 + 4?",
            strategy="best-of-n:n=6,max_tokens=48,verifier=pairwise,temperature=1.0",
            seed=seed,
        )
        by_answer = {answer_key(c.answer, "math"): c.score for c in solution.candidates
                     if c.answer is not None}  # fmt: skip
        if len(by_answer) > 1:
            break
    distinct = len(by_answer)  # n=6 is within the judge's MAX_ANSWERS: every one compared
    assert distinct > 1
    assert all(0.0 <= score <= 1.0 for score in by_answer.values())
    # Each pair shares one win between its two answers: scores sum to distinct / 2.
    assert sum(by_answer.values()) == pytest.approx(distinct / 2)
    assert solution.usage.calls == 1 + distinct * (distinct - 1)
    assert solution.votes[solution.answer] == max(by_answer.values())


def test_best_of_majority_can_answer_with_its_k_best_frequent_answers():
    solution = thinktank.solve(
        "What is 3 + 4?",
        strategy="best-of-majority:n=8,max_tokens=48,min_share=0.125,k=3,temperature=1.0",
        seed=4,
    )
    ranked = list(solution.votes)
    assert solution.answers == ranked[:3]
    keys = [answer_key(a, "math") for a in solution.answers]
    assert len(set(keys)) == len(keys)  # k different answers, not k forms of one


def test_diverse_prompts_gives_each_approach_its_share_of_samples():
    solution = thinktank.solve(
        "What is 3 + 4?", strategy="diverse-prompts:n=5,approaches=2,max_tokens=32", seed=1
    )
    assert [step["approach"] for step in solution.trace] and len(solution.trace) == 2
    assert len(solution.candidates) == 5
    assert solution.usage.calls == 3  # the approaches, then one batch per approach
    rows = Ledger().calls(solution.run_id)
    assert [r.n for r in rows] == [1, 3, 2]


def test_truth_inference_pools_its_workers_on_one_problem():
    solution = thinktank.solve(
        "What is 3 + 4?",
        strategy="truth-inference:n=6,variants=instruct/plain,temperatures=0.3/1.0,max_tokens=32",
        seed=1,
    )
    workers = [c.worker for c in solution.candidates]
    assert workers == [
        "smollm2|instruct|T=0.3",
        "smollm2|instruct|T=0.3",
        "smollm2|instruct|T=1",
        "smollm2|instruct|T=1",
        "smollm2|plain|T=0.3",
        "smollm2|plain|T=1",
    ]  # fmt: skip  (6 samples over 4 workers: the first two draw one more)
    # Alone, a problem gets the plain vote of all its workers.
    vote = majority_vote([c.answer for c in solution.candidates], "math")
    assert solution.answer == vote.winner


@given(
    st.lists(st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0]), max_size=12),
    st.integers(0, 40),
    st.integers(0, 6),
)
def test_allocation_follows_doubt_within_the_total_and_the_cap(doubts, total, cap):
    given_ = allocate(doubts, total, cap)
    assert sum(given_) == min(total, cap * sum(d > 0 for d in doubts))
    assert all(0 <= g <= cap for g in given_)
    assert all(g == 0 for g, d in zip(given_, doubts, strict=True) if d == 0)
    for gi, di in zip(given_, doubts, strict=True):  # more doubt never gets fewer samples
        assert all(gi >= gj - 1 for gj, dj in zip(given_, doubts, strict=True) if di >= dj)


def test_batch_allocation_spends_the_batch_budget_on_the_problems_in_doubt(tmp_path):
    ledger = Ledger(tmp_path / "ledger.db")
    # Easy sums, whose probes mostly agree, and hard ones, whose probes mostly do not.
    suite = (
        "rg:chain_sum?min_terms=2&max_terms=2&min_digits=1&max_digits=1&size=3&seed=3 + "
        "rg:chain_sum?min_terms=4&max_terms=4&min_digits=3&max_digits=3&size=3&seed=3"
    )
    adaptive = "batch-allocation:max_tokens=48,n=3"
    probe = "self-consistency:max_tokens=48,n=2"
    outcome = thinktank.benchmark(suite, [adaptive, probe], ledger=ledger, concurrency=2)
    rows = {(r.strategy, r.problem_id): r for r in ledger.results(outcome.run_id)}
    problems = sorted({pid for _, pid in rows})
    spent = 0
    for pid in problems:
        mine, probed = rows[(adaptive, pid)], rows[(probe, pid)]
        # The probe is self-consistency's stream: the very same first two samples.
        assert mine.sample_keys[:2] == probed.sample_keys
        agreed = len(set(probed.sample_keys)) == 1 and probed.sample_keys[0] is not None
        if agreed:
            assert len(mine.sample_keys) == 2  # a unanimous probe gets nothing more
        spent += len(mine.sample_keys)
    assert spent <= 3 * len(problems)
    doubtful = [p for p in problems if len(set(rows[(probe, p)].sample_keys)) > 1
                or None in rows[(probe, p)].sample_keys]  # fmt: skip
    assert 0 < len(doubtful) < len(problems)  # both kinds of problem, so both rules ran
    assert spent == 2 * len(problems) + min(len(problems), 14 * len(doubtful))


def test_batch_allocation_alone_gives_a_doubtful_problem_every_sample_up_to_max_n(isolated_home):
    seen = set()  # tried until both a unanimous and a doubtful probe were met
    for question, seed in itertools.product(["What is 1 + 1?", "What is 17 + 26?"], range(5)):
        solution = thinktank.solve(question, seed=seed,
                                   strategy="batch-allocation:max_n=6,max_tokens=32")  # fmt: skip
        probe = [answer_key(c.answer, "math") if c.answer else None
                 for c in solution.candidates[:2]]  # fmt: skip
        unanimous = probe[0] is not None and probe[0] == probe[1]
        assert len(solution.candidates) == (2 if unanimous else 6)
        assert solution.trace[0]["extra_samples"] == len(solution.candidates) - 2
        seen.add(unanimous)
        if seen == {True, False}:
            break
    assert seen == {True, False}


def test_the_middle_rule_starves_the_unanimous_and_the_hopeless():
    from thinktank.strategies.allocate import ALLOCATION_RULES

    middle = ALLOCATION_RULES["middle"]
    # Probes of 4: unanimous (0), 3-1 (0.25), 2-2 (0.5), no answer at all (1).
    doubts = [0.0, 0.25, 0.5, 1.0]
    given = allocate([middle(d) for d in doubts], total=7, cap=8)
    assert given[0] == given[3] == 0 and given[2] > given[1] > 0 and sum(given) == 7
    with pytest.raises(SpecError, match="rule"):
        build_strategy("batch-allocation:rule=random")
