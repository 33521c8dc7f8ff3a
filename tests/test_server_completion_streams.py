"""Streamed legacy completions (``POST /v1/completions`` with ``stream: true``, issue 19),
through the official `openai` client (sync and async) and raw HTTP against a real
server on 127.0.0.1 with a real ledger: the embedded models stream their text as they
write it; a remote model that cannot (a stand-in endpoint behind the real `openai:`
backend) sends its text at the end."""

from __future__ import annotations

import asyncio
import json

import httpx
import openai
import pytest

from thinktank.ledger import Ledger

from .conftest import serving
from .serverkit import USAGE_FIELDS, endpoint_answering, ledger_usage, stopped_run

PROMPTS = ["2 + 3 =", "The sky is"]
#: Two prompts, two samples each, cut by max_tokens: four choices that end "length".
FOUR = {"prompt": PROMPTS, "n": 2, "max_tokens": 5, "temperature": 1.0, "seed": 7}


def remote_reply(body: dict) -> dict:
    """The stand-in remote model: it answers "5" to anything."""
    choice = {"index": 0, "message": {"role": "assistant", "content": "5"},
              "finish_reason": "stop", "logprobs": None}  # fmt: skip
    usage = {"prompt_tokens": 11, "completion_tokens": 1, "total_tokens": 12}
    return {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [choice], "usage": usage}  # fmt: skip


endpoint = endpoint_answering(remote_reply)


@pytest.fixture(scope="module")
def server(smollm2, gemma, endpoint, tmp_path_factory):
    models = {"smollm2": smollm2, "gemma": gemma, "remote": f"openai:m@{endpoint.url}/v1"}
    with serving(models, tmp_path_factory.mktemp("completion-streams")) as running:
        yield running


@pytest.fixture
def client(server):
    return server.client()


def _texts(chunks) -> dict[int, list[str]]:
    """Each choice's streamed pieces of text, by index (finish chunks' empty text left out)."""
    pieces: dict[int, list[str]] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            if choice.text:
                pieces.setdefault(choice.index, []).append(choice.text)
    return pieces


def _finishes(chunks) -> dict[int, list[str]]:
    """Each choice's finish reasons, by index, in the order they came."""
    reasons: dict[int, list[str]] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            if choice.finish_reason is not None:
                reasons.setdefault(choice.index, []).append(choice.finish_reason)
    return reasons


def _check_stream(chunks, whole, ledger: Ledger) -> None:
    """A streamed completion with include_usage: text_completion chunks of one id, each
    choice's text as the model wrote it (token by token) joining to the unstreamed
    reply's, then its finish reason, then the usage chunk the ledger accounts for."""
    assert {(c.object, c.id) for c in chunks} == {("text_completion", chunks[0].id)}
    assert chunks[0].id.startswith("cmpl-")
    assert all(len(c.choices) <= 1 for c in chunks)
    texts = _texts(chunks)
    assert [c.index for c in whole.choices] == [0, 1, 2, 3] == sorted(texts)
    assert {i: "".join(pieces) for i, pieces in texts.items()} == {
        c.index: c.text for c in whole.choices
    }
    assert max(len(pieces) for pieces in texts.values()) > 1  # as the model writes
    assert _finishes(chunks) == {c.index: [c.finish_reason] for c in whole.choices}
    assert {c.finish_reason for c in whole.choices} == {"length"}
    for index in texts:  # the finish chunk is the choice's last
        last = max(i for i, c in enumerate(chunks) if c.choices and c.choices[0].index == index)
        assert chunks[last].choices[0].finish_reason is not None
    last = chunks[-1]
    assert last.choices == [] and all(c.usage is None for c in chunks[:-1])
    final = last.model_extra["thinktank"]
    assert final["event"] == "result" and final["calls"] == len(PROMPTS)
    assert ledger_usage(ledger, final["run_id"]) == {
        f: getattr(last.usage, f) for f in USAGE_FIELDS
    }
    assert [getattr(last.usage, f) for f in USAGE_FIELDS] == [
        getattr(whole.usage, f) for f in USAGE_FIELDS
    ]


@pytest.mark.parametrize("model", ["smollm2", "gemma"])
def test_a_streamed_completion_is_the_unstreamed_text_as_written(client, server, model):
    whole = client.completions.create(model=model, **FOUR)
    chunks = list(client.completions.create(
        model=model, **FOUR, stream=True, stream_options={"include_usage": True}))  # fmt: skip
    assert {c.model for c in chunks} == {model}
    _check_stream(chunks, whole, server.ledger)


def test_the_async_client_streams_a_completion_the_same_way(server):
    async def ask():
        async with openai.AsyncOpenAI(api_key="none", base_url=server.url, max_retries=0) as aio:
            whole = await aio.completions.create(model="smollm2", **FOUR)
            stream = await aio.completions.create(
                model="smollm2", **FOUR, stream=True, stream_options={"include_usage": True}
            )
            return whole, [chunk async for chunk in stream]

    whole, chunks = asyncio.run(ask())
    _check_stream(chunks, whole, server.ledger)


def _events(server, **fields) -> list[str]:
    """The data lines of a raw streamed completion, in order."""
    body = {"model": "smollm2", "prompt": "Hi", "max_tokens": 3, "seed": 1, "stream": True,
            **fields}  # fmt: skip
    with httpx.stream("POST", f"{server.url}/completions", json=body, timeout=60) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    return [line.removeprefix("data: ") for line in lines]


def test_usage_is_streamed_only_when_asked_for_and_done_ends_the_stream(server):
    for asked in (False, True):
        options = {"stream_options": {"include_usage": True}} if asked else {}
        events = _events(server, **options)
        assert events[-1] == "[DONE]"
        chunks = [json.loads(event) for event in events[:-1]]
        if asked:  # null in every chunk but the last, as OpenAI's
            assert [c["usage"] is None for c in chunks] == [True] * (len(chunks) - 1) + [False]
            usage, run_id = chunks[-1]["usage"], chunks[-1]["thinktank"]["run_id"]
            assert {f: usage[f] for f in USAGE_FIELDS} == ledger_usage(server.ledger, run_id)
            assert usage["completion_tokens"] > 0
        else:
            assert not any("usage" in c for c in chunks)
        assert chunks[-1]["choices"] == [] and chunks[-1]["thinktank"]["event"] == "result"
        assert {tuple(c["choices"][0]) for c in chunks[:-1]} == {
            ("index", "text", "logprobs", "finish_reason")
        }


@pytest.mark.parametrize(
    ("fields", "param"),
    [({"echo": True}, "echo"),
     ({"best_of": 3}, "best_of"),
     ({"stream_options": {"include_usage": True, "every": 1}}, "stream_options.every"),
     ({"n": 65}, "n"),  # over the request limits
     ({"model": "self-consistency/smollm2"}, "model"),
     ({"suffix": "!"}, "suffix")],
)  # fmt: skip
def test_a_stream_with_a_bad_field_is_a_400_before_any_chunk(server, fields, param):
    body = {"model": "smollm2", "prompt": "Hi", "max_tokens": 2, "stream": True, **fields}
    response = httpx.post(f"{server.url}/completions", json=body, timeout=60)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["param"] == param


def test_stream_options_need_a_stream(client):
    with pytest.raises(openai.BadRequestError, match="only allowed when stream is true"):
        client.completions.create(model="smollm2", prompt="Hi", max_tokens=2,
                                  stream_options={"include_usage": True})  # fmt: skip


def test_a_stream_with_logprobs_sends_each_choice_whole_with_its_tokens(client):
    options = {"model": "smollm2", "prompt": PROMPTS, "n": 2, "max_tokens": 4, "seed": 2,
               "logprobs": 2}  # fmt: skip
    whole = client.completions.create(**options)
    chunks = list(client.completions.create(**options, stream=True))
    texts = _texts(chunks)
    assert texts == {c.index: [c.text] for c in whole.choices if c.text}
    for chunk in chunks:
        for choice in chunk.choices:
            if choice.text:  # the tokens join to the chunk's text
                assert "".join(choice.logprobs.tokens) == choice.text
                expected = whole.choices[choice.index].logprobs
                assert choice.logprobs.tokens == expected.tokens
                assert choice.logprobs.text_offset == expected.text_offset
            else:
                assert choice.logprobs is None
    assert _finishes(chunks) == {c.index: [c.finish_reason] for c in whole.choices}


def test_a_model_that_cannot_stream_sends_each_choice_whole_at_the_end(client, server):
    chunks = list(client.completions.create(
        model="remote", prompt=PROMPTS, n=2, max_tokens=4, stream=True,
        stream_options={"include_usage": True}))  # fmt: skip
    assert _texts(chunks) == {index: ["5"] for index in range(4)}
    assert _finishes(chunks) == {index: ["stop"] for index in range(4)}
    # The text comes once the work is done: after every progress chunk.
    first_text = next(i for i, c in enumerate(chunks) if c.choices)
    assert all(not c.choices for c in chunks[first_text:] if c.model_extra.get("thinktank"))
    last = chunks[-1]
    assert last.usage.completion_tokens == 4  # the remote's one token, four times
    assert ledger_usage(server.ledger, last.model_extra["thinktank"]["run_id"]) == {
        f: getattr(last.usage, f) for f in USAGE_FIELDS
    }


def test_an_error_after_the_stream_started_is_an_error_event(client):
    # Not even one token fits the budget: the meter finds out once the work runs.
    options = {"model": "smollm2", "prompt": "Hi", "max_tokens": 2,
               "extra_body": {"thinktank": {"budget": {"max_tokens": 1}}}}  # fmt: skip
    with pytest.raises(openai.BadRequestError, match="budget"):
        client.completions.create(**options)
    stream = client.completions.create(**options, stream=True)
    with pytest.raises(openai.APIError, match="budget") as raised:
        list(stream)
    assert raised.value.type == "invalid_request_error"


def test_a_client_that_leaves_a_completion_stream_cancels_its_work(smollm2, tmp_path):
    with serving([smollm2], tmp_path, max_concurrent=1) as running:
        client = running.client()
        # 16 samples of 512 junk tokens (temperature 2: no early end) would take minutes.
        long = {"prompt": "Once upon a time", "n": 16, "max_tokens": 512, "temperature": 2}
        with client.completions.create(model="smollm2", **long, stream=True) as stream:
            for chunk in stream:
                if chunk.choices and chunk.choices[0].text:
                    break  # leaving the block closes the connection
        run_id, tokens = stopped_run(running.ledger)
        assert tokens < 16 * 512 / 2
        # The only slot is free again, and the stopped run spends no more.
        reply = client.completions.create(model="smollm2", prompt="Hi", max_tokens=2)
        assert reply.choices[0].text
        assert sum(r.completion_tokens for r in running.ledger.calls(run_id)) == tokens
