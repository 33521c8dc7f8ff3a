"""Suites, the resumable runner and reports, on real data and the real model."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import types
from dataclasses import dataclass
from typing import ClassVar

import pytest

import thinktank
from thinktank.aggregate import dawid_skene
from thinktank.bench.runner import solve_tasks
from thinktank.bench.suites import load_suite
from thinktank.errors import SpecError
from thinktank.ledger import Ledger
from thinktank.problem import Problem, Task
from thinktank.solution import Solution
from thinktank.strategies import Strategy

CHAIN_SUM = "rg:chain_sum?min_terms=2&max_terms=2&min_digits=1&max_digits=1&size={size}&seed=1"


def test_reasoning_gym_suite_takes_its_parameters():
    suite = load_suite(CHAIN_SUM.format(size=5))
    assert len(suite.tasks) == 5
    task = suite.tasks[0]
    assert task.problem.kind == "math"
    assert "=" in task.problem.prompt
    assert task.score(task.reference) == 1.0
    assert task.score("not a number") == 0.0


def test_a_mixed_suite_keeps_each_part_its_own_scorer():
    chain, products = (
        CHAIN_SUM.format(size=3),
        CHAIN_SUM.format(size=2).replace("chain_sum", "products"),
    )
    mixed = load_suite(f"{chain} + {products}")
    parts = [load_suite(chain), load_suite(products)]
    assert [t.problem.id for t in mixed.tasks] == [
        f"{number}:{t.problem.id}" for number, part in enumerate(parts) for t in part.tasks
    ]
    for task, original in zip(mixed.tasks, [t for part in parts for t in part.tasks], strict=True):
        assert task.problem.prompt == original.problem.prompt
        assert task.score(original.reference) == 1.0
    with pytest.raises(SpecError):
        load_suite(f"{chain} + nope")


def test_humaneval_suite_has_public_tests_and_hidden_reference():
    suite = load_suite("humaneval?size=3")
    assert [t.problem.id for t in suite.tasks] == ["HumanEval/0", "HumanEval/1", "HumanEval/2"]
    problem = suite.tasks[2].problem
    assert problem.kind == "code"
    assert problem.public_tests == ("assert truncate_number(3.5) == 0.5",)
    assert suite.tasks[2].score(suite.tasks[2].reference) == 1.0


def test_jsonl_suite_and_its_errors(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text(
        '{"question": "2+2?", "answer": "4"}\n{"question": "Capital of France?",'
        ' "answer": "Paris", "kind": "text"}\n'
    )
    tasks = load_suite(f"jsonl:{path}").tasks
    assert [t.problem.kind for t in tasks] == ["math", "text"]
    assert tasks[1].score("paris") == 1.0
    path.write_text('{"question": "no answer"}\n')
    with pytest.raises(SpecError, match=r"mine\.jsonl:1"):
        load_suite(f"jsonl:{path}")
    for bad in ("nope", "rg:no_such_dataset", f"jsonl:{tmp_path}/missing.jsonl"):
        with pytest.raises(SpecError):
            load_suite(bad)


def test_problem_has_no_field_for_the_reference():
    assert {f.name for f in dataclasses.fields(Problem)} == {"id", "prompt", "kind", "public_tests"}


POISON = "POISONED-REFERENCE-7f3a"


def _reachable(obj, seen=None, depth=0):
    """Every object reachable from obj through attributes, containers and closures."""
    seen = seen if seen is not None else set()
    if id(obj) in seen or depth > 8:
        return
    seen.add(id(obj))
    yield obj
    children = []
    if isinstance(obj, dict):
        children = [*obj.keys(), *obj.values()]
    elif isinstance(obj, list | tuple | set | frozenset):
        children = list(obj)
    elif hasattr(obj, "__dict__"):
        children = list(vars(obj).values())
    if isinstance(obj, types.FunctionType) and obj.__closure__:
        children += [cell.cell_contents for cell in obj.__closure__]
    for child in children:
        yield from _reachable(child, seen, depth + 1)


@dataclass
class Snoop(Strategy):
    """A strategy that searches everything it is given for the reference answer."""

    name: ClassVar[str] = "snoop"
    summary: ClassVar[str] = "test double"
    found: list = dataclasses.field(default_factory=list)

    def solve(self, problem, ctx):
        for obj in _reachable((problem, ctx)):
            if (isinstance(obj, str) and POISON in obj) or isinstance(obj, Task):
                self.found.append(obj)
        return Solution(answer=None, candidates=[])


def test_a_strategy_cannot_reach_a_poisoned_reference(smollm2, tmp_path):
    task = Task(Problem("p1", "What is 1 + 1?"), POISON, scorer=lambda answer, ref: 0.0)
    snoop = Snoop()
    [row] = solve_tasks(
        snoop, smollm2, [task], run_id="r", seed=0, budget=None, ledger=Ledger(tmp_path / "l.db")
    )
    assert snoop.found == []
    assert row.score == 0.0


def test_runner_resumes_without_redoing_or_duplicating(tmp_path):
    ledger = Ledger(tmp_path / "ledger.db")
    suite = CHAIN_SUM.format(size=4)
    strategies = ["single:max_tokens=24", "self-consistency:n=3,max_tokens=24"]
    first = thinktank.benchmark(suite, strategies, ledger=ledger)
    calls_after_first = len(ledger.calls(first.run_id))
    assert [s.n_problems for s in first.summaries] == [4, 4]
    sc = first.summaries[1]
    assert sc.samples == 3 and len(sc.pass_at_k) == len(sc.majority_at_k) == 3
    assert sc.pass_at_k[0] == pytest.approx(sc.majority_at_k[0])  # one sample: same thing
    assert all(a <= b + 1e-9 for a, b in zip(sc.pass_at_k, sc.pass_at_k[1:], strict=False))
    again = thinktank.benchmark(suite, strategies, ledger=ledger)
    assert again.run_id == first.run_id
    assert len(ledger.calls(first.run_id)) == calls_after_first  # nothing redone
    assert len(ledger.results(first.run_id)) == 8
    assert [s.to_dict() for s in again.summaries] == [s.to_dict() for s in first.summaries]


def test_humaneval_smoke_run_scores_real_samples(tmp_path):
    ledger = Ledger(tmp_path / "ledger.db")
    outcome = thinktank.benchmark(
        "humaneval?size=2", ["self-consistency:n=2,max_tokens=96"], ledger=ledger
    )
    rows = ledger.results(outcome.run_id)
    assert len(rows) == 2
    assert all(len(r.sample_scores) == 2 for r in rows)
    assert all(score in (0.0, 1.0) for r in rows for score in r.sample_scores)
    assert all(r.completion_tokens > 0 for r in rows)


def _cli(*args, home, wait=True):
    env = {**os.environ, "THINKTANK_HOME": str(home)}
    command = [sys.executable, "-m", "thinktank", *args]
    if not wait:
        return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)


def test_killed_run_finishes_on_rerun_with_every_problem_once(isolated_home):
    args = ["bench", "--suite", CHAIN_SUM.format(size=12), "--strategy", "single:max_tokens=48",
            "--concurrency", "2"]  # fmt: skip
    process = _cli(*args, home=isolated_home, wait=False)
    database = isolated_home / "ledger.db"
    deadline = time.monotonic() + 120
    count = 0
    while time.monotonic() < deadline and count < 3:
        time.sleep(0.2)
        if database.exists():
            try:
                with sqlite3.connect(database) as db:
                    count = db.execute("SELECT COUNT(*) FROM results").fetchone()[0]
            except sqlite3.OperationalError:
                continue  # the run has created the file but not its tables yet
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert 3 <= count < 12, "the run should have been killed halfway"

    result = _cli(*args, "--json", home=isolated_home)
    assert result.returncode == 0, result.stderr
    [run] = json.loads(result.stdout)["runs"]
    assert run["n_problems"] == 12
    with sqlite3.connect(database) as db:
        ids = [row[0] for row in db.execute("SELECT problem_id FROM results")]
    assert sorted(ids) == sorted(set(ids)) and len(ids) == 12


def test_bench_json_report_and_bad_input(isolated_home, tmp_path):
    out = tmp_path / "report"
    result = _cli(
        "bench", "--suite", CHAIN_SUM.format(size=3), "--strategy", "single:max_tokens=16",
        "--strategy", "self-consistency:n=2,max_tokens=16", "--json", "--out", str(out),
        home=isolated_home,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    for run in payload["runs"]:
        for key in ("strategy", "model", "suite", "n_problems", "accuracy", "ci95",
                    "total_tokens", "cost_usd", "cost_of_pass_usd", "seconds"):  # fmt: skip
            assert key in run
    pngs = {p.name for p in out.glob("*.png")}
    assert pngs == {"accuracy_vs_tokens.png", "pass_and_majority_at_k.png", "cost_of_pass.png",
                    "pareto.png"}  # fmt: skip
    report = (out / "report.md").read_text()
    assert "upper bound" in report and "## Price per token vs cost per correct answer" in report
    assert all(run["best_of_k"] == [] for run in payload["runs"])  # no verifier in this run
    again = _cli("report", payload["run_id"], "--out", str(tmp_path / "r2"), home=isolated_home)
    assert again.returncode == 0 and (tmp_path / "r2" / "report.md").exists()

    for bad in (["bench", "--suite", "nope", "--strategy", "single"],
                ["bench", "--suite", CHAIN_SUM.format(size=2), "--strategy", "bogus"],
                ["report", "no-such-run"]):  # fmt: skip
        failed = _cli(*bad, home=isolated_home)
        assert failed.returncode == 2 and "Traceback" not in failed.stderr, failed.stderr


def test_an_edited_jsonl_suite_starts_a_new_run(tmp_path):
    path = tmp_path / "mine.jsonl"
    ledger = Ledger(tmp_path / "ledger.db")
    path.write_text('{"question": "What is 2 + 2?", "answer": "4"}\n')
    first = thinktank.benchmark(f"jsonl:{path}", ["single:max_tokens=8"], ledger=ledger)
    path.write_text('{"question": "What is 3 + 3?", "answer": "6"}\n')
    second = thinktank.benchmark(f"jsonl:{path}", ["single:max_tokens=8"], ledger=ledger)
    assert first.run_id != second.run_id


def test_verifier_analysis_from_a_best_of_n_run(tmp_path):
    outcome = thinktank.benchmark(
        CHAIN_SUM.format(size=3), ["best-of-n:n=3,max_tokens=32"], ledger=Ledger(tmp_path / "l.db")
    )
    [summary] = outcome.summaries
    assert len(summary.best_of_k) == 3
    assert summary.best_of_k[-1] == pytest.approx(summary.accuracy)  # k = n is best-of-n itself
    assert summary.best_of_k[0] == pytest.approx(summary.majority_at_k[0])  # one sample
    assert summary.verifier_false_positive_rate is None or (
        0 <= summary.verifier_false_positive_rate <= 1
    )
    report = thinktank.report(outcome.run_id, tmp_path / "out", Ledger(tmp_path / "l.db"))
    assert (report.parent / "verifier_scaling.png").exists()


class CountingModel:
    """The real model, counting the tokens it is asked to sample."""

    def __init__(self, model):
        self.model, self.sampled = model, 0
        self.name, self.capabilities, self.price = model.name, model.capabilities, model.price

    def count_tokens(self, prompt):
        return self.model.count_tokens(prompt)

    def generate(self, prompt, n=1, sampling=None, **options):
        completions = self.model.generate(prompt, n, sampling, **options)
        self.sampled += sum(c.completion_tokens for c in completions)
        return completions


def test_strategies_share_seeded_samples_and_each_pays_for_them(smollm2, tmp_path):
    suite = CHAIN_SUM.format(size=2)
    strategies = ["self-consistency:n=4,max_tokens=24", "weighted-vote:n=4,max_tokens=24"]
    drawn = {}
    for share in (True, False):
        model = CountingModel(smollm2)
        outcome = thinktank.benchmark(
            suite, strategies, [model], ledger=Ledger(tmp_path / f"{share}.db"), concurrency=1,
            share_samples=share,
        )  # fmt: skip
        drawn[share] = model.sampled
        vote, weighted = outcome.summaries
        # Each strategy is charged for every sample, drawn or replayed.
        assert vote.completion_tokens == weighted.completion_tokens > 0
        assert vote.cost_usd == pytest.approx(weighted.cost_usd)
        rows = Ledger(tmp_path / f"{share}.db").results(outcome.run_id)
        by_strategy = {}
        for row in rows:
            by_strategy.setdefault(row.strategy, []).append(row.sample_keys)
        # The same samples (paired comparison): at concurrency 1 also when drawn twice.
        assert by_strategy[vote.strategy] == by_strategy[weighted.strategy]
        assert drawn[share] == (1 if share else 2) * vote.completion_tokens


def test_adaptive_consistency_votes_over_the_first_samples_of_the_same_stream(tmp_path):
    ledger = Ledger(tmp_path / "l.db")
    strategies = [
        "self-consistency:n=6,max_tokens=24",
        "adaptive-consistency:max_n=6,max_tokens=24",
    ]
    outcome = thinktank.benchmark(CHAIN_SUM.format(size=3), strategies, ledger=ledger)
    keys = {}
    for row in ledger.results(outcome.run_id):
        keys.setdefault(row.problem_id, {})[row.strategy.partition(":")[0]] = row.sample_keys
    for problem in keys.values():
        drawn = problem["adaptive-consistency"]
        assert 2 <= len(drawn) <= 6 and drawn == problem["self-consistency"][: len(drawn)]


@dataclass
class Guesses(Strategy):
    """Answers with two guesses without sampling: a wrong one first, then a right one."""

    name: ClassVar[str] = "guesses"
    summary: ClassVar[str] = "test double"

    def solve(self, problem, ctx):
        a, b = (int(x) for x in problem.prompt.split("What is ")[1].rstrip("?").split(" + "))
        return Solution(answer=str(a + b + 1), candidates=[], alternatives=[str(a + b)])


def test_a_problem_answered_with_k_guesses_counts_if_any_is_right(smollm2, tmp_path):
    task = Task(Problem("p1", "What is 2 + 3?"), "5", scorer=lambda answer, ref: answer == ref)
    [row] = solve_tasks(
        Guesses(),
        smollm2,
        [task],
        run_id="r",
        seed=0,
        budget=None,
        ledger=Ledger(tmp_path / "l.db"),
    )
    assert (row.answer, row.score) == ("6", 1.0)


def test_truth_inference_re_answers_the_batch_from_worker_reliability(tmp_path):
    ledger = Ledger(tmp_path / "l.db")
    spec = "truth-inference:n=4,temperatures=0.3/1.2,max_tokens=32"
    outcome = thinktank.benchmark(CHAIN_SUM.format(size=4), [spec], ledger=ledger)
    [summary] = outcome.summaries
    workers = {f"smollm2|{v}|T={t}" for v in ("instruct", "step-by-step") for t in ("0.3", "1.2")}
    assert set(summary.worker_reliability) == set(summary.worker_accuracy) == workers
    assert all(0 < p < 1 for p in summary.worker_reliability.values())
    rows = ledger.results(outcome.run_id)
    estimate = dawid_skene([list(zip(r.sample_workers, r.sample_keys, strict=True)) for r in rows])
    for row, key in zip(rows, estimate.answers, strict=True):
        # Each answer is the batch estimate, scored as the evaluator scored that sample.
        assert row.answer == key
        assert row.score == (row.sample_scores[row.sample_keys.index(key)] if key else 0.0)
