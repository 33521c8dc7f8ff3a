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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import ClassVar

from thinktank.aggregate import Vote, majority_vote
from thinktank.errors import BudgetExhausted
from thinktank.models.base import Completion, Model, Prompt, Sampling, TeamFormat
from thinktank.problem import Kind, Problem
from thinktank.prompts import build_prompt, stop_strings
from thinktank.solution import Candidate, Partial, Solution
from thinktank.spec import option
from thinktank.strategies.base import Context, Strategy
from thinktank.strategies.sampling import SamplingOptions, sample_completions
from thinktank.verify import answer_key, declared_answer, extract_answer
from thinktank.verify.process import continue_partials

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


def reconcile_weight(stated: float) -> float:
    """ReConcile's recalibration of a stated confidence into a vote weight (Chen et al.,
    2023, phase 3, and its code): LLMs overstate their confidence, so the top of
    the scale is stretched and everything at or below 0.6 weighs 0.1."""
    if stated >= 1.0:
        return 1.0
    if stated >= 0.9:
        return 0.8
    if stated >= 0.8:
        return 0.5
    if stated > 0.6:
        return 0.3
    return 0.1


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


def _asking(problem: Problem, message: str) -> Problem:
    """The problem with ``message`` after its question."""
    return replace(problem, prompt=f"{problem.prompt}\n\n{message}")


def _solution(agent: Candidate) -> str:
    """An agent's solution as a discussion shows it: its stated confidence and its whole
    reply (its answer is at the end, where a cut to the first characters loses it)."""
    stated = stated_confidence(agent.text)
    said = "confidence not stated" if stated is None else f"confidence {stated:.2f}"
    return f"({said}): {agent.text.strip()}"


def answer_groups(agents: Sequence[Candidate], kind: Kind) -> list[list[Candidate]]:
    """The agents grouped by equivalent answer (those with none form one group), the
    largest group first; ties keep the agents' order."""
    groups: dict[str | None, list[Candidate]] = {}
    for agent in agents:
        key = None if agent.answer is None else answer_key(agent.answer, kind)
        groups.setdefault(key, []).append(agent)
    return sorted(groups.values(), key=len, reverse=True)  # stable, reversed or not


DEBATE_DISCUSSIONS = ("grouped", "follow-up")
DEBATE_VOTES = ("recalibrated", "confidence", "majority")


@dataclass
class Debate(SamplingOptions, Strategy):
    """ReConcile's round table (Chen et al., 2023) over samples of one model:
    ``agents`` answer, each stating its confidence (phase 1); then for up to
    ``rounds - 1`` more rounds, while they disagree, every agent answers again
    after the discussion prompt (phase 2; the reference code's default is two
    discussion rounds, ``rounds=3`` here); the final answer is the last round's
    weighted vote (phase 3).

    ``discussion=grouped`` is ReConcile's discussion prompt, the same for every
    agent: the question, then the last round's answers grouped ("2 agents think
    the answer is 12"), each with the whole solution and the confidence its
    agent stated. ``follow-up`` is thinktank's earlier framing, close to Du et
    al.'s multi-agent debate: each agent's own conversation goes on, its reply
    followed by the other agents' answers and whole solutions.

    ``vote``: ``recalibrated`` (ReConcile's: each agent's stated confidence through
    `reconcile_weight`; none stated counts as 0, as in the reference code),
    ``confidence`` (the stated confidence as it is, else the model's own token
    probability: thinktank's earlier rule) or ``majority`` (one vote each, as
    in Du et al.).

    Deliberate differences from the paper: the agents are samples of the
    context's model, not three different LLMs; no "convincing samples" (human
    explanations that once corrected an agent: they need labelled training
    questions); free text ("The answer is ...", "Confidence: ...") instead of
    JSON; every answer group is shown, where the reference code shows the two
    largest.
    """

    name: ClassVar[str] = "debate"
    summary: ClassVar[str] = "agents revise their answers reading each other's; confidence vote"
    example: ClassVar[str] = "debate:agents=3,rounds=2,vote=majority"

    agents: int = option(3, "agents (samples of the model) at the table, 2 or more")
    rounds: int = option(3, "rounds at most, the first answers included")
    discussion: str = option("grouped", "discussion prompt: grouped (ReConcile's) or follow-up")
    vote: str = option("recalibrated", "final vote: recalibrated, confidence or majority")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.agents < 2 or self.rounds < 1:
            raise ValueError("debate needs agents >= 2 and rounds >= 1")
        if self.discussion not in DEBATE_DISCUSSIONS:
            raise ValueError(f"discussion must be one of {', '.join(DEBATE_DISCUSSIONS)}")
        if self.vote not in DEBATE_VOTES:
            raise ValueError(f"vote must be one of {', '.join(DEBATE_VOTES)}")

    # ReConcile's phase-1 request; SmolLM2 answered 6 + 7 and the like 10 times of 24 with
    # it, 4 with a bare "Also rate your confidence", 13 with no request at all.
    _OPENING = (
        "Please answer with step-by-step reasoning. Also evaluate your confidence (between"
        " 0.0 and 1.0) that your answer is right, as 'Confidence: ...'."
    )
    _DISCUSS = (
        "Carefully review the following solutions from other agents as additional"
        " information, then give your own step-by-step reasoning and answer. Say clearly"
        " which points of view you agree or disagree with, and why.\n\n{groups}\n\nEnd"
        " with your answer as 'The answer is ...' and your confidence that it is right,"
        " between 0.0 and 1.0, as 'Confidence: ...'."
    )
    _FOLLOW_UP = (
        "Other agents answered the same question:\n{others}\n\nConsider their reasoning and"
        " yours, then give your final answer as 'The answer is ...' and your confidence"
        " between 0 and 1 as 'Confidence: ...'."
    )

    def solve(self, problem: Problem, ctx: Context) -> Solution:
        kind, sampling = problem.kind, self.sampling(ctx.model, problem.kind)
        opening = build_prompt(_asking(problem, self._OPENING), ctx.model)
        answers = [
            _agent(c, kind, f"agent-{i + 1}")
            for i, c in enumerate(
                sample_completions(problem, ctx, self.agents, sampling, prompt=opening)
            )
        ]
        trace = [self._record(answers, 1)]
        vote = self._vote(ctx, answers, kind)
        everyone: list[Candidate] = list(answers)
        for round_number in range(2, self.rounds + 1):
            if len(answer_groups(answers, kind)) <= 1:
                break  # consensus
            replies = self._discuss(problem, ctx, answers, sampling)
            answers = [
                _agent(reply[0], kind, own.worker) if reply else own
                for own, reply in zip(answers, replies, strict=True)
            ]  # an agent the budget silenced keeps its answer
            everyone.extend(answers)
            trace.append(self._record(answers, round_number))
            vote = self._vote(ctx, answers, kind)
        return Solution(answer=vote.winner, candidates=everyone, votes=vote.counts, trace=trace)

    def _vote(self, ctx: Context, answers: Sequence[Candidate], kind: Kind) -> Vote:
        """The round's weighted vote (the last round's answers), reported as it stands."""
        vote = majority_vote([a.answer for a in answers], kind, [self.weight(a) for a in answers])
        ctx.report_vote(vote)
        return vote

    def weight(self, agent: Candidate) -> float:
        """What ``agent``'s final vote weighs (see ``vote``)."""
        if self.vote == "majority":
            return 1.0
        if self.vote == "confidence":
            return confidence(agent)
        stated = stated_confidence(agent.text)
        return reconcile_weight(0.0 if stated is None else stated)

    def discussion_prompts(
        self, problem: Problem, model: Model, answers: Sequence[Candidate]
    ) -> list[Prompt]:
        """Each agent's prompt for the next round, after the last round's ``answers``."""
        if self.discussion == "follow-up":
            return [
                _follow_up(problem, model, own.text, self._FOLLOW_UP.format(others="\n".join(
                    f"- {other.worker}, answer {other.answer} {_solution(other)}"
                    for other in answers if other is not own)))
                for own in answers
            ]  # fmt: skip
        groups = "\n\n".join(map(self._group, answer_groups(answers, problem.kind)))
        shared = build_prompt(_asking(problem, self._DISCUSS.format(groups=groups)), model)
        return [shared] * len(answers)

    def _discuss(
        self, problem: Problem, ctx: Context, answers: list[Candidate], sampling: Sampling
    ) -> list[list[Completion]]:
        """Every agent's reply to its discussion prompt ([] where the budget refused)."""
        prompts = self.discussion_prompts(problem, ctx.model, answers)
        if self.discussion == "grouped":  # one prompt for all: one batched call
            replies = sample_completions(problem, ctx, len(answers), sampling, prompt=prompts[0])
            return [[c] for c in replies] + [[]] * (len(answers) - len(replies))
        stops = sampling.stop + stop_strings(problem, ctx.model)
        return ctx.generate_each([(p, 1, sampling.with_(stop=stops)) for p in prompts])

    @staticmethod
    def _group(group: list[Candidate]) -> str:
        """One answer group of ReConcile's discussion prompt."""
        count, answer = len(group), group[0].answer
        who = "1 agent" if count == 1 else f"{count} agents"
        if answer is None:
            head = f"{who} gave no clear answer."
        else:
            head = f"{who} {'thinks' if count == 1 else 'think'} the answer is {answer}."
        return head + "".join(f"\nOne agent solution {_solution(agent)}" for agent in group)

    def _record(self, answers: list[Candidate], round_number: int) -> dict:
        # "agents": whose answer each is; the round's candidates follow the last round's.
        return {"round": round_number, "agents": [a.worker for a in answers],
                "answers": [a.answer for a in answers],
                "confidences": [stated_confidence(a.text) for a in answers],
                "weights": [round(self.weight(a), 3) for a in answers]}  # fmt: skip


@dataclass
class MixtureOfAgents(SamplingOptions, Strategy):
    """Mixture-of-Agents (Wang et al., 2024): ``proposers`` answer; in each
    of the next ``layers - 1`` layers every proposer answers again with the
    previous layer's whole responses as references; an aggregator synthesizes
    the last layer's responses into the final answer. As in the paper's
    Aggregate-and-Synthesize prompt, the references follow the system prompt,
    numbered, and the question stays the user's message.

    Deliberate differences: the proposers are samples of the context's model,
    not different LLMs; the aggregator answers greedily (one deterministic
    synthesis); when it gives no answer, the last layer's majority does."""

    name: ClassVar[str] = "mixture-of-agents"
    summary: ClassVar[str] = "layers of proposers reading the layer before; an aggregator answers"
    example: ClassVar[str] = "mixture-of-agents:proposers=3,layers=2"

    proposers: int = option(3, "proposers in each layer")
    layers: int = option(2, "layers of proposers before the aggregator")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.proposers < 1 or self.layers < 1:
            raise ValueError("proposers and layers must be >= 1")

    _SYNTHESIZE = (
        "You have been given responses from other assistants to the latest question."
        " Synthesize them into one correct, high-quality answer. Evaluate them critically:"
        " some may be biased or wrong. Do not simply copy them.\n\nResponses:"
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
            prompt = self.references_prompt(problem, ctx.model, layer)
            completions = sample_completions(problem, ctx, self.proposers, sampling,
                                             prompt=prompt)  # fmt: skip
            layer = [Candidate.from_completion(c, kind, f"layer-{number}") for c in completions]
            everyone.extend(layer)
            trace.append({"layer": number, "answers": [c.answer for c in layer]})
        if not layer:
            return Solution(answer=None, candidates=everyone, trace=trace)
        aggregated = sample_completions(
            problem, ctx.at_stage("aggregate"), 1, sampling.with_(temperature=0.0),
            prompt=self.references_prompt(problem, ctx.model, layer),
        )  # fmt: skip
        final = [Candidate.from_completion(c, kind, "aggregator") for c in aggregated]
        everyone.extend(final)
        if final and final[0].answer is not None:
            answer = final[0].answer
        else:  # no aggregate (budget) or no answer in it: the last layer's vote
            answer = majority_vote([c.answer for c in layer], kind).winner
        trace.append({"aggregator": final[0].answer if final else None})
        return Solution(answer=answer, candidates=everyone, trace=trace)

    def references_prompt(
        self, problem: Problem, model: Model, layer: Sequence[Candidate]
    ) -> Prompt:
        """The problem's prompt with ``layer``'s whole responses as references."""
        references = "".join(f"\n{i + 1}. {c.text.strip()}" for i, c in enumerate(layer))
        injected = self._SYNTHESIZE + references
        prompt = build_prompt(problem, model)
        if isinstance(prompt, str):
            return f"{injected}\n\n{prompt}"
        if prompt[0]["role"] == "system":
            return [{"role": "system", "content": f"{prompt[0]['content']}\n\n{injected}"},
                    *prompt[1:]]  # fmt: skip
        return [{"role": "system", "content": injected}, *prompt]


@dataclass
class LearningFromPeers(SamplingOptions, Strategy):
    """Learning from Peers (LeaP, Luo et al., 2025): ``paths`` reason in parallel;
    every ``interval`` tokens each writes a short summary of its progress
    (``summary_tokens``) and the others' summaries are put into its reasoning,
    so a path that began badly can take a peer's better start. Majority vote
    over the paths' answers."""

    name: ClassVar[str] = "leap"
    summary: ClassVar[str] = "parallel paths that swap progress summaries every T tokens"
    example: ClassVar[str] = "leap:paths=4,interval=64"

    paths: int = option(4, "reasoning paths in parallel, 2 or more")
    interval: int = option(64, "tokens between summary exchanges")
    summary_tokens: int = option(32, "tokens a progress summary may take")

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
        ctx.report_vote(vote)
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
        results = continue_partials(
            problem, ctx.at_stage("summary"), summaries, [1] * len(paths), greedy
        )
        # Its first line that says something (a model often starts with a line break).
        return [next(iter(r[0].text.strip().splitlines()), "") if r else "" for r in results]


#: Workers' names, as in the Hogwild! paper's prompts (Alice and Bob, then more).
WORKER_NAMES = ("Alice", "Bob", "Carol", "Dave", "Eve", "Frank", "Grace", "Heidi")
_STEP_DELIMITERS = {"paragraph": "\n\n", "line": "\n", "sentence": ". "}
#: Hogwild!'s cache format, as its reference implementation writes it: each step
#: under "**Name [step]:** ", the others' unfinished steps between these headers,
#: each cut off by the pivot, and the periodic check that starts a step.
_OTHERS = "\n\n### Work in progress (others)\n\n"
_PIVOT = "<...>\n\n"
_OWN = "### Work in progress (own)\n\n"
_CHECK = "Quick check: am I doing redundant work? (yes/no): "
#: Its final-answer step (s1-style): appended to everything written, then answered.
_FINISH = (
    "\n\nWait, given the limited time, I have to give an answer right now. Considering all"
    " my previous attempts, I have to conclude that the final answer is"
)


def written_steps(
    transcript: str, step_header: re.Pattern[str], written: Mapping[str, str]
) -> list[dict[str, str]]:
    """The workers' steps in the order they were written into the shared cache, as
    ``{"worker", "text"}``: a Hogwild! transcript holds the history of finished steps
    in the order they ended, then each worker's step in progress. ``step_header``
    starts a step and captures the worker's name; the text is what follows it, up to
    the next step, without the frame around the others' steps. A worker's last step
    ends as its completion (``written[worker]``) does: the cache lacks the last token
    it wrote (never fed) and may hold what a stop string cut off."""
    marks = list(step_header.finditer(transcript))
    ends = [mark.start() for mark in marks[1:]] + [len(transcript)]
    steps = []
    for mark, end in zip(marks, ends, strict=False):  # no marks: no steps
        text = transcript[mark.end() : end]
        text = text.removesuffix(_PIVOT).removesuffix(_OTHERS)
        steps.append({"worker": mark.group(1), "text": text})
    last = {step["worker"]: step for step in steps}
    for worker, step in last.items():
        cached = "".join(s["text"] for s in steps if s["worker"] == worker)
        step["text"] = _ending_as(cached, step["text"], written.get(worker, ""))
    return steps


#: How far a worker's last step in the cache and its completion may differ at the end:
#: what a stop string cut off (fed, not in the completion), the last token (not fed).
_CUT_CHARS, _UNFED_CHARS = 32, 48


def _ending_as(cached: str, last: str, completion: str) -> str:
    """A worker's ``last`` step, its end trimmed and extended to the end of its
    ``completion``: the cut (from ``last``) and the addition, each short, that leave
    the longest common ending of everything it had in the cache (``cached``, ``last``
    at its end) and ``completion`` (unchanged where none is long enough to trust)."""
    best = (0, 0, 0)  # common ending, chars cut from last, chars added from completion
    for cut in range(min(len(last), _CUT_CHARS) + 1):
        kept = cached[: len(cached) - cut]
        for added in range(min(len(completion), _UNFED_CHARS) + 1):
            common = _common_ending(kept, completion[: len(completion) - added])
            if common > best[0]:
                best = (common, cut, added)
    common, cut, added = best
    if not common or common < min(8, len(completion)):
        return last
    return last[: len(last) - cut] + completion[len(completion) - added :]


def _common_ending(a: str, b: str) -> int:
    """How many characters ``a`` and ``b`` end with in common."""
    n = 0
    while n < min(len(a), len(b)) and a[-1 - n] == b[-1 - n]:
        n += 1
    return n


def _together(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def collaboration_rules(names: Sequence[str]) -> str:
    """Hogwild!'s collaboration prompt for a team of ``names`` (its rules, in the
    second person, restated): they write at once, see each other's finished and
    unfinished steps in the shared cache, split the work, stop work another is
    doing, and any of them may give the final answer."""
    team, others = _together(names), len(names) - 1
    peers = "another assistant" if others == 1 else f"{others} other assistants"
    return f"""# Collaborative Reasoning

You will solve this problem together with {peers}, all of you writing your thoughts at the \
same time and collaborating without doing the same work twice. You can split the problem \
into parts, double-check each other's results, try different approaches, or work together \
in any other way.

There are {len(names)} assistants, yourself included: {team}.

You will see each other's past and current thoughts as they are written. Finished steps \
appear as **Name [step]:** followed by the step. After '{_OTHERS.strip()}' you will see \
the other assistants' unfinished steps, which they go on writing while you write yours; \
each ends, for now, at {_PIVOT.strip()} . After '{_OWN.strip()}' comes your own current \
step. Take into account what the others are doing, and answer their suggestions.

Use their partial thoughts to decide how best to help without repeating their work. \
Check regularly what the others are doing and adjust. If what you are doing is what \
another assistant has done or is doing, stop (e.g. {names[0]} may write 'Wait, \
{names[-1]} is already doing this ...') and change to a different task right away.

When the problem is solved, any one of you can give the final answer, after which it can \
no longer be changed.

# Solve the following problem

{team}, you will now solve the next problem together. Keep track of who does what and \
communicate so that no work is done twice."""


@dataclass
class Hogwild(SamplingOptions, Strategy):
    """Hogwild! Inference (Rodionov et al., 2025, as its reference implementation
    ``eqimp/hogwild_llm`` runs it): ``workers`` instances of the model write
    at the same time into one shared KV cache, one batched forward pass per step.
    A token one writes is visible to the others in that same step (every worker's
    new cells are written before anyone attends). Options and defaults:

    - ``layout``: ``combined`` (default, the paper's main results: the history of
      finished steps, then "### Work in progress (others)" with each other's
      unfinished step cut off by "<...>", then "### Work in progress (own)" and
      one's own step), ``token`` (contiguous: each worker's whole text, with the
      same headers around the others'), ``step`` (interleaved: the history and
      one's own step), or ``independent`` (the control: the same prompt and
      format, nobody sees anybody).
    - ``step``: what ends a step, ``paragraph`` (default, "\\n\\n"), ``line`` or
      ``sentence``. The first step starts with the paper's openers ("**Alice [1]:**
      Hi, I'm Alice. Here's how we can", "**Bob [1]:** Hi, I'm Bob."), and in the
      layouts with a history each later one with "**Alice [k]:** ".
    - ``check_every`` (default 256, the reference code's; the paper's figure is not
      stated where we could read it): once more than that many tokens were fed to
      the workers together since the last check (headers included, as the
      reference counts), the next step to start begins "Quick check: am I doing
      redundant work? (yes/no): "; 0 never.
    - ``final_tokens`` (default 16, as in the reference): when the session ends
      and nobody has declared an answer, everything written (the history, then
      each worker's unfinished step) is read once more with "... I have to
      conclude that the final answer is" appended, answered greedily in that
      many tokens; 0 skips it.
    - ``until``: ``first`` (default) ends the session when a worker declares the
      answer ("The answer is ..."); ``all`` lets every worker finish.
    - ``cut_impersonation`` (default on): a worker that starts a teammate's step
      ("**Bob [", its own name included) or a section header ends there: small
      models otherwise write the others' turns (measured: RESULTS.md).
    - ``prompt``: ``paper`` (default: the collaboration prompt,
      `collaboration_rules`, before the problem in the user message, as the
      reference sends it) or ``team`` (this strategy's earlier format: a short
      team system prompt, "\\nAlice: " headers, no section headers).
    - ``visibility``: ``same-step`` (default, the reference engine's: a token
      reaches the others in the forward pass it is fed, so the first headers, fed
      together, see each other) or ``next-step`` (thinktank's before issue 18: one
      pass later, so a worker's first token follows only the prompt and its own
      header). With the team format this matters: same-step, each worker starts
      after the others' empty "\\nBob: " lines, and SmolLM2-135M then writes
      blank lines and names ("\\nEmily:") instead of working.

    The earlier algorithm as a whole is ``prompt=team,layout=token,step=line,
    check_every=0,final_tokens=0,visibility=next-step``. The answer is the declared
    one (a vote among declarers), else the final-answer step's, else the workers'
    vote.

    Deliberate differences: the prompt's rules are restated, and its few-shot
    examples and list of collaboration tips are left out (thousands of tokens, more
    than a small model's useful context); the problem's own system instruction
    stays; answers are declared as thinktank asks ("The answer is ...") rather than
    in \\boxed{}; a worker may end its turn (the reference bans the end-of-turn
    token); a step ends at its delimiter (the reference also asks the paragraph to
    end a sentence); with more than two workers (the reference code has two) each
    other's step is cut off by "<...>". Needs a backend with a shared KV cache
    (``--model torch:smollm2``)."""

    needs: ClassVar[frozenset[str]] = frozenset({"shared_cache"})
    name: ClassVar[str] = "hogwild"
    summary: ClassVar[str] = "workers write at once into one shared KV cache, seeing each other"
    example: ClassVar[str] = "hogwild:workers=2,until=all"

    workers: int = option(2, "workers writing into the shared KV cache, up to 8")
    layout: str = option("combined", "what a worker sees: combined, token, step or independent")
    step: str = option("paragraph", "what ends a step: paragraph, line or sentence")
    until: str = option("first", "first (end at the first declared answer) or all")
    cut_impersonation: bool = option(True, "end a worker's step where it starts a teammate's")
    prompt: str = option("paper", "paper (the collaboration prompt) or team (the earlier format)")
    check_every: int = option(256, 'tokens between "am I doing redundant work?" checks, 0 never')
    final_tokens: int = option(16, "tokens of a final answer when none was declared, 0 none")
    visibility: str = option("same-step", "when the others see a token: same-step or next-step")

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
        if self.prompt not in ("paper", "team"):
            raise ValueError("prompt must be paper or team")
        if self.check_every < 0 or self.final_tokens < 0:
            raise ValueError("check_every and final_tokens must be >= 0")
        if self.visibility not in ("same-step", "next-step"):
            raise ValueError("visibility must be same-step or next-step")

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
            if self.prompt == "paper":
                stops += (*(f"**{name} [" for name in names), "### Work in progress")
            else:
                stops += tuple(f"\n{name}:" for name in names)
        prompt = self._prompt(problem, ctx.model, names)
        transcript: list[str] = []
        try:
            completions = ctx.generate_together(
                prompt,
                self._headers(names),
                self.sampling(ctx.model, kind).with_(stop=stops),
                layout=self.layout,
                step_delimiter=_STEP_DELIMITERS[self.step],
                team=self._format(names),
                visibility=self.visibility,
                until=someone_declared if self.until == "first" else None,
                transcript=transcript.append,
            )
        except BudgetExhausted:  # not even the prompt and one worker fit
            trace = {"layout": self.layout, "declared": {}, "tokens": {}}
            return Solution(answer=None, candidates=[], trace=[trace])
        candidates = [
            Candidate.from_completion(c, kind, name)
            for c, name in zip(completions, names, strict=False)
        ]
        declared = [declared_answer(c.text, kind) for c in candidates]
        declarers = [a for a in declared if a is not None]
        vote = majority_vote(declarers or [c.answer for c in candidates], kind)
        trace = {
            "layout": self.layout,
            "declared": {c.worker: a for c, a in zip(candidates, declared, strict=True) if a},
            "tokens": {c.worker: c.completion_tokens for c in candidates},
        }
        answer = vote.winner
        if not declarers and self.final_tokens and kind != "code" and transcript:
            final = self._final_answer(problem, ctx, prompt, transcript[0])
            if final is not None:
                candidates.append(final)
                answer = final.answer if final.answer is not None else answer
            trace["final"] = final.answer if final else None
        if transcript:  # the order the steps were written in, for `thinktank view`
            texts = {c.worker: c.text for c in candidates if c.worker}
            trace["steps"] = written_steps(transcript[0], self._step_header(names), texts)
        return Solution(answer=answer, candidates=candidates, votes=vote.counts, trace=[trace])

    def _step_header(self, names: Sequence[str]) -> re.Pattern[str]:
        """What starts a step in the shared cache (`_headers`, `_format`), capturing
        the worker's name."""
        who = "|".join(map(re.escape, names))
        if self.prompt == "team":
            return re.compile(rf"\n({who}): ")
        return re.compile(rf"\*\*({who}) \[\d+\]:\*\* ")

    def _headers(self, names: Sequence[str]) -> list[str]:
        """What starts each worker's first step: the paper's openers, or its name."""
        if self.prompt == "team":
            return [f"\n{name}: " for name in names]
        return [f"**{name} [1]:** Hi, I'm {name}." + (" Here's how we can" if i == 0 else "")
                for i, name in enumerate(names)]  # fmt: skip

    def _format(self, names: Sequence[str]) -> TeamFormat | None:
        if self.prompt == "team":
            return None
        return TeamFormat(
            step_headers=tuple(f"**{name} [{{step}}]:** " for name in names),
            others=_OTHERS, pivot=_PIVOT, own=_OWN,
            check=_CHECK, check_every=self.check_every,
        )  # fmt: skip

    def _final_answer(
        self, problem: Problem, ctx: Context, prompt: Prompt, transcript: str
    ) -> Candidate | None:
        """Hogwild!'s final-answer step: the prompt, everything the workers wrote, then
        `_FINISH`, answered greedily in ``final_tokens`` tokens (None: the budget is spent)."""
        reply = transcript + _FINISH
        asked = prompt + reply if isinstance(prompt, str) else [
            *prompt, {"role": "assistant", "content": reply}]  # fmt: skip
        greedy = self.sampling(ctx.model, problem.kind).with_(
            temperature=0.0, max_tokens=self.final_tokens
        )
        finishing = ctx.at_stage("aggregate")
        completions = sample_completions(problem, finishing, 1, greedy, prompt=asked)
        if not completions:
            return None
        candidate = Candidate.from_completion(completions[0], problem.kind, "final")
        return replace(candidate, answer=extract_answer(_FINISH + candidate.text, problem.kind))

    def _prompt(self, problem: Problem, model: Model, names: Sequence[str]) -> Prompt:
        prompt = build_prompt(problem, model)
        if self.prompt == "paper":  # the rules go before the question, in its user message
            rules = collaboration_rules(names)
            if isinstance(prompt, str):
                return f"{rules}\n\n{prompt}"
            *before, question = prompt
            return [*before, {**question, "content": f"{rules}\n\n{question['content']}"}]
        team = self._TEAM.format(names=", ".join(names), count=len(names))
        if isinstance(prompt, str):
            return f"{team}\n\n{prompt}"
        system, *conversation = prompt  # build_prompt's system message comes first
        return [{"role": "system", "content": f"{system['content']} {team}"}, *conversation]
