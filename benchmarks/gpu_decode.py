"""Decoding speed at real model shapes with random weights: tokens/s, TPF, decoder overhead.

Random-weight models of the LLaDA-8B-Instruct and Dream-7B-Instruct shapes (algorithms.md
§6.1, §6.2) decode random prompts (128 tokens) into 256 tokens in 32-token blocks, at batch
1, 4 and 16, with every method. Random weights predict almost uniformly everywhere, so a hook
(`FrontierCertainty`) sharpens the logits next to decoded text; its reach is found by
bisection so that `multiblock` commits about the paper's TPF (9.11 LLaDA, 5 Dream). The
output head's stop-token rows are zeroed so that no random stop token ends an answer.

Each decode is recorded (a copy of every model call, and the calls that would make the host
wait for the device), timed, and then its model calls are replayed bare, back to back (at
most --replay-calls of each kind, evenly spaced). Decode time over bare time is the
decoder's overhead; tokens/s over vanilla's (one token per forward) is the speed-up.
`--compile` compiles each decoding iteration whole (forward, scoring, commits; CUDA graphs on
CUDA), and the bare replays run the forward compiled alone.

Each row also counts, the same way on every device: the aten operators the decoder
dispatches per iteration outside the forward (each one kernel launch on a GPU; under
`--compile`, those outside the compiled iterations: the host reads' own), the host reads
per forward, and under `--compile` the graphs the method's first decode compiles (at most
answer blocks + 1).

    # one H100/H200, both shapes; estimated 6-8 minutes, not yet run on a GPU.
    # Rows are also appended to OUT/gpu_decode.jsonl as they are measured.
    python benchmarks/gpu_decode.py --device cuda --profile --out runs/gpu
    # the same with CUDA graphs
    python benchmarks/gpu_decode.py --device cuda --compile --out runs/gpu-compiled
    # a scaled-down smoke run on CPU (about a minute)
    python benchmarks/gpu_decode.py --device cpu --layers 1 --hidden 128 --intermediate 256 \\
        --vocab 2048 --prompt-length 16 --gen-length 64 --batches 1 4
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from unittest import mock

import torch
from rich.console import Console
from rich.table import Table
from torch._dynamo.utils import counters

from d3cli.canvas import first_stop
from d3cli.checkpoints import ModelSpec
from d3cli.decode import STRATEGIES, Decoded, DecodeOptions, decode_prompts, driver
from d3cli.decode.eager_ops import counting_eager_ops, counting_eager_ops_outside_steps
from d3cli.decode.syncs import HostSyncCounter
from d3cli.model import D3Config, D3Model, KVCache

HEAD_DIM = 128  # both families


@dataclasses.dataclass(frozen=True)
class Shape:
    """A model geometry with its family's token facts and its d3LLM decoding setting."""

    name: str
    config: dict
    spec: ModelSpec
    target_tpf: float  # the paper's multiblock TPF on GSM8K-CoT (§5.1)
    gamma: float  # §3.3, GSM8K-CoT
    cache_delay: int
    refresh_interval: int | None


SHAPES = {
    "llada": Shape(
        "LLaDA-8B",
        dict(vocab_size=126464, hidden_size=4096, intermediate_size=12288, num_hidden_layers=32,
             num_attention_heads=32, rope_theta=500000.0, rms_norm_eps=1e-5),
        ModelSpec(mask_token_id=126336, stop_token_ids=(126081, 126348), pad_token_id=126081,
                  block_size=32),
        target_tpf=9.11, gamma=0.5, cache_delay=2, refresh_interval=3),
    "dream": Shape(
        "Dream-7B",
        dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
             num_attention_heads=28, num_key_value_heads=4, rope_theta=1e6, rms_norm_eps=1e-6,
             attention_bias=True),
        ModelSpec(mask_token_id=151666, stop_token_ids=(151643, 151645), pad_token_id=151643,
                  block_size=32, logit_shift=True, commit_lowest_entropy=False,
                  strict_entropy_threshold=True),
        target_tpf=5.0, gamma=0.4, cache_delay=1, refresh_interval=None),
}


def scaled_down(shape: Shape, layers: int | None = None, hidden: int | None = None,
                intermediate: int | None = None, vocab: int | None = None) -> Shape:
    """The shape with fewer layers, a narrower width or a smaller vocabulary (smoke runs).
    Heads keep their width of 128 and the family's query-per-KV-head ratio; with a smaller
    vocabulary the special tokens move to its top ids."""
    config, spec = dict(shape.config), shape.spec
    if layers:
        config["num_hidden_layers"] = layers
    if intermediate:
        config["intermediate_size"] = intermediate
    if hidden:
        group = config["num_attention_heads"] // config.get("num_key_value_heads",
                                                            config["num_attention_heads"])
        heads = max(hidden // HEAD_DIM, group)
        heads -= heads % group
        config.update(hidden_size=heads * HEAD_DIM, num_attention_heads=heads,
                      num_key_value_heads=heads // group)
    if vocab:
        config["vocab_size"] = vocab
        spec = replace(spec, mask_token_id=vocab - 1,
                                   stop_token_ids=(vocab - 2, vocab - 3), pad_token_id=vocab - 2)
    return replace(shape, config=config, spec=spec)


def random_model(shape: Shape, device: torch.device, dtype: torch.dtype, seed: int) -> D3Model:
    """The shape with N(0, 0.02) weights, built in place on the device; stop rows zeroed."""
    config = D3Config(**shape.config, mask_token_id=shape.spec.mask_token_id)
    with torch.device("meta"):
        model = D3Model(config)
    model = model.to(dtype).to_empty(device=device).eval()
    generator = torch.Generator(device).manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("norm.weight"):
                parameter.fill_(1.0)
            elif name.endswith(".bias"):
                parameter.zero_()
            else:
                parameter.normal_(0.0, config.initializer_range, generator=generator)
        model.lm_head.weight[list(shape.spec.stop_token_ids)] = 0.0
    return model


class FrontierCertainty:
    """A forward hook that makes a random model's certainty grow next to decoded tokens.

    Random weights predict the same near-uniform distribution at every masked position, so
    a threshold commits either nothing or whole blocks. This hook scales the logits of each
    position by `peak · exp(-(d - 1) / reach)`, d being the distance to the nearest decoded
    token on its left (positions before the window count as decoded): positions next to the
    decoded text are confident, far ones are not, and each forward moves the frontier by a
    few tokens, more with a longer `reach`. Under `--compile` it is part of each compiled
    iteration, as a model's own last layer would be.
    """

    def __init__(self, mask_id: int, peak: float, reach: float) -> None:
        self.mask_id, self.peak, self.reach = mask_id, peak, reach

    def __call__(self, module: torch.nn.Module, args: tuple, kwargs: dict,
                 logits: torch.Tensor) -> torch.Tensor:
        ids = args[0]
        index = torch.arange(ids.shape[1], device=ids.device).expand_as(ids)
        last_decoded = torch.where(ids != self.mask_id, index, -1).cummax(1).values
        distance = (index - last_decoded).clamp_min(1)
        factor = self.peak * torch.exp(-(distance - 1) / self.reach)
        if kwargs.get("logits_at") is not None:
            factor = factor.gather(1, kwargs["logits_at"])
        return logits * factor[..., None].to(logits.dtype)


def logit_std(model: D3Model) -> float:
    """Spread of a random model's logits: unit-RMS hidden states through N(0, σ²) weights."""
    return model.config.initializer_range * math.sqrt(model.config.hidden_size)


def random_prompts(shape: Shape, count: int, length: int, seed: int) -> list[list[int]]:
    """Token ids below every special id of the shape."""
    spec = shape.spec
    below = min(spec.mask_token_id, spec.pad_token_id, *spec.stop_token_ids)
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, below, (count, length), generator=generator).tolist()


def compiled_forward(model: D3Model) -> Callable[..., torch.Tensor]:
    """The bare forward compiled as a compiled decode's iterations are (once per model)."""
    if "_compiled_forward" not in model.__dict__:
        cuda = next(model.parameters()).device.type == "cuda"
        model.__dict__["_compiled_forward"] = torch.compile(
            model, fullgraph=True, dynamic=False, mode="reduce-overhead" if cuda else None)
    return model.__dict__["_compiled_forward"]


@contextlib.contextmanager
def capture_only() -> Iterator[None]:
    """While active, `--compile` is dynamo's capture with the eager backend: the graphs,
    guards, graph breaks and recompiles of the compiled iterations (and of the bare
    forward), without inductor building each graph (minutes per graph on a small CPU). For
    smoke runs and tests."""

    def step(function: Callable[..., None], device: torch.device) -> Callable[..., None]:
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit,
                                                   driver.RECOMPILE_LIMIT)
        return torch.compile(function, backend="eager", fullgraph=True, dynamic=False)

    def forward(model: torch.nn.Module) -> Callable[..., torch.Tensor]:
        if "_capture_only" not in model.__dict__:
            model.__dict__["_capture_only"] = torch.compile(
                model, backend="eager", fullgraph=True, dynamic=False)
        return model.__dict__["_capture_only"]

    with mock.patch.object(driver, "compiled_step", step), \
            mock.patch.dict(globals(), {"compiled_forward": forward}):
        yield


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --- one decode: record, time, replay --------------------------------------------------------


def decode(model: D3Model, shape: Shape, method: str, options: DecodeOptions,
           prompts: list[list[int]], compile: bool = False,
           sync_every: int = 1) -> list[Decoded]:
    """One decode of `prompts` as one batch."""
    return list(decode_prompts(model, shape.spec, prompts, range(len(prompts)),
                               STRATEGIES[method], options, len(prompts), sync_every,
                               compile=compile))


def tokens_per_forward(decoded: list[Decoded], spec: ModelSpec) -> float:
    """Answer tokens before the first stop token over forwards, summed over the rows."""
    tokens = sum(first_stop(done.tokens, spec.stop_token_ids) for done in decoded)
    return tokens / sum(done.forwards for done in decoded)


@dataclasses.dataclass
class Call:
    """One model call of a decode, kept to be replayed bare."""

    kind: str  # full (no cache) | refresh (whole canvas into the cache) | cached (a suffix)
    args: tuple
    kwargs: dict


def same_strides(tensor: torch.Tensor) -> torch.Tensor:
    """A copy with the tensor's strides: a compiled forward's guards include them (a window
    of the canvas is a strided view), so a replay runs the decode's own graphs."""
    if 0 in tensor.stride():  # an expanded tensor cannot be written to as it is laid out
        return tensor.clone()
    copy = torch.empty_strided(tensor.shape, tensor.stride(), dtype=tensor.dtype,
                               device=tensor.device)
    return copy.copy_(tensor)


def record_calls(model: D3Model, run: Callable[[], list[Decoded]]) -> tuple[list[Call], int]:
    """Run a decode, keeping a copy of every model call (strides kept); also count the host
    synchronisations between its first and its last model call (`HostSyncCounter`)."""
    calls: list[Call] = []
    counter = HostSyncCounter()
    at_call: list[int] = []

    def keep(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        at_call.append(counter.total)
        cache = kwargs.get("cache")
        kind = "full" if cache is None else (
            "refresh" if args[0].shape[1] == cache.length else "cached")
        copied = {key: same_strides(value) if isinstance(value, torch.Tensor) else value
                  for key, value in kwargs.items() if key != "cache"}
        calls.append(Call(kind, tuple(map(same_strides, args)), copied))

    handle = model.register_forward_pre_hook(keep, with_kwargs=True)
    try:
        with counter:
            run()
    finally:
        handle.remove()
    return calls, at_call[-1] - at_call[0]


def replay_seconds(model: D3Model, calls: Sequence[Call], length: int,
                   forward: Callable[..., torch.Tensor]) -> float:
    """Wall time of the calls run back to back with nothing between them."""
    device = next(model.parameters()).device
    caches = {rows: KVCache.empty(model.config, rows, length, device, model.dtype)
              for rows in {call.args[0].shape[0] for call in calls if call.kind != "full"}}
    synchronize(device)
    started = time.perf_counter()
    for call in calls:
        cache = None if call.kind == "full" else caches[call.args[0].shape[0]]
        forward(*call.args, **call.kwargs, cache=cache)
    synchronize(device)
    return time.perf_counter() - started


@dataclasses.dataclass
class Measured:
    """One method at one batch size."""

    shape: str
    method: str
    batch: int
    tpf: float
    tokens_per_second: float
    iterations: int  # the decoder loop's iterations (one model call each)
    seconds: float
    bare_seconds: float
    bare_ms_per_call: dict[str, float]
    calls: dict[str, int]
    host_syncs: int
    eager_ops: float  # aten operators per iteration outside the (compiled) forward
    compiles: int | None  # graphs the first decode compiled (--compile), else None

    @property
    def overhead(self) -> float:
        return self.seconds / self.bare_seconds

    @property
    def host_reads_per_forward(self) -> float:
        """Host synchronisations between two forwards, on average."""
        return self.host_syncs / max(self.iterations - 1, 1)

    @property
    def ms_per_iteration(self) -> float:
        return 1000 * self.seconds / self.iterations


def warm_up(run: Callable[[], list[Decoded]], model: D3Model,
            compile: bool) -> tuple[float, int | None]:
    """The first decode (under `compile`, from a fresh compile cache, so it compiles this
    method's graphs): operators per iteration outside the forward (outside the compiled
    iterations under `compile`), and graphs compiled."""
    if compile:
        torch._dynamo.reset()
    before = counters["stats"]["unique_graphs"]
    with counting_eager_ops_outside_steps() if compile else counting_eager_ops(model) as ops:
        run()
    return ops.per_iteration, counters["stats"]["unique_graphs"] - before if compile else None


def measure(model: D3Model, shape: Shape, method: str, options: DecodeOptions,
            prompts: list[list[int]], repeats: int, replay_calls: int, compile: bool,
            sync_every: int) -> Measured:
    """Record, time (median of `repeats`, or of one when a decode takes over 5 s) and replay
    one decode of `prompts` as one batch. Each kind of call is replayed from at most
    `replay_calls` of its calls, evenly spaced, and scaled to its count."""
    device = next(model.parameters()).device

    def run(compile: bool = compile) -> list[Decoded]:
        return decode(model, shape, method, options, prompts, compile, sync_every)

    forward = compiled_forward(model) if compile else model
    with torch.no_grad():
        # The calls are recorded eagerly (a hook that copies them cannot sit in a compiled
        # graph); they are the same calls the compiled decode makes.
        calls, syncs = record_calls(model, lambda: run(compile=False))
        eager_ops, compiles = warm_up(run, model, compile)
        times, decoded = [], []
        while len(times) < (repeats if not times or times[0] < 5 else 1):
            synchronize(device)
            started = time.perf_counter()
            decoded = run()
            synchronize(device)
            times.append(time.perf_counter() - started)
        length = len(prompts[0]) + options.gen_length
        by_kind = {kind: [call for call in calls if call.kind == kind]
                   for kind in sorted({call.kind for call in calls})}
        ms_per_call = {}
        for kind, of_kind in by_kind.items():
            sample = of_kind[::math.ceil(len(of_kind) / replay_calls)]
            shapes = {tuple(call.args[0].shape): call for call in sample}
            replay_seconds(model, list(shapes.values()), length, forward)  # each shape once
            seconds = replay_seconds(model, sample, length, forward)
            ms_per_call[kind] = 1000 * seconds / len(sample)
    counts = {kind: len(of_kind) for kind, of_kind in by_kind.items()}
    bare_seconds = sum(ms_per_call[kind] * counts[kind] for kind in counts) / 1000
    tpf, seconds = tokens_per_forward(decoded, shape.spec), statistics.median(times)
    forwards = sum(done.forwards for done in decoded)
    return Measured(shape.name, label(method, options), len(prompts), tpf,
                    tpf * forwards / seconds, len(calls), seconds, bare_seconds, ms_per_call,
                    counts, syncs, eager_ops, compiles)


def label(method: str, options: DecodeOptions) -> str:
    if method == "vanilla":
        return "vanilla"
    name = f"{method} {options.threshold:g}"
    return name if options.cache == "none" else f"{name} cache {options.cache}"


# --- the runs -------------------------------------------------------------------------------


def method_runs(shape: Shape, base: DecodeOptions) -> list[tuple[str, DecodeOptions]]:
    """vanilla (one token per forward), Fast-dLLM dual cache, dParallel, d3LLM without and
    with the delayed cache, at the shape's GSM8K-CoT setting."""
    entropy = replace(base, threshold=shape.gamma)
    return [
        ("vanilla", replace(base, steps=base.gen_length)),
        ("threshold", replace(base, threshold=0.9, cache="dual")),
        ("entropy", entropy),
        ("multiblock", entropy),
        ("multiblock", replace(entropy, cache="delayed", cache_delay=shape.cache_delay,
                               refresh_interval=shape.refresh_interval)),
    ]


def calibrate(model: D3Model, shape: Shape, certainty: FrontierCertainty,
              options: DecodeOptions, prompts: list[list[int]], tries: int = 12) -> float:
    """Set `certainty.reach` so that `multiblock` commits the shape's target TPF (within 5 %),
    by bisection on log(reach); returns the TPF reached. TPF rises with the reach."""
    target, low, high = shape.target_tpf, 0.1, float(options.gen_length)
    best = (math.nan, math.inf)
    for _ in range(tries):
        certainty.reach = math.sqrt(low * high)
        tpf = tokens_per_forward(decode(model, shape, "multiblock", options, prompts),
                                 shape.spec)
        if abs(tpf - target) < abs(best[1] - target):
            best = (certainty.reach, tpf)
        if abs(tpf / target - 1) < 0.05:
            break
        low, high = (certainty.reach, high) if tpf < target else (low, certainty.reach)
    certainty.reach = best[0]
    return best[1]


def prepared(shape: Shape, device: torch.device, dtype: torch.dtype, seed: int,
             peak_logit_std: float, reach: float | None, base: DecodeOptions,
             prompt_length: int, calibration_prompts: int,
             ) -> tuple[D3Model, FrontierCertainty, float]:
    """The shape's random model with its certainty hook, whose reach is `reach` or
    calibrated on `calibration_prompts` random prompts; and the TPF calibration reached
    (NaN when `reach` is given)."""
    model = random_model(shape, device, dtype, seed)
    certainty = FrontierCertainty(shape.spec.mask_token_id, reach=reach or 1.0,
                                  peak=peak_logit_std / logit_std(model))
    model.register_forward_hook(certainty, with_kwargs=True)
    if reach:
        return model, certainty, math.nan
    calibration = random_prompts(shape, calibration_prompts, prompt_length, seed + 1)
    return model, certainty, calibrate(model, shape, certainty,
                                       replace(base, threshold=shape.gamma), calibration)


def record_of(row: Measured) -> dict:
    """A row as one JSON record, with its derived counts."""
    return dataclasses.asdict(row) | {"host_reads_per_forward": row.host_reads_per_forward}


def profile_table(model: D3Model, shape: Shape, method: str, options: DecodeOptions,
                  prompts: list[list[int]], rows: int = 25) -> str:
    """torch.profiler over one decode: the operators that take its time, by self time on the
    device (CUDA) or the CPU."""
    device = next(model.parameters()).device
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as profiler:
        decode(model, shape, method, options, prompts)
        synchronize(device)
    order = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return profiler.key_averages().table(sort_by=order, row_limit=rows)


def table_for(rows: Sequence[Measured], title: str) -> Table:
    table = Table("shape", "method", "batch", "TPF", "tokens/s", "× vanilla", "ms/iter",
                  "bare ms/iter", "overhead", "bare ms per call", "host reads/forward",
                  "ops/iter", "compiles", title=title)
    vanilla = {(row.shape, row.batch): row.tokens_per_second for row in rows
               if row.method == "vanilla"}
    for row in rows:
        reference = vanilla.get((row.shape, row.batch))
        per_call = ", ".join(f"{kind} {ms:.1f}×{row.calls[kind]}"
                             for kind, ms in row.bare_ms_per_call.items())
        table.add_row(row.shape, row.method, str(row.batch), f"{row.tpf:.2f}",
                      f"{row.tokens_per_second:.0f}",
                      f"{row.tokens_per_second / reference:.2f}x" if reference else "-",
                      f"{row.ms_per_iteration:.1f}",
                      f"{1000 * row.bare_seconds / row.iterations:.1f}",
                      f"{row.overhead:.2f}x", per_call, f"{row.host_reads_per_forward:.2f}",
                      f"{row.eager_ops:.0f}", "-" if row.compiles is None else str(row.compiles))
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", choices=sorted(SHAPES), default=["llada", "dream"])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--methods", nargs="+", choices=sorted(STRATEGIES),
                        help="only these methods (default: all; vanilla gives the speed-up)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["bfloat16", "float32"],
                        help="default: bfloat16 on CUDA, float32 on CPU")
    parser.add_argument("--prompt-length", type=int, default=128)
    parser.add_argument("--gen-length", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3, help="timed decodes (median)")
    parser.add_argument("--replay-calls", type=int, default=64,
                        help="most calls of each kind replayed bare per decode")
    parser.add_argument("--reach", type=float, help="the certainty's reach (skips calibration)")
    parser.add_argument("--peak-logit-std", type=float, default=40.0,
                        help="spread of the logits next to decoded text")
    parser.add_argument("--calibration-prompts", type=int, default=4)
    parser.add_argument("--layers", type=int, help="scale the shapes down (smoke runs)")
    parser.add_argument("--hidden", type=int)
    parser.add_argument("--intermediate", type=int)
    parser.add_argument("--vocab", type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the forward (CUDA graphs on CUDA)")
    parser.add_argument("--sync-every", type=int, default=1,
                        help="decoder iterations between host reads")
    parser.add_argument("--profile", action="store_true",
                        help="also profile the last method at batch 1 (OUT/profile-SHAPE.txt)")
    parser.add_argument("--out", type=Path, help="append each row to OUT/gpu_decode.jsonl")
    args = parser.parse_args()
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype or ("bfloat16" if device.type == "cuda" else "float32"))
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"CPU, {torch.get_num_threads()} threads"
    console = Console(width=220)
    rows: list[Measured] = []
    for name in args.shapes:
        shape = scaled_down(SHAPES[name], args.layers, args.hidden, args.intermediate, args.vocab)
        started = time.perf_counter()
        base = DecodeOptions(gen_length=args.gen_length, block_size=shape.spec.block_size)
        runs = [(method, options) for method, options in method_runs(shape, base)
                if not args.methods or method in args.methods]
        model, certainty, tpf = prepared(shape, device, dtype, args.seed, args.peak_logit_std,
                                         args.reach, base, args.prompt_length,
                                         args.calibration_prompts)
        console.print(f"{shape.name}: {sum(p.numel() for p in model.parameters()) / 1e9:.2f} B "
                      f"parameters in {dtype}, certainty reach {certainty.reach:.3g} (multiblock "
                      f"TPF {tpf:.2f} on {args.calibration_prompts} prompts, target "
                      f"{shape.target_tpf}), {time.perf_counter() - started:.0f} s")
        for batch in args.batches:
            prompts = random_prompts(shape, batch, args.prompt_length, args.seed)
            for method, options in runs:
                row = measure(model, shape, method, options, prompts, args.repeats,
                              args.replay_calls, args.compile, args.sync_every)
                rows.append(row)
                console.print(f"  batch {batch} {row.method}: TPF {row.tpf:.2f}, "
                              f"{row.tokens_per_second:.0f} tokens/s, "
                              f"overhead {row.overhead:.2f}x")
                if args.out:
                    args.out.mkdir(parents=True, exist_ok=True)
                    record = record_of(row) | {
                        "device": where, "dtype": str(dtype), "torch": torch.__version__,
                        "reach": certainty.reach, "peak": certainty.peak,
                        "prompt_length": args.prompt_length, "gen_length": args.gen_length}
                    with (args.out / "gpu_decode.jsonl").open("a") as handle:
                        handle.write(json.dumps(record) + "\n")
        if args.profile:
            method, options = runs[-1]
            table = profile_table(model, shape, method, options,
                                  random_prompts(shape, 1, args.prompt_length, args.seed))
            console.print(f"{shape.name}, {label(method, options)}, batch 1:\n{table}")
            if args.out:
                (args.out / f"profile-{name}.txt").write_text(table)
        del model
    console.print(table_for(rows, f"{where}, {dtype}, prompt {args.prompt_length} + "
                                  f"generation {args.gen_length}, block 32"))


if __name__ == "__main__":
    main()
