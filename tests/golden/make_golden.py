"""The greedy decoders' outputs on the 1,000 held-out arith prompts (the golden file).

The committed decode_golden.json.gz was written by this script's first version (see its
history) with the decoders that the one-driver rewrite replaced (commit b93997f).
`tests/test_golden.py` checks that the current decoder, scoring in float64, reproduces it
token for token and forward for forward. Rows: [forwards, *answer tokens]. Rerun only to
re-baseline on purpose; `--rebase NAME,...` rewrites only those settings (e.g. the
student's, when the shipped student changes); `--compare float64|float32` counts the rows
the current decoder changes (on all 1,000 prompts, or the first N):

    python tests/golden/make_golden.py tests/golden/decode_golden.json.gz
    python tests/golden/make_golden.py tests/golden/decode_golden.json.gz --rebase \
        student-multiblock,student-multiblock-delayed
    python tests/golden/make_golden.py tests/golden/decode_golden.json.gz --compare float64
    python tests/golden/make_golden.py tests/golden/decode_golden.json.gz --compare float32 200
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import sys
import time

import torch

from d3cli.checkpoints import encode_prompt, load_model
from d3cli.decode import STRATEGIES, DecodeOptions, decode_prompts
from d3cli.tasks import get_task

# (name, model, family spec change, method, options)
DREAM_RULES = {"logit_shift": True, "commit_lowest_entropy": False,
               "strict_entropy_threshold": True}
SETTINGS = [
    ("teacher-vanilla", "arith-teacher", {}, "vanilla", {}),
    ("teacher-threshold", "arith-teacher", {}, "threshold", {}),
    ("teacher-threshold-prefix", "arith-teacher", {}, "threshold", {"cache": "prefix"}),
    ("teacher-threshold-dual", "arith-teacher", {}, "threshold", {"cache": "dual"}),
    ("teacher-entropy", "arith-teacher", {}, "entropy", {}),
    ("teacher-multiblock", "arith-teacher", {}, "multiblock", {}),
    ("teacher-multiblock-4", "arith-teacher", {}, "multiblock", {"blocks": 4}),
    ("teacher-multiblock-delayed", "arith-teacher", {}, "multiblock",
     {"cache": "delayed", "cache_delay": 2, "refresh_interval": 3}),
    ("teacher-multiblock-delayed-norefresh", "arith-teacher", {}, "multiblock",
     {"cache": "delayed", "cache_delay": 1, "blocks": 2}),
    ("student-multiblock", "arith-d3", {}, "multiblock", "model"),
    ("student-multiblock-delayed", "arith-d3", {}, "multiblock",
     {"cache": "delayed", "cache_delay": 1, "refresh_interval": 4}),
    ("shifted-vanilla", "arith-teacher", DREAM_RULES, "vanilla", {}),
    ("shifted-threshold-prefix", "arith-teacher", DREAM_RULES, "threshold", {"cache": "prefix"}),
    ("shifted-threshold-dual", "arith-teacher", DREAM_RULES, "threshold", {"cache": "dual"}),
    ("shifted-entropy", "arith-teacher", DREAM_RULES, "entropy", {}),
    ("shifted-multiblock", "arith-teacher", DREAM_RULES, "multiblock", {"blocks": 3}),
    ("shifted-multiblock-delayed", "arith-teacher", DREAM_RULES, "multiblock",
     {"cache": "delayed", "cache_delay": 1, "refresh_interval": 5}),
]


def setting_options(loaded, method: str, changes) -> dict:
    """The options of one setting: the model's own defaults ("model") or explicit changes."""
    if changes == "model":
        return dict(loaded.decoding[method])
    return dict(changes)


def decode_setting(model: str, rules: dict, method: str, changes, prompts: list[list[int]],
                   score_dtype: str = "float64", batch_size: int = 64) -> list[list[int]]:
    """[forwards, *answer tokens] per prompt for one setting."""
    loaded = load_model(model, device="cpu", dtype="float32")
    spec = dataclasses.replace(loaded.spec, **rules)
    task = get_task("arith")
    options = DecodeOptions(gen_length=task.gen_length, block_size=spec.block_size,
                            score_dtype=score_dtype, **setting_options(loaded, method, changes))
    rows = [[]] * len(prompts)
    for done in decode_prompts(loaded.model, spec, prompts, range(len(prompts)),
                               STRATEGIES[method], options, batch_size):
        rows[done.index] = [done.forwards, *done.tokens]
    return rows


GOLDEN_PROMPTS = 1000  # the first 1,000 prompts of the test split


def held_out_prompts(count: int = GOLDEN_PROMPTS) -> list[list[int]]:
    teacher = load_model("arith-teacher", device="cpu", dtype="float32")
    return [encode_prompt(teacher, example.prompt)
            for example in get_task("arith").eval_examples(count)]


def compare(path: str, score_dtype: str, count: int = GOLDEN_PROMPTS) -> None:
    """Print, per setting, how many of the golden file's first `count` rows a decode at
    `score_dtype` changes (tokens or forwards)."""
    torch.set_num_threads(2)
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        golden = json.load(handle)
    prompts = held_out_prompts(count)
    for name, model, rules, method, changes in SETTINGS:
        rows = decode_setting(model, rules, method, changes, prompts, score_dtype)
        same = sum(mine == theirs for mine, theirs in zip(rows, golden[name], strict=False))
        print(f"{name}: {len(rows) - same} of {len(rows)} rows differ", flush=True)


def main(path: str, only: set[str] | None = None) -> None:
    """Write the golden file, or with `only` rewrite just those settings in it."""
    torch.set_num_threads(2)
    prompts = held_out_prompts()
    if only is None:
        examples = get_task("arith").eval_examples(GOLDEN_PROMPTS)
        golden = {"ids": [example.id for example in examples]}
    else:
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            golden = json.load(handle)
        unknown = only - {name for name, *_ in SETTINGS}
        if unknown:
            sys.exit(f"no setting named {', '.join(sorted(unknown))}")
    for name, model, rules, method, changes in SETTINGS:
        if only is not None and name not in only:
            continue
        started = time.perf_counter()
        golden[name] = decode_setting(model, rules, method, changes, prompts)
        print(f"{name}: {time.perf_counter() - started:.0f} s", flush=True)
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        json.dump(golden, handle)


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[2] == "--compare":
        compare(sys.argv[1], sys.argv[3], int(sys.argv[4]) if len(sys.argv) > 4 else GOLDEN_PROMPTS)
    elif len(sys.argv) == 4 and sys.argv[2] == "--rebase":
        main(sys.argv[1], set(sys.argv[3].split(",")))
    else:
        main(sys.argv[1])
