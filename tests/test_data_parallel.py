"""Data-parallel decode: two CPU processes (gloo, under torchrun) equal one, resume after a
kill, and each rank's own device."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from d3cli.checkpoints import pick_device
from d3cli.data_parallel import merge_parts, part_path, share

DECODE = ["decode", "--limit", "24", "--batch-size", "4", "--method", "multiblock",
          "--method", "threshold"]
ENVIRONMENT = {**os.environ, "OMP_NUM_THREADS": "1"}


def launched(out: Path) -> list[str]:
    """Two processes (gloo): `accelerate launch --cpu` starts only one, so torchrun."""
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
            "--master-port", str(29500 + os.getpid() % 1000),
            "-m", "d3cli", *DECODE, "--out", str(out)]


def samples(path: Path) -> dict[tuple, tuple]:
    """(method, id) → what the decode produced; every record must be unique."""
    records = [json.loads(line) for line in path.read_text().splitlines()]
    found = {(r["method"], r["id"]): (r["output"], r["forwards"], r["gen_tokens"], r["correct"])
             for r in records}
    assert len(found) == len(records), "a sample appears twice"
    return found


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> dict[tuple, tuple]:
    out = tmp_path_factory.mktemp("single") / "results.jsonl"
    subprocess.run([sys.executable, "-m", "d3cli", *DECODE, "--out", str(out)],
                   env=ENVIRONMENT, check=True, capture_output=True)
    return samples(out)


def test_a_bare_cuda_is_the_processs_own_gpu_under_a_launcher(monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)  # a 2-GPU machine's answers
    monkeypatch.setattr("torch.cuda.device_count", lambda: 2)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert pick_device("cuda") == "cuda"
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert pick_device("cuda") == "cuda:1"
    assert pick_device("cuda:0") == "cuda:0"  # an explicit device is kept
    assert pick_device("cpu") == "cpu"


def test_two_processes_write_the_single_process_file(single, tmp_path):
    out = tmp_path / "results.jsonl"
    result = subprocess.run(launched(out), env=ENVIRONMENT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert samples(out) == single
    assert not list(tmp_path.glob("*.rank*")), "part files left after the merge"
    assert "rank 0 of 2" in result.stdout and "rank 1 of 2" in result.stdout
    assert result.stderr.count("on cpu") == 2  # each rank says where it decoded


def rank_process(launcher: int, rank: int) -> int:
    """The pid of the worker of `rank` among the launcher's children."""
    for child in Path(f"/proc/{launcher}/task/{launcher}/children").read_text().split():
        environment = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
        if f"RANK={rank}".encode() in environment:
            return int(child)
    raise AssertionError(f"no worker of rank {rank}")


def test_a_run_whose_rank_was_killed_resumes_to_the_same_file(single, tmp_path):
    out = tmp_path / "results.jsonl"
    process = subprocess.Popen(launched(out), env=ENVIRONMENT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    part, deadline = part_path(out, 1, 2), time.monotonic() + 300
    while not (part.exists() and part.read_text().count("\n") >= 3):
        assert time.monotonic() < deadline and process.poll() is None, "no results to kill"
        time.sleep(0.05)
    os.kill(rank_process(process.pid, 1), signal.SIGKILL)  # the launcher ends the others
    assert process.wait(timeout=120) != 0
    kept = part.read_text().count("\n")
    assert 3 <= kept < 24, "the kill came after rank 1's share was done"
    result = subprocess.run(launched(out), env=ENVIRONMENT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "skipped" in result.stderr
    assert samples(out) == single


def test_shares_cover_every_item_once():
    items = list(range(11))
    shares = [share(items, rank, 3) for rank in range(3)]
    assert sorted(sum(shares, [])) == items
    assert [len(one) for one in shares] == [4, 4, 3]


def test_merge_keeps_each_sample_once_and_ends_a_cut_line(tmp_path):
    out = tmp_path / "results.jsonl"
    record = {"model": "m", "task": "t", "method": "x", "config": {"a": 1}}
    out.write_text(json.dumps({**record, "id": "1"}) + "\n" + '{"model": "m", "id"')
    parts = [part_path(out, rank, 2) for rank in range(2)]
    parts[0].write_text(json.dumps({**record, "id": "1"}) + "\n"
                        + json.dumps({**record, "id": "2"}) + "\n")
    parts[1].write_text(json.dumps({**record, "id": "3", "config": {"a": 2}}) + "\n")
    assert merge_parts(out, parts) == 2
    lines = out.read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines if line.endswith("}")] == ["1", "2", "3"]
    assert not any(part.exists() for part in parts)
