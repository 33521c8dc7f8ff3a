"""How each model samples when a strategy leaves an option unset: its sampling profile.

A strategy's spec string may set any sampling option (``temperature``, ``top_k``...);
the options it leaves unset come from the model's profile, for the kind of
problem (code needs room for a whole function). The embedded models' profiles
were chosen by ``benchmarks/defaults.py`` on development suites and checked on
others (benchmarks/RESULTS.md); a model the study did not cover gets
`LOCAL_PROFILE` (a local backend takes every option) or `OPENAI_PROFILE` (only
options every OpenAI-compatible endpoint accepts).
"""

from __future__ import annotations

from dataclasses import dataclass

from thinktank.models.base import Model, Sampling


@dataclass(frozen=True)
class SamplingProfile:
    """``answer``: problems answered with a number, a word or a letter; ``code``: programs."""

    answer: Sampling
    code: Sampling

    def for_kind(self, kind: str) -> Sampling:
        return self.code if kind == "code" else self.answer

    def describe(self) -> str:
        """One line for people: ``T=0.8 top_k=40 min_p=0.05, 160 tokens; code: ...``."""
        answer, code = _describe(self.answer), _describe(self.code)
        return answer if answer == code else f"{answer}; code: {code}"


def _describe(sampling: Sampling) -> str:
    parts = [f"T={sampling.temperature:g}"]
    if sampling.top_k:
        parts.append(f"top_k={sampling.top_k}")
    if sampling.top_p < 1:
        parts.append(f"top_p={sampling.top_p:g}")
    if sampling.min_p:
        parts.append(f"min_p={sampling.min_p:g}")
    return f"{' '.join(parts)}, {sampling.max_tokens} tokens"


#: Any OpenAI-compatible endpoint: its own parameters only, room for a longer answer.
OPENAI_PROFILE = SamplingProfile(
    answer=Sampling(temperature=0.7, top_p=1.0, max_tokens=1024),
    code=Sampling(temperature=0.7, top_p=1.0, max_tokens=1024),
)

#: llama.cpp's own default truncation: a small model's tail is mostly junk.
_LLAMA_TRUNCATION = {"top_k": 40, "top_p": 0.95, "min_p": 0.05}

#: A local model the study did not cover: llama.cpp's defaults.
LOCAL_PROFILE = SamplingProfile(
    answer=Sampling(temperature=0.8, max_tokens=256, **_LLAMA_TRUNCATION),
    code=Sampling(temperature=0.8, max_tokens=256, **_LLAMA_TRUNCATION),
)

#: SmolLM2-135M, chosen on chain_sum, basic_arithmetic and products (seed 101, 90
#: problems; benchmarks/RESULTS.md, "defaults.py"): llama.cpp's truncation at T=0.8
#: gave the best majority-of-8 (0.43, against 0.40 for the old T=0.7 untruncated
#: sampling); answers end within 100 tokens (160 added nothing). Code keeps the local
#: defaults: HumanEval's first 20 are beyond it (none greedily, 3 of 160 samples).
SMOLLM2_PROFILE = SamplingProfile(
    answer=Sampling(temperature=0.8, max_tokens=100, **_LLAMA_TRUNCATION),
    code=LOCAL_PROFILE.code,
)

#: Gemma 3 270M (a base model, asked with few-shot examples), chosen on the same
#: suites: untruncated sampling at T=0.5 gave the best majority-of-8 (0.49; T=0.3
#: 0.48, llama.cpp's truncation at T=0.5 0.47, at T=0.8 0.43); its answers end within
#: a dozen tokens, so 64 lose nothing. Its greedy answer is about as good (0.48):
#: voting buys this model little. Code was not studied.
GEMMA3_PROFILE = SamplingProfile(
    answer=Sampling(temperature=0.5, top_p=1.0, max_tokens=64),
    code=LOCAL_PROFILE.code,
)

#: The embedded models, by registry name (the torch backend runs SmolLM2's weights).
PROFILES: dict[str, SamplingProfile] = {
    "smollm2": SMOLLM2_PROFILE,
    "torch:smollm2": SMOLLM2_PROFILE,
    "gemma3-270m": GEMMA3_PROFILE,
}


def sampling_profile(model: Model) -> SamplingProfile:
    """The model's profile: its ``sampling_profile`` attribute where the backend sets
    one (every thinktank backend does), else the OpenAI-style profile."""
    profile = getattr(model, "sampling_profile", None)
    return profile if isinstance(profile, SamplingProfile) else OPENAI_PROFILE
