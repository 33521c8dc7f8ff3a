"""What the local backends (llama.cpp, torch) share once they have logits: sampling
a token per row, and each sample's state — its tokens, its text as bytes, stop
strings, why it ended — ending in a `Completion`.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from thinktank.errors import ThinktankError
from thinktank.models.base import (
    Completion,
    FinishReason,
    ProgressCallback,
    PruneRule,
    SampleProgress,
    Sampling,
    TextCallback,
)

#: Top-p first looks for the nucleus among this many most likely tokens (cheap),
#: and sorts the whole vocabulary only when they do not reach ``top_p``.
_NUCLEUS_PROBE = 64


@dataclass
class SampleState:
    """Decoding state of one sample."""

    index: int  # which of the n samples: seeds its random generator
    slot: int  # where the backend keeps its KV cells (a sequence id, a cache block)
    rng: np.random.Generator
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    text: bytearray = field(default_factory=bytearray)
    pieces: list[bytes] = field(default_factory=list)  # what each token wrote
    top: list[dict[str, float]] = field(default_factory=list)  # with top_logprobs
    finish: FinishReason | None = None
    stop_at: int | None = None  # character offset where a stop string begins
    stop_string: str | None = None  # the stop string found there
    streamed: int = 0  # characters of its text already passed to on_text
    #: What a prune rule sees of it (a view of ``logprobs`` and ``top``).
    progress: SampleProgress = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.progress = SampleProgress(self.logprobs, self.top)

    @classmethod
    def seeded(cls, index: int, seed: int, slot: int = -1) -> SampleState:
        """Sample ``index`` of the stream ``seed``: its generator depends on both only."""
        return cls(index, slot, np.random.default_rng([seed, index]))

    @property
    def decoded(self) -> str:
        """Its text so far (a multi-byte character cut in two is left out until whole)."""
        return self.text.decode("utf-8", errors="ignore")

    def completion(self, prompt_tokens: int, seed: int, cached_tokens: int = 0) -> Completion:
        text = self.text.decode("utf-8", errors="replace")
        if self.stop_at is not None:
            text = text[: self.stop_at]
        return Completion(
            text=text,
            token_ids=tuple(self.tokens),
            logprobs=tuple(self.logprobs),
            finish_reason=self.finish or "length",
            prompt_tokens=prompt_tokens,
            cached_tokens=cached_tokens,
            seed=seed,
            top_logprobs=tuple(self.top) if self.top else None,
            stop_string=self.stop_string,
            token_bytes=tuple(self.pieces),
        )


@dataclass
class CallState:
    """What the samples of one `generate` call share."""

    sampling: Sampling
    max_tokens: int
    deadline: float | None
    progress: ProgressCallback | None
    prune: PruneRule | None
    on_text: TextCallback | None = None
    #: The prompt's token ids: ``repetition_penalty`` counts them as seen.
    prompt_ids: Sequence[int] = ()
    #: The model's vocabulary size, to refuse a ``logit_bias`` outside it.
    vocab_size: int | None = None
    generated: int = 0  # tokens sampled so far over all its samples
    stops: tuple[bytes, ...] = field(init=False)

    def __post_init__(self) -> None:
        self.stops = tuple(s.encode() for s in self.sampling.stop if s)
        if self.vocab_size is not None:
            outside = [t for t, _ in self.sampling.logit_bias if t >= self.vocab_size]
            if outside:
                raise ThinktankError(
                    f"logit_bias names token id {outside[0]}; the model's vocabulary has "
                    f"{self.vocab_size} tokens (ids 0..{self.vocab_size - 1})"
                )

    @property
    def held_back(self) -> int:
        """Characters not streamed yet because they may begin a stop string."""
        return max((len(s) for s in self.stops), default=1) - 1

    @property
    def past_deadline(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def accept(
        self, seq: SampleState, token: int, logprob: float, piece: bytes, end_of_turn: bool
    ) -> None:
        """Append a sampled token (its text ``piece``) to ``seq``, and end the sample
        if it ends its turn, writes a stop string, reaches ``max_tokens`` or is pruned."""
        seq.tokens.append(token)
        seq.logprobs.append(logprob)
        seq.pieces.append(b"" if end_of_turn else piece)
        if end_of_turn:
            seq.finish = "stop"
            return
        before = len(seq.text)
        seq.text += piece
        for stop in self.stops:
            at = seq.text.find(stop, max(0, before - len(stop) + 1))
            if at >= 0:
                seq.finish = "stop"
                seq.stop_at = len(seq.text[:at].decode("utf-8", errors="replace"))
                seq.stop_string = stop.decode()
                return
        if len(seq.tokens) >= self.max_tokens:
            seq.finish = "length"
        elif self.prune is not None and self.prune(seq.progress):
            seq.finish = "pruned"

    def step_done(
        self,
        live: Sequence[SampleState],
        logits: np.ndarray,
        piece: Callable[[int], bytes],
        end_of_turn: np.ndarray,
        top_logprobs: Callable[[np.ndarray, int], dict[str, float]],
    ) -> None:
        """Sample one token for each of the ``live`` samples from its row of ``logits``,
        accept it, then report progress, apply the deadline and stream new text."""
        chosen, logprobs = sample(
            logits, [s.rng for s in live], self.sampling, [s.tokens for s in live], self.prompt_ids
        )
        if self.sampling.top_logprobs:
            for seq, row in zip(live, logits, strict=True):
                seq.top.append(top_logprobs(row, self.sampling.top_logprobs))
        for seq, token, logprob in zip(live, chosen, logprobs, strict=True):
            token = int(token)
            self.accept(seq, token, float(logprob), piece(token), bool(end_of_turn[token]))
        self.generated += len(live)
        if self.progress is not None:
            self.progress(self.generated)
        if self.past_deadline:
            for seq in live:
                if seq.finish is None:
                    seq.finish = "budget"
        if self.on_text is not None:
            for seq in live:
                self.stream(seq)

    def stream(self, seq: SampleState) -> None:
        """Pass on the text written since last time, holding back what may begin a stop
        string until the sample goes on past it or ends."""
        done = seq.finish is not None
        text = seq.text.decode("utf-8", errors="replace" if done else "ignore")
        if seq.stop_at is not None:
            end = seq.stop_at
        else:
            end = len(text) if done else len(text) - self.held_back
        if end > seq.streamed:
            self.on_text(seq.index - self.sampling.sample_offset, text[seq.streamed : end])
            seq.streamed = end


def top_logprobs(logits: np.ndarray, k: int, piece: Callable[[int], bytes]) -> dict[str, float]:
    """The k most likely next tokens' texts and logprobs; a repeated text keeps the best."""
    shifted = logits - logits.max()
    log_norm = np.log(np.exp(shifted).sum())
    best = np.argpartition(-shifted, k)[:k]
    top: dict[str, float] = {}
    for token in best[np.argsort(-shifted[best])]:
        text = piece(int(token)).decode("utf-8", errors="replace")
        top.setdefault(text, float(shifted[token] - log_norm))
    return top


def sample(
    logits: np.ndarray,
    rngs: Sequence[np.random.Generator],
    sampling: Sampling,
    generated: Sequence[Sequence[int]] = (),
    prompt_ids: Sequence[int] = (),
) -> tuple[np.ndarray, np.ndarray]:
    """One token per row, and its log-probability under the raw (temperature 1) model.

    The options apply in `Sampling`'s order; the penalties look at ``generated[i]``
    (what row i's sample wrote so far) and, for ``repetition_penalty``, at the
    ``prompt_ids`` too. Each row's generator is drawn from once (none for greedy)."""
    peak = logits.max(axis=1, keepdims=True)
    shifted = logits - peak
    log_norm = np.log(np.exp(shifted).sum(axis=1))
    adjusted = _penalised(logits, sampling, generated, prompt_ids)
    steered = shifted if adjusted is logits else adjusted - adjusted.max(axis=1, keepdims=True)
    if sampling.temperature == 0:
        chosen = steered.argmax(axis=1)
    else:
        weights = np.exp(steered / sampling.temperature)
        weights /= weights.sum(axis=1, keepdims=True)
        if sampling.min_p or 0 < sampling.top_k < weights.shape[1]:
            chosen = _draw_truncated(weights, rngs, sampling)
        else:
            chosen = np.array(
                [draw(row, rng, sampling.top_p) for row, rng in zip(weights, rngs, strict=True)]
            )
    rows = np.arange(len(chosen))
    return chosen, shifted[rows, chosen] - log_norm


def _penalised(
    logits: np.ndarray,
    sampling: Sampling,
    generated: Sequence[Sequence[int]],
    prompt_ids: Sequence[int],
) -> np.ndarray:
    """``logits`` with the logit bias, then the repetition, frequency and presence
    penalties applied; ``logits`` itself when none is set (nothing copied)."""
    repetition = sampling.repetition_penalty != 1
    counted = sampling.frequency_penalty != 0 or sampling.presence_penalty != 0
    if not (sampling.logit_bias or repetition or counted):
        return logits
    adjusted = logits.copy()
    if sampling.logit_bias:
        tokens, biases = zip(*sampling.logit_bias, strict=True)
        adjusted[:, list(tokens)] += np.array(biases, dtype=adjusted.dtype)
    if repetition or counted:
        rows, tokens, times = _written(generated, logits.shape[1])
    if repetition:
        in_prompt = np.unique(np.asarray(prompt_ids, dtype=np.int64))
        adjusted[:, in_prompt] = _repetition(adjusted[:, in_prompt], sampling.repetition_penalty)
        new = ~np.isin(tokens, in_prompt)  # once per token: those in the prompt are done
        adjusted[rows[new], tokens[new]] = _repetition(
            adjusted[rows[new], tokens[new]], sampling.repetition_penalty
        )
    if counted:
        adjusted[rows, tokens] -= sampling.frequency_penalty * times + sampling.presence_penalty
    return adjusted


def _repetition(logits: np.ndarray, penalty: float) -> np.ndarray:
    """vLLM's and transformers' repetition penalty: less likely whatever the logit's sign."""
    return np.where(logits > 0, logits / penalty, logits * penalty)


def _written(
    generated: Sequence[Sequence[int]], vocab: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each (row, token) pair the rows' samples wrote, and how many times."""
    lengths = [len(tokens) for tokens in generated]
    flat = np.fromiter(itertools.chain.from_iterable(generated), np.int64, sum(lengths))
    rows = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
    pairs, times = np.unique(rows * vocab + flat, return_counts=True)
    return pairs // vocab, pairs % vocab, times


def _draw_truncated(
    probs: np.ndarray, rngs: Sequence[np.random.Generator], sampling: Sampling
) -> np.ndarray:
    """One index per row of ``probs`` (rows summing to 1), drawn from the tokens that
    top-k, then top-p (of what top-k kept), then min-p keep: each a prefix of the row
    sorted by probability, so only the longest prefix any row keeps is sorted, for all
    rows at once."""
    vocab = probs.shape[1]
    top_k = 0 < sampling.top_k < vocab
    width = sampling.top_k if top_k else vocab
    if sampling.min_p:
        min_p_sizes = (probs >= sampling.min_p * probs.max(axis=1, keepdims=True)).sum(axis=1)
        if not top_k:  # top-p's nucleus is of the whole row: no top-k mass to know
            width = int(min_p_sizes.max())
    if width < vocab:
        head = np.argpartition(probs, vocab - width, axis=1)[:, vocab - width :]
    else:
        head = np.broadcast_to(np.arange(vocab), probs.shape)
    head_probs = np.take_along_axis(probs, head, axis=1)
    order = np.argsort(-head_probs, axis=1, kind="stable")
    head = np.take_along_axis(head, order, axis=1)
    cumulative = np.cumsum(np.take_along_axis(head_probs, order, axis=1), axis=1)
    sizes = np.full(len(probs), width)
    if sampling.top_p < 1:
        mass = cumulative[:, -1:] if top_k else 1.0
        sizes = np.minimum(sizes, (cumulative < sampling.top_p * mass).sum(axis=1) + 1)
    if sampling.min_p:
        sizes = np.minimum(sizes, min_p_sizes)
    rows = np.arange(len(probs))
    kept = cumulative[rows, sizes - 1]
    targets = np.array([rng.random() for rng in rngs]) * kept
    picks = np.minimum((cumulative < targets[:, None]).sum(axis=1), sizes - 1)
    return head[rows, picks]


def draw(probs: np.ndarray, rng: np.random.Generator, top_p: float) -> int:
    """Sample an index of ``probs`` (summing to 1), restricted to the top-p nucleus."""
    if top_p >= 1:
        cumulative = np.cumsum(probs)
        return int(min(np.searchsorted(cumulative, rng.random() * cumulative[-1]), len(probs) - 1))
    probe = min(_NUCLEUS_PROBE, len(probs) - 1)
    head = np.argpartition(probs, -probe)[-probe:]
    order = head[np.argsort(-probs[head])]
    if probs[order].sum() < top_p:
        order = np.argsort(-probs)
    cumulative = np.cumsum(probs[order])
    size = int(np.searchsorted(cumulative, top_p)) + 1
    kept = cumulative[size - 1]
    return int(order[min(np.searchsorted(cumulative[:size], rng.random() * kept), size - 1)])
