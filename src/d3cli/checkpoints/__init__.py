"""Models by name: resolve a `--model` name to a folder (`resolve`), load it with the
`ModelSpec` decoders read (`load`, `spec`), write one (`export`), and encode prompts the
way its family's harness does (`prompts`). `families` is the one place that knows the
model families."""

from ..families import ModelLoadError
from .export import save_model, save_student
from .load import LoadedModel, decoding_defaults, load_model, pick_device
from .prompts import encode_prompt, uses_template
from .resolve import (
    ASSETS,
    DEFAULT_MODEL,
    DEFAULT_TEACHER,
    adapter_base_name,
    canonical_name,
    embedded_models,
    resolve_model_path,
)
from .spec import ModelSpec, spec_for

__all__ = ["ASSETS", "DEFAULT_MODEL", "DEFAULT_TEACHER", "LoadedModel", "ModelLoadError",
           "ModelSpec", "adapter_base_name", "canonical_name", "decoding_defaults",
           "embedded_models", "encode_prompt", "load_model", "pick_device",
           "resolve_model_path", "save_model", "save_student", "spec_for", "uses_template"]
