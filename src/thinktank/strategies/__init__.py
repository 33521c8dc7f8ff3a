"""Strategies and their registry: ``NAME[:key=value,...]`` spec strings build them."""

from __future__ import annotations

import dataclasses
import difflib

from thinktank.errors import SpecError
from thinktank.spec import build, parse_spec
from thinktank.strategies.allocate import BatchAllocation, ComputeOptimal
from thinktank.strategies.base import Context, Strategy
from thinktank.strategies.collaborate import (
    Debate,
    Hogwild,
    LearningFromPeers,
    MixtureOfAgents,
)
from thinktank.strategies.ensemble import DiversePrompts, TruthInference
from thinktank.strategies.route import Cascade, Route, SpecReason
from thinktank.strategies.sampling import (
    AdaptiveConsistency,
    BestOfMajority,
    BestOfN,
    DeepConf,
    ReasoningPrunedConsistency,
    SelfConsistency,
    Single,
    WeightedVote,
)
from thinktank.strategies.search import (
    AStarDecoding,
    BeamSearch,
    ParticleFilter,
    ParticleGibbs,
    TreeSearch,
)

__all__ = [
    "STRATEGIES",
    "AStarDecoding",
    "AdaptiveConsistency",
    "BatchAllocation",
    "BeamSearch",
    "BestOfMajority",
    "BestOfN",
    "Cascade",
    "ComputeOptimal",
    "Context",
    "Debate",
    "DeepConf",
    "DiversePrompts",
    "Hogwild",
    "LearningFromPeers",
    "MixtureOfAgents",
    "ParticleFilter",
    "ParticleGibbs",
    "ReasoningPrunedConsistency",
    "Route",
    "SelfConsistency",
    "Single",
    "SpecReason",
    "Strategy",
    "TreeSearch",
    "TruthInference",
    "WeightedVote",
    "build_strategy",
    "strategy_class",
    "with_defaults",
]

#: Every strategy by name. A new technique is one class and one line here.
STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls
    for cls in (
        Single,
        SelfConsistency,
        WeightedVote,
        ReasoningPrunedConsistency,
        AdaptiveConsistency,
        ComputeOptimal,
        BatchAllocation,
        BestOfN,
        BestOfMajority,
        DeepConf,
        DiversePrompts,
        TruthInference,
        BeamSearch,
        ParticleFilter,
        ParticleGibbs,
        AStarDecoding,
        TreeSearch,
        Debate,
        MixtureOfAgents,
        LearningFromPeers,
        Hogwild,
        Cascade,
        Route,
        SpecReason,
    )
}

DEFAULT_STRATEGY = "self-consistency"


def build_strategy(spec: str | Strategy) -> Strategy:
    """``"self-consistency:n=16"`` -> ``SelfConsistency(n=16)``; a Strategy passes through."""
    if isinstance(spec, Strategy):
        return spec
    name, options = parse_spec(spec)
    return build(strategy_class(name), options, what=f"strategy {name}")


def with_defaults(spec: str, **defaults: float | int) -> tuple[Strategy, dict[str, str]]:
    """The strategy ``spec`` names, each option that ``spec`` leaves out taken from
    ``defaults`` where it has one (a server fills sampling options from a request's
    fields this way: the options spelled out in ``spec`` win); and each default not
    used, with why (``spec`` sets it, or the strategy has no such option).

    >>> strategy, unused = with_defaults("self-consistency:n=4,temperature=0.3",
    ...                                  temperature=1.0, max_tokens=5)
    >>> strategy.spec, list(unused)
    ('self-consistency:temperature=0.3,max_tokens=5,n=4', ['temperature'])
    """
    name, options = parse_spec(spec)
    cls = strategy_class(name)
    fields = {field.name for field in dataclasses.fields(cls) if field.init}
    unused: dict[str, str] = {}
    for option, value in defaults.items():
        if option in options:
            unused[option] = f"the strategy's own {option}={options[option]} is used"
        elif option in fields:
            options[option] = str(value)
        else:
            unused[option] = f"strategy {name} has no option {option}"
    return build(cls, options, what=f"strategy {name}"), unused


def strategy_class(name: str) -> type[Strategy]:
    """The strategy called ``name``; unknown, an error naming the close ones first."""
    if name not in STRATEGIES:
        close = difflib.get_close_matches(name, STRATEGIES, n=3, cutoff=0.6)
        hint = f"did you mean {' or '.join(close)}? " if close else ""
        raise SpecError(f"unknown strategy {name!r} ({hint}available: {', '.join(STRATEGIES)})")
    return STRATEGIES[name]
