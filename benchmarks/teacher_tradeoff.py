"""Accuracy vs tokens-per-forward of a model on its task: the trade-off distillation must fix.

Decodes the held-out prompts one token per forward (`vanilla`) and with Fast-dLLM confidence
thresholds, and prints accuracy, TPF and the ratios against `vanilla` from the same run.

    python benchmarks/teacher_tradeoff.py --limit 500 --thresholds 0.9 0.7 0.5 0.3
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from d3cli.checkpoints import load_model
from d3cli.decode import DecodeOptions, decode_examples, write_results
from d3cli.tasks import get_task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="arith-teacher")
    parser.add_argument("--task", default="arith")
    parser.add_argument("--limit", type=int, default=500)
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.9, 0.7, 0.5, 0.3])
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, help="also append the result records here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    loaded = load_model(args.model, device="cpu", dtype="float32")
    task = get_task(args.task)
    examples = task.eval_examples(args.limit)
    base = DecodeOptions(gen_length=task.gen_length, block_size=loaded.spec.block_size)
    runs = [("vanilla", base)] + [("threshold", dataclasses.replace(base, threshold=tau))
                                  for tau in args.thresholds]
    table = Table("method", "τ", "accuracy %", "TPF", "forwards/sample", "seconds",
                  "Δ accuracy vs vanilla", "TPF / vanilla",
                  title=f"{args.model} on {len(examples)} held-out {task.name} prompts (CPU)")
    reference = None
    for method, options in runs:
        started = time.perf_counter()
        stream = decode_examples(loaded, task, examples, method, options, args.batch_size)
        results = list(write_results(stream, args.out) if args.out else stream)
        seconds = time.perf_counter() - started
        accuracy = 100 * sum(r.correct for r in results) / len(results)
        tpf = sum(r.gen_tokens for r in results) / sum(r.forwards for r in results)
        reference = reference or (accuracy, tpf)
        table.add_row(method, "-" if method == "vanilla" else f"{options.threshold:g}",
                      f"{accuracy:.1f}", f"{tpf:.2f}",
                      f"{sum(r.forwards for r in results) / len(results):.1f}", f"{seconds:.1f}",
                      f"{accuracy - reference[0]:+.1f}", f"{tpf / reference[1]:.2f}x")
    Console().print(table)


if __name__ == "__main__":
    main()
