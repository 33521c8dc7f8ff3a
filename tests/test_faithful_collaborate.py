"""Debate (ReConcile), Mixture-of-Agents and SpecReason against their papers (issue 18).

The formulas and prompts are checked on hand-made inputs: scripted agents whose
answers sit at the end of long replies, stated confidences, a judge's scripted
scores. Scripted models drive the control flow; the prompts are built for the
real embedded models, and SpecReason's judging also runs on them once.
"""

from __future__ import annotations

import pytest

import thinktank
from thinktank.errors import SpecError
from thinktank.ledger import Ledger
from thinktank.meter import Meter
from thinktank.models.base import Capabilities, Completion, Price, Sampling
from thinktank.problem import Problem
from thinktank.resolver import Resolver
from thinktank.solution import Candidate
from thinktank.strategies.base import Context
from thinktank.strategies.collaborate import (
    Debate,
    MixtureOfAgents,
    answer_groups,
    reconcile_weight,
)
from thinktank.strategies.route import (
    STEP_SCORE_QUESTION,
    STEP_SCORE_REPLY,
    SpecReason,
    step_score,
)
from thinktank.verify import extract_answer

PROBLEM = Problem(id="p", prompt="What is 20 + 21?", kind="math")
#: Far longer than any cut a discussion could make, with the answer only at the end.
REASONING = "Let me add the tens first and then the units, checking each step. " * 25


def long_reply(answer: str, stated: float | None = 0.8) -> str:
    confidence = "" if stated is None else f" Confidence: {stated}"
    return f"{REASONING}So the answer is {answer}.{confidence}"


def agent(text: str, worker: str) -> Candidate:
    return Candidate(text, extract_answer(text, "math"), "stop", 40, worker=worker)


def completion(text: str, stop: str | None = None) -> Completion:
    return Completion(text=text, token_ids=tuple(range(len(text) // 4 + 1)), logprobs=None,
                      finish_reason="stop", prompt_tokens=10, stop_string=stop)  # fmt: skip


class ScriptedModel:
    """Replies from ``script(prompt, n, sampling)``; keeps every call."""

    capabilities = Capabilities(chat=True, logprobs=False, batched=True)
    price = Price(0.0, 0.0)

    def __init__(self, name: str, script) -> None:
        self.name, self.script, self.calls = name, script, []

    def count_tokens(self, prompt) -> int:
        return 10

    def generate(self, prompt, n=1, sampling=None, **options):
        self.calls.append((prompt, n))
        return [completion(*reply) for reply in self.script(prompt, n, sampling or Sampling())]


def text_of(prompt) -> str:
    return prompt if isinstance(prompt, str) else "\n".join(m["content"] for m in prompt)


# -- ReConcile's confidence ------------------------------------------------------------


@pytest.mark.parametrize(
    ("stated", "weight"),
    [(1.0, 1.0), (0.99, 0.8), (0.9, 0.8), (0.89, 0.5), (0.8, 0.5), (0.79, 0.3),
     (0.61, 0.3), (0.6, 0.1), (0.3, 0.1), (0.0, 0.1)],
)  # fmt: skip
def test_reconcile_recalibrates_stated_confidence_as_the_paper(stated, weight):
    assert reconcile_weight(stated) == weight


@pytest.mark.parametrize(
    ("vote", "winner", "counts"),
    [("recalibrated", "41", {"41": 1.0, "40": 0.6}),  # 1.0 vs 0.3 + 0.3
     ("confidence", "40", {"40": 1.4, "41": 1.0}),  # the stated numbers as they are
     ("majority", "40", {"40": 2, "41": 1})],
)  # fmt: skip
def test_the_final_answer_is_the_vote_the_option_names(vote, winner, counts):
    replies = [long_reply("40", 0.7), long_reply("40", 0.7), long_reply("41", 1.0)]
    model = ScriptedModel("scripted", lambda prompt, n, sampling: [(r,) for r in replies[:n]])
    solution = Debate(agents=3, rounds=1, vote=vote).solve(PROBLEM, Context(model, Meter()))
    assert solution.answer == winner
    assert solution.votes == pytest.approx(counts)


def test_an_agent_that_states_no_confidence_weighs_the_least():
    strategy = Debate()
    assert strategy.weight(agent(long_reply("41", None), "agent-1")) == 0.1
    assert strategy.weight(agent(long_reply("41", 0.95), "agent-1")) == 0.8


# -- what a discussion shows -------------------------------------------------------------


@pytest.mark.parametrize("discussion", ["grouped", "follow-up"])
@pytest.mark.parametrize("backend", ["smollm2", "gemma"])  # a chat model and a base model
def test_every_peers_whole_solution_and_answer_reach_each_agent(discussion, backend, request):
    model = request.getfixturevalue(backend)
    answers = [agent(long_reply(a), f"agent-{i + 1}") for i, a in enumerate(["41", "17", "41"])]
    prompts = Debate(discussion=discussion).discussion_prompts(PROBLEM, model, answers)
    assert len(prompts) == 3
    for prompt, own in zip(prompts, answers, strict=True):
        shown = text_of(prompt)
        assert PROBLEM.prompt in shown
        for peer in answers:
            if peer is not own or discussion == "grouped":
                assert peer.text in shown  # whole: its answer sits at its end
                assert f"answer is {peer.answer}" in shown or f"answer {peer.answer}" in shown
                assert "confidence 0.80" in shown


def test_reconciles_discussion_groups_the_answers():
    answers = [agent(long_reply(a), f"agent-{i + 1}") for i, a in enumerate(["17", "41", "41.0"])]
    groups = answer_groups(answers, "math")  # 41 and 41.0 are one answer
    assert [[a.worker for a in g] for g in groups] == [["agent-2", "agent-3"], ["agent-1"]]
    model = ScriptedModel("scripted", lambda prompt, n, sampling: [])
    shown = text_of(Debate().discussion_prompts(PROBLEM, model, answers)[0])
    assert "2 agents think the answer is 41." in shown
    assert "1 agent thinks the answer is 17." in shown
    assert shown.index("answer is 41.") < shown.index("answer is 17.")  # largest group first


def test_a_discussion_round_is_one_call_and_ends_at_consensus():
    def script(prompt, n, sampling):
        if "other agents" not in text_of(prompt):  # the opening round: they disagree
            return [(long_reply("41"),), (long_reply("17"),), (long_reply("41"),)][:n]
        return [(long_reply("41", 0.9),)] * n  # convinced: all agree

    model = ScriptedModel("scripted", script)
    solution = Debate(agents=3, rounds=3).solve(PROBLEM, Context(model, Meter(), seed=1))
    (opening, n_opening), (discussion, n_discussion) = model.calls  # no third round
    assert n_opening == n_discussion == 3
    assert "Confidence" in text_of(opening)  # each agent states its confidence at once
    assert all(a.text in text_of(discussion) for a in solution.candidates[:3])
    assert [t["answers"] for t in solution.trace] == [["41", "17", "41"], ["41"] * 3]
    assert solution.trace[1]["weights"] == [0.8] * 3 and solution.answer == "41"


def test_bad_debate_options_fail_clearly():
    with pytest.raises(SpecError, match="discussion must be one of"):
        thinktank.build_strategy("debate:discussion=shouting")
    with pytest.raises(SpecError, match="vote must be one of"):
        thinktank.build_strategy("debate:vote=loudest")


# -- Mixture-of-Agents' references -------------------------------------------------------


@pytest.mark.parametrize("backend", ["smollm2", "gemma"])
def test_moa_references_are_whole_and_follow_the_system_prompt(backend, request):
    model = request.getfixturevalue(backend)
    layer = [agent(long_reply(a), "layer-1") for a in ("41", "17", "40")]
    prompt = MixtureOfAgents().references_prompt(PROBLEM, model, layer)
    shown = text_of(prompt)
    assert all(f"{i + 1}. {c.text}" in shown for i, c in enumerate(layer))
    if isinstance(prompt, list):  # the chat model: references in the system message
        system, question = prompt
        assert system["role"] == "system" and "The answer is" in system["content"]
        assert all(c.text in system["content"] for c in layer)
        assert question == {"role": "user", "content": PROBLEM.prompt}


# -- SpecReason's judge ------------------------------------------------------------------


@pytest.mark.parametrize(("token", "score"), [("7", 7), (" 9", 9), ("0", 0), ("x", 0), ("", 0),
                                              ("10", 0)])  # fmt: skip
def test_a_step_score_is_the_judges_digit_else_zero(token, score):
    assert step_score(token) == score


class Models(Resolver):
    """Resolves the strategy's model specs to scripted models."""

    def __init__(self, **models) -> None:
        self.models = models

    def model(self, spec: str):
        return self.models[spec]


def drafting(prompt, n, sampling):
    """The small model: "small0. ", "small1. ", ... then the answer after three steps."""
    reply = prompt[-1]["content"] if prompt[-1]["role"] == "assistant" else ""
    steps = reply.count(". ")
    return [("The answer is 3",)] * n if steps >= 3 else [(f"small{steps}", ". ")] * n


def judging(scores: list[str]):
    """The large model: scores from ``scores`` when asked to judge, else its own step."""
    pending = iter(scores)

    def script(prompt, n, sampling):
        if prompt[-1] == {"role": "assistant", "content": STEP_SCORE_REPLY}:
            return [(next(pending),)]
        steps = prompt[-1]["content"].count(". ") if prompt[-1]["role"] == "assistant" else 0
        return [(f"large{steps}", ". ")] * n

    return script


@pytest.mark.parametrize(
    ("threshold", "written_by"),
    [(None, ["large", "small", "large", "small"]),  # the paper's: accept at 7 or more
     (6.0, ["small", "small", "large", "small"])],
)  # fmt: skip
def test_spec_reason_keeps_a_draft_exactly_when_the_last_step_scores_enough(threshold, written_by):
    small = ScriptedModel("small", drafting)
    large = ScriptedModel("large", judging(["6", "7", "x", "9"]))
    ctx = Context(small, Meter(), seed=1, resolver=Models(small=small, large=large))
    strategy = SpecReason(models="small+large", threshold=threshold)
    solution = strategy.solve(PROBLEM, ctx)
    assert [t["score"] for t in solution.trace] == [6, 7, 0, 9]
    assert [t["written_by"] for t in solution.trace] == written_by
    assert solution.answer == "3"
    judged = [p for p, _ in large.calls if p[-1]["content"] == STEP_SCORE_REPLY]
    assert len(judged) == 4
    for prompt in judged:  # the reasoning so far ends with the draft being judged
        reasoning, question = prompt[-3]["content"], prompt[-2]["content"]
        assert reasoning.endswith(("small0. ", "small1. ", "small2. ", "The answer is 3"))
        assert question == STEP_SCORE_QUESTION and "last reasoning step" in question


def test_spec_reason_threshold_is_on_its_judges_scale():
    with pytest.raises(SpecError, match=r"threshold must be in \[0, 9\]"):
        thinktank.build_strategy("spec-reason:threshold=12")
    with pytest.raises(SpecError, match=r"threshold must be in \[0, 1\]"):
        thinktank.build_strategy("spec-reason:judge=value,threshold=7")
    with pytest.raises(SpecError, match="judge must be one of"):
        thinktank.build_strategy("spec-reason:judge=vibes")


def test_spec_reason_scores_real_steps_in_one_token(gemma, tmp_path):
    ledger = Ledger(tmp_path / "ledger.db")
    spec = "spec-reason:max_tokens=16,step_tokens=8,max_steps=2"
    solution = thinktank.solve("What is 7 + 5?", strategy=spec, seed=3, ledger=ledger)
    assert solution.trace
    for step in solution.trace:
        assert step["score"] in range(10)
        assert step["written_by"] == ("gemma3-270m" if step["score"] < 7 else "smollm2")
    scores = [c for c in ledger.calls(solution.run_id) if c.model == "gemma3-270m" and c.n == 1]
    assert sum(c.completion_tokens == 1 for c in scores) >= len(solution.trace)
