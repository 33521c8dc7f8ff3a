"""The torch backend: a GGUF model's weights, loaded by transformers' GGUF loader,
run by a short explicit llama forward pass over a KV cache made of *blocks*.

(Blocks and why they make the cache shareable: `thinktank.models.torch.network`.)

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

The parts: `network` (the weights, the forward pass, the block KV cache), `vocab`
(the tokenizer), `session` (`SharedCacheSession`: who sees what) and `model`
(`TorchModel`, the sampling loops over them).
"""

from thinktank.models.torch.model import MAX_INDEPENDENT_SAMPLES, TorchModel
from thinktank.models.torch.network import WEIGHT_TYPES, Block, KVStore, Transformer, WeightType
from thinktank.models.torch.session import (
    LAYOUTS,
    VISIBILITIES,
    Layout,
    SharedCacheSession,
    Visibility,
)

__all__ = [
    "LAYOUTS",
    "MAX_INDEPENDENT_SAMPLES",
    "VISIBILITIES",
    "WEIGHT_TYPES",
    "Block",
    "KVStore",
    "Layout",
    "SharedCacheSession",
    "TorchModel",
    "Transformer",
    "Visibility",
    "WeightType",
]
