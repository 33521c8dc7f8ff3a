"""A benchmark sweep on Ray against the in-process executor: throughput of 1 and 2
Ray workers, and Ray's overhead per unit.

Each configuration runs the same sweep into a fresh ledger (nothing resumes):
in process one problem at a time, in process two at a time (one model batching
both), on Ray with one worker (2 cores, then 1), and on Ray with two workers of
one core each (each its own model, one problem at a time). Ray starts once,
before the timings; each Ray run's time includes starting its workers and
loading the model in them, which is also reported apart.

    .venv/bin/python benchmarks/ray_sweep.py [--size 16] [--strategy SPEC]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import ray

import thinktank
from thinktank.bench.distributed import RayExecutor
from thinktank.ledger import Ledger

SUITE = "rg:chain_sum?min_terms=2&max_terms=2&min_digits=1&max_digits=1&size={size}&seed=5"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=16, help="problems in the sweep")
    parser.add_argument("--strategy", default="self-consistency:n=4,max_tokens=64")
    args = parser.parse_args()
    suite = SUITE.format(size=args.size)
    thinktank.load_model("smollm2")  # the in-process runs' model, loaded before timing
    started = time.monotonic()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    print(f"Ray start: {time.monotonic() - started:.1f} s (not in the timings below)")

    folder = Path(tempfile.mkdtemp())
    runs = {
        "in process, 1 at a time": dict(concurrency=1),
        "in process, 2 at a time": dict(concurrency=2),
        "Ray, 1 worker, 2 cores": dict(concurrency=1, executor=RayExecutor(actors=1, cpus=2)),
        "Ray, 1 worker, 1 core": dict(concurrency=1, executor=RayExecutor(actors=1)),
        "Ray, 2 workers, 1 core each": dict(concurrency=2, executor=RayExecutor(actors=2)),
    }
    seconds = {}
    for index, (name, options) in enumerate(runs.items()):
        ledger = Ledger(folder / f"{index}.db")
        began = time.monotonic()
        outcome = thinktank.benchmark(suite, [args.strategy], ledger=ledger, **options)
        seconds[name] = time.monotonic() - began
        s = outcome.summaries[0]
        print(f"{name:<26} {seconds[name]:6.1f} s  {args.size / seconds[name]:.2f} problems/s"
              f"  accuracy {s.accuracy:.2f}")  # fmt: skip

    load = _worker_start()
    local, whole, one, two = (seconds[k] for k in (
        "in process, 1 at a time", "Ray, 1 worker, 2 cores", "Ray, 1 worker, 1 core",
        "Ray, 2 workers, 1 core each"))  # fmt: skip
    print(f"\nstarting a Ray worker and loading the model in it: {load:.1f} s")
    print(f"throughput, 2 Ray workers / 1 (1 core each): {one / two:.2f}x")
    print(f"throughput, 2 Ray workers of 1 core / 1 worker of 2 cores: {whole / two:.2f}x")
    print(f"Ray overhead per unit vs in process (both 1 at a time on 2 cores, worker start"
          f" excluded): {(whole - load - local) / args.size * 1000:.0f} ms")  # fmt: skip


def _worker_start() -> float:
    """Seconds to start one Ray worker and load the embedded model in it."""
    from thinktank.bench.distributed import UnitSolver

    began = time.monotonic()
    worker = ray.remote(UnitSolver).remote("smollm2")
    ray.get(worker.warm.remote())
    elapsed = time.monotonic() - began
    ray.kill(worker)
    return elapsed


if __name__ == "__main__":
    main()
