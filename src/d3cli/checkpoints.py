"""Resolving `--model` (embedded name, local folder, hub id) and the `ModelSpec` decoders read."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from .model import D3Model

ASSETS = Path(__file__).parent / "assets"
DEFAULT_MODEL = "arith-teacher"


class ModelLoadError(ValueError):
    """A model name or folder that cannot be loaded; the message says why."""


@dataclass(frozen=True)
class ModelSpec:
    """Family facts a decoder needs, so no decoder ever names a model or a token id."""

    mask_token_id: int
    stop_token_ids: tuple[int, ...]
    pad_token_id: int
    block_size: int
    logit_shift: bool = False
    use_chat_template: bool = False


@dataclass
class LoadedModel:
    """A model ready to decode: weights, tokenizer, spec, and the name it was asked by."""

    name: str
    model: D3Model
    tokenizer: PreTrainedTokenizerBase
    spec: ModelSpec

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def embedded_models() -> list[str]:
    """Names of the models shipped inside the package."""
    return sorted(path.name for path in ASSETS.glob("*/config.json") for path in [path.parent])


def resolve_model_path(name: str) -> Path:
    """An embedded model's folder, a local folder, or a hub snapshot (downloaded if allowed)."""
    if (ASSETS / name / "config.json").is_file():
        return ASSETS / name
    local = Path(name).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise ModelLoadError(f"{local}: not a model folder (no config.json)")
        return local
    if local.exists() or name.startswith((".", "/", "~")) or name.count("/") != 1:
        raise ModelLoadError(f"model {name!r} is neither an embedded model "
                             f"({', '.join(embedded_models()) or 'none'}), a local folder, "
                             "nor a hub id of the form owner/name")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name))
    except Exception as error:  # the hub client raises many kinds; report them all the same way
        raise ModelLoadError(f"could not fetch {name!r} from the hub: {error}") from error


def spec_for(model: D3Model, tokenizer: PreTrainedTokenizerBase) -> ModelSpec:
    """Read mask, stop and pad ids from the tokenizer (falling back to the config)."""
    mask_id = tokenizer.mask_token_id
    if mask_id is None:
        mask_id = model.config.mask_token_id
    if mask_id is None:
        raise ModelLoadError(f"{model.name_or_path}: the tokenizer has no mask token")
    if tokenizer.eos_token_id is None:
        raise ModelLoadError(f"{model.name_or_path}: the tokenizer has no EOS token")
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        pad_id = tokenizer.eos_token_id
    return ModelSpec(mask_token_id=mask_id, stop_token_ids=(tokenizer.eos_token_id,),
                     pad_token_id=pad_id, block_size=model.config.block_size)


def load_model(name: str, device: str = "auto", dtype: str = "auto") -> LoadedModel:
    """Load weights, tokenizer and spec; `auto` picks CUDA + bf16 when present, else CPU + fp32."""
    path = resolve_model_path(name)
    torch_device = torch.device(pick_device(device))
    if dtype == "auto":
        dtype = "bfloat16" if torch_device.type == "cuda" else "float32"
    model = D3Model.from_pretrained(path, dtype=getattr(torch, dtype)).to(torch_device).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    return LoadedModel(name, model, tokenizer, spec_for(model, tokenizer))


def encode_prompt(loaded: LoadedModel, prompt: str) -> list[int]:
    """Prompt token ids: through the chat template when the spec asks for it, else plain."""
    tokenizer = loaded.tokenizer
    if loaded.spec.use_chat_template:
        messages = [{"role": "user", "content": prompt}]
        return list(tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                                  tokenize=True, return_dict=False))
    return tokenizer(prompt, add_special_tokens=False).input_ids


def pick_device(device: str) -> str:
    """`auto` → cuda when available, else cpu; anything else is passed through."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device
