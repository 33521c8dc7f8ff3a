"""The command line, run as a user runs it: a real process, real model, real ledger."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys

import pytest


def thinktank(*args: str, home) -> subprocess.CompletedProcess:
    env = {**os.environ, "THINKTANK_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "thinktank", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_solve_json_counts_eight_completions_and_the_ledger_matches(isolated_home):
    result = thinktank(
        "solve",
        "State the final answer: 6 + 3 =",
        "--strategy",
        "self-consistency:n=8,max_tokens=48",
        "--seed",
        "4",
        "--json",
        home=isolated_home,
    )
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)  # exactly one JSON object, nothing else
    usage = payload["usage"]
    assert usage["completions"] == 8
    assert len(payload["candidates"]) == 8
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["completion_tokens"] == sum(c["completion_tokens"] for c in payload["candidates"])
    for key in ("cost_usd", "seconds"):
        assert usage[key] > 0
    with sqlite3.connect(isolated_home / "ledger.db") as db:
        rows = db.execute(
            "SELECT n, prompt_tokens, completion_tokens, cost_usd, strategy, model FROM calls"
            " WHERE run_id = ?",
            (payload["run_id"],),
        ).fetchall()
    assert sum(r[0] for r in rows) == 8
    assert sum(r[1] for r in rows) == usage["prompt_tokens"]
    assert sum(r[2] for r in rows) == usage["completion_tokens"]
    assert sum(r[3] for r in rows) == pytest.approx(usage["cost_usd"])
    assert {(r[4], r[5]) for r in rows} == {("self-consistency:max_tokens=48", "smollm2")}

    listing = thinktank("ledger", "--json", home=isolated_home)
    assert listing.returncode == 0
    [run] = json.loads(listing.stdout)["runs"]
    assert run["run_id"] == payload["run_id"] and run["completions"] == 8


def test_solve_prints_an_answer_for_humans(isolated_home):
    result = thinktank(
        "solve", "What is 7 + 5?", "--strategy", "single:max_tokens=48", home=isolated_home
    )
    assert result.returncode == 0, result.stderr
    # stdout is the answer alone: the one the ledger recorded for the run.
    [run] = json.loads(thinktank("ledger", "--json", home=isolated_home).stdout)["runs"]
    assert run["answer"] is not None and result.stdout.strip() == run["answer"]
    assert "completion tokens" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["solve", "   "], "empty"),
        (["solve", "1+1", "--model", "no-such-model"], "unknown model"),
        (["solve", "1+1", "--strategy", "no-such-strategy"], "unknown strategy"),
        (["solve", "1+1", "--strategy", "self-consistency:n=two"], "not a valid int"),
        (["solve", "1+1", "--strategy", "self-consistency:n"], "key=value"),
        (["solve", "1+1", "--budget-tokens", "-5"], "must be positive"),
        (["solve", "1+1", "--model", "gguf:/no/such/file.gguf"], "no such file"),
        (["solve"], "required"),
        (["frobnicate"], "invalid choice"),
        (["tune", "--suite", "rg:chain_sum?size=4", "--folds", "1"], "at least 2 folds"),
        (["tune", "--suite", "rg:chain_sum?size=4", "--folds", "5"], "cannot make 5 folds"),
        (["tune", "--suite", "rg:chain_sum?size=1"], "need 2+"),
        (["solve", "1+1", "--strategy", "route:runs=bench-nope"], "no bench run"),
        (
            ["bench", "--suite", "rg:chain_sum?size=2", "-s", "single", "--address", "auto"],
            "--address needs --executor ray",
        ),
    ],
)
def test_bad_input_is_one_clear_line_and_exit_2(isolated_home, args, message):
    result = thinktank(*args, home=isolated_home)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_an_option_spelled_by_its_old_name_runs_with_one_warning_line(isolated_home):
    spec = "tree-search:reward=agreement,rollouts=1,batch=1,max_tokens=16"
    result = thinktank("solve", "2 + 2 =", "--strategy", spec, "--json", home=isolated_home)
    assert result.returncode == 0, result.stderr
    json.loads(result.stdout)  # stdout: one JSON object, the warning is on stderr
    warned = [line for line in result.stderr.splitlines() if "reward" in line]
    assert warned == [
        "warning: strategy tree-search: option 'reward' is now called 'verifier' ('reward'"
        " stops working next release)"
    ]


def test_listings(isolated_home):
    strategies = json.loads(thinktank("strategies", "--json", home=isolated_home).stdout)
    assert {s["name"] for s in strategies["strategies"]} >= {"single", "self-consistency"}
    models = json.loads(thinktank("models", "--json", home=isolated_home).stdout)
    assert {m["name"] for m in models["models"]} >= {"smollm2", "gemma3-270m"}
    assert thinktank("--help", home=isolated_home).returncode == 0


def test_hogwild_from_the_command_line(isolated_home):
    """On the torch backend it answers with one candidate per worker; on llama.cpp,
    named, it says which backend to use, in one line, exit 2 (unnamed, the torch one is
    chosen: tests/test_first_hour.py)."""
    result = thinktank("solve", "What is 2 + 3?", "--model", "torch:smollm2", "--strategy",
                       "hogwild:workers=2,max_tokens=16,final_tokens=0", "--seed", "1", "--json",
                       home=isolated_home)  # fmt: skip
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert [c["worker"] for c in payload["candidates"]] == ["Alice", "Bob"]
    assert payload["usage"]["calls"] == 1 and payload["usage"]["completions"] == 2
    refused = thinktank("solve", "What is 2 + 3?", "--model", "smollm2", "--strategy", "hogwild",
                        home=isolated_home)  # fmt: skip
    assert refused.returncode == 2
    assert "torch:smollm2" in refused.stderr and "Traceback" not in refused.stderr


def test_tune_from_the_command_line_on_ray(isolated_home, tmp_path):
    suite = "rg:chain_sum?min_terms=2&max_terms=2&min_digits=1&max_digits=1&size=4&seed=2"
    result = thinktank("tune", "--suite", suite, "-s", "single:max_tokens=32", "-s",
                       "self-consistency:n=2,max_tokens=32", "--target-accuracy", "0.01",
                       "--folds", "2", "--out", str(tmp_path), "--json", "--concurrency", "1",
                       "--executor", "ray", home=isolated_home)  # fmt: skip
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert len(payload["configurations"]) == 2 and payload["problems"] == 4
    assert payload["pareto_front"] and payload["plot"] == str(tmp_path / "pareto.png")
    if payload["recommended"] is None:  # nothing solved on 2 problems: said so, not invented
        assert "no configuration reaches" in payload["reason"] and payload["held_out"] is None
    else:
        assert payload["recommended"]["accuracy"] >= 0.01
        label = f"{payload['recommended']['strategy']} @ {payload['recommended']['model']}"
        chose = [f for f in payload["folds"] if f["chosen"] == label]
        assert payload["held_out"]["n_problems"] == sum(len(f["held_out_problems"]) for f in chose)


def test_bench_on_ray_from_the_command_line(isolated_home):
    suite = "rg:chain_sum?min_terms=2&max_terms=2&min_digits=1&max_digits=1&size=2&seed=2"
    result = thinktank("bench", "--suite", suite, "-s", "single:max_tokens=24", "--executor",
                       "ray", "--concurrency", "2", "--ray-actors", "2", "--ray-cpus", "1",
                       "--json", home=isolated_home)  # fmt: skip
    assert result.returncode == 0, result.stderr
    [run] = json.loads(result.stdout)["runs"]
    assert run["n_problems"] == 2 and run["total_tokens"] > 0
    with sqlite3.connect(isolated_home / "ledger.db") as db:
        [(calls, cost)] = db.execute("SELECT COUNT(*), SUM(cost_usd) FROM calls").fetchall()
    assert calls == 2 and cost == pytest.approx(run["cost_usd"])
