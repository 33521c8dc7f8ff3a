"""The torch backend: a GGUF model's weights, loaded by transformers' GGUF loader,
run by a short explicit llama forward pass over a KV cache made of *blocks*.

A block is a run of tokens whose keys are rotated (RoPE) at block-local positions
0, 1, 2, ... So a block can sit at any offset of a reader's view without being
recomputed: since RoPE scores depend only on the distance between query and key,
the reader rotates its *query* by (its position - the block's offset) instead of
rotating every key by the offset (the Hogwild! trick: one rotation per block,
not per cached token). Keys that must move for good (a finished step going into
a shared history) are re-rotated once by the distance moved.

On top of blocks, a `SharedCacheSession` runs several workers of one model at
once, one batched forward pass per step, each worker seeing the shared prompt,
then the blocks of the others, then its own block (Hogwild! Inference; Group
Think's token-level visibility). As in Hogwild!'s reference engine a token is
visible to the others in the very pass it is written: every row's cells are
written before any row attends (`Visibility`: ``next-step`` delays it one pass,
as thinktank did before). Plain sampling is the same machinery with workers
that see only the prompt and themselves.

Llama-architecture models only (SmolLM2 is one), on the CPU; weights float32
(exact) or bfloat16 (faster), see `WeightType`.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import re
import secrets
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from thinktank.config import threads
from thinktank.errors import ThinktankError
from thinktank.models.base import (
    Capabilities,
    Completion,
    Price,
    ProgressCallback,
    Prompt,
    PruneRule,
    Sampling,
    TeamFormat,
    TextCallback,
    split_reply,
)
from thinktank.models.decoding import CallState, SampleState, top_logprobs
from thinktank.models.profiles import LOCAL_PROFILE, SamplingProfile

#: Who sees whom. ``independent``: each worker sees the prompt and itself (plain
#: sampling). ``token``: every worker's whole block, each token visible to the
#: others in the step it is written (Hogwild!'s contiguous layout, Group Think's
#: token-level visibility). ``step``: a worker's step joins a shared history once
#: it ends; workers see the history and their own current step (Hogwild!'s
#: interleaved layout). ``combined``: the history, then the others' current
#: steps, then one's own (Hogwild!'s combined layout, its main results).
Layout = Literal["independent", "token", "step", "combined"]
#: How the weight matrices are stored: ``float32`` reproduces transformers' own
#: model exactly; ``bfloat16`` matmuls read half the memory (about 2x faster on a
#: CPU, whose decoding is memory-bound) and shift logits slightly. Activations,
#: norms and the KV cache are float32 either way.
WeightType = Literal["float32", "bfloat16"]
WEIGHT_TYPES: tuple[str, ...] = ("float32", "bfloat16")
LAYOUTS: tuple[str, ...] = ("independent", "token", "step", "combined")
#: When a token one worker writes reaches the others. ``same-step``: in the very
#: forward pass it is fed (Hogwild!'s reference engine: every worker's new cells are
#: written before anyone attends, so the workers' first headers, fed together, see
#: each other). ``next-step``: from the next pass on (thinktank's shared cache before
#: issue 18: a worker's first token follows only the prompt and its own header).
Visibility = Literal["same-step", "next-step"]
VISIBILITIES: tuple[str, ...] = ("same-step", "next-step")

#: Independent samples decoded in one batch at most: every sample's block is scored
#: for every row (masked), so the cost of attention grows with the square.
MAX_INDEPENDENT_SAMPLES = 16
#: Prompt tokens per forward pass of a prefill (bounds the score matrix).
_PREFILL_CHUNK = 256


@dataclass(frozen=True)
class _Layer:
    attn_norm: torch.Tensor
    qkv: torch.Tensor  # q, k and v projections stacked: one matmul
    out: torch.Tensor
    mlp_norm: torch.Tensor
    gate_up: torch.Tensor  # gate and up projections stacked
    down: torch.Tensor


class KVStore:
    """The KV cells of a fixed set of blocks, in one tensor per kind, shaped
    [blocks, layers, kv heads, capacity, head dim]: a forward pass reads every
    block of a layer as one view, whatever the number of workers."""

    def __init__(self, model: TorchModel, blocks: int, capacity: int) -> None:
        self.model = model
        shape = (blocks, model.n_layers, model.n_kv_heads, capacity, model.head_dim)
        self.keys = torch.zeros(shape)
        self.values = torch.zeros(shape)
        self.blocks = [Block(self, i) for i in range(blocks)]

    def reserve(self, length: int) -> None:
        """Make room for blocks of ``length`` tokens (capacity doubles)."""
        capacity = self.keys.shape[3]
        if length <= capacity:
            return
        grow = max(length, 2 * capacity) - capacity
        pad = torch.zeros((*self.keys.shape[:3], grow, self.keys.shape[4]))
        self.keys = torch.cat([self.keys, pad], dim=3)
        self.values = torch.cat([self.values, pad], dim=3)


class Block:
    """A run of tokens in a `KVStore`, keys rotated at block-local positions."""

    def __init__(self, store: KVStore, index: int) -> None:
        self.store = store
        self.index = index
        self.tokens: list[int] = []

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def keys(self) -> torch.Tensor:
        """[layers, kv heads, capacity, head dim]; the first ``len(self)`` are in use."""
        return self.store.keys[self.index]

    @property
    def values(self) -> torch.Tensor:
        return self.store.values[self.index]

    def append_moved(self, other: Block) -> None:
        """Append ``other``'s cells, re-rotating its keys for their new local positions
        (a rotation by the distance moved, not a recomputation)."""
        start, count = len(self), len(other)
        self.store.reserve(start + count)
        cos, sin = self.store.model.rotation(torch.full((1,), start))
        keys = other.keys[:, :, :count]
        self.keys[:, :, start : start + count] = keys * cos + _rotate_half(keys) * sin
        self.values[:, :, start : start + count] = other.values[:, :, :count]
        self.tokens.extend(other.tokens)

    def clear(self) -> None:
        self.tokens = []


@dataclass
class _Rows:
    """One forward pass: new tokens, where their cells go, and what each one sees."""

    tokens: list[int] = field(default_factory=list)
    own: list[tuple[Block, int]] = field(default_factory=list)  # (block, local position)
    #: Per row, the other blocks it sees: (block, offset in its view, visible tokens).
    views: list[list[tuple[Block, int, int]]] = field(default_factory=list)

    def add(self, token: int, block: Block, local: int, view: list[tuple[Block, int, int]]) -> None:
        self.tokens.append(token)
        self.own.append((block, local))
        self.views.append(view)


class TorchModel:
    """A llama-architecture GGUF model in PyTorch, with a block KV cache.

    ``generate`` samples n independent completions in one batch (each a worker that
    sees only the prompt and itself); `generate_together` runs workers that see
    each other (Hogwild!). Calls are serialized by a lock (one batch at a time).
    """

    #: How strategies sample it by default (the registry sets a studied model's own).
    sampling_profile: SamplingProfile = LOCAL_PROFILE

    def __init__(
        self,
        path: str | Path,
        *,
        name: str,
        chat: bool = True,
        price: Price | None = None,
        weights: WeightType = "float32",
    ) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise ThinktankError(f"model file not found: {self.path}")
        self.name = name
        if weights not in WEIGHT_TYPES:
            raise ThinktankError(f"weights must be one of {', '.join(WEIGHT_TYPES)}")
        self.weights = weights
        self.price = price or Price(0.0, 0.0)
        if os.environ.get("THINKTANK_THREADS"):  # else torch's own default (physical cores)
            torch.set_num_threads(threads())
        self.capabilities = Capabilities(
            chat=chat, logprobs=True, batched=True, streaming=True, shared_cache=True
        )
        self._tokenizer, config, tensors = _load(self.path)
        if chat and not self._tokenizer.chat_template:
            raise ThinktankError(f"{self.path.name} has no chat template; load it with chat=False")
        self.n_layers = config.num_hidden_layers
        self.n_heads = config.num_attention_heads
        self.n_kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.n_heads
        self.n_ctx = config.max_position_embeddings
        self.eps = config.rms_norm_eps
        self.n_params = sum(t.numel() for t in tensors.values())
        self._build(tensors, _rope_theta(config))
        self.n_vocab = self._head.shape[0]
        self._eog = np.zeros(self.n_vocab, dtype=bool)
        self._eog[list(self._tokenizer.all_special_ids)] = True
        self._lock = threading.Lock()
        #: Forward passes and rows computed since loading (shows batching at work).
        self.forward_passes = 0
        self.rows_computed = 0

    def __repr__(self) -> str:
        return f"TorchModel(name={self.name!r}, path={str(self.path)!r})"

    def _build(self, tensors: dict[str, torch.Tensor], theta: float) -> None:
        matrices = getattr(torch, self.weights)

        def w(key: str, dtype: torch.dtype = matrices) -> torch.Tensor:
            return tensors[key].to(dtype).contiguous()

        self._embed = w("model.embed_tokens.weight", torch.float32)
        self._head = w(
            "lm_head.weight" if "lm_head.weight" in tensors else "model.embed_tokens.weight"
        )
        self._norm = w("model.norm.weight", torch.float32)
        self._layers = []
        for i in range(self.n_layers):
            p = f"model.layers.{i}."
            self._layers.append(_Layer(
                attn_norm=w(p + "input_layernorm.weight", torch.float32),
                qkv=torch.cat([w(p + f"self_attn.{x}_proj.weight") for x in "qkv"]).contiguous(),
                out=w(p + "self_attn.o_proj.weight"),
                mlp_norm=w(p + "post_attention_layernorm.weight", torch.float32),
                gate_up=torch.cat([w(p + "mlp.gate_proj.weight"),
                                   w(p + "mlp.up_proj.weight")]).contiguous(),
                down=w(p + "mlp.down_proj.weight"),
            ))  # fmt: skip
        inv_freq = 1.0 / theta ** (
            torch.arange(0, self.head_dim, 2, dtype=torch.float64) / self.head_dim
        )
        angles = torch.arange(self.n_ctx, dtype=torch.float64)[:, None] * inv_freq[None, :]
        angles = torch.cat([angles, angles], dim=-1)
        self._cos = angles.cos().float()
        self._sin = angles.sin().float()

    # -- text ----------------------------------------------------------------

    def render(self, prompt: Prompt) -> str:
        """The exact text that is tokenized (see `LlamaCppModel.render`)."""
        if isinstance(prompt, str):
            return prompt
        if not self.capabilities.chat:
            raise ThinktankError(
                f"{self.name} is a base model without a chat template: give it a text prompt"
            )
        messages, reply = split_reply(prompt)
        rendered = self._tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )
        return rendered + reply

    def tokenize(self, text: str) -> list[int]:
        return self._tokenizer(text, add_special_tokens=False).input_ids

    def count_tokens(self, prompt: Prompt) -> int:
        return len(self.tokenize(self.render(prompt)))

    @cached_property
    def _pieces(self) -> list[bytes]:
        """Each token's bytes: through the byte alphabet of a byte-level BPE vocabulary
        (SmolLM2, Llama 3), else SentencePiece's ("▁" a space, "<0x0A>" a byte)."""
        from transformers.convert_slow_tokenizer import bytes_to_unicode

        to_byte = {c: b for b, c in bytes_to_unicode().items()}
        byte_level = "ByteLevel" in type(self._tokenizer.backend_tokenizer.decoder).__name__
        pieces = []
        for token in self._tokenizer.convert_ids_to_tokens(range(self.n_vocab)):
            token = token or ""
            if byte_level and all(c in to_byte for c in token):
                pieces.append(bytes(to_byte[c] for c in token))
            elif re.fullmatch(r"<0x[0-9A-Fa-f]{2}>", token):
                pieces.append(bytes([int(token[3:5], 16)]))
            else:  # a special token, or a SentencePiece piece
                pieces.append(token.replace("▁", " ").encode())
        return pieces

    def piece(self, token: int) -> bytes:
        return self._pieces[token]

    # -- the forward pass ------------------------------------------------------

    def rotation(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """RoPE cos and sin for these positions (or distances), shape [len, head_dim]."""
        return self._cos[positions], self._sin[positions]

    def logits(self, token_ids: Sequence[int]) -> np.ndarray:
        """Next-token logits after every prefix of ``token_ids`` (a plain causal pass
        from position 0), shape [len, vocab]."""
        return self.prefill(token_ids)[1]

    def prefill(self, token_ids: Sequence[int]) -> tuple[Block, np.ndarray]:
        """A block holding ``token_ids`` at positions 0, 1, ... (a plain causal pass),
        and the next-token logits after each of them."""
        with self._lock, torch.inference_mode():
            store = KVStore(self, 1, len(token_ids))
            block, rows = store.blocks[0], _Rows()
            for local, token in enumerate(token_ids):
                rows.add(token, block, local, [])
            return block, self._forward(store, rows, list(range(len(token_ids))))

    def _forward(self, store: KVStore, rows: _Rows, outputs: Sequence[int]) -> np.ndarray:
        """Write the rows' cells into their blocks of ``store`` and return the logits of
        the rows ``outputs``. A row sees its own block up to itself and the blocks of
        its view up to their visible length, each at its offset: its query is rotated
        by its distance to each block's start, so one pass scores every block."""
        count = len(rows.tokens)
        self.forward_passes += 1
        self.rows_computed += count
        own_block = torch.tensor([block.index for block, _ in rows.own])
        own_local = torch.tensor([local for _, local in rows.own])
        store.reserve(int(own_local.max()) + 1)
        distance, visible = self._visibility(store, rows)
        length = int(visible.max())
        cos, sin = self.rotation(distance)  # [blocks, rows, head dim]
        cos, sin = cos[:, :, None, None, :], sin[:, :, None, None, :]
        hidden = torch.arange(length)[None, None, :] >= visible[:, :, None]
        mask = torch.zeros(hidden.shape).masked_fill_(hidden, -math.inf)[:, :, None, None, :]
        own_cos, own_sin = self.rotation(own_local)
        own_cos, own_sin = own_cos[:, None, :], own_sin[:, None, :]
        group = self.n_heads // self.n_kv_heads
        scale = 1.0 / math.sqrt(self.head_dim)
        q_size, kv_size = self.n_heads * self.head_dim, self.n_kv_heads * self.head_dim
        blocks = len(store.blocks)

        x = self._embed[torch.tensor(rows.tokens)]
        for index, layer in enumerate(self._layers):
            qkv = _linear(_rms_norm(x, layer.attn_norm, self.eps), layer.qkv)
            q = qkv[:, :q_size].reshape(count, self.n_kv_heads, group, self.head_dim)
            k = qkv[:, q_size : q_size + kv_size].reshape(count, self.n_kv_heads, self.head_dim)
            v = qkv[:, q_size + kv_size :].reshape(count, self.n_kv_heads, self.head_dim)
            store.keys[own_block, index, :, own_local] = k * own_cos + _rotate_half(k) * own_sin
            store.values[own_block, index, :, own_local] = v
            rotated = q * cos + _rotate_half(q) * sin  # [blocks, rows, kv heads, group, dim]
            keys = store.keys[:, index, :, :length]  # [blocks, kv heads, length, dim]
            scores = torch.einsum("brkgd,bkld->rkgbl", rotated, keys) * scale
            scores = scores + mask.permute(1, 2, 3, 0, 4)
            probs = torch.softmax(scores.reshape(count, self.n_kv_heads, group, -1), dim=-1)
            probs = probs.reshape(count, self.n_kv_heads, group, blocks, length)
            values = store.values[:, index, :, :length]
            attended = torch.einsum("rkgbl,bkld->rkgd", probs, values)
            x = x + _linear(attended.reshape(count, q_size), layer.out)
            gate, up = _linear(_rms_norm(x, layer.mlp_norm, self.eps), layer.gate_up).chunk(2, -1)
            x = x + _linear(F.silu(gate) * up, layer.down)
        for token, (block, _) in zip(rows.tokens, rows.own, strict=True):
            block.tokens.append(token)
        if not outputs:
            return np.empty((0, self.n_vocab), dtype=np.float32)
        hidden_out = _rms_norm(x[torch.tensor(list(outputs))], self._norm, self.eps)
        return _linear(hidden_out, self._head).numpy()

    @staticmethod
    def _visibility(store: KVStore, rows: _Rows) -> tuple[torch.Tensor, torch.Tensor]:
        """Per (block, row): the row's distance to the block's start in its view, and how
        many of the block's tokens it sees (0: none)."""
        distance = torch.zeros((len(store.blocks), len(rows.tokens)), dtype=torch.long)
        visible = torch.zeros_like(distance)
        for r, ((own, local), view) in enumerate(zip(rows.own, rows.views, strict=True)):
            position = sum(seen for _, _, seen in view) + local
            for block, offset, seen in [*view, (own, position - local, local + 1)]:
                distance[block.index, r] = position - offset
                visible[block.index, r] = seen
        return distance, visible

    # -- generation ----------------------------------------------------------

    def generate(
        self,
        prompt: Prompt,
        n: int = 1,
        sampling: Sampling | None = None,
        *,
        deadline: float | None = None,
        progress: ProgressCallback | None = None,
        prune: PruneRule | None = None,
        on_text: TextCallback | None = None,
    ) -> list[Completion]:
        """``n`` independent samples of ``prompt``, decoded as one batch (batches of at
        most `MAX_INDEPENDENT_SAMPLES`, one after the other)."""
        if n < 1:
            raise ValueError("n must be >= 1")
        sampling = sampling or Sampling()
        if sampling.seed is None:  # one stream for every batch, reported on each sample
            sampling = sampling.with_(seed=secrets.randbits(63))
        completions: list[Completion] = []
        for start in range(0, n, MAX_INDEPENDENT_SAMPLES):
            done = sum(c.completion_tokens for c in completions)
            size = min(MAX_INDEPENDENT_SAMPLES, n - start)
            batch = sampling.with_(sample_offset=sampling.sample_offset + start)
            counted = None if progress is None else lambda t, done=done: progress(done + t)
            streamed = None if on_text is None else lambda i, text, s=start: on_text(s + i, text)
            completions += self._run(prompt, [""] * size, batch, "independent", None,
                                     deadline, counted, prune, streamed)  # fmt: skip
        return completions

    def generate_together(
        self,
        prompt: Prompt,
        workers: Sequence[str],
        sampling: Sampling | None = None,
        *,
        layout: Layout = "token",
        step_delimiter: str = "\n",
        team: TeamFormat | None = None,
        visibility: Visibility = "same-step",
        until: Callable[[Sequence[str]], bool] | None = None,
        deadline: float | None = None,
        progress: ProgressCallback | None = None,
        transcript: Callable[[str], None] | None = None,
    ) -> list[Completion]:
        """Hogwild! Inference: one worker per header in ``workers`` (e.g. "\\nAlice: "),
        all writing at once into one shared KV cache, one batched forward pass per
        step. What each worker sees is set by ``layout`` (see `Layout`); a step ends
        with ``step_delimiter``; in the ``step`` and ``combined`` layouts the next one
        starts with the worker's header again (and in any layout with the team's check
        when one is due). ``team`` adds the fixed text of a
        collaboration format (`TeamFormat`: step headers, the frame around the
        others' blocks, the periodic check). ``visibility``: whether a token reaches
        the others in the pass it is fed or the next (`Visibility`). The session
        stops when every worker has ended or ``until(texts)`` is true (texts: what
        each worker wrote so far); then ``transcript`` is called with what a reader
        of the whole cache sees after the prompt (`SharedCacheSession.transcript`).
        One completion per
        worker: its own text, without headers; its ``prompt_tokens`` counts the
        shared prompt and every header, frame and check fed. What is fed besides
        the prompt and the first headers counts against the workers' ``max_tokens``
        (the frame shared among them), so the session never computes more than the
        prompt, the headers once and ``max_tokens`` a worker.
        """
        if not workers:
            raise ValueError("generate_together needs at least one worker")
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}")
        return self._run(prompt, list(workers), sampling or Sampling(), layout, until, deadline,
                         progress, None, None, step_delimiter=step_delimiter, team=team,
                         visibility=visibility, transcript=transcript)  # fmt: skip

    def _run(
        self,
        prompt: Prompt,
        headers: list[str],
        sampling: Sampling,
        layout: Layout,
        until: Callable[[Sequence[str]], bool] | None,
        deadline: float | None,
        progress: ProgressCallback | None,
        prune: PruneRule | None,
        on_text: TextCallback | None,
        *,
        step_delimiter: str | None = None,
        team: TeamFormat | None = None,
        visibility: Visibility = "same-step",
        transcript: Callable[[str], None] | None = None,
    ) -> list[Completion]:
        prompt_ids = self.tokenize(self.render(prompt))
        header_ids = [self.tokenize(h) for h in headers]
        room = self.n_ctx - len(prompt_ids) - sum(map(len, header_ids))
        max_tokens = min(sampling.max_tokens, room // len(headers))
        if max_tokens < 1:
            raise ThinktankError(
                f"the prompt has {len(prompt_ids)} tokens; {self.name} holds {self.n_ctx}"
            )
        seed = sampling.seed if sampling.seed is not None else secrets.randbits(63)
        call = CallState(sampling, max_tokens, deadline, progress, prune, on_text,
                         prompt_ids=prompt_ids, vocab_size=self.n_vocab)  # fmt: skip
        samples = [
            SampleState.seeded(sampling.sample_offset + i, seed, slot=i)
            for i in range(len(headers))
        ]
        with self._lock, torch.inference_mode():
            session = SharedCacheSession(self, prompt_ids, header_ids, layout,
                                         step_delimiter=step_delimiter, team=team,
                                         visibility=visibility)  # fmt: skip
            while True:
                live = [s for s in samples if s.finish is None]
                if not live:
                    break
                logits = session.logits[[s.slot for s in live]]
                call.step_done(live, logits, self.piece, self._eog, self._top_logprobs)
                if until is not None and until([s.decoded for s in samples]):
                    for s in samples:
                        s.finish = s.finish or "stop"
                for s in live:  # in step layouts, headers fed again count as written
                    if s.finish is None and session.spent(s.slot, len(s.tokens)) >= max_tokens:
                        s.finish = "length"
                going = {s.slot: s.tokens[-1] for s in live if s.finish is None}
                for s in live:
                    if s.finish is not None:
                        session.retire(s.slot)
                if going:
                    session.advance(going)
            if transcript is not None:
                transcript(session.transcript())
        prompt_tokens = len(prompt_ids) + session.header_tokens
        return [s.completion(prompt_tokens, seed) for s in samples]

    def _top_logprobs(self, logits: np.ndarray, k: int) -> dict[str, float]:
        return top_logprobs(logits, k, self.piece)

    def session(
        self,
        prompt: Prompt,
        workers: Sequence[str],
        layout: Layout = "token",
        *,
        step_delimiter: str = "\n",
        team: TeamFormat | None = None,
        visibility: Visibility = "same-step",
    ) -> SharedCacheSession:
        """A `SharedCacheSession` you drive token by token (``advance``) — for research
        on what workers see; `generate_together` is the sampling loop over one."""
        header_ids = [self.tokenize(h) for h in workers]
        return SharedCacheSession(self, self.tokenize(self.render(prompt)), header_ids, layout,
                                  step_delimiter=step_delimiter, team=team,
                                  visibility=visibility)  # fmt: skip


class SharedCacheSession:
    """Workers of one model writing into one KV cache at the same time.

    Blocks: the prompt (shared), one per worker (its text, or in the ``step`` and
    ``combined`` layouts its current step), a history of finished steps, and the
    frame a `TeamFormat` puts around the others' blocks (each piece prefilled
    alone, as the reference engine does). `advance` feeds each worker's next token
    in one batched forward pass; ``logits[w]`` is then worker w's next-token
    distribution. Every row's cells are written before any row attends, so a token
    is visible to the other workers in the very pass it is written, and within one
    pass the workers' new tokens see each other both ways (Hogwild!'s "instant"
    access; its reference engine appends every worker's new keys before combining
    the views). With ``visibility="next-step"`` a row sees the others' blocks only
    as they were before the pass (`Visibility`).
    """

    def __init__(
        self,
        model: TorchModel,
        prompt_ids: Sequence[int],
        headers: Sequence[Sequence[int]],
        layout: Layout,
        *,
        step_delimiter: str | None = "\n",
        team: TeamFormat | None = None,
        visibility: Visibility = "same-step",
    ) -> None:
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}")
        if visibility not in VISIBILITIES:
            raise ValueError(f"visibility must be one of {', '.join(VISIBILITIES)}")
        if not prompt_ids:
            raise ValueError("the prompt is empty")
        self.model = model
        self.layout = layout
        self.visibility = visibility
        self.team = team = team or TeamFormat()
        self.headers = [list(h) for h in headers]
        count = len(self.headers)
        if team.step_headers and len(team.step_headers) < count:  # more: workers were dropped
            raise ValueError(f"step_headers needs one header per worker ({count})")
        stepped = layout in ("step", "combined")
        self._framed = layout in ("token", "combined")  # the layouts that show the others
        texts = (team.others, team.own, team.pivot) if self._framed else ("", "", "")
        others, own, pivot = (model.tokenize(t) if t else [] for t in texts)
        if (others or own or pivot) and not all(self.headers):
            # A worker's first logits come after its header; without one they miss the frame.
            raise ValueError("with a frame around the others' blocks every worker needs a header")
        shared = 1 + stepped + bool(others) + bool(own) + (count if pivot else 0)
        self.store = KVStore(model, shared + count, len(prompt_ids))
        blocks = iter(self.store.blocks)
        self.prompt = next(blocks)
        self.history = next(blocks) if stepped else None
        self._others = next(blocks) if others else None
        self._own = next(blocks) if own else None
        self._pivots = [next(blocks) if pivot else None for _ in self.headers]
        self.workers = list(blocks)
        self._check = model.tokenize(team.check) if team.check_every else []
        delimiter = stepped or bool(self._check)  # steps matter to a history or a check
        self._delimiter = (step_delimiter or "").encode() if delimiter else b""
        self._step_text = [bytearray() for _ in headers]
        self._steps = [1] * count  # each worker's current step
        #: What starts each worker's next step (in the step layouts).
        self._next_headers = [self._step_header(w, 2) if stepped else [] for w in range(count)]
        self._since_check = 0  # tokens fed to the workers since the last check
        #: Header tokens fed so far (once per worker, with the frame; in the step layouts
        #: once per step; the checks), and per worker those fed after its first header.
        framing = len(others) + len(own) + count * len(pivot)
        self.header_tokens = sum(map(len, self.headers)) + framing
        self.refed = [0] * count
        # The frame comes out of the workers' allowances, shared (see `spent`).
        self._frame_share = -(-framing // count)
        self.logits = np.zeros((count, model.n_vocab), dtype=np.float32)
        for start in range(0, len(prompt_ids), _PREFILL_CHUNK):
            chunk = prompt_ids[start : start + _PREFILL_CHUNK]
            self.logits[:] = self._prefill({self.prompt: chunk})
        frame = {self._others: others, self._own: own, **dict.fromkeys(self._pivots, pivot)}
        self._prefill({block: tokens for block, tokens in frame.items() if block is not None})
        self._feed({w: list(h) for w, h in enumerate(self.headers) if h})

    def view(
        self, worker: int, pending: Mapping[int, int] | None = None
    ) -> list[tuple[Block, int]]:
        """What ``worker`` sees before its own block, in order, as (block, visible tokens):
        the prompt, the history, then in the layouts that show them the others' blocks
        framed by the team's format. ``pending``: how many tokens each worker is being
        fed in this pass; those are visible too."""
        pending = pending or {}
        seen: list[tuple[Block | None, int]] = [(self.prompt, len(self.prompt))]
        if self.history is not None:
            seen.append((self.history, len(self.history)))
        if self._framed:
            seen.append((self._others, len(self._others or ())))
            for w, (block, pivot) in enumerate(zip(self.workers, self._pivots, strict=True)):
                if w != worker:
                    seen += [(block, len(block) + pending.get(w, 0)), (pivot, len(pivot or ()))]
            seen.append((self._own, len(self._own or ())))
        return [(block, n) for block, n in seen if block is not None and n]

    def text(self, worker: int) -> str:
        """What ``worker`` sees, as text (its own block last)."""
        tokens = [t for block, n in self.view(worker) for t in block.tokens[:n]]
        return self._decode(tokens + self.workers[worker].tokens)

    def transcript(self) -> str:
        """What a reader of the whole cache sees after the prompt: the history, then
        every worker's current block in turn (each followed by the team's pivot, all
        after its ``others`` header in the layouts that show them) — what Hogwild!'s
        final-answer step reads."""
        others = self._others if self._framed else None
        blocks = [self.history, others]
        for block, pivot in zip(self.workers, self._pivots, strict=True):
            blocks += [block, pivot]
        return self._decode([t for block in blocks if block is not None for t in block.tokens])

    def advance(self, tokens: Mapping[int, int]) -> None:
        """Feed worker w the token ``tokens[w]`` (one forward pass for all of them); a
        worker whose step that token ends starts its next step with its header (in the
        step layouts), then the team's check when one is due."""
        ended = [worker for worker, token in tokens.items() if self._ends_step(worker, token)]
        self._feed({w: [t] for w, t in tokens.items()})
        self._since_check += len(tokens)
        for worker in ended:
            if self.history is not None:
                self._close_step(worker)
        self._feed({w: start for w in ended if (start := self._next_start(w))})

    def spent(self, worker: int, written: int) -> int:
        """What ``worker`` has cost out of its token allowance, having written ``written``
        tokens: also what was fed into its block after its first header (step headers,
        checks), its share of the frame, and room for what may start its next step (the
        step its next token may end), so the allowance is never overshot."""
        return written + self.refed[worker] + self._frame_share + self._start_bound(worker)

    def retire(self, worker: int) -> None:
        """The worker has ended. In the ``step`` layout its unfinished step joins the
        history (the others see nothing else); in ``combined`` it stays where it is,
        among the others' work in progress cut off by the pivot, as in Hogwild!'s
        reference (its workers' last steps never join the history), so the history
        holds only finished steps, each ending at the delimiter."""
        if self.layout == "step" and len(self.workers[worker]):
            self._close_step(worker)

    def _ends_step(self, worker: int, token: int) -> bool:
        if not self._delimiter:
            return False
        self._step_text[worker] += self.model.piece(token)
        return self._delimiter in self._step_text[worker]

    def _step_header(self, worker: int, step: int) -> list[int]:
        if not self.team.step_headers:
            return self.headers[worker]
        return self.model.tokenize(self.team.step_headers[worker].replace("{step}", str(step)))

    def _check_may_be_due(self) -> bool:
        """Whether a check may start a step within the next pass: its tokens, and every
        worker's next start with a check, could carry the count past ``check_every``."""
        if not self._check:
            return False
        longest = max(map(len, self._next_headers))
        ahead = len(self.workers) * (1 + longest + len(self._check))
        return self._since_check + ahead > self.team.check_every

    def _start_bound(self, worker: int) -> int:
        """The most that can start ``worker``'s next step."""
        check = len(self._check) if self._check_may_be_due() else 0
        return len(self._next_headers[worker]) + check

    def _next_start(self, worker: int) -> list[int]:
        """What starts ``worker``'s next step, counted as fed again."""
        self._step_text[worker] = bytearray()
        start = list(self._next_headers[worker])
        if self.history is not None:
            self._steps[worker] += 1
            self._next_headers[worker] = self._step_header(worker, self._steps[worker] + 1)
        if self._check and self._since_check > self.team.check_every:
            start += self._check
            self._since_check = 0
        self._since_check += len(start)
        self.refed[worker] += len(start)
        self.header_tokens += len(start)
        return start

    @torch.inference_mode()
    def _close_step(self, worker: int) -> None:
        self.history.append_moved(self.workers[worker])
        self.workers[worker].clear()
        self._step_text[worker] = bytearray()

    def _decode(self, tokens: Sequence[int]) -> str:
        return b"".join(self.model.piece(t) for t in tokens).decode("utf-8", errors="replace")

    @torch.inference_mode()
    def _prefill(self, pending: Mapping[Block, Sequence[int]]) -> np.ndarray:
        """One forward pass over each shared block's new tokens, each seeing only its own
        block (the prompt, a piece of the frame); the logits after the last row."""
        rows = _Rows()
        for block, tokens in pending.items():
            for k, token in enumerate(tokens):
                rows.add(token, block, len(block) + k, [])
        if not rows.tokens:
            return np.empty((0, self.model.n_vocab), dtype=np.float32)
        return self.model._forward(self.store, rows, [len(rows.tokens) - 1])

    @torch.inference_mode()
    def _feed(self, pending: Mapping[int, list[int]]) -> None:
        """One forward pass over each worker's pending tokens, each row seeing its view
        with the other workers' pending tokens in it (``same-step`` visibility; not in
        ``next-step``); the logits after each worker's last one go to ``self.logits``."""
        if not pending:
            return
        same_step = self.visibility == "same-step"
        counts = {worker: len(tokens) for worker, tokens in pending.items()} if same_step else {}
        rows, outputs = _Rows(), {}
        for worker, tokens in pending.items():
            own = self.workers[worker]
            placed, offset = [], 0
            for block, visible in self.view(worker, counts):
                placed.append((block, offset, visible))
                offset += visible
            if offset + len(own) + len(tokens) > self.model.n_ctx:
                raise ThinktankError(f"the workers' views outgrew {self.model.n_ctx} tokens")
            for k, token in enumerate(tokens):
                rows.add(token, own, len(own) + k, placed)
            outputs[worker] = len(rows.tokens) - 1
        self.logits[list(outputs)] = self.model._forward(self.store, rows, list(outputs.values()))


def _linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """x @ weight.T, in the weight's type (bfloat16 matmuls read half the memory);
    activations stay float32."""
    if weight.dtype == x.dtype:
        return F.linear(x, weight)
    return F.linear(x.to(weight.dtype), weight).float()


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def _rope_theta(config: object) -> float:
    parameters = getattr(config, "rope_parameters", None) or {}
    if parameters.get("rope_type", "default") != "default":
        raise ThinktankError(f"the torch backend does not implement {parameters['rope_type']} RoPE")
    return float(parameters.get("rope_theta") or getattr(config, "rope_theta", 10000.0))


def _load(path: Path) -> tuple[object, object, dict[str, torch.Tensor]]:
    """Tokenizer, config and float weights of a GGUF file, by transformers' GGUF loader
    (it dequantizes every tensor)."""
    try:
        import transformers
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    except ImportError:
        raise ThinktankError(
            "the torch backend needs the torch extra: pip install 'thinktank[torch]'"
        ) from None
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    options = {"gguf_file": path.name, "local_files_only": True}
    try:
        config = AutoConfig.from_pretrained(path.parent, **options)
        if config.model_type != "llama":  # before the slow part: dequantizing the weights
            raise ThinktankError(
                f"the torch backend runs llama-architecture models; {path.name} is"
                f" {config.model_type!r}"
            )
        tokenizer = AutoTokenizer.from_pretrained(path.parent, **options)
        # Its GGUF reader draws a progress bar of its own on stderr, unasked.
        with contextlib.redirect_stderr(io.StringIO()):
            hf = AutoModelForCausalLM.from_pretrained(path.parent, dtype=torch.float32, **options)
    except (ValueError, OSError, KeyError) as exc:
        raise ThinktankError(f"transformers could not load {path.name}: {exc}") from None
    return tokenizer, hf.config, dict(hf.state_dict())
