"""How much of a training window the d3 recipe's masks really cover, against the nominal t.

Trajectory masks take the teacher's state "(1 − t) of the window decoded" (§2.2 step 2),
counted in teacher steps from the window's start; when the window does not match the
teacher's blocks, that state can leave the window far more or far less masked than t.
Random masks cover t on average. Per mask kind, window size and window position relative
to the teacher's blocks (aligned: the window starts a block; inside: it starts mid-block),
this prints the mean and standard deviation of the masked fraction, the share of windows
with no mask (no loss), and the number of distinct masks a sample sees at that t.

    python benchmarks/mask_ratio.py runs/evidence/trajectories --records 200
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import torch

from d3cli.distill import DistillConfig, noisy_batch
from d3cli.trajectories import load_trajectories, read_card

DRAWS = 64  # windows drawn per (record, setting)


def measure(answers, steps, lengths, config, t, size, block, aligned, mask_id):
    """(mean, sd, share without masks, distinct masks per sample) over DRAWS draws of
    windows that start at a block boundary (`aligned`) or not."""
    fractions, empty, patterns = [], 0, []
    generator = torch.Generator().manual_seed(0)
    for _ in range(DRAWS):
        noisy = noisy_batch(config, answers, steps, lengths, t, size, mask_id, generator)
        length = noisy.window_end - noisy.window_start
        keep = ((noisy.window_start % block == 0) == aligned) & (length == size)
        fraction = noisy.loss_mask.sum(1) / length
        fractions.append(fraction[keep])
        empty += int((noisy.loss_mask.sum(1)[keep] == 0).sum())
        patterns.append([(row, tuple(mask.tolist())) for row, mask
                         in zip(keep.nonzero().flatten().tolist(), noisy.loss_mask[keep],
                                strict=True)])
    values = torch.cat(fractions)
    per_sample: dict[int, set] = {}
    for draw in patterns:
        for row, mask in draw:
            per_sample.setdefault(row, set()).add(mask)
    distinct = sum(len(masks) for masks in per_sample.values()) / max(len(per_sample), 1)
    if not len(values):
        return None
    return (float(values.mean()), float(values.std()) if len(values) > 1 else 0.0,
            100 * empty / len(values), distinct)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trajectories", type=Path)
    parser.add_argument("--records", type=int, default=200)
    parser.add_argument("--sizes", default="8,12,16")
    parser.add_argument("--ratios", default="0.2,0.5,0.8")
    arguments = parser.parse_args()
    card = read_card(arguments.trajectories)
    records = load_trajectories(arguments.trajectories).select(range(arguments.records))
    answers = torch.tensor(records["answer_ids"])
    steps = torch.tensor(records["unmask_step"])
    lengths = torch.full((len(records),), answers.shape[1])  # every window position legal
    block, mask_id = card["block_size"], card["mask_token_id"]
    base = DistillConfig(window_span="canvas")
    print(f"{len(records)} trajectories of {card['teacher']} (blocks of {block}); "
          f"{DRAWS} windows drawn per trajectory and setting\n")
    print("| masks | window | position | t | masked fraction (sd) | no mask | distinct masks |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for masks in ("trajectory", "random"):
        config = replace(base, masks=masks)
        for size in map(int, arguments.sizes.split(",")):
            for aligned in (True, False):
                for t in map(float, arguments.ratios.split(",")):
                    numbers = measure(answers, steps, lengths, config, t, size, block, aligned,
                                      mask_id)
                    if numbers is None:
                        continue
                    mean, sd, empty, distinct = numbers
                    where = "block start" if aligned else "mid-block"
                    print(f"| {masks} | {size} | {where} | {t:g} | {mean:.2f} ({sd:.2f}) | "
                          f"{empty:.0f} % | {distinct:.1f} |")


if __name__ == "__main__":
    main()
