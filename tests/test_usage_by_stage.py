"""Usage by stage: what each part of a strategy spent (policy samples, judges, process
rewards...), through a real server and a real ledger, old ledgers included."""

from __future__ import annotations

import sqlite3

import pytest

from thinktank.ledger import CallRow, Ledger
from thinktank.meter import Meter
from thinktank.models.base import Sampling
from thinktank.strategies import Context

from .conftest import SUM_PROMPT, serving

#: Best-of-n whose samples the same model judges (the default verifier, self-eval).
SELF_JUDGED = "best-of-n:n=2,max_tokens=8/smollm2"
SUMMED = ("prompt_tokens", "completion_tokens", "calls", "cost_usd")


def _sums(parts: list[dict]) -> dict[str, float]:
    return {field: sum(part[field] for part in parts) for field in SUMMED}


def test_a_self_judged_strategy_splits_its_usage_into_sample_and_judge(smollm2, tmp_path):
    with serving([smollm2], tmp_path) as server:
        reply = server.client().chat.completions.create(
            model=SELF_JUDGED, messages=SUM_PROMPT, seed=3
        )
    thinktank = reply.model_extra["thinktank"]
    by_stage = thinktank["usage_by_stage"]
    assert set(by_stage) == {"sample", "judge"}
    # The two samples in one call; one judge call per distinct answer.
    assert by_stage["sample"]["calls"] == 1 and by_stage["sample"]["completions"] == 2
    assert by_stage["judge"]["calls"] >= 1
    sums = _sums(list(by_stage.values()))
    assert sums["prompt_tokens"] == reply.usage.prompt_tokens
    assert sums["completion_tokens"] == reply.usage.completion_tokens
    assert sums["calls"] == thinktank["calls"]
    assert sums["cost_usd"] == pytest.approx(thinktank["cost_usd"])
    ledger: dict[str, list[CallRow]] = {}
    for row in server.ledger.calls(thinktank["run_id"]):
        ledger.setdefault(row.stage, []).append(row)
    assert set(ledger) == set(by_stage)
    for stage, rows in ledger.items():
        assert {field: by_stage[stage][field] for field in SUMMED} == pytest.approx({
            "prompt_tokens": sum(r.prompt_tokens for r in rows),
            "completion_tokens": sum(r.completion_tokens for r in rows),
            "calls": len(rows),
            "cost_usd": sum(r.cost_usd for r in rows),
        })  # fmt: skip


def test_a_ledger_from_before_stages_gains_the_column(tmp_path):
    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    old.executescript(
        """
        CREATE TABLE calls (
            id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL, problem_id TEXT,
            strategy TEXT, model TEXT NOT NULL, n INTEGER NOT NULL,
            prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL,
            seconds REAL NOT NULL, cost_usd REAL NOT NULL, created_at REAL NOT NULL);
        INSERT INTO calls (run_id, problem_id, strategy, model, n, prompt_tokens,
            completion_tokens, seconds, cost_usd, created_at)
            VALUES ('run', 'q0', 'best-of-n', 'smollm2', 2, 10, 8, 0.5, 1e-6, 0);
        """
    )
    old.close()
    ledger = Ledger(path)
    ledger.record_call(CallRow("run", "q0", "best-of-n", "smollm2", 1, 12, 1, 0.1, 1e-7,
                               stage="judge"))  # fmt: skip
    assert [(row.n, row.stage) for row in ledger.calls("run")] == [(2, "sample"), (1, "judge")]
    ledger.close()


def test_a_stage_label_leaves_every_seed_and_sample_as_it_was(smollm2):
    """Calls made through ``at_stage`` contexts draw the seeds (and so the samples) that
    the same calls through the plain context draw: the seed counter is shared."""
    sampling = Sampling(temperature=1.0, max_tokens=4)

    def drawn(stages: list[str]) -> list[tuple[int | None, str]]:
        ctx = Context(smollm2, Meter(), seed=11)
        calls = [ctx if stage == "sample" else ctx.at_stage(stage) for stage in stages]
        return [(c.seed, c.text) for call in calls for c in call.generate(SUM_PROMPT, 2, sampling)]

    plain = drawn(["sample", "sample", "sample"])
    assert drawn(["sample", "judge", "sample"]) == plain
    assert len({seed for seed, _ in plain}) == 3  # three calls, three seeds


def test_an_unknown_stage_is_refused(smollm2):
    with pytest.raises(ValueError, match="unknown stage 'judges'"):
        Context(smollm2, Meter()).at_stage("judges")
