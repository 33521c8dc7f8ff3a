"""The embedded backend, on the real SmolLM2 and Gemma 3 weights."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from thinktank.errors import ThinktankError
from thinktank.models.base import Sampling
from thinktank.models.decoding import draw
from thinktank.models.llamacpp import MAX_BATCH_SEQUENCES, LlamaCppModel

from .conftest import SUM_PROMPT


def test_n_samples_share_one_prefill_and_differ(smollm2):
    prompt_tokens = smollm2.count_tokens(SUM_PROMPT)
    before = smollm2.stats.prefill_tokens + smollm2.stats.cached_tokens
    completions = smollm2.generate(SUM_PROMPT, 8, Sampling(temperature=1.0, max_tokens=12, seed=5))
    assert len(completions) == 8
    # The prompt was put in the KV cache once for all 8 sequences (decoded, or
    # partly taken from the prefix cache), not 8 times.
    assert smollm2.stats.prefill_tokens + smollm2.stats.cached_tokens - before == prompt_tokens
    assert all(c.prompt_tokens == prompt_tokens for c in completions)
    assert len({c.text for c in completions}) >= 4, [c.text for c in completions]


def test_decoding_is_batched(smollm2):
    before = smollm2.stats.decode_batches
    completions = smollm2.generate(SUM_PROMPT, 6, Sampling(temperature=1.0, max_tokens=10, seed=1))
    steps = smollm2.stats.decode_batches - before
    longest = max(c.completion_tokens for c in completions)
    # One llama_decode per step for all sequences: steps track the longest sample,
    # not the sum of all samples.
    assert steps == longest - 1
    assert sum(c.completion_tokens for c in completions) > steps + 1


def test_same_seed_same_output_other_seed_other_output(smollm2):
    sampling = Sampling(temperature=1.0, max_tokens=16, seed=1234)
    first = smollm2.generate(SUM_PROMPT, 4, sampling)
    again = smollm2.generate(SUM_PROMPT, 4, sampling)
    other = smollm2.generate(SUM_PROMPT, 4, sampling.with_(seed=4321))
    assert [c.text for c in first] == [c.text for c in again]
    assert [c.token_ids for c in first] == [c.token_ids for c in again]
    assert [c.text for c in first] != [c.text for c in other]
    assert {c.seed for c in first} == {1234}


def test_unseeded_calls_report_their_seed_and_replay(smollm2):
    [first] = smollm2.generate(SUM_PROMPT, 1, Sampling(temperature=1.0, max_tokens=12))
    assert first.seed is not None
    [replay] = smollm2.generate(
        SUM_PROMPT, 1, Sampling(temperature=1.0, max_tokens=12, seed=first.seed)
    )
    assert replay.text == first.text


def test_greedy_samples_agree_and_logprobs_are_the_argmax(smollm2):
    completions = smollm2.generate(SUM_PROMPT, 3, Sampling(temperature=0.0, max_tokens=10))
    assert len({c.text for c in completions}) == 1
    first = completions[0]
    assert len(first.logprobs) == first.completion_tokens
    assert all(lp <= 0 for lp in first.logprobs)
    # Greedy picks the most likely token, whose probability is the largest: it is
    # at least 1/vocab, so its logprob cannot be below -log(vocab).
    assert min(first.logprobs) > -11


def test_top_logprobs_list_the_most_likely_tokens_first(smollm2):
    [completion] = smollm2.generate(
        SUM_PROMPT, 1, Sampling(temperature=0.0, max_tokens=3, top_logprobs=5)
    )
    assert len(completion.top_logprobs) == completion.completion_tokens
    for top, chosen_logprob in zip(completion.top_logprobs, completion.logprobs, strict=True):
        values = list(top.values())
        assert values == sorted(values, reverse=True) and len(values) <= 5
        assert values[0] == pytest.approx(chosen_logprob, abs=1e-4)  # greedy took the best
    [plain] = smollm2.generate(SUM_PROMPT, 1, Sampling(temperature=0.0, max_tokens=3))
    assert plain.top_logprobs is None


def test_a_prune_rule_stops_single_samples_early(smollm2):
    prompt = [{"role": "user", "content": "Write a long story about a dragon."}]
    seen: list[int] = []

    def after_three(logprobs):
        seen.append(len(logprobs))
        return len(logprobs) >= 3 and logprobs[0] < 0  # every sample: prune at 3 tokens

    completions = smollm2.generate(
        prompt, 3, Sampling(temperature=0.8, max_tokens=40, seed=3), prune=after_three
    )
    assert [c.finish_reason for c in completions] == ["pruned"] * 3
    assert [c.completion_tokens for c in completions] == [3, 3, 3]
    assert max(seen) == 3


def test_max_tokens_and_length_finish(smollm2):
    prompt = [{"role": "user", "content": "Write a long story about a dragon."}]
    completions = smollm2.generate(prompt, 3, Sampling(temperature=0.8, max_tokens=5, seed=3))
    for c in completions:
        assert c.completion_tokens <= 5
        assert c.finish_reason in ("length", "stop")
    assert any(c.finish_reason == "length" for c in completions)


def test_stop_strings_cut_the_text(smollm2):
    prompt = "1, 2, 3, 4, 5, 6,"
    [free] = smollm2.generate(prompt, 1, Sampling(temperature=0.0, max_tokens=12))
    assert " 8" in free.text, free.text  # the model counts on
    [stopped] = smollm2.generate(prompt, 1, Sampling(temperature=0.0, max_tokens=12, stop=(" 8",)))
    assert stopped.finish_reason == "stop"
    assert stopped.text == free.text[: free.text.index(" 8")]


def test_top_p_keeps_only_the_nucleus(smollm2):
    # With a tiny nucleus only the single most likely token survives: same as greedy.
    greedy = smollm2.generate(SUM_PROMPT, 1, Sampling(temperature=0.0, max_tokens=8))
    nucleus = smollm2.generate(
        SUM_PROMPT, 4, Sampling(temperature=1.0, top_p=1e-6, max_tokens=8, seed=9)
    )
    assert {c.text for c in nucleus} == {greedy[0].text}


def test_deadline_stops_decoding(smollm2):
    completions = smollm2.generate(
        SUM_PROMPT, 2, Sampling(max_tokens=200, seed=1), deadline=time.monotonic()
    )
    assert all(c.finish_reason == "budget" for c in completions)
    assert all(c.completion_tokens == 1 for c in completions)


def test_more_samples_than_one_batch_holds(smollm2):
    n = MAX_BATCH_SEQUENCES + 3
    reported: list[int] = []
    completions = smollm2.generate(
        SUM_PROMPT, n, Sampling(temperature=1.0, max_tokens=2, seed=2), progress=reported.append
    )
    assert len(completions) == n
    # Progress counts the whole call, over the requests it was split into.
    assert reported == sorted(reported)
    assert reported[-1] == sum(c.completion_tokens for c in completions)
    assert len({c.token_ids for c in completions}) > 3


def _first_divergence(a: tuple[int, ...], b: tuple[int, ...]) -> int | None:
    for position, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return position
    return None if len(a) == len(b) else min(len(a), len(b))


@pytest.fixture(params=["streams", "unified"])
def either_kv_layout(request, smollm2):
    """The shared SmolLM2 (a KV stream per sequence), and one on a unified KV cache."""
    if request.param == "streams":
        yield smollm2
        return
    model = LlamaCppModel(smollm2.path, name="unified", chat=True, kv_streams=False)
    yield model
    model.close()


def test_concurrent_calls_are_batched_together_without_crosstalk(either_kv_layout):
    model = either_kv_layout
    # Different questions per thread: any mix-up between calls would show.
    prompts = [[{"role": "user", "content": f"What is {i} + {i}?"}] for i in range(1, 5)]
    greedy = Sampling(temperature=0.0, max_tokens=12, top_logprobs=2)
    before = model.stats.decode_batches
    expected = [model.generate(p, 2, greedy) for p in prompts]
    sequential_steps = model.stats.decode_batches - before
    results: dict[int, list] = {}
    start = threading.Barrier(len(prompts))

    def call(i: int) -> None:
        start.wait()
        results[i] = model.generate(prompts[i], 2, greedy)

    before = model.stats.decode_batches
    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(prompts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    concurrent_steps = model.stats.decode_batches - before
    assert concurrent_steps < sequential_steps  # several calls shared decode steps
    # In a unified KV cache what else it holds shifts the logits a little (up to
    # about 0.25 nats with a few prefixes cached, whatever their content: numerics,
    # not leakage), which can flip a greedy near-tie (seen on CI: "The answer is 4."
    # / "The answer is: 4"). Crosstalk would pick a token the right context finds
    # unlikely; a near-tie flip picks its runner-up at almost the same probability.
    # (With a stream per sequence nothing moves: see the test after this one.)
    for i, prompt_expected in enumerate(expected):
        for alone, batched in zip(prompt_expected, results[i], strict=True):
            position = _first_divergence(alone.token_ids, batched.token_ids)
            if position is None:
                continue
            assert position < min(len(alone.token_ids), len(batched.token_ids)), (i, position)
            chosen = next(iter(batched.top_logprobs[position]))
            alternatives = alone.top_logprobs[position]
            assert chosen in alternatives, (i, position, chosen, alternatives)
            assert max(alternatives.values()) - alternatives[chosen] < 0.75, (i, alternatives)


def _numbers(completions: list) -> list[tuple]:
    """What a seeded sample is, bit for bit: its tokens and their logprobs."""
    return [(c.token_ids, c.logprobs) for c in completions]


def _alone(model: LlamaCppModel, prompt, n: int, sampling: Sampling) -> list:
    """The call on a fresh copy of ``model``: nothing cached, nothing beside it."""
    fresh = LlamaCppModel(model.path, name="alone", chat=True)
    try:
        return fresh.generate(prompt, n, sampling)
    finally:
        fresh.close()


def test_a_seeded_call_samples_the_same_whatever_runs_beside_it(smollm2):
    prompt = [{"role": "user", "content": "What is 7 + 5?"}]
    sampling = Sampling(temperature=1.0, max_tokens=24, seed=17)
    alone = _alone(smollm2, prompt, 3, sampling)
    others = [[{"role": "user", "content": f"What is {i} + 5? Explain."}] for i in range(1, 4)]
    for other in others:  # cached now: prompts sharing most of this one's tokens
        smollm2.generate(other, 1, Sampling(max_tokens=2, seed=1))
    results: dict[object, list] = {}
    start = threading.Barrier(len(others) + 1)

    def call(key: object, prompt, n: int, sampling: Sampling) -> None:
        start.wait()
        results[key] = smollm2.generate(prompt, n, sampling)

    calls = [("target", prompt, 5, sampling)] + [
        (i, other, 4, Sampling(temperature=1.0, max_tokens=6, seed=i))
        for i, other in enumerate(others)
    ]
    threads = [threading.Thread(target=call, args=arguments) for arguments in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Beside three shorter calls (a unified KV cache then puts this call's later
    # tokens in the cells theirs left, and its numbers move), after their prompts
    # filled the cache, and as the first 3 of 5 samples: the same tokens with the
    # same logprobs, to the last bit.
    assert _numbers(results["target"][:3]) == _numbers(alone)


def test_a_sample_moved_to_a_lower_stream_keeps_its_numbers(smollm2):
    story = [{"role": "user", "content": "Write a long story about a dragon."}]
    later = Sampling(temperature=1.0, max_tokens=12, seed=8)
    alone = _alone(smollm2, story, 2, later)
    model = LlamaCppModel(smollm2.path, name="moves", chat=True)
    held = threading.Event()

    def hold_first_step(tokens: int) -> None:
        # The first call's first step waits until the later call is queued: the
        # later one then takes the next streams up, above the first call's.
        if not held.is_set():
            held.set()
            deadline = time.monotonic() + 30
            while not model._scheduler.queued and time.monotonic() < deadline:
                time.sleep(0.01)

    try:
        first = threading.Thread(target=model.generate, args=(story, 2),
                                 kwargs={"sampling": Sampling(temperature=0.0, max_tokens=4),
                                         "progress": hold_first_step})  # fmt: skip
        first.start()
        held.wait(timeout=60)
        moved = model.generate(story, 2, later)
        first.join()
        moves = model.stats.moved_sequences
    finally:
        model.close()
    assert moves == 2  # the first call's streams freed below the later call's
    assert _numbers(moved) == _numbers(alone)


def test_long_samples_get_fewer_larger_streams_and_sample_the_same(smollm2):
    sampling = Sampling(temperature=1.0, max_tokens=3, seed=4)
    short = smollm2.generate(SUM_PROMPT, 3, sampling)
    model = LlamaCppModel(smollm2.path, name="long", chat=True)
    try:
        # Room for 2000 tokens a sample (pruned at 3): streams of 2,048 cells, fewer
        # of them than the 30 samples, which therefore go in two requests.
        long = model.generate(SUM_PROMPT, 30, sampling.with_(max_tokens=2000),
                              prune=lambda logprobs: len(logprobs) >= 3)  # fmt: skip
        layout = model._cells.layout
    finally:
        model.close()
    assert layout.stream_cells == 2048 and layout.batch_slots < 30
    assert len(long) == 30 and len({c.token_ids for c in long}) > 3
    assert [c.token_ids for c in long[:3]] == [c.token_ids for c in short]
    assert [c.logprobs for c in long[:3]] == [c.logprobs for c in short]


def test_a_failing_callback_fails_only_its_own_call(smollm2):
    def broken(logprobs):
        raise ValueError("a bad prune rule")

    results: dict[str, object] = {}

    def call(name: str, prune) -> None:
        try:
            results[name] = smollm2.generate(
                SUM_PROMPT, 2, Sampling(temperature=1.0, max_tokens=8, seed=1), prune=prune
            )
        except ValueError as exc:
            results[name] = exc

    threads = [
        threading.Thread(target=call, args=("broken", broken)),
        threading.Thread(target=call, args=("fine", None)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert isinstance(results["broken"], ValueError)
    assert len(results["fine"]) == 2


def test_calls_wait_for_free_slots_when_the_batch_is_full(smollm2):
    sizes = [MAX_BATCH_SEQUENCES - 4, 10, 3]  # more sequences than slots at once
    results: dict[int, list] = {}

    def call(i: int) -> None:
        results[i] = smollm2.generate(
            SUM_PROMPT, sizes[i], Sampling(temperature=1.0, max_tokens=3, seed=i)
        )

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(sizes))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert [len(results[i]) for i in range(len(sizes))] == sizes
    assert all(1 <= c.completion_tokens <= 3 for r in results.values() for c in r)


def test_base_model_continues_text_and_refuses_chat(gemma):
    [completion] = gemma.generate(
        "Paris is the capital of", 1, Sampling(temperature=0.0, max_tokens=4)
    )
    assert "France" in completion.text
    with pytest.raises(ThinktankError, match="base model"):
        gemma.generate(SUM_PROMPT, 1, Sampling(max_tokens=2))


def test_prompt_longer_than_the_model_context_is_refused(smollm2):
    with pytest.raises(ThinktankError, match="tokens"):
        smollm2.generate("word " * 9000, 1, Sampling(max_tokens=4))


@pytest.mark.parametrize("size", [10, 1000])  # nucleus inside the cheap probe, and beyond it
def test_top_p_draws_stay_in_the_nucleus_with_the_right_frequencies(size):
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(size))
    top_p = 0.8
    order = np.argsort(-probs)
    cumulative = np.cumsum(probs[order])
    nucleus = order[: np.searchsorted(cumulative, top_p) + 1]
    draws = np.array([draw(probs, rng, top_p) for _ in range(20_000)])
    assert set(draws) <= set(nucleus)
    expected = probs[nucleus] / probs[nucleus].sum()
    observed = np.array([(draws == token).mean() for token in nucleus])
    assert np.abs(observed - expected).max() < 0.02


def test_a_repeated_prompt_comes_from_the_prefix_cache_and_samples_the_same(smollm2):
    prompt = [{"role": "user", "content": "Name a colour of the rainbow."}]
    sampling = Sampling(temperature=1.0, max_tokens=10, seed=11)
    first = smollm2.generate(prompt, 3, sampling)
    prefilled, cached = smollm2.stats.prefill_tokens, smollm2.stats.cached_tokens
    again = smollm2.generate(prompt, 3, sampling)
    assert smollm2.stats.prefill_tokens == prefilled  # nothing decoded again
    assert smollm2.stats.cached_tokens - cached == smollm2.count_tokens(prompt)
    assert all(c.cached_tokens == c.prompt_tokens for c in again)
    assert [c.token_ids for c in again] == [c.token_ids for c in first]


def test_a_longer_prompt_prefills_only_what_the_cache_lacks(smollm2):
    opening = [{"role": "user", "content": "What is 12 + 30?"}]
    follow_up = [
        *opening,
        {"role": "assistant", "content": "12 + 30 = 42."},
        {"role": "user", "content": "And 42 + 1?"},
    ]
    greedy = Sampling(temperature=0.0, max_tokens=12)
    smollm2.generate(opening, 1, greedy)
    prefilled = smollm2.stats.prefill_tokens
    [cached] = smollm2.generate(follow_up, 1, greedy)
    reused = smollm2.count_tokens(opening)
    assert cached.cached_tokens == reused
    assert smollm2.stats.prefill_tokens - prefilled == smollm2.count_tokens(follow_up) - reused
    # The same text as from a model without the cache (greedy: immune to float noise).
    uncached = LlamaCppModel(smollm2.path, name="uncached", chat=True, prefix_cache=0)
    try:
        [fresh] = uncached.generate(follow_up, 1, greedy)
    finally:
        uncached.close()
    assert fresh.cached_tokens == 0
    assert cached.text == fresh.text


def test_sample_offset_continues_the_seeded_stream(smollm2):
    # The first token is drawn from the prompt's logits alone, which do not depend
    # on the batch: it shows which random stream a sample used. (Later tokens can
    # differ in the last float bits with the batch's size.)
    prompt = [{"role": "user", "content": "Say one random word."}]
    sampling = Sampling(temperature=2.0, max_tokens=2, seed=21)
    eight = smollm2.generate(prompt, 8, sampling)
    last_four = smollm2.generate(prompt, 4, sampling.with_(sample_offset=4))
    first_four = smollm2.generate(prompt, 4, sampling)
    assert [c.token_ids[0] for c in last_four] == [c.token_ids[0] for c in eight[4:]]
    assert [c.token_ids[0] for c in first_four] == [c.token_ids[0] for c in eight[:4]]
    assert [c.token_ids[0] for c in last_four] != [c.token_ids[0] for c in first_four]


def test_cached_cells_of_other_prompts_do_not_leak_into_a_call(smollm2):
    # Other prompts' cells share the unified KV cache; the attention mask must hide
    # them: what they say must not change the logits of an unrelated prompt.
    def first_logprobs(filler: str) -> dict[str, float]:
        model = LlamaCppModel(smollm2.path, name="fresh", chat=True)
        try:
            for _ in range(3):
                model.generate([{"role": "user", "content": f"{filler} " * 100}], 1,
                               Sampling(temperature=0.0, max_tokens=1))  # fmt: skip
            [completion] = model.generate(
                SUM_PROMPT, 1, Sampling(temperature=0.0, max_tokens=1, top_logprobs=5)
            )
            return completion.top_logprobs[0]
        finally:
            model.close()

    assert first_logprobs("apple") == first_logprobs("zebra")


def test_streamed_text_joins_to_each_samples_text(smollm2):
    pieces: dict[int, list[str]] = {}
    completions = smollm2.generate(
        [{"role": "user", "content": "Count: 1, 2, 3"}], 3,
        Sampling(temperature=0.8, max_tokens=30, seed=3, stop=(", ", "\n")),
        on_text=lambda index, text: pieces.setdefault(index, []).append(text),
    )  # fmt: skip
    for index, completion in enumerate(completions):
        # A stop string is never streamed, even when it arrives over several tokens.
        assert "".join(pieces.get(index, [])) == completion.text
    assert sum(len(p) for p in pieces.values()) > len(completions)  # several pieces
