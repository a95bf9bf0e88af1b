"""Decoding on CPU with the embedded model: accuracy, TPF and speed, as ratios in one run.

Two suites, each printed as one table whose ratios are against a baseline measured in the
same process:

    # the trade-off distillation must fix: one token per forward vs confidence thresholds
    python benchmarks/decode_cpu.py tradeoff --limit 500 --thresholds 0.9 0.7 0.5 0.3
    # every method: accuracy, TPF, wall-clock speed-up over vanilla; batch 1 vs batch 64
    python benchmarks/decode_cpu.py methods --limit 200
    # slot refill against fixed batches, and host reads every 1, 2 or 4 iterations
    python benchmarks/decode_cpu.py refill --limit 1000
    # --compile (each iteration one inductor graph) against eager: the same rows, and speed
    python benchmarks/decode_cpu.py compile --limit 200 --temperatures 0 0.7
    # aten operators per iteration outside the forward (kernel launches on a GPU)
    python benchmarks/decode_cpu.py ops --limit 16 --batch-size 16
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from d3cli.checkpoints import load_model
from d3cli.decode import DecodeOptions
from d3cli.decode.eager_ops import counting_eager_ops
from d3cli.runner import decode_examples, write_results
from d3cli.tasks import get_task

METHOD_RUNS = [
    ("vanilla", {}),
    ("threshold", {"threshold": 0.9}),
    ("threshold", {"threshold": 0.9, "cache": "dual"}),
    ("entropy", {"threshold": 0.5}),
    ("multiblock", {"threshold": 0.5, "blocks": 4}),
    ("multiblock", {"threshold": 0.5, "blocks": 4, "cache": "delayed"}),
]

REFILL_RUNS = [
    ("threshold", {"threshold": 0.9, "cache": "dual"}),
    ("multiblock", {"threshold": 0.5, "blocks": 4}),
    ("multiblock", {"threshold": 0.5, "blocks": 4, "cache": "delayed"}),
]


@dataclasses.dataclass
class Measured:
    accuracy: float
    tpf: float
    forwards: float
    seconds: float
    tokens: int
    rows: dict[str, tuple[int, str]]  # per prompt id: forwards and output


def measure(loaded, task, examples, method: str, options: DecodeOptions, batch_size: int,
            out: Path | None, sync_every: int = 1, compile: bool = False,
            fixed: bool = False) -> Measured:
    """One decode of `examples`; `fixed` decodes them in separate batches of `batch_size`
    (no slot refill across batches: the batch waits for its slowest row)."""
    started = time.perf_counter()
    chunks = [examples[start:start + batch_size] for start in range(0, len(examples),
                                                                     batch_size)]
    stream = itertools.chain.from_iterable(
        decode_examples(loaded, task, chunk, method, options, batch_size, sync_every, compile)
        for chunk in (chunks if fixed else [examples]))
    results = list(write_results(stream, out) if out else stream)
    seconds = time.perf_counter() - started
    tokens = sum(r.gen_tokens for r in results)
    forwards = sum(r.forwards for r in results)
    return Measured(100 * sum(bool(r.correct) for r in results) / len(results),
                    tokens / forwards, forwards / len(results), seconds, tokens,
                    {r.id: (r.forwards, r.output) for r in results})


def label(options: DecodeOptions, method: str, settings: dict) -> str:
    return " ".join([method, *(f"{k}={v}" for k, v in settings.items())])


def tradeoff(args, loaded, task, examples, base: DecodeOptions) -> Table:
    table = Table("method", "τ", "accuracy %", "TPF", "forwards/sample", "seconds",
                  "Δ accuracy vs vanilla", "TPF / vanilla",
                  title=f"{args.model}: {len(examples)} held-out {task.name} prompts, "
                        f"batch {args.batch_size}, {torch.get_num_threads()} CPU threads")
    reference = measure(loaded, task, examples, "vanilla", base, args.batch_size, args.out)
    rows = [("vanilla", "-", reference)]
    for tau in args.thresholds:
        options = dataclasses.replace(base, threshold=tau)
        rows.append(("threshold", f"{tau:g}", measure(loaded, task, examples, "threshold",
                                                      options, args.batch_size, args.out)))
    for method, tau, result in rows:
        table.add_row(method, tau, f"{result.accuracy:.1f}", f"{result.tpf:.2f}",
                      f"{result.forwards:.1f}", f"{result.seconds:.1f}",
                      f"{result.accuracy - reference.accuracy:+.1f}",
                      f"{result.tpf / reference.tpf:.2f}x")
    return table


def methods(args, loaded, task, examples, base: DecodeOptions) -> Table:
    table = Table("method", "accuracy %", "TPF", "seconds", "speed-up vs vanilla",
                  f"tokens/s batch {args.batch_size}", "tokens/s batch 1", "batch gain",
                  title=f"{args.model}: {len(examples)} held-out {task.name} prompts "
                        f"({args.single} at batch 1), {torch.get_num_threads()} CPU threads")
    reference = None
    for method, settings in METHOD_RUNS:
        options = dataclasses.replace(base, **settings)
        batched = measure(loaded, task, examples, method, options, args.batch_size, args.out)
        single = measure(loaded, task, examples[:args.single], method, options, 1, None)
        reference = reference or batched
        batched_rate = batched.tokens / batched.seconds
        single_rate = single.tokens / single.seconds
        table.add_row(label(options, method, settings), f"{batched.accuracy:.1f}",
                      f"{batched.tpf:.2f}", f"{batched.seconds:.1f}",
                      f"{reference.seconds / batched.seconds:.2f}x", f"{batched_rate:.0f}",
                      f"{single_rate:.0f}", f"{batched_rate / single_rate:.1f}x")
    return table


def refill(args, loaded, task, examples, base: DecodeOptions) -> Table:
    table = Table("method", "batches", "host read every", "accuracy %", "TPF", "seconds",
                  "tokens/s", "× fixed batches",
                  title=f"{args.model}: {len(examples)} held-out {task.name} prompts, "
                        f"{args.batch_size} slots, {torch.get_num_threads()} CPU threads")
    for method, settings in REFILL_RUNS:
        options = dataclasses.replace(base, **settings)
        fixed = measure(loaded, task, examples, method, options, args.batch_size, None,
                        fixed=True)
        rows = [("fixed", 1, fixed)] + [
            ("refill", every, measure(loaded, task, examples, method, options,
                                      args.batch_size, None, sync_every=every))
            for every in (1, 2, 4)]
        for mode, every, result in rows:
            table.add_row(label(options, method, settings), mode, str(every),
                          f"{result.accuracy:.1f}", f"{result.tpf:.2f}",
                          f"{result.seconds:.1f}", f"{result.tokens / result.seconds:.0f}",
                          f"{fixed.seconds / result.seconds:.2f}x")
    return table


def compiled(args, loaded, task, examples, base: DecodeOptions) -> Table:
    table = Table("method", "T", "forward", "rows as eager", "accuracy %", "TPF", "seconds",
                  "tokens/s", "× eager",
                  title=f"{args.model}: {len(examples)} held-out {task.name} prompts, "
                        f"batch {args.batch_size}, {torch.get_num_threads()} CPU threads "
                        "(compilation before the timer)")
    for (method, settings), temperature in itertools.product(METHOD_RUNS, args.temperatures):
        options = dataclasses.replace(base, **settings, temperature=temperature)
        eager = measure(loaded, task, examples, method, options, args.batch_size, None)
        torch._dynamo.reset()
        measure(loaded, task, examples[:args.batch_size], method, options, args.batch_size,
                None, compile=True)  # compiles every window shape of the method
        fast = measure(loaded, task, examples, method, options, args.batch_size, None,
                       compile=True)
        same = sum(fast.rows[key] == row for key, row in eager.rows.items())
        for name, result in (("eager", eager), ("compiled", fast)):
            table.add_row(label(options, method, settings), f"{temperature:g}", name,
                          f"{same}/{len(eager.rows)}", f"{result.accuracy:.1f}",
                          f"{result.tpf:.2f}", f"{result.seconds:.1f}",
                          f"{result.tokens / result.seconds:.0f}",
                          f"{eager.seconds / result.seconds:.2f}x")
    return table


def ops(args, loaded, task, examples, base: DecodeOptions) -> Table:
    table = Table("method", "forwards", "ops per iteration", "most frequent",
                  title=f"{args.model}: {len(examples)} held-out {task.name} prompts, "
                        f"batch {args.batch_size}: aten operators between two forwards")
    for method, settings in METHOD_RUNS:
        options = dataclasses.replace(base, **settings)
        with counting_eager_ops(loaded.model) as counter:
            measure(loaded, task, examples, method, options, args.batch_size, None)
        common = ", ".join(f"{name} {count}" for name, count in counter.counts.most_common(6))
        table.add_row(label(options, method, settings), str(counter.forwards),
                      f"{counter.per_iteration:.1f}", common)
    return table


SUITES = {"tradeoff": tradeoff, "methods": methods, "refill": refill, "compile": compiled,
          "ops": ops}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suite", choices=sorted(SUITES))
    parser.add_argument("--model", default="arith-teacher")
    parser.add_argument("--task", default="arith")
    parser.add_argument("--limit", type=int, default=500)
    parser.add_argument("--single", type=int, default=32, help="prompts decoded at batch 1")
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.9, 0.7, 0.5, 0.3])
    parser.add_argument("--temperatures", type=float, nargs="+", default=[0.0],
                        help="compile: the sampling temperatures compared")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, help="also append the result records here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    loaded = load_model(args.model, device="cpu", dtype="float32")
    task = get_task(args.task)
    examples = task.eval_examples(args.limit)
    base = DecodeOptions(gen_length=task.gen_length, block_size=loaded.spec.block_size)
    Console(width=200).print(SUITES[args.suite](args, loaded, task, examples, base))


if __name__ == "__main__":
    main()
