"""The sampling options users expect (OpenAI's and vLLM's names): validation, the
local sampler's exact semantics on hand-made logits, both local backends on the real
SmolLM2 weights, and what the remote backend sends and says when an endpoint refuses."""

from __future__ import annotations

import numpy as np
import pytest

from thinktank.errors import ThinktankError
from thinktank.models.base import Sampling
from thinktank.models.decoding import _penalised, sample
from thinktank.models.openai import OpenAIModel

from .conftest import SUM_PROMPT, JsonEndpoint

# -- validation ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"top_k": -1}, "top_k"),
        ({"top_k": 2.5}, "top_k"),
        ({"min_p": 1.0}, "min_p"),
        ({"min_p": -0.1}, "min_p"),
        ({"presence_penalty": 2.5}, "presence_penalty"),
        ({"frequency_penalty": -3}, "frequency_penalty"),
        ({"frequency_penalty": float("nan")}, "frequency_penalty"),
        ({"repetition_penalty": 0}, "repetition_penalty"),
        ({"logit_bias": {5: 101}}, r"\[-100, 100\]"),
        ({"logit_bias": {-1: 1}}, ">= 0"),
        ({"logit_bias": {"5": 1}}, "token ids"),
        ({"logit_bias": 5}, "token ids"),
        ({"logit_bias": [(5, 1), (5, 2)]}, "twice"),
    ],
)
def test_bad_options_are_clear_value_errors(options, fragment):
    with pytest.raises(ValueError, match=fragment):
        Sampling(**options)


def test_logit_bias_is_kept_sorted_so_equal_biases_are_equal_and_hashable():
    as_dict = Sampling(logit_bias={9: 1, 2: -100})
    as_pairs = Sampling(logit_bias=[(2, -100.0), (9, 1.0)])
    assert as_dict.logit_bias == ((2, -100.0), (9, 1.0))
    assert as_dict == as_pairs and hash(as_dict) == hash(as_pairs)
    # The new options come after the old ones: positional calls keep their meaning.
    assert Sampling(0.5, 0.9, 10) == Sampling(temperature=0.5, top_p=0.9, max_tokens=10)


# -- the local sampler on hand-made logits ----------------------------------------

#: A small distribution whose truncations are easy to work out by hand.
PROBS = np.array([0.4, 0.25, 0.15, 0.1, 0.05, 0.03, 0.02])
DRAWS = 4000


def _draws(logits: np.ndarray, sampling: Sampling, rows: int = DRAWS, seed: int = 0):
    """``rows`` seeded draws from the same logits, as one batch (one generator per row)."""
    batch = np.repeat(np.asarray(logits, dtype=np.float32)[None, :], rows, axis=0)
    return sample(batch, [np.random.default_rng([seed, i]) for i in range(rows)], sampling)


@pytest.mark.parametrize(
    ("options", "kept"),
    [
        ({"top_k": 2}, {0, 1}),
        ({"top_p": 0.7}, {0, 1, 2}),  # cumulative 0.4, 0.65, 0.8: the nucleus of the whole row
        # Top-p of what top-k kept, renormalised: 0.44, 0.72 already passes 0.7.
        ({"top_k": 4, "top_p": 0.7}, {0, 1}),
        ({"min_p": 0.2}, {0, 1, 2, 3}),  # p >= 0.2 * 0.4
        ({"min_p": 0.55}, {0, 1}),  # p >= 0.22
        # At temperature 2 the ratios to the likeliest are their square roots: 0.79, 0.61, 0.5.
        ({"min_p": 0.55, "temperature": 2.0}, {0, 1, 2}),
        ({"top_p": 0.7, "min_p": 0.2}, {0, 1, 2}),  # each keeps a prefix: the shorter wins
        # Top-k's 4, top-p 0.99 of them keeps all 4, then min-p drops 0.1 < 0.3 * 0.4.
        ({"top_k": 4, "top_p": 0.99, "min_p": 0.3}, {0, 1, 2}),
    ],
)
def test_truncation_keeps_exactly_the_expected_tokens_with_their_frequencies(options, kept):
    sampling = Sampling(**{"temperature": 1.0, **options})
    chosen, _ = _draws(np.log(PROBS), sampling)
    assert set(chosen.tolist()) == kept
    tempered = PROBS ** (1 / sampling.temperature)
    expected = tempered[sorted(kept)] / tempered[sorted(kept)].sum()
    observed = np.array([(chosen == token).mean() for token in sorted(kept)])
    assert np.abs(observed - expected).max() < 0.03


def test_top_k_1_is_the_argmax_for_every_seed():
    logits = np.random.default_rng(1).normal(0, 2, (300, 1000)).astype(np.float32)
    rngs = [np.random.default_rng([7, i]) for i in range(len(logits))]
    chosen, _ = sample(logits, rngs, Sampling(temperature=1.5, top_k=1))
    np.testing.assert_array_equal(chosen, logits.argmax(axis=1))


def test_logit_bias_forces_or_bans_a_token_and_logprobs_stay_the_raw_models():
    logits = np.log(PROBS)
    forced, logprobs = _draws(logits, Sampling(temperature=1.0, logit_bias={6: 100}))
    assert set(forced.tolist()) == {6}
    np.testing.assert_allclose(logprobs, np.log(PROBS[6]), rtol=1e-5)  # not the biased ~0
    banned, _ = _draws(logits, Sampling(temperature=1.0, logit_bias={0: -100}))
    assert 0 not in set(banned.tolist()) and len(set(banned.tolist())) > 3
    [greedy], _ = _draws(logits, Sampling(temperature=0.0, logit_bias={0: -100}), rows=1)
    assert greedy == 1  # greedy takes the argmax of the biased logits


def test_penalties_change_the_logits_by_the_exact_amounts_in_vllms_order():
    logits = np.array([[2.0, -1.0, 0.5, 3.0, -2.0]] * 2, dtype=np.float32)
    generated = [[0, 0, 1], []]  # row 0 wrote token 0 twice and token 1 once
    prompt = [4, 0]

    def penalised(**options: object) -> np.ndarray:
        return _penalised(logits, Sampling(**options), generated, prompt)

    np.testing.assert_allclose(penalised(frequency_penalty=0.5)[0], [1.0, -1.5, 0.5, 3.0, -2.0])
    np.testing.assert_allclose(penalised(presence_penalty=0.5)[0], [1.5, -1.5, 0.5, 3.0, -2.0])
    # Repetition: prompt and sample tokens, once each however often; positive / p, negative * p.
    expected = [[1.0, -2.0, 0.5, 3.0, -4.0], [1.0, -1.0, 0.5, 3.0, -4.0]]
    np.testing.assert_allclose(penalised(repetition_penalty=2.0), expected)
    # Frequency and presence look at the sample's own tokens only, never the prompt's.
    np.testing.assert_array_equal(penalised(frequency_penalty=2, presence_penalty=2)[1], logits[1])
    # The bias first, then the repetition penalty on the biased logit, then frequency.
    both = penalised(logit_bias={0: 2.0}, repetition_penalty=2.0, frequency_penalty=0.5)
    assert both[0, 0] == pytest.approx((2.0 + 2.0) / 2 - 2 * 0.5)
    assert penalised() is logits  # nothing set: nothing copied


def _old_sampler(logits: np.ndarray, rngs, temperature: float, top_p: float) -> list[int]:
    """The sampler as it was before these options (kept here to pin the draws that seeded
    runs and the ledger's replays depend on): one uniform per row, the inverse of the
    cumulative tempered distribution, in token order — or, for top-p < 1, over the
    nucleus in order of probability."""
    chosen = []
    for row, rng in zip(logits, rngs, strict=True):
        weights = np.exp((row - row.max()) / temperature)
        weights /= weights.sum()
        if top_p >= 1:
            cumulative = np.cumsum(weights)
            chosen.append(int(np.searchsorted(cumulative, rng.random() * cumulative[-1])))
            continue
        order = np.argsort(-weights)
        cumulative = np.cumsum(weights[order])
        size = int(np.searchsorted(cumulative, top_p)) + 1
        index = np.searchsorted(cumulative[:size], rng.random() * cumulative[size - 1])
        chosen.append(int(order[min(index, size - 1)]))
    return chosen


@pytest.mark.parametrize("top_p", [1.0, 0.9])
def test_at_the_defaults_the_draws_and_the_random_streams_are_the_old_ones(top_p):
    logits = np.random.default_rng(3).normal(0, 3, (64, 5000)).astype(np.float32)
    sampling = Sampling(temperature=0.8, top_p=top_p)
    rngs = [np.random.default_rng([11, i]) for i in range(64)]
    chosen, logprobs = sample(logits, rngs, sampling, [[1, 2, 2]] * 64, [1, 5])
    reference_rngs = [np.random.default_rng([11, i]) for i in range(64)]
    assert chosen.tolist() == _old_sampler(logits, reference_rngs, 0.8, top_p)
    # One uniform per row, no more: the next draws of every stream are unchanged.
    assert [r.random() for r in rngs] == [r.random() for r in reference_rngs]
    raw = logits - logits.max(axis=1, keepdims=True)
    raw -= np.log(np.exp(raw).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(logprobs, raw[np.arange(64), chosen], rtol=1e-5, atol=1e-5)


def test_truncation_draws_once_per_row_too():
    logits = np.random.default_rng(4).normal(0, 3, (16, 500)).astype(np.float32)
    sampling = Sampling(temperature=1.0, top_k=40, top_p=0.95, min_p=0.05)
    rngs = [np.random.default_rng([2, i]) for i in range(16)]
    first, _ = sample(logits, rngs, sampling)
    again, _ = sample(logits, [np.random.default_rng([2, i]) for i in range(16)], sampling)
    assert first.tolist() == again.tolist()  # same seed, same samples
    reference = [np.random.default_rng([2, i]) for i in range(16)]
    for r in reference:
        r.random()
    assert [r.random() for r in rngs] == [r.random() for r in reference]


# -- the local backends on the real weights -----------------------------------------

BACKENDS = ["smollm2", "torch_smollm2"]


def _greedy(model, prompt, max_tokens: int = 6, **options: object):
    [completion] = model.generate(prompt, 1, Sampling(temperature=0.0, max_tokens=max_tokens,
                                                      **options))  # fmt: skip
    return completion


@pytest.mark.parametrize("backend", BACKENDS)
def test_top_k_1_at_temperature_1_writes_the_greedy_text(backend, request):
    model = request.getfixturevalue(backend)
    greedy = _greedy(model, SUM_PROMPT)
    sampled = model.generate(SUM_PROMPT, 3, Sampling(temperature=1.0, top_k=1, max_tokens=6,
                                                     seed=5))  # fmt: skip
    assert {c.token_ids for c in sampled} == {greedy.token_ids}


@pytest.mark.parametrize("backend", BACKENDS)
def test_logit_bias_forces_a_token_into_the_text_and_bans_the_greedy_one(backend, request):
    model = request.getfixturevalue(backend)
    greedy = _greedy(model, SUM_PROMPT)
    # A token and its text, from another prompt's greedy first token (not this one's).
    probe = _greedy(model, [{"role": "user", "content": "Name a fruit."}], max_tokens=1)
    [token] = probe.token_ids
    assert token != greedy.token_ids[0]
    forced = model.generate(SUM_PROMPT, 2, Sampling(temperature=1.0, max_tokens=3, seed=1,
                                                    logit_bias={token: 100}))  # fmt: skip
    for completion in forced:
        assert completion.token_ids[0] == token
        assert completion.text.startswith(probe.text)
    banned = _greedy(model, SUM_PROMPT, logit_bias={greedy.token_ids[0]: -100})
    assert greedy.token_ids[0] not in banned.token_ids


@pytest.mark.parametrize("backend", BACKENDS)
def test_repetition_penalty_counts_the_prompt_tokens(backend, request):
    """Only the prompt can make the first token's penalty bite: frequency and presence
    (the sample's own tokens) never change it; repetition does for some prompt."""
    model = request.getfixturevalue(backend)
    prompts = ["1, 1, 1, 1, 1, 1,", "the cat and the cat and the cat and the", "ha ha ha ha ha"]
    changed = []
    for prompt in prompts:
        first = _greedy(model, prompt, max_tokens=1).token_ids
        assert _greedy(model, prompt, 1, frequency_penalty=2, presence_penalty=2).token_ids == first
        changed.append(_greedy(model, prompt, 1, repetition_penalty=3.0).token_ids != first)
    assert any(changed)


def test_penalties_steer_a_greedy_output_that_repeats_away_from_what_it_wrote(smollm2):
    prompts = ["1, 1, 1, 1,", "ha ha ha", "the the the", "Once upon a time, there was a",
               "Write the word 'yes' five times:", "A rose is a rose is a"]  # fmt: skip
    steered_any = {"frequency_penalty": False, "presence_penalty": False}
    for prompt in prompts:
        plain = _greedy(smollm2, prompt, max_tokens=8)
        for option in steered_any:
            steered = _greedy(smollm2, prompt, 8, **{option: 2.0})
            if steered.token_ids == plain.token_ids:
                continue
            steered_any[option] = True
            # They part at a token the plain output had already written: only that is penalised.
            at = next(i for i, (a, b) in enumerate(zip(plain.token_ids, steered.token_ids,
                                                       strict=False)) if a != b)  # fmt: skip
            assert plain.token_ids[at] in plain.token_ids[:at], (prompt, option)
    assert all(steered_any.values()), steered_any


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_logit_bias_outside_the_vocabulary_is_a_clear_error(backend, request):
    model = request.getfixturevalue(backend)
    with pytest.raises(ThinktankError, match=f"vocabulary has {model.n_vocab} tokens"):
        model.generate(SUM_PROMPT, 1, Sampling(max_tokens=2, logit_bias={model.n_vocab: 5}))


# -- the remote backend -------------------------------------------------------------

REPLY = {"id": "x", "object": "chat.completion", "created": 0, "model": "m",
         "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                      "message": {"role": "assistant", "content": "5"}}],
         "usage": {"prompt_tokens": 7, "completion_tokens": 1, "total_tokens": 8}}  # fmt: skip
SAMPLING_FIELDS = ("top_p", "top_k", "min_p", "presence_penalty", "frequency_penalty",
                   "repetition_penalty", "logit_bias", "seed", "stop")  # fmt: skip


@pytest.fixture
def endpoint():
    """A stand-in endpoint; ``endpoint.refusal`` (status, payload) answers instead."""
    refusal: list[tuple[int, dict]] = []

    def respond(method, body):
        return refusal[0] if refusal else (200, REPLY)

    stand_in = JsonEndpoint(respond)
    stand_in.refusal = refusal
    yield stand_in
    stand_in.close()


def _remote(endpoint) -> OpenAIModel:
    return OpenAIModel("m", f"{endpoint.url}/v1", max_retries=0)


def test_the_defaults_send_no_sampling_option_a_plain_openai_endpoint_may_not_know(endpoint):
    _remote(endpoint).generate(SUM_PROMPT, 1, Sampling(max_tokens=4))
    [body] = endpoint.requests
    assert not set(SAMPLING_FIELDS) & set(body), body
    assert body["temperature"] == Sampling().temperature


def test_openai_options_go_by_name_and_vllms_as_extra_body_fields(endpoint):
    sampling = Sampling(max_tokens=4, top_p=0.9, top_k=40, min_p=0.05, presence_penalty=0.5,
                        frequency_penalty=-0.5, repetition_penalty=1.1, logit_bias={42: -100},
                        seed=3, stop=("\n",))  # fmt: skip
    _remote(endpoint).generate(SUM_PROMPT, 1, sampling)
    [body] = endpoint.requests
    assert {name: body[name] for name in SAMPLING_FIELDS} == {
        "top_p": 0.9, "top_k": 40, "min_p": 0.05, "presence_penalty": 0.5,
        "frequency_penalty": -0.5, "repetition_penalty": 1.1, "logit_bias": {"42": -100.0},
        "seed": 3, "stop": ["\n"],
    }  # fmt: skip


def test_an_endpoint_that_rejects_an_option_is_told_which_and_how_to_drop_it(endpoint):
    said = "Unrecognized request argument supplied: top_k"  # OpenAI's words
    endpoint.refusal.append((400, {"error": {"message": said, "type": "invalid_request_error"}}))
    sampling = Sampling(max_tokens=4, top_k=40, min_p=0.05, seed=1)
    with pytest.raises(ThinktankError, match=r"rejected top_k .*leave top_k=0 ") as info:
        _remote(endpoint).generate(SUM_PROMPT, 4, sampling)
    assert said in str(info.value)
    assert "min_p" not in str(info.value)  # not named: not blamed
    assert len(endpoint.requests) == 1  # n=4 refused for top_k, not for n: no retry one by one


def test_a_bare_400_after_vllm_extras_names_them(endpoint):
    endpoint.refusal.append((400, {"error": {"message": "Invalid request"}}))
    with pytest.raises(ThinktankError, match=r"may not take vLLM's min_p.*min_p=0\.0"):
        _remote(endpoint).generate(SUM_PROMPT, 1, Sampling(max_tokens=4, min_p=0.05))
    # With OpenAI's parameters only, a bare 400 is reported as it is.
    with pytest.raises(ThinktankError, match=r"HTTP 400: .*Invalid request$"):
        _remote(endpoint).generate(SUM_PROMPT, 1, Sampling(max_tokens=4, presence_penalty=1))
