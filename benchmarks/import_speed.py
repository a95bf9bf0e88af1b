"""How fast `d3 trajectories --import` converts the d3LLM reference layout, and how much
smaller d3's format is.

Writes a synthetic reference-layout parquet file (LLaDA's token ids and sizes: a prompt, a
256-position canvas decoded one token per step in 32-token blocks, answers ending in EOS
padding), imports it with a word-level tokenizer of LLaDA's vocabulary size, and prints
records/s (wall and CPU), the sizes of both folders, and the token ids each keeps per record.

    python benchmarks/import_speed.py --records 2000 --dir /tmp/import-bench
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from transformers import PreTrainedTokenizerFast

from d3cli.checkpoints import ModelSpec
from d3cli.trajectory_import import Teacher, import_trajectories

VOCAB, MASK, EOS = 126464, 126336, 126081  # LLaDA-8B-Instruct's


def synthetic_teacher() -> Teacher:
    words = Tokenizer(WordLevel({f"t{i}": i for i in range(VOCAB)}, unk_token="t0"))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=words, eos_token=f"t{EOS}")
    spec = ModelSpec(mask_token_id=MASK, stop_token_ids=(EOS,), pad_token_id=EOS, block_size=32)
    return Teacher("synthetic-llada", tokenizer, spec, VOCAB)


def record_states(rng: np.random.Generator, prompt: np.ndarray, gen: int,
                  block: int) -> np.ndarray:
    """[gen, prompt + gen] states of one answer decoded one token per step, block by block."""
    answer = rng.integers(1000, 120000, gen)
    answer[rng.integers(gen // 2, gen):] = EOS
    steps = np.concatenate([start + rng.permutation(block) for start in range(0, gen, block)])
    decoded = steps[None, :] <= np.arange(gen)[:, None]
    canvas = np.where(decoded, answer[None, :], MASK)
    return np.concatenate([np.broadcast_to(prompt, (gen, len(prompt))), canvas], 1)


def nested(rows: list[np.ndarray]) -> pa.Array:
    """[records][states][tokens] as a list<list<int64>> array, without Python lists."""
    states, length = sum(len(row) for row in rows), rows[0].shape[1]
    tokens = pa.array(np.concatenate([row.ravel() for row in rows]))
    inner = pa.ListArray.from_arrays(pa.array(np.arange(states + 1) * length, pa.int32()),
                                     tokens)
    outer = np.concatenate([[0], np.cumsum([len(row) for row in rows])])
    return pa.ListArray.from_arrays(pa.array(outer, pa.int32()), inner)


def write_reference(path: Path, records: int, prompt_length: int, gen: int, block: int,
                    seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    writer = None
    for start in range(0, records, 64):
        count = min(64, records - start)
        prompts = [rng.integers(1000, 120000, prompt_length) for _ in range(count)]
        states = [record_states(rng, prompt, gen, block) for prompt in prompts]
        table = pa.table({
            "idx": list(range(start, start + count)), "question": ["q"] * count,
            "prompt_ids": [prompt.tolist() for prompt in prompts],
            "trajectory": nested(states),
            "final_output": [state[-1].tolist() for state in states],
            "generated_text": ["text"] * count, "llm_answer": ["1"] * count,
            "gt_answer": ["1"] * count, "is_correct": [True] * count})
        writer = writer or pq.ParquetWriter(str(path), table.schema)
        writer.write_table(table)
    writer.close()


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.glob("*.parquet"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--prompt", type=int, default=144)
    parser.add_argument("--gen", type=int, default=256)
    parser.add_argument("--block", type=int, default=32)
    parser.add_argument("--chunk-size", type=int, default=256)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/d3-import-bench"))
    args = parser.parse_args()
    shutil.rmtree(args.dir, ignore_errors=True)
    (args.dir / "reference").mkdir(parents=True)
    source = args.dir / "reference" / "trajectories.parquet"
    write_reference(source, args.records, args.prompt, args.gen, args.block)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in import_trajectories(str(source), args.dir / "d3", synthetic_teacher(), args.block,
                                 args.chunk_size, gen_length=args.gen):
        pass
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    reference, d3 = source.stat().st_size, folder_bytes(args.dir / "d3")
    print(f"{args.records} records of {args.gen} states x {args.prompt + args.gen} tokens: "
          f"{args.records / wall:.0f} records/s wall ({wall:.1f} s), "
          f"{args.records / cpu:.0f} records/s CPU ({cpu:.1f} s)")
    print(f"reference parquet {reference / 2**20:.1f} MiB, d3 parquet {d3 / 2**20:.2f} MiB: "
          f"{reference / d3:.0f}x smaller")
    length = args.prompt + args.gen  # token ids per record, as held in memory or in JSON:
    reference_ids = args.gen * length + args.prompt + length  # states, prompt, final output
    d3_ids = args.prompt + 2 * args.gen  # prompt, answer, unmask steps
    print(f"token ids per record: reference {reference_ids}, d3 {d3_ids}: "
          f"{reference_ids / d3_ids:.0f}x fewer")


if __name__ == "__main__":
    main()
