"""`d3 trajectories --import` and `d3 distill --targets` on the command line."""

from __future__ import annotations

import json

import datasets
import pytest
from test_targets import ROWS, hand_made_folder, write_rows
from typer.testing import CliRunner

from d3cli.cli import app
from d3cli.trajectories import load_trajectories
from d3cli.trajectory_import import reference_layout


@pytest.fixture(scope="module")
def reference_file(rollouts, teacher, tmp_path_factory):
    rows = [reference_layout(record, teacher.spec.mask_token_id) for record in rollouts]
    path = tmp_path_factory.mktemp("reference") / "llada_32.parquet"
    datasets.Dataset.from_list(rows).to_parquet(str(path))
    return path, rollouts


def invoke(*arguments: str):
    return CliRunner().invoke(app, list(arguments))


def test_import_writes_the_rollouts_and_resumes(reference_file, tmp_path):
    path, records = reference_file
    command = ("trajectories", "--import", str(path), "--out", str(tmp_path / "out"),
               "--gen-length", "64", "--chunk-size", "2")
    result = invoke(*command)
    assert result.exit_code == 0, result.output
    assert "imported 5 records" in " ".join(result.output.split())
    imported = load_trajectories(tmp_path / "out").to_list()
    assert [row["unmask_step"] for row in imported] == [r["unmask_step"] for r in records]
    again = invoke(*command)
    said = " ".join(again.output.split())
    assert again.exit_code == 0 and "imported 0 records" in said
    assert "5 were already there" in said


def test_import_errors_are_one_line(reference_file, tmp_path):
    path, _ = reference_file
    result = invoke("trajectories", "--import", str(path), "--out", str(tmp_path / "out"))
    assert result.exit_code == 2  # after the progress bar, the error as its own last line
    assert result.output.splitlines()[-1].startswith(f"error: {path}: record 0 (idx 0): its "
                                                     "states hold")  # --gen-length 256
    (tmp_path / "empty").mkdir()
    missing = invoke("trajectories", "--import", str(tmp_path / "empty"), "--out",
                     str(tmp_path / "other"))
    assert missing.exit_code == 2
    assert missing.output == f"error: {tmp_path / 'empty'}: no parquet or JSON lines files\n"
    both = invoke("trajectories", "--import", str(path), "--task", "arith", "--out",
                  str(tmp_path / "other"))
    assert both.exit_code == 2 and "not both" in both.output


def test_distill_takes_its_targets_from_the_dataset(teacher, tmp_path):
    hand_made_folder(tmp_path / "trajectories", teacher, [0, 2, 3])
    targets = write_rows(tmp_path / "distill.jsonl", ROWS)
    result = invoke("distill", "--trajectories", str(tmp_path / "trajectories"), "--out",
                    str(tmp_path / "student"), "--targets", targets, "--target-length", "32",
                    "--window-schedule", "8", "--max-steps", "1", "--batch-size", "2",
                    "--full", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "1 rows of" in result.output  # row 1 has no trajectory
    recorded = json.loads((tmp_path / "student" / "distill.json").read_text())
    assert recorded["targets"] == {"dataset": targets, "question_field": "question",
                                   "response_field": "llm_response",
                                   "index_field": "sample_idx", "split": "train",
                                   "length": 32}
    missing = invoke("distill", "--trajectories", str(tmp_path / "trajectories"), "--out",
                     str(tmp_path / "other"), "--targets", targets, "--target-response-field",
                     "answer", "--device", "cpu")
    assert missing.exit_code == 2 and "lacks the field 'answer'" in missing.output
