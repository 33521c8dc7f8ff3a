"""The torch backend on the real SmolLM2 weights: its forward pass against transformers'
own model, and the exactness of the shared (Hogwild!) KV cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from thinktank.errors import ThinktankError
from thinktank.models import _smollm2_path, load_model
from thinktank.models.base import Sampling

from .conftest import SUM_PROMPT

GREEDY = Sampling(temperature=0.0, max_tokens=16)


@pytest.fixture(scope="module")
def reference():
    """transformers' own implementation of the same GGUF weights."""
    from transformers import AutoModelForCausalLM

    path = _smollm2_path()
    return AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32, local_files_only=True
    )


def _reference_greedy(reference, ids: list[int], tokens: int) -> list[int]:
    prompt = torch.tensor([ids])
    with torch.inference_mode():  # the mask: the prompt holds <|im_end|>, also the pad token
        out = reference.generate(prompt, attention_mask=torch.ones_like(prompt),
                                 max_new_tokens=tokens, do_sample=False)  # fmt: skip
    return out[0, len(ids) :].tolist()


def test_forward_pass_matches_transformers(torch_smollm2, reference):
    ids = torch_smollm2.tokenize(torch_smollm2.render(SUM_PROMPT))
    with torch.inference_mode():
        expected = reference(torch.tensor([ids])).logits[0].numpy()
    logits = torch_smollm2.logits(ids)
    assert logits.shape == expected.shape
    assert np.abs(logits - expected).max() < 1e-3 * np.abs(expected).max()
    assert (logits.argmax(-1) == expected.argmax(-1)).all()


def test_one_worker_writes_exactly_what_plain_greedy_generation_writes(torch_smollm2, reference):
    header = "\nAlice: "
    ids = torch_smollm2.tokenize(torch_smollm2.render(SUM_PROMPT) + header)
    expected = _reference_greedy(reference, ids, GREEDY.max_tokens)
    (alone,) = torch_smollm2.generate_together(SUM_PROMPT, [header], GREEDY, layout="token")
    assert list(alone.token_ids) == expected[: len(alone.token_ids)]
    assert len(alone.token_ids) == GREEDY.max_tokens or alone.finish_reason == "stop"
    # Plain sampling is the same machinery with workers that see only the prompt.
    plain_ids = torch_smollm2.tokenize(torch_smollm2.render(SUM_PROMPT))
    (plain,) = torch_smollm2.generate(SUM_PROMPT, 1, GREEDY)
    expected = _reference_greedy(reference, plain_ids, GREEDY.max_tokens)
    assert list(plain.token_ids) == expected[: len(plain.token_ids)]


def _token(model, text: str) -> int:
    (token,) = model.tokenize(text)
    return token


@pytest.mark.parametrize("layout", ["token", "combined"])
def test_a_token_reaches_the_other_workers_in_the_step_it_is_written(torch_smollm2, layout):
    """As in Hogwild!'s reference engine, every worker's new cells are written before
    anyone attends: what one worker feeds in a step the other reads in that very step
    (both ways), never before."""
    model = torch_smollm2
    tokens = [[_token(model, t) for t in (" The", " sum", " is")],
              [_token(model, t) for t in (" I", " will", " check")]]  # fmt: skip
    odd = _token(model, " banana")

    def run(writer: int | None) -> list[np.ndarray]:
        """Every worker's logits after each step; ``writer`` feeds "banana" at step 1."""
        session = model.session(SUM_PROMPT, ["\nAlice: ", "\nBob: "], layout)
        logits = [session.logits.copy()]
        for step in range(3):
            fed = {w: tokens[w][step] for w in (0, 1)}
            if step == 1 and writer is not None:
                fed[writer] = odd
            session.advance(fed)
            logits.append(session.logits.copy())
        return logits

    plain = run(None)
    for writer, reader in ((0, 1), (1, 0)):
        changed = run(writer)
        # logits[k]: after k steps. Before the step in which the writer feeds its token
        # (step 1, so logits[2]) the reader's cannot depend on it; right after it, they do.
        for before in range(2):
            np.testing.assert_allclose(changed[before], plain[before], rtol=0, atol=1e-4)
        assert np.abs(changed[2][reader] - plain[2][reader]).max() > 0.05


def test_moved_keys_are_re_rotated_not_recomputed_and_match_keys_computed_there(torch_smollm2):
    """One worker in the step layout: each finished line moves from its step block
    (keys at local positions 0..) into the history (at the history's local positions).
    Placed where the history sits in the worker's view (after the prompt), its
    re-rotated keys must equal keys computed at those positions by a plain pass over
    the same text, and the worker's next-token logits must equal the plain pass's."""
    model = torch_smollm2
    session = model.session(SUM_PROMPT, ["\nAlice: "], "step", step_delimiter="\n")
    newline = _token(model, "\n")
    for text in (" Two", " plus", " three", "\n", " is", " five", "\n", " So"):
        session.advance({0: _token(model, text) if text != "\n" else newline})
    assert len(session.history) > 0 and len(session.workers[0]) > 0
    sequence = session.prompt.tokens + session.history.tokens + session.workers[0].tokens
    plain, logits = model.prefill(sequence)
    start, count = len(session.prompt), len(session.history)
    cos, sin = model.rotation(torch.tensor([start]))  # the history's offset in the view
    moved = session.history.keys[:, :, :count]
    moved = moved * cos + torch.cat([-moved[..., 32:], moved[..., :32]], dim=-1) * sin
    computed = plain.keys[:, :, start : start + count]
    assert torch.allclose(moved, computed, atol=1e-3, rtol=1e-3)
    # The last line moved by more than a token: a real rotation, not the identity.
    assert count > 8
    np.testing.assert_allclose(session.logits[0], logits[-1], atol=1e-2 * np.abs(logits).max())


def test_workers_decode_in_one_forward_pass_per_step(torch_smollm2):
    model = torch_smollm2
    passes, rows = model.forward_passes, model.rows_computed
    sampling = Sampling(temperature=0.8, max_tokens=6, seed=3)
    workers = ["\nAlice: ", "\nBob: ", "\nCarol: "]
    completions = model.generate_together(SUM_PROMPT, workers, sampling, layout="token")
    longest = max(c.completion_tokens for c in completions)
    # One pass for the prompt, one for the headers, then one per step but the last.
    assert model.forward_passes - passes == 1 + longest
    header_tokens = sum(len(model.tokenize(w)) for w in workers)
    prompt_tokens = completions[0].prompt_tokens
    assert prompt_tokens == model.count_tokens(SUM_PROMPT) + header_tokens
    fed = sum(c.completion_tokens - 1 for c in completions)  # a worker's last token is not fed
    assert model.rows_computed - rows == prompt_tokens + fed


def test_the_step_layout_counts_every_header_it_feeds(torch_smollm2):
    """Each step starts with its worker's header again: prompt_tokens counts them all."""
    model = torch_smollm2
    rows = model.rows_computed
    sampling = Sampling(temperature=1.0, max_tokens=24, seed=5)
    workers = ["\nAlice: ", "\nBob: "]
    story = [{"role": "user", "content": "Write a long story about a dragon."}]  # no early end
    completions = model.generate_together(story, workers, sampling, layout="step",
                                          step_delimiter=" ")  # fmt: skip
    once = model.count_tokens(story) + sum(len(model.tokenize(w)) for w in workers)
    assert completions[0].prompt_tokens > once  # words end steps: headers came again
    # ... and they came out of the workers' max_tokens: the worst case still holds.
    computed = completions[0].prompt_tokens - once + sum(c.completion_tokens for c in completions)
    assert computed <= len(workers) * sampling.max_tokens
    # Every row is the prompt, a header (all counted in prompt_tokens) or a written token
    # (a worker's last one is never fed).
    fed = sum(c.completion_tokens - 1 for c in completions)
    assert model.rows_computed - rows == completions[0].prompt_tokens + fed


def test_session_text_shows_each_worker_the_others_before_itself(torch_smollm2):
    model = torch_smollm2
    session = model.session(SUM_PROMPT, ["\nAlice: ", "\nBob: "], "token")
    session.advance({0: _token(model, " yes"), 1: _token(model, " no")})
    alice, bob = session.text(0), session.text(1)
    assert alice.endswith("\nBob:  no\nAlice:  yes")
    assert bob.endswith("\nAlice:  yes\nBob:  no")


def test_seeded_sampling_reproduces_and_stop_strings_end_samples(torch_smollm2):
    sampling = Sampling(temperature=1.0, max_tokens=12, seed=11, stop=("5",))
    first = torch_smollm2.generate(SUM_PROMPT, 3, sampling)
    again = torch_smollm2.generate(SUM_PROMPT, 3, sampling)
    assert [c.token_ids for c in first] == [c.token_ids for c in again]
    assert len({c.token_ids for c in first}) > 1
    # The same samples without the stop string: each stopped one is cut just before
    # its first "5", and the others are untouched.
    free = torch_smollm2.generate(SUM_PROMPT, 3, sampling.with_(stop=()))
    assert any("5" in c.text for c in free)  # so some sample is cut
    for stopped, whole in zip(first, free, strict=True):
        if "5" in whole.text:
            assert stopped.text == whole.text[: whole.text.index("5")]
            assert (stopped.stop_string, stopped.finish_reason) == ("5", "stop")
        else:
            assert stopped.text == whole.text and stopped.stop_string is None


def test_torch_specs_and_errors():
    assert load_model("torch:smollm2").name == "torch:smollm2"
    with pytest.raises(ThinktankError, match="no such file"):
        load_model("torch:/nowhere/model.gguf")
    with pytest.raises(ThinktankError, match=r"weights=float32\|bfloat16"):
        load_model("torch:smollm2?weights=int4")
    with pytest.raises(ThinktankError, match="llama-architecture"):
        load_model("torch:gemma3-270m")


def test_many_samples_decode_in_batches_and_count_progress_across_them(torch_smollm2):
    from thinktank.models.torch import MAX_INDEPENDENT_SAMPLES

    n = MAX_INDEPENDENT_SAMPLES + 2
    seen: list[int] = []
    completions = torch_smollm2.generate(
        SUM_PROMPT, n, Sampling(temperature=1.0, max_tokens=3), progress=seen.append
    )
    assert len(completions) == n and len({c.seed for c in completions}) == 1
    assert seen == sorted(seen) and seen[-1] == sum(c.completion_tokens for c in completions)


def test_token_pieces_join_to_the_text(torch_smollm2):
    text = "Hello wörld,\n  naïve 12 + 30 = 42 <|im_end|>"
    ids = torch_smollm2.tokenize(text)
    assert b"".join(torch_smollm2.piece(i) for i in ids).decode() == text
