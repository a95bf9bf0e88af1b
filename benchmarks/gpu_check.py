"""The GPU acceptance run: what the decoder and the trainer promise on a GPU, checked in one
command, each section recorded as pass or fail with its numbers.

    # one H100 or H200, about 8 minutes (estimated: not yet run on a GPU); the speed section
    # starts no new measurement after --budget seconds (300)
    python benchmarks/gpu_check.py --out runs/gpu-check
    # the same code at small shapes on CPU (the tests run it)
    python benchmarks/gpu_check.py --device cpu --smoke --out /tmp/gpu-check

Sections (an exception in one is recorded as its failure; the others still run):
- attention: the SDPA kernel of a forward at batch 1 without padding, with padding, and
  with grouped-query heads (Dream); on CUDA a fused kernel, never the math one.
- bf16: the embedded teacher and student in bfloat16 against float32: the share of rows
  decoded to the same tokens, and the largest logit difference.
- compile: eager and `--compile` decodes give the same tokens and forwards (embedded
  models, tiny LLaDA- and Dream-format checkpoints; greedy and T 0.7), compiling at most
  answer blocks + 1 graphs per method.
- torchrun: `torchrun --nproc_per_node 1 -m d3cli decode` writes what the plain run writes.
- distill: `d3 distill --bf16` for a few steps on a two-layer LLaDA-format model (LLaDA-8B
  width on the GPU): finite losses, float32 master weights, peak memory.
- speed: `gpu_decode.py`'s measurement at the LLaDA-8B and Dream-7B shapes (random weights)
  for vanilla, multiblock and multiblock with the delayed cache, eager and compiled, at
  batch 1 and 8: tokens/s, TPF, overhead over bare forwards, operators per iteration,
  host reads per forward, graphs compiled.

Writes OUT/gpu_check.json (every number) and OUT/gpu_check.md (a table per section); exits
1 when a section fails.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from gpu_check_sections import SECTIONS, Result


@dataclass
class Settings:
    """What the sections run at: the GPU's real shapes, or small ones (`smoke`)."""

    device: torch.device
    smoke: bool
    out: Path
    deadline: float  # time.perf_counter() after which no new speed measurement starts
    prompts: int = 24  # per decode in the compile and bf16 sections
    batch: int = 8
    speed_prompt_length: int = 128
    speed_gen_length: int = 128
    speed_batches: tuple[int, ...] = (1, 8)
    speed_shapes: tuple[str, ...] = ("llada", "dream")
    speed_reach: float | None = None  # the certainty's reach (None: calibrated)
    speed_scale: dict = field(default_factory=dict)  # gpu_decode.scaled_down's arguments
    distill_sizes: dict = field(default_factory=dict)  # LLaDA config keys of the student

    @classmethod
    def of(cls, device: torch.device, smoke: bool, out: Path, budget: float) -> Settings:
        deadline = time.perf_counter() + budget
        if not smoke:
            return cls(device, smoke, out, deadline, distill_sizes=dict(
                d_model=4096, mlp_hidden_size=12288, n_heads=32, n_kv_heads=32, n_layers=2))
        return cls(device, smoke, out, deadline, prompts=6, batch=4, speed_prompt_length=8,
                   speed_gen_length=64, speed_batches=(2,), speed_shapes=("llada",),
                   speed_reach=3.0,
                   speed_scale=dict(layers=1, hidden=128, intermediate=256, vocab=512))


def run_section(name: str, section: Callable[[Settings], Result], settings: Settings) -> Result:
    """One section's result; an exception is its failure, with the error and where."""
    started = time.perf_counter()
    try:
        result = section(settings)
    except Exception as error:  # fail soft: the next section still runs
        result = {"passed": False, "error": f"{type(error).__name__}: {error}"[:2000],
                  "traceback": traceback.format_exc()[-4000:]}
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


def markdown(report: dict) -> str:
    """The report as markdown: a heading per section, its numbers and row tables."""
    lines = [f"# GPU check: {report['device']}", "",
             f"torch {report['torch']}, {'smoke (small shapes)' if report['smoke'] else 'full'}"
             f", {report['seconds']:.0f} s, {'all passed' if report['passed'] else 'FAILED'}", ""]
    for name, result in report["sections"].items():
        lines += [f"## {name}: {'pass' if result['passed'] else 'FAIL'} "
                  f"({result['seconds']:.0f} s)", ""]
        for key, value in result.items():
            if key in ("passed", "seconds", "traceback"):
                continue
            if isinstance(value, list) and value and isinstance(value[0], dict):
                lines += ["", *table(value), ""]
            else:
                lines.append(f"- {key}: {value}")
        lines.append("")
    return "\n".join(lines)


def table(rows: list[dict]) -> list[str]:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    cells = [[cell(row.get(column, "")) for column in columns] for row in rows]
    return ["| " + " | ".join(map(cell, columns)) + " |", "|" + "---|" * len(columns),
            *("| " + " | ".join(row) + " |" for row in cells)]


def cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "/")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True,
                        help="folder for gpu_check.json, gpu_check.md and the work files")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--smoke", action="store_true", help="small shapes (CPU)")
    parser.add_argument("--sections", nargs="+", choices=list(SECTIONS), default=list(SECTIONS))
    parser.add_argument("--budget", type=float, default=300.0,
                        help="seconds from the start after which the speed section starts no "
                             "new measurement (the one running finishes)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    device = torch.device(args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    settings = Settings.of(device, args.smoke, args.out, args.budget)
    sections = {}
    for name in args.sections:
        sections[name] = run_section(name, SECTIONS[name], settings)
        print(f"{name}: {'pass' if sections[name]['passed'] else 'FAIL'} "
              f"({sections[name]['seconds']:.0f} s) {sections[name].get('error', '')}",
              flush=True)
    report = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else
              f"CPU, {torch.get_num_threads()} threads", "torch": torch.__version__,
              "smoke": args.smoke, "budget": args.budget,
              "passed": all(s["passed"] for s in sections.values()),
              "seconds": time.perf_counter() - started, "sections": sections}
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str))
    (args.out / "gpu_check.md").write_text(markdown(report))
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
