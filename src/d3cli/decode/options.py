"""Decoding options: the knobs of every strategy, which ones each reads, and their checks."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

SCORE_DTYPES = ("float32", "float64")


@dataclass(frozen=True)
class DecodeOptions:
    """Knobs of every strategy; `METHOD_OPTIONS` says which ones each strategy reads."""

    gen_length: int = 64
    block_size: int = 16
    steps: int | None = None  # vanilla: forwards over the canvas (None = gen_length)
    threshold: float | None = None  # τ (threshold) or γ (entropy, multiblock); None = default
    temperature: float = 0.0
    top_p: float = 1.0  # vanilla: sample from the top-p nucleus (Dream's baseline: 0.9)
    one_block: bool = False  # vanilla: the whole answer is one block (Dream's decoding)
    # vanilla: exactly one token per forward (LLaDA's quota), not Dream's timestep schedule
    one_token_per_forward: bool = False
    seed: int = 0
    cache: str = "none"  # threshold: none|prefix|dual; multiblock: none|delayed
    blocks: int | None = None  # multiblock: most blocks decoding at once (None = no limit)
    block_add_threshold: float = 0.1
    decoded_token_threshold: float = 0.95
    early_stop: bool = True
    cache_delay: int = 2
    refresh_interval: int | None = None  # None = no periodic refresh
    score_dtype: str = "float32"  # softmax, entropy and confidence precision


DEFAULT_THRESHOLDS = {"threshold": 0.9, "entropy": 0.5, "multiblock": 0.5}
CACHE_MODES = {"threshold": ("none", "prefix", "dual"), "multiblock": ("none", "delayed")}
COMMON_OPTIONS = ("gen_length", "block_size", "temperature")
METHOD_OPTIONS: dict[str, tuple[str, ...]] = {
    "vanilla": (*COMMON_OPTIONS, "steps", "top_p", "one_block", "one_token_per_forward"),
    "threshold": (*COMMON_OPTIONS, "threshold", "cache"),
    "entropy": (*COMMON_OPTIONS, "threshold"),
    "multiblock": (*COMMON_OPTIONS, "threshold", "blocks", "block_add_threshold",
                   "decoded_token_threshold", "early_stop", "cache", "cache_delay",
                   "refresh_interval"),
}


def resolved_threshold(method: str, options: DecodeOptions) -> float:
    """The method's τ/γ: the option when given, else the method's default."""
    return DEFAULT_THRESHOLDS[method] if options.threshold is None else options.threshold


def method_config(method: str, options: DecodeOptions) -> dict:
    """The options that define a method's run, as recorded in each result's `config`."""
    values = {name: getattr(options, name) for name in METHOD_OPTIONS[method]}
    if "steps" in values and values["steps"] is None:
        values["steps"] = options.gen_length
    if "threshold" in values:
        values["threshold"] = resolved_threshold(method, options)
    if values.get("one_token_per_forward") is False:
        del values["one_token_per_forward"]  # configs recorded before it existed stay equal
    if values.get("cache") == "none":
        for name in ("cache_delay", "refresh_interval"):
            values.pop(name, None)
    return values


def model_defaults(decoding: dict[str, dict[str, Any]], method: str) -> dict[str, Any]:
    """A model's own options for `method` (`LoadedModel.decoding`), checked by name."""
    defaults = decoding.get(method, {})
    unknown = [name for name in defaults if name not in METHOD_OPTIONS[method]]
    if unknown:
        raise ValueError(f"the model's d3_decoding defaults for {method} name {unknown[0]!r}, "
                         f"which is not an option of {method}")
    return defaults


def options_for(method: str, options: DecodeOptions) -> DecodeOptions:
    """The shared options as `method` runs them (methods without a cache run with none)."""
    return options if method in CACHE_MODES else replace(options, cache="none")


def validate(method: str, options: DecodeOptions) -> None:
    """Reject settings a method cannot run with (one-line messages); the runner calls this
    before any strategy, so the strategies assume valid options."""
    if method not in METHOD_OPTIONS:
        raise ValueError(f"unknown method {method!r}; known: {', '.join(METHOD_OPTIONS)}")
    modes = CACHE_MODES.get(method, ("none",))
    if options.cache not in modes:
        raise ValueError(f"--cache {options.cache} does not apply to {method} "
                         f"(choose from {', '.join(modes)})")
    if options.blocks is not None and options.blocks < 1:
        raise ValueError(f"--blocks must be at least 1, got {options.blocks}")
    if options.gen_length % options.block_size:
        raise ValueError(f"generation length {options.gen_length} is not a multiple of "
                         f"--block-size {options.block_size}")
    if options.score_dtype not in SCORE_DTYPES:
        raise ValueError(f"--score-dtype must be one of {', '.join(SCORE_DTYPES)}, "
                         f"got {options.score_dtype!r}")
    if not 0 < options.top_p <= 1:
        raise ValueError(f"--top-p must be in (0, 1], got {options.top_p}")
    if method == "vanilla":
        blocks = 1 if options.one_block else options.gen_length // options.block_size
        steps = options.steps
        if steps is not None and (steps < 1 or steps % blocks):
            raise ValueError(f"--steps {steps} must be a positive multiple of the number of "
                             f"blocks {blocks}")
        if options.one_token_per_forward and steps not in (None, options.gen_length):
            raise ValueError(f"--one-token-per-forward takes as many steps as the generation "
                             f"length {options.gen_length}, got --steps {steps}")


def resolve_options(method: str, model_decoding: dict[str, dict[str, Any]],
                    given: dict[str, Any], **shared: Any) -> DecodeOptions:
    """One method's options, resolved once for `d3 decode` and the lm-eval adapter alike:
    the model's own defaults for the method, under the `shared` run settings that are set
    (not None), under the `given` ones (each of which must be an option of the method),
    validated."""
    if method not in METHOD_OPTIONS:
        raise ValueError(f"unknown method {method!r}; known: {', '.join(METHOD_OPTIONS)}")
    foreign = [name for name in given if name not in METHOD_OPTIONS[method]]
    if foreign:
        raise ValueError(f"{foreign[0]} is not an option of {method} "
                         f"(its options: {', '.join(METHOD_OPTIONS[method])})")
    settings = {name: value for name, value in shared.items() if value is not None}
    options = options_for(method, DecodeOptions(
        **{**model_defaults(model_decoding, method), **settings, **given}))
    validate(method, options)
    return options
