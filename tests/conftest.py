"""Shared fixtures: the real embedded models, loaded once per test session."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import types
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import openai
import pytest
import uvicorn
from hypothesis import settings

from thinktank.ledger import Ledger
from thinktank.models import load_model
from thinktank.server import create_app

# Property tests draw the same examples on every run, so CI cannot go red on a draw
# nobody has seen; HYPOTHESIS_PROFILE=explore draws fresh ones when hunting bugs.
settings.register_profile("seeded", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "seeded"))


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    """Each test gets its own THINKTANK_HOME, so ledgers never mix."""
    home = tmp_path / "home"
    monkeypatch.setenv("THINKTANK_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def smollm2():
    return load_model("smollm2")


@pytest.fixture(scope="session")
def torch_smollm2():
    """SmolLM2 through the torch backend (shared KV cache for Hogwild! workers)."""
    return load_model("torch:smollm2")


@pytest.fixture(scope="session")
def gemma():
    return load_model("gemma3-270m")


#: A chat prompt the embedded model answers in a few tokens.
SUM_PROMPT = [{"role": "user", "content": "What is 2 + 3?"}]


class JsonEndpoint:
    """A stand-in HTTP endpoint on 127.0.0.1 for protocol tests: ``respond(method, body)``
    returns (status, payload); payload bytes are sent as they are, anything else as
    JSON. It records the JSON bodies it is sent, and their Authorization headers."""

    def __init__(self, respond):
        self.requests: list[dict] = []
        self.authorizations: list[str | None] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                self._reply(*respond("GET", None))

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append(body)
                outer.authorizations.append(self.headers.get("Authorization"))
                self._reply(*respond("POST", body))

            def _reply(self, status, payload):
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def reachable(obj: object, seen: set[int] | None = None, depth: int = 0) -> Iterator[object]:
    """Every object reachable from ``obj`` through attributes (``__dict__`` and slots),
    containers and closures: what a strategy can find in what it is handed. Modules
    and classes are not followed: they are the interpreter's, handed to everyone."""
    seen = set() if seen is None else seen
    if id(obj) in seen or depth > 8 or isinstance(obj, types.ModuleType | type):
        return
    seen.add(id(obj))
    yield obj
    children: list[object] = []
    if isinstance(obj, dict):
        children = [*obj.keys(), *obj.values()]
    elif isinstance(obj, list | tuple | set | frozenset):
        children = list(obj)
    else:
        children = list(getattr(obj, "__dict__", {}).values())
        for cls in type(obj).__mro__:
            slots = getattr(cls, "__slots__", ())
            for slot in (slots,) if isinstance(slots, str) else slots:
                if hasattr(obj, slot):
                    children.append(getattr(obj, slot))
    if isinstance(obj, types.FunctionType):
        for cell in obj.__closure__ or ():
            with contextlib.suppress(ValueError):  # empty: a variable not bound yet
                children.append(cell.cell_contents)
    for child in children:
        yield from reachable(child, seen, depth + 1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RunningServer:
    """A real uvicorn server on a free loopback port, in this process."""

    def __init__(self, app):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.02)

    def close(self):
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def client(self) -> openai.OpenAI:
        """The official client, pointed at this server."""
        return openai.OpenAI(api_key="none", base_url=self.url, max_retries=0)


@contextlib.contextmanager
def serving(models, folder, **options) -> Iterator[RunningServer]:
    """A real server for ``models`` recording into a real ledger in ``folder`` (as
    ``.ledger``); ``options`` go to `create_app`."""
    ledger = Ledger(folder / "ledger.db")
    running = RunningServer(create_app(models, ledger=ledger, **options))
    running.ledger = ledger
    try:
        yield running
    finally:
        running.close()
