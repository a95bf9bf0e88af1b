"""Decoding: one driver owns the loop; each strategy (one module each) plans forwards and
picks commits as device tensor operations. `STRATEGIES` maps `--method` names to them."""

from __future__ import annotations

from .driver import Decoded, StrategyFactory, decode_prompts
from .entropy import entropy
from .multiblock import Multiblock
from .options import (
    CACHE_MODES,
    DEFAULT_THRESHOLDS,
    METHOD_OPTIONS,
    DecodeOptions,
    method_config,
    resolve_options,
    resolved_threshold,
    validate,
)
from .rows import SAFETY_CAP_FORWARDS, noise_key
from .scoring import Scores, score
from .threshold import threshold
from .vanilla import vanilla

STRATEGIES: dict[str, StrategyFactory] = {
    "vanilla": vanilla,
    "threshold": threshold,
    "entropy": entropy,
    "multiblock": Multiblock,
}

__all__ = [
    "CACHE_MODES", "DEFAULT_THRESHOLDS", "METHOD_OPTIONS", "SAFETY_CAP_FORWARDS", "STRATEGIES",
    "DecodeOptions", "Decoded", "Scores", "decode_prompts", "method_config", "noise_key",
    "resolve_options", "resolved_threshold", "score", "validate",
]
