"""DeepConf, RPC and Adaptive-Consistency as their papers define them (issue 18).

The formulas are checked against values computed by hand on scripted inputs; a
scripted model (control flow only) checks how each strategy filters, stops and
votes; one cheap run on the real model checks each end to end.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import thinktank
from thinktank.aggregate import majority_vote
from thinktank.errors import SpecError
from thinktank.meter import Meter, Progress
from thinktank.models.base import Capabilities, Completion, Price, SampleProgress, Sampling
from thinktank.problem import Problem
from thinktank.strategies import build_strategy
from thinktank.strategies.base import Context
from thinktank.strategies.sampling import (
    TRACE_CONFIDENCES,
    GroupConfidenceStop,
    group_confidences,
    keep_bar,
    sigma_pruned,
    token_confidences,
    weibull_pruned,
)
from thinktank.verify import answer_key

from .conftest import SUM_PROMPT

# --- DeepConf's formulas on hand-made log-probabilities -------------------------------

#: Top-2 logprobs at five positions, and DeepConf's token confidence at each:
#: minus their mean (1.2, 1.6, 1.0, 2.5, 0.8).
SCRIPTED_TOP = [
    {"a": -0.1, "b": -2.3},
    {"a": -0.2, "b": -3.0},
    {"a": -1.0, "b": -1.0},
    {"a": -0.5, "b": -4.5},
    {"a": -0.7, "b": -0.9},
]


def test_token_confidence_is_minus_the_mean_of_the_top_k_logprobs():
    assert token_confidences(SCRIPTED_TOP) == pytest.approx([1.2, 1.6, 1.0, 2.5, 0.8])
    assert token_confidences([{"a": -0.5}, {}]) == [0.5]  # a position without any is skipped


def test_group_and_trace_confidences_on_a_scripted_sequence():
    confidences = token_confidences(SCRIPTED_TOP)
    # Groups of 2 sliding by one: (1.2+1.6)/2, (1.6+1.0)/2, (1.0+2.5)/2, (2.5+0.8)/2.
    assert group_confidences(confidences, 2) == pytest.approx([1.4, 1.3, 1.75, 1.65])
    assert TRACE_CONFIDENCES["lowest"](confidences, 2) == pytest.approx(1.3)
    assert TRACE_CONFIDENCES["bottom-10"](confidences, 2) == pytest.approx(1.3)  # 1 of 4 groups
    assert TRACE_CONFIDENCES["tail"](confidences, 2) == pytest.approx(1.65)  # the last 2 tokens
    assert TRACE_CONFIDENCES["mean"](confidences, 2) == pytest.approx(7.1 / 5)
    # No more tokens than the window: one group, the mean.
    assert group_confidences(confidences, 5) == pytest.approx([7.1 / 5])
    assert TRACE_CONFIDENCES["lowest"](confidences, 2048) == pytest.approx(7.1 / 5)


def test_bottom_ten_percent_averages_the_lowest_tenth_of_the_groups():
    confidences = [float(i) for i in range(22)]  # window 2: 21 groups, 0.5, 1.5, ..., 20.5
    assert TRACE_CONFIDENCES["bottom-10"](confidences, 2) == pytest.approx((0.5 + 1.5) / 2)
    assert TRACE_CONFIDENCES["tail"](confidences, 2) == pytest.approx(20.5)


@given(values=st.lists(st.floats(0, 20), min_size=1, max_size=40), window=st.integers(1, 12))
def test_groups_are_every_window_of_consecutive_tokens(values, window):
    if len(values) <= window:
        expected = [sum(values) / len(values)]
    else:
        expected = [sum(values[i : i + window]) / window for i in range(len(values) - window + 1)]
    assert group_confidences(values, window) == pytest.approx(expected, abs=1e-9)


def test_the_bar_is_the_papers_percentile():
    values = [float(i) for i in range(1, 11)]
    # np.percentile's linear interpolation: rank 0.9 * 9 = 8.1 -> 9.1; 0.1 * 9 = 0.9 -> 1.9.
    assert keep_bar(values, 0.1) == pytest.approx(9.1)  # DeepConf-low keeps the top 10%
    assert keep_bar(values, 0.9) == pytest.approx(1.9)  # DeepConf-high, the top 90%
    assert keep_bar([None, 2.0], 0.5) == 2.0 and keep_bar([None], 0.5) == -math.inf


def test_the_online_stop_fires_once_a_full_group_falls_below_the_bar():
    logprobs: list[float] = []
    top: list[dict[str, float]] = []
    progress = SampleProgress(logprobs, top)
    stop = GroupConfidenceStop(1.35, 2, build_strategy("deepconf").confidences_of)
    decisions = []
    for position in SCRIPTED_TOP:
        logprobs.append(max(position.values()))
        top.append(position)
        decisions.append(stop(progress))
    # Groups after each token: (not full), 1.4, 1.3 < 1.35: stop at the third token.
    assert decisions[:3] == [False, False, True]


# --- DeepConf's filtering, stopping and vote, on a scripted model ---------------------


@dataclass(frozen=True)
class Trace:
    """A scripted trace: its answer, and per token DeepConf's confidence."""

    answer: str
    confidences: tuple[float, ...]


class ScriptedTraces:
    """Sample i of a call is ``traces[sample_offset + i]``: per token, a top-2 whose
    mean logprob is minus the scripted confidence (the sampled token the likelier).
    A prune rule is consulted after every token but the last, as the local backends
    do; a pruned sample keeps what it wrote and has no answer."""

    name = "scripted-traces"
    capabilities = Capabilities(chat=True, logprobs=True, batched=True)
    price = Price(0.0, 0.0)

    def __init__(self, traces: list[Trace]) -> None:
        self.traces = traces
        self.calls: list[int] = []

    def count_tokens(self, prompt) -> int:
        return 10

    def generate(self, prompt, n=1, sampling=None, *, deadline=None, progress=None, prune=None):
        sampling = sampling or Sampling()
        self.calls.append(n)
        out = []
        for i in range(n):
            trace = self.traces[sampling.sample_offset + i]
            logprobs: list[float] = []
            top: list[dict[str, float]] = []
            seen = SampleProgress(logprobs, top)
            finish = "stop"
            for position, confidence in enumerate(trace.confidences, 1):
                logprobs.append(-confidence + 0.5)
                if sampling.top_logprobs:
                    top.append({"x": -confidence + 0.5, "y": -confidence - 0.5})
                if prune is not None and position < len(trace.confidences) and prune(seen):
                    finish = "pruned"
                    break
            text = f"The answer is {trace.answer}." if finish == "stop" else "The"
            out.append(
                Completion(
                    text=text,
                    token_ids=tuple(range(len(logprobs))),
                    logprobs=tuple(logprobs),
                    finish_reason=finish,
                    prompt_tokens=10,
                    seed=sampling.seed,
                    top_logprobs=tuple(top) or None,
                )
            )
        return out


def test_online_deepconf_sets_the_bar_on_the_warm_up_and_stops_weak_traces():
    model = ScriptedTraces(
        [
            Trace("7", (3, 3, 3)),  # warm-up: lowest group 3
            Trace("5", (1, 1, 1)),  # warm-up: lowest group 1 -> bar = median of (3, 1) = 2
            Trace("5", (3, 3, 1, 1, 3, 3)),  # groups 3, 2 (not below), 1: stopped at token 4
            Trace("5", (2.5, 2.5, 2.5)),  # never below: votes with 2.5
            Trace("5", (2, 1)),  # too short to stop; its lowest group 1.5 < 2: dropped
        ]
    )
    solution = thinktank.solve(
        "What is 3 + 4?", model=model, strategy="deepconf:n=5,warmup=2,window=2,keep=0.5", seed=0
    )
    assert model.calls == [2, 3]
    assert solution.trace == [{"bar": 2.0, "voters": 2, "pruned": 1}]
    stopped = solution.candidates[2]
    assert stopped.finish_reason == "pruned" and stopped.completion_tokens == 4
    # Only the confident traces vote, each weighted by its confidence: 7 beats the
    # majority's 5.
    assert solution.answer == "7"
    assert solution.votes == pytest.approx({"7": 3.0, "5": 2.5})


def test_offline_deepconf_keeps_the_top_share_and_weighs_votes_by_confidence():
    confident = [Trace("7", (c, c)) for c in (3.0, 2.9, 2.8)]
    unsure = [Trace("5", (1.0 + i / 10, 1.0 + i / 10)) for i in range(7)]
    model = ScriptedTraces(unsure[:4] + confident + unsure[4:])
    solution = thinktank.solve(
        "What is 3 + 4?",
        model=model,
        strategy="deepconf:mode=offline,n=10,keep=0.3,window=2",
        seed=0,
    )
    assert model.calls == [10]
    # The 70th percentile of 1.0..1.6, 2.8, 2.9, 3.0: 1.6 + 0.3 * (2.8 - 1.6) = 1.96.
    assert solution.trace[0]["bar"] == pytest.approx(1.96)
    assert solution.answer == "7" and solution.votes == pytest.approx({"7": 8.7})


@pytest.mark.parametrize(
    ("measure", "expected"), [("lowest", 2.0), ("bottom-10", 2.0), ("tail", 3.0), ("mean", 2.5)]
)
def test_offline_deepconf_scores_traces_by_the_chosen_measure(measure, expected):
    model = ScriptedTraces([Trace("7", (1, 3, 3, 3))])
    solution = thinktank.solve(
        "What is 3 + 4?",
        model=model,
        strategy=f"deepconf:mode=offline,n=1,window=2,measure={measure}",
        seed=0,
    )
    assert solution.candidates[0].score == pytest.approx(expected)


def test_the_earlier_deepconf_is_kept_as_an_option():
    # confidence=sampled-logprob: the sampled token's logprob (here 0.5 - confidence),
    # votes weighted by exp(confidence); no top logprobs are asked for.
    model = ScriptedTraces([Trace("7", (1, 1)), Trace("5", (2, 2))])
    solution = thinktank.solve(
        "What is 3 + 4?",
        model=model,
        strategy="deepconf:n=2,warmup=2,window=2,keep=1,confidence=sampled-logprob",
        seed=0,
    )
    assert [c.score for c in solution.candidates] == pytest.approx([-0.5, -1.5])
    assert solution.votes == pytest.approx({"7": math.exp(-0.5), "5": math.exp(-1.5)})


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("deepconf:n=8", "warmup must be in 1..n"),
        ("deepconf:mode=sometimes", "mode must be"),
        ("deepconf:measure=tail", "measure must be lowest"),
        ("deepconf:mode=offline,measure=median", "measure must be one of"),
        ("deepconf:top_logprobs=21", "top_logprobs"),
        ("deepconf:confidence=vibes", "confidence must be one of"),
        ("rpc:prune=gauss", "prune must be one of"),
    ],
)
def test_bad_options_fail_clearly(spec, message):
    with pytest.raises(SpecError, match=message):
        build_strategy(spec)


def test_defaults_are_the_papers():
    deepconf = build_strategy("deepconf")
    assert (deepconf.warmup, deepconf.keep, deepconf.window, deepconf.top_logprobs) == (
        16,
        0.1,
        2048,
        20,
    )
    adaptive = build_strategy("adaptive-consistency")
    assert (adaptive.max_n, adaptive.batch, adaptive.confidence) == (40, 1, 0.95)


class Recording:
    """The real model, keeping every completion it returns."""

    def __init__(self, model) -> None:
        self.model, self.completions = model, []
        self.name, self.capabilities, self.price = model.name, model.capabilities, model.price
        self.sampling_profile = model.sampling_profile

    def count_tokens(self, prompt) -> int:
        return self.model.count_tokens(prompt)

    def generate(self, prompt, n=1, sampling=None, **options):
        completions = self.model.generate(prompt, n, sampling, **options)
        self.completions += completions
        return completions


def test_a_prune_rule_sees_the_top_logprobs_as_they_are_written(smollm2):
    seen: list[tuple[int, int, dict[str, float]]] = []

    def watch(progress: SampleProgress) -> bool:
        seen.append((len(progress), len(progress.top), dict(progress.top[-1])))
        return False

    [completion] = smollm2.generate(
        SUM_PROMPT, 1, Sampling(temperature=1.0, max_tokens=8, seed=2, top_logprobs=5), prune=watch
    )
    assert all(tokens == positions for tokens, positions, _ in seen)
    assert [top for _, _, top in seen] == list(completion.top_logprobs[: len(seen)])


def test_deepconf_on_the_real_model(smollm2):
    model = Recording(smollm2)
    solution = thinktank.solve(
        "What is 3 + 4?",
        model=model,
        strategy="deepconf:n=2,warmup=1,window=4,keep=0.5,max_tokens=16",
        seed=1,
    )
    _, rest = model.completions
    [step] = solution.trace
    for completion, candidate in zip(model.completions, solution.candidates, strict=True):
        assert len(completion.top_logprobs) == completion.completion_tokens
        confidences = token_confidences(completion.top_logprobs)
        assert candidate.score == pytest.approx(TRACE_CONFIDENCES["lowest"](confidences, 4))
    assert step["bar"] == pytest.approx(solution.candidates[0].score)  # one warm-up trace
    groups = group_confidences(token_confidences(rest.top_logprobs), 4)
    if rest.finish_reason == "pruned":  # stopped at its first full group under the bar
        assert groups[-1] < step["bar"] and all(g >= step["bar"] for g in groups[:-1])
    elif rest.completion_tokens > 4:  # the token that ends a trace is not checked
        assert all(g >= step["bar"] for g in groups[:-1])
    voted = {
        answer_key(c.answer, "math")
        for c in solution.candidates
        if c.answer is not None and c.finish_reason != "pruned" and c.score >= step["bar"]
    }
    assert {answer_key(a, "math") for a in solution.votes} == voted


# --- RPC ------------------------------------------------------------------------------


def paths(*texts_and_probabilities: tuple[str, float]) -> ScriptedTraces:
    """A scripted model whose sample i reads texts[i], of geometric-mean probability p."""
    return ScriptedTraces(
        [Trace(text, (0.5 - math.log(p),) * 3) for text, p in texts_and_probabilities]
    )


def test_weibull_pruning_drops_the_low_probability_cluster():
    high = [0.91, 0.9, 0.89, 0.88, 0.87, 0.9]
    low = [0.2, 0.15, 0.25]
    assert weibull_pruned(high + low) == [False] * 6 + [True] * 3
    assert weibull_pruned([0.5] * 4) == [False] * 4  # nothing below the mean


@settings(deadline=None, max_examples=50)  # each example fits a mixture
@given(st.lists(st.floats(0.01, 1.0), min_size=1, max_size=16))
@example([0.13729132877911215] * 6)  # their float mean is just above each of them
def test_weibull_pruning_only_drops_paths_below_the_mean(probabilities):
    pruned = weibull_pruned(probabilities)
    mean = sum(probabilities) / len(probabilities)
    assert all(p < mean for p, cut in zip(probabilities, pruned, strict=True) if cut)
    assert not all(pruned)


@given(st.lists(st.floats(0.01, 1.0), min_size=1, max_size=16), st.floats(0.0, 3.0))
@example([0.13729132877911215] * 6, 0.0)
def test_sigma_pruning_never_drops_every_path(probabilities, sigmas):
    assert not all(sigma_pruned(probabilities, sigmas))


def test_perplexity_consistency_counts_each_distinct_path_once():
    # Three copies of one path to 5 (p = 0.9), two distinct paths to 7 (0.6, 0.5):
    # counted once, 5 scores 0.9 and 7 scores 1.1; a weighted vote would give 5 2.7.
    model = paths(("5", 0.9), ("5", 0.9), ("5", 0.9), ("7 (a)", 0.6), ("7 (b)", 0.5))
    solution = thinktank.solve("What is 3 + 4?", model=model, strategy="rpc:n=5,prune=none", seed=0)
    assert solution.votes == pytest.approx({"7": 1.1, "5": 0.9})
    assert solution.trace == [{"kept": 3, "pruned": 0, "duplicates": 2}]
    earlier = thinktank.solve(
        "What is 3 + 4?", model=model, strategy="rpc:n=5,prune=sigma,unique_paths=false", seed=0
    )
    assert earlier.answer == "5" and earlier.votes["5"] == pytest.approx(2.7)


def test_rpc_prunes_then_sums_over_distinct_paths():
    model = paths(
        *[(f"5 ({i})", p) for i, p in enumerate([0.91, 0.9, 0.89, 0.88, 0.87, 0.9])],
        ("7 (a)", 0.2),
        ("7 (b)", 0.15),
        ("7 (c)", 0.25),
        ("7 (a)", 0.2),
    )
    solution = thinktank.solve("What is 3 + 4?", model=model, strategy="rpc:n=10", seed=0)
    assert solution.trace == [{"kept": 6, "pruned": 4, "duplicates": 0}]
    assert solution.votes == pytest.approx({"5": 0.91 + 0.9 + 0.89 + 0.88 + 0.87 + 0.9})


def test_rpc_on_the_real_model(smollm2):
    solution = thinktank.solve(
        "What is 3 + 4?", model=smollm2, strategy="rpc:n=2,max_tokens=16", seed=1
    )
    [step] = solution.trace
    assert step["kept"] + step["pruned"] + step["duplicates"] == 2
    probabilities = [math.exp(c.mean_logprob) for c in solution.candidates]
    pruned = weibull_pruned(probabilities)
    assert step["pruned"] == sum(pruned)
    # What votes: each distinct unpruned path's p, once.
    kept = {
        c.text: p
        for c, p, cut in zip(solution.candidates, probabilities, pruned, strict=True)
        if not cut and c.answer is not None
    }
    assert sum(solution.votes.values()) == pytest.approx(sum(kept.values()))


# --- Adaptive-Consistency ---------------------------------------------------------------


def test_adaptive_consistency_draws_one_at_a_time_until_the_beta_rule_decides():
    # Unanimous answers: P(p_a > p_b) = 1 - 0.5^(a+1) passes 0.95 at a = 4 (0.969),
    # not at 3 (0.9375).
    model = ScriptedTraces([Trace("4", (1.0,))] * 40)
    solution = thinktank.solve(
        "What is 2 + 2?", model=model, strategy="adaptive-consistency", seed=0
    )
    assert model.calls == [1, 1, 1, 1]
    assert [step["samples"] for step in solution.trace] == [1, 2, 3, 4]
    assert solution.trace[-1]["confidence"] == pytest.approx(1 - 0.5**5)


def test_adaptive_consistency_reports_each_rounds_vote_as_soon_as_it_is_counted():
    # The leader moves: 5 alone, 5 on a 1-1 tie (the first sampled), then 4 ahead.
    model = ScriptedTraces([Trace(answer, (1.0,)) for answer in ("5", "4", "4", "4")])
    meter = Meter()
    reports: list[Progress] = []
    meter.watch(reports.append, every=3600)  # only call ends and votes
    problem = Problem("sum", "What is 2 + 2?")
    strategy = build_strategy("adaptive-consistency:max_n=4")
    solution = strategy.solve(problem, Context(model, meter, seed=0))
    # Each round: the call's end (the last vote still standing), then its own vote.
    assert [(r.calls, r.voters) for r in reports] == [
        (1, None), (1, 1), (2, 1), (2, 2), (3, 2), (3, 3), (4, 3), (4, 4),
    ]  # fmt: skip
    assert [(r.leader, r.leader_share) for r in reports[1::2]] == [
        ("5", 1.0), ("5", 0.5), ("4", 2 / 3), ("4", 0.75),
    ]  # fmt: skip
    assert reports[-1].leader == solution.answer == "4"


def test_a_vote_counts_its_voters_and_the_winners_share_of_the_weight():
    tie = majority_vote(["4", "5", None, "5", "4"], "math")
    assert (tie.winner, tie.winner_share, tie.voters) == ("4", 0.5, 4)  # the first sampled
    weighted = majority_vote(["4", "5", "4"], "math", [1.0, 3.0, 0.5])
    assert (weighted.winner, weighted.winner_share, weighted.voters) == ("5", 3.0 / 4.5, 3)
    nobody = majority_vote([None, None], "math")
    assert (nobody.winner, nobody.winner_share, nobody.voters) == (None, None, 0)
    assert majority_vote(["4"], "math", [0.0]).winner_share is None  # no weight to share
