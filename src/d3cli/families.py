"""Checkpoint families d3 loads natively: config mapping, weight names and token facts.

A family says how a folder's ``config.json`` becomes a `D3Config`, how its safetensors
parameter names become d3's, and which tokens end an answer. LLaDA (OLMo-style names) and
Dream (Qwen2 names) follow the published checkpoints' layouts; d3's own checkpoints are
transformers folders of `D3Model` and need no mapping. No remote code is ever run.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .model import D3Config

DEFAULT_BLOCK_SIZE = 32  # every reference run decodes 32-token blocks (§3.3)


class ModelLoadError(ValueError):
    """A model name or folder that cannot be loaded; the message says why, on one line."""


# (checkpoint name pattern, d3 name template); a name must match exactly one pattern.
WeightRules = tuple[tuple[str, str], ...]
GROUP = re.compile(r"\(([^()]*)\)")  # a rule's capture groups (never nested)


def inverse_rule(pattern: str, template: str) -> tuple[str, str]:
    """The rule from d3's name back to the checkpoint's: the template becomes a pattern (each
    back-reference the group's own pattern) and the pattern a template."""
    groups, parts = GROUP.findall(pattern), re.split(r"\\(\d)", template)
    order = [int(number) for number in parts[1::2]]  # the template's references, in order
    inverse = "".join(re.escape(part) if index % 2 == 0 else f"({groups[int(part) - 1]})"
                      for index, part in enumerate(parts))
    pieces = GROUP.split(pattern)  # literal, group, literal, ...
    back = "".join(re.sub(r"\\(.)", r"\1", piece) if index % 2 == 0
                   else f"\\g<{order.index(index // 2 + 1) + 1}>"
                   for index, piece in enumerate(pieces))
    return inverse, back


@dataclass(frozen=True)
class Family:
    """What is specific to one checkpoint format."""

    name: str  # shown in messages
    model_types: tuple[str, ...]  # config.json `model_type`, compared case-insensitively
    architectures: tuple[str, ...]  # config.json `architectures` entries
    build_config: Callable[[Mapping[str, Any], Path], D3Config] | None  # None: native d3
    weight_rules: WeightRules = ()
    ignored_weights: tuple[str, ...] = ()  # buffers some exports carry; not parameters
    mask_token: str | None = None  # looked up when neither config nor tokenizer name one
    end_of_turn_tokens: tuple[str, ...] = ()  # stop tokens besides EOS, if in the vocab
    logit_shift: bool = False  # output i predicts token i+1 (Dream, §6.2)
    commit_lowest_entropy: bool = True  # A7: LLaDA always commits the global best candidate
    strict_entropy_threshold: bool = False  # A7: Dream commits H < γ, LLaDA H ≤ γ
    # `vanilla` is Dream's own decoding (lowest proposal entropy first, tokens per step from
    # Dream's timestep schedule), not LLaDA's (highest confidence first, an even quota);
    # Dream's teacher trajectories keep the order, one token per forward.
    vanilla_by_entropy: bool = False
    # Which prompts go through the tokenizer's chat template (when it has one), as the family's
    # reference harness feeds them: "always", "code" (code tasks and free prompts; the math
    # tasks' raw few-shot text stays raw) or "never".
    chat_template: str = "never"
    # The reference harness's own wrapper around one task's prompt, by lm-eval task name.
    prompt_wrappers: tuple[tuple[str, str], ...] = ()
    # The family's own one-token-per-forward baseline, as `vanilla` defaults (a checkpoint's
    # generation_config.json and the command line override them).
    vanilla_defaults: tuple[tuple[str, Any], ...] = ()
    tokenizer_class: str | None = None  # built-in class for folders whose tokenizer is remote code
    tie_key: str | None = None  # the config.json key that ties the output head to the embedding

    def rename(self, name: str) -> str | None:
        """d3's parameter name for checkpoint tensor `name`; None when no rule matches."""
        return apply_rules(self.weight_rules, name)

    def checkpoint_name(self, name: str) -> str | None:
        """The checkpoint's tensor name for d3's parameter `name` (the inverse of `rename`)."""
        return apply_rules(tuple(inverse_rule(*rule) for rule in self.weight_rules), name)

    def is_ignored(self, name: str) -> bool:
        return any(re.fullmatch(pattern, name) for pattern in self.ignored_weights)


def apply_rules(rules: WeightRules, name: str) -> str | None:
    """`name` renamed by the first rule whose pattern matches it whole; None when none does."""
    for pattern, template in rules:
        match = re.fullmatch(pattern, name)
        if match:
            return match.expand(template)
    return None


class ConfigReader:
    """Reads a foreign config.json with one-line errors that name the folder and the key."""

    def __init__(self, raw: Mapping[str, Any], where: Path, family: str) -> None:
        self.raw, self.where, self.family = raw, where, family

    def required(self, key: str) -> Any:
        if self.raw.get(key) is None:
            raise ModelLoadError(
                f"{self.where}: {self.family} config.json lacks {key!r} "
                f"(found: {', '.join(sorted(self.raw))})"
            )
        return self.raw[key]

    def optional(self, key: str, default: Any) -> Any:
        value = self.raw.get(key)
        return default if value is None else value

    def expect(self, key: str, supported: Any, default: Any) -> None:
        """Fail when a setting d3's model does not implement is switched on."""
        value = self.optional(key, default)
        if value != supported:
            raise ModelLoadError(
                f"{self.where}: unsupported {self.family} setting {key}={value!r} "
                f"(d3 implements {key}={supported!r})"
            )

    def where_error(self, message: str) -> ModelLoadError:
        return ModelLoadError(f"{self.where}: {message}")


def llada_config(raw: Mapping[str, Any], where: Path) -> D3Config:
    """LLaDA's OLMo-style config (§6.1) as a D3Config: pre-norm llama blocks, RoPE, SwiGLU."""
    read = ConfigReader(raw, where, "LLaDA")
    for key, value in [
        ("block_type", "llama"),
        ("activation_type", "silu"),
        ("layer_norm_type", "rms"),
        ("rope", True),
        ("include_bias", False),
    ]:
        read.required(key)
        read.expect(key, value, None)
    for key, value in [
        ("alibi", False),
        ("attention_layer_norm", False),
        ("scale_logits", False),
        ("input_emb_norm", False),
        ("clip_qkv", None),
        ("layer_norm_with_affine", True),
    ]:
        read.expect(key, value, value)
    hidden_size, num_heads = read.required("d_model"), read.required("n_heads")
    if hidden_size % num_heads:
        raise read.where_error(
            f"LLaDA d_model={hidden_size} is not a multiple of n_heads={num_heads}"
        )
    kv_heads = raw.get("n_kv_heads")
    if kv_heads is None:  # OLMo: multi-query attention means one shared K/V head
        kv_heads = 1 if raw.get("multi_query_attention") else num_heads
    intermediate = raw.get("mlp_hidden_size") or read.optional("mlp_ratio", 4) * hidden_size
    return D3Config(
        vocab_size=read.optional("embedding_size", read.required("vocab_size")),
        hidden_size=hidden_size,
        intermediate_size=intermediate,
        num_hidden_layers=read.required("n_layers"),
        num_attention_heads=num_heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=read.optional("max_sequence_length", 4096),
        rope_theta=float(read.optional("rope_theta", 10000.0)),
        rms_norm_eps=float(read.optional("rms_norm_eps", 1e-5)),
        attention_bias=bool(read.optional("include_qkv_bias", False)),
        mask_token_id=raw.get("mask_token_id"),
        block_size=DEFAULT_BLOCK_SIZE,
        eos_token_id=raw.get("eos_token_id"),
        pad_token_id=raw.get("pad_token_id"),
        tie_word_embeddings=bool(read.required("weight_tying")),
    )


def dream_config(raw: Mapping[str, Any], where: Path) -> D3Config:
    """Dream's Qwen2-style config (§6.2) as a D3Config: GQA, q/k/v bias, bidirectional."""
    read = ConfigReader(raw, where, "Dream")
    read.expect("hidden_act", "silu", "silu")
    read.expect("use_sliding_window", False, False)
    rope = read.optional("rope_parameters", {})  # transformers >= 5 nests RoPE settings here
    scaling = raw.get("rope_scaling") or (
        rope if rope.get("rope_type", "default") != "default" else None
    )
    if scaling:
        raise read.where_error(
            f"unsupported Dream setting rope_scaling={scaling!r} (d3 implements plain RoPE)"
        )
    hidden_size, num_heads = read.required("hidden_size"), read.required("num_attention_heads")
    head_dim = raw.get("head_dim")
    if hidden_size % num_heads or head_dim not in (None, hidden_size // num_heads):
        raise read.where_error(
            f"Dream head size {head_dim} differs from hidden_size / "
            f"num_attention_heads = {hidden_size}/{num_heads}"
        )
    return D3Config(
        vocab_size=read.required("vocab_size"),
        hidden_size=hidden_size,
        intermediate_size=read.required("intermediate_size"),
        num_hidden_layers=read.required("num_hidden_layers"),
        num_attention_heads=num_heads,
        num_key_value_heads=read.optional("num_key_value_heads", num_heads),
        max_position_embeddings=read.optional("max_position_embeddings", 32768),
        rope_theta=float(read.optional("rope_theta", rope.get("rope_theta", 10000.0))),
        rms_norm_eps=float(read.optional("rms_norm_eps", 1e-6)),
        attention_bias=True,  # Qwen2 attention always has q/k/v bias (and none on o_proj)
        mask_token_id=raw.get("mask_token_id"),
        block_size=DEFAULT_BLOCK_SIZE,
        eos_token_id=raw.get("eos_token_id"),
        pad_token_id=raw.get("pad_token_id"),
        bos_token_id=raw.get("bos_token_id"),
        tie_word_embeddings=bool(read.optional("tie_word_embeddings", False)),
    )


_BLOCK = r"model\.transformer\.blocks\.(\d+)\."
LLADA = Family(
    name="LLaDA",
    model_types=("llada",),
    architectures=("LLaDAModelLM",),
    build_config=llada_config,
    weight_rules=(
        (r"model\.transformer\.wte\.weight", "embed_tokens.weight"),
        (r"model\.transformer\.ln_f\.weight", "norm.weight"),
        (r"model\.transformer\.ff_out\.weight", "lm_head.weight"),
        (_BLOCK + r"attn_norm\.weight", r"layers.\1.attention_norm.weight"),
        (_BLOCK + r"([qkv])_proj\.(weight|bias)", r"layers.\1.attention.\2_proj.\3"),
        (_BLOCK + r"attn_out\.weight", r"layers.\1.attention.o_proj.weight"),
        (_BLOCK + r"ff_norm\.weight", r"layers.\1.mlp_norm.weight"),
        (_BLOCK + r"ff_proj\.weight", r"layers.\1.mlp.gate_proj.weight"),
        (_BLOCK + r"up_proj\.weight", r"layers.\1.mlp.up_proj.weight"),
        (_BLOCK + r"ff_out\.weight", r"layers.\1.mlp.down_proj.weight"),
    ),
    ignored_weights=(r".*rotary_emb\.inv_freq",),
    mask_token="<|mdm_mask|>",
    end_of_turn_tokens=("<|eot_id|>",),
    chat_template="code",
    prompt_wrappers=(("humaneval", "Write a solution to the following problem and make sure "
                                   "that it passes the tests:\n```python\n{prompt}\n```\n "),),
    tokenizer_class="PreTrainedTokenizerFast",
    tie_key="weight_tying",
)

_LAYER = r"model\.layers\.(\d+)\."
DREAM = Family(
    name="Dream",
    model_types=("dream",),
    architectures=("DreamModel",),
    build_config=dream_config,
    weight_rules=(
        (r"model\.embed_tokens\.weight", "embed_tokens.weight"),
        (r"model\.norm\.weight", "norm.weight"),
        (r"lm_head\.weight", "lm_head.weight"),
        (_LAYER + r"input_layernorm\.weight", r"layers.\1.attention_norm.weight"),
        (_LAYER + r"self_attn\.([qkvo])_proj\.(weight|bias)", r"layers.\1.attention.\2_proj.\3"),
        (_LAYER + r"post_attention_layernorm\.weight", r"layers.\1.mlp_norm.weight"),
        (_LAYER + r"mlp\.(gate|up|down)_proj\.weight", r"layers.\1.mlp.\2_proj.weight"),
    ),
    ignored_weights=(r".*rotary_emb\.inv_freq",),
    mask_token="<|mask|>",
    end_of_turn_tokens=("<|im_end|>",),
    logit_shift=True,
    commit_lowest_entropy=False,
    strict_entropy_threshold=True,
    vanilla_by_entropy=True,
    vanilla_defaults=(("temperature", 0.1), ("top_p", 0.9), ("one_block", True)),
    chat_template="always",
    tokenizer_class="Qwen2Tokenizer",  # Dream's remote DreamTokenizer is Qwen2's BPE
    tie_key="tie_word_embeddings",
)

D3 = Family(
    name="d3", model_types=(D3Config.model_type,), architectures=("D3Model",), build_config=None
)

FAMILIES = (D3, LLADA, DREAM)


def detect_family(raw: Mapping[str, Any], where: Path) -> Family:
    """The family a config.json belongs to, by `model_type` or `architectures`."""
    model_type = str(raw.get("model_type", "")).lower()
    architectures = raw.get("architectures") or []
    for family in FAMILIES:
        if model_type in family.model_types or set(architectures) & set(family.architectures):
            return family
    raise ModelLoadError(
        f"{where}: not a LLaDA, Dream or d3 checkpoint (model_type={raw.get('model_type')!r}, "
        f"architectures={architectures!r}; config keys: {', '.join(sorted(raw)) or 'none'})"
    )


def token_facts_family(raw: Mapping[str, Any], family: Family) -> Family:
    """The family whose token facts (stop tokens, logit shift, template, A7) a model follows.

    A LLaDA or Dream model saved in d3's own format records `source_family` in its config, so
    a converted or distilled Dream model keeps its logit shift when it is loaded again.
    """
    source = str(raw.get("source_family") or "").lower()
    if family is D3 and source:
        for candidate in FAMILIES:
            if candidate.name.lower() == source:
                return candidate
    return family
