"""The searches are their papers' algorithms (issue 18): particle filtering and particle
Gibbs resample by the softmax of the reward's logit and draw the reference particle by
weight (Puri et al.); tree search backs rewards up by DTS*'s soft Bellman equation
(Jain et al.). Expectations are computed by hand from the papers' formulas; the
scripted model and reward of `test_search` drive the control flow; each strategy also
runs once on the real embedded model, checked by properties that hold for any output.
"""

from __future__ import annotations

import math

import pytest

from thinktank.errors import SpecError
from thinktank.meter import Meter
from thinktank.problem import Problem
from thinktank.strategies import build_strategy
from thinktank.strategies.base import Context
from thinktank.strategies.search import (
    ParticleFilter,
    ParticleGibbs,
    SearchTree,
    TreeNode,
    TreeSearch,
    resampling_weights,
)

from .test_search import PROBLEM, scripted, scripted_context, search_steps


def odds_weights(values: list[float]) -> list[float]:
    """softmax(logit(r)) written out: each reward's odds r / (1 - r), normalised."""
    odds = [r / (1 - r) for r in values]
    return [o / sum(odds) for o in odds]


# -- particle filtering: the weights --------------------------------------------------


def test_rewards_resample_by_the_softmax_of_their_logits():
    # Odds 9 : 1 : 1/9 (the example).
    assert resampling_weights([0.9, 0.5, 0.1]) == pytest.approx([81 / 91, 9 / 91, 1 / 91])
    # Temperature 2 takes the square root of the odds: 3 : 1 : 1/3.
    assert resampling_weights([0.9, 0.5, 0.1], temperature=2) == pytest.approx(
        [9 / 13, 3 / 13, 1 / 13]
    )
    # The earlier rule, softmax of the raw reward, is nearly uniform.
    total = math.exp(0.9) + math.exp(0.5) + math.exp(0.1)
    assert resampling_weights([0.9, 0.5, 0.1], "value") == pytest.approx(
        [math.exp(0.9) / total, math.exp(0.5) / total, math.exp(0.1) / total]
    )
    # A reward of exactly 0 or 1 is clipped, not infinite.
    weights = resampling_weights([1.0, 0.0, 0.5])
    assert weights.sum() == pytest.approx(1.0) and weights[1] > 0 and weights[0] > 0.99


@pytest.mark.parametrize("transform", ["logit", "value"])
def test_the_particle_filter_resamples_by_its_weight_transform(transform):
    strategy = scripted(ParticleFilter(particles=5, weight_transform=transform))
    solution = strategy.solve(PROBLEM, scripted_context(seed=4))
    assert search_steps(solution)
    for step in search_steps(solution):
        values = step["values"]
        if transform == "logit":
            expected = odds_weights(values)
        else:
            expected = [math.exp(v) / sum(math.exp(u) for u in values) for v in values]
        assert step["weights"] == pytest.approx(expected, abs=1e-9)


def test_bad_weight_and_backup_options_fail_clearly():
    for spec, message in [
        ("particle-filter:weight_transform=sigmoid", "weight_transform must be one of"),
        ("particle-gibbs:reference=first", "reference must be one of"),
        ("tree-search:backup=max", "backup must be one of"),
        ("tree-search:backup_lambda=0", "backup_lambda must be > 0"),
        ("tree-search:expansion=wide", "expansion must be one of"),
    ]:
        with pytest.raises(SpecError, match=message):
            build_strategy(spec)


# -- particle Gibbs: the reference particle -------------------------------------------


def test_particle_gibbs_draws_its_reference_by_weight():
    """Over many seeds the reference is the best particle about as often as the weights
    say, not always (the earlier rule), and it survives into the next sweep."""
    seeds, picked_best, expected_best, variance = range(60), 0, 0.0, 0.0
    for seed in seeds:
        strategy = scripted(ParticleGibbs(particles=4, iterations=2))
        solution = strategy.solve(PROBLEM, scripted_context(seed=seed))
        [choice] = [step for step in solution.trace if "reference" in step]
        first_sweep = solution.candidates[:4]  # every particle of sweep 0 finished
        values = [c.score for c in first_sweep]
        assert choice["reference_weights"] == pytest.approx(odds_weights(values), abs=1e-9)
        reference = first_sweep[choice["reference"]]
        assert reference.text in [c.text for c in solution.candidates[4:]]
        # Copies of one particle tie: "the best" is any particle with the top value.
        top = max(values)
        weights = choice["reference_weights"]
        p_best = sum(w for w, v in zip(weights, values, strict=True) if v == top)
        picked_best += reference.score == top
        expected_best += p_best
        variance += p_best * (1 - p_best)
    assert picked_best < len(seeds)
    assert abs(picked_best - expected_best) <= 3 * math.sqrt(variance)


# -- tree search: the soft backup -----------------------------------------------------


def scripted_tree(**options) -> tuple[SearchTree, dict[str, TreeNode]]:
    """root -> a -> x -> (end, reward 1.0); a -> y -> (end, 0.0); root -> b -> z -> (end, 0.55)."""
    tree = SearchTree(options.pop("branching", 2), options.pop("exploration", 0.0), **options)

    def rollout(start: TreeNode, *steps: str) -> None:
        partial = start.partial
        for i, step in enumerate(steps):
            partial = partial.extend(step, finished=i == len(steps) - 1, tokens=1, logprob=0.0)
        tree.add_rollout(start, partial)

    rollout(tree.root, "a. ", "x. ", "end 1")
    [a] = tree.root.children
    rollout(a, "y. ", "end 0")
    rollout(tree.root, "b. ", "z. ", "end 2")
    tree.rewards = [1.0, 0.0, 0.55]
    tree.back_up()
    x, y = a.children
    b = tree.root.children[1]
    return tree, {"a": a, "b": b, "x": x, "y": y, "z": b.children[0]}


def test_soft_backup_matches_the_soft_bellman_equation_by_hand():
    tree, node = scripted_tree(backup_lambda=1.0)
    # A leaf is its reward; a one-child chain passes its child's value up.
    assert (node["x"].value, node["y"].value, node["z"].value) == (1.0, 0.0, 0.55)
    # v(a) = log((e^1 + e^0) / 2); v(root) = log((e^v(a) + e^0.55) / 2).
    v_a = math.log((math.e + 1) / 2)
    assert node["a"].value == pytest.approx(v_a)
    assert node["b"].value == pytest.approx(0.55)
    assert tree.root.value == pytest.approx(math.log(((math.e + 1) / 2 + math.exp(0.55)) / 2))

    _, sharp = scripted_tree(backup_lambda=4.0)  # a larger lambda leans to the max
    assert sharp["a"].value == pytest.approx(math.log((math.exp(4) + 1) / 2) / 4)
    assert v_a < sharp["a"].value < 1.0


def test_the_mean_is_the_soft_backups_limit_and_the_earlier_rule_a_named_option():
    limit, node = scripted_tree(backup_lambda=1e-6)
    assert node["a"].value == pytest.approx(0.5, abs=1e-5)  # the mean of its children
    assert limit.root.value == pytest.approx((0.5 + 0.55) / 2, abs=1e-5)
    mean, node = scripted_tree(backup="mean")  # the rollouts' mean counts a's two
    assert node["a"].value == pytest.approx(0.5)
    assert mean.root.value == pytest.approx((1.0 + 0.0 + 0.55) / 3)


def test_dts_star_descends_by_the_soft_value():
    soft, node = scripted_tree()
    # Soft: v(a) = 0.62 > v(b) = 0.55, a is full, x (1.0) beats y (0.0); x has room.
    assert soft.select(1) == [node["x"]]
    mean, node = scripted_tree(backup="mean")
    # Mean: v(a) = 0.5 < v(b) = 0.55; b has room for a second child.
    assert mean.select(1) == [node["b"]]


def test_a_node_with_room_takes_a_new_child_before_the_search_descends():
    full, _ = scripted_tree(branching=3)
    assert full.select(1) == [full.root]  # the root has 2 of 3 children
    ucb, node = scripted_tree(branching=3, expansion="ucb")
    # The earlier rule: the root's new branch (its own value 0.59) loses to a (0.62),
    # a's new branch (0.62) to x (1.0); x's only child is finished.
    assert ucb.select(1) == [node["x"]]


# -- each strategy once on the real model ---------------------------------------------

REAL = Problem(id="r", prompt="What is 4 + 4?", kind="math")


def test_particle_filter_on_the_real_model_weights_by_the_logit(smollm2):
    strategy = build_strategy("particle-filter:particles=2,max_steps=2,step_tokens=8,max_tokens=16")
    solution = strategy.solve(REAL, Context(smollm2, Meter(), seed=1))
    assert search_steps(solution)
    for step in search_steps(solution):
        clipped = [min(max(v, 1e-7), 1 - 1e-7) for v in step["values"]]
        assert step["weights"] == pytest.approx(odds_weights(clipped), abs=1e-6)


def test_particle_gibbs_on_the_real_model_samples_and_keeps_its_reference(smollm2):
    strategy = build_strategy("particle-gibbs:particles=2,max_steps=2,step_tokens=8,max_tokens=16")
    solution = strategy.solve(REAL, Context(smollm2, Meter(), seed=1))
    [choice] = [step for step in solution.trace if "reference" in step]
    first_sweep = solution.candidates[:2]  # max_steps=2 ends every particle
    clipped = [min(max(c.score, 1e-7), 1 - 1e-7) for c in first_sweep]
    assert choice["reference_weights"] == pytest.approx(odds_weights(clipped), abs=1e-6)
    reference = first_sweep[choice["reference"]].text
    assert reference in [c.text for c in solution.candidates[2:]]


def test_tree_search_on_the_real_model_backs_up_soft_values(smollm2):
    strategy = TreeSearch(rollouts=3, batch=2, branching=2, backup_lambda=2.0, max_tokens=16)
    solution, tree = strategy.grow(REAL, Context(smollm2, Meter(), seed=1))
    # At most 3 rollouts, fewer when short answers end every branch early: in the full
    # suite (other tests on the same model first) this seed's samples came out otherwise.
    assert 2 <= len(tree.rewards) == len(solution.candidates) <= 3
    assert tree.root.children  # some value below is backed up, not a leaf's own

    def check(node: TreeNode) -> None:
        for child in node.children:
            check(child)
        if not node.children:
            assert node.value == tree.rewards[node.rollouts[0]]
        else:
            mean_exp = sum(math.exp(2.0 * c.value) for c in node.children) / len(node.children)
            assert node.value == pytest.approx(math.log(mean_exp) / 2.0)

    check(tree.root)
    assert search_steps(solution)[-1]["root_value"] == pytest.approx(tree.root.value, abs=1e-4)
