"""Benchmarks on Ray: a real local Ray instance (2 CPUs), the real embedded model, a
real ledger; the same results as in process, a killed worker, an interrupted driver,
and a cap on the units in flight against a real HTTP endpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import ray

import thinktank
from thinktank.bench.distributed import RayExecutor
from thinktank.bench.runner import plan_bench, run_bench
from thinktank.ledger import Ledger

from .conftest import JsonEndpoint

SUITE = "rg:chain_sum?min_terms=2&max_terms=2&min_digits=1&max_digits=1&size={size}&seed=3"
STRATEGIES = ["single:max_tokens=32", "self-consistency:max_tokens=32,n=2"]


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def _sweep(ledger: Ledger, size: int, executor: RayExecutor | None, **options):
    plan = plan_bench(SUITE.format(size=size), STRATEGIES, ["smollm2"], ledger=ledger)
    return plan, run_bench(plan, ledger=ledger, executor=executor, **options)


def _by_problem(rows):
    return {(r.strategy, r.problem_id): r for r in rows}


def _counted_once(ledger: Ledger, run_id: str, expected: int) -> None:
    """Every problem has one result, and the ledger's calls are exactly what the results
    paid: nothing lost, nothing counted twice."""
    rows = ledger.results(run_id)
    assert len(rows) == len(_by_problem(rows)) == expected
    calls = ledger.calls(run_id)
    assert sum(c.cost_usd for c in calls) == pytest.approx(sum(r.cost_usd for r in rows))
    assert sum(c.completion_tokens for c in calls) == sum(r.completion_tokens for r in rows)


def test_ray_gives_the_in_process_results_for_the_same_seeds(tmp_path):
    # Both sides start cold and solve the units in the same order: which prompts a
    # model's prefix cache holds changes the numerics (a prefix computed in another
    # batch shape), so that is what the same seeds need to give the same samples.
    env = {**os.environ, "THINKTANK_HOME": str(tmp_path / "here")}
    args = ["bench", "--suite", SUITE.format(size=4), "--concurrency", "1", "--json"]
    for spec in STRATEGIES:
        args += ["-s", spec]
    done = subprocess.run([sys.executable, "-m", "thinktank", *args], env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    here = Ledger(tmp_path / "here" / "ledger.db")
    local = here.results(json.loads(done.stdout)["run_id"])
    there = Ledger(tmp_path / "there.db")
    plan, remote = _sweep(there, 4, RayExecutor(actors=1), concurrency=1)
    assert _by_problem(local).keys() == _by_problem(remote).keys()
    for key, mine in _by_problem(local).items():
        theirs = _by_problem(remote)[key]
        assert (theirs.answer, theirs.score, theirs.sample_keys) == (
            mine.answer, mine.score, mine.sample_keys)  # fmt: skip
        assert (theirs.prompt_tokens, theirs.cached_tokens, theirs.completion_tokens) == (
            mine.prompt_tokens, mine.cached_tokens, mine.completion_tokens)  # fmt: skip
        assert theirs.cost_usd == pytest.approx(mine.cost_usd)
    _counted_once(there, plan.run_id, 8)


def test_a_worker_killed_mid_run_is_retried_and_every_problem_counted_once(tmp_path):
    ledger = Ledger(tmp_path / "ledger.db")
    pids: list[int] = []
    killed = threading.Event()

    def remember(actors):
        pids.extend(ray.get([actor.pid.remote() for actor in actors["smollm2"]]))

    def kill_first_worker(row):
        if not killed.is_set():
            killed.set()
            os.kill(pids[0], signal.SIGKILL)

    # Two units at a time in each worker, so the killed one has work in flight.
    executor = RayExecutor(actors=2, on_workers=remember)
    plan, _ = _sweep(ledger, 6, executor, concurrency=4, on_result=kill_first_worker)
    assert killed.is_set()
    with pytest.raises(ProcessLookupError):
        os.kill(pids[0], 0)  # it really is gone
    _counted_once(ledger, plan.run_id, 12)


def test_an_interrupted_driver_resumes_where_it_stopped(tmp_path):
    ledger = Ledger(tmp_path / "ledger.db")
    seen = []

    def interrupt_after_three(row):
        seen.append(row)
        if len(seen) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _sweep(ledger, 4, RayExecutor(), concurrency=2, on_result=interrupt_after_three)
    plan, _ = _sweep(ledger, 4, RayExecutor(), concurrency=2)
    assert plan.done >= 3  # the stored results were kept, and not solved again
    _counted_once(ledger, plan.run_id, 8)


def test_no_more_units_in_flight_against_an_endpoint_than_the_cap(tmp_path, monkeypatch):
    # Set after Ray started: only the executor can hand the key to its workers.
    monkeypatch.setenv("SWEEP_KEY", "sk-sweep")
    lock, active, peak = threading.Lock(), [0], [0]
    choice = {"index": 0, "finish_reason": "stop", "logprobs": None,
              "message": {"role": "assistant", "content": "The answer is 5."}}  # fmt: skip

    def respond(method, body):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.3)  # long enough for every unit the driver lets out to overlap
        with lock:
            active[0] -= 1
        usage = {"prompt_tokens": 9, "completion_tokens": 5, "total_tokens": 14}
        return 200, {"id": "x", "object": "chat.completion", "created": 0, "model": "m",
                     "choices": [choice], "usage": usage}  # fmt: skip

    endpoint = JsonEndpoint(respond)
    try:
        ledger = Ledger(tmp_path / "ledger.db")
        model = f"openai:m@{endpoint.url}/v1?key_env=SWEEP_KEY"
        outcome = thinktank.benchmark(SUITE.format(size=8), ["single"], [model], ledger=ledger,
                                      concurrency=2, executor=RayExecutor(actors=2))  # fmt: skip
        assert outcome.summaries[0].n_problems == 8
        assert len(endpoint.requests) == 8 and peak[0] == 2  # the cap, and reached
        assert set(endpoint.authorizations) == {"Bearer sk-sweep"}
    finally:
        endpoint.close()


def test_workers_decode_with_the_cores_they_reserve(monkeypatch, tmp_path):
    from thinktank.config import threads

    monkeypatch.setenv("THINKTANK_THREADS", "3")
    assert threads() == 3
    monkeypatch.setenv("THINKTANK_THREADS", "many")
    assert threads() == os.cpu_count()
    seen = []

    def ask(actors):
        seen.extend(ray.get([actor.threads.remote() for actor in actors["smollm2"]]))

    for cpus in (1, 2):
        _sweep(Ledger(tmp_path / f"{cpus}.db"), 1, RayExecutor(cpus=cpus, on_workers=ask),
               concurrency=1)  # fmt: skip
    assert seen == [1, 2]
