"""The OpenAI-compatible server, driven by the official `openai` client over loopback,
and the `openai:` backend, driven against that server."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import httpx
import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import thinktank
from thinktank.errors import ThinktankError
from thinktank.ledger import Ledger
from thinktank.meter import Meter
from thinktank.models.base import Price, Sampling
from thinktank.models.openai import OpenAIModel, parse_spec
from thinktank.server import create_app

from .conftest import JsonEndpoint, RunningServer, free_port

KEY = "test-key"
QUESTION = [{"role": "user", "content": "What is 2 + 3?"}]


@pytest.fixture(scope="module")
def server(smollm2, tmp_path_factory):
    ledger = Ledger(tmp_path_factory.mktemp("server") / "ledger.db")
    running = RunningServer(create_app([smollm2], api_key=KEY, ledger=ledger))
    running.ledger = ledger
    yield running
    running.close()


@pytest.fixture
def client(server):
    return openai.OpenAI(api_key=KEY, base_url=server.url, max_retries=0)


def test_plain_request_returns_n_samples_with_usage_and_logprobs(client):
    response = client.chat.completions.create(
        model="smollm2", messages=QUESTION, n=3, max_tokens=12, seed=1, logprobs=True,
        top_logprobs=2,
    )  # fmt: skip
    assert len(response.choices) == 3 and response.model == "smollm2"
    assert all(c.message.role == "assistant" and c.message.content for c in response.choices)
    tokens = [len(c.logprobs.content) for c in response.choices]
    # Each sample's tokens but the end-of-turn token of a sample that ended its turn.
    assert sum(tokens) <= response.usage.completion_tokens <= min(sum(tokens) + 3, 36)
    assert response.usage.prompt_tokens > 0
    assert all(len(t.top_logprobs) <= 2 for c in response.choices for t in c.logprobs.content)


def test_strategy_by_model_name_and_by_extra_body(client, server):
    by_strategy_name = "self-consistency:n=4,max_tokens=32/smollm2"
    by_name = client.chat.completions.create(model=by_strategy_name, messages=QUESTION, seed=2)
    extra = by_name.model_extra["thinktank"]
    assert extra["strategy"] == "self-consistency:max_tokens=32,n=4"
    assert extra["candidates"] == 4 and extra["cost_usd"] > 0
    assert len(by_name.choices) == 1
    # usage counts every sample, and the ledger has the same call.
    rows = server.ledger.calls(extra["run_id"])
    assert by_name.usage.completion_tokens == sum(r.completion_tokens for r in rows) > 32
    # The reply is the sample that gave the voted answer (seeds tried until one answers).
    reply = by_name
    for seed in range(3, 9):
        if reply.model_extra["thinktank"]["answer"] is not None:
            break
        reply = client.chat.completions.create(model=by_strategy_name, messages=QUESTION, seed=seed)
    answer = reply.model_extra["thinktank"]["answer"]
    assert answer is not None and answer in reply.choices[0].message.content
    by_body = client.chat.completions.create(
        model="smollm2", messages=QUESTION, seed=2,
        extra_body={"thinktank": {"strategy": "self-consistency:n=4,max_tokens=32"}},
    )  # fmt: skip
    assert by_body.model_extra["thinktank"]["strategy"] == extra["strategy"]
    assert by_body.model_extra["thinktank"]["candidates"] == 4


def test_budget_caps_a_request(client):
    response = client.chat.completions.create(
        model="self-consistency:n=8,max_tokens=64/smollm2", messages=QUESTION, seed=3,
        extra_body={"thinktank": {"budget": {"max_tokens": 150}}},
    )  # fmt: skip
    assert response.usage.total_tokens <= 150
    assert response.model_extra["thinktank"]["budget_exhausted"] is True


def test_streaming_gives_the_same_answer_in_chunks(client):
    options = {"model": "smollm2", "messages": QUESTION, "max_tokens": 16, "temperature": 0}
    whole = client.chat.completions.create(**options).choices[0].message.content
    chunks = list(client.chat.completions.create(
        **options, stream=True, stream_options={"include_usage": True}))  # fmt: skip
    pieces = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    # The same prompt's first token comes from the same (cached) logits; what follows
    # may drift a little with what the KV cache holds (see test_llamacpp).
    assert whole.startswith(pieces[0])
    assert len(pieces) > 3  # token by token, as the model writes
    assert chunks[-1].usage.completion_tokens > 0
    strategy = client.chat.completions.create(
        model="self-consistency:n=2,max_tokens=24/smollm2", messages=QUESTION, stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in strategy if c.choices)


def test_a_missing_or_wrong_key_gets_401(server):
    for key in ("wrong", ""):
        bad = openai.OpenAI(api_key=key or "x", base_url=server.url, max_retries=0)
        if not key:
            bad = openai.OpenAI(api_key="x", base_url=server.url, max_retries=0,
                                default_headers={"Authorization": ""})  # fmt: skip
        with pytest.raises(openai.AuthenticationError) as info:
            bad.chat.completions.create(model="smollm2", messages=QUESTION, max_tokens=2)
        assert info.value.status_code == 401
        assert info.value.body["code"] == "invalid_api_key"


@pytest.mark.parametrize(
    ("options", "status", "fragment"),
    [
        ({"model": "gpt-9"}, 404, "not served"),
        ({"model": "self-consistency:n=0/smollm2"}, 400, "n must be >= 1"),
        ({"model": "nope:n=2/smollm2"}, 400, "unknown strategy"),
        ({"n": 100000}, 400, "n"),
        ({"max_tokens": 10**9}, 400, "max_tokens"),
        ({"temperature": "hot"}, 400, "temperature"),
        ({"messages": []}, 400, "messages"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, 400, "role"),
        ({"model": "self-consistency:n=2/smollm2", "n": 1000}, 400, "n=1000 is over"),
        ({"thinktank": {"budget": {"max_tokens": -1}}}, 400, "max_tokens"),
        ({"thinktank": {"color": "red"}}, 400, "color"),
        # Refused only once it runs (llama.cpp has no shared KV cache): still a 400.
        ({"model": "hogwild:max_tokens=8/smollm2"}, 400, "torch backend"),
    ],
)
def test_bad_requests_get_openai_style_4xx(server, options, status, fragment):
    body = {"model": "smollm2", "messages": QUESTION, "max_tokens": 4, **options}
    response = httpx.post(f"{server.url}/chat/completions", json=body,
                          headers={"Authorization": f"Bearer {KEY}"}, timeout=60)  # fmt: skip
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert fragment in error["message"] and error["type"]


def test_invalid_json_is_a_400(server):
    response = httpx.post(
        f"{server.url}/chat/completions", content=b"{not json", timeout=30,
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
    )  # fmt: skip
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


_values = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 6), st.floats(allow_nan=True), st.text(max_size=8),
    st.lists(st.integers(0, 3), max_size=3), st.dictionaries(st.text(max_size=4), st.integers(),
                                                             max_size=2),
)  # fmt: skip
#: The request fields, read from the server's own OpenAPI schema.
_SCHEMA = create_app([]).openapi()["components"]["schemas"]
_optional_fields = sorted(set(_SCHEMA["ChatRequest"]["properties"]) - {"model", "messages",
                                                                      "max_tokens"})  # fmt: skip
_thinktank_options = st.fixed_dictionaries(
    {}, optional={name: _values for name in _SCHEMA["ThinktankOptions"]["properties"]}
)


def test_the_schema_documents_the_request_fields():
    assert {"n", "temperature", "stream", "thinktank", "seed"} <= set(_optional_fields)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    body=st.fixed_dictionaries(
        {"model": st.sampled_from(["smollm2", "single/smollm2", "x", ""]),
         "messages": st.one_of(st.just(QUESTION), _values,
                               st.lists(st.fixed_dictionaries({"role": _values,
                                                               "content": _values}), max_size=2)),
         "max_tokens": st.one_of(st.integers(-2, 4), _values)},
        optional={name: st.one_of(_values, _thinktank_options) if name == "thinktank"
                  else _values for name in _optional_fields},
    )
)  # fmt: skip
def test_no_request_body_gets_a_5xx(server, body):
    for field in ("max_tokens", "max_completion_tokens"):
        if isinstance(body.get(field), int) and body[field] > 4:
            body[field] = 4  # keep the valid ones cheap
    response = httpx.post(
        f"{server.url}/chat/completions", content=json.dumps(body), timeout=120,  # NaN too
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
    )  # fmt: skip
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert "message" in response.json()["error"]


# -- the openai: backend ----------------------------------------------------------------


def test_model_spec_parsing():
    assert parse_spec("openai:Qwen/Qwen3-8B@http://h:8000/v1") == (
        "Qwen/Qwen3-8B",
        "http://h:8000/v1",
        "OPENAI_API_KEY",
    )
    assert parse_spec("openai:m@https://api.x.com/v1?key_env=X_KEY") == (
        "m",
        "https://api.x.com/v1",
        "X_KEY",
    )
    with pytest.raises(ValueError, match="expected openai:MODEL@"):
        parse_spec("openai:m")


def test_backend_uses_the_servers_n_and_records_what_was_spent(server, monkeypatch, tmp_path):
    monkeypatch.setenv("TT_KEY", KEY)
    model = thinktank.load_model(f"openai:smollm2@{server.url}?key_env=TT_KEY")
    solution = thinktank.solve("What is 2 + 3?", model=model,
                               strategy="self-consistency:n=4,max_tokens=24", seed=5,
                               ledger=Ledger(tmp_path / "client.db"))  # fmt: skip
    assert len(solution.candidates) == 4 and model._server_n is True
    [row] = Ledger(tmp_path / "client.db").calls(solution.run_id)
    assert row.n == 4 and row.completion_tokens == solution.usage.completion_tokens > 0
    assert row.prompt_tokens > 0  # the server's own count


def test_a_second_thinktank_through_the_first_gives_the_same_accuracy(
    server, monkeypatch, tmp_path
):
    monkeypatch.setenv("TT_KEY", KEY)
    suite = "rg:chain_sum?min_terms=2&max_terms=2&min_digits=1&max_digits=1&size=6&seed=4"
    strategies = ["single:max_tokens=48"]
    remote = thinktank.benchmark(suite, strategies, [f"openai:smollm2@{server.url}?key_env=TT_KEY"],
                                 ledger=Ledger(tmp_path / "r.db"), concurrency=1)  # fmt: skip
    local = thinktank.benchmark(suite, strategies, ["smollm2"], ledger=Ledger(tmp_path / "l.db"),
                                concurrency=1)  # fmt: skip
    # Greedy both ways; the server's KV cache may shift a near-tie (see test_llamacpp).
    assert abs(remote.summaries[0].accuracy - local.summaries[0].accuracy) <= 2 / 6 + 1e-9
    assert remote.summaries[0].completion_tokens > 0


def flaky_endpoint() -> JsonEndpoint:
    """A stand-in endpoint that refuses n > 1 and fails every other request with 500."""
    choice = {"index": 0, "finish_reason": "stop", "logprobs": None,
              "message": {"role": "assistant", "content": "5"}}  # fmt: skip
    usage = {"prompt_tokens": 7, "completion_tokens": 1, "total_tokens": 8}
    answers = {"id": "x", "object": "chat.completion", "created": 0, "model": "m",
               "choices": [choice], "usage": usage}  # fmt: skip
    endpoint: JsonEndpoint

    def respond(method, body):
        if body.get("n", 1) > 1:
            return 400, {"error": {"message": "n must be 1"}}
        if len(endpoint.requests) % 2 == 0:
            return 500, {"error": {"message": "boom"}}
        return 200, answers

    endpoint = JsonEndpoint(respond)
    return endpoint


def test_backend_falls_back_to_parallel_requests_and_keeps_what_succeeded():
    endpoint = flaky_endpoint()
    try:
        model = OpenAIModel("m", f"{endpoint.url}/v1", max_retries=0)
        completions = model.generate(QUESTION, 4, Sampling(max_tokens=4, seed=10))
        # n=4 refused; 4 single requests, every other one failing: 2 kept.
        assert model._server_n is False
        assert [c.text for c in completions] == ["5", "5"]
        assert all(c.completion_tokens == 1 and c.prompt_tokens == 7 for c in completions)
        seeds = sorted(r["seed"] for r in endpoint.requests if r.get("n", 1) == 1)
        assert seeds == [10, 11, 12, 13]  # one seed per sample
    finally:
        endpoint.close()


def test_backend_retries_server_errors():
    endpoint = flaky_endpoint()
    try:
        model = OpenAIModel("m", f"{endpoint.url}/v1", max_retries=2)
        completions = model.generate(QUESTION, 3, Sampling(max_tokens=4, seed=1))
        assert len(completions) == 3  # each 500 was retried (with backoff) until it passed
        assert len(endpoint.requests) > 4
    finally:
        endpoint.close()


def test_an_endpoint_that_is_down_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-123")
    model = OpenAIModel("m", f"http://127.0.0.1:{free_port()}/v1", max_retries=0)
    for n in (1, 4):  # one request, and the server-n request
        with pytest.raises(ThinktankError, match="cannot reach the endpoint") as info:
            model.generate(QUESTION, n, Sampling(max_tokens=4))
        assert "sk-secret-123" not in str(info.value)


def test_thinktank_serve_starts_with_no_arguments_but_a_port(isolated_home):
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "thinktank", "serve", "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        client = openai.OpenAI(api_key="none", base_url=f"http://127.0.0.1:{port}/v1",
                               max_retries=0)  # fmt: skip
        deadline = time.monotonic() + 60
        while True:
            try:
                models = client.models.list()
                break
            except openai.APIConnectionError:
                assert time.monotonic() < deadline and process.poll() is None
                time.sleep(0.2)
        assert [m.id for m in models.data if m.owned_by == "thinktank"] == ["smollm2"]
        reply = client.chat.completions.create(model="smollm2", messages=QUESTION, max_tokens=4)
        assert reply.choices[0].message.content
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_hogwild_and_plain_samples_served_from_the_torch_backend(torch_smollm2, tmp_path):
    ledger = Ledger(tmp_path / "ledger.db")
    running = RunningServer(create_app([torch_smollm2], ledger=ledger))
    try:
        client = openai.OpenAI(api_key="none", base_url=running.url, max_retries=0)
        reply = client.chat.completions.create(
            model="hogwild:workers=2,max_tokens=16,final_tokens=0/torch:smollm2",
            messages=QUESTION,
            seed=1,
        )
        extra = reply.model_extra["thinktank"]
        assert extra["strategy"].startswith("hogwild") and extra["candidates"] == 2
        (row,) = ledger.calls(extra["run_id"])  # one shared-cache session
        assert row.n == 2 and reply.usage.completion_tokens == row.completion_tokens
        plain = client.chat.completions.create(
            model="torch:smollm2", messages=QUESTION, n=2, max_tokens=8, seed=1
        )
        assert len(plain.choices) == 2 and plain.usage.completion_tokens <= 16
    finally:
        running.close()


def test_reasoning_tokens_a_provider_reports_are_metered_at_the_thinking_price(tmp_path):
    usage = {"prompt_tokens": 7, "completion_tokens": 10, "total_tokens": 17,
             "completion_tokens_details": {"reasoning_tokens": 6}}  # fmt: skip
    choice = {"index": 0, "finish_reason": "stop", "logprobs": None,
              "message": {"role": "assistant", "content": "5"}}  # fmt: skip
    endpoint = JsonEndpoint(lambda method, body: (200, {
        "id": "x", "object": "chat.completion", "created": 0, "model": "m",
        "choices": [choice], "usage": usage}))  # fmt: skip
    try:
        price = Price(input_per_mtok=1, output_per_mtok=2, thinking_per_mtok=5)
        model = OpenAIModel("m", f"{endpoint.url}/v1", max_retries=0, price=price)
        ledger = Ledger(tmp_path / "ledger.db")
        meter = Meter(ledger=ledger, run_id="r")
        meter.generate(model, QUESTION, 1, Sampling(max_tokens=16))
        assert meter.usage.thinking_tokens == 6
        assert meter.usage.cost_usd == pytest.approx((7 * 1 + 4 * 2 + 6 * 5) / 1e6)
        [call] = ledger.calls("r")
        assert (call.thinking_tokens, call.cost_usd) == (6, pytest.approx(meter.usage.cost_usd))
    finally:
        endpoint.close()
