"""Resolving `--model`: an embedded name, a local folder or a hub id, to a folder."""

from __future__ import annotations

from pathlib import Path

from ..families import ModelLoadError

ASSETS = Path(__file__).parents[1] / "assets"
DEFAULT_MODEL = "arith-d3"  # what `d3 decode` runs: the distilled student
DEFAULT_TEACHER = "arith-teacher"  # what `d3 trajectories` and `d3 distill` start from
ADAPTER_CONFIG = "adapter_config.json"  # a LoRA student saved by `d3 distill` without --merge
# What a hub snapshot needs: configs, weights, tokenizer files; never remote code or .bin copies.
HUB_FILES = ["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken", "*.jinja"]


def embedded_models() -> list[str]:
    """Names of the models shipped inside the package."""
    return sorted(path.name for path in ASSETS.glob("*/config.json") for path in [path.parent])


def is_embedded(name: str) -> bool:
    return (ASSETS / name / "config.json").is_file()


def canonical_name(name: str) -> str:
    """How a model name is recorded and compared: a local folder as its absolute resolved
    path (so `./llada` and `/abs/llada` are one model), an embedded name or hub id as typed."""
    local = Path(name).expanduser()
    return str(local.resolve()) if not is_embedded(name) and local.is_dir() else name


def adapter_base_name(base: str, adapter: Path) -> str:
    """The base model as an adapter folder records it, so that it resolves the same from any
    folder: an embedded name or hub id as typed, a folder beside the adapter as ../NAME,
    any other folder as its absolute path."""
    name = canonical_name(base)
    if not Path(name).is_absolute():
        return name
    return f"../{Path(name).name}" if Path(name).parent == adapter.resolve().parent else name


def adapter_base_path(base: str, adapter: Path) -> str:
    """The `--model` name of the base an adapter folder records (`adapter_base_name`): a
    relative path is resolved against the adapter folder, never the working folder."""
    if is_embedded(base):
        return base
    local = Path(base).expanduser()
    if local.is_absolute():
        return str(local)
    beside = adapter / local
    hub_id = base.count("/") == 1 and not base.startswith(".")
    return base if hub_id and not beside.exists() else str(beside)


def resolve_model_path(name: str) -> Path:
    """An embedded model's folder, a local folder, or a hub snapshot (downloaded if allowed)."""
    if is_embedded(name):
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
