"""Decoding on the shipped teacher: equivalences between strategies, batching, the runner."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
from transformers import GenerationConfig
from typer.testing import CliRunner

from d3cli.checkpoints import load_model, resolve_model_path
from d3cli.cli import app
from d3cli.decode import STRATEGIES, DecodeOptions, decode_prompts, method_config, validate
from d3cli.runner import decode_examples

RESULT_FIELDS = {"task", "method", "model", "id", "config", "gen_tokens", "forwards", "tpf",
                 "seconds", "correct", "output", "env"}


def run(teacher, arith, method: str, examples=None, batch_size: int = 16, **changes):
    options = dataclasses.replace(DecodeOptions(gen_length=arith.gen_length,
                                                block_size=teacher.spec.block_size), **changes)
    examples = arith.eval_examples(16) if examples is None else examples
    results = decode_examples(teacher, arith, examples, method, options, batch_size)
    order = {example.id: index for index, example in enumerate(examples)}
    return sorted(results, key=lambda result: order[result.id])  # rows finish in any order


def tokens_and_forwards(results) -> list[tuple[str, int]]:
    return [(r.output, r.forwards) for r in results]


def test_vanilla_with_steps_equal_to_length_commits_one_token_per_forward(teacher, arith):
    for result in run(teacher, arith, "vanilla"):
        assert result.forwards == arith.gen_length
        assert result.tpf == result.gen_tokens / arith.gen_length


@pytest.mark.parametrize("steps", [32, 48])
def test_vanilla_uses_exactly_the_requested_steps(teacher, arith, steps):
    results = run(teacher, arith, "vanilla", arith.eval_examples(4), steps=steps)
    assert {r.forwards for r in results} == {steps}


def test_one_token_per_forward_is_recorded_only_when_asked_and_needs_full_steps():
    options = DecodeOptions(gen_length=64, block_size=16)
    assert "one_token_per_forward" not in method_config("vanilla", options)
    one_token = dataclasses.replace(options, one_token_per_forward=True)
    assert method_config("vanilla", one_token)["one_token_per_forward"] is True
    validate("vanilla", dataclasses.replace(one_token, steps=64))
    with pytest.raises(ValueError, match="as many steps as the generation length 64"):
        validate("vanilla", dataclasses.replace(one_token, steps=32))


def test_threshold_above_one_equals_one_token_per_step(teacher, arith):
    vanilla = run(teacher, arith, "vanilla")
    strict = run(teacher, arith, "threshold", threshold=1.01)
    assert tokens_and_forwards(strict) == tokens_and_forwards(vanilla)


def test_single_block_multiblock_equals_entropy(teacher, arith):
    entropy = run(teacher, arith, "entropy", threshold=0.5)
    single = run(teacher, arith, "multiblock", threshold=0.5, blocks=1, block_add_threshold=1.0,
                 decoded_token_threshold=1.0, early_stop=False)
    assert tokens_and_forwards(single) == tokens_and_forwards(entropy)


def test_delayed_cache_refreshed_every_forward_equals_no_cache(teacher, arith):
    plain = run(teacher, arith, "multiblock", threshold=0.5)
    cached = run(teacher, arith, "multiblock", threshold=0.5, cache="delayed", cache_delay=1,
                 refresh_interval=1)
    assert tokens_and_forwards(cached) == tokens_and_forwards(plain)


REFERENCE_EARLY_STOP = Path(__file__).parent / "golden" / "reference_multiblock_early_stop.json"


def test_multiblock_early_stop_equals_the_reference_decoder(teacher):
    """The reference's multi-block decoder with early stop, given the teacher's logits, on
    the first 100 of its 200 held-out prompts: the same answers and forwards. After an EOS
    fill the reference still selects among the positions the fill took from the mask (see
    Multiblock)."""
    reference = json.loads(REFERENCE_EARLY_STOP.read_text())
    settings, rows = reference["settings"], reference["rows"][:100]
    options = DecodeOptions(
        gen_length=settings["max_new_tokens"], block_size=settings["block_size"],
        threshold=settings["threshold"], block_add_threshold=settings["block_add_threshold"],
        decoded_token_threshold=settings["decoded_token_threshold"],
        early_stop=settings["early_stop"], score_dtype="float64")  # its entropy is float64
    assert teacher.spec.mask_token_id == settings["mask_id"]
    assert teacher.spec.eos_token_ids == (settings["eos_token_id"],)
    decoded = {done.index: done for done in decode_prompts(
        teacher.model, teacher.spec, [row["prompt_ids"] for row in rows], range(len(rows)),
        STRATEGIES["multiblock"], options, batch_size=len(rows))}
    differing = [row["id"] for index, row in enumerate(rows)
                 if (decoded[index].tokens, decoded[index].forwards)
                 != (row["tokens"], row["forwards_run"])]
    assert not differing, f"{len(differing)} of {len(rows)} differ: {differing[:5]}"
    # d3 counts the forwards it runs; the reference's nfe may add a turn without one.
    assert all(decoded[index].forwards <= row["reference_nfe"]
               for index, row in enumerate(rows))


def test_multiblock_opens_several_blocks_and_saves_forwards(teacher, arith):
    single = run(teacher, arith, "multiblock", threshold=0.5, blocks=1)
    several = run(teacher, arith, "multiblock", threshold=0.5, blocks=4)
    assert sum(r.forwards for r in several) < sum(r.forwards for r in single)


def test_lower_threshold_uses_fewer_forwards(teacher, arith):
    careful = run(teacher, arith, "threshold", threshold=0.99)
    eager = run(teacher, arith, "threshold", threshold=0.3)
    assert sum(r.forwards for r in eager) < sum(r.forwards for r in careful)
    assert all(r.forwards >= arith.gen_length // teacher.spec.block_size for r in eager)


def test_sampling_is_reproducible_per_seed(teacher, arith):
    examples = arith.eval_examples(8)
    first = run(teacher, arith, "vanilla", examples, temperature=1.0, seed=3)
    again = run(teacher, arith, "vanilla", examples, temperature=1.0, seed=3)
    greedy = run(teacher, arith, "vanilla", examples)
    assert [r.output for r in first] == [r.output for r in again]
    assert [r.output for r in first] != [r.output for r in greedy]


def test_accounting_of_tokens_forwards_and_correctness(teacher, arith):
    examples = arith.eval_examples(8)
    for example, result in zip(examples, run(teacher, arith, "multiblock", examples),
                               strict=True):
        ids = teacher.tokenizer(result.output, add_special_tokens=False).input_ids
        assert result.gen_tokens == len(ids)  # the word-level tokenizer round-trips
        assert teacher.spec.stop_token_ids[0] not in ids
        assert result.tpf == pytest.approx(result.gen_tokens / result.forwards)
        last = result.output.split()[-1] if result.output else None
        assert result.correct == ("####" in result.output.split()[-2:-1]
                                  and last == example.answer)
        assert 0 < result.seconds < 600


def shipped_eval() -> dict:
    """The numbers the shipped teacher's model card records (eval.json beside its weights)."""
    return json.loads((resolve_model_path("arith-teacher") / "eval.json").read_text())


@pytest.fixture(scope="module")
def vanilla_accuracy_on_100(teacher, arith) -> float:
    """The shipped teacher's greedy accuracy on the first 100 held-out prompts (one decode,
    read by every test below)."""
    results = run(teacher, arith, "vanilla", arith.eval_examples(100), batch_size=100)
    return 100 * sum(r.correct for r in results) / len(results)


def test_shipped_teacher_reproduces_its_model_card(vanilla_accuracy_on_100):
    """Guards the shipped weights: greedy decoding gives exactly the recorded accuracy."""
    recorded = shipped_eval()["vanilla_accuracy_first_100_percent"]
    assert vanilla_accuracy_on_100 == pytest.approx(recorded)


def test_shipped_teacher_is_accurate_one_token_per_forward(vanilla_accuracy_on_100):
    assert shipped_eval()["status"] == "final"
    assert vanilla_accuracy_on_100 >= 90


@pytest.fixture(scope="module")
def shipped_student_run(arith):
    """The shipped student (the default of `d3 decode`) at its own defaults, first 100
    held-out prompts."""
    student = load_model("arith-d3", device="cpu", dtype="float32")
    card = json.loads((resolve_model_path("arith-d3") / "eval.json").read_text())
    results = run(student, arith, "multiblock", arith.eval_examples(100), batch_size=100,
                  **student.decoding["multiblock"])
    accuracy = 100 * sum(r.correct for r in results) / len(results)
    tpf = sum(r.gen_tokens for r in results) / sum(r.forwards for r in results)
    return card, accuracy, tpf


def test_shipped_student_reproduces_its_model_card(shipped_student_run):
    card, accuracy, tpf = shipped_student_run
    assert accuracy == pytest.approx(card["first_100"]["accuracy"])
    assert tpf == pytest.approx(card["first_100"]["tpf"], abs=0.005)


def test_shipped_student_keeps_teacher_accuracy_at_higher_parallelism(
        shipped_student_run, vanilla_accuracy_on_100, teacher, arith):
    """The point of distillation: near the teacher's one-token-per-forward accuracy while
    committing far more per forward than the teacher's own threshold decoding."""
    _, accuracy, tpf = shipped_student_run
    examples = arith.eval_examples(50)  # enough to place the teacher's TPF
    fast_teacher = run(teacher, arith, "threshold", examples, batch_size=50, threshold=0.9)
    teacher_tpf = sum(r.gen_tokens for r in fast_teacher) / sum(r.forwards for r in fast_teacher)
    assert accuracy >= vanilla_accuracy_on_100 - 2
    assert tpf >= 1.5 * teacher_tpf


def invoke(*arguments: str):
    return CliRunner().invoke(app, ["decode", *arguments])


def test_decode_cli_writes_the_result_contract(tmp_path):
    out = tmp_path / "results.jsonl"
    result = invoke("--model", "arith-teacher", "--limit", "4", "--method", "vanilla",
                    "--method", "multiblock", "--out", str(out))
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["method"] for r in records] == ["vanilla"] * 4 + ["multiblock"] * 4
    assert {r["id"] for r in records[:4]} == {r["id"] for r in records[4:]} == {
        f"arith-{i}" for i in range(4)}
    for record in records:
        assert set(record) == RESULT_FIELDS
        assert record["model"] == "arith-teacher" and record["task"] == "arith"
        assert record["tpf"] == pytest.approx(record["gen_tokens"] / record["forwards"])
        assert {"d3", "torch", "transformers", "device", "dtype", "seed",
                "batch_size"} <= set(record["env"])
    assert records[4]["config"]["threshold"] == 0.5 and records[0]["config"]["steps"] == 64


def test_decode_cli_validation_split_is_its_own_task(tmp_path):
    out = tmp_path / "results.jsonl"
    result = invoke("--model", "arith-teacher", "--split", "validation", "--limit", "2",
                    "--method", "threshold", "--out", str(out))
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted((r["task"], r["id"]) for r in records) == [
        ("arith-validation", "arith-val-0"), ("arith-validation", "arith-val-1")]


def test_a_folder_is_one_model_however_it_is_typed(tmp_path, monkeypatch):
    """./x and /abs/x are the same model: recorded by its absolute path, so a resume under
    the other spelling skips the rows already there."""
    shutil.copytree(resolve_model_path("arith-d3"), tmp_path / "x")
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "results.jsonl"
    assert invoke("--model", "./x", "--limit", "2", "--out", str(out)).exit_code == 0
    again = invoke("--model", str(tmp_path / "x"), "--limit", "2", "--out", str(out))
    assert again.exit_code == 0, again.output
    assert "skipped 2 rows already there" in " ".join(again.output.split())
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 2 and {r["model"] for r in records} == {str(tmp_path.resolve() / "x")}


def model_with_decoding(tmp_path, decoding: dict) -> str:
    """A copy of the shipped teacher whose generation_config.json sets `d3_decoding`."""
    folder = tmp_path / "with-defaults"
    shutil.copytree(resolve_model_path("arith-teacher"), folder)
    GenerationConfig(d3_decoding=decoding).save_pretrained(folder)
    return str(folder)


def decoded_configs(out) -> dict[str, dict]:
    return {json.loads(line)["method"]: json.loads(line)["config"]
            for line in out.read_text().splitlines()}


def test_decode_cli_takes_the_models_own_defaults_under_the_command_line(tmp_path):
    model = model_with_decoding(tmp_path, {"multiblock": {"threshold": 0.3, "blocks": 2}})
    out = tmp_path / "results.jsonl"
    methods = ["--method", "multiblock", "--method", "entropy"]
    assert invoke("--model", model, "--limit", "1", *methods, "--out", str(out)).exit_code == 0
    configs = decoded_configs(out)
    assert configs["multiblock"]["threshold"] == 0.3 and configs["multiblock"]["blocks"] == 2
    assert configs["entropy"]["threshold"] == 0.5  # no default of its own: d3's
    out.unlink()
    result = invoke("--model", model, "--limit", "1", "--method", "multiblock",
                    "--threshold", "0.2", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert decoded_configs(out)["multiblock"] | {"threshold": 0.2, "blocks": 2} == \
        decoded_configs(out)["multiblock"]


def test_decode_cli_rejects_a_models_unknown_default(tmp_path):
    model = model_with_decoding(tmp_path, {"multiblock": {"tau": 0.3}})
    result = invoke("--model", model, "--limit", "1", "--out", str(tmp_path / "r.jsonl"))
    assert result.exit_code == 2
    assert "d3_decoding defaults for multiblock name 'tau'" in result.output


def test_decode_cli_resumes_without_duplicates(tmp_path):
    out = tmp_path / "results.jsonl"
    assert invoke("--limit", "3", "--method", "entropy", "--out", str(out)).exit_code == 0
    with out.open("a") as handle:
        handle.write('{"task": "arith", "method": "entr')  # a line cut by kill -9
    assert invoke("--limit", "6", "--method", "entropy", "--out", str(out)).exit_code == 0
    records = [json.loads(line) for line in out.read_text().splitlines() if line.endswith("}")]
    assert sorted(r["id"] for r in records) == [f"arith-{i}" for i in range(6)]


def test_decode_cli_resume_key_holds_the_seed_and_the_summary_covers_the_file(tmp_path):
    out = tmp_path / "results.jsonl"
    common = ["--limit", "4", "--method", "vanilla", "--out", str(out)]
    first = invoke(*common, "--temperature", "0.7", "--seed", "1")
    assert first.exit_code == 0, first.output
    again = invoke(*common, "--temperature", "0.7", "--seed", "2")  # another seed: decoded
    assert again.exit_code == 0, again.output
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["env"]["seed"] for r in records) == [1] * 4 + [2] * 4
    resumed = invoke(*common, "--temperature", "0.7", "--seed", "2")  # nothing new
    assert resumed.exit_code == 0, resumed.output
    assert len(out.read_text().splitlines()) == 8
    assert "4 (0)" in resumed.stdout  # four rows in the file, none new
    seed2 = [r for r in records if r["env"]["seed"] == 2]
    accuracy = 100 * sum(r["correct"] for r in seed2) / 4
    assert f"{accuracy:.1f}" in resumed.stdout


def test_decode_cli_reads_a_prompts_file(tmp_path, arith):
    prompts = tmp_path / "prompts.jsonl"
    example = arith.eval_examples(1)[0]
    prompts.write_text(json.dumps({"id": "mine", "prompt": example.prompt,
                                   "answer": example.answer}) + "\n"
                       + json.dumps({"prompt": "3 + 4 ?"}) + "\n")
    out = tmp_path / "results.jsonl"
    result = invoke("--prompts", str(prompts), "--method", "vanilla", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert f"on {prompts} (2 prompts" in " ".join(result.stdout.split())  # the file, not arith
    records = [json.loads(line) for line in out.read_text().splitlines()]
    by_id = {r["id"]: r for r in records}
    assert sorted(by_id) == ["mine", "prompts-2"]
    assert isinstance(by_id["mine"]["correct"], bool) and by_id["prompts-2"]["correct"] is None


def test_decode_cli_runs_a_real_task_from_a_local_data_file(tmp_path):
    data = tmp_path / "gsm8k.jsonl"
    data.write_text(json.dumps({"question": "1 + 2 ?", "answer": "1 + 2 = 3\n#### 3"}) + "\n")
    out = tmp_path / "results.jsonl"
    result = invoke("--task", "gsm8k_cot_zeroshot", "--data-file", str(data),
                    "--method", "threshold",
                    "--threshold", "0.1", "--gen-length", "32", "--out", str(out))
    assert result.exit_code == 0, result.output
    record = json.loads(out.read_text())
    assert record["task"] == "gsm8k_cot_zeroshot" and record["correct"] is False


@pytest.mark.parametrize("arguments,message", [
    (["--method", "fastest"], "unknown method 'fastest'"),
    (["--method", "threshold", "--cache-delay", "2"], "--cache-delay is not an option of"),
    (["--method", "threshold", "--cache", "delayed"], "--cache delayed does not apply"),
    (["--blocks", "0"], "Invalid value for '--blocks'"),
    (["--model", "no/such-model-here"], "could not fetch"),
    (["--model", "./missing-folder"], "neither an embedded model"),
    (["--task", "gsm9k"], "unknown task 'gsm9k' (did you mean 'gsm8k'?)"),
    (["--task", "gsm8k", "--data-file", "BAD_PROMPTS"], "gsm8k: cannot load the task"),
    (["--prompts", "BAD_PROMPTS"], "bad.jsonl:2: malformed JSON"),
    (["--model", "NO_MASK"], "has no mask token"),
])
def test_decode_cli_bad_input_is_one_line(tmp_path, arguments, message, monkeypatch, request):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "1 + 2 ?"}\n{"prompt": \n')
    replacements = {"BAD_PROMPTS": str(bad), "NO_MASK": None}
    if "NO_MASK" in arguments:
        replacements["NO_MASK"] = str(request.getfixturevalue("model_without_mask_token"))
    arguments = [replacements.get(a, a) for a in arguments]
    result = invoke("--limit", "1", "--out", str(tmp_path / "r.jsonl"), *arguments)
    assert result.exit_code == 2, result.output
    assert message in result.output and result.output.strip().count("\n") == 0
    assert "Traceback" not in result.output
