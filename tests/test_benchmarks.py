"""The GPU benchmark, scaled down to run on CPU: it must keep working between the sessions
that have a GPU to run it on."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch._dynamo.utils import counters

from d3cli.decode import DecodeOptions

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "gpu_decode.py"
TARGET_TPF = {"LLaDA-8B": 9.11, "Dream-7B": 5.0}


def test_gpu_decode_runs_every_method_on_both_shapes(tmp_path: Path) -> None:
    command = [sys.executable, str(SCRIPT), "--device", "cpu", "--layers", "1", "--hidden", "128",
               "--intermediate", "256", "--vocab", "512", "--prompt-length", "8",
               "--gen-length", "64", "--batches", "3", "--repeats", "1", "--out",
               str(tmp_path)]
    printed = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    assert "overhead" in printed
    rows = [json.loads(line) for line in (tmp_path / "gpu_decode.jsonl").read_text().splitlines()]
    assert [(row["shape"], row["batch"]) for row in rows[::5]] == [
        ("LLaDA-8B", 3), ("Dream-7B", 3)]
    for row in rows:
        assert row["bare_seconds"] > 0 and row["seconds"] > 0
        assert row["host_syncs"] <= row["iterations"] - 1  # one read between two forwards
        assert row["host_reads_per_forward"] <= 1 and row["eager_ops"] > 0
        assert row["compiles"] is None  # eager
        method = row["method"]
        if method == "vanilla":  # one token per forward, every forward a full one
            assert row["tpf"] == 1.0
            assert row["calls"] == {"full": 64}
        if method.startswith("multiblock") or method.startswith("threshold"):
            assert "cache" not in method or set(row["calls"]) == {"cached", "refresh"}
        if method.startswith("multiblock"):  # the certainty hook lets it commit in parallel
            assert TARGET_TPF[row["shape"]] / 2 < row["tpf"] < TARGET_TPF[row["shape"]] * 2


# Operators per iteration outside the forward at the tiny LLaDA shape, about 10 % over what
# the decoder dispatches now (2 prompts, 64 tokens in blocks of 32).
MOST_EAGER_OPS = {"multiblock 0.5": 148, "multiblock 0.5 cache delayed": 220}


def test_gpu_decode_counts_operators_host_reads_and_compiles_in_process(one_thread):
    """The counts the GPU benchmark reports that do not depend on the machine, for the two
    methods with the most bookkeeping (tests/test_driver.py bounds every method); compiles
    are counted on dynamo's capture (torch.compile's graphs, without building them)."""
    import gpu_decode

    shape = gpu_decode.scaled_down(gpu_decode.SHAPES["llada"], layers=1, hidden=128,
                                   intermediate=256, vocab=512)
    base = DecodeOptions(gen_length=64, block_size=32)
    model, _, _ = gpu_decode.prepared(shape, torch.device("cpu"), torch.float32, 0, 40.0, 3.0,
                                      base, 8, 0)
    prompts = gpu_decode.random_prompts(shape, 2, 8, 0)
    uncached, delayed = gpu_decode.method_runs(shape, base)[-2:]
    rows = [gpu_decode.measure(model, shape, *run, prompts, 1, 2, False, 1)
            for run in (uncached, delayed)]
    with gpu_decode.capture_only():
        rows.append(gpu_decode.measure(model, shape, *delayed, prompts, 1, 2, True, 1))
        graphs = counters["stats"]["unique_graphs"]
        gpu_decode.decode(model, shape, *delayed, prompts, compile=True)
    assert counters["stats"]["unique_graphs"] == graphs  # the first decode compiled them all
    for row in rows:
        assert row.host_reads_per_forward <= 1
        assert 0 < row.eager_ops <= MOST_EAGER_OPS[row.method], row.method
    assert [row.compiles is None for row in rows] == [True, True, False]
    assert 0 < rows[-1].compiles <= 64 // 32 + 1


@pytest.mark.parametrize("section", ["attention", "bf16", "compile", "torchrun", "distill",
                                     "speed"])
def test_gpu_check_smoke_passes_each_section_and_writes_its_report(section, tmp_path,
                                                                   one_thread):
    import gpu_check

    assert gpu_check.main(["--device", "cpu", "--smoke", "--sections", section, "--out",
                           str(tmp_path)]) == 0
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert list(report["sections"]) == [section] and report["passed"]
    assert f"## {section}: pass" in (tmp_path / "gpu_check.md").read_text()


def test_gpu_check_records_a_failing_section_and_still_runs_the_next(tmp_path, monkeypatch):
    import gpu_check

    def broken(settings):
        raise RuntimeError("no fused kernel")

    monkeypatch.setitem(gpu_check.SECTIONS, "attention", broken)
    monkeypatch.setitem(gpu_check.SECTIONS, "bf16", lambda settings: {"passed": True,
                                                                       "rows": [{"x": 0.5}]})
    assert gpu_check.main(["--device", "cpu", "--smoke", "--sections", "attention", "bf16",
                           "--out", str(tmp_path)]) == 1
    sections = json.loads((tmp_path / "gpu_check.json").read_text())["sections"]
    assert sections["attention"]["error"] == "RuntimeError: no fused kernel"
    assert sections["bf16"]["passed"] and not sections["attention"]["passed"]
    assert "## attention: FAIL" in (tmp_path / "gpu_check.md").read_text()
