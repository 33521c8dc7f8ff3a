"""The server as a trust boundary, attacked by hostile requests.

Each request tries to make `thinktank serve` reach something its operator did not
configure: a URL of the client's choosing (with the operator's API key), an
environment variable, a module to import, a path to write or load, more work than
the server allows. A listener on 127.0.0.1 proves that nothing left for a
client-chosen URL; the host is checked from outside afterwards.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
import uuid

import httpx
import openai
import pytest

from thinktank import models as model_registry
from thinktank.errors import ThinktankError
from thinktank.ledger import Ledger
from thinktank.models import _smollm2_path
from thinktank.models.base import Sampling
from thinktank.models.openai import OpenAIModel
from thinktank.server import create_app
from thinktank.server.limits import OPTION_KINDS, RequestLimits
from thinktank.strategies import STRATEGIES

from .conftest import JsonEndpoint, RunningServer, free_port

KEY = "server-key"
OPERATOR_SECRET = "sk-operator-secret-" + uuid.uuid4().hex
QUESTION = [{"role": "user", "content": "What is 2 + 3?"}]


@pytest.fixture(scope="module")
def canary():
    """A listener that must never be called: it records whatever reaches it."""
    endpoint = JsonEndpoint(lambda method, body: (200, {"data": [{"id": "canary"}]}))
    yield endpoint
    endpoint.close()


@pytest.fixture(scope="module")
def server(smollm2, tmp_path_factory):
    """The embedded model served with the operator's secrets in the environment."""
    secrets = ("OPENAI_API_KEY", "TT_SECRET")
    previous = {name: os.environ.get(name) for name in secrets}
    os.environ.update(dict.fromkeys(secrets, OPERATOR_SECRET))
    ledger = Ledger(tmp_path_factory.mktemp("served") / "ledger.db")
    running = RunningServer(create_app({"smollm2": smollm2}, api_key=KEY, ledger=ledger))
    yield running
    running.close()
    for name, value in previous.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def post(server, body, timeout=120):
    return httpx.post(f"{server.url}/chat/completions", json=body, timeout=timeout,
                      headers={"Authorization": f"Bearer {KEY}"})  # fmt: skip


def refused(server, status=400, **fields):
    """The request gets an OpenAI-style 4xx (never a 500) that leaks no secret."""
    body = {"model": "smollm2", "messages": QUESTION, "max_tokens": 4, **fields}
    response = post(server, body)
    assert response.status_code == status, response.text
    assert OPERATOR_SECRET not in response.text
    error = response.json()["error"]
    assert error["message"] and error["type"] == "invalid_request_error"
    return error["message"]


def smuggling_specs(url: str, module: str, path: str) -> list[tuple[str, str]]:
    """(strategy spec, what the error must say) for every way a spec could smuggle a
    URL, an environment variable, a module, a path or an unserved model."""
    remote = f"openai:stolen@{url}/v1"
    return [
        (f"best-of-n:n=2,verifier=judge@{remote}", "not served here"),
        (f"best-of-n:n=2,verifier=pairwise@{remote}", "not served here"),
        (f"best-of-majority:n=2,verifier=judge@{remote}?key_env=TT_SECRET", "not served here"),
        (f"cascade:models=smollm2+{remote}", "not served here"),
        (f"cascade:models=smollm2+{remote}?key_env=TT_SECRET", "not served here"),
        (f"cascade:models=smollm2+smollm2,verifier=judge@{remote}", "not served here"),
        (f"cascade:models=smollm2+smollm2,signal=judge@{remote}", "not served here"),  # old name
        (f"spec-reason:models={remote}+smollm2", "not served here"),
        (f"spec-reason:models=smollm2+smollm2,value=prm@{url}", "not configured"),
        (f"beam:value=prm@{url}/v1#m", "not configured"),
        (f"tree-search:verifier=judge@{remote}", "not served here"),
        (f"tree-search:reward=judge@{remote}", "not served here"),  # its old name
        (f"beam:value=rollout2@judge@{remote}", "not served here"),
        (f"best-of-n:verifier=py:{module}:score", "cannot name a py: verifier"),
        ("best-of-n:verifier=py:os:system", "cannot name a py: verifier"),
        ("best-of-n:verifier=py:subprocess:getoutput", "cannot name a py: verifier"),
        (f"route:runs=bench-x,ledger={path}", "cannot name a ledger"),
        ("cascade:models=smollm2+gemma3-270m", "not served here"),
        (f"cascade:models=smollm2+gguf:{_smollm2_path()}", "not served here"),
        ("cascade:models=smollm2+gguf:/etc/passwd", "not served here"),
        ("cascade:models=smollm2+torch:smollm2", "not served here"),
    ]


def test_no_spec_reaches_a_url_a_variable_a_module_or_a_path(server, canary, tmp_path,
                                                             monkeypatch):  # fmt: skip
    module = f"thinktank_import_canary_{uuid.uuid4().hex}"
    imported = tmp_path / "imported"
    (tmp_path / f"{module}.py").write_text(
        f"open({str(imported)!r}, 'w').write('ran')\ndef score(problem, candidate):\n"
        "    return 1.0\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    ledger_path = tmp_path / "made" / "by" / "client" / "ledger.db"
    loaded_before = set(model_registry._loaded)
    for spec, message in smuggling_specs(canary.url, module, str(ledger_path)):
        for how in ("model", "extra_body"):
            fields = ({"model": f"{spec}/smollm2"} if how == "model"
                      else {"thinktank": {"strategy": spec}})  # fmt: skip
            assert message in refused(server, **fields), spec
    assert canary.requests == [] and canary.authorizations == []
    assert not imported.exists() and module not in sys.modules
    assert not ledger_path.parent.parent.parent.exists()
    assert set(model_registry._loaded) == loaded_before  # nothing was loaded for a client


def test_the_model_field_names_only_served_models(server, canary):
    for name in (f"openai:stolen@{canary.url}/v1", f"openai:x@{canary.url}/v1?key_env=TT_SECRET",
                 f"gguf:{_smollm2_path()}", "gguf:/etc/passwd", "torch:smollm2", "gemma3-270m",
                 f"single/openai:x@{canary.url}/v1"):  # fmt: skip
        assert "not served" in refused(server, 404, model=name)
    assert canary.requests == []
    listing = httpx.get(f"{server.url}/models", headers={"Authorization": f"Bearer {KEY}"})
    served = [m["id"] for m in listing.json()["data"] if m["owned_by"] == "thinktank"]
    assert served == ["smollm2"]


def test_a_served_model_can_judge_and_be_in_a_pool_by_name(server):
    response = post(server, {"model": "best-of-n:n=2,max_tokens=8,verifier=judge@smollm2/smollm2",
                             "messages": QUESTION})  # fmt: skip
    assert response.status_code == 200, response.text
    response = post(server, {"model": "cascade:models=smollm2+smollm2,n=2,max_tokens=8/smollm2",
                             "messages": QUESTION})  # fmt: skip
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"model": "self-consistency:n=65/smollm2"}, "--max-request-samples"),
        ({"model": "debate:agents=2,rounds=33/smollm2"}, "--max-request-steps"),
        ({"model": "mixture-of-agents:layers=100/smollm2"}, "--max-request-steps"),
        ({"model": "beam:beams=1000/smollm2"}, "--max-request-samples"),
        ({"model": "beam:step_tokens=100000/smollm2"}, "--max-sample-tokens"),
        ({"model": "beam:value=rollout500/smollm2"}, "--max-request-samples"),
        ({"model": "tree-search:rollouts=100000/smollm2"}, "--max-request-samples"),
        ({"model": "self-consistency:max_tokens=9000/smollm2"}, "--max-sample-tokens"),
        ({"n": 65}, "--max-request-samples"),
        ({"max_tokens": 9000}, "--max-sample-tokens"),
        ({"n": 64, "max_tokens": 1024}, "--max-request-tokens"),
    ],
)
def test_requests_over_the_servers_limits_are_refused(server, fields, fragment):
    assert fragment in refused(server, **fields)


def test_every_integer_option_of_every_built_in_strategy_has_a_chosen_limit():
    unclassified = {
        (cls.name, field.name)
        for cls in STRATEGIES.values()
        for field in cls.__dataclass_fields__.values()
        if field.init and field.type in ("int", int) and field.name not in OPTION_KINDS
    }
    assert unclassified == set()


def test_a_requests_budget_is_capped_by_the_server_whatever_it_asks(smollm2, tmp_path):
    ledger = Ledger(tmp_path / "ledger.db")
    running = RunningServer(create_app([smollm2], ledger=ledger,
                                       limits=RequestLimits(tokens=300)))  # fmt: skip
    try:
        client = openai.OpenAI(api_key="none", base_url=running.url, max_retries=0)
        reply = client.chat.completions.create(
            model="self-consistency:n=8,max_tokens=128/smollm2", messages=QUESTION,
            extra_body={"thinktank": {"budget": {"max_tokens": 10**9}}})  # fmt: skip
        assert reply.usage.total_tokens <= 300
        assert reply.model_extra["thinktank"]["budget_exhausted"] is True
        run_id = reply.model_extra["thinktank"]["run_id"]
        assert sum(r.prompt_tokens + r.completion_tokens for r in ledger.calls(run_id)) <= 300
    finally:
        running.close()


def test_whitespace_messages_are_a_400_not_a_500(server):
    for content in ("", "   ", "\n\t "):
        messages = [{"role": "user", "content": content}]
        assert "user message" in refused(server, model="single/smollm2", messages=messages)
    messages = [{"role": "system", "content": "You help."}]
    assert "user message" in refused(server, model="single/smollm2", messages=messages)


def test_only_the_strategies_the_operator_serves_can_be_named(smollm2):
    running = RunningServer(create_app([smollm2], strategies=["single"]))
    try:
        message = refused(running, model="self-consistency:n=2/smollm2")
        assert "not served here" in message
        response = post(running, {"model": "single:max_tokens=4/smollm2", "messages": QUESTION})
        assert response.status_code == 200, response.text
    finally:
        running.close()


def test_a_process_reward_endpoint_is_named_by_the_operator_only(smollm2, canary):
    prm = JsonEndpoint(lambda method, body: (200, {"data": [{"index": 0, "data": [[0.2, 0.8]]}]}))
    running = RunningServer(create_app([smollm2], process_rewards={"toy": f"{prm.url}#toy-prm"}))
    try:
        spec = "beam:beams=1,expand=1,max_steps=1,step_tokens=8,value=prm@toy/smollm2"
        response = post(running, {"model": spec, "messages": QUESTION})
        assert response.status_code == 200, response.text
        assert prm.requests and all(r["model"] == "toy-prm" for r in prm.requests)
        assert "not configured" in refused(running, model="beam:value=prm@toy#other/smollm2")
        assert canary.requests == []
    finally:
        running.close()
        prm.close()


def _long_plain_request(running, stream: bool, seen: threading.Event) -> None:
    """Ask for 16 samples of 512 junk tokens each (temperature 2: no early end), then
    hang up after 1.5 s, or after the first streamed token."""
    body = {"model": "smollm2", "messages": [{"role": "user", "content": "Write a long story."}],
            "n": 16, "max_tokens": 512, "temperature": 2.0, "stream": stream}  # fmt: skip
    try:
        if stream:
            with httpx.stream("POST", f"{running.url}/chat/completions", json=body,
                              timeout=60) as response:  # fmt: skip
                for line in response.iter_lines():
                    if '"content": "' in line and '"content": ""' not in line:
                        seen.set()
                        return  # leaving the block closes the connection
        else:
            httpx.post(f"{running.url}/chat/completions", json=body, timeout=1.5)
    except httpx.TimeoutException:
        seen.set()


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_that_disconnects_cancels_its_work(smollm2, tmp_path, stream):
    ledger = Ledger(tmp_path / "ledger.db")
    running = RunningServer(create_app([smollm2], ledger=ledger, max_concurrent=1))
    try:
        seen = threading.Event()
        _long_plain_request(running, stream, seen)
        assert seen.is_set()
        hung_up = time.monotonic()
        # The call stops at its next token and is recorded with what it had spent; left
        # running, 16 x 512 tokens would take minutes.
        while not (calls := _completion_tokens(ledger)):
            assert time.monotonic() - hung_up < 20, "the work went on after the client left"
            time.sleep(0.1)
        assert len(calls) == 1 and calls[0] < 16 * 512 / 2
        # The only slot is free again: the next request is served.
        response = httpx.post(
            f"{running.url}/chat/completions",
            timeout=60,
            json={"model": "smollm2", "messages": QUESTION, "max_tokens": 4},
        )
        assert response.status_code == 200, response.text  # fmt: skip
    finally:
        running.close()


def _completion_tokens(ledger: Ledger) -> list[int]:
    """Every recorded call's completion tokens, read from the ledger's file."""
    with sqlite3.connect(ledger.path) as db:
        return [tokens for (tokens,) in db.execute("SELECT completion_tokens FROM calls")]


def test_a_remote_models_key_goes_to_its_own_url_only(canary, monkeypatch):
    """A configured endpoint that redirects elsewhere gets an error, not the key's
    holder a copy of the request."""
    import http.server

    class Redirect(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            self.send_response(307)
            self.send_header("Location", f"{canary.url}/v1/chat/completions")
            self.send_header("Content-Length", "0")
            self.end_headers()

    redirector = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=redirector.serve_forever, daemon=True).start()
    monkeypatch.setenv("TT_UPSTREAM_KEY", OPERATOR_SECRET)
    try:
        model = OpenAIModel("m", f"http://127.0.0.1:{redirector.server_port}/v1",
                            api_key_env="TT_UPSTREAM_KEY", max_retries=0)  # fmt: skip
        with pytest.raises(ThinktankError, match="307") as info:
            model.generate(QUESTION, 1, Sampling(max_tokens=4))
        assert OPERATOR_SECRET not in str(info.value)
        assert canary.requests == [] and canary.authorizations == []
    finally:
        redirector.shutdown()
        redirector.server_close()


def test_a_malformed_option_is_an_invalid_strategy_400(server):
    response = post(server, {"model": "single/smollm2", "messages": QUESTION,
                             "thinktank": {"strategy": "single:max_tokens=x"}})  # fmt: skip
    assert response.status_code == 400
    assert json.loads(response.text)["error"]["code"] == "invalid_strategy"


def test_the_command_line_configures_what_requests_can_name(isolated_home, canary):
    port = free_port()
    command = [sys.executable, "-m", "thinktank", "serve", "--port", str(port),
               "--model", "local=smollm2", "--strategy", "single",
               "--max-request-samples", "2", "--process-reward", f"toy={canary.url}"]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                listing = httpx.get(f"{base}/models", timeout=5).json()
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and process.poll() is None
                time.sleep(0.2)
        assert [m["id"] for m in listing["data"]] == ["local", "single/local"]

        def ask(**fields):
            body = {"model": "local", "messages": QUESTION, "max_tokens": 4, **fields}
            return httpx.post(f"{base}/chat/completions", json=body, timeout=60)

        assert ask().status_code == 200
        assert ask(model="single/local").status_code == 200
        assert ask(model="smollm2").status_code == 404  # served under its name only
        assert "not served here" in ask(model="self-consistency:n=2/local").text
        assert "--max-request-samples" in ask(n=3).text
        assert canary.requests == []
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_a_request_names_a_bench_run_to_route_by_its_whole_id_only(smollm2, tmp_path):
    """A prefix or `last` would let a client list the operator's runs a character at a
    time, and a refusal must show neither their ids nor where the ledger is."""
    ledger = Ledger(tmp_path / "ledger.db")
    secret_run = "bench-0p3r4t0r5s3cr3t"
    ledger.start_bench(secret_run, {"suite": "rg:chain_sum?size=2", "strategies": [],
                                    "models": []})  # fmt: skip
    ledger.start_run(secret_run, "bench")
    running = RunningServer(create_app({"smollm2": smollm2}, api_key=KEY, ledger=ledger))
    try:
        for name in ("bench-0", "b", "last"):
            message = refused(running, thinktank={"strategy": f"route:runs={name}"})
            assert f"no bench run {name!r} on this server" in message
            assert secret_run not in message and str(tmp_path) not in message
    finally:
        running.close()
