"""``thinktank logs`` and ``--no-log-texts``, in process on a real ledger in
THINKTANK_HOME, filled by the real embedded model."""

from __future__ import annotations

import json
import sqlite3

import pytest

from thinktank.cli import main
from thinktank.ledger import Ledger
from thinktank.meter import Meter
from thinktank.models.base import Sampling

QUESTION = "What is 2 + 3?"
STRATEGY = "self-consistency:n=2,max_tokens=12"


def solve(capsys, *flags: str) -> str:
    """``thinktank solve QUESTION`` on the embedded model; the run id it printed."""
    assert main(["solve", QUESTION, "-s", STRATEGY, "--seed", "0", "--json", *flags]) == 0
    return json.loads(capsys.readouterr().out)["run_id"]


@pytest.fixture
def texts_logged(monkeypatch):
    """Texts kept whatever the environment says; a test's --no-log-texts is undone after it."""
    monkeypatch.setenv("THINKTANK_LOG_TEXTS", "1")


def test_logs_show_the_latest_calls_newest_first_with_their_texts(smollm2, texts_logged, capsys):
    run_id = solve(capsys)
    meter = Meter(ledger=Ledger(), run_id="continued", strategy="plain", problem_id="p1")
    [written] = meter.generate(smollm2, "2 + 3 =", 1, Sampling(max_tokens=6, seed=1))
    assert main(["logs", "--json"]) == 0
    calls = json.loads(capsys.readouterr().out)["calls"]
    assert len(calls) == 2 and calls[0]["id"] > calls[1]["id"]  # the default 3 is 2 here
    text, chat = calls
    assert (text["run_id"], text["prompt"], text["problem_id"]) == ("continued", "2 + 3 =", "p1")
    assert text["completions"][0]["text"] == written.text
    assert chat["run_id"] == run_id and chat["prompt"][-1] == {"role": "user", "content": QUESTION}
    assert len(chat["completions"]) == 2 and chat["stage"] == "sample"

    assert main(["logs"]) == 0
    shown = capsys.readouterr().out
    assert shown.index("run continued") < shown.index(f"run {run_id}")
    assert "user:" in shown and QUESTION in shown and "2 + 3 =" in shown
    assert "### completion 1 (" in shown and "model smollm2" in shown
    assert all(c["text"] in shown for c in chat["completions"])


def test_logs_pick_a_run_by_its_id_or_its_start_and_a_problem(smollm2, texts_logged, capsys):
    run_id = solve(capsys)
    meter = Meter(ledger=Ledger(), run_id="other", problem_id="p2")
    for seed in range(3):
        meter.generate(smollm2, "1 + 1 =", 1, Sampling(max_tokens=4, seed=seed))
    for name in (run_id, run_id[:8], "last"):  # "other" has calls but no run row
        assert main(["logs", "--run", name, "--json"]) == 0
        [call] = json.loads(capsys.readouterr().out)["calls"]
        assert call["run_id"] == run_id
    assert main(["logs", "-n", "1", "--json"]) == 0
    assert [c["run_id"] for c in json.loads(capsys.readouterr().out)["calls"]] == ["other"]
    assert main(["logs", "-n", "0", "--json"]) == 0  # 0: every call
    assert len(json.loads(capsys.readouterr().out)["calls"]) == 4
    assert main(["logs", "--problem", "p2", "-n", "0", "--json"]) == 0
    assert [c["problem_id"] for c in json.loads(capsys.readouterr().out)["calls"]] == ["p2"] * 3


def test_an_unknown_run_is_exit_2_and_an_empty_ledger_says_so(capsys):
    assert main(["logs"]) == 0
    assert "no calls yet" in capsys.readouterr().err
    assert main(["logs", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"calls": []}
    assert main(["logs", "--run", "nosuchrun", "--json"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "no run 'nosuchrun'" in err
    with pytest.raises(SystemExit) as exited:
        main(["logs", "-n", "-1"])
    assert exited.value.code == 2


def test_a_bad_since_is_a_clear_exit_2(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["ledger", "--since", "2026-13-01"])
    assert exited.value.code == 2
    assert "expected a day as YYYY-MM-DD, got '2026-13-01'" in capsys.readouterr().err


def test_no_log_texts_keeps_usage_only(smollm2, texts_logged, isolated_home, capsys):
    run_id = solve(capsys, "--no-log-texts")
    with sqlite3.connect(isolated_home / "ledger.db") as db:
        calls = db.execute("SELECT prompt_id, completion_tokens FROM calls").fetchall()
        assert calls and all(prompt is None and tokens > 0 for prompt, tokens in calls)
        for table in ("completions", "transcripts", "texts"):
            assert db.execute(f"SELECT COUNT(*) FROM {table}").fetchone() == (0,)
    assert main(["logs", "--run", run_id]) == 0
    assert "(texts not kept)" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["solve", "bench", "tune", "serve"])
def test_every_command_that_writes_runs_takes_no_log_texts(command, texts_logged, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    assert "--no-log-texts" in capsys.readouterr().out


def test_no_log_texts_is_in_force_before_the_command_runs(texts_logged):
    from thinktank.cli import _parser
    from thinktank.config import log_texts

    assert log_texts() and Ledger().log_texts
    args = _parser().parse_args(["serve", "--no-log-texts"])
    assert args.log_texts is False and not log_texts() and not Ledger().log_texts
