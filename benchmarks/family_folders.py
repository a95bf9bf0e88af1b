"""LLaDA- and Dream-format model folders, laid out as the hub repos lay them out.

`write_llada` and `write_dream` write a random checkpoint, at toy size unless sizes are
given: config.json with the real keys, the real parameter names, two safetensors shards
plus model.safetensors.index.json, a tokenizer with the family's special tokens and chat
template, and remote-code files that raise if anything imports them. The tests load them;
the GPU check (`gpu_check.py`) decodes and distils them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import split_torch_state_dict_into_shards
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

CORPUS = [
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips "
    "in May. How many clips did Natalia sell altogether in April and May?",
    "Natalia sold 48/2 = 24 clips in May. Natalia sold 48+24 = 72 clips altogether. #### 72",
    "Let's think step by step. The answer is \\boxed{72}.",
    "def add(a, b):\n    return a + b\n",
]
RAISING_CODE = 'raise RuntimeError("remote code must never run")\n'
LLADA_SPECIALS = [
    "<|startoftext|>",
    "<|endoftext|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<|mdm_mask|>",
]
DREAM_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|mask|>"]
# LLaDA-8B-Instruct's template shape: BOS, then Llama-3 style headers (§6.1).
LLADA_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|start_header_id|>{{ message['role'] }}"
    "<|end_header_id|>\n\n{{ message['content'] | trim }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
# Qwen2.5's template shape with its default system turn (§6.2), without the tool branches.
DREAM_TEMPLATE = (
    "{% if messages[0]['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant."
    "<|im_end|>\n{% endif %}{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def byte_level_bpe() -> Tokenizer:
    """A small byte-level BPE (the tokenizer kind both families use) trained on CORPUS."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(CORPUS, trainer)
    return tokenizer


def added_tokens(tokens: list[str], first_id: int) -> dict[str, dict]:
    return {
        str(first_id + index): {
            "content": token,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for index, token in enumerate(tokens)
    }


def save_two_shards(weights: dict[str, torch.Tensor], folder: Path) -> None:
    """Two safetensors shards and their index, named as save_pretrained names them."""
    total = sum(tensor.numel() * tensor.element_size() for tensor in weights.values())
    limit = total // 2
    split = split_torch_state_dict_into_shards(weights, max_shard_size=limit)
    while len(split.filename_to_tensors) > 2:
        limit += total // 20
        split = split_torch_state_dict_into_shards(weights, max_shard_size=limit)
    assert len(split.filename_to_tensors) == 2
    for filename, names in split.filename_to_tensors.items():
        save_file(
            {name: weights[name].contiguous() for name in names},
            folder / filename,
            metadata={"format": "pt"},
        )
    index = {"metadata": split.metadata, "weight_map": split.tensor_to_filename}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))


def write_json(path: Path, content: dict) -> None:
    path.write_text(json.dumps(content, indent=2))


def random_weights(shapes: dict[str, tuple[int, ...]], seed: int,
                   std: float = 0.2) -> dict[str, torch.Tensor]:
    """Norm weights near 1, everything else N(0, std²) (small, but large enough that a wrong
    mapping changes the logits)."""
    generator = torch.Generator().manual_seed(seed)
    weights = {}
    for name, shape in shapes.items():
        if "norm" in name or name.endswith(("ln_f.weight",)):
            weights[name] = 1 + 0.2 * torch.randn(shape, generator=generator)
        else:
            weights[name] = std * torch.randn(shape, generator=generator)
    return weights


def resized(config: dict, sizes: dict[str, Any]) -> dict:
    """`config` with some of its own keys changed (a model's width, depth or heads)."""
    unknown = set(sizes) - set(config)
    if unknown:
        raise ValueError(f"not a key of the config: {', '.join(sorted(unknown))}")
    return config | sizes


def llada_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    d, ff, vocab = config["d_model"], config["mlp_hidden_size"], config["embedding_size"]
    kv = d // config["n_heads"] * config["n_kv_heads"]
    shapes = {"model.transformer.wte.weight": (vocab, d), "model.transformer.ln_f.weight": (d,)}
    if not config["weight_tying"]:
        shapes["model.transformer.ff_out.weight"] = (vocab, d)
    for layer in range(config["n_layers"]):
        prefix = f"model.transformer.blocks.{layer}."
        shapes |= {
            prefix + "attn_norm.weight": (d,),
            prefix + "q_proj.weight": (d, d),
            prefix + "k_proj.weight": (kv, d),
            prefix + "v_proj.weight": (kv, d),
            prefix + "attn_out.weight": (d, d),
            prefix + "ff_norm.weight": (d,),
            prefix + "ff_proj.weight": (ff, d),
            prefix + "up_proj.weight": (ff, d),
            prefix + "ff_out.weight": (d, ff),
        }
    return shapes


def write_llada(folder: Path, weight_tying: bool = False, n_kv_heads: int = 4,
                std: float = 0.2, **sizes: Any) -> dict:
    """A LLaDA-8B-Instruct folder, at toy size unless `sizes` change config keys (d_model,
    n_layers, ...); returns the raw weights."""
    folder.mkdir(parents=True, exist_ok=True)
    bpe = byte_level_bpe()
    first_special = bpe.get_vocab_size()
    bpe.add_special_tokens(LLADA_SPECIALS)
    bpe.save(str(folder / "tokenizer.json"))
    ids = {token: first_special + index for index, token in enumerate(LLADA_SPECIALS)}
    config = {
        "activation_type": "silu",
        "alibi": False,
        "alibi_bias_max": 8.0,
        "architectures": ["LLaDAModelLM"],
        "attention_dropout": 0.0,
        "attention_layer_norm": False,
        "attention_layer_norm_with_affine": True,
        "auto_map": {
            "AutoConfig": "configuration_llada.LLaDAConfig",
            "AutoModelForCausalLM": "modeling_llada.LLaDAModelLM",
            "AutoModel": "modeling_llada.LLaDAModelLM",
        },
        "bias_for_layer_norm": False,
        "block_group_size": 1,
        "block_type": "llama",
        "d_model": 32,
        "embedding_dropout": 0.0,
        "embedding_size": 320,
        "eos_token_id": ids["<|endoftext|>"],
        "flash_attention": False,
        "include_bias": False,
        "include_qkv_bias": False,
        "init_cutoff_factor": None,
        "init_device": "meta",
        "init_fn": "mitchell",
        "init_std": 0.02,
        "input_emb_norm": False,
        "layer_norm_type": "rms",
        "layer_norm_with_affine": True,
        "mask_token_id": ids["<|mdm_mask|>"],
        "max_sequence_length": 4096,
        "mlp_hidden_size": 48,
        "mlp_ratio": 4,
        "model_type": "llada",
        "multi_query_attention": None,
        "n_heads": 4,
        "n_kv_heads": n_kv_heads,
        "n_layers": 2,
        "pad_token_id": ids["<|endoftext|>"],
        "precision": "amp_bf16",
        "residual_dropout": 0.0,
        "rms_norm_eps": 1e-05,
        "rope": True,
        "rope_full_precision": True,
        "rope_theta": 500000.0,
        "scale_logits": False,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.46.3",
        "use_cache": False,
        "vocab_size": 320,
        "weight_tying": weight_tying,
    }
    config = resized(config, sizes)
    write_json(folder / "config.json", config)
    write_json(
        folder / "tokenizer_config.json",
        {
            "added_tokens_decoder": added_tokens(LLADA_SPECIALS, first_special),
            "bos_token": "<|startoftext|>",
            "chat_template": LLADA_TEMPLATE,
            "clean_up_tokenization_spaces": False,
            "eos_token": "<|endoftext|>",
            "model_max_length": 1000000000000000019884624838656,
            "pad_token": "<|endoftext|>",
            "tokenizer_class": "PreTrainedTokenizerFast",
        },
    )
    write_json(
        folder / "special_tokens_map.json",
        {
            "bos_token": "<|startoftext|>",
            "eos_token": "<|endoftext|>",
            "pad_token": "<|endoftext|>",
        },
    )
    for name in ("configuration_llada.py", "modeling_llada.py"):
        (folder / name).write_text(RAISING_CODE)
    weights = random_weights(llada_shapes(config), seed=1, std=std)
    save_two_shards(weights, folder)
    return weights


def dream_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    d, ff, vocab = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    kv = d // config["num_attention_heads"] * config["num_key_value_heads"]
    shapes = {
        "model.embed_tokens.weight": (vocab, d),
        "model.norm.weight": (d,),
        "lm_head.weight": (vocab, d),
    }
    for layer in range(config["num_hidden_layers"]):
        prefix = f"model.layers.{layer}."
        shapes |= {
            prefix + "input_layernorm.weight": (d,),
            prefix + "self_attn.q_proj.weight": (d, d),
            prefix + "self_attn.q_proj.bias": (d,),
            prefix + "self_attn.k_proj.weight": (kv, d),
            prefix + "self_attn.k_proj.bias": (kv,),
            prefix + "self_attn.v_proj.weight": (kv, d),
            prefix + "self_attn.v_proj.bias": (kv,),
            prefix + "self_attn.o_proj.weight": (d, d),
            prefix + "post_attention_layernorm.weight": (d,),
            prefix + "mlp.gate_proj.weight": (ff, d),
            prefix + "mlp.up_proj.weight": (ff, d),
            prefix + "mlp.down_proj.weight": (d, ff),
        }
    return shapes


def write_dream(folder: Path, std: float = 0.2, **sizes: Any) -> dict:
    """A Dream-v0-Instruct-7B folder, at toy size (GQA 4:2, q/k/v bias) unless `sizes`
    change config keys (hidden_size, num_hidden_layers, ...); returns the raw weights."""
    folder.mkdir(parents=True, exist_ok=True)
    bpe = byte_level_bpe()
    bpe.model.save(str(folder))  # vocab.json + merges.txt, as Dream's slow tokenizer reads them
    first_special = bpe.get_vocab_size()
    ids = {token: first_special + index for index, token in enumerate(DREAM_SPECIALS)}
    config = {
        "architectures": ["DreamModel"],
        "attention_dropout": 0.0,
        "auto_map": {
            "AutoConfig": "configuration_dream.DreamConfig",
            "AutoModel": "modeling_dream.DreamModel",
        },
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|endoftext|>"],
        "hidden_act": "silu",
        "hidden_size": 32,
        "initializer_range": 0.02,
        "intermediate_size": 48,
        "mask_token_id": ids["<|mask|>"],
        "max_position_embeddings": 131072,
        "max_window_layers": 28,
        "model_type": "Dream",
        "num_attention_heads": 4,
        "num_hidden_layers": 2,
        "num_key_value_heads": 2,
        "pad_token_id": ids["<|endoftext|>"],
        "rms_norm_eps": 1e-06,
        "rope_scaling": None,
        "rope_theta": 1000000.0,
        "sliding_window": None,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.46.2",
        "use_cache": False,
        "use_sliding_window": False,
        "vocab_size": 320,
    }
    config = resized(config, sizes)
    write_json(folder / "config.json", config)
    write_json(
        folder / "tokenizer_config.json",
        {
            "add_prefix_space": False,
            "added_tokens_decoder": added_tokens(DREAM_SPECIALS, first_special),
            "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
            "auto_map": {"AutoTokenizer": ["tokenization_dream.DreamTokenizer", None]},
            "bos_token": None,
            "chat_template": DREAM_TEMPLATE,
            "clean_up_tokenization_spaces": False,
            "eos_token": "<|endoftext|>",
            "errors": "replace",
            "mask_token": "<|mask|>",
            "model_max_length": 131072,
            "pad_token": "<|endoftext|>",
            "split_special_tokens": False,
            "tokenizer_class": "DreamTokenizer",
            "unk_token": None,
        },
    )
    write_json(
        folder / "special_tokens_map.json",
        {
            "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
            "eos_token": "<|endoftext|>",
            "mask_token": "<|mask|>",
            "pad_token": "<|endoftext|>",
        },
    )
    write_json(  # sampling flags without do_sample, as Dream ships them
        folder / "generation_config.json",
        {"bos_token_id": ids["<|endoftext|>"], "eos_token_id": ids["<|endoftext|>"],
         "pad_token_id": ids["<|endoftext|>"], "temperature": 0.2},
    )
    for name in ("configuration_dream.py", "modeling_dream.py", "tokenization_dream.py"):
        (folder / name).write_text(RAISING_CODE)
    weights = random_weights(dream_shapes(config), seed=2, std=std)
    save_two_shards(weights, folder)
    return weights


def read_shards(folder: Path) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors under their own names, straight from the files."""
    weight_map = json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"]
    weights = {}
    for shard in sorted(set(weight_map.values())):
        weights |= load_file(folder / shard)
    return weights
