"""Importing trajectories in the d3LLM reference layout: exact round trip, resume, bad records."""

from __future__ import annotations

import copy
import json

import datasets
import numpy as np
import pytest

from d3cli.trajectories import (
    IMPORTED,
    TrajectoryFolderError,
    load_trajectories,
    read_card,
)
from d3cli.trajectory_import import (
    TrajectoryImportError,
    import_trajectories,
    load_teacher,
    reference_layout,
    unmask_steps,
)

FORMAT = ("prompt_ids", "answer_ids", "unmask_step", "correct", "num_forwards", "block_size",
          "teacher", "text")


@pytest.fixture(scope="module")
def imported_teacher():
    return load_teacher("arith-teacher")


def reference_rows(rollouts, teacher) -> list[dict]:
    return [reference_layout(record, teacher.spec.mask_token_id) for record in rollouts]


def write_parquet(rows: list[dict], path) -> str:
    datasets.Dataset.from_list(rows).to_parquet(str(path))
    return str(path)


def write_jsonl(rows: list[dict], path) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return str(path)


def run_import(source: str, out, teacher, chunk_size: int = 2, **options) -> list:
    return list(import_trajectories(source, out, teacher, teacher.spec.block_size,
                                    chunk_size=chunk_size, gen_length=64, **options))


@pytest.mark.parametrize("write", [write_parquet, write_jsonl])
def test_import_of_the_export_is_the_rollout(rollouts, teacher, imported_teacher, tmp_path,
                                             write):
    source = write(reference_rows(rollouts, teacher), tmp_path / f"rollout.{write.__name__[6:]}")
    chunks = run_import(source, tmp_path / "out", imported_teacher)
    assert chunks == [((0, 2), True), ((2, 4), True), ((4, 5), True)]
    imported = load_trajectories(tmp_path / "out").to_list()
    assert [record["id"] for record in imported] == [
        f"rollout-{record['id'].rsplit('-', 1)[1]}" for record in rollouts]
    for got, made in zip(imported, rollouts, strict=True):
        assert {name: got[name] for name in FORMAT} == {name: made[name] for name in FORMAT}
        assert got["attempt"] is None and got["temperature"] is None  # not in that layout
    card = read_card(tmp_path / "out")
    assert card["method"] == IMPORTED and card["mask_token_id"] == teacher.spec.mask_token_id


def test_a_rerun_converts_only_the_missing_chunks(rollouts, teacher, imported_teacher,
                                                  tmp_path):
    source = write_parquet(reference_rows(rollouts, teacher), tmp_path / "rollout.parquet")
    out = tmp_path / "out"
    run_import(source, out, imported_teacher)
    whole = load_trajectories(out).to_list()
    (out / "part-0000002-0000004.parquet").unlink()
    assert run_import(source, out, imported_teacher) == [
        ((0, 2), False), ((2, 4), True), ((4, 5), False)]
    assert load_trajectories(out).to_list() == whole
    with pytest.raises(TrajectoryFolderError, match="chunk_size = 2, not 3"):
        run_import(source, out, imported_teacher, chunk_size=3)


MASK = 2  # the arith teacher's


def decoded_position(row, state: int) -> int:
    """The first canvas position (prompt included) decoded in `state`."""
    prompt = len(row["prompt_ids"])
    return next(p for p in range(prompt, len(row["final_output"]))
                if row["trajectory"][state][p] != MASK)


def remask(row):
    row["trajectory"][5][decoded_position(row, 4)] = MASK


def shorten(row):
    row["trajectory"][7] = row["trajectory"][7][:-1]


def two_at_once(row):
    row["trajectory"][2] = list(row["trajectory"][3])


def never_decoded(row):
    row["trajectory"] = row["trajectory"][:-1]
    row["final_output"] = row["trajectory"][-1]


def other_final(row):
    row["final_output"] = row["final_output"][:-1]


def rewrite(row):
    position = decoded_position(row, 10)
    row["trajectory"][10][position] = 4 if row["final_output"][position] != 4 else 5


def changed_prompt(row):
    for state in row["trajectory"][3:]:
        state[0] = 5 if state[0] != 5 else 6


def other_prompt(row):
    row["prompt_ids"] = row["prompt_ids"][1:]


def no_states(row):
    row["trajectory"] = None


@pytest.mark.parametrize("corrupt, message", [
    (remask, r"state 5 re-masks answer position \d+"),
    (shorten, "state 7 has {L1} tokens, state 0 {L}"),
    (two_at_once, "state 2 decodes 2 tokens, not one per step"),
    (never_decoded, r"answer position \d+ is still masked in the last state"),
    (other_final, r"final_output \({L1} tokens\) is not the last state \({L} tokens\)"),
    (rewrite, "state 10 holds another token at answer position 0 than the final state"),
    (changed_prompt, "state 3 does not start with prompt_ids"),
    (other_prompt, "its states hold {L} tokens, not the {P1}-token prompt"),
    (no_states, "its trajectory has no state"),
])
def test_a_bad_record_is_refused_by_name(rollouts, teacher, imported_teacher, tmp_path,
                                         corrupt, message):
    assert teacher.spec.mask_token_id == MASK
    rows = reference_rows(rollouts, teacher)
    bad = copy.deepcopy(rows[3])
    corrupt(bad)
    prompt = len(rows[3]["prompt_ids"])
    message = message.format(L=prompt + 64, L1=prompt + 63, P1=prompt - 1)
    source = write_parquet(rows[:3] + [bad] + rows[4:], tmp_path / "bad.parquet")
    with pytest.raises(TrajectoryImportError, match=rf"bad.parquet: record 3 \(idx "
                                                    rf"{rows[3]['idx']}\): {message}"):
        run_import(source, tmp_path / "out", imported_teacher)
    assert sorted(path.name for path in (tmp_path / "out").glob("*.parquet")) == [
        "part-0000000-0000002.parquet"]  # the chunks before it are kept for the rerun


def test_several_tokens_per_step_are_allowed_when_asked(rollouts, teacher, imported_teacher,
                                                        tmp_path):
    rows = reference_rows(rollouts, teacher)
    for row in rows:
        del row["trajectory"][2]  # state 2 now decodes two tokens
    source = write_parquet(rows, tmp_path / "parallel.parquet")
    run_import(source, tmp_path / "out", imported_teacher, one_per_step=False)
    for got, made in zip(load_trajectories(tmp_path / "out").to_list(), rollouts, strict=True):
        assert got["unmask_step"] == [step - (step > 2) for step in made["unmask_step"]]
        assert got["num_forwards"] == 63


def test_unmask_step_is_the_first_state_without_the_mask():
    states = np.array([[9, 0, 9, 9], [9, 0, 5, 9], [7, 0, 5, 6]])  # mask 9; two at state 2
    assert unmask_steps(states, 9, one_per_step=False).tolist() == [2, 0, 1, 2]
    with pytest.raises(ValueError, match="state 2 decodes 2 tokens"):
        unmask_steps(states, 9, one_per_step=True)
    with pytest.raises(ValueError, match="no mask token"):
        unmask_steps(states, 8, one_per_step=True)


def test_a_source_without_the_reference_fields_is_refused(imported_teacher, tmp_path):
    source = write_jsonl([{"idx": 0, "prompt_ids": [1], "is_correct": True}],
                         tmp_path / "plain.jsonl")
    with pytest.raises(TrajectoryImportError, match="lacks the field 'trajectory'"):
        import_trajectories(source, tmp_path / "out", imported_teacher, 16)  # before reading
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("family", ["llada", "dream"])
def test_the_teacher_facts_are_those_load_model_gives(family, tmp_path):
    import family_folders

    from d3cli.checkpoints import load_model

    getattr(family_folders, f"write_{family}")(tmp_path / family)
    loaded = load_model(str(tmp_path / family), device="cpu")
    facts = load_teacher(str(tmp_path / family))
    assert facts.spec == loaded.spec
    assert facts.vocab_size == loaded.model.config.vocab_size
