"""Decoding on the shipped teacher: equivalences between strategies, batching, the runner."""

from __future__ import annotations

import dataclasses
import json

import pytest
from typer.testing import CliRunner

from d3cli.cli import app
from d3cli.decode import DecodeOptions, decode_examples

RESULT_FIELDS = {"task", "method", "model", "id", "config", "gen_tokens", "forwards", "tpf",
                 "seconds", "correct", "output"}


def run(teacher, arith, method: str, count: int = 16, batch_size: int = 16, **changes):
    options = dataclasses.replace(DecodeOptions(gen_length=arith.gen_length,
                                                block_size=teacher.spec.block_size), **changes)
    return list(decode_examples(teacher, arith, arith.eval_examples(count), method, options,
                                batch_size))


def test_vanilla_with_steps_equal_to_length_commits_one_token_per_forward(teacher, arith):
    for result in run(teacher, arith, "vanilla"):
        assert result.forwards == arith.gen_length
        assert result.tpf == result.gen_tokens / arith.gen_length


@pytest.mark.parametrize("steps", [32, 48])
def test_vanilla_uses_exactly_the_requested_steps(teacher, arith, steps):
    assert {r.forwards for r in run(teacher, arith, "vanilla", count=4, steps=steps)} == {steps}


def test_threshold_above_one_equals_one_token_per_step(teacher, arith):
    vanilla = run(teacher, arith, "vanilla")
    strict = run(teacher, arith, "threshold", threshold=1.01)
    assert [r.output for r in strict] == [r.output for r in vanilla]
    assert [r.forwards for r in strict] == [r.forwards for r in vanilla]


def test_lower_threshold_uses_fewer_forwards(teacher, arith):
    careful = run(teacher, arith, "threshold", threshold=0.99)
    eager = run(teacher, arith, "threshold", threshold=0.3)
    assert sum(r.forwards for r in eager) < sum(r.forwards for r in careful)
    assert all(r.forwards >= arith.gen_length // teacher.spec.block_size for r in eager)


def test_batching_does_not_change_the_output(teacher, arith):
    batched = run(teacher, arith, "threshold", count=12, batch_size=12, threshold=0.7)
    single = run(teacher, arith, "threshold", count=12, batch_size=1, threshold=0.7)
    assert [r.output for r in batched] == [r.output for r in single]
    assert [r.forwards for r in batched] == [r.forwards for r in single]


def test_sampling_is_reproducible_per_seed(teacher, arith):
    first = run(teacher, arith, "vanilla", count=8, temperature=1.0, seed=3)
    again = run(teacher, arith, "vanilla", count=8, temperature=1.0, seed=3)
    greedy = run(teacher, arith, "vanilla", count=8)
    assert [r.output for r in first] == [r.output for r in again]
    assert [r.output for r in first] != [r.output for r in greedy]


def test_shipped_teacher_is_accurate_one_token_per_forward(teacher, arith):
    results = run(teacher, arith, "vanilla", count=100, batch_size=100)
    accuracy = sum(r.correct for r in results) / len(results)
    assert accuracy >= 0.85, accuracy


def test_decode_cli_writes_the_result_contract(tmp_path):
    out = tmp_path / "results.jsonl"
    result = CliRunner().invoke(app, ["decode", "--limit", "4", "--method", "vanilla",
                                      "--method", "threshold", "--out", str(out)])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["method"] for r in records] == ["vanilla"] * 4 + ["threshold"] * 4
    for record in records:
        assert set(record) == RESULT_FIELDS
        assert record["model"] == "arith-teacher" and record["task"] == "arith"
        assert record["tpf"] == pytest.approx(record["gen_tokens"] / record["forwards"])
    assert records[4]["config"]["threshold"] == 0.9 and "steps" in records[0]["config"]


@pytest.mark.parametrize("arguments,message", [
    (["--method", "fastest"], "unknown method 'fastest'"),
    (["--model", "no/such-model-here"], "could not fetch"),
    (["--model", "./missing-folder"], "neither an embedded model"),
    (["--task", "gsm9k"], "unknown task 'gsm9k'"),
])
def test_decode_cli_bad_input_is_one_line(tmp_path, arguments, message, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = CliRunner().invoke(app, ["decode", "--limit", "1", "--out",
                                      str(tmp_path / "r.jsonl"), *arguments])
    assert result.exit_code == 2
    assert message in result.output and result.output.strip().count("\n") == 0
    assert result.exception is None or isinstance(result.exception, SystemExit)
