"""The one place where the names a strategy's options hold become objects.

A strategy's options may name models (``cascade:models=smollm2+gemma3-270m``),
verifiers (``best-of-n:verifier=judge@gemma3-270m``), process rewards
(``beam:value=prm@http://host:8000``) and a ledger (``route:ledger=PATH``).
Strategies never load these themselves: they ask the `Resolver` their `Context`
carries, and `Resolver.check` validates every name a strategy holds before it
runs (`Strategy.references`).

- `Resolver` (the CLI's and Python's) resolves any spec: a model spec is loaded
  (``gguf:PATH``, ``openai:MODEL@URL``...), ``py:MODULE:FUNCTION`` imports the
  module, ``prm@URL`` calls the URL, ``ledger=PATH`` opens that file.
- `ServedResolver` (the server's) knows only what the operator configured at
  start-up, by name: the served models (judges included), the process-reward
  endpoints, the server's own ledger. A request can name nothing else: no URL,
  file path, environment variable, module or credential.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Literal, TypeVar

from thinktank.errors import SpecError, ThinktankError
from thinktank.ledger import Ledger
from thinktank.models import Model, Sampling, check_model_spec, load_model
from thinktank.plugins import Kind, plugin, refuse
from thinktank.problem import Problem
from thinktank.router import RoutingData
from thinktank.solution import Candidate
from thinktank.verify.process import (
    ProcessReward,
    ProcessRewardSpec,
    RemoteProcessReward,
    RolloutReward,
    SelfEvalReward,
    parse_process_reward,
)
from thinktank.verify.verifiers import (
    JUDGES,
    VERIFIERS,
    FunctionVerifier,
    Verifier,
    VerifierSpec,
    import_function,
    parse_verifier,
)

#: What an option can name: a model spec, a verifier, a process reward or a ledger path.
ReferenceKind = Literal["model", "verifier", "process-reward", "ledger"]
Reference = tuple[ReferenceKind, str]

T = TypeVar("T")


def named(kind: ReferenceKind, option: str | object) -> Iterator[Reference]:
    """The reference a strategy's option holds, for `Strategy.references`: none when
    Python gave it an object (a `Verifier`, a `ProcessReward`): nothing to check by name."""
    if isinstance(option, str):
        yield kind, option


def check_shape(kind: Literal["verifier", "process-reward"], option: str | object) -> None:
    """Refuse a malformed verifier or process-reward spec (ValueError) when its strategy
    is built; an object given from Python has no spec to check."""
    if isinstance(option, str):
        (parse_verifier if kind == "verifier" else parse_process_reward)(option)


class Resolver:
    """Resolves any spec: what the user typed on the command line or in Python."""

    #: Bench runs no strategy may learn from: the one it is being scored in (its
    #: results are the grader's scores of the very problems being solved).
    sealed_runs: frozenset[str] = frozenset()

    def sealing(self, run_id: str) -> Resolver:
        """This resolver, refusing to read the results of ``run_id`` too."""
        sealed = copy.copy(self)
        sealed.sealed_runs = self.sealed_runs | {run_id}
        return sealed

    def model(self, spec: str) -> Model:
        """The model a spec names (loaded once per process)."""
        self._check_model(spec)
        return load_model(spec)

    def verifier(self, spec: str | Verifier) -> Verifier:
        """``self-eval`` | ``pairwise[@MODEL]`` | ``judge@MODEL`` | ``public-tests`` |
        ``agreement`` | ``py:MODULE:FUNCTION`` -> a verifier; judges' models resolved here.
        A verifier object (given from Python) is returned as it is."""
        if not isinstance(spec, str):
            return self._given("verifier", spec)
        parsed = self._check_verifier(spec)
        if parsed.name == "py":
            return FunctionVerifier(self._function(parsed.argument or ""))
        if parsed.argument is not None:
            try:
                return JUDGES[parsed.name](self.model(parsed.argument))
            except SpecError:
                raise
            except ThinktankError as exc:
                raise SpecError(f"verifier {spec!r}: {exc}") from None
        if parsed.name in VERIFIERS:
            return VERIFIERS[parsed.name]()
        return self._plugin("verifier", parsed.name)()

    def process_reward(self, spec: str | ProcessReward, sampling: Sampling) -> ProcessReward:
        """``self-eval`` | ``rollout[N][@VERIFIER]`` | ``prm@ENDPOINT[#MODEL]`` -> a process
        reward; ``sampling`` is how the search samples (rollouts sample the same way).
        A process-reward object (given from Python) is returned as it is."""
        if not isinstance(spec, str):
            return self._given("process-reward", spec)
        parsed = self._check_process_reward(spec)
        if parsed.name == "rollout":
            return RolloutReward(sampling, parsed.count, self.verifier(parsed.verifier))
        if parsed.name == "prm":
            url, model = self._endpoint(parsed)
            return RemoteProcessReward(url, model)
        if parsed.name == SelfEvalReward.name:
            return SelfEvalReward()
        return self._plugin("process-reward", parsed.name)()

    def routing_data(self, run_ids: Iterable[str], ledger: str = "") -> RoutingData:
        """The bench runs a router learns from, in ``ledger`` (a path; default the usual);
        never a sealed one."""
        opened = self._ledger(ledger)
        try:
            # Each id in full first (a prefix, `last`): the seal is on the full id.
            run_ids = [self._bench_run(opened, run_id) for run_id in run_ids]
            if sealed := self.sealed_runs.intersection(run_ids):
                raise SpecError(
                    f"run {', '.join(sorted(sealed))} is the run in progress: a strategy cannot"
                    " learn from the scores of the problems it is solving"
                )
            return RoutingData.from_ledger(opened, run_ids)
        finally:
            if opened is not self._own_ledger():
                opened.close()

    def check(self, references: Iterable[Reference]) -> None:
        """Refuse, before anything runs, a name this resolver would not resolve."""
        checks: dict[ReferenceKind, Callable[[str], object]] = {
            "model": self._check_model,
            "verifier": self._check_verifier,
            "process-reward": self._check_process_reward,
            "ledger": self._check_ledger,
        }
        for kind, spec in references:
            checks[kind](spec)

    # -- what the open resolver allows; `ServedResolver` narrows each ---------------

    def _check_model(self, spec: str) -> None:
        check_model_spec(spec)

    def _check_verifier(self, spec: str) -> VerifierSpec:
        parsed = _parsed(parse_verifier, spec)
        if parsed.name == "py":
            self._function(parsed.argument or "")  # the open resolver imports it: fails early
        elif parsed.argument is not None:
            self._check_model(parsed.argument)
        elif parsed.name not in VERIFIERS:
            self._plugin("verifier", parsed.name)  # imported now: a broken one fails early
        return parsed

    def _check_process_reward(self, spec: str) -> ProcessRewardSpec:
        parsed = _parsed(parse_process_reward, spec)
        if parsed.name == "rollout":
            self._check_verifier(parsed.verifier)
        if parsed.name == "prm":
            self._endpoint(parsed)
        if parsed.name not in ("rollout", "prm", SelfEvalReward.name):
            self._plugin("process-reward", parsed.name)
        return parsed

    def _check_ledger(self, path: str) -> None:
        """Any path will do: it is the user's own."""

    def _given(self, kind: ReferenceKind, given: T) -> T:
        """An object in place of a spec: the Python caller's own code, used as it is."""
        return given

    def _function(self, target: str) -> Callable[[Problem, Candidate], float]:
        return _parsed(import_function, target)

    def _plugin(self, kind: Kind, name: str) -> Callable[[], T]:
        """The class a plugin declares for a verifier or process reward ``name``."""
        found = plugin(kind, name, _BUILTIN_NAMES[kind])
        if not callable(found):
            raise refuse(kind, name, f"{found!r} is not a class")
        return found

    def _endpoint(self, parsed: ProcessRewardSpec) -> tuple[str, str | None]:
        if not parsed.endpoint.startswith(("http://", "https://")):
            raise SpecError(
                f"process reward prm@{parsed.endpoint}: the URL must start with http(s)://"
            )
        return parsed.endpoint, parsed.model

    def _ledger(self, path: str) -> Ledger:
        return Ledger(Path(path).expanduser() if path else None)

    def _bench_run(self, ledger: Ledger, name: str) -> str:
        """The bench run ``name`` names: its id, a unique prefix of it, or ``last``."""
        return ledger.find_run(name, command="bench")

    def _own_ledger(self) -> Ledger | None:
        return None


def _parsed(parse: Callable[[str], T], spec: str) -> T:
    """``parse(spec)``, its ValueError a SpecError (what the CLI and the server report)."""
    try:
        return parse(spec)
    except SpecError:
        raise
    except ValueError as exc:
        raise SpecError(str(exc)) from None


#: The names a plugin's verifier or process reward may not take.
_BUILTIN_NAMES: dict[Kind, frozenset[str]] = {
    "verifier": frozenset([*VERIFIERS, *JUDGES, "py"]),
    "process-reward": frozenset(["rollout", "prm", SelfEvalReward.name]),
}


class ServedResolver(Resolver):
    """What a server's requests may name: only what the operator configured, by name.

    ``models``: the served models by name (a spec or a loaded `Model`; specs load on
    first use), which strategies' pools and judges may name too.
    ``process_rewards``: endpoints by name, ``prm@NAME`` in a request; each value is
    ``URL[#MODEL]``. ``ledger``: where ``route`` learns (requests cannot name one).
    ``py:`` verifiers, model specs, URLs and paths are refused.
    """

    def __init__(
        self,
        models: Mapping[str, str | Model],
        *,
        process_rewards: Mapping[str, str] | None = None,
        ledger: Ledger | None = None,
    ) -> None:
        self._served = dict(models)
        self._rewards = dict(process_rewards or {})
        for name, target in self._rewards.items():
            url = target.partition("#")[0]
            if not url.startswith(("http://", "https://")):
                raise SpecError(f"process reward {name}={target}: the URL must be http(s)://")
        self._ledger_opened = ledger
        self._loading = threading.Lock()

    @property
    def model_names(self) -> list[str]:
        return list(self._served)

    def model(self, spec: str) -> Model:
        self._check_model(spec)
        with self._loading:
            entry = self._served[spec]
            if isinstance(entry, str):
                self._served[spec] = entry = load_model(entry)
        return entry

    def _check_model(self, spec: str) -> None:
        if spec not in self._served:
            raise SpecError(
                f"model {spec!r} is not served here (served: {', '.join(self._served)})"
            )

    def _check_ledger(self, path: str) -> None:
        if path:
            raise SpecError("a request cannot name a ledger: route learns from the server's own")

    def _function(self, target: str) -> Callable[[Problem, Candidate], float]:
        raise SpecError(
            "a request cannot name a py: verifier (it would import a module on the server)"
        )

    def _plugin(self, kind: Kind, name: str) -> Callable[[], T]:
        raise SpecError(f"a request cannot name a plugin's {kind} ({name}): none is served")

    def _given(self, kind: ReferenceKind, given: T) -> T:
        raise SpecError(f"a request names its {kind} by name, not as an object ({given!r})")

    def _endpoint(self, parsed: ProcessRewardSpec) -> tuple[str, str | None]:
        if parsed.endpoint not in self._rewards or parsed.model is not None:
            named = ", ".join(f"prm@{name}" for name in self._rewards) or "none"
            raise SpecError(
                f"process reward prm@{parsed.endpoint}{'#' + parsed.model if parsed.model else ''}"
                f" is not configured on this server (configured: {named})"
            )
        url, _, model = self._rewards[parsed.endpoint].partition("#")
        return url, model or None

    def _ledger(self, path: str) -> Ledger:
        self._check_ledger(path)
        return self._own_ledger() or Ledger()

    def _bench_run(self, ledger: Ledger, name: str) -> str:
        # Whole ids only, and no path or other ids in the refusal: a prefix would let a
        # client list the operator's runs one character at a time.
        if ledger.bench_config(name) is None:
            raise SpecError(f"no bench run {name!r} on this server (name it by its whole id)")
        return name

    def _own_ledger(self) -> Ledger | None:
        return self._ledger_opened
