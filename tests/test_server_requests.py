"""A request's fields as the server honours them (issue 19): sampling fields as a
strategy's defaults, n strategy answers, fields refused or listed as ignored,
per-token logprobs, finish reasons, candidates, the model that answered, legacy
completions and the model list. Driven by the official `openai` client (sync and
async) against a real server on 127.0.0.1 serving the embedded models."""

from __future__ import annotations

import asyncio

import openai
import pytest

from thinktank.server import create_app
from thinktank.strategies import with_defaults

from .conftest import RunningServer, serving

QUESTION = [{"role": "user", "content": "What is 7 + 5?"}]


@pytest.fixture(scope="module")
def server(smollm2, gemma, tmp_path_factory):
    models = {"smollm2": smollm2, "gemma": gemma}
    with serving(models, tmp_path_factory.mktemp("requests")) as running:
        yield running


@pytest.fixture
def client(server):
    return server.client()


def thinktank_of(response) -> dict:
    return response.model_extra["thinktank"]


def ask(client, model: str, **fields):
    """A strategy request whose reply lists its candidates."""
    extra = {"thinktank": {"candidates": True}, **fields.pop("extra_body", {})}
    return client.chat.completions.create(model=model, messages=QUESTION, extra_body=extra,
                                          **fields)  # fmt: skip


def test_with_defaults_fills_only_the_options_the_spec_leaves_out():
    strategy, unused = with_defaults(
        "self-consistency:n=3,temperature=0.2", temperature=1.5, top_k=7, stop_after=2
    )
    assert strategy.spec == "self-consistency:temperature=0.2,top_k=7,n=3"
    assert set(unused) == {"temperature", "stop_after"}
    assert "temperature=0.2" in unused["temperature"] and "no option" in unused["stop_after"]


def test_max_tokens_caps_every_sample_of_a_strategy(client, server):
    response = ask(client, "self-consistency:n=3/smollm2", max_tokens=5, seed=1)
    extra = thinktank_of(response)
    assert "max_tokens=5" in extra["strategy"]
    rows = server.ledger.calls(extra["run_id"])
    assert rows and all(row.completion_tokens <= 5 * row.n for row in rows)
    assert response.usage.completion_tokens == sum(row.completion_tokens for row in rows)
    assert all(c["completion_tokens"] <= 5 for c in extra["candidates"])
    # max_completion_tokens is OpenAI's newer name for the same thing.
    newer = ask(client, "self-consistency:n=2/smollm2", max_completion_tokens=3, seed=1)
    assert all(c["completion_tokens"] <= 3 for c in thinktank_of(newer)["candidates"])


def test_temperature_stop_and_seed_reach_every_sample(client):
    greedy = thinktank_of(ask(client, "self-consistency:n=3/smollm2", temperature=0,
                              max_tokens=8, seed=1))  # fmt: skip
    assert len({c["text"] for c in greedy["candidates"]}) == 1  # the profile samples at > 0
    options = {"max_tokens": 12, "temperature": 1.0, "seed": 11}
    first = thinktank_of(ask(client, "self-consistency:n=3/smollm2", **options))
    again = thinktank_of(ask(client, "self-consistency:n=3/smollm2", **options))
    assert [c["text"] for c in first["candidates"]] == [c["text"] for c in again["candidates"]]
    assert len({c["text"] for c in first["candidates"]}) > 1
    cut = thinktank_of(ask(client, "self-consistency:n=3/smollm2", stop=[" "], **options))
    assert all(" " not in c["text"] for c in cut["candidates"])
    assert all(c["text"] for c in cut["candidates"])


def test_options_in_the_model_name_win_over_the_request_fields(client):
    response = ask(client, "self-consistency:n=2,max_tokens=3,temperature=0/smollm2",
                   max_tokens=12, temperature=1.5, seed=2,
                   extra_body={"top_k": 5})  # vLLM's field, as vLLM's clients send it  # fmt: skip
    extra = thinktank_of(response)
    assert extra["strategy"] == "self-consistency:temperature=0.0,top_k=5,max_tokens=3,n=2"
    assert all(c["completion_tokens"] <= 3 for c in extra["candidates"])
    assert set(extra["ignored"]) == {"max_tokens", "temperature"}


def test_a_field_a_strategy_cannot_use_is_listed_as_ignored(client):
    response = ask(client, "truth-inference:n=4,max_tokens=4/smollm2", temperature=0.3,
                   logprobs=True, logit_bias={"15": 2}, seed=0,
                   extra_body={"reasoning_effort": "low"})  # fmt: skip
    ignored = thinktank_of(response)["ignored"]
    assert set(ignored) == {"temperature", "logprobs", "logit_bias", "reasoning_effort"}
    assert "no option temperature" in ignored["temperature"]
    assert response.choices[0].logprobs is None
    plain = client.chat.completions.create(model="smollm2", messages=QUESTION, max_tokens=2,
                                           user="someone", logit_bias={"15": 2})  # fmt: skip
    assert set(thinktank_of(plain)["ignored"]) == {"user"}


@pytest.mark.parametrize(
    ("field", "value"),
    [("response_format", {"type": "json_object"}), ("functions", [{"name": "f"}]),
     ("modalities", ["text", "audio"])],
)  # fmt: skip
def test_a_field_thinktank_cannot_honour_is_a_400_naming_it(client, field, value):
    for model in ("smollm2", "self-consistency:n=2/smollm2"):
        with pytest.raises(openai.BadRequestError) as info:
            client.chat.completions.create(model=model, messages=QUESTION, max_tokens=2,
                                           extra_body={field: value})  # fmt: skip
        assert info.value.body["param"] == field and field in info.value.body["message"]
    harmless = client.chat.completions.create(model="smollm2", messages=QUESTION, max_tokens=2,
                                              response_format={"type": "text"})  # fmt: skip
    assert "response_format" not in thinktank_of(harmless)["ignored"]


def test_n_strategy_answers_are_independent_with_seeds_seed_plus_i(server):
    async def main():
        client = openai.AsyncOpenAI(api_key="none", base_url=server.url, max_retries=0)
        model, options = "self-consistency:n=2/smollm2", {"max_tokens": 8, "temperature": 1.0}
        two, one = await asyncio.gather(
            client.chat.completions.create(model=model, messages=QUESTION, n=2, seed=5, **options),
            client.chat.completions.create(model=model, messages=QUESTION, seed=6, **options),
        )
        await client.close()
        return two, one

    two, one = asyncio.run(main())
    assert [c.index for c in two.choices] == [0, 1]
    extra = thinktank_of(two)
    assert len(extra["choices"]) == 2 and extra["candidate_count"] == 2
    assert all(choice["candidates"] == 2 for choice in extra["choices"])
    # Answer 1 is seeded 5 + 1: what a request seeded 6 answers.
    assert two.choices[1].message.content == one.choices[0].message.content
    rows = server.ledger.calls(extra["run_id"])
    assert sum(row.n for row in rows) == 4  # both answers' samples, one run


def test_logprobs_name_the_tokens_actually_written(client):
    options = {"model": "smollm2", "messages": QUESTION, "max_tokens": 12, "logprobs": True}
    sampled = client.chat.completions.create(**options, n=2, seed=4, temperature=1.0)
    for choice in sampled.choices:
        tokens = choice.logprobs.content
        assert "".join(t.token for t in tokens) == choice.message.content
        assert all(bytes(t.bytes).decode() == t.token for t in tokens)
    greedy = client.chat.completions.create(**options, temperature=0, top_logprobs=3, stop=["5"])
    choice = greedy.choices[0]
    assert choice.finish_reason == "stop" and "5" not in choice.message.content
    tokens = choice.logprobs.content
    assert "".join(t.token for t in tokens) == choice.message.content
    # The stop string's token was written and billed, but is not listed (nor as "").
    assert all(t.token for t in tokens) and len(tokens) < greedy.usage.completion_tokens
    for token in tokens[:-1]:  # the last may be cut where the stop string begins
        assert token.top_logprobs[0].token == token.token  # greedy: the likeliest was written
        assert token.top_logprobs[0].logprob == pytest.approx(token.logprob)


def test_a_strategy_reply_cut_by_max_tokens_finishes_with_length(client):
    cut = ask(client, "self-consistency:n=2/smollm2", max_tokens=3, seed=0)
    assert cut.choices[0].finish_reason == "length"
    whole = ask(client, "single/smollm2", max_tokens=200)
    assert whole.choices[0].finish_reason == "stop"


def test_candidates_are_listed_when_asked_and_counted_otherwise(client):
    listed = thinktank_of(ask(client, "self-consistency:n=3/smollm2", max_tokens=16, seed=3))
    assert listed["candidate_count"] == len(listed["candidates"]) == 3
    assert all(c["model"] == "smollm2" and c["text"] for c in listed["candidates"])
    winner = next(c for c in listed["candidates"] if c["answer"] == listed["answer"])
    assert winner["finish_reason"] in ("stop", "length")
    counted = client.chat.completions.create(model="self-consistency:n=3/smollm2",
                                             messages=QUESTION, max_tokens=4, seed=3)  # fmt: skip
    assert thinktank_of(counted)["candidates"] == thinktank_of(counted)["candidate_count"] == 3


def test_a_cascade_says_which_model_answered(client, gemma):
    # threshold=1: the last model of the pool always answers.
    response = ask(client, "cascade:models=smollm2+gemma,n=2,threshold=1/smollm2",
                   max_tokens=6, seed=0)  # fmt: skip
    extra = thinktank_of(response)
    assert extra["model"] == gemma.name
    assert [c["model"] for c in extra["candidates"]] == ["smollm2"] * 2 + [gemma.name] * 2
    stays = thinktank_of(ask(client, "cascade:models=smollm2+gemma,n=2,threshold=0/smollm2",
                             max_tokens=6, seed=0))  # fmt: skip
    assert stays["model"] == "smollm2"


def test_legacy_completions_continue_text_on_base_and_chat_models(client, gemma):
    for model in ("gemma", "smollm2"):
        response = client.completions.create(model=model, prompt=["2 + 3 =", "The sky is"],
                                             max_tokens=5, n=2, seed=0, logprobs=2)  # fmt: skip
        assert response.object == "text_completion" and response.model == model
        assert [c.index for c in response.choices] == [0, 1, 2, 3]
        assert response.usage.completion_tokens <= 4 * 5
        for choice in response.choices:
            assert "".join(choice.logprobs.tokens) == choice.text
            assert len(choice.logprobs.token_logprobs) == len(choice.logprobs.tokens)
            assert all(len(top) <= 2 for top in choice.logprobs.top_logprobs)
            offsets = choice.logprobs.text_offset
            assert offsets == sorted(offsets) and (not offsets or offsets[0] == 0)
    plain = client.completions.create(model="gemma", prompt="Once upon a time", max_tokens=4)
    assert plain.choices[0].logprobs is None and plain.choices[0].text
    # The base model's chat requests point at /v1/completions.
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="gemma", messages=QUESTION, max_tokens=2)
    assert "/v1/completions" in info.value.body["message"] and info.value.body["param"] == "model"


def test_legacy_completions_refuse_what_they_cannot_serve(server):
    async def main():
        client = openai.AsyncOpenAI(api_key="none", base_url=server.url, max_retries=0)
        errors = {}
        for field, options in (("echo", {"echo": True}),
                               ("model", {"model": "self-consistency/smollm2"}),
                               ("best_of", {"best_of": 3})):  # fmt: skip
            request = {"model": "smollm2", "prompt": "Hi", "max_tokens": 2, **options}
            try:
                await client.completions.create(**request)
            except openai.BadRequestError as exc:
                errors[field] = exc.body["param"]
        seeded = [
            await client.completions.create(
                model="smollm2", prompt="Hi", max_tokens=6, temperature=1.0, seed=9
            )
            for _ in range(2)
        ]
        await client.close()
        return errors, seeded

    errors, seeded = asyncio.run(main())
    assert errors == {"echo": "echo", "model": "model", "best_of": "best_of"}
    assert seeded[0].choices[0].text == seeded[1].choices[0].text


def test_the_model_list_names_models_and_strategy_pairs(client, smollm2, gemma, tmp_path):
    listed = {m.id: m.owned_by for m in client.models.list().data}
    assert listed["smollm2"] == listed["gemma"] == "thinktank"
    assert listed["self-consistency/smollm2"] == listed["beam/gemma"] == "thinktank-strategy"
    assert "route/smollm2" not in listed  # it must be told which runs to learn from
    # The pool of cascade's defaults (smollm2+gemma3-270m) is not served here.
    assert "cascade/smollm2" not in listed
    pair = client.chat.completions.create(model="self-consistency/smollm2", messages=QUESTION,
                                          max_tokens=4, seed=0)  # fmt: skip
    assert thinktank_of(pair)["strategy"].startswith("self-consistency")
    only = RunningServer(create_app([smollm2], strategies=["single"]))
    try:
        narrow = openai.OpenAI(api_key="none", base_url=only.url, max_retries=0)
        assert [m.id for m in narrow.models.list().data] == ["smollm2", "single/smollm2"]
    finally:
        only.close()
