"""Streamed strategy answers and usage that adds up, through the official `openai` client
(sync and async) against a real server on 127.0.0.1 with a real ledger."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import httpx
import openai
import pytest

from thinktank.ledger import CallRow
from thinktank.meter import Meter, Progress
from thinktank.models.base import Sampling

from .conftest import SUM_PROMPT, serving
from .serverkit import USAGE_FIELDS, ledger_usage, stopped_run

SELF_CONSISTENCY = "self-consistency:n=4,max_tokens=16/smollm2"
#: Best-of-n whose samples are judged by another served model: two models, two stages.
JUDGED = "best-of-n:n=2,max_tokens=8,verifier=judge@gemma3-270m/smollm2"


@pytest.fixture(scope="module")
def server(smollm2, gemma, tmp_path_factory):
    with serving([smollm2, gemma], tmp_path_factory.mktemp("streaming")) as running:
        yield running


@pytest.fixture
def client(server):
    return server.client()


def _progress(chunk) -> dict | None:
    """The chunk's thinktank progress object, if it is a progress chunk."""
    extra = (chunk.model_extra or {}).get("thinktank")
    return extra if extra and extra.get("event") == "progress" else None


def _content(chunks) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def _check_stream(chunks, whole) -> None:
    """A strategy stream: role first, progress before the text, the same text and
    thinktank object as the whole reply, the last progress equal to the usage."""
    assert chunks[0].choices[0].delta.role == "assistant"
    first_text = next(i for i, c in enumerate(chunks) if c.choices and c.choices[0].delta.content)
    progress = [(i, p) for i, c in enumerate(chunks) if (p := _progress(c))]
    assert progress and progress[0][0] < first_text
    assert all(i < first_text for i, _ in progress)
    assert all(not c.choices for i, c in enumerate(chunks) if _progress(c))
    reports = [p for _, p in progress]
    for field in ("calls", "completions", "prompt_tokens", "completion_tokens"):
        assert [r[field] for r in reports] == sorted(r[field] for r in reports)
    assert _content(chunks) == whole.choices[0].message.content
    finish = [c.choices[0].finish_reason for c in chunks if c.choices][-1]
    assert finish == whole.choices[0].finish_reason
    usage, final = chunks[-1].usage, chunks[-1].model_extra["thinktank"]
    assert chunks[-1].choices == [] and final["event"] == "result"
    # The last call's end is reported: the last progress is what the request spent.
    assert reports[-1]["calls"] == final["calls"]
    assert reports[-1]["leader"] == final["answer"]  # its vote, once the samples are in
    assert reports[-1]["completion_tokens"] == usage.completion_tokens
    assert reports[-1]["prompt_tokens"] == usage.prompt_tokens
    expected = whole.model_extra["thinktank"]
    for key in ("answer", "votes", "candidates", "strategy", "calls"):
        assert final[key] == expected[key]
    # The same samples (the second time a prefix cache may serve the prompt).
    assert [getattr(usage, f) for f in USAGE_FIELDS] == [
        getattr(whole.usage, f) for f in USAGE_FIELDS
    ]


def test_a_strategy_streams_progress_then_the_same_answer_as_unstreamed(client, server):
    options = {"model": SELF_CONSISTENCY, "messages": SUM_PROMPT, "seed": 5}
    whole = client.chat.completions.create(**options)
    chunks = list(client.chat.completions.create(
        **options, stream=True, stream_options={"include_usage": True}))  # fmt: skip
    _check_stream(chunks, whole)
    run_id = chunks[-1].model_extra["thinktank"]["run_id"]
    assert run_id != whole.model_extra["thinktank"]["run_id"]
    assert ledger_usage(server.ledger, run_id) == {
        field: getattr(chunks[-1].usage, field) for field in USAGE_FIELDS
    }


def test_the_async_client_streams_a_strategy_the_same_way(server):
    async def ask():
        async with openai.AsyncOpenAI(api_key="none", base_url=server.url, max_retries=0) as aio:
            options = {"model": SELF_CONSISTENCY, "messages": SUM_PROMPT, "seed": 6}
            whole = await aio.chat.completions.create(**options)
            stream = await aio.chat.completions.create(
                **options, stream=True, stream_options={"include_usage": True})  # fmt: skip
            return whole, [chunk async for chunk in stream]

    whole, chunks = asyncio.run(ask())
    _check_stream(chunks, whole)


def test_a_voting_strategy_streams_who_is_winning_round_by_round(client):
    # One sample per round until the vote is decided (seed 2: never, six rounds; some
    # samples give no answer in 32 tokens and do not vote).
    strategy = "adaptive-consistency:max_n=6,max_tokens=32/smollm2"
    options = {"model": strategy, "messages": SUM_PROMPT, "seed": 2}
    chunks = list(client.chat.completions.create(**options, stream=True))
    reports = [p for c in chunks if (p := _progress(c))]
    assert reports[0]["leader"] is None and reports[0]["voters"] is None  # nothing counted yet
    led = [r for r in reports if r["leader"] is not None]
    assert led and all(0 < r["leader_share"] <= 1 for r in led)
    voters = [r["voters"] for r in reports if r["voters"] is not None]
    assert voters == sorted(voters) and voters[-1] > voters[0]
    final = chunks[-1].model_extra["thinktank"]
    assert reports[-1]["leader"] == final["answer"] is not None
    assert reports[-1]["voters"] == sum(final["votes"].values())


@pytest.mark.parametrize("model", ["smollm2", SELF_CONSISTENCY])
def test_usage_is_streamed_only_when_asked_for(client, model):
    options = {"model": model, "messages": SUM_PROMPT, "max_tokens": 8, "seed": 1, "stream": True}
    without = list(client.chat.completions.create(**options))
    assert all(chunk.usage is None for chunk in without)
    # The thinktank object still ends the stream, in a chunk without choices.
    assert without[-1].choices == [] and without[-1].model_extra["thinktank"]["event"] == "result"
    assert without[-1].model_extra["thinktank"]["calls"] >= 1
    asked = list(client.chat.completions.create(**options, stream_options={"include_usage": True}))
    assert [chunk.usage is not None for chunk in asked] == [False] * (len(asked) - 1) + [True]
    assert asked[-1].usage.completion_tokens > 0


def test_a_plain_stream_with_logprobs_sends_each_choice_whole_with_its_tokens(client):
    options = {"model": "smollm2", "messages": SUM_PROMPT, "n": 2, "max_tokens": 6, "seed": 4,
               "logprobs": True, "top_logprobs": 2}  # fmt: skip
    whole = client.chat.completions.create(**options)
    chunks = list(client.chat.completions.create(**options, stream=True))
    texts = [c.choices[0] for c in chunks if c.choices and c.choices[0].delta.content]
    assert sorted(c.index for c in texts) == [0, 1]  # one content chunk per choice
    for streamed in texts:
        expected = whole.choices[streamed.index]
        assert streamed.delta.content == expected.message.content
        tokens, wanted = streamed.logprobs.content, expected.logprobs.content
        assert "".join(t.token for t in tokens) == streamed.delta.content
        assert [(t.token, t.bytes) for t in tokens] == [(t.token, t.bytes) for t in wanted]
        assert [t.logprob for t in tokens] == pytest.approx([t.logprob for t in wanted])
        assert [[a.token for a in t.top_logprobs] for t in tokens] == [
            [a.token for a in t.top_logprobs] for t in wanted
        ]
        assert all(len(t.top_logprobs) == 2 for t in tokens)


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [({"stream_options": {"include_usage": True}}, "only allowed when stream is true"),
     ({"stream": True, "stream_options": {"include_usage": True, "every": 1}}, "every")],
)  # fmt: skip
def test_bad_stream_options_are_a_400(server, fields, fragment):
    body = {"model": "smollm2", "messages": SUM_PROMPT, "max_tokens": 4, **fields}
    response = httpx.post(f"{server.url}/chat/completions", json=body, timeout=60)
    assert response.status_code == 400 and fragment in response.json()["error"]["message"]


def _by_model_sums(thinktank: dict) -> dict[str, float]:
    parts = thinktank["usage_by_model"].values()
    return {field: sum(part[field] for part in parts)
            for field in (*USAGE_FIELDS, "calls", "cost_usd")}  # fmt: skip


def _ledger_by_model(rows: list[CallRow]) -> dict[str, dict[str, float]]:
    models: dict[str, dict[str, float]] = {}
    for row in rows:
        own = models.setdefault(row.model, {"calls": 0, "prompt_tokens": 0,
                                            "completion_tokens": 0, "cost_usd": 0.0})  # fmt: skip
        own["calls"] += 1
        own["prompt_tokens"] += row.prompt_tokens
        own["completion_tokens"] += row.completion_tokens
        own["cost_usd"] += row.cost_usd
    return models


@pytest.mark.parametrize("strategy", [JUDGED, "best-of-n:n=2,max_tokens=8/smollm2"])
@pytest.mark.parametrize("stream", [False, True])
def test_usage_counts_the_judges_calls_and_its_breakdown_adds_up(client, server, strategy, stream):
    options = {"model": strategy, "messages": SUM_PROMPT, "seed": 3}
    if stream:
        chunks = list(client.chat.completions.create(
            **options, stream=True, stream_options={"include_usage": True}))  # fmt: skip
        usage, thinktank = chunks[-1].usage, chunks[-1].model_extra["thinktank"]
    else:
        reply = client.chat.completions.create(**options)
        usage, thinktank = reply.usage, reply.model_extra["thinktank"]
    rows = server.ledger.calls(thinktank["run_id"])
    # The two samples in one call, then the verifier's calls (one per distinct answer).
    assert rows[0].n == 2 and len(rows) == thinktank["calls"] > 1
    assert ledger_usage(server.ledger, thinktank["run_id"]) == {
        field: getattr(usage, field) for field in USAGE_FIELDS
    }
    sums = _by_model_sums(thinktank)
    assert {field: sums[field] for field in USAGE_FIELDS} == {
        field: getattr(usage, field) for field in USAGE_FIELDS
    }
    assert sums["calls"] == thinktank["calls"]
    assert sums["cost_usd"] == pytest.approx(thinktank["cost_usd"])
    ledger = _ledger_by_model(rows)
    assert set(thinktank["usage_by_model"]) == set(ledger)
    for name, own in thinktank["usage_by_model"].items():
        assert {field: own[field] for field in ledger[name]} == pytest.approx(ledger[name])
    if strategy == JUDGED:
        assert set(ledger) == {"smollm2", "gemma3-270m"}


def test_an_error_after_the_stream_started_is_an_error_event(client):
    # Hogwild! needs a shared KV cache, which only the torch backend has: the strategy
    # finds out once it runs, after the 200.
    stream = client.chat.completions.create(
        model="hogwild:max_tokens=8/smollm2", messages=SUM_PROMPT, stream=True
    )
    with pytest.raises(openai.APIError, match="shared KV cache") as raised:
        list(stream)
    assert raised.value.type == "invalid_request_error"


def test_a_client_that_leaves_a_strategy_stream_cancels_its_work(smollm2, tmp_path):
    # 16 samples of 512 junk tokens (temperature 2: no early end) would take minutes.
    long = "self-consistency:n=16,max_tokens=512,temperature=2/smollm2"
    story = [{"role": "user", "content": "Write a long story."}]
    with serving([smollm2], tmp_path, max_concurrent=1) as running:
        client = running.client()
        with client.chat.completions.create(model=long, messages=story, stream=True) as stream:
            for chunk in stream:
                if (progress := _progress(chunk)) and progress["completion_tokens"] > 0:
                    break  # leaving the block closes the connection
        run_id, tokens = stopped_run(running.ledger)
        assert tokens < 16 * 512 / 2
        # The only slot is free again, and the stopped run spends no more.
        reply = client.chat.completions.create(model="smollm2", messages=SUM_PROMPT, max_tokens=4)
        assert reply.choices[0].message.content
        assert sum(r.completion_tokens for r in running.ledger.calls(run_id)) == tokens


def test_the_meter_reports_progress_as_calls_end_and_while_tokens_flow(smollm2):
    reports: list[Progress] = []
    meter = Meter()
    meter.watch(reports.append, every=0.0)  # every token
    meter.generate(smollm2, SUM_PROMPT, 2, Sampling(max_tokens=8, seed=1))
    after_first = replace(meter.usage)
    meter.generate(smollm2, SUM_PROMPT, 1, Sampling(max_tokens=8, seed=2))
    during_first = [r for r in reports if r.calls == 0]
    assert len(during_first) > 1 and all(r.prompt_tokens == 0 for r in during_first)
    assert [r.completion_tokens for r in during_first] == sorted(
        r.completion_tokens for r in during_first
    )
    first_end = reports[len(during_first)]
    assert (first_end.calls, first_end.completions) == (1, 2)
    assert first_end.completion_tokens == after_first.completion_tokens
    assert first_end.cost_usd == after_first.cost_usd > 0
    assert (reports[-1].calls, reports[-1].completions) == (2, 3)
    assert reports[-1].completion_tokens == meter.usage.completion_tokens
    # The first token is reported at once, then none for ``every`` seconds; a call's
    # end always is.
    quiet: list[Progress] = []
    meter.watch(quiet.append, every=3600)
    meter.generate(smollm2, SUM_PROMPT, 1, Sampling(max_tokens=8, seed=3))
    assert [(r.calls, r.completion_tokens > reports[-1].completion_tokens) for r in quiet] == [
        (2, True),
        (3, True),
    ]
