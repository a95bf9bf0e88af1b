"""The embedded arith task: determinism, disjoint splits, valid worked answers, strict scoring."""

from __future__ import annotations

import random
from itertools import islice

import pytest

from d3cli.tasks.arith import ArithTask, Problem, extract_answer


def test_eval_set_is_deterministic_and_large(arith):
    again = ArithTask()
    assert arith.eval_examples() == again.eval_examples()
    assert len({e.prompt for e in arith.eval_examples()}) == len(arith.eval_examples()) == 2000


def test_validation_split_is_disjoint_from_test_and_training(arith):
    validation = ArithTask(split="validation")
    assert validation.name == "arith-validation" and arith.name == "arith"
    examples = validation.eval_examples()
    assert len(examples) == 1000 and examples[0].id == "arith-val-0"
    test_prompts = {e.prompt for e in arith.eval_examples()}
    validation_prompts = {e.prompt for e in examples}
    assert len(validation_prompts) == 1000 and not test_prompts & validation_prompts
    training = {e.prompt for e in arith.train_examples(8000)}
    assert not training & (test_prompts | validation_prompts)
    with pytest.raises(ValueError, match="no split 'dev'"):
        ArithTask(split="dev")


def test_training_pairs_are_deterministic_per_seed(arith):
    first = list(islice(arith.training_pairs(random.Random(5)), 50))
    assert first == list(islice(arith.training_pairs(random.Random(5)), 50))
    assert first != list(islice(arith.training_pairs(random.Random(6)), 50))


def test_training_never_sees_a_held_out_prompt():
    task = ArithTask()
    held_out = {e.prompt for split in ("test", "validation")
                for e in ArithTask(split=split).eval_examples()}
    # Short chains collide often: 4-step prompts are only 10 * 18**4 = 1.05 M.
    rng = random.Random(0)
    drawn = [prompt for prompt, _ in islice(task.training_pairs(rng), 20000)]
    assert not held_out & set(drawn)


def test_worked_answers_are_consistent_in_every_form(arith):
    seen_forms = set()
    for prompt, answer in islice(arith.training_pairs(random.Random(1)), 300):
        tokens = prompt.split(" ?")[0].split()
        assert len(prompt.split()) == 18
        value = int(tokens[0])
        steps = answer.split(" ; ")
        for (operator, operand), step in zip(zip(tokens[1::2], tokens[2::2], strict=True), steps,
                                             strict=False):
            words = step.split()
            expected = (value + int(operand) if operator == "+" else value - int(operand)) % 10
            assert str(expected) in (words[0], words[4])
            seen_forms.add(tuple("n" if w.isdigit() else w for w in words))
            value = expected
        assert extract_answer(answer) == str(value)
    assert len(seen_forms) >= 4  # a + b = c, c = a + b, a - b = c, c = a - b (and b + a = c)


def test_scorer_accepts_right_answers_and_rejects_near_misses(arith):
    example = arith.eval_examples(1)[0]
    problem_answer = example.answer
    wrong = str((int(problem_answer) + 1) % 10)
    assert arith.score(example, f"1 + 1 = 2 ; #### {problem_answer}")
    assert arith.score(example, f"#### 3 ; #### {problem_answer}")  # the last mark counts
    for near_miss in [f"#### {wrong}", f"#### {problem_answer} {problem_answer}",
                      f"{problem_answer}", "####", f"#### {problem_answer} ;", ""]:
        assert not arith.score(example, near_miss), near_miss


def test_problem_values_follow_modular_arithmetic():
    problem = Problem(3, (("+", 4), ("-", 9), ("+", 2)))
    assert problem.values() == [7, 8, 0]
    assert problem.prompt() == "3 + 4 - 9 + 2 ? " + " ".join(["."] * 10)
    assert problem.solution() == "3 + 4 = 7 ; 7 - 9 = 8 ; 8 + 2 = 0 ; #### 0"


def test_tokenizer_round_trip(teacher, arith):
    from transformers import AutoTokenizer

    from d3cli.checkpoints import resolve_model_path

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path("arith-teacher"))
    assert tokenizer.mask_token == "[MASK]" and tokenizer.eos_token == "[EOS]"
    assert tokenizer.pad_token == "[PAD]"
    for prompt, answer in islice(arith.training_pairs(random.Random(2)), 50):
        for text in (prompt, answer):
            ids = tokenizer(text, add_special_tokens=False).input_ids
            assert tokenizer.unk_token_id not in ids
            assert tokenizer.decode(ids) == text
    assert teacher.spec.mask_token_id == tokenizer.mask_token_id
    assert teacher.spec.stop_token_ids == (tokenizer.eos_token_id,)
