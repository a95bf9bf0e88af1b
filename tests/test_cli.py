"""The command line's surface: every bad input is one line (exit 2, nothing left behind),
help that reads at 80 columns, --version, and the listings of models and tasks."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from d3cli import __version__
from d3cli.checkpoints import ASSETS
from d3cli.cli import app

COMMANDS = ["decode", "aup", "trajectories", "distill", "pretrain", "models", "tasks"]


def run(*arguments: str, columns: int = 80):
    """The command line, in this process, on a terminal `columns` wide."""
    return CliRunner().invoke(app, list(arguments), env={"COLUMNS": str(columns)},
                              terminal_width=columns)


def assert_one_line_error(result, message: str) -> None:
    assert result.exit_code == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert message in lines[0], lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("command", COMMANDS)
def test_help_at_80_columns_names_every_option_uncut(command):
    result = run(command, "--help")
    assert result.exit_code == 0, result.stderr
    click_command = typer.main.get_command(app).commands[command]
    for parameter in click_command.params:
        for name in parameter.opts + parameter.secondary_opts:
            if name.startswith("--"):
                assert name in result.stdout.split() or f"{name}" in result.stdout, name
    assert max(len(line) for line in result.stdout.splitlines()) <= 80


def test_top_help_is_for_users_and_version_and_listings_work():
    top = run("--help").stdout
    assert "d3 decode" in top and "module function" not in top
    assert run("--version").stdout.strip() == f"d3 {__version__}"
    models = run("models").stdout
    assert "arith-d3 (default of decode)" in models and "arith-teacher" in models
    tasks = run("tasks").stdout
    assert tasks.startswith("arith: ") and "gsm8k_cot_zeroshot" in tasks
    for listing in (models, tasks):  # whole entries, at 80 columns
        assert max(len(line) for line in listing.splitlines()) <= 80
    assert "(several forms of each step are equally right)." in " ".join(tasks.split())
    assert "at the teacher's one-token-per-forward accuracy." in " ".join(models.split())


def test_help_says_which_scorer_reads_prompts_and_how_dataset_answers_are_judged():
    decode = " ".join(run("decode", "--help", columns=200).stdout.split())
    assert "an answer is scored by arith's scorer" in decode
    trajectories = " ".join(run("trajectories", "--help", columns=200).stdout.split())
    assert "(the last \\boxed{}, else the text after the last ####)" in trajectories


BAD_DECODE = [
    (["--limit", "-3"], "'--limit'"),
    (["--limit", "0"], "'--limit'"),
    (["--threshold", "-1"], "'--threshold'"),
    (["--temperature", "-1"], "'--temperature'"),
    (["--block-add-threshold", "5"], "'--block-add-threshold'"),
    (["--decoded-token-threshold", "1.5"], "'--decoded-token-threshold'"),
    (["--gen-length", "0"], "'--gen-length'"),
    (["--method", "vanilla", "--steps", "0"], "'--steps'"),
    (["--dtype", "int8"], "is not one of float32, bfloat16, float16, auto"),
    (["--score-dtype", "float16"], "is not one of float32, float64"),
    (["--device", "cuda"], "has no CUDA device"),
    (["--device", "tpu"], "unknown device 'tpu'"),
    (["--bogus"], "No such option: --bogus"),
    (["--gen-length", "1024"], "plus --gen-length 1024 needs 1042 positions; arith-d3 has 512"),
]


@pytest.mark.parametrize(("arguments", "message"), BAD_DECODE,
                         ids=[" ".join(a) for a, _ in BAD_DECODE])
def test_bad_decode_options_are_one_line_and_write_nothing(tmp_path, arguments, message):
    out = tmp_path / "results.jsonl"
    assert_one_line_error(run("decode", *arguments, "--out", str(out)), message)
    assert not out.exists()


@pytest.mark.parametrize("command", ["decode", "trajectories", "pretrain", "distill"])
def test_an_unwritable_out_is_one_line_before_any_work(tmp_path, command):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    out = blocker / "inside"
    extra = ["--trajectories", str(tmp_path)] if command == "distill" else []
    assert_one_line_error(run(command, "--out", str(out), *extra), "is not a writable folder")


def test_an_empty_prompt_is_one_line_naming_file_and_line_before_any_work(tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "12+30="}\n{"id": "blank", "prompt": ""}\n')
    out = tmp_path / "results.jsonl"
    result = run("decode", "--prompts", str(prompts), "--out", str(out))
    assert_one_line_error(result, f"{prompts}:2: empty prompt")
    assert not out.exists()


def test_a_code_task_runs_generated_code_only_when_confirmed(tmp_path):
    """Checked before the task (or the model) loads; with the flag the run goes on (here to
    the missing data file)."""
    out = tmp_path / "results.jsonl"
    for task in ("humaneval", "mbpp_instruct"):
        result = run("decode", "--task", task, "--out", str(out))
        assert_one_line_error(result, "pass --confirm-run-unsafe-code to allow it")
    missing = tmp_path / "missing.jsonl"
    confirmed = run("decode", "--task", "humaneval", "--data-file", str(missing),
                    "--confirm-run-unsafe-code", "--out", str(out))
    assert confirmed.exit_code == 2, confirmed.stderr
    assert "confirm" not in confirmed.stderr
    assert confirmed.stderr.strip().splitlines()[-1].endswith(f"{missing} does not exist")
    assert not out.exists()


def test_pretrain_bad_shapes_and_steps_leave_no_folder(tmp_path):
    out = tmp_path / "run"
    assert_one_line_error(run("pretrain", "--out", str(out), "--heads", "5"),
                          "--heads 5 does not divide --hidden-size 192")
    assert_one_line_error(run("pretrain", "--out", str(out), "--steps", "0"), "'--steps'")
    assert not out.exists()


def test_a_truncated_weights_file_is_one_line(tmp_path):
    model = tmp_path / "cut"
    shutil.copytree(ASSETS / "arith-d3", model)
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    result = run("decode", "--model", str(model), "--limit", "1", "--out",
                 str(tmp_path / "r.jsonl"))
    assert_one_line_error(result, "cannot read the weights")


def test_missing_trajectories_and_a_folder_given_to_aup_are_named(tmp_path):
    missing = tmp_path / "nowhere"
    result = run("distill", "--trajectories", str(missing), "--out", str(tmp_path / "s"))
    assert_one_line_error(result, f"{missing}: no such folder")
    assert_one_line_error(run("aup", str(tmp_path)), "is a folder")


def test_the_installed_command_gives_the_same_one_line_errors(tmp_path):
    result = subprocess.run([sys.executable, "-m", "d3cli", "decode", "--limit", "0"],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == ("error: Invalid value for '--limit': Input should be "
                                     "greater than or equal to 1")


def test_the_cli_reference_in_docs_is_current(tmp_path):
    """docs/cli.md is typer's rendering of the help; regenerate it with the command below."""
    generated = tmp_path / "cli.md"
    subprocess.run([sys.executable, "-m", "typer", "d3cli.cli", "utils", "docs", "--name", "d3",
                    "--output", str(generated)], check=True, capture_output=True)
    shipped = Path(__file__).parents[1] / "docs" / "cli.md"
    assert shipped.read_text() == generated.read_text(), (
        "python -m typer d3cli.cli utils docs --name d3 --output docs/cli.md")


def test_an_unreachable_hub_is_one_line_at_once(tmp_path, monkeypatch):
    """No retries for half a minute: a dataset on an unreachable hub fails at once."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "https://127.0.0.1:9")  # a closed port: refused at once
    result = run("decode", "--task", "gsm8k_cot_zeroshot", "--limit", "1",
                 "--out", str(tmp_path / "r.jsonl"))
    assert_one_line_error(result, "the hub (127.0.0.1) is unreachable from here")
    assert "Retrying" not in result.stderr
