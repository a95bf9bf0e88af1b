"""The decode driver: one host read per forward, few forward shapes, slot refill that keeps
each row independent of its neighbours, per-row safety cap, sync_every, compile."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from d3cli.checkpoints import encode_prompt
from d3cli.decode import STRATEGIES, DecodeOptions, decode_prompts
from d3cli.decode import rows as rows_module
from d3cli.decode.driver import Driver, compiled_step, held_tensors
from d3cli.decode.eager_ops import counting_eager_ops, counting_eager_ops_outside_steps
from d3cli.decode.rows import PromptQueue
from d3cli.decode.syncs import HostSyncCounter

# Vanilla commits 4 tokens per forward here: a row's independence of its batch, the counts
# per iteration and the compiled graphs do not depend on its quota, and one token per
# forward would take 4 times the forwards (tests/test_golden.py decodes it exactly).
SETTINGS = [
    ("vanilla", {"steps": 16}),
    ("threshold", {"threshold": 0.7}),
    ("threshold", {"threshold": 0.7, "cache": "prefix"}),
    ("threshold", {"threshold": 0.7, "cache": "dual"}),
    ("entropy", {"threshold": 0.5}),
    ("multiblock", {"threshold": 0.5}),
    ("multiblock", {"threshold": 0.5, "blocks": 2}),
    ("multiblock", {"threshold": 0.5, "cache": "delayed", "cache_delay": 1,
                    "refresh_interval": 3}),
]
IDS = [f"{method}-{'-'.join(map(str, settings.values()))}" for method, settings in SETTINGS]
SHIFTED = {"logit_shift": True, "commit_lowest_entropy": False, "strict_entropy_threshold": True,
           "vanilla_by_entropy": True}  # Dream's rules
DREAM_VANILLA = ("vanilla", {"one_block": True, "top_p": 0.9, "steps": 16})  # Dream's schedule


def ragged_prompts(teacher, arith, count: int) -> list[list[int]]:
    """Held-out prompts with 0-4 leading tokens cut, so lengths differ."""
    prompts = [encode_prompt(teacher, e.prompt) for e in arith.eval_examples(count)]
    return [prompt[index % 5:] for index, prompt in enumerate(prompts)]


def decode(teacher, arith, prompts, method, settings, batch_size, spec=None, **keywords):
    """{prompt index: (forwards, tokens)} of one run."""
    options = DecodeOptions(gen_length=arith.gen_length, block_size=teacher.spec.block_size,
                            **settings)
    return {done.index: (done.forwards, done.tokens) for done in decode_prompts(
        teacher.model, spec or teacher.spec, prompts, [7 * i for i in range(len(prompts))],
        STRATEGIES[method], options, batch_size, **keywords)}


def one_by_one(teacher, arith, prompts, method, settings, spec=None) -> dict:
    """Each prompt alone (batch 1, its own length, its own key)."""
    results = {}
    for index, prompt in enumerate(prompts):
        options = DecodeOptions(gen_length=arith.gen_length,
                                block_size=teacher.spec.block_size, **settings)
        [done] = decode_prompts(teacher.model, spec or teacher.spec, [prompt], [7 * index],
                                STRATEGIES[method], options, 1)
        results[index] = (done.forwards, done.tokens)
    return results


SAMPLED = [0, 3, 6, 7]  # the settings also checked at temperature 0.7
REFILL_CASES = [(*SETTINGS[index], 0.0) for index in range(len(SETTINGS))] + [
    (*SETTINGS[index], 0.7) for index in SAMPLED]
REFILL_IDS = [f"{IDS[index]}-greedy" for index in range(len(SETTINGS))] + [
    f"{IDS[index]}-t0.7" for index in SAMPLED]


@pytest.mark.parametrize(("method", "settings", "temperature"), REFILL_CASES, ids=REFILL_IDS)
def test_slot_refill_equals_each_prompt_alone(teacher, arith, method, settings, temperature):
    """10 ragged prompts in 4 slots: every row equals its prompt decoded alone, greedy and
    sampled (a row's noise comes from its own seed key)."""
    prompts = ragged_prompts(teacher, arith, 10)
    settings = {**settings, "temperature": temperature}
    batched = decode(teacher, arith, prompts, method, settings, batch_size=4)
    assert batched == one_by_one(teacher, arith, prompts, method, settings)


@pytest.mark.parametrize(("method", "settings"),
                         [SETTINGS[3], SETTINGS[4], SETTINGS[7], DREAM_VANILLA],
                         ids=[IDS[3], IDS[4], IDS[7], "dream-vanilla"])
def test_slot_refill_equals_each_prompt_alone_under_dreams_rules(teacher, arith, method,
                                                                 settings):
    spec = dataclasses.replace(teacher.spec, **SHIFTED)
    prompts = ragged_prompts(teacher, arith, 8)
    batched = decode(teacher, arith, prompts, method, settings, batch_size=3, spec=spec)
    assert batched == one_by_one(teacher, arith, prompts, method, settings, spec=spec)


def test_sampling_changes_outputs_and_depends_on_the_seed_key(teacher, arith):
    prompts = ragged_prompts(teacher, arith, 8)
    greedy = decode(teacher, arith, prompts, "multiblock", {}, 8)
    sampled = decode(teacher, arith, prompts, "multiblock", {"temperature": 1.0}, 8)
    assert sampled != greedy
    assert sampled == decode(teacher, arith, prompts, "multiblock", {"temperature": 1.0}, 3)


# aten operators per iteration outside the forward (each a kernel launch on a GPU), about
# 10 % over what the decoder dispatches now at batch 1 or 8 (before scoring computed only
# what each strategy reads and the constant tensors were built once: vanilla 73, dual
# cache 94, multiblock 178, delayed cache 253).
EAGER_OPS = [59, 51, 66, 73, 67, 159, 161, 234, 81]  # SETTINGS, then Dream's vanilla


class ForwardLog:
    """Counts forwards, the distinct (window, logits) shapes, and the host syncs between the
    first and the last forward."""

    def __init__(self, model, counter: HostSyncCounter) -> None:
        self.counter, self.at_forward, self.shapes = counter, [], set()
        self.handle = model.register_forward_pre_hook(self.record, with_kwargs=True)

    def record(self, module, args, kwargs) -> None:
        self.at_forward.append(self.counter.total)
        self.shapes.add((tuple(args[0].shape), tuple(kwargs["logits_at"].shape)))

    @property
    def syncs_between_forwards(self) -> int:
        return self.at_forward[-1] - self.at_forward[0]


@pytest.mark.parametrize("batch_size", [1, 8])
@pytest.mark.parametrize(("method", "settings", "rules", "most_ops"), [
    (*setting, rules, most_ops) for setting, rules, most_ops in zip(
        [*SETTINGS, DREAM_VANILLA], [{}] * len(SETTINGS) + [SHIFTED], EAGER_OPS, strict=True)],
    ids=[*IDS, "dream-vanilla"])
def test_one_host_sync_per_forward_few_forward_shapes_and_few_eager_ops(
        teacher, arith, method, settings, rules, most_ops, batch_size):
    prompts = ragged_prompts(teacher, arith, 8 if batch_size > 1 else 3)  # counts per iteration
    counter = HostSyncCounter()
    log = ForwardLog(teacher.model, counter)
    try:
        with counter, counting_eager_ops(teacher.model) as ops:
            decode(teacher, arith, prompts, method, settings, batch_size,
                   spec=dataclasses.replace(teacher.spec, **rules))
    finally:
        log.handle.remove()
    forwards = len(log.at_forward)
    assert forwards > 8 and ops.forwards == forwards
    assert log.syncs_between_forwards <= forwards - 1, counter.counts
    assert len(log.shapes) <= arith.gen_length // teacher.spec.block_size + 1
    assert ops.per_iteration <= most_ops, ops.counts.most_common(10)


def test_sync_counter_sees_every_kind_of_host_read():
    values = torch.arange(6.0)
    with HostSyncCounter() as counter:
        values.sum().item()
        values.tolist()
        bool(values[0] > 1)
        values.nonzero()
        values[values > 2]
        torch.where(values > 1)
        torch.tensor([1, 2])
        values[[0, 1]]
        values.cpu()
        values + 1  # not a read
    assert counter.total == 9, counter.counts


def test_eager_op_counter_counts_only_between_forwards():
    layer, values = torch.nn.Linear(4, 4), torch.ones(2, 4)
    with torch.no_grad(), counting_eager_ops(layer) as ops:
        for _ in range(3):
            values = (layer(values) + 1).relu()  # two operators after each forward
    assert ops.forwards == 3 and ops.per_iteration == 2
    assert ops.counts["add"] == 3 and "addmm" not in ops.counts


@pytest.mark.parametrize("sync_every", [2, 5])
@pytest.mark.parametrize(("method", "settings"), [SETTINGS[3], SETTINGS[7]],
                         ids=[IDS[3], IDS[7]])
def test_reading_every_k_iterations_changes_no_result(teacher, arith, method, settings,
                                                      sync_every):
    prompts = ragged_prompts(teacher, arith, 12)
    every = decode(teacher, arith, prompts, method, settings, 4)
    assert decode(teacher, arith, prompts, method, settings, 4, sync_every=sync_every) == every


def test_a_row_at_the_safety_cap_stops_alone(teacher, arith, monkeypatch):
    """Rows that reach the cap stop with masks left; the rows beside them finish as if
    there were no cap."""
    prompts = ragged_prompts(teacher, arith, 12)
    free = decode(teacher, arith, prompts, "multiblock", {}, 4)
    cap = sorted(forwards for forwards, _ in free.values())[len(free) // 2]
    monkeypatch.setattr(rows_module, "SAFETY_CAP_FORWARDS", cap)
    capped = decode(teacher, arith, prompts, "multiblock", {}, 4)
    over = [index for index, (forwards, _) in free.items() if forwards > cap]
    assert over and len(over) < len(prompts)
    for index, (forwards, tokens) in capped.items():
        if index in over:
            assert forwards == cap and teacher.spec.mask_token_id in tokens
        else:
            assert (forwards, tokens) == free[index]


def test_commit_steps_record_the_forward_of_every_commit(teacher, arith):
    prompts = ragged_prompts(teacher, arith, 5)
    options = DecodeOptions(gen_length=arith.gen_length, block_size=teacher.spec.block_size)
    for done in decode_prompts(teacher.model, teacher.spec, prompts, range(5),
                               STRATEGIES["vanilla"], options, 2, commit_steps=True):
        assert sorted(done.commit_step) == list(range(arith.gen_length))  # one per forward


def test_compiling_allows_more_graphs_than_a_long_decode_needs(monkeypatch):
    """256 answer tokens in blocks of 32 need up to 9 window shapes, over dynamo's default
    limit of 8 graphs per function (the 9th would be an error under fullgraph)."""
    monkeypatch.setattr(torch._dynamo.config, "recompile_limit", 8)
    compiled_step(lambda window, read_start: None, torch.device("cpu"))
    assert torch._dynamo.config.recompile_limit >= 4 * (256 // 32 + 1)


# One case per code path a graph must hold: each strategy and cache mode, the Gumbel noise,
# the multi-block read of the first open blocks, Dream's logit shift and its own vanilla.
COMPILE_CASES = [(*SETTINGS[index], temperature, rules) for index, temperature, rules in (
    (0, 0.0, {}), (2, 0.7, {}), (3, 0.0, {}), (5, 0.0, {}), (6, 0.7, {}), (7, 0.0, {}),
    (7, 0.0, SHIFTED))] + [(*DREAM_VANILLA, 0.7, SHIFTED)]
COMPILE_IDS = [f"{method}-{'-'.join(map(str, settings.values()))}"
               f"-{f't{temperature:g}' if temperature else 'greedy'}{'-dream' if rules else ''}"
               for method, settings, temperature, rules in COMPILE_CASES]


@pytest.mark.parametrize(("method", "settings", "temperature", "rules"), COMPILE_CASES,
                         ids=COMPILE_IDS)
def test_compiled_iterations_give_the_eager_decode_in_few_graphs(teacher, arith, method,
                                                                 settings, temperature, rules):
    """`--compile` captures each iteration whole (forward, scoring, commits) without a graph
    break, in at most answer blocks + 1 graphs, and replays the eager tokens and forwards
    with slot refill; reading every 3 iterations, the two iterations after a read run their
    step alone (no operator outside it). Dynamo's capture with the eager backend: the graphs,
    guards and side effects of `--compile` without inductor building each graph
    (benchmarks/decode_cpu.py compares inductor's graphs with eager)."""
    from gpu_decode import capture_only
    from torch._dynamo.utils import counters

    spec = dataclasses.replace(teacher.spec, **rules)
    prompts = ragged_prompts(teacher, arith, 6)
    settings = {**settings, "temperature": temperature}
    eager = decode(teacher, arith, prompts, method, settings, 3, spec=spec)
    torch._dynamo.reset()
    counters.clear()
    with capture_only(), counting_eager_ops_outside_steps() as ops:
        compiled = decode(teacher, arith, prompts, method, settings, 3, spec=spec, compile=True,
                          sync_every=3)
    assert compiled == eager
    assert 0 < counters["stats"]["unique_graphs"] <= arith.gen_length // spec.block_size + 1
    assert not counters["graph_break"]
    reads = [gap for step, gap in enumerate(ops.gaps, 1) if step % 3 == 0]
    between_reads = [gap for step, gap in enumerate(ops.gaps, 1) if step % 3]
    assert len(between_reads) > 5 and set(between_reads) == {0} and min(reads) > 0


def test_the_state_a_compiled_step_updates_is_found_for_cuda_graphs(teacher):
    """CUDA graphs replay the decoding state at fixed addresses: the driver marks every
    tensor it holds (the canvas, the KV cache, the strategy's block table) as static."""
    queue = PromptQueue.upload([[1, 2, 3], [4, 5]], [0, 1], teacher.spec.pad_token_id,
                               torch.device("cpu"))
    options = DecodeOptions(gen_length=32, block_size=16, cache="delayed")
    driver = Driver(teacher.model, teacher.spec, queue, 2, STRATEGIES["multiblock"], options)
    held = {id(tensor) for tensor in held_tensors(driver)}
    table = driver.strategy.table
    for tensor in [driver.rows.canvas, driver.rows.forwards, *driver.cache.keys,
                   table.created, table.completed_at, table.cache_len,
                   driver.strategy.just_filled]:
        assert id(tensor) in held
    assert not any(id(parameter) in held for parameter in teacher.model.parameters())
