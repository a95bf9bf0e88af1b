"""Resolving `--model` (embedded name, local folder, hub id) and the `ModelSpec` decoders read.

d3's own folders load with `D3Model.from_pretrained`; LLaDA and Dream folders (and students
saved in their formats) are mapped onto `D3Model` by their `families.Family`: the model is
built on the meta device and filled from the safetensors shards, never through remote code.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import transformers
from safetensors import SafetensorError, safe_open
from transformers import AutoTokenizer, GenerationConfig, PreTrainedTokenizerBase
from transformers.utils.hub import get_checkpoint_shard_files

from .families import D3, Family, ModelLoadError, detect_family, token_facts_family
from .model import D3Config, D3Model

ASSETS = Path(__file__).parent / "assets"
DEFAULT_MODEL = "arith-d3"  # what `d3 decode` runs: the distilled student
DEFAULT_TEACHER = "arith-teacher"  # what `d3 trajectories` and `d3 distill` start from
# What a hub snapshot needs: configs, weights, tokenizer files; never remote code or .bin copies.
ADAPTER_CONFIG = "adapter_config.json"  # a LoRA student saved by `d3 distill` without --merge
GENERATION_CONFIG = "generation_config.json"
HUB_FILES = ["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken", "*.jinja"]


@dataclass(frozen=True)
class ModelSpec:
    """Family facts a decoder needs, so no decoder ever names a model or a token id."""

    mask_token_id: int
    stop_token_ids: tuple[int, ...]
    pad_token_id: int
    block_size: int
    logit_shift: bool = False
    chat_template: str = "never"  # which prompts are templated: always | code | never
    prompt_wrappers: tuple[tuple[str, str], ...] = ()  # (lm-eval task, "...{prompt}...")
    commit_lowest_entropy: bool = True  # §3.1 step 9: LLaDA always commits the best (A7)
    strict_entropy_threshold: bool = False  # Dream selects H < γ, LLaDA H ≤ γ (A7)
    eos_token_ids: tuple[int, ...] = ()  # early stop fires on these (empty: every stop id)
    vanilla_by_entropy: bool = False  # vanilla decodes as Dream's own (entropy, its schedule)


@dataclass
class LoadedModel:
    """A model ready to decode: weights, tokenizer, spec, the name it was asked by, and the
    family whose token facts it follows (d3, LLaDA, Dream)."""

    name: str
    model: D3Model
    tokenizer: PreTrainedTokenizerBase
    spec: ModelSpec
    family: str = D3.name
    decoding: dict[str, dict[str, Any]] = field(default_factory=dict)  # see decoding_defaults

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
        if not any((local / marker).is_file() for marker in ("config.json", ADAPTER_CONFIG)):
            raise ModelLoadError(f"{local}: not a model folder (no config.json)")
        return local
    if local.exists() or name.startswith((".", "/", "~")) or name.count("/") != 1:
        raise ModelLoadError(f"model {name!r} is neither an embedded model "
                             f"({', '.join(embedded_models()) or 'none'}), a local folder, "
                             "nor a hub id of the form owner/name")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name, allow_patterns=HUB_FILES))
    except Exception as error:  # the hub client raises many kinds; report them all the same way
        reason = " ".join(str(error).split())  # hub errors span lines; errors here are one
        raise ModelLoadError(f"could not fetch {name!r} from the hub: {reason}") from error


def agreed_token_id(where: str, what: str,
                    sources: Iterable[tuple[str, int | None]]) -> int | None:
    """The one id that every source naming a token gives; an error when they disagree."""
    found = {source: value for source, value in sources if value is not None}
    if len(set(found.values())) > 1:
        given = ", ".join(f"{source} says {value}" for source, value in found.items())
        raise ModelLoadError(f"{where}: conflicting {what} token ids ({given})")
    return next(iter(found.values()), None)


def as_ids(value: Any) -> list[int]:
    """config.json writes token ids as an int, a list of ints, or null."""
    if value is None:
        return []
    return [int(item) for item in value] if isinstance(value, (list, tuple)) else [int(value)]


def spec_for(model: D3Model, tokenizer: PreTrainedTokenizerBase, family: Family = D3) -> ModelSpec:
    """Token facts from the tokenizer and config.json (which must agree), plus family facts."""
    config, where = model.config, model.name_or_path
    vocab = tokenizer.get_vocab()
    mask_id = agreed_token_id(where, "mask", [
        ("the tokenizer", tokenizer.mask_token_id),
        ("config.json", config.mask_token_id),
        (f"the vocabulary's {family.mask_token}", vocab.get(family.mask_token or "")),
    ])
    if mask_id is None:
        raise ModelLoadError(f"{where}: the tokenizer has no mask token "
                             "and config.json no mask_token_id")
    if not 0 <= mask_id < config.vocab_size:
        raise ModelLoadError(f"{where}: mask token id {mask_id} is outside the model's "
                             f"vocabulary of {config.vocab_size}")
    eos_ids = as_ids(tokenizer.eos_token_id) + as_ids(config.eos_token_id)
    if not eos_ids:
        raise ModelLoadError(f"{where}: the tokenizer has no EOS token "
                             "and config.json no eos_token_id")
    end_of_turn = [vocab[token] for token in family.end_of_turn_tokens if token in vocab]
    stop_ids = tuple(dict.fromkeys(eos_ids + end_of_turn))
    pad_id = next((value for value in (tokenizer.pad_token_id, config.pad_token_id)
                   if value is not None), eos_ids[0])
    return ModelSpec(
        mask_token_id=mask_id, stop_token_ids=stop_ids, pad_token_id=pad_id,
        eos_token_ids=tuple(dict.fromkeys(eos_ids)),
        block_size=config.block_size, logit_shift=family.logit_shift,
        chat_template=family.chat_template if tokenizer.chat_template is not None else "never",
        prompt_wrappers=family.prompt_wrappers,
        commit_lowest_entropy=family.commit_lowest_entropy,
        strict_entropy_threshold=family.strict_entropy_threshold,
        vanilla_by_entropy=family.vanilla_by_entropy)


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
        raise ModelLoadError(f"{folder}: cannot load the tokenizer ({reason})") from error


def load_model(name: str, device: str = "auto", dtype: str = "auto") -> LoadedModel:
    """Load weights, tokenizer and spec; `auto` picks CUDA + bf16 when present, else CPU + fp32."""
    path = resolve_model_path(name)
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
                       facts.name, decoding_defaults(path, facts))


def decoding_defaults(folder: Path, family: Family = D3) -> dict[str, dict[str, Any]]:
    """The model's own `d3 decode` defaults per method: the family's baseline settings under
    the `d3_decoding` entry of its generation_config.json (e.g. {"multiblock":
    {"threshold": 0.1, "blocks": 4}}); options given on the command line win."""
    defaults = {}
    if (folder / GENERATION_CONFIG).is_file():
        defaults = getattr(GenerationConfig.from_pretrained(folder), "d3_decoding", None) or {}
    if not isinstance(defaults, dict) or not all(isinstance(v, dict) for v in defaults.values()):
        raise ModelLoadError(f"{folder / GENERATION_CONFIG}: d3_decoding must map each method "
                             "to its options")
    if family.vanilla_defaults:
        defaults = {**defaults,
                    "vanilla": {**dict(family.vanilla_defaults), **defaults.get("vanilla", {})}}
    return defaults


def load_adapter(name: str, folder: Path, device: str, dtype: str) -> LoadedModel:
    """A LoRA adapter folder: its base model (named in adapter_config.json) with the adapter
    merged in."""
    from peft import PeftModel

    base_name = read_json(folder / ADAPTER_CONFIG).get("base_model_name_or_path")
    if not base_name:
        raise ModelLoadError(f"{folder / ADAPTER_CONFIG}: names no base model")
    base = load_model(base_name, device, dtype)
    model = PeftModel.from_pretrained(base.model, folder).merge_and_unload()
    return replace(base, name=name, model=model.eval(),
                   decoding={**base.decoding, **decoding_defaults(folder)})


def template_markers(tokenizer: PreTrainedTokenizerBase) -> list[str]:
    """The special tokens the chat template writes around a user turn (e.g. <|im_start|>)."""
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": "\x00"}],
                                             add_generation_prompt=True, tokenize=False)
    specials = {token.content for token in tokenizer.added_tokens_decoder.values()}
    return [token for token in specials | set(tokenizer.all_special_tokens)
            if token and token in rendered]


def uses_template(spec: ModelSpec, kind: str | None) -> bool:
    """Whether a prompt of a task of `kind` ("code", "text", or None for a free prompt: a
    prompts file, a trajectory dataset) goes through the chat template."""
    return spec.chat_template == "always" or (spec.chat_template == "code" and kind != "text")


def encode_prompt(loaded: LoadedModel, prompt: str, messages: list[dict[str, str]] | None = None,
                  kind: str | None = None, task: str = "") -> list[int]:
    """Prompt token ids as the model family's reference harness feeds them.

    `prompt` is the raw text and `messages` the same prompt as chat turns (default: one
    user turn); a closing assistant turn is a prefix the answer continues. Templated (see
    `uses_template`), the user turn first gets the family's wrapper for `task`, if any. A
    prompt that already carries the template's markers (a templated dataset question) is
    tokenized as it is, so the template is applied at most once (A1).
    """
    tokenizer = loaded.tokenizer
    if not uses_template(loaded.spec, kind) or any(
            marker in prompt for marker in template_markers(tokenizer)):
        return tokenizer(prompt, add_special_tokens=False).input_ids
    turns = [dict(turn) for turn in messages or [{"role": "user", "content": prompt}]]
    wrapper = dict(loaded.spec.prompt_wrappers).get(task)
    user = next(turn for turn in reversed(turns) if turn["role"] == "user")
    if wrapper:
        user["content"] = wrapper.format(prompt=user["content"].strip())
    prefix = turns[-1]["role"] == "assistant"
    return list(tokenizer.apply_chat_template(
        turns, add_generation_prompt=not prefix, continue_final_message=prefix, tokenize=True,
        return_dict=False))


def save_model(model: torch.nn.Module, folder: Path) -> None:
    """`save_pretrained` into `folder`, with the files readable as the user's umask allows
    (transformers writes its weights through a private temporary file, mode 0600)."""
    model.save_pretrained(folder)
    umask = os.umask(0)
    os.umask(umask)
    for path in folder.iterdir():
        if path.is_file():
            path.chmod(0o666 & ~umask)


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
