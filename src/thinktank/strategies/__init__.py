"""Strategies and their registry: ``NAME[:key=value,...]`` spec strings build them."""

from __future__ import annotations

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
    if name not in STRATEGIES:
        raise SpecError(f"unknown strategy {name!r} (available: {', '.join(STRATEGIES)})")
    return build(STRATEGIES[name], options, what=f"strategy {name}")
