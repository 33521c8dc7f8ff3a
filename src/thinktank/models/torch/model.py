"""`TorchModel`: a GGUF model's weights, loaded by transformers' GGUF loader, run by
the block-cache `Transformer`; its samples decoded one batched forward pass a step."""

from __future__ import annotations

import os
import secrets
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from thinktank.config import threads
from thinktank.errors import ThinktankError
from thinktank.models.base import (
    BACKEND_CAPABILITIES,
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
from thinktank.models.decoding import CallState, SampleState
from thinktank.models.profiles import LOCAL_PROFILE, SamplingProfile
from thinktank.models.torch.network import WEIGHT_TYPES, Block, Transformer, WeightType, load
from thinktank.models.torch.session import (
    LAYOUTS,
    Layout,
    SharedCacheSession,
    Visibility,
)
from thinktank.models.torch.vocab import Vocabulary

#: Independent samples decoded in one batch at most: every sample's block is scored
#: for every row (masked), so the cost of attention grows with the square.
MAX_INDEPENDENT_SAMPLES = 16


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
        self.capabilities = replace(BACKEND_CAPABILITIES["torch"], chat=chat)
        tokenizer, config, tensors = load(self.path)
        if chat and not tokenizer.chat_template:
            raise ThinktankError(f"{self.path.name} has no chat template; load it with chat=False")
        self.n_params = sum(t.numel() for t in tensors.values())
        self.network = Transformer(config, tensors, weights)
        self.n_ctx = self.network.n_ctx
        self.n_vocab = self.network.n_vocab
        self.vocabulary = Vocabulary(tokenizer, self.n_vocab)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"TorchModel(name={self.name!r}, path={str(self.path)!r})"

    @property
    def forward_passes(self) -> int:
        """Forward passes since loading (shows batching at work)."""
        return self.network.forward_passes

    @property
    def rows_computed(self) -> int:
        """Token rows computed by those passes."""
        return self.network.rows_computed

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
        return self.vocabulary.apply_template(messages) + reply

    def tokenize(self, text: str) -> list[int]:
        return self.vocabulary.tokenize(text)

    def count_tokens(self, prompt: Prompt) -> int:
        return len(self.tokenize(self.render(prompt)))

    def piece(self, token: int) -> bytes:
        """The bytes of one token."""
        return self.vocabulary.piece(token)

    # -- the forward pass ------------------------------------------------------

    def rotation(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """RoPE cos and sin for these positions (or distances), shape [len, head_dim]."""
        return self.network.rotation(positions)

    def logits(self, token_ids: Sequence[int]) -> np.ndarray:
        """Next-token logits after every prefix of ``token_ids`` (a plain causal pass
        from position 0), shape [len, vocab]."""
        return self.prefill(token_ids)[1]

    def prefill(self, token_ids: Sequence[int]) -> tuple[Block, np.ndarray]:
        """A block holding ``token_ids`` at positions 0, 1, ... (a plain causal pass),
        and the next-token logits after each of them."""
        with self._lock, torch.inference_mode():
            return self.network.prefill(token_ids)

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
        when one is due). ``team`` adds the fixed text of a collaboration format
        (`TeamFormat`: step headers, the frame around the others' blocks, the periodic
        check). ``visibility``: whether a token reaches the others in the pass it is
        fed or the next (`Visibility`). The session stops when every worker has ended
        or ``until(texts)`` is true (texts: what each worker wrote so far); then
        ``transcript`` is called with what a reader of the whole cache sees after the
        prompt (`SharedCacheSession.transcript`). One completion per worker: its own
        text, without headers; its ``prompt_tokens`` counts the shared prompt and
        every header, frame and check fed. What is fed besides the prompt and the
        first headers counts against the workers' ``max_tokens`` (the frame shared
        among them), so the session never computes more than the prompt, the headers
        once and ``max_tokens`` a worker.
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
            session = SharedCacheSession(self.network, self.vocabulary, prompt_ids, header_ids,
                                         layout, step_delimiter=step_delimiter, team=team,
                                         visibility=visibility)  # fmt: skip
            self._decode(session, samples, call, until)
            if transcript is not None:
                transcript(session.transcript())
        prompt_tokens = len(prompt_ids) + session.header_tokens
        return [s.completion(prompt_tokens, seed) for s in samples]

    def _decode(
        self,
        session: SharedCacheSession,
        samples: list[SampleState],
        call: CallState,
        until: Callable[[Sequence[str]], bool] | None,
    ) -> None:
        """Sample each live worker's next token from the session's logits and feed them
        all in one pass, until every worker has ended (or ``until`` ends them all)."""
        vocabulary = self.vocabulary
        while live := [s for s in samples if s.finish is None]:
            logits = session.logits[[s.slot for s in live]]
            call.step_done(live, logits, vocabulary.piece, vocabulary.eog, vocabulary.top_logprobs)
            if until is not None and until([s.decoded for s in samples]):
                for s in samples:
                    s.finish = s.finish or "stop"
            for s in live:  # in step layouts, headers fed again count as written
                if s.finish is None and session.spent(s.slot, len(s.tokens)) >= call.max_tokens:
                    s.finish = "length"
            going = {s.slot: s.tokens[-1] for s in live if s.finish is None}
            for s in live:
                if s.finish is not None:
                    session.retire(s.slot)
            if going:
                session.advance(going)

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
        return SharedCacheSession(self.network, self.vocabulary,
                                  self.tokenize(self.render(prompt)), header_ids, layout,
                                  step_delimiter=step_delimiter, team=team,
                                  visibility=visibility)  # fmt: skip
