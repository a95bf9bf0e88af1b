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
