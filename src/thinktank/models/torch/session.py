"""Workers of one model writing into one block KV cache at the same time (Hogwild!
Inference; Group Think's token-level visibility).

Each worker sees the shared prompt, then the blocks of the others, then its own
block, one batched forward pass per step. As in Hogwild!'s reference engine a
token is visible to the others in the very pass it is written: every row's cells
are written before any row attends (`Visibility`: ``next-step`` delays it one
pass, as thinktank did before). Plain sampling is the same machinery with workers
that see only the prompt and themselves.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
import torch

from thinktank.errors import ThinktankError
from thinktank.models.base import TeamFormat
from thinktank.models.torch.network import Block, KVStore, Rows, Transformer
from thinktank.models.torch.vocab import Vocabulary

#: Who sees whom. ``independent``: each worker sees the prompt and itself (plain
#: sampling). ``token``: every worker's whole block, each token visible to the
#: others in the step it is written (Hogwild!'s contiguous layout, Group Think's
#: token-level visibility). ``step``: a worker's step joins a shared history once
#: it ends; workers see the history and their own current step (Hogwild!'s
#: interleaved layout). ``combined``: the history, then the others' current
#: steps, then one's own (Hogwild!'s combined layout, its main results).
Layout = Literal["independent", "token", "step", "combined"]
LAYOUTS: tuple[str, ...] = ("independent", "token", "step", "combined")
#: When a token one worker writes reaches the others. ``same-step``: in the very
#: forward pass it is fed (Hogwild!'s reference engine: every worker's new cells are
#: written before anyone attends, so the workers' first headers, fed together, see
#: each other). ``next-step``: from the next pass on (thinktank's shared cache before
#: issue 18: a worker's first token follows only the prompt and its own header).
Visibility = Literal["same-step", "next-step"]
VISIBILITIES: tuple[str, ...] = ("same-step", "next-step")

#: Prompt tokens per forward pass of a prefill (bounds the score matrix).
_PREFILL_CHUNK = 256


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
        network: Transformer,
        vocabulary: Vocabulary,
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
        self.network, self.vocabulary = network, vocabulary
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
        others, own, pivot = (vocabulary.tokenize(t) if t else [] for t in texts)
        if (others or own or pivot) and not all(self.headers):
            # A worker's first logits come after its header; without one they miss the frame.
            raise ValueError("with a frame around the others' blocks every worker needs a header")
        shared = 1 + stepped + bool(others) + bool(own) + (count if pivot else 0)
        self.store = KVStore(network, shared + count, len(prompt_ids))
        blocks = iter(self.store.blocks)
        self.prompt = next(blocks)
        self.history = next(blocks) if stepped else None
        self._others = next(blocks) if others else None
        self._own = next(blocks) if own else None
        self._pivots = [next(blocks) if pivot else None for _ in self.headers]
        self.workers = list(blocks)
        framing = len(others) + len(own) + count * len(pivot)
        self._steps = _Steps(vocabulary, team, self.headers, stepped=stepped,
                             step_delimiter=step_delimiter, framing=framing)  # fmt: skip
        self.logits = np.zeros((count, network.n_vocab), dtype=np.float32)
        for start in range(0, len(prompt_ids), _PREFILL_CHUNK):
            chunk = prompt_ids[start : start + _PREFILL_CHUNK]
            self.logits[:] = self._prefill({self.prompt: chunk})
        frame = {self._others: others, self._own: own, **dict.fromkeys(self._pivots, pivot)}
        self._prefill({block: tokens for block, tokens in frame.items() if block is not None})
        self._feed({w: list(h) for w, h in enumerate(self.headers) if h})

    @property
    def header_tokens(self) -> int:
        """Header tokens fed so far: each worker's first header and the frame once, then
        (in the step layouts) a header per step, and the checks."""
        return self._steps.header_tokens

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
        return self.vocabulary.decode(tokens + self.workers[worker].tokens)

    def transcript(self) -> str:
        """What a reader of the whole cache sees after the prompt: the history, then
        every worker's current block in turn (each followed by the team's pivot, all
        after its ``others`` header in the layouts that show them) — what Hogwild!'s
        final-answer step reads."""
        others = self._others if self._framed else None
        blocks = [self.history, others]
        for block, pivot in zip(self.workers, self._pivots, strict=True):
            blocks += [block, pivot]
        return self.vocabulary.decode(
            [t for block in blocks if block is not None for t in block.tokens]
        )

    def advance(self, tokens: Mapping[int, int]) -> None:
        """Feed worker w the token ``tokens[w]`` (one forward pass for all of them); a
        worker whose step that token ends starts its next step with its header (in the
        step layouts), then the team's check when one is due."""
        steps = self._steps
        ended = [worker for worker, token in tokens.items() if steps.ends_step(worker, token)]
        self._feed({w: [t] for w, t in tokens.items()})
        steps.fed(len(tokens))
        for worker in ended:
            if self.history is not None:
                self._close_step(worker)
        self._feed({w: start for w in ended if (start := steps.next_start(w))})

    def spent(self, worker: int, written: int) -> int:
        """What ``worker`` has cost out of its token allowance, having written ``written``
        tokens: also what was fed into its block after its first header (step headers,
        checks), its share of the frame, and room for what may start its next step (the
        step its next token may end), so the allowance is never overshot."""
        return self._steps.spent(worker, written)

    def retire(self, worker: int) -> None:
        """The worker has ended. In the ``step`` layout its unfinished step joins the
        history (the others see nothing else); in ``combined`` it stays where it is,
        among the others' work in progress cut off by the pivot, as in Hogwild!'s
        reference (its workers' last steps never join the history), so the history
        holds only finished steps, each ending at the delimiter."""
        if self.layout == "step" and len(self.workers[worker]):
            self._close_step(worker)

    @torch.inference_mode()
    def _close_step(self, worker: int) -> None:
        self.history.append_moved(self.workers[worker])
        self.workers[worker].clear()
        self._steps.close(worker)

    @torch.inference_mode()
    def _prefill(self, pending: Mapping[Block, Sequence[int]]) -> np.ndarray:
        """One forward pass over each shared block's new tokens, each seeing only its own
        block (the prompt, a piece of the frame); the logits after the last row."""
        rows = Rows()
        for block, tokens in pending.items():
            for k, token in enumerate(tokens):
                rows.add(token, block, len(block) + k, [])
        if not rows.tokens:
            return np.empty((0, self.network.n_vocab), dtype=np.float32)
        return self.network.forward(self.store, rows, [len(rows.tokens) - 1])

    @torch.inference_mode()
    def _feed(self, pending: Mapping[int, list[int]]) -> None:
        """One forward pass over each worker's pending tokens, each row seeing its view
        with the other workers' pending tokens in it (``same-step`` visibility; not in
        ``next-step``); the logits after each worker's last one go to ``self.logits``."""
        if not pending:
            return
        same_step = self.visibility == "same-step"
        counts = {worker: len(tokens) for worker, tokens in pending.items()} if same_step else {}
        rows, outputs = Rows(), {}
        for worker, tokens in pending.items():
            own = self.workers[worker]
            placed, offset = [], 0
            for block, visible in self.view(worker, counts):
                placed.append((block, offset, visible))
                offset += visible
            if offset + len(own) + len(tokens) > self.network.n_ctx:
                raise ThinktankError(f"the workers' views outgrew {self.network.n_ctx} tokens")
            for k, token in enumerate(tokens):
                rows.add(token, own, len(own) + k, placed)
            outputs[worker] = len(rows.tokens) - 1
        self.logits[list(outputs)] = self.network.forward(self.store, rows, list(outputs.values()))


class _Steps:
    """Where each worker is in its steps: the text of its current one (to see the step
    delimiter), what starts its next one (its step header, the team's check when one
    is due), and what was fed into its block besides what it wrote."""

    def __init__(
        self,
        vocabulary: Vocabulary,
        team: TeamFormat,
        headers: list[list[int]],
        *,
        stepped: bool,
        step_delimiter: str | None,
        framing: int,
    ) -> None:
        self._vocabulary = vocabulary
        self._team = team
        self._headers = headers
        self._stepped = stepped
        count = len(headers)
        self._check = vocabulary.tokenize(team.check) if team.check_every else []
        delimiter = stepped or bool(self._check)  # steps matter to a history or a check
        self._delimiter = (step_delimiter or "").encode() if delimiter else b""
        self._step_text = [bytearray() for _ in headers]
        self._steps = [1] * count  # each worker's current step
        #: What starts each worker's next step (in the step layouts).
        self._next_headers = [self._step_header(w, 2) if stepped else [] for w in range(count)]
        self._since_check = 0  # tokens fed to the workers since the last check
        #: Header tokens fed so far (once per worker, with the frame; in the step layouts
        #: once per step; the checks), and per worker those fed after its first header.
        self.header_tokens = sum(map(len, headers)) + framing
        self.refed = [0] * count
        # The frame comes out of the workers' allowances, shared (see `spent`).
        self._frame_share = -(-framing // count)

    def ends_step(self, worker: int, token: int) -> bool:
        """Whether ``token``, written by ``worker``, ends its current step."""
        if not self._delimiter:
            return False
        self._step_text[worker] += self._vocabulary.piece(token)
        return self._delimiter in self._step_text[worker]

    def fed(self, count: int) -> None:
        """``count`` tokens were fed to the workers (towards the next check)."""
        self._since_check += count

    def close(self, worker: int) -> None:
        """The worker's step is over (it joined the history): its text starts afresh."""
        self._step_text[worker] = bytearray()

    def spent(self, worker: int, written: int) -> int:
        """See `SharedCacheSession.spent`."""
        return written + self.refed[worker] + self._frame_share + self._start_bound(worker)

    def next_start(self, worker: int) -> list[int]:
        """What starts ``worker``'s next step, counted as fed again."""
        self._step_text[worker] = bytearray()
        start = list(self._next_headers[worker])
        if self._stepped:
            self._steps[worker] += 1
            self._next_headers[worker] = self._step_header(worker, self._steps[worker] + 1)
        if self._check and self._since_check > self._team.check_every:
            start += self._check
            self._since_check = 0
        self._since_check += len(start)
        self.refed[worker] += len(start)
        self.header_tokens += len(start)
        return start

    def _step_header(self, worker: int, step: int) -> list[int]:
        if not self._team.step_headers:
            return self._headers[worker]
        text = self._team.step_headers[worker].replace("{step}", str(step))
        return self._vocabulary.tokenize(text)

    def _check_may_be_due(self) -> bool:
        """Whether a check may start a step within the next pass: its tokens, and every
        worker's next start with a check, could carry the count past ``check_every``."""
        if not self._check:
            return False
        longest = max(map(len, self._next_headers))
        ahead = len(self._headers) * (1 + longest + len(self._check))
        return self._since_check + ahead > self._team.check_every

    def _start_bound(self, worker: int) -> int:
        """The most that can start ``worker``'s next step."""
        check = len(self._check) if self._check_may_be_due() else 0
        return len(self._next_headers[worker]) + check
