"""Suites, the resumable runner and reports, on real data and the real model."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import ClassVar

import pytest

import thinktank
from thinktank.aggregate import dawid_skene
from thinktank.bench.report import results_table
from thinktank.bench.runner import plan_bench, solve_tasks
from thinktank.bench.suites import load_suite
from thinktank.economics import Configuration, unpriced_models
from thinktank.errors import SpecError, ThinktankError
from thinktank.ledger import Ledger
from thinktank.meter import Budget
from thinktank.models import Price, load_model
from thinktank.problem import Problem, Task
from thinktank.solution import Solution
from thinktank.strategies import Strategy
from thinktank.tune import Evaluated, recommend, tune

from .conftest import JsonEndpoint, reachable

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
    fields = {f.name for f in dataclasses.fields(Problem)}
    # context: the conversation before the question, as the user wrote it
    assert fields == {"id", "prompt", "kind", "public_tests", "context"}


POISON = "POISONED-REFERENCE-7f3a"


@dataclass
class Snoop(Strategy):
    """A strategy that searches everything it is given for the reference answer."""

    name: ClassVar[str] = "snoop"
    summary: ClassVar[str] = "test double"
    found: list = dataclasses.field(default_factory=list)

    def solve(self, problem, ctx):
        for obj in reachable((problem, ctx)):
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
                    "total_tokens", "cost_usd", "cost_of_pass_usd", "model_seconds"):  # fmt: skip
            assert key in run
    assert payload["wall_seconds"] > 0 and [a["concurrency"] for a in payload["attempts"]] == [4]
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
    """The real model, counting the tokens it is asked to sample (priced as ``price``)."""

    def __init__(self, model, price=None):
        self.model, self.sampled = model, 0
        self.name, self.capabilities = model.name, model.capabilities
        self.price = model.price if price is None else price

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


def test_no_share_samples_after_a_shared_run_is_a_run_of_its_own(smollm2, tmp_path):
    ledger = Ledger(tmp_path / "l.db")
    suite = load_suite(CHAIN_SUM.format(size=2))
    strategies = ["self-consistency:n=2,max_tokens=16", "weighted-vote:n=2,max_tokens=16"]
    shared = thinktank.benchmark(suite, strategies, [smollm2], ledger=ledger)
    model = CountingModel(smollm2)
    alone = thinktank.benchmark(suite, strategies, [model], ledger=ledger, share_samples=False)
    assert alone.run_id != shared.run_id
    # Solved again, each strategy drawing its own samples: not the shared run's results.
    assert model.sampled == sum(s.completion_tokens for s in alone.summaries) > 0


def test_every_option_that_changes_what_is_measured_changes_the_run_id(smollm2, tmp_path):
    ledger = Ledger(tmp_path / "l.db")

    def run_id(size=2, strategies=("single",), models=(smollm2,), **options):
        suite = load_suite(CHAIN_SUM.format(size=size))
        return plan_bench(suite, list(strategies), list(models), ledger=ledger, **options).run_id

    ids = [
        run_id(),
        run_id(size=3),
        run_id(seed=1),
        run_id(budget=Budget(max_tokens=500)),
        run_id(share_samples=False),
        run_id(strategies=["single:max_tokens=8"]),
        run_id(models=[CountingModel(smollm2, Price(1.0, 2.0))]),  # same model, new price
    ]
    assert len(set(ids)) == len(ids)
    assert run_id() == ids[0]  # and the same options resume the same run


def test_a_changed_strategy_default_is_a_new_bench_run(smollm2, tmp_path):
    # A release that changes a default (issue 18 changed several) must not resume
    # the runs measured under the old one: the spec alone names only changed options.
    from thinktank.strategies.sampling import SelfConsistency

    @dataclass
    class OldDefault(SelfConsistency):
        n: int = 4

    ledger, suite = Ledger(tmp_path / "l.db"), load_suite(CHAIN_SUM.format(size=2))
    old, new = OldDefault(), SelfConsistency()
    assert old.spec == new.spec == "self-consistency"
    ids = {plan_bench(suite, [s], [smollm2], ledger=ledger).run_id for s in (old, new)}
    assert len(ids) == 2


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
    """Answers "What is A + B?" without sampling: with ``wrong_first`` a wrong guess and
    then the right one (a pass@k output), else the right one alone."""

    name: ClassVar[str] = "guesses"
    summary: ClassVar[str] = "test double"
    wrong_first: bool = True

    def solve(self, problem, ctx):
        a, b = (int(x) for x in problem.prompt.split("What is ")[1].rstrip("?").split(" + "))
        if self.wrong_first:
            return Solution(answer=str(a + b + 1), candidates=[], alternatives=[str(a + b)])
        return Solution(answer=str(a + b), candidates=[])


def sums_suite(path, count: int = 3) -> str:
    """A JSONL suite of "What is A + B?" problems (what `Guesses` answers)."""
    path.write_text("".join(
        json.dumps({"question": f"What is {i} + {i + 2}?", "answer": str(2 * i + 2)}) + "\n"
        for i in range(1, count + 1)
    ))  # fmt: skip
    return f"jsonl:{path}"


def test_a_pass_at_k_output_is_scored_by_its_committed_answer(smollm2, tmp_path):
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
    # The first answer is the one it commits to; the right second guess counts apart.
    assert (row.answer, row.score, row.answer_scores) == ("6", 0.0, [0.0, 1.0])


def test_pass_at_k_outputs_have_their_own_column_and_never_reach_accuracy(smollm2, tmp_path):
    ledger = Ledger(tmp_path / "l.db")
    guesses, right = Guesses(), Guesses(wrong_first=False)
    outcome = thinktank.benchmark(sums_suite(tmp_path / "sums.jsonl"), [guesses, right],
                                  [smollm2], ledger=ledger)  # fmt: skip
    two, one = outcome.summaries
    assert (two.accuracy, two.cost_of_pass_usd, two.answers_given, two.pass_at_k_output) == (
        0.0, None, 2, 1.0)  # fmt: skip
    assert (one.accuracy, one.answers_given, one.pass_at_k_output) == (1.0, 1, None)
    assert (two.on_frontier, one.on_frontier) == (False, True)
    # tune's rule (the lowest cost-of-pass) reads the committed answers: the grader's
    # pick among the guesses does not win, though both cost nothing.
    evaluated = [Evaluated(Configuration(s.strategy, s.model), s) for s in outcome.summaries]
    assert recommend(evaluated)[0].configuration.strategy == right.spec
    table = results_table(outcome.summaries)
    assert "pass@k output (k answers)" in table and "1.00 (any of 2)" in table
    report = thinktank.report(outcome.run_id, tmp_path / "out", ledger).read_text()
    assert "pass@k output (k answers)" in report and "is **not** accuracy" in report


def test_a_real_pass_at_k_strategy_scores_its_first_answer_for_accuracy(smollm2, tmp_path):
    ledger = Ledger(tmp_path / "l.db")
    suite = load_suite(CHAIN_SUM.format(size=4))
    outcome = thinktank.benchmark(suite, ["best-of-majority:n=4,k=3,min_share=0.25,max_tokens=24"],
                                  [smollm2], ledger=ledger)  # fmt: skip
    [summary] = outcome.summaries
    rows = ledger.results(outcome.run_id)
    tasks = {t.problem.id: t for t in suite.tasks}
    for row in rows:
        assert row.score == tasks[row.problem_id].score(row.answer)  # the committed answer
        assert row.answer_scores == [] or row.answer_scores[0] == row.score
    assert summary.accuracy == sum(r.score >= 1 for r in rows) / len(rows)
    solved_by_any = sum(max(r.answer_scores or [r.score]) >= 1 for r in rows) / len(rows)
    assert summary.answers_given == max(len(r.answer_scores) or 1 for r in rows)
    assert summary.pass_at_k_output == (solved_by_any if summary.answers_given > 1 else None)


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


def test_a_run_reports_its_wall_time_not_the_sum_of_concurrent_problems(smollm2, tmp_path):
    ledger = Ledger(tmp_path / "l.db")
    suite = load_suite(CHAIN_SUM.format(size=6))
    strategies = ["self-consistency:n=2,max_tokens=24"]
    began = time.monotonic()
    outcome = thinktank.benchmark(suite, strategies, [smollm2], ledger=ledger, concurrency=3)
    measured = time.monotonic() - began
    [summary] = outcome.summaries
    assert [a.concurrency for a in outcome.attempts] == [3]
    # The run's own time (planning and summing up aside), not each problem's added up.
    assert measured - max(1.0, 0.15 * measured) < outcome.wall_seconds <= measured
    assert outcome.wall_seconds < summary.model_seconds  # the problems overlapped
    again = thinktank.benchmark(suite, strategies, [smollm2], ledger=ledger, concurrency=3)
    assert again.attempts == outcome.attempts  # nothing left to solve: no attempt added
    report = thinktank.report(outcome.run_id, tmp_path / "out", ledger).read_text()
    assert f"wall time {outcome.wall_seconds:.1f} s (concurrency 3)" in report


def sums_endpoint() -> JsonEndpoint:
    """A stand-in chat endpoint that answers "What is A + B?" right."""

    def respond(method, body):
        a, b = re.search(r"What is (\d+) \+ (\d+)\?", json.dumps(body["messages"])).groups()
        choice = {
            "index": 0,
            "finish_reason": "stop",
            "logprobs": None,
            "message": {"role": "assistant", "content": f"The answer is {int(a) + int(b)}."},
        }
        usage = {"prompt_tokens": 9, "completion_tokens": 5, "total_tokens": 14}
        return 200, {"id": "x", "object": "chat.completion", "created": 0, "model": "m",
                     "choices": [choice], "usage": usage}  # fmt: skip

    return JsonEndpoint(respond)


def test_an_unpriced_remote_model_is_reported_unpriced_never_free(smollm2, isolated_home, tmp_path):
    endpoint = sums_endpoint()
    try:
        remote = f"openai:mystery@{endpoint.url}/v1"  # not in the price book
        name = load_model(remote).name
        ledger = Ledger(tmp_path / "l.db")
        suite = sums_suite(tmp_path / "sums.jsonl", 2)
        outcome = thinktank.benchmark(suite, ["single:max_tokens=8"], [smollm2, remote],
                                      ledger=ledger)  # fmt: skip
        local, unpriced = outcome.summaries
        assert (local.unpriced_models, unpriced.unpriced_models) == ([], [name])
        assert unpriced.accuracy == 1.0  # right every time, and still not free:
        assert (unpriced.cost_usd, unpriced.cost_per_problem, unpriced.cost_of_pass_usd) == (
            None, None, None)  # fmt: skip
        assert not unpriced.on_frontier and not unpriced.on_pareto_front
        assert local.cost_usd > 0
        assert outcome.to_dict()["runs"][1]["cost_of_pass_usd"] is None
        report = thinktank.report(outcome.run_id, tmp_path / "out", ledger).read_text()
        assert "unknown (unpriced)" in report and f"{name} has no price" in report
        with pytest.raises(ThinktankError, match="a dollar budget cannot hold"):
            plan_bench(suite, ["single"], [remote], budget=Budget(max_cost_usd=1.0),
                       ledger=ledger)  # fmt: skip
        with pytest.raises(ThinktankError, match="tune compares costs"):
            tune(suite, [remote], ["single:max_tokens=8"], ledger=ledger, out_dir=tmp_path / "t")
        # A judge the strategy names counts as one of the models it calls.
        judged = f"best-of-n:n=2,verifier=judge@{remote}"
        plan = plan_bench(suite, [judged], [smollm2], ledger=ledger)
        config = ledger.bench_config(plan.run_id)
        assert plan.unpriced == [name]
        assert unpriced_models(config, Configuration(plan.strategies[0].spec, "smollm2")) == [name]
        # The command line warns once, and its JSON says unknown.
        result = _cli("bench", "--suite", suite, "-s", "single:max_tokens=8", "-m", remote,
                      "--json", home=isolated_home)  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert result.stderr.count("has no price") == 1
        [run] = json.loads(result.stdout)["runs"]
        assert (run["cost_usd"], run["cost_of_pass_usd"], run["unpriced_models"]) == (
            None, None, [name])  # fmt: skip
    finally:
        endpoint.close()
