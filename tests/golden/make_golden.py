"""Write the greedy decoders' outputs on the 1,000 held-out arith prompts (golden file).

Produced once with the decoder before the one-driver rewrite (commit b93997f, whose API
this script uses);
`tests/test_golden.py` checks that the current decoder, scoring in float64, reproduces it
token for token and forward for forward. Rows: [forwards, *generation tokens].

    python tests/golden/make_golden.py tests/golden/decode_golden.json.gz
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import sys
import time

import torch

from d3cli.checkpoints import encode_prompt, load_model
from d3cli.decode import STRATEGIES, DecodeOptions, DecodeState
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


def decode_setting(model: str, rules: dict, method: str, changes, prompts,
                   batch_size: int = 64) -> list[list[int]]:
    """[forwards, *generation tokens] per prompt for one setting (the old decoder's API)."""
    loaded = load_model(model, device="cpu", dtype="float32")
    spec = dataclasses.replace(loaded.spec, **rules)
    task = get_task("arith")
    options = DecodeOptions(gen_length=task.gen_length, block_size=spec.block_size,
                            **setting_options(loaded, method, changes))
    rows = []
    with torch.no_grad():
        for start in range(0, len(prompts), batch_size):
            state = DecodeState.start(prompts[start:start + batch_size], spec,
                                      options.gen_length, loaded.device)
            STRATEGIES[method](loaded.model, state, spec, options)
            rows += [[forwards, *tokens] for forwards, tokens
                     in zip(state.forwards.tolist(), state.generation.tolist(), strict=True)]
    return rows


def main(path: str) -> None:
    torch.set_num_threads(2)
    teacher = load_model("arith-teacher", device="cpu", dtype="float32")
    examples = get_task("arith").eval_examples()
    prompts = [encode_prompt(teacher, example.prompt) for example in examples]
    golden = {"ids": [example.id for example in examples]}
    for name, model, rules, method, changes in SETTINGS:
        started = time.perf_counter()
        golden[name] = decode_setting(model, rules, method, changes, prompts)
        print(f"{name}: {time.perf_counter() - started:.0f} s", flush=True)
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        json.dump(golden, handle)


if __name__ == "__main__":
    main(sys.argv[1])
