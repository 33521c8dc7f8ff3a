"""The strategy registry: ``NAME[:key=value,...]`` spec strings build strategies.

It imports no strategy module (``thinktank.strategies`` registers the built-in ones),
so a strategy that builds others from specs (route, cascade) can import it. Plugins'
strategies (the ``thinktank.strategies`` entry-point group) are found by the same
lookups: `STRATEGIES` lists them too, and every process that has the plugin
installed (a Ray worker rebuilding a strategy from its spec) finds it by name.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Iterator, Mapping

from thinktank.errors import SpecError
from thinktank.plugins import plugin, plugin_names, plugins, refuse
from thinktank.spec import build, parse_spec
from thinktank.strategies.base import Strategy

#: The built-in strategies by name, as `register` adds them.
BUILTIN_STRATEGIES: dict[str, type[Strategy]] = {}

DEFAULT_STRATEGY = "self-consistency"


def register(cls: type[Strategy]) -> type[Strategy]:
    """Add a built-in strategy under its ``name`` (usable as a class decorator)."""
    if cls.name in BUILTIN_STRATEGIES:
        raise ValueError(f"two strategies are named {cls.name!r}")
    BUILTIN_STRATEGIES[cls.name] = cls
    return cls


class _Strategies(Mapping[str, type[Strategy]]):
    """Every strategy by name: the built-in ones, then the plugins' (imported when
    listed or looked up by name)."""

    def __getitem__(self, name: str) -> type[Strategy]:
        if name in BUILTIN_STRATEGIES:
            return BUILTIN_STRATEGIES[name]
        found = plugin("strategy", name)
        if found is None:
            raise KeyError(name)
        return _checked(name, found)

    def __iter__(self) -> Iterator[str]:
        plugins("strategy", BUILTIN_STRATEGIES)  # refuses a broken or clashing one
        return iter([*BUILTIN_STRATEGIES, *plugin_names("strategy")])

    def __len__(self) -> int:
        return len(list(iter(self)))

    def __contains__(self, name: object) -> bool:
        return name in BUILTIN_STRATEGIES or name in plugin_names("strategy")


#: Every strategy by name, plugins' included. A new built-in is one class and one line
#: in ``thinktank.strategies``.
STRATEGIES: Mapping[str, type[Strategy]] = _Strategies()


def is_plugin(name: str) -> bool:
    """Whether the strategy ``name`` comes from a plugin (a server serves one only if
    its operator allows it by name)."""
    return name not in BUILTIN_STRATEGIES and name in STRATEGIES


def _checked(name: str, found: object) -> type[Strategy]:
    if not (isinstance(found, type) and issubclass(found, Strategy)):
        raise refuse("strategy", name, f"{found!r} is not a Strategy subclass")
    if found.name != name:
        raise refuse("strategy", name, f"its class is named {found.name!r}: name it {name!r}")
    return found


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
    try:
        return STRATEGIES[name]
    except KeyError:
        names = [*BUILTIN_STRATEGIES, *plugin_names("strategy")]
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
        hint = f"did you mean {' or '.join(close)}? " if close else ""
        raise SpecError(
            f"unknown strategy {name!r} ({hint}available: {', '.join(names)})"
        ) from None
