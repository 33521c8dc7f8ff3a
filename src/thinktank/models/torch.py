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
Think's token-level visibility). Plain sampling is the same machinery with
workers that see only the prompt and themselves.

Llama-architecture models only (SmolLM2 is one); float32 on the CPU.
"""

from __future__ import annotations

import math
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

from thinktank.errors import ThinktankError
from thinktank.models.base import (
    Capabilities,
    Completion,
    Price,
    ProgressCallback,
    Prompt,
    PruneRule,
    Sampling,
    TextCallback,
    split_reply,
)
from thinktank.models.decoding import CallState, SampleState, top_logprobs

#: Who sees whom. ``independent``: each worker sees the prompt and itself (plain
#: sampling). ``token``: every worker's whole block, visible at the next step
#: (Hogwild!'s contiguous layout, Group Think's token-level visibility).
#: ``step``: a worker's step joins a shared history once it ends; workers see the
#: history and their own current step (Hogwild!'s interleaved layout).
#: ``combined``: the history, then the others' current steps, then one's own.
Layout = Literal["independent", "token", "step", "combined"]
LAYOUTS: tuple[str, ...] = ("independent", "token", "step", "combined")

#: Prompt tokens per forward pass of a prefill (bounds the score matrix).
_PREFILL_CHUNK = 256
_INITIAL_BLOCK_CAPACITY = 64


@dataclass(frozen=True)
class _Layer:
    attn_norm: torch.Tensor
    qkv: torch.Tensor  # q, k and v projections stacked: one matmul
    out: torch.Tensor
    mlp_norm: torch.Tensor
    gate_up: torch.Tensor  # gate and up projections stacked
    down: torch.Tensor


class Block:
    """KV cells of a run of tokens, keys rotated at block-local positions."""

    def __init__(self, model: TorchModel, capacity: int = _INITIAL_BLOCK_CAPACITY) -> None:
        self.model = model
        shape = (model.n_layers, model.n_kv_heads, capacity, model.head_dim)
        self.keys = torch.zeros(shape, dtype=model.dtype)
        self.values = torch.zeros(shape, dtype=model.dtype)
        self.tokens: list[int] = []

    def __len__(self) -> int:
        return len(self.tokens)

    def reserve(self, extra: int) -> None:
        """Make room for ``extra`` more tokens (capacity doubles)."""
        needed = len(self) + extra
        if needed <= self.keys.shape[2]:
            return
        capacity = max(needed, 2 * self.keys.shape[2])
        grow = capacity - self.keys.shape[2]
        pad = torch.zeros((*self.keys.shape[:2], grow, self.keys.shape[3]), dtype=self.keys.dtype)
        self.keys = torch.cat([self.keys, pad], dim=2)
        self.values = torch.cat([self.values, pad], dim=2)

    def append_moved(self, other: Block) -> None:
        """Append ``other``'s cells, re-rotating its keys for their new local positions
        (a rotation by the distance moved, not a recomputation)."""
        start, count = len(self), len(other)
        self.reserve(count)
        cos, sin = self.model.rotation(torch.full((1,), start))
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

    def __init__(
        self,
        path: str | Path,
        *,
        name: str,
        chat: bool = True,
        price: Price | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise ThinktankError(f"model file not found: {self.path}")
        self.name = name
        self.dtype = dtype
        self.price = price or Price(0.0, 0.0)
        self.capabilities = Capabilities(
            chat=chat, logprobs=True, batched=True, streaming=True, shared_cache=True
        )
        self._tokenizer, config, weights = _load(self.path, dtype)
        if chat and not self._tokenizer.chat_template:
            raise ThinktankError(f"{self.path.name} has no chat template; load it with chat=False")
        self.n_layers = config.num_hidden_layers
        self.n_heads = config.num_attention_heads
        self.n_kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.n_heads
        self.n_ctx = config.max_position_embeddings
        self.eps = config.rms_norm_eps
        self.n_params = sum(t.numel() for t in weights.values())
        self._build(weights, _rope_theta(config))
        self.n_vocab = self._head.shape[0]
        self._eog = np.zeros(self.n_vocab, dtype=bool)
        self._eog[list(self._tokenizer.all_special_ids)] = True
        self._lock = threading.Lock()
        #: Forward passes and rows computed since loading (shows batching at work).
        self.forward_passes = 0
        self.rows_computed = 0

    def __repr__(self) -> str:
        return f"TorchModel(name={self.name!r}, path={str(self.path)!r})"

    def _build(self, weights: dict[str, torch.Tensor], theta: float) -> None:
        def w(key: str) -> torch.Tensor:
            return weights[key].to(self.dtype).contiguous()

        self._embed = w("model.embed_tokens.weight")
        self._head = w("lm_head.weight") if "lm_head.weight" in weights else self._embed
        self._norm = w("model.norm.weight")
        self._layers = []
        for i in range(self.n_layers):
            p = f"model.layers.{i}."
            self._layers.append(_Layer(
                attn_norm=w(p + "input_layernorm.weight"),
                qkv=torch.cat([w(p + f"self_attn.{x}_proj.weight") for x in "qkv"]).contiguous(),
                out=w(p + "self_attn.o_proj.weight"),
                mlp_norm=w(p + "post_attention_layernorm.weight"),
                gate_up=torch.cat([w(p + "mlp.gate_proj.weight"),
                                   w(p + "mlp.up_proj.weight")]).contiguous(),
                down=w(p + "mlp.down_proj.weight"),
            ))  # fmt: skip
        inv_freq = 1.0 / theta ** (
            torch.arange(0, self.head_dim, 2, dtype=torch.float64) / self.head_dim
        )
        angles = torch.arange(self.n_ctx, dtype=torch.float64)[:, None] * inv_freq[None, :]
        angles = torch.cat([angles, angles], dim=-1)
        self._cos = angles.cos().to(self.dtype)
        self._sin = angles.sin().to(self.dtype)

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
        """Each token's bytes (byte-level BPE: through the tokenizer's byte alphabet)."""
        from transformers.convert_slow_tokenizer import bytes_to_unicode

        to_byte = {c: b for b, c in bytes_to_unicode().items()}
        pieces = []
        for token in self._tokenizer.convert_ids_to_tokens(range(self.n_vocab)):
            token = token or ""
            if all(c in to_byte for c in token):
                pieces.append(bytes(to_byte[c] for c in token))
            else:  # a special token or a non-byte-level vocabulary
                pieces.append(token.encode())
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
            block = Block(self, len(token_ids))
            rows = _Rows()
            for local, token in enumerate(token_ids):
                rows.add(token, block, local, [])
            return block, self._forward(rows, list(range(len(token_ids))))

    def _forward(self, rows: _Rows, outputs: Sequence[int]) -> np.ndarray:
        """Write the rows' cells into their blocks and return the logits of the rows
        ``outputs``. A row sees its own block up to itself and the blocks of its view
        up to their visible length, each at its offset."""
        count = len(rows.tokens)
        self.forward_passes += 1
        self.rows_computed += count
        locals_ = torch.tensor([local for _, local in rows.own])
        own_cos, own_sin = self.rotation(locals_)
        own_cos, own_sin = own_cos[:, None, :], own_sin[:, None, :]
        # Runs of consecutive rows writing one block: one slice assignment each.
        runs: list[tuple[Block, int, int, int]] = []  # block, first row, row count, local start
        for r, (block, local) in enumerate(rows.own):
            last = runs[-1] if runs else None
            if last and last[0] is block and last[3] + last[2] == local and last[1] + last[2] == r:
                runs[-1] = (block, last[1], last[2] + 1, last[3])
            else:
                runs.append((block, r, 1, local))
        for block, _, n, _ in runs:
            block.reserve(n)
        parts = self._attention_parts(rows)
        total = sum(part.length for part in parts)
        group = self.n_heads // self.n_kv_heads
        scale = 1.0 / math.sqrt(self.head_dim)
        q_size, kv_size = self.n_heads * self.head_dim, self.n_kv_heads * self.head_dim

        x = self._embed[torch.tensor(rows.tokens)]
        for index, layer in enumerate(self._layers):
            qkv = F.linear(_rms_norm(x, layer.attn_norm, self.eps), layer.qkv)
            q = qkv[:, :q_size].reshape(count, self.n_kv_heads, group, self.head_dim)
            k = qkv[:, q_size : q_size + kv_size].reshape(count, self.n_kv_heads, self.head_dim)
            v = qkv[:, q_size + kv_size :].reshape(count, self.n_kv_heads, self.head_dim)
            k = k * own_cos + _rotate_half(k) * own_sin
            for block, first, n, start in runs:
                block.keys[index, :, start : start + n] = k[first : first + n].transpose(0, 1)
                block.values[index, :, start : start + n] = v[first : first + n].transpose(0, 1)
            scores = x.new_full((count, self.n_kv_heads, group, total), -math.inf)
            column = 0
            for part in parts:
                rotated = q if part.rows is None else q[part.rows]
                rotated = rotated * part.cos + _rotate_half(rotated) * part.sin
                keys = part.block.keys[index, :, : part.length].transpose(-1, -2)
                s = torch.matmul(rotated, keys) * scale + part.mask
                if part.rows is None:
                    scores[..., column : column + part.length] = s
                else:
                    scores[part.rows, ..., column : column + part.length] = s
                column += part.length
            probs = torch.softmax(scores, dim=-1)
            attended = torch.zeros_like(q)
            column = 0
            for part in parts:
                values = part.block.values[index, :, : part.length]
                p = probs[..., column : column + part.length]
                if part.rows is None:
                    attended += torch.matmul(p, values)
                else:
                    attended.index_add_(0, part.rows, torch.matmul(p[part.rows], values))
                column += part.length
            x = x + F.linear(attended.reshape(count, q_size), layer.out)
            gate, up = F.linear(_rms_norm(x, layer.mlp_norm, self.eps), layer.gate_up).chunk(2, -1)
            x = x + F.linear(F.silu(gate) * up, layer.down)
        for block, first, n, _ in runs:
            block.tokens.extend(rows.tokens[first : first + n])
        if not outputs:
            return np.empty((0, self.n_vocab), dtype=np.float32)
        hidden = _rms_norm(x[torch.tensor(list(outputs))], self._norm, self.eps)
        return F.linear(hidden, self._head).float().numpy()

    def _attention_parts(self, rows: _Rows) -> list[_Part]:
        """For each block some row sees: which rows, their query rotations and masks."""
        seen: dict[int, list[tuple[int, int, int]]] = {}  # block id -> (row, distance, visible)
        blocks: dict[int, Block] = {}
        for r, ((own, local), view) in enumerate(zip(rows.own, rows.views, strict=True)):
            position = sum(visible for _, _, visible in view) + local
            for block, offset, visible in [*view, (own, position - local, local + 1)]:
                blocks[id(block)] = block
                seen.setdefault(id(block), []).append((r, position - offset, visible))
        parts = []
        for key, entries in seen.items():
            row_ids = [r for r, _, _ in entries]
            length = max(visible for _, _, visible in entries)
            cos, sin = self.rotation(torch.tensor([d for _, d, _ in entries]))
            visible = torch.tensor([v for _, _, v in entries])
            mask = torch.zeros((len(entries), length), dtype=self.dtype)
            mask[torch.arange(length)[None, :] >= visible[:, None]] = -math.inf
            parts.append(_Part(
                block=blocks[key],
                rows=None if row_ids == list(range(len(rows.tokens))) else torch.tensor(row_ids),
                cos=cos[:, None, None, :], sin=sin[:, None, None, :],
                mask=mask[:, None, None, :], length=length,
            ))  # fmt: skip
        return parts

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
        """``n`` independent samples of ``prompt``, decoded as one batch."""
        if n < 1:
            raise ValueError("n must be >= 1")
        return self._run(prompt, [""] * n, sampling or Sampling(), "independent", None, None,
                         deadline, progress, prune, on_text)  # fmt: skip

    def generate_together(
        self,
        prompt: Prompt,
        workers: Sequence[str],
        sampling: Sampling | None = None,
        *,
        layout: Layout = "token",
        step_delimiter: str = "\n",
        until: Callable[[Sequence[str]], bool] | None = None,
        deadline: float | None = None,
        progress: ProgressCallback | None = None,
    ) -> list[Completion]:
        """Hogwild! Inference: one worker per header in ``workers`` (e.g. "\\nAlice: "),
        all writing at once into one shared KV cache, one batched forward pass per
        step. What each worker sees is set by ``layout`` (see `Layout`); in the
        ``step`` and ``combined`` layouts a step ends with ``step_delimiter`` and
        the next one starts with the worker's header again. The session stops when
        every worker has ended or ``until(texts)`` is true (texts: what each worker
        wrote so far). One completion per worker: its own text, without headers;
        its ``prompt_tokens`` counts the shared prompt and every header once.
        """
        if not workers:
            raise ValueError("generate_together needs at least one worker")
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}")
        return self._run(prompt, list(workers), sampling or Sampling(), layout, step_delimiter,
                         until, deadline, progress, None, None)  # fmt: skip

    def _run(
        self,
        prompt: Prompt,
        headers: list[str],
        sampling: Sampling,
        layout: Layout,
        step_delimiter: str | None,
        until: Callable[[Sequence[str]], bool] | None,
        deadline: float | None,
        progress: ProgressCallback | None,
        prune: PruneRule | None,
        on_text: TextCallback | None,
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
        call = CallState(sampling, max_tokens, deadline, progress, prune, on_text)
        samples = [
            SampleState.seeded(sampling.sample_offset + i, seed, slot=i)
            for i in range(len(headers))
        ]
        with self._lock, torch.inference_mode():
            session = SharedCacheSession(self, prompt_ids, header_ids, layout,
                                         step_delimiter=step_delimiter)  # fmt: skip
            while True:
                live = [s for s in samples if s.finish is None]
                if not live:
                    break
                logits = session.logits[[s.slot for s in live]]
                call.step_done(live, logits, self.piece, self._eog, self._top_logprobs)
                if until is not None and until([s.decoded for s in samples]):
                    for s in samples:
                        s.finish = s.finish or "stop"
                going = {s.slot: s.tokens[-1] for s in live if s.finish is None}
                for s in live:
                    if s.finish is not None:
                        session.retire(s.slot)
                if going:
                    session.advance(going)
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
    ) -> SharedCacheSession:
        """A `SharedCacheSession` you drive token by token (``advance``) — for research
        on what workers see; `generate_together` is the sampling loop over one."""
        header_ids = [self.tokenize(h) for h in workers]
        return SharedCacheSession(self, self.tokenize(self.render(prompt)), header_ids, layout,
                                  step_delimiter=step_delimiter)  # fmt: skip


@dataclass
class _Part:
    """A block as the rows that see it see it: row subset (None: all rows), query
    rotations (cos, sin by distance from the block's start), visibility mask."""

    block: Block
    rows: torch.Tensor | None
    cos: torch.Tensor
    sin: torch.Tensor
    mask: torch.Tensor
    length: int


class SharedCacheSession:
    """Workers of one model writing into one KV cache at the same time.

    Blocks: the prompt (shared), one per worker (its text, or in the ``step`` and
    ``combined`` layouts its current step), and a history of finished steps.
    `advance` feeds each worker's next token in one batched forward pass;
    ``logits[w]`` is then worker w's next-token distribution. A token becomes
    visible to the other workers at the next step, never in the same one.
    """

    def __init__(
        self,
        model: TorchModel,
        prompt_ids: Sequence[int],
        headers: Sequence[Sequence[int]],
        layout: Layout,
        *,
        step_delimiter: str | None = "\n",
    ) -> None:
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}")
        if not prompt_ids:
            raise ValueError("the prompt is empty")
        self.model = model
        self.layout = layout
        self.headers = [list(h) for h in headers]
        self.header_tokens = sum(map(len, self.headers))
        self.prompt = Block(model, len(prompt_ids))
        self.history = Block(model) if layout in ("step", "combined") else None
        self.workers = [Block(model) for _ in headers]
        self._delimiter = (step_delimiter or "").encode() if self.history is not None else b""
        self._step_text = [bytearray() for _ in headers]
        self.logits = np.zeros((len(headers), model.n_vocab), dtype=np.float32)
        for start in range(0, len(prompt_ids), _PREFILL_CHUNK):
            chunk = prompt_ids[start : start + _PREFILL_CHUNK]
            self.logits[:] = self._feed({-1: chunk}, self.prompt)
        self._feed({w: list(h) for w, h in enumerate(self.headers) if h})

    def view(self, worker: int) -> list[tuple[Block, int]]:
        """What ``worker`` sees before its own block, in order, as (block, visible tokens)."""
        shared: list[Block] = [self.prompt]
        if self.history is not None:
            shared.append(self.history)
        if self.layout in ("token", "combined"):
            shared += [b for w, b in enumerate(self.workers) if w != worker]
        return [(b, len(b)) for b in shared if len(b)]

    def text(self, worker: int) -> str:
        """What ``worker`` sees, as text (its own block last)."""
        tokens = [t for block, n in self.view(worker) for t in block.tokens[:n]]
        tokens += self.workers[worker].tokens
        return b"".join(self.model.piece(t) for t in tokens).decode("utf-8", errors="replace")

    def advance(self, tokens: Mapping[int, int]) -> None:
        """Feed worker w the token ``tokens[w]`` (one forward pass for all of them);
        a worker whose step that token ends starts its next step with its header."""
        closing = []
        for worker, token in tokens.items():
            if self._delimiter:
                self._step_text[worker] += self.model.piece(token)
                if self._delimiter in self._step_text[worker]:
                    closing.append(worker)
        self._feed({w: [t] for w, t in tokens.items()})
        for worker in closing:
            self._close_step(worker)
        self._feed({w: list(self.headers[w]) for w in closing if self.headers[w]})

    def retire(self, worker: int) -> None:
        """The worker has ended: its unfinished step joins the history (step layouts)."""
        if self.history is not None and len(self.workers[worker]):
            self._close_step(worker)

    @torch.inference_mode()
    def _close_step(self, worker: int) -> None:
        self.history.append_moved(self.workers[worker])
        self.workers[worker].clear()
        self._step_text[worker] = bytearray()

    @torch.inference_mode()
    def _feed(self, pending: Mapping[int, list[int]], prompt: Block | None = None) -> np.ndarray:
        """One forward pass over each worker's pending tokens; the logits after each
        worker's last one go to ``self.logits`` (and are returned). Worker -1 with a
        ``prompt`` block: a prefill chunk of the prompt, which sees nothing else."""
        if not pending:
            return np.empty((0, self.model.n_vocab), dtype=np.float32)
        rows, outputs = _Rows(), {}
        for worker, tokens in pending.items():
            if prompt is not None:
                view, own = [], prompt
            else:
                view, own = self.view(worker), self.workers[worker]
            placed, offset = [], 0
            for block, visible in view:
                placed.append((block, offset, visible))
                offset += visible
            if offset + len(own) + len(tokens) > self.model.n_ctx:
                raise ThinktankError(f"the workers' views outgrew {self.model.n_ctx} tokens")
            for k, token in enumerate(tokens):
                rows.add(token, own, len(own) + k, placed)
            outputs[worker] = len(rows.tokens) - 1
        logits = self.model._forward(rows, list(outputs.values()))
        if prompt is None:
            self.logits[list(outputs)] = logits
        return logits


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


def _load(path: Path, dtype: torch.dtype) -> tuple[object, object, dict[str, torch.Tensor]]:
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
        hf = AutoModelForCausalLM.from_pretrained(path.parent, dtype=dtype, **options)
    except (ValueError, OSError, KeyError) as exc:
        raise ThinktankError(f"transformers could not load {path.name}: {exc}") from None
    return tokenizer, hf.config, dict(hf.state_dict())
