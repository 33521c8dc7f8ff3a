"""Hogwild! as its paper and reference implementation run it (issue 18): what each worker
sees (checked against a plain forward pass), the paper's cache format, its periodic
redundancy check, its final-answer step, and the strategy's defaults."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from thinktank.meter import Meter
from thinktank.models.base import Capabilities, Completion, Price, Sampling, TeamFormat
from thinktank.problem import Problem
from thinktank.strategies import build_strategy
from thinktank.strategies.base import Context
from thinktank.strategies.collaborate import WORKER_NAMES, Hogwild, collaboration_rules

from .conftest import SUM_PROMPT

#: The reference implementation's strings (hogwild_llm, formatting.py), typed out here.
OTHERS = "\n\n### Work in progress (others)\n\n"
PIVOT = "<...>\n\n"
OWN = "### Work in progress (own)\n\n"
CHECK = "Quick check: am I doing redundant work? (yes/no): "
FINISH = (
    "\n\nWait, given the limited time, I have to give an answer right now. Considering all"
    " my previous attempts, I have to conclude that the final answer is"
)
PAPER = TeamFormat(step_headers=("**Alice [{step}]:** ", "**Bob [{step}]:** "),
                   others=OTHERS, pivot=PIVOT, own=OWN)  # fmt: skip
PROBLEM = Problem(id="p", prompt="What is 6 + 7?", kind="math")
#: thinktank's Hogwild! before issue 18, option by option.
EARLIER = (
    "hogwild:prompt=team,layout=token,step=line,check_every=0,final_tokens=0,visibility=next-step"
)


# -- what each worker sees ---------------------------------------------------------------


@pytest.mark.parametrize("reader", [0, 1])
@pytest.mark.parametrize("layout", ["token", "combined"])
def test_each_workers_logits_equal_a_plain_pass_over_what_it_sees(torch_smollm2, layout, reader):
    """The other worker writes a line and more (in ``combined`` the line joins the
    history), then the reader writes: after each of its tokens its logits equal a
    plain causal pass over exactly what it sees — the prompt, the history, the other's
    block, its own — so every block sits at its offset and every query is rotated by
    the right distances. (They take turns because when both write in one pass each
    reads the other's new token, which no single causal pass reproduces.)"""
    model = torch_smollm2
    other = 1 - reader
    session = model.session(SUM_PROMPT, ["", ""], layout, step_delimiter="\n")
    for token in model.tokenize(" Two plus three\n makes"):
        session.advance({other: token})
    assert (layout == "combined") == (session.history is not None and len(session.history) > 0)
    for token in model.tokenize(" five, I agree"):
        session.advance({reader: token})
        seen = [t for block, n in session.view(reader) for t in block.tokens[:n]]
        seen += session.workers[reader].tokens
        expected = model.logits(seen)[-1]
        np.testing.assert_allclose(session.logits[reader], expected,
                                   rtol=0, atol=1e-3 * np.abs(expected).max())  # fmt: skip
    # It read the other's text, placed before its own.
    assert "Two plus three" in session.text(reader).split("five, I agree")[0]


@pytest.mark.parametrize("layout", ["token", "combined"])
def test_the_others_steps_are_framed_as_in_the_paper(torch_smollm2, layout):
    """Each worker sees the history, "### Work in progress (others)", each other's
    unfinished step cut off by "<...>", then "### Work in progress (own)" and its own;
    in ``combined`` a finished paragraph moves to the history and the next step
    starts "**Alice [2]:** "; in ``token`` a worker's whole text stays in its block."""
    model = torch_smollm2
    session = model.session(SUM_PROMPT, ["**Alice [1]:** Hi.", "**Bob [1]:** Hi."], layout,
                            step_delimiter="\n\n", team=PAPER)  # fmt: skip
    for token in model.tokenize(" Five.\n\n"):
        session.advance({0: token})
    if layout == "combined":
        history, alice = "**Alice [1]:** Hi. Five.\n\n", "**Alice [2]:** "
    else:
        history, alice = "", "**Alice [1]:** Hi. Five.\n\n"
    bob, prompt = "**Bob [1]:** Hi.", model.render(SUM_PROMPT)
    assert session.text(1) == prompt + history + OTHERS + alice + PIVOT + OWN + bob
    assert session.text(0) == prompt + history + OTHERS + bob + PIVOT + OWN + alice
    # What the final-answer step reads: everything after the prompt, every step cut off.
    assert session.transcript() == history + OTHERS + alice + PIVOT + bob + PIVOT


@pytest.mark.parametrize("layout", ["step", "combined"])
def test_a_retired_workers_unfinished_step_stays_in_progress_in_combined(torch_smollm2, layout):
    """A worker that ends mid-step: in ``combined`` its step stays among the others' work
    in progress, cut off by "<...>" (the reference's final state, what its final-answer
    step reads), and the history keeps only finished steps; in ``step`` the others see
    nothing but the history, so it joins the history."""
    model = torch_smollm2
    session = model.session(SUM_PROMPT, ["**Alice [1]:** Hi.", "**Bob [1]:** Hi."], layout,
                            step_delimiter="\n\n", team=PAPER)  # fmt: skip
    for token in model.tokenize(" Five.\n\n Six"):
        session.advance({0: token})
    session.retire(0)
    finished, unfinished = "**Alice [1]:** Hi. Five.\n\n", "**Alice [2]:**  Six"
    bob = "**Bob [1]:** Hi."
    if layout == "combined":
        assert session.transcript() == finished + OTHERS + unfinished + PIVOT + bob + PIVOT
        assert session.text(1).endswith(finished + OTHERS + unfinished + PIVOT + OWN + bob)
    else:
        assert session.transcript() == finished + unfinished + bob
        assert session.text(1).endswith(finished + unfinished + bob)


def test_with_next_step_visibility_a_first_token_follows_only_the_prompt_and_its_header(
    torch_smollm2,
):
    """The workers' first headers are fed in one pass. ``same-step`` (the reference's):
    each worker's first token reads the others' headers too ("\\nBob: \\nAlice: ", where
    SmolLM2 writes blank lines and names); ``next-step`` (thinktank's before issue 18):
    its first logits are a plain pass over the prompt and its own header."""
    model = torch_smollm2
    headers = ["\nAlice: ", "\nBob: "]
    prompt = model.tokenize(model.render(SUM_PROMPT))
    for visibility in ("same-step", "next-step"):
        session = model.session(SUM_PROMPT, headers, "token", visibility=visibility)
        for worker, header in enumerate(headers):
            alone = model.logits(prompt + model.tokenize(header))[-1]
            gap = np.abs(session.logits[worker] - alone).max()
            if visibility == "next-step":
                assert gap < 1e-3 * np.abs(alone).max()
            else:
                assert gap > 0.05


@pytest.mark.parametrize("layout", ["token", "combined"])
def test_with_next_step_visibility_a_token_reaches_the_others_one_pass_later(torch_smollm2, layout):
    """What one worker feeds in a step the other reads from the next step on, never in
    that step (the counterpart of the same-step test in test_torch.py)."""
    model = torch_smollm2
    steps = [(" The", " I"), (" sum", " will"), (" is", " check")]
    (odd,) = model.tokenize(" banana")

    def run(writer: int | None) -> list[np.ndarray]:
        """Every worker's logits after each step; ``writer`` feeds "banana" at step 1."""
        session = model.session(SUM_PROMPT, ["\nAlice: ", "\nBob: "], layout,
                                visibility="next-step")  # fmt: skip
        logits = [session.logits.copy()]
        for step, texts in enumerate(steps):
            fed = {w: model.tokenize(text)[0] for w, text in enumerate(texts)}
            if step == 1 and writer is not None:
                fed[writer] = odd
            session.advance(fed)
            logits.append(session.logits.copy())
        return logits

    plain = run(None)
    for writer, reader in ((0, 1), (1, 0)):
        changed = run(writer)
        # logits[k]: after k steps. The writer feeds "banana" in step 1 (logits[2]).
        for before in range(3):
            np.testing.assert_allclose(changed[before][reader], plain[before][reader],
                                       rtol=0, atol=1e-4)  # fmt: skip
        assert np.abs(changed[3][reader] - plain[3][reader]).max() > 0.05


def test_the_redundancy_check_starts_the_first_step_after_each_interval(torch_smollm2):
    """Once more than ``check_every`` tokens were fed to the workers since the last check
    (the check and headers included, as the reference counts them), the next step to
    start begins with the check; the expectation is counted here step by step."""
    model = torch_smollm2
    every = 30  # more than a step's header and check: the count must restart
    team = replace(PAPER, check=CHECK, check_every=every)
    session = model.session(SUM_PROMPT, ["**Alice [1]:**", "**Bob [1]:**"], "combined",
                            step_delimiter="\n\n", team=team)  # fmt: skip
    steps = [" One.\n\n", " Two.\n\n", " Three and four make seven.\n\n", " Eight.\n\n",
             " Nine and ten.\n\n", " Eleven.\n\n", " Twelve.\n\n"]  # fmt: skip
    expected, since, checked = "**Alice [1]:**", 0, []
    for number, step in enumerate(steps, start=2):
        tokens = model.tokenize(step)
        for token in tokens:
            session.advance({0: token})
        since += len(tokens)
        start = f"**Alice [{number}]:** "
        checked.append(since > every)
        if checked[-1]:
            start, since = start + CHECK, 0
        since += len(model.tokenize(start))
        expected += step + start
    # Alice's finished steps (the history), then her current one.
    history = session.transcript().split(OTHERS)[0]
    current = b"".join(model.piece(t) for t in session.workers[0].tokens).decode()
    assert history + current == expected
    # Not vacuous: a step began with the check, and a later one without it.
    assert True in checked and False in checked[checked.index(True) :]


@pytest.mark.parametrize(("layout", "check_every"), [("combined", 20), ("token", 0)])
def test_frame_headers_and_checks_come_out_of_the_workers_allowance(
    torch_smollm2, layout, check_every
):
    """With the paper's frame (and in ``combined`` a step header per word and frequent
    checks) every row computed is the prompt, something counted in prompt_tokens or a
    written token, and what the first headers do not cover stays within the workers'
    max_tokens. In ``token`` nothing but the frame is fed: the workers write exactly
    what their allowance leaves, so a frame not charged would overshoot."""
    model = torch_smollm2
    rows = model.rows_computed
    workers = ["**Alice [1]:** Hi.", "**Bob [1]:** Hi."]
    sampling = Sampling(temperature=1.0, max_tokens=48, seed=5)
    story = [{"role": "user", "content": "Write a long story about a dragon."}]  # no early end
    seen: list[str] = []
    completions = model.generate_together(
        story, workers, sampling, layout=layout, step_delimiter=" ",
        team=replace(PAPER, check=CHECK, check_every=check_every), transcript=seen.append,
    )  # fmt: skip
    (transcript,) = seen
    if layout == "combined":  # checks and headers came
        assert CHECK in transcript and "**Alice [3]:** " in transcript
    assert all(c.finish_reason == "length" for c in completions)
    once = model.count_tokens(story) + sum(len(model.tokenize(w)) for w in workers)
    beyond = completions[0].prompt_tokens - once + sum(c.completion_tokens for c in completions)
    assert beyond <= len(workers) * sampling.max_tokens
    fed = sum(c.completion_tokens - 1 for c in completions)  # a worker's last token is not fed
    assert model.rows_computed - rows == completions[0].prompt_tokens + fed


# -- the strategy ------------------------------------------------------------------------


class ScriptedTeam:
    """A shared-cache model that writes ``texts`` (one per worker), reports
    ``transcript`` and answers any other call with ``final``; keeps every call."""

    name = "scripted-team"
    capabilities = Capabilities(chat=True, logprobs=False, shared_cache=True)
    price = Price(0.0, 0.0)

    def __init__(self, texts: list[str], final: str = " 13.") -> None:
        self.texts, self.final = texts, final
        self.together: list[tuple] = []
        self.asked: list[tuple] = []

    def count_tokens(self, prompt) -> int:
        return 10

    def generate_together(self, prompt, workers, sampling, *, transcript, **options):
        self.together.append((prompt, list(workers), options))
        transcript("TRANSCRIPT")
        return [_completion(t) for t in self.texts[: len(workers)]]

    def generate(self, prompt, n=1, sampling=None, **options):
        self.asked.append((prompt, sampling))
        return [_completion(self.final)]


def _completion(text: str) -> Completion:
    return Completion(text=text, token_ids=(1,) * 4, logprobs=None, finish_reason="length",
                      prompt_tokens=10)  # fmt: skip


def test_the_strategy_runs_the_papers_format_by_default():
    model = ScriptedTeam(["6 plus 7", "I will check"])
    Hogwild().solve(PROBLEM, Context(model, Meter()))
    ((prompt, headers, options),) = model.together
    assert options["layout"] == "combined" and options["step_delimiter"] == "\n\n"
    assert options["team"] == replace(PAPER, check=CHECK, check_every=256)
    assert headers == [
        "**Alice [1]:** Hi, I'm Alice. Here's how we can",
        "**Bob [1]:** Hi, I'm Bob.",
    ]
    # The collaboration prompt goes before the problem, in the user message.
    user = next(m["content"] for m in prompt if m["role"] == "user")
    assert user == collaboration_rules(("Alice", "Bob")) + "\n\n" + PROBLEM.prompt
    rules = collaboration_rules(("Alice", "Bob", "Carol"))
    for said in ("2 other assistants", "Alice, Bob and Carol", OTHERS.strip(), OWN.strip(),
                 PIVOT.strip(), "**Name [step]:**", "final answer"):  # fmt: skip
        assert said in rules


def test_with_no_declared_answer_the_final_step_reads_everything_and_answers():
    model = ScriptedTeam(["6 plus 7 is", "Let me add 6 and"], final=" 13, since 6 + 7 = 13.")
    solution = Hogwild().solve(PROBLEM, Context(model, Meter()))
    ((asked, sampling),) = model.asked
    ((team_prompt, _, _),) = model.together
    assert asked == [*team_prompt, {"role": "assistant", "content": "TRANSCRIPT" + FINISH}]
    assert (sampling.temperature, sampling.max_tokens) == (0.0, 16)
    assert solution.answer == "13" and solution.trace[0]["final"] == "13"
    assert solution.candidates[-1].worker == "final"
    # Without the step the answer is the workers' vote (here: nobody gave one).
    model = ScriptedTeam(["6 plus 7 is", "Let me add 6 and"])
    assert Hogwild(final_tokens=0).solve(PROBLEM, Context(model, Meter())).answer is None
    assert not model.asked


def test_a_declared_answer_ends_it_without_the_final_step():
    model = ScriptedTeam(["6 + 7 = 13. The answer is 13.", "I will check"], final=" 12.")
    solution = Hogwild().solve(PROBLEM, Context(model, Meter()))
    assert solution.answer == "13" and not model.asked
    assert solution.trace[0]["declared"] == {"Alice": "13"}


def test_the_earlier_spec_runs_the_earlier_format_with_next_step_visibility():
    model = ScriptedTeam(["6 plus 7", "I will check"])
    build_strategy(EARLIER + ",workers=2").solve(PROBLEM, Context(model, Meter()))
    ((_, headers, options),) = model.together
    assert headers == ["\nAlice: ", "\nBob: "]
    assert (options["layout"], options["step_delimiter"], options["team"]) == ("token", "\n", None)
    assert options["visibility"] == "next-step"
    with pytest.raises(ValueError, match="visibility"):
        Hogwild(visibility="later")


def test_in_the_earlier_spec_each_worker_starts_from_the_prompt_and_its_own_name(torch_smollm2):
    """On the real model, greedily: each worker's first token is the argmax of a plain
    pass over the team prompt and its own "\\nName: " header, as before issue 18 (here
    a word, where with the others' headers in view it was a line break)."""
    strategy = build_strategy(EARLIER + ",workers=3,temperature=0,max_tokens=4,until=all")
    solution = strategy.solve(PROBLEM, Context(torch_smollm2, Meter()))
    prompt = torch_smollm2.render(strategy._prompt(PROBLEM, torch_smollm2, WORKER_NAMES[:3]))
    for candidate in solution.candidates:
        ids = torch_smollm2.tokenize(f"{prompt}\n{candidate.worker}: ")
        first = torch_smollm2.piece(int(torch_smollm2.logits(ids)[-1].argmax())).decode()
        assert first.strip() and candidate.text.startswith(first)
