"""Sampling profiles: the options a strategy leaves unset are the model's, per kind."""

from __future__ import annotations

import pytest

import thinktank
from thinktank.bench.runner import plan_bench
from thinktank.errors import SpecError
from thinktank.ledger import Ledger
from thinktank.models import Sampling, load_model
from thinktank.models.openai import OpenAIModel
from thinktank.models.profiles import (
    LOCAL_PROFILE,
    OPENAI_PROFILE,
    PROFILES,
    SamplingProfile,
    sampling_profile,
)
from thinktank.problem import Problem
from thinktank.strategies import build_strategy

from .conftest import JsonEndpoint

SUITE = "rg:chain_sum?min_terms=2&max_terms=2&min_digits=1&max_digits=1&size=2&seed=3"
TINY = SamplingProfile(answer=Sampling(temperature=0.9, max_tokens=4),
                       code=Sampling(temperature=0.1, max_tokens=6))  # fmt: skip


def test_unset_options_are_the_profiles_for_the_kind_and_set_ones_win(smollm2, monkeypatch):
    monkeypatch.setattr(smollm2, "sampling_profile", TINY)
    plain = build_strategy("self-consistency:n=2")
    assert plain.sampling(smollm2, "math") == TINY.answer
    assert plain.sampling(smollm2, "code") == TINY.code
    tuned = build_strategy("self-consistency:n=2,top_k=5,min_p=0.1,max_tokens=9")
    assert tuned.sampling(smollm2, "math") == TINY.answer.with_(top_k=5, min_p=0.1, max_tokens=9)
    # Greedy stays greedy whatever the profile's temperature.
    assert build_strategy("single").sampling(smollm2, "math").temperature == 0.0


def test_the_embedded_models_have_their_studied_profiles_and_others_a_generic_one():
    assert sampling_profile(load_model("smollm2")) is PROFILES["smollm2"]
    assert sampling_profile(load_model("gemma3-270m")) is PROFILES["gemma3-270m"]
    remote = OpenAIModel("m", "http://127.0.0.1:9/v1")
    assert sampling_profile(remote) is OPENAI_PROFILE
    # A remote profile sends only what every OpenAI endpoint takes.
    for sampling in (OPENAI_PROFILE.answer, OPENAI_PROFILE.code):
        assert (sampling.top_k, sampling.min_p, sampling.repetition_penalty) == (0, 0.0, 1.0)
    assert LOCAL_PROFILE.answer.max_tokens > 0


@pytest.mark.parametrize(
    "spec",
    ["self-consistency:top_k=-1", "single:min_p=1.5", "best-of-n:repetition_penalty=0",
     "self-consistency:presence_penalty=3", "self-consistency:top_k=many"],
)  # fmt: skip
def test_a_bad_sampling_option_in_a_spec_is_refused_when_built(spec):
    with pytest.raises(SpecError):
        build_strategy(spec)


def test_a_solve_samples_with_the_models_profile(smollm2, monkeypatch):
    monkeypatch.setattr(smollm2, "sampling_profile", TINY)
    solution = thinktank.solve(
        Problem("p", "Explain in detail how to add 17 and 26.", "text"),
        strategy="self-consistency:n=4", seed=1,
    )  # fmt: skip
    lengths = [c.completion_tokens for c in solution.candidates]
    assert max(lengths) == 4  # the profile's cap bound (unset, it would be far longer)
    longer = thinktank.solve(
        Problem("p", "Explain in detail how to add 17 and 26.", "text"),
        strategy="self-consistency:n=4,max_tokens=7", seed=1,
    )  # fmt: skip
    assert max(c.completion_tokens for c in longer.candidates) == 7


def test_a_changed_profile_is_a_new_bench_run(smollm2, monkeypatch, tmp_path):
    ledger = Ledger(tmp_path / "ledger.db")
    first = plan_bench(SUITE, ["self-consistency:n=2"], ["smollm2"], ledger=ledger)
    again = plan_bench(SUITE, ["self-consistency:n=2"], ["smollm2"], ledger=ledger)
    monkeypatch.setattr(smollm2, "sampling_profile", TINY)
    changed = plan_bench(SUITE, ["self-consistency:n=2"], ["smollm2"], ledger=ledger)
    assert first.run_id == again.run_id != changed.run_id


def test_a_remote_model_is_sent_the_openai_profile():
    reply = {"id": "x", "object": "chat.completion", "created": 0, "model": "m",
             "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                          "message": {"role": "assistant", "content": "The answer is 5."}}],
             "usage": {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12}}  # fmt: skip
    endpoint = JsonEndpoint(lambda method, body: (200, reply))
    try:
        remote = OpenAIModel("m", f"{endpoint.url}/v1", max_retries=0)
        solution = thinktank.solve("What is 2 + 3?", model=remote, strategy="self-consistency:n=2")
    finally:
        endpoint.close()
    assert solution.answer == "5"
    body = endpoint.requests[0]
    assert body["temperature"] == OPENAI_PROFILE.answer.temperature
    assert body["max_tokens"] == OPENAI_PROFILE.answer.max_tokens
    assert not {"top_k", "min_p", "repetition_penalty"} & set(body)
