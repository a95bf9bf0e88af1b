"""The model: cached window forwards, save/load, GQA and bias variants."""

from __future__ import annotations

import pytest
import torch

from d3cli.canvas import left_pad
from d3cli.model import D3Config, D3Model, KVCache


def teacher_batch(teacher, arith, count: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts of the embedded task followed by a partly masked answer canvas."""
    examples = arith.eval_examples(count)
    prompts = [teacher.tokenizer(e.prompt).input_ids for e in examples]
    prompt_ids, visible = left_pad(prompts, teacher.spec.pad_token_id)
    answer = torch.randint(4, len(teacher.tokenizer), (count, arith.gen_length),
                           generator=torch.Generator().manual_seed(0))
    answer[:, 20:] = teacher.spec.mask_token_id
    ids = torch.cat([prompt_ids, answer], 1)
    return ids, torch.cat([visible, torch.ones_like(answer, dtype=torch.bool)], 1)


@torch.no_grad()
def assert_window_matches_full(model: D3Model, ids: torch.Tensor, visible: torch.Tensor,
                               start: int, stop: int) -> None:
    full = model(ids, attention_mask=visible)
    cache = KVCache.empty(model.config, ids.shape[0], ids.shape[1], "cpu", torch.float32)
    model(ids, positions=torch.arange(ids.shape[1]), cache=cache, attention_mask=visible)
    window = model(ids[:, start:stop], positions=torch.arange(start, stop), cache=cache,
                   attention_mask=visible)
    torch.testing.assert_close(window, full[:, start:stop], atol=1e-5, rtol=1e-5)


def test_cached_window_logits_match_full_forward(teacher, arith):
    ids, visible = teacher_batch(teacher, arith)
    for start, stop in [(ids.shape[1] - 64, ids.shape[1] - 48), (30, 31), (0, ids.shape[1])]:
        assert_window_matches_full(teacher.model, ids, visible, start, stop)


def test_logits_at_gives_those_positions_of_the_full_logits(teacher, arith):
    ids, visible = teacher_batch(teacher, arith)
    cache = KVCache.empty(teacher.model.config, ids.shape[0], ids.shape[1], "cpu", torch.float32)
    rows = torch.arange(ids.shape[0])[:, None]
    wanted = (torch.arange(30, 50)[None, :] + 3 * rows) % ids.shape[1]  # differs per row
    with torch.no_grad():
        full = teacher.model(ids, attention_mask=visible)
        part = teacher.model(ids, attention_mask=visible, logits_at=wanted)
        teacher.model(ids, positions=torch.arange(ids.shape[1]), cache=cache,
                      attention_mask=visible, logits_at=wanted[:, :1])
        window = teacher.model(ids[:, 40:], positions=torch.arange(40, ids.shape[1]), cache=cache,
                               attention_mask=visible)
    assert part.shape[1] == 20
    torch.testing.assert_close(part, full[rows, wanted], atol=1e-5, rtol=1e-5)
    # The layers still run every position: the cache holds their K/V.
    torch.testing.assert_close(window, full[:, 40:], atol=1e-5, rtol=1e-5)


def test_window_forward_overwrites_only_its_cache_slots(teacher, arith):
    ids, visible = teacher_batch(teacher, arith)
    length, model = ids.shape[1], teacher.model
    window = torch.arange(length - 40, length - 24)
    changed = ids.clone()
    changed[:, window] = 7
    cache = KVCache.empty(model.config, ids.shape[0], length, "cpu", torch.float32)
    reference = KVCache.empty(model.config, ids.shape[0], length, "cpu", torch.float32)
    with torch.no_grad():
        model(ids, positions=torch.arange(length), cache=cache, attention_mask=visible)
        before = [key.clone() for key in cache.keys]
        model(changed[:, window], positions=window, cache=cache, attention_mask=visible)
        model(changed, positions=torch.arange(length), cache=reference, attention_mask=visible)
    # Layer 0 keys depend only on token and position: the window's slots now hold the new ones.
    torch.testing.assert_close(cache.keys[0][:, :, window], reference.keys[0][:, :, window])
    assert not torch.allclose(cache.keys[0][:, :, window], before[0][:, :, window])
    outside = torch.ones(length, dtype=torch.bool)
    outside[window] = False
    for layer, key in enumerate(cache.keys):
        torch.testing.assert_close(key[:, :, outside], before[layer][:, :, outside])


@pytest.mark.parametrize("kv_heads,bias", [(2, True), (1, False)])
def test_gqa_and_qkv_bias_cache_equivalence(kv_heads: int, bias: bool):
    torch.manual_seed(0)
    config = D3Config(vocab_size=50, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=kv_heads, attention_bias=bias)
    model = D3Model(config).eval()
    assert (model.layers[0].attention.q_proj.bias is not None) == bias
    assert model.layers[0].attention.k_proj.out_features == kv_heads * config.head_dim
    ids = torch.randint(0, 50, (2, 40))
    visible = torch.ones_like(ids, dtype=torch.bool)
    visible[1, :6] = False
    assert_window_matches_full(model, ids, visible, 24, 40)


def test_padding_is_invisible(teacher, arith):
    """Extra left padding, masked out, changes no logit (RoPE is relative)."""
    ids, visible = teacher_batch(teacher, arith, count=2)
    pad = torch.full((2, 5), teacher.spec.pad_token_id)
    padded = torch.cat([pad, ids], 1)
    padded_visible = torch.cat([torch.zeros_like(pad, dtype=torch.bool), visible], 1)
    with torch.no_grad():
        plain = teacher.model(ids, attention_mask=visible)
        shifted = teacher.model(padded, attention_mask=padded_visible)[:, 5:]
    torch.testing.assert_close(shifted[visible], plain[visible], atol=1e-4, rtol=1e-4)


def test_save_and_load_round_trip(tmp_path, teacher, arith):
    ids, visible = teacher_batch(teacher, arith, count=2)
    teacher.model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    reloaded = D3Model.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids, attention_mask=visible),
                                   teacher.model(ids, attention_mask=visible))
    def shape_of(model):
        return {k: v for k, v in model.config.to_dict().items() if k != "_name_or_path"}

    assert shape_of(reloaded) == shape_of(teacher.model)


def test_per_row_positions_and_kept_slots_match_separate_windows(teacher, arith):
    """Rows with different windows in one call equal each row run with its own window."""
    ids, visible = teacher_batch(teacher, arith, count=2)
    length, model = ids.shape[1], teacher.model
    starts = torch.tensor([length - 32, length - 20])
    batched = KVCache.empty(model.config, 2, length, "cpu", torch.float32)
    with torch.no_grad():
        model(ids, positions=torch.arange(length), cache=batched, attention_mask=visible)
        block = starts[:, None] + torch.arange(8)
        per_row = model(ids.gather(1, block), positions=block, cache=batched,
                        attention_mask=visible)
        window = torch.arange(length - 32, length)
        kept = window[None, :] < starts[:, None]
        suffix = model(ids[:, length - 32:], positions=window, cache=batched,
                       attention_mask=visible, keep_cached=kept)
        for row, start in enumerate(starts.tolist()):
            alone = KVCache.empty(model.config, 1, length, "cpu", torch.float32)
            model(ids[row:row + 1], positions=torch.arange(length), cache=alone,
                  attention_mask=visible[row:row + 1])
            expected = model(ids[row:row + 1, start:start + 8],
                             positions=torch.arange(start, start + 8), cache=alone,
                             attention_mask=visible[row:row + 1])
            torch.testing.assert_close(per_row[row:row + 1], expected, atol=1e-5, rtol=1e-5)
            tail = model(ids[row:row + 1, start:], positions=torch.arange(start, length),
                         cache=alone, attention_mask=visible[row:row + 1])
            torch.testing.assert_close(suffix[row:row + 1, start - (length - 32):], tail,
                                       atol=1e-5, rtol=1e-5)


def test_gqa_under_a_padding_mask_equals_the_unmasked_grouped_kernel():
    """With a mask, grouped K/V are expanded (the fused kernels take a mask or GQA, not both);
    an all-visible mask must give what the mask-free grouped call gives."""
    torch.manual_seed(0)
    config = D3Config(vocab_size=50, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2)
    model = D3Model(config).eval()
    ids = torch.randint(0, 50, (2, 24))
    with torch.no_grad():
        masked = model(ids, attention_mask=torch.ones_like(ids, dtype=torch.bool))
        unmasked = model(ids)
    torch.testing.assert_close(masked, unmasked, atol=1e-5, rtol=1e-5)
