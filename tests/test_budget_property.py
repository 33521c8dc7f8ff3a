"""A budget is a hard cap however many calls run at once: random budgets of tokens,
dollars and seconds against many concurrent calls, on the embedded model and on a
stand-in remote server that bills as a real one."""

from __future__ import annotations

import threading
import time
import uuid

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from thinktank.errors import BudgetExhausted
from thinktank.ledger import Ledger
from thinktank.meter import Budget, Meter
from thinktank.models.base import Completion, Model, Prompt, Sampling

from .test_meter import COUNTING, REMOTE_PRICE, BillingEndpoint, check_rows_add_up

#: tmp_path serves every example: each gets its own run id in the ledger there.
FIXTURE_REUSED = HealthCheck.function_scoped_fixture
#: How long a request sent before the deadline may take to reach the server.
TRANSIT_SECONDS = 0.1


def _caps(tokens: st.SearchStrategy, dollars: st.SearchStrategy, seconds: st.SearchStrategy):
    """Budgets with any of the three caps, at least one."""
    budgets = st.builds(
        Budget, max_tokens=st.none() | tokens, max_cost_usd=st.none() | dollars,
        max_seconds=st.none() | seconds,
    )  # fmt: skip
    return budgets.filter(lambda b: (b.max_tokens, b.max_cost_usd, b.max_seconds) != (None,) * 3)


def _threads(max_n: int, max_tokens: int, threads: int, calls: int):
    """Per thread, the calls it makes one after another: (n, max_tokens)."""
    call = st.tuples(st.integers(1, max_n), st.integers(1, max_tokens))
    return st.lists(st.lists(call, min_size=1, max_size=calls), min_size=2, max_size=threads)


def _run_together(
    meter: Meter, model: Model, prompt: Prompt, threads: list[list[tuple[int, int]]], seed: int
) -> None:
    """Each thread's calls, all threads at once; a refused call ends its thread."""
    start = threading.Barrier(len(threads))
    errors: list[BaseException] = []

    def spend(calls: list[tuple[int, int]], thread: int) -> None:
        start.wait()
        for i, (n, max_tokens) in enumerate(calls):
            sampling = Sampling(temperature=1.0, max_tokens=max_tokens, seed=seed + 10 * thread + i)
            try:
                meter.generate(model, prompt, n, sampling)
            except BudgetExhausted:
                return
            except Exception as error:  # fails the test, not just the thread
                errors.append(error)
                return

    workers = [threading.Thread(target=spend, args=(calls, i)) for i, calls in enumerate(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert not errors, errors


class CallStarts:
    """A real model, noting when each call reaches it."""

    def __init__(self, model: Model) -> None:
        self.model, self.starts = model, []
        self.name, self.capabilities, self.price = model.name, model.capabilities, model.price

    def count_tokens(self, prompt: Prompt) -> int:
        return self.model.count_tokens(prompt)

    def generate(self, *args, **options) -> list[Completion]:
        self.starts.append(time.monotonic())
        return self.model.generate(*args, **options)


def _check_caps(budget: Budget, tokens: int, cost_usd: float) -> None:
    if budget.max_tokens is not None:
        assert tokens <= budget.max_tokens
    if budget.max_cost_usd is not None:
        assert cost_usd <= budget.max_cost_usd


@settings(max_examples=12, deadline=None, derandomize=True, suppress_health_check=[FIXTURE_REUSED])
@given(
    budget=_caps(st.integers(20, 300), st.floats(1e-7, 6e-6), st.floats(0.05, 1.0)),
    threads=_threads(max_n=3, max_tokens=16, threads=4, calls=2),
    seed=st.integers(0, 2**16),
)
def test_concurrent_local_calls_stay_within_the_budget(smollm2, tmp_path, budget, threads, seed):
    ledger = Ledger(tmp_path / "ledger.db")
    model = CallStarts(smollm2)
    started = time.monotonic()
    meter = Meter(budget, ledger=ledger, run_id=uuid.uuid4().hex)
    _run_together(meter, model, COUNTING, threads, seed)  # every sample writes max_tokens
    _check_caps(budget, meter.usage.total_tokens, meter.usage.cost_usd)
    if budget.max_seconds is not None:  # the backend stops decoding at the deadline
        assert all(start < meter.deadline for start in model.starts)
    assert meter.usage.seconds <= time.monotonic() - started
    check_rows_add_up(ledger, meter)


@settings(max_examples=15, deadline=None, derandomize=True, suppress_health_check=[FIXTURE_REUSED])
@given(
    budget=_caps(st.integers(50, 2000), st.floats(5e-5, 5e-3), st.floats(0.02, 0.3)),
    threads=_threads(max_n=4, max_tokens=16, threads=6, calls=3),
    prompt=st.text(st.characters(codec="utf-8"), min_size=1, max_size=40),
    honours_n=st.booleans(),
    thinking=st.integers(0, 8),
    delay=st.floats(0, 0.05),
    concurrency=st.integers(1, 4),  # requests wait their turn, maybe past the deadline
    seed=st.integers(0, 2**16),
)
def test_concurrent_remote_calls_stay_within_the_budget_as_billed(
    tmp_path, budget, threads, prompt, honours_n, thinking, delay, concurrency, seed
):
    endpoint = BillingEndpoint(honours_n=honours_n, thinking=thinking, delay=delay)
    ledger = Ledger(tmp_path / "ledger.db")
    meter = Meter(budget, ledger=ledger, run_id=uuid.uuid4().hex)
    try:
        model = endpoint.model(REMOTE_PRICE, concurrency)
        _run_together(meter, model, prompt, threads, seed)
    finally:
        endpoint.close()
    # What the server billed is within the caps, and it is what the meter counted.
    _check_caps(budget, endpoint.billed_tokens, endpoint.billed_cost(REMOTE_PRICE))
    assert meter.usage.total_tokens == endpoint.billed_tokens
    assert meter.usage.thinking_tokens == sum(thinking for *_, thinking in endpoint.bills)
    assert abs(meter.usage.cost_usd - endpoint.billed_cost(REMOTE_PRICE)) <= 1e-12
    if budget.max_seconds is not None:
        assert all(arrived < meter.deadline + TRANSIT_SECONDS for arrived, *_ in endpoint.bills)
    check_rows_add_up(ledger, meter)
