"""The d3 dLLM: a bidirectional transformer with a static, position-addressed KV cache.

One call serves every decoder: ``model(input_ids, positions=..., cache=...)`` runs a window
of the sequence. ``cache=None`` is a plain full forward. With a cache (K/V slots for every
position of the sequence, see `KVCache`), the window's K/V overwrite their slots and every
query attends to all slots, so a window forward after a full forward reproduces the full
forward's logits at those positions. Architecture: RMSNorm, RoPE, SwiGLU, optional GQA and
q/k/v bias, so LLaDA (OLMo-style) and Dream (Qwen2-style) checkpoints map onto it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel
from transformers.modeling_layers import GradientCheckpointingLayer


class D3Config(PretrainedConfig):
    """Shape of a d3 dLLM plus the token facts a decoder needs (mask id, default block size)."""

    model_type = "d3dllm"

    def __init__(
        self,
        vocab_size: int = 32,
        hidden_size: int = 192,
        intermediate_size: int = 512,
        num_hidden_layers: int = 4,
        num_attention_heads: int = 6,
        num_key_value_heads: int | None = None,
        max_position_embeddings: int = 4096,
        rope_theta: float = 10000.0,
        rms_norm_eps: float = 1e-5,
        attention_bias: bool = False,
        initializer_range: float = 0.02,
        mask_token_id: int | None = None,
        learned_positions: int = 0,
        block_size: int = 32,
        **kwargs,
    ) -> None:
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_key_value_heads or num_attention_heads
        self.max_position_embeddings = max_position_embeddings
        self.rope_theta = rope_theta
        self.rms_norm_eps = rms_norm_eps
        self.attention_bias = attention_bias
        self.initializer_range = initializer_range
        self.mask_token_id = mask_token_id
        self.learned_positions = learned_positions
        self.block_size = block_size
        kwargs.setdefault("tie_word_embeddings", False)
        super().__init__(**kwargs)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


@dataclass
class KVCache:
    """Per-layer K/V for every position of a batch of sequences: [batch, kv_heads, length, dim].

    Keys are stored after RoPE, so a slot is valid wherever it is read from.
    """

    keys: list[Tensor]
    values: list[Tensor]

    @classmethod
    def empty(cls, config: D3Config, batch_size: int, length: int,
              device: torch.device | str, dtype: torch.dtype) -> KVCache:
        shape = (batch_size, config.num_key_value_heads, length, config.head_dim)
        layers = range(config.num_hidden_layers)
        return cls([torch.zeros(shape, device=device, dtype=dtype) for _ in layers],
                   [torch.zeros(shape, device=device, dtype=dtype) for _ in layers])

    @property
    def length(self) -> int:
        return self.keys[0].shape[2]

    def write(self, layer: int, key: Tensor, value: Tensor, positions: Tensor,
              keep_cached: Tensor | None) -> tuple[Tensor, Tensor]:
        """Store a window's K/V [batch, heads, width, dim] at `positions` ([width] or
        [batch, width]) and return the whole layer's K/V to attend to. Where `keep_cached`
        [batch, width] is True the slot keeps its cached K/V (the window's is discarded)."""
        keys, values = self.keys[layer], self.values[layer]
        key, value = key.to(keys.dtype), value.to(values.dtype)
        if positions.dim() == 1 and keep_cached is None:
            keys.index_copy_(2, positions, key)
            values.index_copy_(2, positions, value)
            return keys, values
        batch, heads, width, dim = key.shape
        index = positions.expand(batch, width)[:, None, :, None].expand(batch, heads, width, dim)
        if keep_cached is not None:
            keep = keep_cached[:, None, :, None]
            key = torch.where(keep, keys.gather(2, index), key)
            value = torch.where(keep, values.gather(2, index), value)
        keys.scatter_(2, index, key)
        values.scatter_(2, index, value)
        return keys, values


def rotate_half(x: Tensor) -> Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


class RotaryEmbedding(nn.Module):
    """RoPE angles for absolute positions (half-split layout, as LLaDA and Qwen2 use).

    The frequencies are recomputed per call rather than kept in a buffer: from_pretrained
    builds models on the meta device and would leave a non-persistent buffer uninitialised.
    """

    def __init__(self, head_dim: int, theta: float) -> None:
        super().__init__()
        self.head_dim = head_dim
        self.theta = theta

    def forward(self, positions: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        exponents = torch.arange(0, self.head_dim, 2, device=positions.device) / self.head_dim
        inv_freq = 1.0 / self.theta ** exponents.double()
        angles = positions.double()[..., None] * inv_freq
        angles = torch.cat((angles, angles), dim=-1)
        if angles.dim() == 3:  # per-row positions: broadcast over heads
            angles = angles[:, None]
        return angles.cos().to(dtype), angles.sin().to(dtype)


class Attention(nn.Module):
    def __init__(self, config: D3Config) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        kv_dim = self.num_kv_heads * self.head_dim
        self.q_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=config.attention_bias)
        self.k_proj = nn.Linear(config.hidden_size, kv_dim, bias=config.attention_bias)
        self.v_proj = nn.Linear(config.hidden_size, kv_dim, bias=config.attention_bias)
        self.o_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=False)

    def forward(self, hidden: Tensor, rope: tuple[Tensor, Tensor], key_mask: Tensor | None,
                cache_write: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]] | None) -> Tensor:
        batch, width, _ = hidden.shape
        query = self.q_proj(hidden).view(batch, width, self.num_heads, self.head_dim)
        key = self.k_proj(hidden).view(batch, width, self.num_kv_heads, self.head_dim)
        value = self.v_proj(hidden).view(batch, width, self.num_kv_heads, self.head_dim)
        query, key, value = (t.transpose(1, 2) for t in (query, key, value))
        cos, sin = rope
        query = query * cos + rotate_half(query) * sin
        key = key * cos + rotate_half(key) * sin
        if cache_write is not None:
            key, value = cache_write(key, value)
        grouped = self.num_kv_heads != self.num_heads
        if grouped and key_mask is not None:
            # torch's fused kernels take GQA or a mask, not both: expand K/V instead of
            # falling back to the unfused math kernel.
            group = self.num_heads // self.num_kv_heads
            key, value = key.repeat_interleave(group, 1), value.repeat_interleave(group, 1)
            grouped = False
        attended = F.scaled_dot_product_attention(query, key, value, attn_mask=key_mask,
                                                  enable_gqa=grouped)
        return self.o_proj(attended.transpose(1, 2).reshape(batch, width, -1))


class SwiGLU(nn.Module):
    def __init__(self, config: D3Config) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, hidden: Tensor) -> Tensor:
        return self.down_proj(F.silu(self.gate_proj(hidden)) * self.up_proj(hidden))


class Block(GradientCheckpointingLayer):
    """One transformer layer; recomputed in the backward pass under gradient checkpointing."""

    def __init__(self, config: D3Config) -> None:
        super().__init__()
        self.attention_norm = nn.RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.attention = Attention(config)
        self.mlp_norm = nn.RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.mlp = SwiGLU(config)

    def forward(self, hidden: Tensor, rope: tuple[Tensor, Tensor], key_mask: Tensor | None,
                cache_write: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]] | None) -> Tensor:
        hidden = hidden + self.attention(self.attention_norm(hidden), rope, key_mask,
                                         cache_write)
        return hidden + self.mlp(self.mlp_norm(hidden))


def content_positions(positions: Tensor, attention_mask: Tensor | None) -> Tensor:
    """Positions counted from each row's first visible token (rows are only left-padded), so
    learned position embeddings see a prompt at the same place whatever its padding."""
    if attention_mask is None:
        return positions
    padding = (~attention_mask.bool()).sum(1, keepdim=True)
    return (positions - padding).clamp_min(0)


class D3Model(PreTrainedModel):
    """Bidirectional masked-diffusion transformer; `forward` returns logits [batch, width, V]."""

    config_class = D3Config
    base_model_prefix = "d3"
    _no_split_modules = ["Block"]
    _supports_sdpa = True
    supports_gradient_checkpointing = True

    def __init__(self, config: D3Config) -> None:
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        # Optional learned absolute positions on top of RoPE (0 = none, as in LLaDA and Dream):
        # a tiny model learns position-addressed copies far faster with them.
        self.embed_positions = (nn.Embedding(config.learned_positions, config.hidden_size)
                                if config.learned_positions else None)
        self.layers = nn.ModuleList(Block(config) for _ in range(config.num_hidden_layers))
        self.norm = nn.RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.rotary = RotaryEmbedding(config.head_dim, config.rope_theta)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=self.config.initializer_range)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.RMSNorm):
            nn.init.ones_(module.weight)

    def forward(self, input_ids: Tensor, positions: Tensor | None = None,
                cache: KVCache | None = None, attention_mask: Tensor | None = None,
                keep_cached: Tensor | None = None, logits_at: Tensor | None = None) -> Tensor:
        """Logits for the window `input_ids` [batch, width] at absolute `positions`.

        `positions` is [width] (shared by the rows) or [batch, width]; default 0..width-1.
        `attention_mask` [batch, keys] (True = visible) hides padding; its key axis is the
        whole cached sequence when a cache is given, else the window. With a cache, the
        window's K/V overwrite their slots except where `keep_cached` [batch, width] is True.
        `attention_mask=None` attends everywhere (the fused SDPA kernels run only then).
        `logits_at` [batch, k] (window indices) limits the output head to the positions a
        caller reads, returning [batch, k, V]; every position still runs through the layers.
        """
        width = input_ids.shape[1]
        if positions is None:
            positions = torch.arange(width, device=input_ids.device)
        hidden = self.embed_tokens(input_ids)
        if self.embed_positions is not None:
            hidden = hidden + self.embed_positions(content_positions(positions, attention_mask))
        rope = self.rotary(positions, hidden.dtype)
        key_mask = None if attention_mask is None else attention_mask[:, None, None, :].bool()
        for index, layer in enumerate(self.layers):
            cache_write = None if cache is None else partial(
                cache.write, index, positions=positions, keep_cached=keep_cached)
            hidden = layer(hidden, rope, key_mask, cache_write)
        if logits_at is not None:
            hidden = hidden.gather(1, logits_at[:, :, None].expand(-1, -1, hidden.shape[-1]))
        return self.lm_head(self.norm(hidden))


AutoConfig.register(D3Config.model_type, D3Config)
AutoModel.register(D3Config, D3Model)
