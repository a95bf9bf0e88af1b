"""Why parallel decoding of `arith` stalls: the choice of each step's written form.

Each step of an `arith` answer has several valid forms (`a + b = c`, `b + a = c`,
`c = a + b`). Once a step's first token is written, the rest of the step is nearly
determined; the first token itself is a choice the model must make. This prints, per model,
in one run over the same held-out prompts:

- multiblock decoding at the model's own defaults (or `--threshold`): accuracy, TPF, and
  forwards per written step (the final `#### x` counts as a step);
- on the model's own one-token-per-forward answers, with everything from a step on masked:
  the mean entropy (nats) of the step's first token, and of the step's other tokens once the
  first is written; and the share of each above γ (such a token waits for a later forward).

    python benchmarks/form_ambiguity.py arith-teacher arith-d3 --limit 200
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Sequence

import torch
from rich.console import Console
from rich.table import Table

from d3cli.canvas import first_stop
from d3cli.checkpoints import LoadedModel, encode_prompt, load_model
from d3cli.decode import (
    STRATEGIES,
    DecodeOptions,
    decode_prompts,
    resolve_options,
    resolved_threshold,
    score,
)
from d3cli.runner import decode_examples
from d3cli.tasks import Example, get_task
from d3cli.tasks.arith import STEP_END


def step_spans(tokens: list[int], step_end: int,
               stop_ids: Sequence[int]) -> list[tuple[int, int]]:
    """Generation offsets [start, end) of each written step and of the final answer (which
    ends with its stop token; the padding after it is left out)."""
    stop = first_stop(tokens, stop_ids)
    starts = [0] + [offset + 1 for offset, token in enumerate(tokens[:stop]) if token == step_end]
    return list(zip(starts, [*starts[1:], min(stop + 1, len(tokens))], strict=True))


@torch.no_grad()
def step_entropies(loaded: LoadedModel, examples: list[Example], gen_length: int,
                   block_size: int) -> tuple[list[float], list[float]]:
    """(first-token entropies, other-token entropies) of every step of the model's greedy
    one-token-per-forward answers, each step seen with its own and later tokens masked
    (first token), or with only its first token written (the others)."""
    spec = loaded.spec
    prompts = [encode_prompt(loaded, e.prompt) for e in examples]
    answers = {done.index: done.tokens for done in decode_prompts(
        loaded.model, spec, prompts, range(len(prompts)), STRATEGIES["vanilla"],
        DecodeOptions(gen_length=gen_length, block_size=block_size), len(prompts))}
    step_end = loaded.tokenizer.convert_tokens_to_ids(STEP_END)
    first, rest = [], []
    for row, prompt in enumerate(prompts):
        tokens = answers[row]
        canvases, wanted = [], []
        for start, end in step_spans(tokens, step_end, spec.stop_token_ids):
            for known in (start, start + 1):
                canvas = prompt + tokens[:known] + [spec.mask_token_id] * (gen_length - known)
                canvases.append(canvas)
                wanted.append(range(start, start + 1) if known == start
                              else range(start + 1, end))
        batch = torch.tensor(canvases, device=loaded.device)
        logits = loaded.model(batch)[:, len(prompt):]
        entropy = score(logits, spec.mask_token_id, 0.0, None, torch.float64).entropy
        for index, offsets in enumerate(wanted):
            target = first if index % 2 == 0 else rest
            target.extend(float(entropy[index, offset]) for offset in offsets)
    return first, rest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="Embedded names or model folders.")
    parser.add_argument("--limit", type=int, default=200, help="Held-out prompts.")
    parser.add_argument("--threshold", type=float, default=None,
                        help="γ of multiblock (default: the model's own, else 0.5).")
    parser.add_argument("--batch-size", type=int, default=100)
    args = parser.parse_args()
    torch.set_num_threads(2)

    task = get_task("arith")
    examples = task.eval_examples(args.limit)
    table = Table(title=f"Form ambiguity on {len(examples)} held-out arith prompts "
                        "(multiblock at each model's defaults)")
    for column in ("model", "γ", "accuracy %", "TPF", "forwards / step", "H first token",
                   "share > γ", "H other tokens", "share > γ "):
        table.add_column(column, justify="left" if column == "model" else "right")
    for name in args.models:
        loaded = load_model(name, device="cpu", dtype="float32")
        decoding = {"multiblock": {"blocks": 4, **loaded.decoding.get("multiblock", {})}}
        given = {} if args.threshold is None else {"threshold": args.threshold}
        options = resolve_options("multiblock", decoding, given, gen_length=task.gen_length,
                                  block_size=loaded.spec.block_size)
        gamma = resolved_threshold("multiblock", options)
        results = list(decode_examples(loaded, task, examples, "multiblock", options,
                                       args.batch_size))
        steps = sum(r.output.count(STEP_END) + 1 for r in results)
        forwards = sum(r.forwards for r in results)
        first, rest = step_entropies(loaded, examples, task.gen_length, loaded.spec.block_size)
        table.add_row(
            name, f"{gamma:g}",
            f"{100 * sum(bool(r.correct) for r in results) / len(results):.1f}",
            f"{sum(r.gen_tokens for r in results) / forwards:.2f}", f"{forwards / steps:.2f}",
            f"{statistics.mean(first):.3f}", f"{sum(h > gamma for h in first) / len(first):.2f}",
            f"{statistics.mean(rest):.3f}", f"{sum(h > gamma for h in rest) / len(rest):.2f}")
    Console(width=130).print(table)


if __name__ == "__main__":
    main()
