"""Client libraries people put in front of an OpenAI-compatible server, against a real
thinktank server on 127.0.0.1: the official `openai` client's `AsyncOpenAI`, and
its_hub's `OpenAICompatibleLanguageModel` (skipped where its_hub is not installed)."""

from __future__ import annotations

import asyncio
import json

import openai
import pytest

from thinktank.ledger import Ledger
from thinktank.server import create_app
from thinktank.verify.extract import extract_answer

from .conftest import RunningServer
from .serverkit import ADD, QUESTION, endpoint_answering, tool_calling_reply

SUM = [{"role": "user", "content": "What is 2 + 3?"}]
STRATEGY = "self-consistency:n=2,max_tokens=32/smollm2"


class ResponseRecorder:
    """An ASGI wrapper that keeps the body of each response the app sends: what a
    client library does not hand back (the ``thinktank`` object) can be read here."""

    def __init__(self, app) -> None:
        self.app = app
        self.bodies: list[bytes] = []

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        parts: list[bytes] = []

        async def keep(message) -> None:
            if message["type"] == "http.response.body":
                parts.append(message.get("body", b""))
                if not message.get("more_body"):
                    self.bodies.append(b"".join(parts))
            await send(message)

        await self.app(scope, receive, keep)


endpoint = endpoint_answering(tool_calling_reply)


@pytest.fixture(scope="module")
def server(smollm2, endpoint, tmp_path_factory):
    ledger = Ledger(tmp_path_factory.mktemp("clients") / "ledger.db")
    models = {"smollm2": smollm2, "remote": f"openai:m@{endpoint.url}/v1"}
    recorder = ResponseRecorder(create_app(models, ledger=ledger))
    running = RunningServer(recorder)
    running.ledger, running.recorder = ledger, recorder
    yield running
    running.close()


def test_async_openai_client_plain_and_strategy(server):
    async def ask():
        async with openai.AsyncOpenAI(api_key="none", base_url=server.url, max_retries=0) as aio:
            plain = aio.chat.completions.create(
                model="smollm2", messages=SUM, n=2, max_tokens=6, seed=1
            )
            strategy = aio.chat.completions.create(model=STRATEGY, messages=SUM, seed=2)
            return await asyncio.gather(plain, strategy)

    plain, strategy = asyncio.run(ask())
    assert len(plain.choices) == 2 and all(c.message.content for c in plain.choices)
    assert 0 < plain.usage.completion_tokens <= 12
    extra = strategy.model_extra["thinktank"]
    assert len(strategy.choices) == 1 and extra["strategy"].startswith("self-consistency")
    rows = server.ledger.calls(extra["run_id"])
    assert strategy.usage.completion_tokens == sum(r.completion_tokens for r in rows) > 0
    assert strategy.usage.prompt_tokens == sum(r.prompt_tokens for r in rows)
    text = strategy.choices[0].message.content
    assert extra["answer"] is None or extract_answer(text, "math") == extra["answer"]


def _its_hub_model(server, model: str):
    openai_lm = pytest.importorskip(
        "its_hub.core.lms.openai_lm",
        reason="its_hub[lm] is not installed (its OpenAICompatibleLanguageModel needs aiohttp)",
    )
    return openai_lm.OpenAICompatibleLanguageModel(
        endpoint=server.url, api_key="none", model_name=model, max_tries=1
    )


def _its_hub_ask(lm, messages: list[dict], **options) -> dict:
    """its_hub's reply (the assistant message as a dict) to one conversation."""

    async def ask() -> dict:
        try:
            return await lm.agenerate_single(messages, **options)
        finally:
            await lm.close()

    return asyncio.run(ask())


def test_its_hub_language_model_over_a_plain_model(server):
    reply = _its_hub_ask(_its_hub_model(server, "smollm2"), SUM, max_completion_tokens=8)
    assert reply["role"] == "assistant" and reply["content"].strip()
    body = json.loads(server.recorder.bodies[-1])
    assert body["choices"][0]["message"]["content"] == reply["content"]
    assert 0 < body["usage"]["completion_tokens"] <= 8  # its max_completion_tokens was honoured


def test_its_hub_language_model_over_a_strategy(server):
    lm = _its_hub_model(server, STRATEGY)
    answered = 0
    for _ in range(5):  # its_hub sends no seed: ask until a vote has an answer
        reply = _its_hub_ask(lm, SUM)
        body = json.loads(server.recorder.bodies[-1])
        assert reply["content"] == body["choices"][0]["message"]["content"]
        answer = body["thinktank"]["answer"]
        if answer is not None:
            answered += 1
            assert extract_answer(reply["content"], "math") == answer
    assert answered


def test_its_hub_tool_calls_through_thinktank(server, endpoint):
    lm = _its_hub_model(server, "remote")
    reply = _its_hub_ask(lm, QUESTION, tools=[ADD], tool_choice="auto", max_completion_tokens=16)
    assert endpoint.requests[-1]["tools"] == [ADD]
    [call] = reply["tool_calls"]
    assert call["function"]["name"] == "add" and reply["content"] is None
    conversation = [*QUESTION, reply, {"role": "tool", "tool_call_id": call["id"], "content": "5"}]
    answered = _its_hub_ask(lm, conversation, tools=[ADD], max_completion_tokens=16)
    assert answered["content"] == "The sum is 5."
