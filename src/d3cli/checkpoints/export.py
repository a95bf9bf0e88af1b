"""Writing a model folder that `--model` loads: d3's own format, or a student in the format
of its LLaDA or Dream teacher (what the teacher's own code, transformers, lm-eval's HF
backends and serving engines load)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from huggingface_hub import save_torch_state_dict

from ..families import D3, Family, detect_family
from .load import LoadedModel, read_json

# What a teacher folder holds besides its config and weights that its format needs: the
# tokenizer, its generation settings, and its own modelling code (`*.py`).
TEACHER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                 "added_tokens.json", "vocab.json", "merges.txt", "tokenizer.model",
                 "chat_template.jinja", "generation_config.json")


def save_model(model: torch.nn.Module, folder: Path) -> None:
    """`save_pretrained` into `folder` (d3's own format, or a PEFT adapter)."""
    model.save_pretrained(folder)
    readable(folder)


def save_student(model: torch.nn.Module, teacher: LoadedModel, folder: Path) -> None:
    """A student's full weights in its teacher's own format when the teacher is a LLaDA or
    Dream folder; in d3's, with the teacher's tokenizer, when it is one of d3's models."""
    source = teacher.folder
    family = detect_family(read_json(source / "config.json"), source) if source else D3
    if source is None or family.build_config is None:
        save_model(model, folder)
        teacher.tokenizer.save_pretrained(folder)
    else:
        save_in_teacher_format(model, source, family, folder)


def save_in_teacher_format(model: torch.nn.Module, teacher: Path, family: Family,
                           folder: Path) -> None:
    """`model` (d3's `D3Model`) as a checkpoint of `teacher`'s family: the teacher's
    config.json, the weights under the teacher's parameter names (`Family.checkpoint_name`)
    in safetensors (sharded as transformers shards), the teacher's tokenizer and code."""
    config = read_json(teacher / "config.json")
    if family.tie_key and config.get(family.tie_key):
        config[family.tie_key] = False  # d3 trains the head apart from the embedding
    state = {family.checkpoint_name(name): tensor.detach().contiguous()
             for name, tensor in model.state_dict().items()}
    folder.mkdir(parents=True, exist_ok=True)
    save_torch_state_dict(state, folder)
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    for path in teacher.iterdir():
        if path.is_file() and (path.name in TEACHER_FILES or path.suffix == ".py"):
            shutil.copyfile(path, folder / path.name)
    readable(folder)


def readable(folder: Path) -> None:
    """The folder's files readable as the user's umask allows (transformers writes its
    weights through a private temporary file, mode 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    for path in folder.iterdir():
        if path.is_file():
            path.chmod(0o666 & ~umask)
