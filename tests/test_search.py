"""Search over partial solutions: step generation, process rewards, the four algorithms.

Control flow is checked on a scripted model with a scripted reward (the
invariants must hold exactly); every algorithm also runs on the real embedded
model with tiny budgets.
"""

from __future__ import annotations

import random
import subprocess
import sys
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

import thinktank
from thinktank.errors import SpecError, ThinktankError
from thinktank.meter import Budget, Meter
from thinktank.models.base import Capabilities, Completion, Price, Sampling
from thinktank.models.llamacpp import LlamaCppModel
from thinktank.problem import Problem
from thinktank.resolver import Resolver
from thinktank.solution import Partial
from thinktank.strategies import build_strategy
from thinktank.strategies.base import Context
from thinktank.strategies.search import (
    AStarDecoding,
    BeamSearch,
    ParticleFilter,
    ParticleGibbs,
    Stepper,
    TreeNode,
    TreeSearch,
    split_pattern,
    split_steps,
)
from thinktank.verify.process import RemoteProcessReward, RolloutReward

from .conftest import JsonEndpoint

PROBLEM = Problem(id="p", prompt="What is 1 + 2?", kind="math")


class ScriptedModel:
    """Writes "stepN-x. " steps, then "The answer is K" after 2-4 of them.

    What it writes depends only on the seed, the sample and the reply so far, like
    a real seeded model; asked without the step delimiter it writes to the end.
    """

    name = "scripted"
    capabilities = Capabilities(chat=True, logprobs=True, batched=True)
    price = Price(0.0, 0.0)

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def count_tokens(self, prompt) -> int:
        return 10 + len(self._reply(prompt)) // 4

    @staticmethod
    def _reply(prompt) -> str:
        return prompt[-1]["content"] if prompt[-1]["role"] == "assistant" else ""

    def generate(self, prompt, n=1, sampling=None, **options):
        sampling = sampling or Sampling()
        reply = self._reply(prompt)
        self.calls.append((reply, n))
        out = []
        for i in range(n):
            rng = random.Random(f"{sampling.seed}/{sampling.sample_offset + i}/{reply}")
            steps = reply.count(". ")
            length = 2 + rng.randint(0, 2)
            text = ""
            while True:
                if steps >= length:
                    text += f"The answer is {rng.randint(1, 3)}"
                    stop = None
                    break
                text += f"step{steps}-{rng.randint(0, 9)}"
                steps += 1
                if ". " in sampling.stop:
                    stop = ". "
                    break
                text += ". "
            out.append(
                Completion(text=text, token_ids=tuple(range(len(text) // 4 + 1)),
                           logprobs=(-0.5,) * (len(text) // 4 + 1), finish_reason="stop",
                           prompt_tokens=self.count_tokens(prompt), stop_string=stop)
            )  # fmt: skip
        return out


class ScriptedReward:
    """A fixed pseudo-random value per partial text (no model calls)."""

    name = "scripted"

    def values(self, problem, partials, ctx):
        return [zlib.crc32(p.text.encode()) % 1000 / 1000 for p in partials]


def scripted(strategy):
    strategy.process_reward = lambda problem, ctx: ScriptedReward()  # the instance's
    return strategy


def scripted_context(seed=1, budget=None):
    return Context(ScriptedModel(), Meter(budget), seed=seed)


def search_steps(solution):
    """The search's own trace entries: all but the last, its whole tree."""
    *steps, tree = solution.trace
    assert set(tree) == {"tree"}
    return steps


# -- step generation --------------------------------------------------------------


@given(st.text(alphabet="ab. \n", max_size=40))
def test_steps_join_back_to_the_text_and_end_at_delimiters(text):
    pattern = split_pattern("sentence")
    steps = split_steps(text, pattern)
    assert "".join(steps) == text
    for step in steps[:-1]:
        assert step.endswith((". ", "\n\n"))
        assert not pattern.search(step[:-2])  # no delimiter inside a step


def test_bad_search_specs_fail_clearly():
    for spec, message in [
        ("beam:beams=0", "beams and expand"),
        ("beam:split=words", "split must be one of"),
        ("beam:split=re:(", "split 're:\\('"),
        ("beam:value=oracle", "value must be"),
        ("beam:value=rollout@oracle", "verifier must be one of"),
        ("beam:value=prm@localhost:8000", "must start with http"),
        ("particle-filter:weight_temperature=0", "weight_temperature"),
        ("a-star:step_cost=-1", "step_cost"),
        ("tree-search:verifier=oracle", "verifier must be one of"),
        ("tree-search:answer=first", "answer must be one of"),
    ]:
        with pytest.raises(SpecError, match=message):
            Resolver().check(build_strategy(spec).references())  # what solve and bench do


def test_children_reuse_the_parents_kv_cache(smollm2):
    ctx = Context(smollm2, Meter(), seed=4)
    beam = BeamSearch(step_tokens=12)
    stepper = Stepper(PROBLEM, ctx, beam)
    [children] = beam.step(stepper, [Partial()], [3])
    assert len(children) == 3 and all(c.steps for c in children)
    parent_prompt = ctx.meter.usage.prompt_tokens
    cached_before = ctx.meter.usage.cached_tokens
    beam.step(stepper, children, [2, 2, 2])
    # Each child's prompt starts with the root's prompt: the prefix cache serves it.
    assert ctx.meter.usage.cached_tokens - cached_before >= 3 * (parent_prompt - 1)
    # The model continues the reply: the chat template is not closed after it.
    rendered = smollm2.render(stepper_prompt(smollm2, children[0]))
    assert rendered.endswith(children[0].text)
    assert rendered.startswith(smollm2.render(thinktank.prompts.build_prompt(PROBLEM, smollm2)))


def stepper_prompt(model, partial):
    return thinktank.prompts.continuation_prompt(PROBLEM, model, partial.text)


def test_stop_string_is_reported_on_the_completion(smollm2):
    [completion] = smollm2.generate(
        [{"role": "user", "content": "Count: 1, 2, 3, 4, 5, 6"}],
        1,
        Sampling(temperature=0.0, max_tokens=40, stop=(",",)),
    )
    assert completion.finish_reason == "stop" and completion.stop_string == ","
    [ended] = smollm2.generate(
        [{"role": "user", "content": "Say hi."}], 1, Sampling(temperature=0.0, max_tokens=40)
    )
    assert ended.stop_string is None


# -- the algorithms' invariants (scripted model and reward) -----------------------------


def test_beam_keeps_exactly_k_partials_and_the_best_of_them():
    solution = scripted(BeamSearch(beams=3, expand=2)).solve(PROBLEM, scripted_context())
    assert search_steps(solution) and solution.answer in {"1", "2", "3"}
    for step in search_steps(solution):
        assert step["kept"] == 3 <= step["pool"]
        assert step["values"] == sorted(step["values"], reverse=True)
    reward = ScriptedReward()
    best = max(solution.candidates, key=lambda c: c.score)
    assert best.answer == solution.answer
    assert all(
        c.score == reward.values(PROBLEM, [Partial((c.text,))], None)[0]
        for c in solution.candidates
    )


def test_particle_weights_are_normalised_and_resampling_keeps_the_count():
    solution = scripted(ParticleFilter(particles=6)).solve(PROBLEM, scripted_context())
    assert search_steps(solution)
    for step in search_steps(solution):
        assert sum(step["weights"]) == pytest.approx(1.0)
        assert all(w >= 0 for w in step["weights"]) and len(step["weights"]) == 6
        assert step["resampled"] == 6
    assert search_steps(solution)[-1]["finished"] == 6


def test_particle_filter_is_seeded():
    first = scripted(ParticleFilter(particles=5)).solve(PROBLEM, scripted_context(seed=9))
    again = scripted(ParticleFilter(particles=5)).solve(PROBLEM, scripted_context(seed=9))
    assert [c.text for c in first.candidates] == [c.text for c in again.candidates]


def test_particle_gibbs_keeps_the_reference_particle():
    strategy = scripted(ParticleGibbs(particles=4, iterations=2, reference="best"))
    solution = strategy.solve(PROBLEM, scripted_context(seed=5))
    first_sweep = solution.candidates[:4]
    reference = max(first_sweep, key=lambda c: c.score)
    assert {step["sweep"] for step in search_steps(solution)} == {0, 1}
    # The first sweep's best survives every resampling of the second sweep.
    assert reference.text in [c.text for c in solution.candidates[4:]]


def test_a_star_expands_in_priority_order():
    solution = scripted(AStarDecoding(expand=3, max_expansions=12)).solve(
        PROBLEM, scripted_context(seed=2)
    )
    frontier: dict[int, float] = {}
    pops = 0
    for event in search_steps(solution):
        if "push" in event:
            frontier[event["push"]] = event["f"]
        else:
            assert event["f"] == min(frontier.values())  # the lowest f comes out first
            del frontier[event["pop"]]
            pops += 1
    assert pops >= 2


def test_tree_values_after_mean_backup_are_the_mean_of_the_rollouts_below():
    strategy = TreeSearch(rollouts=10, batch=3, branching=2, backup="mean", expansion="ucb")
    solution, tree = strategy.grow(PROBLEM, scripted_context(seed=3))
    assert len(tree.root.rollouts) == len(tree.rewards) == 10 == len(solution.candidates)

    def leaves(node: TreeNode) -> list[TreeNode]:
        if not node.children:
            return [node]
        return [leaf for child in node.children for leaf in leaves(child)]

    def check(node: TreeNode) -> None:
        below = [r for leaf in leaves(node) for r in leaf.rollouts]
        assert sorted(below) == sorted(node.rollouts)
        expected = sum(tree.rewards[r] for r in below) / len(below)
        assert node.value == pytest.approx(expected)
        for child in node.children:
            assert len(child.children) <= 2 or child is tree.root
            check(child)

    check(tree.root)
    assert len(tree.root.children) <= 2
    # Later rollouts start below the root: earlier work is reused.
    assert any(len(child.children) > 1 for child in tree.root.children) or any(
        len(grand.children) > 1 for child in tree.root.children for grand in child.children
    )


def test_tree_search_is_anytime():
    small = TreeSearch(rollouts=4, batch=2).solve(PROBLEM, scripted_context(seed=8))
    large = TreeSearch(rollouts=12, batch=2).solve(PROBLEM, scripted_context(seed=8))
    # The larger run went through the smaller one's states first (same seed, same order).
    small_steps, large_steps = search_steps(small), search_steps(large)
    assert large_steps[: len(small_steps)] == small_steps
    assert large_steps[-1]["rollouts"] == 12


# -- the real model ---------------------------------------------------------------------

TINY = {
    "beam": "beam:beams=2,expand=2,max_steps=3,step_tokens=12,max_tokens=48",
    "particle-filter": "particle-filter:particles=3,max_steps=3,step_tokens=12,max_tokens=48",
    "particle-gibbs": "particle-gibbs:particles=2,max_steps=2,step_tokens=12,max_tokens=32",
    "a-star": "a-star:expand=2,max_expansions=3,step_tokens=12,max_tokens=48",
    "tree-search": "tree-search:rollouts=4,batch=2,max_tokens=48",
}


@pytest.mark.parametrize("spec", TINY.values(), ids=TINY.keys())
def test_each_search_runs_on_the_real_model_by_spec(spec, smollm2):
    solution = thinktank.solve("What is 4 + 4?", model=smollm2, strategy=spec, seed=1)
    assert solution.strategy == build_strategy(spec).spec
    assert solution.candidates and solution.usage.calls >= 2
    assert all(0 <= c.score <= 1 for c in solution.candidates)
    assert solution.usage.completion_tokens > 0


@pytest.mark.parametrize("spec", TINY.values(), ids=TINY.keys())
def test_each_search_respects_the_budget_and_answers_with_what_it_has(spec, smollm2):
    unbudgeted = thinktank.solve("What is 4 + 4?", model=smollm2, strategy=spec, seed=2)
    cap = unbudgeted.usage.total_tokens // 2  # half of what it spends when free to
    solution = thinktank.solve("What is 4 + 4?", model=smollm2, strategy=spec, seed=2,
                               budget=Budget(max_tokens=cap))  # fmt: skip
    assert 0 < solution.usage.total_tokens <= cap
    assert solution.budget_exhausted


def test_self_eval_values_partials_in_one_batch(smollm2):
    ctx = Context(smollm2, Meter(), seed=1)
    partials = [
        Partial(("1 + 2 = 3. ",)),
        Partial(("1 + 2 = 5. ",)),
        Partial(("The answer is 3.",), finished=True),
    ]
    values = (
        Resolver()
        .process_reward("self-eval", Sampling())
        .values(PROBLEM, [Partial(), *partials], ctx)
    )
    assert values[0] == 0.5  # nothing written yet: nothing to judge
    assert all(0 < v < 1 for v in values[1:])
    assert ctx.meter.usage.calls == 3 and ctx.meter.usage.completion_tokens == 3


def test_rollout_value_scores_completions_by_agreement(smollm2):
    ctx = Context(smollm2, Meter(), seed=1)
    reward = RolloutReward(Sampling(max_tokens=32), n=3)
    finished = Partial(("The answer is 3.",), finished=True)
    values = reward.values(PROBLEM, [Partial(("1 + 2 = ",)), finished], ctx)
    assert ctx.meter.usage.completions == 3  # the finished partial is its own rollout
    assert all(0 <= v <= 1 for v in values)
    # Agreement: the finished partial's value is the share of all 4 rollouts saying 3.
    assert values[1] * 4 == pytest.approx(round(values[1] * 4)) and values[1] >= 0.25


# -- an external process reward model over HTTP ---------------------------------------


def pooling_server(reply: bytes | None = None) -> JsonEndpoint:
    """A stand-in for vLLM's pooling API: P(good) = 0.9 when a step mentions 3, else 0.2."""

    def respond(method, body):
        if method == "GET":
            return 200, {"data": [{"id": "toy-prm"}]}
        if reply is not None:
            return 200, reply
        steps = body["messages"][1]["content"].split("<extra_0>")[:-1]
        rows = [[0.1, 0.9] if "3" in step else [0.8, 0.2] for step in steps]
        return 200, {"data": [{"index": 0, "data": rows}]}

    return JsonEndpoint(respond)


def test_external_prm_request_format_and_values():
    server = pooling_server()
    try:
        reward = Resolver().process_reward(f"prm@{server.url}/v1", Sampling())
        partials = [Partial(("1 + 2 = 3. ",)), Partial(("1 + 2 = 3. ", "So 4. "))]
        assert reward.values(PROBLEM, [Partial(), *partials], None) == [0.5, 0.9, 0.2]
        first = server.requests[0]
        assert first["model"] == "toy-prm"  # from GET /v1/models
        assert first["messages"] == [
            {"role": "user", "content": PROBLEM.prompt},
            {"role": "assistant", "content": "1 + 2 = 3.<extra_0>"},
        ]
    finally:
        server.close()


def test_beam_search_with_an_external_prm_on_the_real_model(smollm2):
    server = pooling_server()
    try:
        spec = f"beam:beams=2,expand=2,max_steps=2,step_tokens=12,value=prm@{server.url}#toy"
        solution = thinktank.solve("What is 1 + 2?", model=smollm2, strategy=spec, seed=1)
        assert server.requests and all(r["model"] == "toy" for r in server.requests)
        assert {c.score for c in solution.candidates} <= {0.9, 0.2}
    finally:
        server.close()


def test_external_prm_failures_are_clear_errors():
    server = pooling_server(reply=b"not json")
    try:
        with pytest.raises(ThinktankError, match="process reward model at"):
            RemoteProcessReward(server.url, "m").values(PROBLEM, [Partial(("x. ",))], None)
    finally:
        server.close()
    with pytest.raises(ThinktankError, match="process reward model at"):
        RemoteProcessReward(server.url, "m").values(PROBLEM, [Partial(("x. ",))], None)


def test_a_seeded_search_is_reproducible_on_the_real_model(smollm2):
    # Its steps are several calls at once, one thread each: they must reach the
    # batch in the same order whichever thread runs first (a fresh model each
    # time, since what else the KV cache holds shifts the logits slightly).
    def run() -> list[str]:
        model = LlamaCppModel(smollm2.path, name="smollm2", chat=True)
        try:
            strategy = build_strategy("beam:beams=3,expand=3,max_steps=3,step_tokens=16")
            return [
                c.text for c in strategy.solve(PROBLEM, Context(model, Meter(), seed=1)).candidates
            ]
        finally:
            model.close()

    assert run() == run()


def test_search_on_a_base_model_ends_answers_at_its_own_stops(gemma):
    solution = thinktank.solve(
        "What is 7 + 5?", model=gemma, strategy="beam:beams=2,expand=2,max_steps=3,step_tokens=16",
        seed=1,
    )  # fmt: skip
    assert solution.candidates
    # "\n\n" ends a base model's answer (the next thing it writes is a new question),
    # even though it also delimits a step for chat models.
    assert all("\n\n" not in c.text and "Question:" not in c.text for c in solution.candidates)


def test_an_unreachable_prm_is_a_clear_cli_error(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "thinktank", "solve", "What is 1 + 1?", "--strategy",
         "beam:value=prm@http://127.0.0.1:9,max_steps=2"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2
    assert "process reward model at http://127.0.0.1:9" in result.stderr
    assert "Traceback" not in result.stderr
