"""Loading a model folder: weights, tokenizer, `ModelSpec` and decoding defaults.

d3's own folders load with `D3Model.from_pretrained`; LLaDA and Dream folders (and students
saved in their formats) are mapped onto `D3Model` by their `families.Family`: the model is
built on the meta device and filled from the safetensors shards, never through remote code."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import transformers
from safetensors import SafetensorError, safe_open
from transformers import AutoTokenizer, PreTrainedTokenizerBase
from transformers.utils.hub import get_checkpoint_shard_files

from ..families import D3, Family, ModelLoadError, detect_family, token_facts_family
from ..model import D3Config, D3Model
from .resolve import ADAPTER_CONFIG, adapter_base_path, canonical_name, resolve_model_path
from .spec import ModelSpec, spec_for

GENERATION_CONFIG = "generation_config.json"


@dataclass
class LoadedModel:
    """A model ready to decode: weights, tokenizer, spec, the name it was asked by, the
    family whose token facts it follows (d3, LLaDA, Dream), and its folder."""

    name: str
    model: D3Model
    tokenizer: PreTrainedTokenizerBase
    spec: ModelSpec
    family: str = D3.name
    decoding: dict[str, dict[str, Any]] = field(default_factory=dict)  # see decoding_defaults
    folder: Path | None = None  # where its config.json is (a LoRA student: its base's)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"{path}: unreadable ({error})") from error


def weight_files(folder: Path) -> list[Path]:
    """The folder's safetensors files: the shards its index names, or model.safetensors."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards, _ = get_checkpoint_shard_files(str(folder), str(index))
        except (OSError, ValueError, KeyError) as error:
            raise ModelLoadError(f"{index}: unusable shard index ({error})") from error
        absent = [Path(shard).name for shard in shards if not Path(shard).is_file()]
        if absent:
            raise ModelLoadError(f"{index}: names shard {absent[0]}, which is not in the folder")
        return [Path(shard) for shard in shards]
    if (folder / "model.safetensors").is_file():
        return [folder / "model.safetensors"]
    raise ModelLoadError(f"{folder}: no safetensors weights "
                         "(model.safetensors or model.safetensors.index.json)")


def read_mapped_weights(folder: Path, family: Family, device: torch.device,
                        dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Every tensor of the folder under d3's parameter name, on `device` in `dtype`."""
    state: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    for file in weight_files(folder):
        try:
            shard = safe_open(file, framework="pt", device=str(device))
        except Exception as error:  # SafetensorError, OSError, ...: one message for all
            raise ModelLoadError(f"{file}: unreadable safetensors file ({error})") from error
        with shard:
            for key in shard.keys():
                target = family.rename(key)
                if target is None:
                    if not family.is_ignored(key):
                        unexpected.append(key)
                    continue
                if target in state:
                    raise ModelLoadError(f"{folder}: weight {key!r} appears twice")
                state[target] = shard.get_tensor(key).to(dtype)
    if unexpected:
        raise ModelLoadError(f"{folder}: {len(unexpected)} weights do not fit the {family.name} "
                             f"layout, e.g. {unexpected[0]!r}")
    return state


def load_mapped_model(folder: Path, family: Family, config: D3Config, device: torch.device,
                      dtype: torch.dtype) -> D3Model:
    """d3's model built on the meta device and filled with the folder's renamed weights."""
    tied = config.tie_word_embeddings
    config.tie_word_embeddings = False  # a tied head is loaded as a copy of the embedding
    config.name_or_path = str(folder)
    config.dtype = dtype
    config.source_family = family.name  # kept by save_pretrained: see token_facts_family
    with torch.device("meta"):
        model = D3Model(config)
    expected = model.state_dict()
    state = read_mapped_weights(folder, family, device, dtype)
    if tied and "lm_head.weight" not in state and "embed_tokens.weight" in state:
        state["lm_head.weight"] = state["embed_tokens.weight"].clone()
    missing = sorted(expected.keys() - state.keys(), key=natural_order)
    if missing:
        raise ModelLoadError(f"{folder}: the {family.name} weights lack {missing[0]} "
                             f"(d3's name; {len(missing)} missing in all)")
    for name in sorted(state, key=natural_order):
        tensor = state[name]
        if tensor.shape != expected[name].shape:
            raise ModelLoadError(f"{folder}: weight for {name} has shape {tuple(tensor.shape)}, "
                                 f"config.json implies {tuple(expected[name].shape)}")
    model.load_state_dict(state, strict=True, assign=True)
    return model


def natural_order(name: str) -> tuple:
    """Sort key that puts layers.2 before layers.10."""
    return tuple(int(part) if part.isdigit() else -1 for part in name.split(".")), name


def declared_tokenizer_class(folder: Path) -> str | None:
    """The tokenizer class the folder's `tokenizer_config.json` declares, when transformers
    has it built in (a remote-code class such as Dream's `DreamTokenizer` gives None)."""
    config = folder / "tokenizer_config.json"
    name = read_json(config).get("tokenizer_class") if config.is_file() else None
    return name if isinstance(name, str) and hasattr(transformers, name) else None


def load_tokenizer(folder: Path, family: Family) -> PreTrainedTokenizerBase:
    """The folder's declared tokenizer class when transformers has it built in, else the
    family's built-in stand-in for its remote code; never remote code. d3: AutoTokenizer."""
    try:
        name = declared_tokenizer_class(folder) or family.tokenizer_class
        if name:
            return getattr(transformers, name).from_pretrained(folder)
        return AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
    except Exception as error:  # tokenizer loading raises many kinds; report them alike
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelLoadError(f"{folder}: cannot load the tokenizer "
                             f"({missing_tokenizer_files(folder) or reason})") from error


def missing_tokenizer_files(folder: Path) -> str | None:
    """What the folder lacks to hold any tokenizer (None when it has the files of one)."""
    has = [(folder / name).is_file() for name in ("tokenizer.json", "tokenizer.model")]
    pair = (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()
    if any(has) or pair or any(folder.glob("*.tiktoken")):
        return None
    return ("the folder has no tokenizer file: tokenizer.json, vocab.json with merges.txt, "
            "tokenizer.model or *.tiktoken")


def load_model(name: str, device: str = "auto", dtype: str = "auto") -> LoadedModel:
    """Load weights, tokenizer and spec; `auto` picks CUDA + bf16 when present, else CPU + fp32.
    The model is named as it is recorded (`canonical_name`: a local folder by its absolute
    path)."""
    path, name = resolve_model_path(name), canonical_name(name)
    if not (path / "config.json").is_file():
        return load_adapter(name, path, device, dtype)
    torch_device = torch.device(pick_device(device))
    if dtype == "auto":
        dtype = "bfloat16" if torch_device.type == "cuda" else "float32"
    torch_dtype = getattr(torch, dtype, None)
    if not isinstance(torch_dtype, torch.dtype):
        raise ModelLoadError(f"unknown dtype {dtype!r} (float32, bfloat16, float16 or auto)")
    raw = read_json(path / "config.json")
    family = detect_family(raw, path)
    try:
        if family.build_config is None:
            model = D3Model.from_pretrained(path, dtype=torch_dtype).to(torch_device)
        else:
            config = family.build_config(raw, path)
            model = load_mapped_model(path, family, config, torch_device, torch_dtype)
    except (SafetensorError, OSError, RuntimeError) as error:  # a cut or corrupt file
        reason = " ".join(str(error).split())[:200]
        raise ModelLoadError(f"{path}: cannot read the weights ({reason})") from None
    facts = token_facts_family(raw, family)
    tokenizer = load_tokenizer(path, facts)
    return LoadedModel(name, model.eval(), tokenizer, spec_for(model, tokenizer, facts),
                       facts.name, decoding_defaults(path, facts), path)


def decoding_defaults(folder: Path, family: Family = D3) -> dict[str, dict[str, Any]]:
    """The model's own `d3 decode` defaults per method: the family's baseline settings under
    the `d3_decoding` entry of its generation_config.json (e.g. {"multiblock":
    {"threshold": 0.1, "blocks": 4}}); options given on the command line win."""
    defaults = {}
    if (folder / GENERATION_CONFIG).is_file():  # read as JSON: GenerationConfig would warn
        # about the family's own sampling flags (Dream's temperature without do_sample)
        defaults = read_json(folder / GENERATION_CONFIG).get("d3_decoding") or {}
    if not isinstance(defaults, dict) or not all(isinstance(v, dict) for v in defaults.values()):
        raise ModelLoadError(f"{folder / GENERATION_CONFIG}: d3_decoding must map each method "
                             "to its options")
    if family.vanilla_defaults:
        defaults = {**defaults,
                    "vanilla": {**dict(family.vanilla_defaults), **defaults.get("vanilla", {})}}
    return defaults


def load_adapter(name: str, folder: Path, device: str, dtype: str) -> LoadedModel:
    """A LoRA adapter folder: its base model (named in adapter_config.json; a relative path
    from the adapter folder) with the adapter merged in."""
    from peft import PeftModel

    settings = folder / ADAPTER_CONFIG
    base_name = read_json(settings).get("base_model_name_or_path")
    if not base_name:
        raise ModelLoadError(f"{settings}: names no base model")
    try:
        base = load_model(adapter_base_path(base_name, folder), device, dtype)
    except ModelLoadError as error:
        raise ModelLoadError(f"{settings}: its base model {base_name!r} does not load "
                             f"({error})") from None
    model = PeftModel.from_pretrained(base.model, folder).merge_and_unload()
    return replace(base, name=name, model=model.eval(),
                   decoding={**base.decoding, **decoding_defaults(folder)})


def pick_device(device: str) -> str:
    """`auto` → cuda when available, else cpu. Under a launcher (`LOCAL_RANK` set by
    `accelerate launch` or `torchrun`) a bare `cuda` is this process's own GPU,
    cuda:LOCAL_RANK, never every rank's GPU 0. A device this machine lacks is a
    `ModelLoadError` naming what it has."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    kind, _, index = device.partition(":")
    if kind not in ("cpu", "cuda") or (index and not index.isdigit()):
        raise ModelLoadError(f"unknown device {device!r} (cpu, cuda, cuda:N or auto)")
    if kind == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if not count:
            raise ModelLoadError(f"device {device!r}: this machine has no CUDA device "
                                 f"(torch {torch.__version__}); use --device cpu")
        if index and int(index) >= count:
            raise ModelLoadError(f"device {device!r}: this machine has {count} CUDA "
                                 f"device(s), cuda:0 to cuda:{count - 1}")
    if device == "cuda" and "LOCAL_RANK" in os.environ:
        return f"cuda:{int(os.environ['LOCAL_RANK'])}"
    return device
