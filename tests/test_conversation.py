"""Strategies answer a whole conversation (issue 19, point 1): the client's system
prompt and earlier turns reach every prompt, in the Python API, the CLI and the
server; the ledger's prompt tokens show it."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys

import openai
import pytest

import thinktank
from thinktank.ledger import Ledger
from thinktank.meter import Meter, SampleStore
from thinktank.models.base import Sampling
from thinktank.problem import Problem
from thinktank.prompts import build_prompt, continuation_prompt
from thinktank.solution import Candidate
from thinktank.strategies import Context
from thinktank.verify.verifiers import Judge, PairwiseJudge

from .conftest import serving

SYSTEM = {"role": "system", "content": "You are a pirate who counts gold coins."}
HISTORY = [
    {"role": "user", "content": "I have 2 coins and find 2 more. How many now?"},
    {"role": "assistant", "content": "Arr, 2 + 2 = 4. The answer is 4."},
]
QUESTION = {"role": "user", "content": "And if I find 3 more?"}
CONVERSATION = [SYSTEM, *HISTORY, QUESTION]
SC = "self-consistency:n=2,max_tokens=8"


def run_cli(*args: str, home, stdin: str | None = None) -> subprocess.CompletedProcess:
    """``thinktank ARGS`` in a real process with its own THINKTANK_HOME; wide columns
    keep an error message on one line."""
    return subprocess.run([sys.executable, "-m", "thinktank", *args], input=stdin,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "THINKTANK_HOME": str(home),
                               "COLUMNS": "400"})  # fmt: skip


def conversation_tokens(model) -> int:
    """What the context's text alone counts, a floor on what it adds to a prompt."""
    return sum(model.count_tokens(m["content"]) for m in [SYSTEM, *HISTORY])


def prompt_tokens_of(messages, model) -> int:
    """The tokens of a strategy's standard prompt for the conversation ``messages``."""
    return model.count_tokens(build_prompt(Problem.from_messages("q", messages), model))


# -- Problem ---------------------------------------------------------------------------


def test_a_conversation_splits_into_its_question_and_context():
    problem = Problem.from_messages("q", CONVERSATION)
    assert problem.prompt == QUESTION["content"] and problem.kind == "math"
    assert problem.context == (SYSTEM, *HISTORY)
    assert problem.messages() == CONVERSATION
    assert hash(problem) == hash(Problem.from_messages("q", CONVERSATION))
    assert problem != Problem("q", QUESTION["content"])  # the context tells them apart
    # Judges and peers read the conversation, in order, the question last.
    transcript = problem.transcript()
    places = [transcript.index(m["content"]) for m in CONVERSATION]
    assert places == sorted(places) and transcript.endswith(QUESTION["content"])
    assert Problem("q", "What is 2 + 3?").transcript() == "What is 2 + 3?"


@pytest.mark.parametrize(
    ("messages", "message"),
    [
        ([], "no messages"),
        ([*CONVERSATION, {"role": "assistant", "content": "Arr"}], "ends with an assistant"),
        ([SYSTEM], "must end with the user message"),
        ([{"role": "tool", "content": "7"}, QUESTION], "role must be one of"),
        ([{"role": "user", "content": 7}], "content must be text"),
        ([{"role": "user", "content": "hi", "name": "x"}], "'name'"),
        ([SYSTEM, {"role": "user", "content": "  "}], "last user message is empty"),
        ("What is 2 + 3?", "a list of"),
    ],
)
def test_a_conversation_a_strategy_cannot_answer_is_a_clear_value_error(messages, message):
    with pytest.raises(ValueError, match=message):
        Problem.from_messages("q", messages)


# -- prompts ---------------------------------------------------------------------------


def test_a_chat_model_gets_the_system_prompt_then_the_turns_then_the_question(smollm2):
    problem = Problem.from_messages("q", CONVERSATION)
    system, *turns = build_prompt(problem, smollm2, variant="step-by-step")
    assert system["role"] == "system"
    assert system["content"].startswith(SYSTEM["content"])  # the client's first
    alone = build_prompt(Problem("q", QUESTION["content"]), smollm2)
    assert system["content"].endswith(alone[0]["content"])  # then thinktank's instruction
    assert turns[:2] == HISTORY and turns[2]["role"] == "user"
    assert turns[2]["content"].startswith(QUESTION["content"]) and len(turns) == 3
    assert build_prompt(problem, smollm2, variant="plain") == CONVERSATION
    # Through the real chat template, in order.
    rendered = smollm2.render(build_prompt(problem, smollm2))
    places = [rendered.index(m["content"]) for m in CONVERSATION]
    assert places == sorted(places)
    # A search continues the reply to the last turn, the conversation kept.
    assert continuation_prompt(problem, smollm2, "3 more") == [
        *build_prompt(problem, smollm2), {"role": "assistant", "content": "3 more"}
    ]  # fmt: skip


def test_a_base_model_reads_the_conversation_as_text(gemma):
    problem = Problem.from_messages("q", CONVERSATION)
    prompt = build_prompt(problem, gemma)
    examples = build_prompt(Problem("q", QUESTION["content"]), gemma)  # few-shot, question
    shots = examples.removesuffix(f"Question: {QUESTION['content']}\nAnswer:")
    assert shots and prompt == (
        f"{SYSTEM['content']}\n\n{shots}"
        f"Question: {HISTORY[0]['content']}\nAnswer: {HISTORY[1]['content']}\n\n"
        f"Question: {QUESTION['content']}\nAnswer:"
    )
    assert build_prompt(problem, gemma, variant="plain").startswith(
        f"{SYSTEM['content']}\n\nQuestion: {HISTORY[0]['content']}"
    )
    # A function stub stays last (the base model continues its body), after comments.
    stub = 'def add(a, b):\n    """Return a + b."""\n'
    code = Problem.from_messages("c", [SYSTEM, {"role": "user", "content": stub}], "code")
    assert build_prompt(code, gemma) == f"# System: {SYSTEM['content']}\n{stub}"


def test_two_conversations_ending_in_one_question_never_share_samples(smollm2):
    """Sample-store keys hold the prompt, so the conversation: a bench sharing samples
    replays one conversation's samples for itself only."""
    store, draws = SampleStore(), []
    sampling = Sampling(max_tokens=4, seed=0)
    other = [{"role": "system", "content": "You are a banker."}, *HISTORY, QUESTION]
    for messages in (CONVERSATION, CONVERSATION, other, [QUESTION]):
        prompt = build_prompt(Problem.from_messages("q", messages), smollm2)

        def draw(prompt=prompt):
            draws.append(prompt)
            return smollm2.generate(prompt, 2, sampling), 0.0

        store.replay_or_draw(smollm2, prompt, 2, sampling, draw)
    assert len(draws) == 3  # the repeated conversation alone was replayed


@pytest.mark.parametrize("judge", [Judge(), PairwiseJudge()], ids=["judge", "pairwise"])
def test_a_judge_reads_the_conversation_it_judges_an_answer_to(smollm2, judge):
    """A judge shown the question alone would judge a follow-up it cannot understand."""
    answers = [Candidate(f"The answer is {a}.", a, "stop", 5) for a in ("7", "4")]

    def judge_prompt_tokens(messages) -> int:
        ctx = Context(smollm2, Meter(), seed=0)
        judge.score(Problem.from_messages("q", messages), answers, ctx)
        return ctx.meter.usage.prompt_tokens

    extra = judge_prompt_tokens(CONVERSATION) - judge_prompt_tokens([QUESTION])
    calls = 2  # a pointwise judge per distinct answer; a pairwise one per order of the pair
    assert extra >= calls * conversation_tokens(smollm2)


# -- the Python API --------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::thinktank.api.KindWarning")  # 8 tokens may not answer
def test_solve_a_conversation_pays_for_its_history_in_the_ledger(smollm2, tmp_path):
    ledger = Ledger(tmp_path / "ledger.db")
    whole = thinktank.solve(CONVERSATION, model=smollm2, strategy=SC, seed=0, ledger=ledger)
    alone = thinktank.solve([QUESTION], model=smollm2, strategy=SC, seed=0, ledger=ledger)
    [whole_call], [alone_call] = ledger.calls(whole.run_id), ledger.calls(alone.run_id)
    assert whole_call.prompt_tokens == prompt_tokens_of(CONVERSATION, smollm2)
    assert whole.usage.prompt_tokens == whole_call.prompt_tokens
    extra = whole_call.prompt_tokens - alone_call.prompt_tokens
    assert extra >= conversation_tokens(smollm2)
    # The run row records the question, the last user turn.
    questions = {run.run_id: run.question for run in ledger.recent_runs()}
    assert questions[whole.run_id] == QUESTION["content"]


# -- the server ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(smollm2, tmp_path_factory):
    with serving([smollm2], tmp_path_factory.mktemp("conversation")) as running:
        yield running


@pytest.fixture
def client(server):
    return server.client()


def test_a_multi_turn_strategy_request_pays_for_the_whole_conversation(client, server, smollm2):
    model = f"{SC}/smollm2"
    whole = client.chat.completions.create(model=model, messages=CONVERSATION, seed=0)
    alone = client.chat.completions.create(model=model, messages=[QUESTION], seed=0)
    rows = server.ledger.calls(whole.model_extra["thinktank"]["run_id"])
    assert rows and whole.usage.prompt_tokens == sum(r.prompt_tokens for r in rows)
    assert {r.prompt_tokens for r in rows} == {prompt_tokens_of(CONVERSATION, smollm2)}
    extra = whole.usage.prompt_tokens - alone.usage.prompt_tokens
    assert extra >= len(rows) * conversation_tokens(smollm2)


@pytest.mark.parametrize("stream", [False, True])
def test_a_strategy_refuses_a_conversation_ending_with_an_assistant_message(client, stream):
    trailing = [*CONVERSATION, {"role": "assistant", "content": "Arr, 4 + 3 ="}]
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model=f"{SC}/smollm2", messages=trailing, stream=stream)
    error = refused.value.body
    assert refused.value.status_code == 400 and error["param"] == "messages"
    assert "ends with an assistant message" in error["message"]


# -- the CLI ---------------------------------------------------------------------------


def cli_solves_the_conversation(result, home, model) -> None:
    """The CLI's run paid for the whole conversation, and its ledger row records the
    question (the last user turn)."""
    assert result.returncode == 0, result.stderr
    run_id = json.loads(result.stdout)["run_id"]
    with sqlite3.connect(home / "ledger.db") as db:
        [(prompt_tokens,)] = db.execute(
            "SELECT prompt_tokens FROM calls WHERE run_id = ?", (run_id,)
        ).fetchall()
        [(question,)] = db.execute("SELECT question FROM runs WHERE run_id = ?", (run_id,))
    assert prompt_tokens == prompt_tokens_of(CONVERSATION, model)
    alone = model.count_tokens(build_prompt(Problem("q0", QUESTION["content"]), model))
    assert prompt_tokens >= alone + conversation_tokens(model)
    assert question == QUESTION["content"]


def test_cli_solves_a_messages_file_with_a_system_prompt(isolated_home, tmp_path, smollm2):
    path = tmp_path / "conversation.json"
    path.write_text(json.dumps([*HISTORY, QUESTION]))
    result = run_cli("solve", "--messages", str(path), "--system", SYSTEM["content"],
                     "--strategy", "single:max_tokens=8", "--seed", "0", "--json",
                     home=isolated_home)  # fmt: skip
    cli_solves_the_conversation(result, isolated_home, smollm2)


def test_cli_reads_messages_from_stdin_and_asks_the_question_after_them(isolated_home, smollm2):
    result = run_cli("solve", "--messages", "-", QUESTION["content"], "--strategy",
                     "single:max_tokens=8", "--json", home=isolated_home,
                     stdin=json.dumps([SYSTEM, *HISTORY]))  # fmt: skip
    cli_solves_the_conversation(result, isolated_home, smollm2)


@pytest.mark.parametrize(
    ("content", "extra", "message"),
    [
        ("[{'role': 'user'", [], "not JSON"),
        ('{"role": "user", "content": "hi"}', [], "expected a JSON list"),
        (json.dumps([{"role": "robot", "content": "hi"}]), [], "role must be one of"),
        (json.dumps([*CONVERSATION, HISTORY[1]]), [], "ends with an assistant message"),
        (json.dumps(CONVERSATION), ["--system", "Be brief."], "has a system message already"),
        (None, [], "cannot read it"),
    ],
    ids=["not-json", "not-a-list", "bad-role", "ends-with-assistant", "two-systems", "missing"],
)
def test_cli_refuses_a_bad_messages_file_in_one_line(isolated_home, tmp_path, content, extra,
                                                     message):  # fmt: skip
    path = tmp_path / "conversation.json"
    if content is not None:
        path.write_text(content)
    result = run_cli("solve", "--messages", str(path), *extra, home=isolated_home)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
