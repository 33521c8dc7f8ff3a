"""The meter: budgets are hard caps, and the ledger adds up to the usage."""

from __future__ import annotations

import threading
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from thinktank.errors import BudgetExhausted
from thinktank.ledger import Ledger
from thinktank.meter import Budget, Meter
from thinktank.models.base import Capabilities, Completion, Price, Sampling
from thinktank.strategies import Context

from .conftest import SUM_PROMPT


def _check_ledger_matches(ledger: Ledger, meter: Meter) -> None:
    rows = ledger.calls(meter.run_id)
    assert len(rows) == meter.usage.calls
    assert sum(r.n for r in rows) == meter.usage.completions
    assert sum(r.prompt_tokens for r in rows) == meter.usage.prompt_tokens
    assert sum(r.completion_tokens for r in rows) == meter.usage.completion_tokens
    assert sum(r.cost_usd for r in rows) == pytest.approx(meter.usage.cost_usd, rel=1e-12)
    assert sum(r.seconds for r in rows) == pytest.approx(meter.usage.seconds, rel=1e-9)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    max_tokens_budget=st.integers(min_value=1, max_value=150),
    calls=st.lists(st.tuples(st.integers(1, 4), st.integers(1, 24)), min_size=1, max_size=4),
    seed=st.integers(0, 2**16),
)
def test_token_budget_is_never_exceeded(smollm2, tmp_path, max_tokens_budget, calls, seed):
    ledger = Ledger(tmp_path / "ledger.db")
    # Hypothesis reruns the test in the same tmp_path: a fresh run id per example.
    meter = Meter(Budget(max_tokens=max_tokens_budget), ledger=ledger, run_id=uuid.uuid4().hex)
    for n, max_tokens in calls:
        try:
            completions = meter.generate(
                smollm2, SUM_PROMPT, n, Sampling(temperature=1.0, max_tokens=max_tokens, seed=seed)
            )
        except BudgetExhausted:
            assert meter.exhausted
            break
        assert 1 <= len(completions) <= n
        assert all(c.completion_tokens <= max_tokens for c in completions)
        assert meter.usage.total_tokens <= max_tokens_budget
    assert meter.usage.total_tokens <= max_tokens_budget
    _check_ledger_matches(ledger, meter)


@settings(max_examples=10, deadline=None)
@given(usd_budget=st.floats(min_value=1e-7, max_value=3e-6), seed=st.integers(0, 2**16))
def test_cost_budget_is_never_exceeded(smollm2, usd_budget, seed):
    meter = Meter(Budget(max_cost_usd=usd_budget))
    for _ in range(3):
        try:
            meter.generate(smollm2, SUM_PROMPT, 4, Sampling(max_tokens=16, seed=seed))
        except BudgetExhausted:
            break
    assert meter.usage.cost_usd <= usd_budget


def test_a_budget_too_small_for_the_prompt_refuses_the_call(smollm2):
    meter = Meter(Budget(max_tokens=smollm2.count_tokens(SUM_PROMPT)))
    with pytest.raises(BudgetExhausted):
        meter.generate(smollm2, SUM_PROMPT, 1, Sampling(max_tokens=4))
    assert meter.exhausted and meter.usage.calls == 0


def test_time_budget_stops_decoding(smollm2):
    meter = Meter(Budget(max_seconds=0.3))
    completions = meter.generate(
        smollm2, "Count to one thousand: 1, 2, 3,", 2, Sampling(temperature=0.0, max_tokens=2000)
    )
    assert all(c.finish_reason == "budget" for c in completions)
    assert meter.exhausted
    with pytest.raises(BudgetExhausted):
        meter.generate(smollm2, SUM_PROMPT, 1)


def test_budget_rejects_nonpositive_caps():
    with pytest.raises(ValueError):
        Budget(max_tokens=0)


class WorstCaseModel:
    """Always writes max_tokens tokens, slowly: the hardest case for concurrent budgets."""

    name = "worst-case"
    capabilities = Capabilities()
    price = Price(1.0, 1.0)

    def count_tokens(self, prompt):
        return 3

    def generate(self, prompt, n=1, sampling=None, *, deadline=None, progress=None, prune=None):
        threading.Event().wait(0.01)
        return [Completion("x", (1,) * sampling.max_tokens, None, "length", 3) for _ in range(n)]


def test_concurrent_calls_cannot_overshoot_together():
    meter = Meter(Budget(max_tokens=100))
    model = WorstCaseModel()

    def spend():
        for _ in range(5):
            try:
                meter.generate(model, "p", 2, Sampling(max_tokens=10))
            except BudgetExhausted:
                return

    threads = [threading.Thread(target=spend) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert 0 < meter.usage.total_tokens <= 100


class SlowModel(WorstCaseModel):
    def generate(self, prompt, n=1, sampling=None, **options):
        threading.Event().wait(0.3)
        return [Completion("x", (1,), None, "stop", 3) for _ in range(n)]


def test_overlapping_calls_count_their_wall_time_once(tmp_path):
    ledger = Ledger(tmp_path / "ledger.db")
    ctx = Context(SlowModel(), Meter(ledger=ledger, run_id="overlap"))
    ctx.generate_each([("a", 1, Sampling()), ("b", 1, Sampling()), ("c", 1, Sampling())])
    rows = ledger.calls("overlap")
    assert len(rows) == 3 and all(row.seconds >= 0.3 for row in rows)  # each call's own time
    assert 0.3 <= ctx.meter.usage.seconds < 0.6  # the three ran at once
    ctx.generate("d", 1, Sampling())  # after the others: its time adds up
    assert ctx.meter.usage.seconds >= 0.6


def test_an_interrupted_call_is_still_recorded(smollm2, tmp_path):
    ledger = Ledger(tmp_path / "ledger.db")
    meter = Meter(ledger=ledger, run_id="interrupted")

    def interrupt_at_ten(tokens: int) -> None:
        if tokens >= 10:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        meter.generate(
            smollm2,
            SUM_PROMPT,
            2,
            Sampling(temperature=1.0, max_tokens=50, seed=1),
            progress=interrupt_at_ten,
        )
    [row] = ledger.calls("interrupted")
    assert row.completion_tokens == 10 and row.n == 2
    assert row.prompt_tokens == smollm2.count_tokens(SUM_PROMPT)
    _check_ledger_matches(ledger, meter)
    # The model is usable again right away.
    assert smollm2.generate(SUM_PROMPT, 1, Sampling(max_tokens=4, seed=1))[0].text


def test_a_cancelled_meter_stops_its_call_and_refuses_new_ones(smollm2, tmp_path):
    ledger = Ledger(tmp_path / "ledger.db")
    cancel = threading.Event()
    meter = Meter(ledger=ledger, run_id="cancelled", cancel=cancel)

    def cancel_after_a_few(tokens: int) -> None:
        if tokens >= 6:
            cancel.set()  # as a bench run does when Ctrl-C reaches its main thread

    with pytest.raises(KeyboardInterrupt):
        meter.generate(
            smollm2, SUM_PROMPT, 2, Sampling(temperature=1.0, max_tokens=60, seed=1),
            progress=cancel_after_a_few,
        )  # fmt: skip
    [row] = ledger.calls("cancelled")
    assert 6 <= row.completion_tokens <= 8  # stopped at the next step
    with pytest.raises(KeyboardInterrupt):
        meter.generate(smollm2, SUM_PROMPT, 1, Sampling(max_tokens=4))
    assert len(ledger.calls("cancelled")) == 1
