"""The GPU benchmark, scaled down to run on CPU: it must keep working between the sessions
that have a GPU to run it on."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
        method = row["method"]
        if method == "vanilla":  # one token per forward, every forward a full one
            assert row["tpf"] == 1.0
            assert row["calls"] == {"full": 64}
        if method.startswith("multiblock") or method.startswith("threshold"):
            assert "cache" not in method or set(row["calls"]) == {"cached", "refresh"}
        if method.startswith("multiblock"):  # the certainty hook lets it commit in parallel
            assert TARGET_TPF[row["shape"]] / 2 < row["tpf"] < TARGET_TPF[row["shape"]] * 2
