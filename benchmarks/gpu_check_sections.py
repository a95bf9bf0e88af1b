"""The sections of the GPU check (`gpu_check.py`): each takes the run's settings and returns
its result, a dict with `passed` and the numbers behind it."""

from __future__ import annotations

import contextlib
import json
import math
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import gpu_decode
import torch
from family_folders import write_dream, write_llada
from safetensors.torch import load_file
from torch._dynamo.utils import counters
from typer.testing import CliRunner

from d3cli.canvas import left_pad
from d3cli.checkpoints import LoadedModel, load_model
from d3cli.cli import app
from d3cli.decode import STRATEGIES, DecodeOptions, decode_prompts, noise_key, validate
from d3cli.decode.eager_ops import EagerOps
from d3cli.runner import prompt_ids
from d3cli.tasks import get_task

if TYPE_CHECKING:
    from gpu_check import Settings

Result = dict
EMBEDDED = ("arith-teacher", "arith-d3")
# bf16 against float32: the least share of rows decoded alike, the largest logit difference
# as a share of the largest logit (on CPU: 77 % and 3.4 % for the teacher's multiblock
# decode of 48 prompts, 90 % and 6.2 % for the student's).
MIN_BF16_AGREEMENT, MAX_BF16_ERROR = 0.6, 0.1
KERNELS = {"_scaled_dot_product_flash_attention": "flash",
           "_scaled_dot_product_flash_attention_for_cpu": "flash (CPU)",
           "_scaled_dot_product_efficient_attention": "memory-efficient",
           "_scaled_dot_product_cudnn_attention": "cuDNN",
           "_scaled_dot_product_fused_attention_overrideable": "fused (other)"}


def decode_dtype(settings: Settings) -> torch.dtype:
    return torch.bfloat16 if settings.device.type == "cuda" else torch.float32


def arith_prompts(loaded: LoadedModel, count: int) -> tuple[list[list[int]], list[int]]:
    """The first `count` held-out arith prompts as the model's family feeds them, and keys."""
    task = get_task("arith")
    examples = task.eval_examples(count)
    return ([prompt_ids(loaded, example, task.name) for example in examples],
            [noise_key(0, example.id) for example in examples])


def decoded(loaded: LoadedModel, prompts: list[list[int]], keys: list[int], method: str,
            options: DecodeOptions, batch: int, compile: bool = False) -> dict[int, tuple]:
    """{prompt index: (forwards, tokens)} of one decode."""
    validate(method, options)
    return {done.index: (done.forwards, done.tokens) for done in decode_prompts(
        loaded.model, loaded.spec, prompts, keys, STRATEGIES[method], options, batch,
        compile=compile)}


def smoke_compiler(settings: Settings) -> contextlib.AbstractContextManager:
    """On a smoke run `--compile` is dynamo's capture only (`gpu_decode.capture_only`); a
    full run compiles as `d3 decode --compile` does."""
    return gpu_decode.capture_only() if settings.smoke else contextlib.nullcontext()


# --- attention --------------------------------------------------------------------------------


def attention_kernel(model: torch.nn.Module, ids: torch.Tensor,
                     mask: torch.Tensor | None) -> str:
    """The SDPA kernels one forward dispatches ("math" when none of the fused ones)."""
    with torch.no_grad(), EagerOps() as ops:
        model(ids, attention_mask=mask)
    return ", ".join(name for op, name in KERNELS.items() if ops.counts[op]) or "math"


def attention(settings: Settings) -> Result:
    """One layer at each family's width and heads, at the speed section's sequence length."""
    device, rows = settings.device, []
    length = settings.speed_prompt_length + settings.speed_gen_length
    for name in ("llada", "dream"):
        scale = {**settings.speed_scale, "layers": 1, "vocab": 512}
        shape = gpu_decode.scaled_down(gpu_decode.SHAPES[name], **scale)
        model = gpu_decode.random_model(shape, device, decode_dtype(settings), seed=0)
        ids = torch.randint(0, 500, (2, length), device=device)
        padded = torch.ones(2, length, dtype=torch.bool, device=device)
        padded[1, :length // 4] = False
        heads = f"{model.config.num_attention_heads}:{model.config.num_key_value_heads}"
        for case, batch_ids, mask in (("batch 1, no padding", ids[:1], None),
                                      ("batch 2, padded", ids, padded)):
            kernel = attention_kernel(model, batch_ids, mask)
            rows.append({"shape": shape.name, "query:kv heads": heads, "case": case,
                         "kernel": kernel,
                         "passed": device.type != "cuda" or kernel != "math"})
        del model
    return {"passed": all(row["passed"] for row in rows),
            "dtype": str(decode_dtype(settings)), "sequence": length, "cases": rows}


# --- bf16 -------------------------------------------------------------------------------------


def largest_logit_error(full: LoadedModel, half: LoadedModel,
                        prompts: list[list[int]]) -> tuple[float, float]:
    """Max |bf16 − float32| over the logits of the prompts' canvases (masked answers), and
    max |float32 logit| for scale."""
    ids, visible = left_pad(prompts, full.spec.pad_token_id)
    answer = torch.full((len(prompts), 64), full.spec.mask_token_id)
    canvas = torch.cat([ids, answer], 1).to(full.model.device)
    mask = torch.cat([visible, torch.ones_like(answer, dtype=torch.bool)], 1)
    with torch.no_grad():
        reference = full.model(canvas, attention_mask=mask.to(canvas.device)).float()
        low = half.model(canvas, attention_mask=mask.to(canvas.device)).float()
    return (low - reference).abs().max().item(), reference.abs().max().item()


def bf16(settings: Settings) -> Result:
    rows = []
    for name in EMBEDDED:
        full = load_model(name, str(settings.device), "float32")
        half = load_model(name, str(settings.device), "bfloat16")
        prompts, keys = arith_prompts(full, settings.prompts)
        options = DecodeOptions(gen_length=64, block_size=full.spec.block_size)
        reference = decoded(full, prompts, keys, "multiblock", options, settings.batch)
        low = decoded(half, prompts, keys, "multiblock", options, settings.batch)
        same = sum(low[index][1] == tokens for index, (_, tokens) in reference.items())
        error, scale = largest_logit_error(full, half, prompts)
        rows.append({"model": name, "method": "multiblock", "rows equal": same,
                     "rows": len(reference), "max logit error": error, "max abs logit": scale,
                     "passed": same >= MIN_BF16_AGREEMENT * len(reference)
                     and error <= MAX_BF16_ERROR * scale})
    return {"passed": all(row["passed"] for row in rows),
            "least share of rows equal": MIN_BF16_AGREEMENT,
            "largest logit error (share of the max abs logit)": MAX_BF16_ERROR, "models": rows}


# --- compile ----------------------------------------------------------------------------------


def checkpoints(settings: Settings) -> dict[str, str]:
    """The models the compile section decodes: embedded ones by name, tiny LLaDA- and
    Dream-format folders built here."""
    folder = settings.out / "checkpoints"
    write_llada(folder / "llada")
    write_dream(folder / "dream")
    return {**{name: name for name in EMBEDDED}, "LLaDA format (tiny)": str(folder / "llada"),
            "Dream format (tiny)": str(folder / "dream")}


def compile_cases(names: list[str], settings: Settings) -> list[tuple[str, str, dict]]:
    """(model, method, options): every model with the delayed cache (window forwards that
    write the cache), the teacher also with the dual cache (block windows); a smoke run
    takes the teacher and the LLaDA-format model."""
    cases = [(name, "multiblock", {"cache": "delayed"}) for name in names]
    if settings.smoke:
        return cases[:1] + cases[2:3]
    return cases + [(names[0], "threshold", {"cache": "dual", "threshold": 0.9})]


def compile_equality(settings: Settings) -> Result:
    paths, rows = checkpoints(settings), []
    gen_length, block = 32, 16
    with smoke_compiler(settings):
        for name, method, changes in compile_cases(list(paths), settings):
            loaded = load_model(paths[name], str(settings.device), "float32")
            prompts, keys = arith_prompts(loaded, settings.prompts)
            equal, graphs = [], []
            for temperature in (0.0, 0.7):  # each decode compiles its own graphs
                options = DecodeOptions(gen_length=gen_length, block_size=block,
                                        temperature=temperature, **changes)
                eager = decoded(loaded, prompts, keys, method, options, settings.batch)
                torch._dynamo.reset()
                before = counters["stats"]["unique_graphs"]
                fast = decoded(loaded, prompts, keys, method, options, settings.batch, True)
                graphs.append(counters["stats"]["unique_graphs"] - before)
                equal.append(sum(fast[index] == row for index, row in eager.items()))
            rows.append({"model": name, "method": method, **changes,
                         "rows equal (greedy, T 0.7)": f"{equal[0]}, {equal[1]} of "
                                                       f"{len(prompts)}",
                         "graphs (greedy, T 0.7)": f"{graphs[0]}, {graphs[1]}",
                         "most graphs": gen_length // block + 1,
                         "passed": equal == [len(prompts)] * 2
                         and max(graphs) <= gen_length // block + 1})
    backend = "eager (dynamo capture only)" if settings.smoke else "inductor"
    return {"passed": all(row["passed"] for row in rows), "backend": backend,
            "gen_length": gen_length, "block_size": block, "batch": settings.batch,
            "cases": rows}


# --- torchrun ---------------------------------------------------------------------------------


def samples(path: Path) -> dict[tuple, tuple]:
    records = [json.loads(line) for line in path.read_text().splitlines()]
    return {(r["method"], r["id"]): (r["output"], r["forwards"], r["gen_tokens"])
            for r in records}


def torchrun(settings: Settings) -> Result:
    """The plain decode in this process; the launched one under torchrun."""
    out = settings.out / "torchrun"
    command = ["decode", "--limit", str(settings.prompts), "--batch-size", str(settings.batch),
               "--method", "multiblock", "--method", "threshold", "--device",
               str(settings.device)]
    plain = CliRunner().invoke(app, [*command, "--out", str(out / "plain.jsonl")])
    if plain.exit_code:
        return {"passed": False, "error": f"plain run: {plain.output[-2000:]}"}
    launched = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "1",
         "--master-port", str(29500 + os.getpid() % 1000), "-m", "d3cli", *command,
         "--out", str(out / "launched.jsonl")], capture_output=True, text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    if launched.returncode:
        return {"passed": False, "error": f"torchrun: {launched.stderr[-2000:]}"}
    one, other = samples(out / "plain.jsonl"), samples(out / "launched.jsonl")
    same = sum(other.get(key) == value for key, value in one.items())
    return {"passed": same == len(one) == len(other) > 0, "samples": len(one),
            "samples equal": same}


# --- distill ----------------------------------------------------------------------------------


def peak_memory_gb(device: torch.device) -> float:
    """Peak allocated GPU memory, or this process's peak resident memory on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def distill(settings: Settings) -> Result:
    out, device, runner = settings.out / "distill", str(settings.device), CliRunner()
    write_llada(out / "teacher", std=0.02, **settings.distill_sizes)
    made = runner.invoke(app, ["trajectories", "--model", str(out / "teacher"), "--out",
                               str(out / "trajectories"), "--num", "8", "--attempts", "1",
                               "--device", device])
    if made.exit_code:
        return {"passed": False, "error": f"trajectories: {made.output[-2000:]}"}
    if settings.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(settings.device)
    steps = 10  # the preset logs every 10 steps
    trained = runner.invoke(app, [
        "distill", "--teacher", str(out / "teacher"), "--trajectories",
        str(out / "trajectories"), "--all-answers", "--full", "--bf16", "--max-steps",
        str(steps), "--batch-size", "2", "--save-steps", "100", "--device", device,
        "--out", str(out / "student")])
    if trained.exit_code:
        return {"passed": False, "error": f"distill: {trained.output[-2000:]}"}
    log = [json.loads(line) for line in
           (out / "student" / "distill_log.jsonl").read_text().splitlines()]
    losses = [entry[key] for entry in log for key in ("loss", "train_loss") if key in entry]
    dtypes = {str(tensor.dtype) for shard in (out / "student").glob("*.safetensors")
              for tensor in load_file(shard).values()}
    config = json.loads((out / "teacher" / "config.json").read_text())
    return {"passed": bool(losses) and all(map(math.isfinite, losses))
            and dtypes == {"torch.float32"},
            "width": config["d_model"], "layers": config["n_layers"], "steps": steps,
            "losses (logged, mean)": [round(loss, 4) for loss in losses],
            "saved dtypes": sorted(dtypes),
            "peak memory GB": round(peak_memory_gb(settings.device), 2)}


# --- speed ------------------------------------------------------------------------------------


def speed(settings: Settings) -> Result:
    """Every shape's eager rows first, then the compiled ones (compiling a full-size forward
    takes minutes); a measurement that would start after the deadline is listed as
    skipped."""
    device, dtype = settings.device, decode_dtype(settings)
    prepared = {}
    for name in settings.speed_shapes:
        shape = gpu_decode.scaled_down(gpu_decode.SHAPES[name], **settings.speed_scale)
        base = DecodeOptions(gen_length=settings.speed_gen_length,
                             block_size=shape.spec.block_size)
        model, certainty, tpf = gpu_decode.prepared(shape, device, dtype, 0, 40.0,
                                                     settings.speed_reach, base,
                                                     settings.speed_prompt_length, 4)
        runs = [(method, options) for method, options in gpu_decode.method_runs(shape, base)
                if method in ("vanilla", "multiblock")]  # and multiblock's delayed cache
        prepared[name] = shape, model, runs, tpf
    rows, skipped = [], []
    with smoke_compiler(settings):
        for compile in (False, True):
            for shape, model, runs, _ in prepared.values():
                for batch in settings.speed_batches:
                    prompts = gpu_decode.random_prompts(shape, batch,
                                                        settings.speed_prompt_length, 0)
                    for method, options in runs:
                        if time.perf_counter() > settings.deadline:
                            skipped.append(f"{shape.name} {gpu_decode.label(method, options)} "
                                           f"batch {batch}{' compiled' if compile else ''}")
                            continue
                        row = gpu_decode.measure(model, shape, method, options, prompts, 1,
                                                 16, compile, 1)
                        rows.append(speed_row(row, compile,
                                              settings.speed_gen_length // options.block_size))
    return {"passed": bool(rows) and all(row["passed"] for row in rows), "dtype": str(dtype),
            "prompt + generation": f"{settings.speed_prompt_length} + "
                                   f"{settings.speed_gen_length}",
            "multiblock TPF at calibration": {
                shape.name: "not calibrated" if math.isnan(tpf) else round(tpf, 2)
                for shape, _, _, tpf in prepared.values()},
            "rows": rows, "skipped (time)": skipped or "none"}


def speed_row(row: gpu_decode.Measured, compile: bool, blocks: int) -> dict:
    """One measurement as a report row; it passes on its counts (one host read per
    forward, at most answer blocks + 1 graphs compiled)."""
    return {"shape": row.shape, "method": row.method, "batch": row.batch,
            "forward": "compiled" if compile else "eager", "TPF": row.tpf,
            "tokens/s": row.tokens_per_second, "ms/iter": row.ms_per_iteration,
            "overhead": row.overhead, "ops/iter": row.eager_ops,
            "host reads/forward": row.host_reads_per_forward,
            "graphs": "-" if row.compiles is None else row.compiles,
            "passed": row.host_reads_per_forward <= 1
            and (row.compiles is None or row.compiles <= blocks + 1)}


SECTIONS: dict[str, Callable[[Settings], Result]] = {
    "attention": attention, "bf16": bf16, "compile": compile_equality, "torchrun": torchrun,
    "distill": distill, "speed": speed}
