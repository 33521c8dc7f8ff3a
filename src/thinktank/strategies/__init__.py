"""Strategies, each registered by name (`thinktank.strategies.registry`): ``NAME[:key=value,...]``
spec strings build them."""

from __future__ import annotations

from thinktank.strategies.allocate import BatchAllocation, ComputeOptimal
from thinktank.strategies.base import Context, Strategy
from thinktank.strategies.collaborate import (
    Debate,
    Hogwild,
    LearningFromPeers,
    MixtureOfAgents,
)
from thinktank.strategies.ensemble import DiversePrompts, TruthInference
from thinktank.strategies.registry import (
    BUILTIN_STRATEGIES,
    DEFAULT_STRATEGY,
    STRATEGIES,
    build_strategy,
    register,
    strategy_class,
    with_defaults,
)
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
    "BUILTIN_STRATEGIES",
    "DEFAULT_STRATEGY",
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
    "register",
    "strategy_class",
    "with_defaults",
]

#: The built-in strategies, in the order ``thinktank strategies`` lists them. A new
#: technique is one class and one line here.
for _builtin in (
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
):
    register(_builtin)
