"""Collaboration between several reasoners of one model: debate (ReConcile),
Mixture-of-Agents and Learning from Peers (LeaP) over any backend, and Hogwild!
workers sharing one KV cache over the torch backend.

Each round's calls are made at once (`Context.generate_each`), so the embedded
backend decodes every agent in one batch. Agents are samples of the context's
model (diversity from temperature and seed).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import ClassVar

from thinktank.aggregate import majority_vote
from thinktank.models.base import Completion, Model, Prompt, Sampling
from thinktank.problem import Problem
from thinktank.prompts import build_prompt, stop_strings
from thinktank.solution import Candidate, Partial, Solution
from thinktank.strategies.base import Context, Strategy
from thinktank.strategies.sampling import SamplingOptions, sample_completions
from thinktank.verify import declared_answer, extract_answer
from thinktank.verify.process import continue_partials

#: How much of another agent's reasoning a discussion shows (characters).
_SHOWN_CHARS = 400
_CONFIDENCE = re.compile(r"confidence\W{0,3}(\d+(?:\.\d+)?)\s*(%)?", re.IGNORECASE)


def stated_confidence(text: str) -> float | None:
    """The confidence an answer states ("Confidence: 0.8", "confidence 80%", "8/10"
    reads 0.8), in [0, 1]; None when it states none."""
    match = _CONFIDENCE.search(text)
    if not match:
        return None
    value = float(match.group(1))
    if match.group(2) or value > 10:
        value /= 100
    elif value > 1:
        value /= 10
    return min(max(value, 0.0), 1.0)


def confidence(candidate: Candidate) -> float:
    """What an agent's vote weighs: its stated confidence, else the model's own (the
    geometric-mean token probability of its answer)."""
    stated = stated_confidence(candidate.text)
    if stated is not None:
        return stated
    return math.exp(candidate.mean_logprob) if candidate.mean_logprob is not None else 0.5


def _agent(completion: Completion, kind: str, worker: str) -> Candidate:
    """An agent's answer; the confidence it states is not taken for the answer."""
    candidate = Candidate.from_completion(completion, kind, worker)
    stripped = _CONFIDENCE.sub("", candidate.text)
    return replace(candidate, answer=extract_answer(stripped, kind))


def _follow_up(problem: Problem, model: Model, reply: str, message: str) -> Prompt:
    """The problem's prompt, the agent's earlier reply, then a new user message."""
    prompt = build_prompt(problem, model)
    if isinstance(prompt, str):
        return f"{prompt}{reply}\n\nQuestion: {message}\nAnswer:"
    return [*prompt, {"role": "assistant", "content": reply},
            {"role": "user", "content": message}]  # fmt: skip


def _shown(candidate: Candidate) -> str:
    text = candidate.text.strip().replace("\n", " ")
    return text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + " ..."


@dataclass
class Debate(SamplingOptions, Strategy):
    """ReConcile-style round table (Chen et al., 2023): ``agents`` answer, then for up
    to ``rounds - 1`` more rounds each reads the others' answers, explanations and
    confidences and revises its own, until they agree. The final answer is the
    confidence-weighted vote of the last round (stated confidence, else the
    model's own token probability)."""

    name: ClassVar[str] = "debate"
    summary: ClassVar[str] = "agents revise their answers reading each other's; confidence vote"

    agents: int = 3
    rounds: int = 3

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.agents < 2 or self.rounds < 1:
            raise ValueError("debate needs agents >= 2 and rounds >= 1")

    _ASK = (
        "Other agents answered the same question:\n{others}\n\nConsider their reasoning and"
        " yours, then give your final answer as 'The answer is ...' and your confidence"
        " between 0 and 1 as 'Confidence: ...'."
    )

    def solve(self, problem: Problem, ctx: Context) -> Solution:
        kind, sampling = problem.kind, self.sampling(ctx.model, problem.kind)
        answers = [
            _agent(c, kind, f"agent-{i + 1}")
            for i, c in enumerate(sample_completions(problem, ctx, self.agents, sampling))
        ]
        trace = [self._record(answers, 1)]
        everyone: list[Candidate] = list(answers)
        stops = sampling.stop + stop_strings(problem, ctx.model)
        for round_number in range(2, self.rounds + 1):
            if len({a.answer for a in answers}) <= 1:
                break  # consensus
            prompts = [
                _follow_up(problem, ctx.model, own.text, self._ASK.format(others="\n".join(
                    f"- {other.worker} (confidence {confidence(other):.2f}): {_shown(other)}"
                    for other in answers if other is not own)))
                for own in answers
            ]  # fmt: skip
            replies = ctx.generate_each([(p, 1, sampling.with_(stop=stops)) for p in prompts])
            answers = [
                _agent(reply[0], kind, own.worker) if reply else own
                for own, reply in zip(answers, replies, strict=True)
            ]  # an agent the budget silenced keeps its answer
            everyone.extend(answers)
            trace.append(self._record(answers, round_number))
        vote = majority_vote([a.answer for a in answers], kind, [confidence(a) for a in answers])
        return Solution(answer=vote.winner, candidates=everyone, votes=vote.counts, trace=trace)

    @staticmethod
    def _record(answers: list[Candidate], round_number: int) -> dict:
        return {"round": round_number, "answers": [a.answer for a in answers],
                "confidences": [round(confidence(a), 3) for a in answers]}  # fmt: skip


@dataclass
class MixtureOfAgents(SamplingOptions, Strategy):
    """Mixture-of-Agents (Wang et al., 2024): ``proposers`` answer; in each of the
    next ``layers - 1`` layers every proposer answers again with the previous
    layer's answers as references; an aggregator (greedy) synthesizes the last
    layer's answers into the final one."""

    name: ClassVar[str] = "mixture-of-agents"
    summary: ClassVar[str] = "layers of proposers reading the layer before; an aggregator answers"

    proposers: int = 3
    layers: int = 2

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.proposers < 1 or self.layers < 1:
            raise ValueError("proposers and layers must be >= 1")

    _SYNTHESIZE = (
        "Here are responses from other assistants to this question. Some may be wrong:"
        " evaluate them critically and write one correct answer, ending with"
        " 'The answer is ...'.\n\n{references}\n\nQuestion: {question}"
    )

    def solve(self, problem: Problem, ctx: Context) -> Solution:
        kind, sampling = problem.kind, self.sampling(ctx.model, problem.kind)
        layer = [
            Candidate.from_completion(c, kind, worker="layer-1")
            for c in sample_completions(problem, ctx, self.proposers, sampling)
        ]
        everyone = list(layer)
        trace = [{"layer": 1, "answers": [c.answer for c in layer]}]
        for number in range(2, self.layers + 1):
            if not layer:
                break  # the budget is spent
            prompt = self._references_prompt(problem, ctx.model, layer)
            completions = sample_completions(problem, ctx, self.proposers, sampling,
                                             prompt=prompt)  # fmt: skip
            layer = [Candidate.from_completion(c, kind, f"layer-{number}") for c in completions]
            everyone.extend(layer)
            trace.append({"layer": number, "answers": [c.answer for c in layer]})
        if not layer:
            return Solution(answer=None, candidates=everyone, trace=trace)
        aggregated = sample_completions(
            problem, ctx, 1, sampling.with_(temperature=0.0),
            prompt=self._references_prompt(problem, ctx.model, layer),
        )  # fmt: skip
        final = [Candidate.from_completion(c, kind, "aggregator") for c in aggregated]
        everyone.extend(final)
        if final and final[0].answer is not None:
            answer = final[0].answer
        else:  # no aggregate (budget) or no answer in it: the last layer's vote
            answer = majority_vote([c.answer for c in layer], kind).winner
        trace.append({"aggregator": final[0].answer if final else None})
        return Solution(answer=answer, candidates=everyone, trace=trace)

    def _references_prompt(self, problem: Problem, model: Model, layer: list[Candidate]) -> Prompt:
        references = "\n".join(f"Response {i + 1}: {_shown(c)}" for i, c in enumerate(layer))
        message = self._SYNTHESIZE.format(references=references, question=problem.prompt)
        if not model.capabilities.chat:
            return f"{message}\nAnswer:"
        system = build_prompt(problem, model)[0]
        return [system, {"role": "user", "content": message}]


@dataclass
class LearningFromPeers(SamplingOptions, Strategy):
    """Learning from Peers (LeaP, Luo et al., 2025): ``paths`` reason in parallel;
    every ``interval`` tokens each writes a short summary of its progress
    (``summary_tokens``) and the others' summaries are put into its reasoning,
    so a path that began badly can take a peer's better start. Majority vote
    over the paths' answers."""

    name: ClassVar[str] = "leap"
    summary: ClassVar[str] = "parallel paths that swap progress summaries every T tokens"

    paths: int = 4
    interval: int = 64
    summary_tokens: int = 32

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.paths < 2 or self.interval < 1 or self.summary_tokens < 1:
            raise ValueError("leap needs paths >= 2, interval >= 1 and summary_tokens >= 1")

    _SUMMARIZE = "\n\nIn one sentence, my progress so far:"
    _PEERS = "\n\n(Peers' progress: {summaries})\n\n"

    def solve(self, problem: Problem, ctx: Context) -> Solution:
        sampling = self.sampling(ctx.model, problem.kind)
        sampling = sampling.with_(stop=stop_strings(problem, ctx.model))
        paths = [Partial()] * self.paths  # the same object: the first chunk is one call
        written = [0] * self.paths  # completion tokens each path wrote
        exchanges = 0
        while True:
            open_ = [i for i, p in enumerate(paths) if not p.finished]
            if not open_:
                break
            chunks = self._continue(problem, ctx, paths, open_, sampling)
            if not any(chunks.values()):
                break  # the budget is spent
            for i, completion in chunks.items():
                if completion is None:  # the budget stopped it: what it wrote is its answer
                    paths[i] = replace(paths[i], finished=True)
                    continue
                written[i] += completion.completion_tokens
                finished = completion.finish_reason != "length" or written[i] >= sampling.max_tokens
                paths[i] = paths[i].extend(completion.text, finished=finished,
                                           tokens=completion.completion_tokens,
                                           logprob=sum(completion.logprobs or ()))  # fmt: skip
            open_ = [i for i, p in enumerate(paths) if not p.finished]
            if len(open_) < 2:
                continue  # nobody to learn from: the last path goes on alone
            summaries = self._summaries(problem, ctx, [paths[i] for i in open_])
            for i in open_:
                others = "; ".join(s for j, s in zip(open_, summaries, strict=True) if j != i and s)
                if others:
                    paths[i] = paths[i].extend(self._PEERS.format(summaries=others),
                                               finished=False, tokens=0, logprob=0.0)  # fmt: skip
            exchanges += 1
        candidates = [self._path(p, problem) for p in paths if p.steps]
        vote = majority_vote([c.answer for c in candidates], problem.kind)
        trace = [{"exchanges": exchanges, "tokens": written}]
        return Solution(answer=vote.winner, candidates=candidates, votes=vote.counts, trace=trace)

    def _path(self, path: Partial, problem: Problem) -> Candidate:
        """A finished path; its answer is its own, not one quoted from its peers."""
        candidate = Candidate.from_partial(path, problem.kind)
        peers = self._PEERS.partition("{")[0]
        own = "".join(step for step in path.steps if not step.startswith(peers))
        return replace(candidate, answer=extract_answer(own, problem.kind))

    def _continue(
        self,
        problem: Problem,
        ctx: Context,
        paths: list[Partial],
        open_: list[int],
        sampling: Sampling,
    ) -> dict[int, Completion | None]:
        """The next chunk of every open path (identical paths share one call)."""
        groups: dict[int, list[int]] = {}
        for i in open_:
            groups.setdefault(id(paths[i]), []).append(i)
        members = list(groups.values())
        results = continue_partials(
            problem, ctx, [paths[g[0]] for g in members], [len(g) for g in members], sampling,
            step_tokens=self.interval,
        )  # fmt: skip
        out: dict[int, Completion | None] = {}
        for group, completions in zip(members, results, strict=True):
            for k, i in enumerate(group):
                out[i] = completions[k] if k < len(completions) else None
        return out

    def _summaries(self, problem: Problem, ctx: Context, paths: list[Partial]) -> list[str]:
        """One short greedy summary per path, written after its reasoning so far."""
        greedy = self.sampling(ctx.model, problem.kind).with_(
            temperature=0.0, max_tokens=self.summary_tokens
        )
        summaries = [Partial((p.text + self._SUMMARIZE,)) for p in paths]
        results = continue_partials(problem, ctx, summaries, [1] * len(paths), greedy)
        # Its first line that says something (a model often starts with a line break).
        return [next(iter(r[0].text.strip().splitlines()), "") if r else "" for r in results]


#: Workers' names, as in the Hogwild! paper's prompts (Alice and Bob, then more).
WORKER_NAMES = ("Alice", "Bob", "Carol", "Dave", "Eve", "Frank", "Grace", "Heidi")
_STEP_DELIMITERS = {"line": "\n", "sentence": ". "}


@dataclass
class Hogwild(SamplingOptions, Strategy):
    """Hogwild! Inference (Rodionov et al., 2025): ``workers`` instances of the model
    write at the same time into one shared KV cache, one batched forward pass per
    step, each seeing the prompt, then the others' text, then its own — a token
    one writes is visible to all at the next step. A prompt tells them they are
    a team that can read each other. ``layout``: ``token`` (every token visible at
    once: Hogwild!'s contiguous layout, Group Think's token-level view), ``step``
    (a worker's line or sentence joins a shared history when it ends),
    ``combined``, or ``independent`` (the control: the same prompt and names, but
    nobody sees anybody). With ``until=first`` the session ends when a worker declares
    the answer ("The answer is ..."); ``all`` lets every worker finish. The answer
    is the declared one (a vote among declarers), else the workers' vote. With
    ``cut_impersonation`` a worker that starts a line under a team member's name
    ("\nBob:", its own included) ends there: small models otherwise go on writing
    the others' turns (measured: RESULTS.md). Needs a backend with a shared KV
    cache (``--model torch:smollm2``)."""

    name: ClassVar[str] = "hogwild"
    summary: ClassVar[str] = "workers write at once into one shared KV cache, seeing each other"

    workers: int = 2
    layout: str = "token"
    step: str = "line"
    until: str = "first"
    cut_impersonation: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 1 <= self.workers <= len(WORKER_NAMES):
            raise ValueError(f"workers must be in 1..{len(WORKER_NAMES)}")
        if self.layout not in ("token", "step", "combined", "independent"):
            raise ValueError("layout must be token, step, combined or independent")
        if self.step not in _STEP_DELIMITERS:
            raise ValueError(f"step must be one of {', '.join(_STEP_DELIMITERS)}")
        if self.until not in ("first", "all"):
            raise ValueError("until must be first or all")

    _TEAM = (
        "You are {names}: {count} assistants solving the same problem at the same time."
        " Each of you writes after your own name and sees what the others have written"
        " so far, as they write it. Share the work, check each other's steps, and do not"
        " repeat what another has done."
    )

    def solve(self, problem: Problem, ctx: Context) -> Solution:
        names = WORKER_NAMES[: self.workers]
        kind = problem.kind

        def someone_declared(texts: Sequence[str]) -> bool:
            return any(declared_answer(t, kind) for t in texts)

        stops = stop_strings(problem, ctx.model)
        if self.cut_impersonation:
            stops += tuple(f"\n{name}:" for name in names)
        completions = ctx.generate_together(
            self._prompt(problem, ctx.model, names),
            [f"\n{name}: " for name in names],
            self.sampling(ctx.model, kind).with_(stop=stops),
            layout=self.layout,
            step_delimiter=_STEP_DELIMITERS[self.step],
            until=someone_declared if self.until == "first" else None,
        )
        candidates = [
            Candidate.from_completion(c, kind, name)
            for c, name in zip(completions, names, strict=False)
        ]
        declared = [declared_answer(c.text, kind) for c in candidates]
        declarers = [a for a in declared if a is not None]
        vote = majority_vote(declarers or [c.answer for c in candidates], kind)
        trace = [{
            "layout": self.layout,
            "declared": {c.worker: a for c, a in zip(candidates, declared, strict=True) if a},
            "tokens": {c.worker: c.completion_tokens for c in candidates},
        }]  # fmt: skip
        return Solution(answer=vote.winner, candidates=candidates, votes=vote.counts, trace=trace)

    def _prompt(self, problem: Problem, model: Model, names: Sequence[str]) -> Prompt:
        team = self._TEAM.format(names=", ".join(names), count=len(names))
        prompt = build_prompt(problem, model)
        if isinstance(prompt, str):
            return f"{team}\n\n{prompt}"
        system = next((m["content"] + " " for m in prompt if m["role"] == "system"), "")
        return [{"role": "system", "content": system + team},
                *(m for m in prompt if m["role"] != "system")]  # fmt: skip
