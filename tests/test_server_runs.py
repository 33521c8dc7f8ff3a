"""Each server request is a run of the ledger: a real server on 127.0.0.1, driven by the
`openai` client and httpx, then read back through `Ledger` and `thinktank ledger`."""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest

from thinktank.cli import main
from thinktank.ledger import Ledger

from .conftest import RunningServer, serving
from .serverkit import stopped_run

SYSTEM = {"role": "system", "content": "Answer briefly."}
QUESTION = "What is 2 + 3?"
CHAT = [SYSTEM, {"role": "user", "content": QUESTION}]
STRATEGY = "self-consistency:n=2,max_tokens=12"
#: Fails once it runs, after a stream's 200: Hogwild! needs the torch backend's shared cache.
FAILING = "hogwild:max_tokens=8/smollm2"


@pytest.fixture(scope="module")
def served(smollm2, tmp_path_factory):
    """A server that has answered one request of each kind, and refused two; with
    the run id of each accepted request, by kind."""
    from thinktank.server import create_app

    ledger = Ledger(tmp_path_factory.mktemp("runs") / "ledger.db")
    running = RunningServer(create_app({"smollm2": smollm2}, ledger=ledger))
    running.ledger, running.started = ledger, time.time()
    client = running.client()
    running.replies = {
        "plain": client.chat.completions.create(
            model="smollm2", messages=CHAT, n=2, max_tokens=8, seed=1
        ).model_dump(),
        "strategy": client.chat.completions.create(
            model=f"{STRATEGY}/smollm2", messages=CHAT, seed=2, user="alice"
        ).model_dump(),
        "completion": client.completions.create(
            model="smollm2", prompt="2 + 3 =", max_tokens=6, seed=3
        ).model_dump(),
    }
    streamed = client.chat.completions.create(
        model="smollm2", messages=CHAT, max_tokens=8, seed=4, stream=True
    )
    chunks = list(streamed)
    running.streamed_text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    running.streamed_run = chunks[-1].model_extra["thinktank"]["run_id"]  # the result chunk
    with pytest.raises(openai.APIError, match="shared KV cache"):
        list(client.chat.completions.create(model=FAILING, messages=CHAT, stream=True))
    # Refused before any work: an unknown strategy, a conversation of no messages.
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="no-such-strategy/smollm2", messages=CHAT)
    empty = httpx.post(f"{running.url}/chat/completions", json={"model": "smollm2", "messages": []})
    assert empty.status_code == 400 and "messages" in empty.json()["error"]["message"]
    yield running
    running.close()


def test_every_accepted_request_is_one_finished_run(served):
    runs = served.ledger.recent_runs(50, command="serve")
    assert len(runs) == 5 and all(run.finished for run in runs)
    by_id = {run.run_id: run for run in runs}
    for body in served.replies.values():
        run = by_id[body["thinktank"]["run_id"]]
        assert run.model == "smollm2" and run.calls >= 1
        assert run.completion_tokens == body["usage"]["completion_tokens"]
    plain = by_id[served.replies["plain"]["thinktank"]["run_id"]]
    assert (plain.strategy, plain.question) == ("plain", QUESTION)  # the last user message
    assert plain.answer == served.replies["plain"]["choices"][0]["message"]["content"]
    strategy = by_id[served.replies["strategy"]["thinktank"]["run_id"]]
    assert strategy.strategy.startswith("self-consistency") and strategy.client == "alice"
    assert strategy.answer == served.replies["strategy"]["thinktank"]["answer"]
    completion = by_id[served.replies["completion"]["thinktank"]["run_id"]]
    assert completion.question == "2 + 3 ="
    [failed] = [run for run in runs if run.strategy.startswith("hogwild")]
    assert failed.answer is None
    streamed = by_id[served.streamed_run]
    assert streamed.answer == served.streamed_text and streamed.completion_tokens > 0
    # Without a user field the client is the peer's host, with no port.
    assert {run.client for run in runs} == {"alice", "127.0.0.1"}


def test_runs_are_found_by_client_strategy_model_and_time(served):
    ledger = served.ledger

    def found(**filters) -> set[str]:
        return {run.run_id for run in ledger.recent_runs(50, command="serve", **filters)}

    everything = found()
    assert found(client="alice") == {served.replies["strategy"]["thinktank"]["run_id"]}
    assert len(found(client="127.0.0.1")) == 4
    assert len(found(strategy="self-consistency")) == 1 and len(found(strategy="plain")) == 3
    assert found(model="smollm2") == everything and not found(model="qwen")
    assert found(since=served.started - 1) == everything and not found(since=time.time() + 60)


def test_a_request_keeps_its_transcript_and_its_calls_texts(served):
    ledger = served.ledger
    plain = served.replies["plain"]
    [transcript] = ledger.transcripts(plain["thinktank"]["run_id"])
    assert (transcript.question, transcript.reference) == (QUESTION, None)
    texts = [choice["message"]["content"] for choice in plain["choices"]]
    assert [c["text"] for c in transcript.solution["candidates"]] == texts
    [call] = ledger.logged_calls(5, run_id=plain["thinktank"]["run_id"])
    assert call.prompt == CHAT and call.strategy == "plain"
    assert [c.text for c in call.completions] == texts
    strategy = served.replies["strategy"]["thinktank"]
    [solved] = ledger.transcripts(strategy["run_id"])
    assert solved.solution["answer"] == strategy["answer"]
    assert len(solved.solution["candidates"]) == 2
    assert all(c["text"] for c in solved.solution["candidates"])


def test_thinktank_ledger_filters_the_server_requests_and_shows_their_clients(
    served, monkeypatch, capsys
):
    monkeypatch.setenv("THINKTANK_HOME", str(served.ledger.path.parent))
    assert main(["ledger", "--command", "serve", "--client", "alice", "--json"]) == 0
    [run] = json.loads(capsys.readouterr().out)["runs"]
    assert run["run_id"] == served.replies["strategy"]["thinktank"]["run_id"]
    assert main(["ledger", "--strategy", "plain", "--model", "smollm2", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["runs"]) == 3
    today = time.strftime("%Y-%m-%d")
    assert main(["ledger", "--command", "serve", "--since", today]) == 0
    table = capsys.readouterr().out
    assert "client" in table and "alice" in table and "127.0.0.1" in table
    assert main(["ledger", "--command", "solve"]) == 0
    assert "client" not in capsys.readouterr().out  # no run shown has one


def test_a_client_that_leaves_finishes_its_run_without_an_answer(smollm2, tmp_path):
    long = "self-consistency:n=4,max_tokens=512,temperature=2/smollm2"
    story = [{"role": "user", "content": "Write a long story."}]
    with serving([smollm2], tmp_path, max_concurrent=1) as running:
        with httpx.stream("POST", f"{running.url}/chat/completions",
                          json={"model": long, "messages": story, "stream": True},
                          timeout=60) as stream:  # fmt: skip
            for line in stream.iter_lines():
                if '"completion_tokens": 0' not in line and '"progress"' in line:
                    break  # leaving the block closes the connection
        run_id, _ = stopped_run(running.ledger)
        deadline = time.monotonic() + 20
        while not (run := running.ledger.recent_runs(1, run_id=run_id)[0]).finished:
            assert time.monotonic() < deadline, "the run was never finished"
            time.sleep(0.1)
    assert run.answer is None and run.question == "Write a long story."


def test_a_ledger_without_texts_keeps_the_runs_but_no_transcripts(smollm2, tmp_path):
    from thinktank.server import create_app

    ledger = Ledger(tmp_path / "ledger.db", log_texts=False)
    running = RunningServer(create_app({"smollm2": smollm2}, ledger=ledger, api_key="s3cret"))
    client = openai.OpenAI(api_key="s3cret", base_url=running.url, max_retries=0)
    try:
        reply = client.chat.completions.create(
            model=f"{STRATEGY}/smollm2", messages=CHAT, seed=5, user="u" * 100
        )
        plain = client.chat.completions.create(model="smollm2", messages=CHAT, max_tokens=2)
    finally:
        running.close()
    run_id = reply.model_extra["thinktank"]["run_id"]
    runs = {run.run_id: run for run in ledger.recent_runs(5, command="serve")}
    assert set(runs) == {run_id, plain.model_extra["thinktank"]["run_id"]}
    assert runs[run_id].finished and runs[run_id].completion_tokens > 0
    # The user field cut to 64 characters; without one the address, never the key.
    assert {run.client for run in runs.values()} == {"u" * 64, "127.0.0.1"}
    assert ledger.transcripts(run_id) == []
    assert all(call.prompt is None and not call.completions for call in ledger.logged_calls(9))
