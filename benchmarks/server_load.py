"""The thinktank server under load, and what it adds to a call's latency.

Starts `thinktank serve`'s app on a free loopback port in this process, then:

1. overhead: the same one-token greedy request (``single``), one at a time,
   through the server with the official ``openai`` client and straight to the
   embedded model (the baseline, in the same process): the difference of the
   medians is what the server adds (HTTP, validation, the meter, the ledger);
2. load: ``--requests`` chat requests at once from one ``AsyncOpenAI`` client
   (``--max-tokens`` each): errors, latency percentiles, throughput.

    .venv/bin/python benchmarks/server_load.py [--requests 200] [--max-tokens 8]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path

import openai
import uvicorn

from thinktank.ledger import Ledger
from thinktank.models import load_model
from thinktank.models.base import Sampling
from thinktank.server import create_app

MESSAGES = [{"role": "user", "content": "What is 2 + 3?"}]


def start(app) -> tuple[uvicorn.Server, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.02)
    return server, f"http://127.0.0.1:{port}/v1"


def percentiles(seconds: list[float]) -> str:
    ms = sorted(1000 * s for s in seconds)
    pick = lambda q: ms[min(len(ms) - 1, int(q * len(ms)))]  # noqa: E731
    return f"p50 {pick(0.5):.1f} ms, p90 {pick(0.9):.1f} ms, p99 {pick(0.99):.1f} ms"


def overhead(url: str, model, rounds: int) -> tuple[list[float], list[float]]:
    client = openai.OpenAI(api_key="none", base_url=url, max_retries=0)
    sampling = Sampling(temperature=0.0, max_tokens=1)
    served, direct = [], []
    for _ in range(rounds):  # interleaved, so drift hits both alike
        started = time.perf_counter()
        client.chat.completions.create(model="smollm2", messages=MESSAGES, max_tokens=1,
                                       temperature=0)  # fmt: skip
        served.append(time.perf_counter() - started)
        started = time.perf_counter()
        model.generate(MESSAGES, 1, sampling)
        direct.append(time.perf_counter() - started)
    return served, direct


async def load(url: str, requests: int, max_tokens: int) -> tuple[list[float], list[str], float]:
    client = openai.AsyncOpenAI(api_key="none", base_url=url, max_retries=0, timeout=600)
    latencies: list[float] = []
    errors: list[str] = []

    async def one(i: int) -> None:
        started = time.perf_counter()
        try:
            await client.chat.completions.create(
                model="smollm2", messages=[{"role": "user", "content": f"What is {i} + 3?"}],
                max_tokens=max_tokens, seed=i,
            )  # fmt: skip
            latencies.append(time.perf_counter() - started)
        except openai.OpenAIError as exc:
            errors.append(repr(exc))

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(requests)))
    return latencies, errors, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=50, help="requests for the overhead test")
    parser.add_argument("--max-concurrent", type=int, default=8)
    args = parser.parse_args()
    model = load_model("smollm2")
    ledger = Ledger(Path(tempfile.mkdtemp()) / "ledger.db")
    server, url = start(create_app([model], max_concurrent=args.max_concurrent, ledger=ledger))
    served, direct = overhead(url, model, args.rounds)
    print(f"one-token greedy request, {args.rounds} rounds, one at a time:")
    print(f"  through the server: {percentiles(served)}")
    print(f"  straight to model:  {percentiles(direct)}")
    added = 1000 * (statistics.median(served) - statistics.median(direct))
    print(f"  server overhead (difference of medians): {added:.2f} ms")
    latencies, errors, seconds = asyncio.run(load(url, args.requests, args.max_tokens))
    print(f"\n{args.requests} concurrent requests (max_tokens={args.max_tokens}, "
          f"server max_concurrent={args.max_concurrent}):")  # fmt: skip
    print(f"  errors: {len(errors)}{' ' + errors[0] if errors else ''}")
    print(f"  latency: {percentiles(latencies)}; {len(latencies) / seconds:.1f} requests/s, "
          f"{seconds:.1f} s in all")  # fmt: skip
    server.should_exit = True


if __name__ == "__main__":
    main()
