"""Helpers the server tests share: usage as the ledger records it, a stand-in remote
model endpoint (as a module fixture), and the tool-calling remote the tool tests use."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable

import pytest

from thinktank.ledger import Ledger

from .conftest import JsonEndpoint

USAGE_FIELDS = ("prompt_tokens", "completion_tokens", "total_tokens")


def ledger_usage(ledger: Ledger, run_id: str) -> dict[str, int]:
    """The run's ``usage`` as the ledger's calls add it up."""
    rows = ledger.calls(run_id)
    prompt = sum(r.prompt_tokens for r in rows)
    completion = sum(r.completion_tokens for r in rows)
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}  # fmt: skip


def ledger_runs(ledger: Ledger) -> list[tuple[str, int]]:
    """(run id, completion tokens) of every run with a recorded call, from the ledger's file."""
    with sqlite3.connect(ledger.path) as db:
        query = "SELECT run_id, SUM(completion_tokens) FROM calls GROUP BY run_id"
        return [(run_id, tokens) for run_id, tokens in db.execute(query)]


def stopped_run(ledger: Ledger) -> tuple[str, int]:
    """The one run a client left (its id and completion tokens), once its work has
    stopped and recorded what it spent."""
    hung_up = time.monotonic()
    while not (runs := ledger_runs(ledger)):
        assert time.monotonic() - hung_up < 20, "the work went on after the client left"
        time.sleep(0.1)
    [run] = runs
    return run


def endpoint_answering(reply: Callable[[dict], dict]):
    """A module fixture: a stand-in remote model on 127.0.0.1 answering each POST
    with ``reply(body)``."""

    @pytest.fixture(scope="module")
    def endpoint():
        remote = JsonEndpoint(lambda method, body: (200, reply(body)))
        yield remote
        remote.close()

    return endpoint


ADD = {
    "type": "function",
    "function": {
        "name": "add",
        "description": "Add two whole numbers.",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
        },
    },
}
QUESTION = [{"role": "user", "content": "What is 2 + 3? Use the add tool."}]
BILLED = {"prompt_tokens": 40, "completion_tokens": 9, "total_tokens": 49}


def tool_calling_reply(body: dict) -> dict:
    """The stand-in remote model: offered tools (and not told "none"), it calls the
    first with a=2, b=3 (saying "stop" for tool_choice "required", as some servers
    do); given a tool result, it reports it; else it answers "5"."""
    last = body["messages"][-1]
    finish = "stop"
    if last["role"] == "tool":
        message = {"role": "assistant", "content": f"The sum is {last['content']}."}
    elif body.get("tools") and body.get("tool_choice") != "none":
        name = body["tools"][0]["function"]["name"]
        message = {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": name, "arguments": json.dumps({"a": 2, "b": 3})}}]}  # fmt: skip
        finish = "stop" if body.get("tool_choice") == "required" else "tool_calls"
    else:
        message = {"role": "assistant", "content": "5"}
    choice = {"index": 0, "message": message, "finish_reason": finish, "logprobs": None}
    return {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [choice], "usage": BILLED}  # fmt: skip
