"""Spec strings: ``NAME[:key=value,...]`` -> a configured dataclass instance."""

from __future__ import annotations

import dataclasses
import types
import typing
import warnings
from typing import Any, TypeVar

from thinktank.errors import SpecError

T = TypeVar("T")


def parse_spec(spec: str) -> tuple[str, dict[str, str]]:
    """Split ``"self-consistency:n=8,temperature=0.7"`` into name and raw options."""
    if not isinstance(spec, str) or not spec.strip():
        raise SpecError("empty spec")
    name, _, rest = spec.strip().partition(":")
    name = name.strip()
    if not name:
        raise SpecError(f"spec {spec!r} has no name before ':'")
    options: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = part.partition("=")
        key = key.strip()
        if not eq or not key:
            raise SpecError(f"in spec {spec!r}: expected key=value, got {part!r}")
        if key in options:
            raise SpecError(f"in spec {spec!r}: {key!r} given twice")
        options[key] = value.strip()
    return name, options


def build(cls: type[T], options: dict[str, str], *, what: str) -> T:
    """Instantiate dataclass ``cls`` from string options, converting each to its field type."""
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for key, raw in _renamed(fields, options, what).items():
        if key not in fields:
            known = ", ".join(sorted(fields)) or "none"
            raise SpecError(f"{what} has no option {key!r} (options: {known})")
        if raw.startswith("<") and raw.endswith(">"):
            raise SpecError(
                f"{what} option {key}={raw}: an object option cannot be rebuilt from its spec:"
                " register it as a plugin (README 'Writing a plugin') to use it by name"
            )
        kwargs[key] = _convert(raw, hints[key], f"{what} option {key}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise SpecError(f"{what}: {exc}") from None


class RenamedOptionWarning(DeprecationWarning):
    """A spec spelled an option by its old name (accepted for one release more)."""


def _renamed(
    fields: dict[str, dataclasses.Field], options: dict[str, str], what: str
) -> dict[str, str]:
    """``options`` with each option's old name (its field's `FORMERLY`) replaced by
    its name, warning of each, so that the specs of earlier runs still build."""
    new_names = {f.metadata[FORMERLY]: name for name, f in fields.items() if FORMERLY in f.metadata}
    renamed = {}
    for key, raw in options.items():
        if key in fields or key not in new_names:
            renamed[key] = raw
            continue
        name = new_names[key]
        if name in options:
            raise SpecError(f"{what}: give {name} only ({key} is its old name)")
        message = (
            f"{what}: option {key!r} is now called {name!r} ({key!r} stops working next release)"
        )
        warnings.warn(RenamedOptionWarning(message), stacklevel=4)  # build_strategy's caller
        renamed[name] = raw
    return renamed


#: The key of a spec option's one-line meaning in its dataclass field's metadata.
MEANING = "meaning"
#: The key of the name a spec option had before, which specs may still use, with a
#: `RenamedOptionWarning`.
FORMERLY = "formerly"


def option(default: T, meaning: str, *, formerly: str = "") -> T:
    """A spec option's dataclass field: its default and what it means in one line, which
    ``thinktank strategies NAME`` shows (every strategy option must have one), and the
    name it ``formerly`` had, if it was renamed."""
    metadata = {MEANING: meaning, FORMERLY: formerly} if formerly else {MEANING: meaning}
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass(frozen=True)
class OptionInfo:
    """One option of a spec, as people read it: ``n``, ``int``, ``8``, "samples drawn"."""

    name: str
    type: str
    default: Any
    meaning: str | None


def describe_options(cls: type) -> list[OptionInfo]:
    """Every option of dataclass ``cls``, each with the meaning the nearest class declaring
    it gave (a subclass that only changes a default keeps it): the options ``cls`` adds
    first, then those of its bases, the most basic (sampling) last."""
    hints = typing.get_type_hints(cls)
    options = [
        OptionInfo(f.name, _type_name(hints[f.name]), f.default, _meaning(cls, f.name))
        for f in dataclasses.fields(cls)
        if f.init
    ]
    return sorted(options, key=lambda option: _first_declared(cls, option.name))


def _first_declared(cls: type, name: str) -> int:
    """How far down ``cls``'s MRO the most basic class declaring option ``name`` is."""
    return max(
        i for i, base in enumerate(cls.__mro__) if name in vars(base).get("__annotations__", {})
    )


def _meaning(cls: type, name: str) -> str | None:
    for base in cls.__mro__:
        declared = vars(base).get("__dataclass_fields__", {}).get(name)
        if declared is not None and MEANING in declared.metadata:
            return str(declared.metadata[MEANING])
    return None


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " | ".join(_type_name(arg) for arg in typing.get_args(hint))
    return "None" if hint is type(None) else getattr(hint, "__name__", str(hint))


def options_string(obj: object, *, only_changed: bool = False) -> str:
    """``n=8,temperature=0.7``: the options of a dataclass class (its defaults) or instance.

    ``only_changed`` leaves out options an instance has at their default.
    """
    parts = []
    for f in dataclasses.fields(obj):  # type: ignore[arg-type]
        value = getattr(obj, f.name, f.default)
        if f.init and not (only_changed and value == f.default):
            parts.append(f"{f.name}={_written(value)}")
    return ",".join(parts)


def _written(value: object) -> object:
    """An option's value as a spec writes it: an object given from Python (a verifier)
    has no spelling, so it shows as a placeholder, ``<MyVerifier>``, that `build` refuses."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return f"<{type(value).__name__}>"


def _convert(raw: str, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if raw.lower() in ("none", "") and len(args) < len(typing.get_args(hint)):
            return None
        hint = args[0]
    try:
        if hint is bool:
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if hint in (int, float, str):
            return hint(raw)
    except ValueError:
        raise SpecError(f"{where}: {raw!r} is not a valid {hint.__name__}") from None
    raise SpecError(f"{where}: cannot be set from a spec string")
