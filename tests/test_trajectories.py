"""Teacher trajectories on the shipped teacher: replay, retry, resume after kill -9, shards."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import datasets
import pytest
import torch
from typer.testing import CliRunner

from d3cli.checkpoints import encode_prompt, load_model
from d3cli.cli import app
from d3cli.decode import score
from d3cli.tasks.dataset import DatasetTask
from d3cli.trajectories import (
    TrajectoryRun,
    parse_shard,
    shard_chunks,
    teacher_rollouts,
)

CHEAP = ["--num", "8", "--chunk-size", "2", "--batch-size", "2", "--attempts", "1",
         "--device", "cpu"]


def encode_prompt_of(prompt: str) -> list[int]:
    return encode_prompt(load_model("arith-teacher", device="cpu"), prompt)


def make_run(teacher, attempts: int = 1) -> TrajectoryRun:
    return TrajectoryRun(teacher="arith-teacher", source="arith", num_prompts=0, gen_length=64,
                         block_size=teacher.spec.block_size, attempts=attempts,
                         keep_incorrect=True, chunk_size=8, seed=0,
                         vocab_size=teacher.model.config.vocab_size,
                         mask_token_id=teacher.spec.mask_token_id)


@pytest.fixture(scope="module")
def greedy_records(teacher, arith):
    """The first six training prompts and two that the (≈ 96 % accurate) teacher gets
    wrong (the only two among the first 64)."""
    examples = arith.train_examples(64)
    chosen = [*examples[:6], examples[49], examples[58]]
    return teacher_rollouts(teacher, arith, chosen, make_run(teacher), len(chosen))


def test_unmask_steps_are_one_token_per_forward_in_block_order(greedy_records):
    for record in greedy_records:
        block = record["block_size"]
        assert record["num_forwards"] == len(record["answer_ids"]) == 64
        for start in range(0, 64, block):
            steps = record["unmask_step"][start:start + block]
            assert sorted(steps) == list(range(start, start + block))


def test_replaying_the_trajectory_rebuilds_the_answer_and_each_state(greedy_records, teacher):
    mask = teacher.spec.mask_token_id
    for record in greedy_records:
        answer, steps = record["answer_ids"], record["unmask_step"]
        canvas = [mask] * len(answer)
        for state in range(len(answer)):
            position = steps.index(state)
            canvas[position] = answer[position]
            assert [token == mask for token in canvas] == [step > state for step in steps]
        assert canvas == answer


def test_trajectory_is_the_teachers_own_greedy_order(greedy_records, teacher, arith):
    """At every state, the teacher's most confident masked position of the current block is
    the one the record commits next, with the recorded token (temperature 0)."""
    spec, block = teacher.spec, teacher.spec.block_size
    for record in greedy_records[:3]:
        answer, steps = torch.tensor(record["answer_ids"]), torch.tensor(record["unmask_step"])
        prompt = torch.tensor(record["prompt_ids"])
        for state in range(-1, len(answer) - 1):
            canvas = torch.where(steps > state, spec.mask_token_id, answer)
            logits = teacher.model(torch.cat([prompt, canvas])[None])[0, len(prompt):]
            scores = score(logits, spec.mask_token_id, 0.0, None, torch.float64,
                           certainty="confidence")
            current = (state + 1) // block * block
            candidates = torch.zeros_like(steps, dtype=torch.bool)
            candidates[current:current + block] = steps[current:current + block] > state
            best = int(scores.confidence.masked_fill(~candidates, -1).argmax())
            assert int(steps[best]) == state + 1
            assert int(scores.tokens[best]) == int(answer[best])


def test_wrong_prompts_are_retried_at_rising_temperature(greedy_records, teacher, arith):
    examples = {example.id: example for example in arith.train_examples(64)}
    wrong = [examples[r["id"]] for r in greedy_records if not r["correct"]][:4]
    right = [examples[r["id"]] for r in greedy_records if r["correct"]][:1]
    assert wrong, "the teacher gets every prompt right: pick prompts it gets wrong"
    retried = teacher_rollouts(teacher, arith, wrong + right, make_run(teacher, attempts=3), 8)
    for record in retried[:len(wrong)]:
        assert record["attempt"] >= 1  # temperature 0 is deterministic, so it failed again
        assert record["temperature"] == pytest.approx(0.1 * record["attempt"])
        assert record["correct"] or record["attempt"] == 2
    first_try = {r["id"]: r for r in greedy_records}
    for record in retried[len(wrong):]:
        assert record["attempt"] == 0 and record["temperature"] == 0
        assert record["answer_ids"] == first_try[record["id"]]["answer_ids"]


def test_shards_partition_the_chunks():
    assert parse_shard("1/3") == (1, 3)
    whole = shard_chunks(10, 3)
    assert whole == [(0, 3), (3, 6), (6, 9), (9, 10)]
    assert sorted(shard_chunks(10, 3, 0, 2) + shard_chunks(10, 3, 1, 2)) == whole
    with pytest.raises(ValueError, match="I/N"):
        parse_shard("2/2")


def dataset_rows(folder) -> list[dict]:
    rows = datasets.load_dataset("parquet", data_dir=str(folder), split="train").to_list()
    return sorted(rows, key=lambda row: row["id"])


def invoke(*arguments: str):
    return CliRunner().invoke(app, ["trajectories", *arguments])


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("uninterrupted")
    result = invoke("--out", str(folder), *CHEAP)
    assert result.exit_code == 0, result.output
    return folder


def test_cli_writes_a_parquet_dataset_with_the_record_contract(uninterrupted):
    rows = dataset_rows(uninterrupted)
    assert [row["id"] for row in rows] == sorted(f"arith-train-{i}" for i in range(8))
    assert set(rows[0]) == {"id", "task", "teacher", "prompt_ids", "answer_ids", "unmask_step",
                            "block_size", "num_forwards", "correct", "text", "attempt",
                            "temperature"}
    assert {row["teacher"] for row in rows} == {"arith-teacher"}


def test_shard_runs_together_equal_the_unsharded_run(tmp_path, uninterrupted):
    for shard in ("0/2", "1/2"):
        assert invoke("--out", str(tmp_path), "--shard", shard, *CHEAP).exit_code == 0
    assert sorted(p.name for p in tmp_path.glob("*.parquet")) == sorted(
        p.name for p in uninterrupted.glob("*.parquet"))
    assert dataset_rows(tmp_path) == dataset_rows(uninterrupted)


def command(folder, *extra: str) -> list[str]:
    return [sys.executable, "-m", "d3cli", "trajectories", "--out", str(folder), *CHEAP, *extra]


def test_a_run_killed_part_way_resumes_to_the_uninterrupted_result(tmp_path, uninterrupted):
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command(tmp_path), env=environment, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob("*.parquet")) and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert 1 <= len(list(tmp_path.glob("*.parquet"))) < 4, "kill landed outside the run"
    subprocess.run(command(tmp_path), env=environment, check=True, capture_output=True)
    assert dataset_rows(tmp_path) == dataset_rows(uninterrupted)


def test_launched_processes_take_the_chunks_of_their_rank(tmp_path, uninterrupted):
    """Two processes with the environment `accelerate launch`/torchrun give each rank."""
    port = str(29500 + os.getpid() % 1000)
    processes = [subprocess.Popen(command(tmp_path), stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True, env={
        **os.environ, "OMP_NUM_THREADS": "1", "RANK": str(rank), "LOCAL_RANK": str(rank),
        "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": port}) for rank in range(2)]
    logs = [process.communicate(timeout=300)[1] for process in processes]
    assert [process.returncode for process in processes] == [0, 0], logs
    assert "(shard 0/2)" in logs[0] and "(shard 1/2)" in logs[1]
    assert dataset_rows(tmp_path) == dataset_rows(uninterrupted)


def test_a_local_dataset_is_rolled_out_and_scored_by_its_answer_field(tmp_path, arith):
    data = tmp_path / "questions.jsonl"
    examples = arith.train_examples(3)
    data.write_text("".join(json.dumps({"q": e.prompt, "a": f"... #### {e.answer}"}) + "\n"
                            for e in examples))
    out = tmp_path / "out"
    result = invoke("--out", str(out), "--dataset", str(data), "--question-field", "q",
                    "--answer-field", "a", "--gen-length", "64", "--attempts", "1",
                    "--num", "5")
    assert result.exit_code == 0, result.output
    assert f"warning: --num 5: {data} has only 3 prompts; rolling out those\n" in result.output
    rows = dataset_rows(out)
    assert [row["id"] for row in rows] == [f"questions.jsonl-{i}" for i in range(3)]
    for row, example in zip(rows, examples, strict=True):
        assert row["prompt_ids"] == encode_prompt_of(example.prompt)
        assert row["correct"] == arith.score(example, row["text"])


def test_dataset_answers_compare_boxed_or_final_marks(tmp_path):
    data = tmp_path / "boxed.jsonl"
    data.write_text(json.dumps({"question": "q", "answer": "so \\boxed{1,000}"}) + "\n"
                    + json.dumps({"question": "code", "answer": ""}) + "\n")
    task = DatasetTask(str(data))
    boxed, code = task.train_examples()
    assert boxed.answer == "1000"
    assert task.score(boxed, "it is \\boxed{1000}") and task.score(boxed, "#### 1 000")
    assert not task.score(boxed, "1000") and not task.score(boxed, "#### 100")
    assert task.score(code, "anything")  # no reference (code prompts): always right


@pytest.mark.parametrize("arguments,message", [
    (["--task", "arith9"], "unknown task 'arith9'"),
    (["--task", "arith", "--dataset", "x.jsonl"], "give --task or --dataset, not both"),
    (["--dataset", "DATA", "--question-field", "question"], "lacks the field 'question'"),
    (["--model", "NO_MASK"], "has no mask token"),
    (["--block-size", "8"], "block_size = 16, not 8"),
    (["--shard", "3/2"], "is not I/N"),
    (["--gen-length", "1024"], "--gen-length 1024 needs 1042 positions; arith-teacher has 512"),
])
def test_bad_input_is_one_line(tmp_path, uninterrupted, arguments, message, request):
    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps({"prompt": "1 + 2 ?", "answer": "3"}) + "\n")
    replacements = {"DATA": str(data)}
    if "NO_MASK" in arguments:
        replacements["NO_MASK"] = str(request.getfixturevalue("model_without_mask_token"))
    out = uninterrupted if "--block-size" in arguments else tmp_path / "out"
    result = invoke("--out", str(out), *CHEAP, *[replacements.get(a, a) for a in arguments])
    assert result.exit_code == 2, result.output
    assert message in result.output and result.output.strip().count("\n") == 0
    assert "Traceback" not in result.output


def test_a_student_rolls_out_its_own_parallel_order(tmp_path):
    folder = tmp_path / "self"
    result = invoke("--out", str(folder), "--model", "arith-d3", "--method", "multiblock",
                    *CHEAP)
    assert result.exit_code == 0, result.output
    card = (folder / "README.md").read_text()
    assert "method: multiblock" in card and "threshold: 0.3" in card  # the model's default
    for row in dataset_rows(folder):
        steps, forwards = row["unmask_step"], row["num_forwards"]
        assert forwards < 64 and set(steps) <= set(range(forwards))
        assert len(steps) > len(set(steps))  # several positions per forward
    again = invoke("--out", str(folder), "--model", "arith-d3", "--method", "multiblock",
                   "--threshold", "0.1", *CHEAP)
    assert again.exit_code == 2 and "decoding" in again.output  # another run: refused
    wrong = invoke("--out", str(tmp_path / "v"), "--threshold", "0.2", *CHEAP)
    assert wrong.exit_code == 2 and "not vanilla" in wrong.output
