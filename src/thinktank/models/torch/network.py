"""The torch backend's network: a llama model's weights and its forward pass over a
KV cache made of *blocks*.

A block is a run of tokens whose keys are rotated (RoPE) at block-local positions
0, 1, 2, ... So a block can sit at any offset of a reader's view without being
recomputed: since RoPE scores depend only on the distance between query and key,
the reader rotates its *query* by (its position - the block's offset) instead of
rotating every key by the offset (the Hogwild! trick: one rotation per block,
not per cached token). Keys that must move for good (a finished step going into
a shared history) are re-rotated once by the distance moved.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from thinktank.errors import ThinktankError

#: How the weight matrices are stored: ``float32`` reproduces transformers' own
#: model exactly; ``bfloat16`` matmuls read half the memory (about 2x faster on a
#: CPU, whose decoding is memory-bound) and shift logits slightly. Activations,
#: norms and the KV cache are float32 either way.
WeightType = Literal["float32", "bfloat16"]
WEIGHT_TYPES: tuple[str, ...] = ("float32", "bfloat16")


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

    def __init__(self, network: Transformer, blocks: int, capacity: int) -> None:
        self.network = network
        shape = (blocks, network.n_layers, network.n_kv_heads, capacity, network.head_dim)
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
        cos, sin = self.store.network.rotation(torch.full((1,), start))
        keys = other.keys[:, :, :count]
        self.keys[:, :, start : start + count] = keys * cos + _rotate_half(keys) * sin
        self.values[:, :, start : start + count] = other.values[:, :, :count]
        self.tokens.extend(other.tokens)

    def clear(self) -> None:
        self.tokens = []


@dataclass
class Rows:
    """One forward pass: new tokens, where their cells go, and what each one sees."""

    tokens: list[int] = field(default_factory=list)
    own: list[tuple[Block, int]] = field(default_factory=list)  # (block, local position)
    #: Per row, the other blocks it sees: (block, offset in its view, visible tokens).
    views: list[list[tuple[Block, int, int]]] = field(default_factory=list)

    def add(self, token: int, block: Block, local: int, view: list[tuple[Block, int, int]]) -> None:
        self.tokens.append(token)
        self.own.append((block, local))
        self.views.append(view)


class Transformer:
    """A llama-architecture network: its weights (matrices in ``weights``' type) and
    one forward pass over the blocks of a `KVStore`."""

    def __init__(
        self, config: object, tensors: dict[str, torch.Tensor], weights: WeightType
    ) -> None:
        self.n_layers = config.num_hidden_layers
        self.n_heads = config.num_attention_heads
        self.n_kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.n_heads
        self.n_ctx = config.max_position_embeddings
        self.eps = config.rms_norm_eps
        self._build(tensors, _rope_theta(config), weights)
        self.n_vocab = self._head.shape[0]
        #: Forward passes and rows computed since loading (shows batching at work).
        self.forward_passes = 0
        self.rows_computed = 0

    def _build(self, tensors: dict[str, torch.Tensor], theta: float, weights: WeightType) -> None:
        matrices = getattr(torch, weights)

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

    def rotation(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """RoPE cos and sin for these positions (or distances), shape [len, head_dim]."""
        return self._cos[positions], self._sin[positions]

    def prefill(self, token_ids: Sequence[int]) -> tuple[Block, np.ndarray]:
        """A block holding ``token_ids`` at positions 0, 1, ... (a plain causal pass),
        and the next-token logits after each of them."""
        store = KVStore(self, 1, len(token_ids))
        block, rows = store.blocks[0], Rows()
        for local, token in enumerate(token_ids):
            rows.add(token, block, local, [])
        return block, self.forward(store, rows, list(range(len(token_ids))))

    def forward(self, store: KVStore, rows: Rows, outputs: Sequence[int]) -> np.ndarray:
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
    def _visibility(store: KVStore, rows: Rows) -> tuple[torch.Tensor, torch.Tensor]:
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


def load(path: Path) -> tuple[object, object, dict[str, torch.Tensor]]:
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
