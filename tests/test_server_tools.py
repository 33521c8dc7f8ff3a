"""Tools through the server: a remote model (a stand-in OpenAI-compatible endpoint on
127.0.0.1, reached by the real `openai:` backend) behind a real thinktank server,
driven by the official `openai` client; and the clear refusals where tools cannot go
(the embedded model, strategies)."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from thinktank.models.base import ToolOffer
from thinktank.models.openai import OpenAIModel

from .conftest import serving
from .serverkit import ADD, BILLED, QUESTION, endpoint_answering, tool_calling_reply

endpoint = endpoint_answering(tool_calling_reply)


@pytest.fixture(scope="module")
def server(smollm2, endpoint, tmp_path_factory):
    models = {"smollm2": smollm2, "remote": f"openai:m@{endpoint.url}/v1"}
    with serving(models, tmp_path_factory.mktemp("tools")) as running:
        yield running


@pytest.fixture
def client(server):
    return openai.OpenAI(api_key="none", base_url=server.url, max_retries=0)


def test_a_remote_models_tool_calls_come_back_and_the_conversation_goes_on(client, endpoint):
    asked = client.chat.completions.create(
        model="remote", messages=QUESTION, tools=[ADD], tool_choice="auto",
        parallel_tool_calls=False, max_tokens=16,
    )  # fmt: skip
    sent = endpoint.requests[-1]
    assert sent["tools"] == [ADD] and sent["tool_choice"] == "auto"
    assert sent["parallel_tool_calls"] is False
    choice = asked.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    [call] = choice.message.tool_calls
    assert (call.id, call.function.name) == ("call_1", "add")
    assert json.loads(call.function.arguments) == {"a": 2, "b": 3}
    assert asked.usage.prompt_tokens == BILLED["prompt_tokens"]  # what the remote billed

    conversation = [
        *QUESTION,
        choice.message.model_dump(exclude_none=True),  # as clients send it back
        {"role": "tool", "tool_call_id": call.id, "content": "5"},
    ]
    answered = client.chat.completions.create(
        model="remote", messages=conversation, tools=[ADD], max_tokens=16
    )
    sent = endpoint.requests[-1]["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "tool"]
    assert sent[1]["tool_calls"][0]["id"] == "call_1"
    assert json.loads(sent[1]["tool_calls"][0]["function"]["arguments"]) == {"a": 2, "b": 3}
    assert sent[2] == {"role": "tool", "content": "5", "tool_call_id": "call_1"}
    assert answered.choices[0].message.content == "The sum is 5."
    assert answered.choices[0].finish_reason == "stop"
    assert answered.choices[0].message.tool_calls is None


def test_a_named_or_required_tool_choice_reaches_the_remote_model(client, endpoint):
    named = {"type": "function", "function": {"name": "add"}}
    reply = client.chat.completions.create(
        model="remote", messages=QUESTION, tools=[ADD], tool_choice=named, max_tokens=16
    )
    assert endpoint.requests[-1]["tool_choice"] == named
    assert reply.choices[0].message.tool_calls[0].function.name == "add"
    # A server that says "stop" with tool calls: the reply still says "tool_calls".
    required = client.chat.completions.create(
        model="remote", messages=QUESTION, tools=[ADD], tool_choice="required", max_tokens=16
    )
    assert endpoint.requests[-1]["tool_choice"] == "required"
    assert required.choices[0].finish_reason == "tool_calls"


def test_a_request_without_tools_sends_none(client, endpoint):
    reply = client.chat.completions.create(model="remote", messages=QUESTION, max_tokens=16)
    assert not {"tools", "tool_choice", "parallel_tool_calls"} & set(endpoint.requests[-1])
    assert reply.choices[0].message.content == "5" and reply.choices[0].finish_reason == "stop"


def test_streamed_tool_calls_arrive_in_a_delta(client):
    chunks = list(client.chat.completions.create(
        model="remote", messages=QUESTION, tools=[ADD], max_tokens=16, stream=True))  # fmt: skip
    calls = [call for c in chunks if c.choices for call in c.choices[0].delta.tool_calls or ()]
    assert [(c.index, c.id, c.function.name) for c in calls] == [(0, "call_1", "add")]
    assert json.loads(calls[0].function.arguments) == {"a": 2, "b": 3}
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "tool_calls"


def test_the_embedded_model_treats_tool_choice_none_as_no_tools(client):
    reply = client.chat.completions.create(
        model="smollm2", messages=QUESTION, tools=[ADD], tool_choice="none", max_tokens=4,
        temperature=0,
    )  # fmt: skip
    assert reply.choices[0].message.content and reply.choices[0].message.tool_calls is None


def _post(server, body: dict) -> httpx.Response:
    return httpx.post(f"{server.url}/chat/completions", json=body, timeout=60)


TOOL_TURNS = [
    *QUESTION,
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "add", "arguments": "{}"}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "5"},
]  # fmt: skip


@pytest.mark.parametrize(
    ("options", "param", "fragment"),
    [
        ({"model": "smollm2", "tools": [ADD]}, "tools", "smollm2 cannot call tools"),
        ({"model": "smollm2", "tools": [ADD], "tool_choice": "auto"}, "tools", "cannot call"),
        ({"model": "smollm2", "messages": TOOL_TURNS}, "messages", "cannot call tools"),
        ({"model": "self-consistency:n=2/remote", "tools": [ADD]}, "tools",
         "strategies do not vote over tool calls"),
        ({"model": "self-consistency:n=2/smollm2", "tools": [ADD], "tool_choice": "none"},
         "tools", "strategies do not vote over tool calls"),
        ({"model": "self-consistency:n=2/remote", "messages": TOOL_TURNS}, "messages",
         "without tool calls"),
        ({"tool_choice": "auto"}, "tool_choice", "only allowed when tools are given"),
        ({"parallel_tool_calls": True}, "parallel_tool_calls", "only allowed when tools"),
        ({"tools": [ADD], "tool_choice": {"type": "function", "function": {"name": "mul"}}},
         "tool_choice", "'mul', which is not among the tools"),
        ({"tools": [ADD, ADD]}, "tools", "same function name"),
        ({"tools": [{"type": "retrieval"}]}, "tools.0.type", "function"),
        ({"tools": [{**ADD, "function": {"name": "add two"}}]}, "tools.0.function.name",
         "pattern"),
        ({"tools": [ADD] * 129}, "tools", "at most 128"),
        ({"tool_choice": "sometimes", "tools": [ADD]}, "tool_choice", "tool_choice"),
        ({"messages": [{"role": "tool", "content": "5"}]}, "messages.0", "tool_call_id"),
        ({"messages": [{"role": "user", "content": None}]}, "messages.0", "content is required"),
        ({"messages": [{"role": "user", "content": "hi", "tool_calls": TOOL_TURNS[1][
            "tool_calls"]}]}, "messages.0", "only an assistant message has tool_calls"),
    ],
)  # fmt: skip
def test_tools_that_cannot_be_served_are_clear_400s(server, endpoint, options, param, fragment):
    sent = len(endpoint.requests)
    response = _post(server, {"model": "remote", "messages": QUESTION, "max_tokens": 4, **options})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert fragment in error["message"] and error["type"] == "invalid_request_error"
    assert error["param"] is not None and error["param"].startswith(param)
    assert len(endpoint.requests) == sent  # refused before any model was called


def test_the_backend_bounds_the_prompt_with_the_tools_offered(endpoint):
    model = OpenAIModel("m", f"{endpoint.url}/v1", max_retries=0)
    long = {**ADD, "function": {**ADD["function"], "description": "Add two numbers. " * 100}}
    offer = ToolOffer(tools=(long,), choice="auto")
    bare, offered = model.count_tokens(QUESTION), model.with_tools(offer).count_tokens(QUESTION)
    assert offered >= bare + len(json.dumps(long).encode())  # the definitions count
    [completion] = model.with_tools(offer).generate(QUESTION)
    assert completion.finish_reason == "tool_calls" and completion.tool_calls[0].name == "add"
    assert completion.prompt_tokens == BILLED["prompt_tokens"] <= offered  # the bound held
