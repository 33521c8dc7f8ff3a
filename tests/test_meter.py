"""The meter: budgets are hard caps, and the ledger adds up to the usage."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from thinktank.errors import BudgetExhausted
from thinktank.ledger import Ledger
from thinktank.meter import Budget, Meter
from thinktank.models.base import Capabilities, Completion, Price, Sampling
from thinktank.models.openai import OpenAIModel
from thinktank.strategies import Context

from .conftest import SUM_PROMPT, JsonEndpoint


def check_rows_add_up(ledger: Ledger, meter: Meter) -> None:
    """The ledger's rows add up to the meter's usage (seconds apart: see below)."""
    rows = ledger.calls(meter.run_id)
    assert len(rows) == meter.usage.calls
    assert sum(r.n for r in rows) == meter.usage.completions
    assert sum(r.prompt_tokens for r in rows) == meter.usage.prompt_tokens
    assert sum(r.completion_tokens for r in rows) == meter.usage.completion_tokens
    assert sum(r.thinking_tokens for r in rows) == meter.usage.thinking_tokens
    assert sum(r.cost_usd for r in rows) == pytest.approx(meter.usage.cost_usd, rel=1e-12)


def _check_ledger_matches(ledger: Ledger, meter: Meter) -> None:
    """As `check_rows_add_up`, and seconds too: calls one after another."""
    check_rows_add_up(ledger, meter)
    rows = ledger.calls(meter.run_id)
    assert sum(r.seconds for r in rows) == pytest.approx(meter.usage.seconds, rel=1e-9)


class BillingEndpoint:
    """A stand-in OpenAI-compatible server that bills as a real one: the prompt at one
    token per UTF-8 byte plus ``template`` tokens (a tokenizer's worst case), each
    sample writing its ``max_tokens``, ``thinking`` of them hidden reasoning and the rest
    visible, with logprobs. It honours ``n`` or not, and keeps its own bill: each request
    stamped by ``clock``, and handed to ``on_bill`` (its number, from 1) before the reply."""

    def __init__(
        self,
        *,
        honours_n: bool = True,
        thinking: int = 0,
        template: int = 30,
        delay: float = 0,
        clock: Callable[[], float] = time.monotonic,
        on_bill: Callable[[int], None] | None = None,
    ) -> None:
        #: Per request it answered: (arrived at, prompt, completion, thinking tokens).
        self.bills: list[tuple[float, int, int, int]] = []
        self._lock = threading.Lock()

        def respond(method: str, body: dict) -> tuple[int, dict]:
            arrived = clock()
            threading.Event().wait(delay)
            n = body.get("n", 1) if honours_n else 1
            prompt = template + sum(len(m["content"].encode()) for m in body["messages"])
            hidden = min(thinking, body["max_tokens"])
            visible = body["max_tokens"] - hidden
            token = {"token": "x", "logprob": -0.5, "bytes": None, "top_logprobs": []}
            choice = {"finish_reason": "length", "logprobs": {"content": [token] * visible},
                      "message": {"role": "assistant", "content": "x" * visible}}  # fmt: skip
            with self._lock:
                self.bills.append((arrived, prompt, n * body["max_tokens"], n * hidden))
                billed = len(self.bills)
            if on_bill is not None:
                on_bill(billed)
            usage = {"prompt_tokens": prompt, "completion_tokens": n * body["max_tokens"],
                     "total_tokens": prompt + n * body["max_tokens"],
                     "completion_tokens_details": {"reasoning_tokens": n * hidden}}  # fmt: skip
            return 200, {"id": "x", "object": "chat.completion", "created": 0,
                         "model": body["model"], "usage": usage,
                         "choices": [{**choice, "index": i} for i in range(n)]}  # fmt: skip

        self.endpoint = JsonEndpoint(respond)
        self.url = f"{self.endpoint.url}/v1"

    def model(self, price: Price, concurrency: int = 16) -> OpenAIModel:
        return OpenAIModel("m", self.url, price=price, concurrency=concurrency, max_retries=0)

    @property
    def billed_tokens(self) -> int:
        return sum(prompt + completion for _, prompt, completion, _ in self.bills)

    def billed_cost(self, price: Price) -> float:
        return sum(price.cost(p, c, 0, t) for _, p, c, t in self.bills)

    def close(self) -> None:
        self.endpoint.close()


@pytest.fixture
def billing():
    """A `BillingEndpoint` factory; every endpoint made is closed after the test."""
    made: list[BillingEndpoint] = []

    def make(**options) -> BillingEndpoint:
        made.append(BillingEndpoint(**options))
        return made[-1]

    yield make
    for endpoint in made:
        endpoint.close()


#: A remote model's price, thinking dearest: so that miscounted tokens show in dollars.
REMOTE_PRICE = Price(1.0, 2.0, thinking_per_mtok=8.0)


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


#: A prompt the embedded model goes on answering for as long as it is let: every
#: sample writes its max_tokens, so what a call would spend is known in advance.
COUNTING = "Count to one thousand: 1, 2, 3,"


@settings(max_examples=8, deadline=None)
@given(share=st.floats(min_value=0.02, max_value=0.95), seed=st.integers(0, 2**16))
def test_cost_budget_is_never_exceeded(smollm2, share, seed):
    calls, n, max_tokens = 3, 2, 8
    prompt_tokens = smollm2.count_tokens(COUNTING)
    # The least the calls would spend uncapped: every prompt from the prefix cache.
    cheapest = calls * smollm2.price.cost(prompt_tokens, n * max_tokens, prompt_tokens)
    usd_budget = share * cheapest
    meter = Meter(Budget(max_cost_usd=usd_budget))
    for _ in range(calls):
        try:
            sampling = Sampling(temperature=0.0, max_tokens=max_tokens, seed=seed)
            meter.generate(smollm2, COUNTING, n, sampling)
        except BudgetExhausted:
            break
    assert meter.usage.cost_usd <= usd_budget
    assert meter.exhausted


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


class SlowlyCounted(Completion):
    """A completion whose token count takes a while to read: it widens the moment
    between a call's return and its usage being recorded, where a budget must hold."""

    settling = threading.Event()
    another_call_fitted = threading.Event()

    @property
    def completion_tokens(self) -> int:
        SlowlyCounted.settling.set()
        SlowlyCounted.another_call_fitted.wait(timeout=5)
        return len(self.token_ids)


class SettlingModel(WorstCaseModel):
    def generate(self, prompt, n=1, sampling=None, **options):
        if SlowlyCounted.settling.is_set():
            SlowlyCounted.another_call_fitted.set()  # the meter fitted it already
        return [SlowlyCounted("x", (1,) * sampling.max_tokens, None, "length", 3)] * n


def test_a_call_still_counts_while_its_usage_is_recorded():
    meter = Meter(Budget(max_tokens=30))
    model = SettlingModel()
    first = threading.Thread(target=meter.generate, args=(model, "p", 1, Sampling(max_tokens=10)))
    first.start()  # 3 + 10 tokens
    assert SlowlyCounted.settling.wait(timeout=5)
    # 17 tokens are left beside the first call, not 30: one sample of 10, not two.
    assert len(meter.generate(model, "p", 2, Sampling(max_tokens=10))) == 1
    first.join()
    assert meter.usage.total_tokens == 26


def test_a_server_that_ignores_n_is_billed_a_prompt_per_request(billing, tmp_path):
    endpoint = billing(honours_n=False)
    model = endpoint.model(REMOTE_PRICE)
    ledger = Ledger(tmp_path / "ledger.db")
    meter = Meter(ledger=ledger, run_id="ignores-n")
    completions = meter.generate(model, SUM_PROMPT, 4, Sampling(max_tokens=5, seed=3))
    assert len(completions) == 4 and len(endpoint.bills) == 4  # asked with n, then one by one
    assert meter.usage.total_tokens == endpoint.billed_tokens
    assert meter.usage.prompt_tokens == 4 * endpoint.bills[0][1]
    assert meter.usage.cost_usd == pytest.approx(endpoint.billed_cost(REMOTE_PRICE), rel=1e-12)
    check_rows_add_up(ledger, meter)


def test_a_remote_prompt_is_reserved_at_no_less_than_it_is_billed(billing):
    endpoint = billing(template=40)
    model = endpoint.model(REMOTE_PRICE)
    prompts = ["hi", "What is 2 + 3?", "数学: 二加三是多少?", "x" * 500, SUM_PROMPT,
               [{"role": "system", "content": "Be brief."}, *SUM_PROMPT]]  # fmt: skip
    for prompt in prompts:
        model.generate(prompt, 1, Sampling(max_tokens=1))
        assert model.count_tokens(prompt) >= endpoint.bills[-1][1]
    # A template longer than the allowance widens it: the bound holds from then on.
    wordy = billing(template=500).model(REMOTE_PRICE)
    assert wordy.count_tokens("hi") < 500
    wordy.generate("hi", 1, Sampling(max_tokens=1))
    assert all(wordy.count_tokens(prompt) >= 500 for prompt in prompts)


def test_a_remote_token_budget_holds_against_what_the_server_bills(billing):
    endpoint = billing(honours_n=False)
    meter = Meter(Budget(max_tokens=400))
    model = endpoint.model(REMOTE_PRICE)
    for _ in range(6):
        try:
            meter.generate(model, "x" * 200, 3, Sampling(max_tokens=8, seed=1))
        except BudgetExhausted:
            break
    assert meter.exhausted and endpoint.bills
    assert endpoint.billed_tokens == meter.usage.total_tokens <= 400


def test_reasoning_tokens_are_billed_when_logprobs_come_back(billing, tmp_path):
    endpoint = billing(thinking=90)
    model = endpoint.model(REMOTE_PRICE)
    ledger = Ledger(tmp_path / "ledger.db")
    meter = Meter(ledger=ledger, run_id="thinking")
    completions = meter.generate(model, SUM_PROMPT, 3, Sampling(max_tokens=100, seed=2))
    assert [len(c.logprobs) for c in completions] == [10, 10, 10]  # the visible tokens
    assert [(c.completion_tokens, c.thinking_tokens) for c in completions] == [(100, 90)] * 3
    assert (meter.usage.completion_tokens, meter.usage.thinking_tokens) == (300, 270)
    [(_, prompt, completion, thinking)] = endpoint.bills
    assert meter.usage.cost_usd == pytest.approx(
        REMOTE_PRICE.cost(prompt, completion, 0, thinking), rel=1e-12
    )
    check_rows_add_up(ledger, meter)


class FakeClock:
    """A monotonic clock that moves only when told: it stands in for ``time`` in the
    modules that read the time budget's clock (the meter's start, its deadline check,
    the remote backend's check before each request), so a deadline passes exactly
    when a test says, however loaded the machine is."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, modules: list[str]) -> None:
        self.now = 1000.0
        for module in modules:
            monkeypatch.setattr(f"{module}.time", self)

    def monotonic(self) -> float:
        return self.now


def test_no_remote_request_is_sent_after_the_deadline(billing, monkeypatch):
    clock = FakeClock(monkeypatch, ["thinktank.meter", "thinktank.meter_budget",
                                    "thinktank.models.openai"])  # fmt: skip
    meter = Meter(Budget(max_seconds=10))

    def deadline_passes_during_the_second(request: int) -> None:
        if request == 2:
            clock.now = meter.deadline

    # One request at a time: the n request, then three single ones, the first of which
    # is in flight when the deadline passes; the other two wait for it, then are not sent.
    endpoint = billing(honours_n=False, clock=clock.monotonic,
                       on_bill=deadline_passes_during_the_second)  # fmt: skip
    completions = meter.generate(
        endpoint.model(REMOTE_PRICE, concurrency=1), SUM_PROMPT, 4, Sampling(max_tokens=2)
    )
    assert [arrived for arrived, *_ in endpoint.bills] == [1000.0, 1000.0]  # before 1010
    assert [c.finish_reason for c in completions].count("budget") == 2
    assert meter.exhausted and meter.usage.total_tokens == endpoint.billed_tokens
    with pytest.raises(BudgetExhausted):  # and no call starts after it
        meter.generate(endpoint.model(REMOTE_PRICE), SUM_PROMPT, 1, Sampling(max_tokens=2))
    assert len(endpoint.bills) == 2
