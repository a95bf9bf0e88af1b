"""lm-evaluation-harness tasks as d3 tasks: the harness's prompts, filters and metrics.

`d3 decode --task gsm8k_cot_zeroshot` (or any generate-until task lm-eval knows, groups such
as ``minerva_math`` included) builds the task with lm-eval's `TaskManager`, renders each
document's context as the harness does (few-shot draws seeded as the harness seeds them),
and scores an answer with the task's first filter and first metric: `correct` is whether
that metric is 1 (exact match, pass@1). Code tasks run their tests in d3's sandbox
(`code_eval`), after the answer is cleaned as the reference harness cleans code answers
(`execution.code_answer`).

A local ``--data-file`` replaces the task's hub dataset: one file for the test split; few-shot
examples are then drawn from its other rows, unless the task names its own.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

from .base import Example
from .code_eval import use_sandbox_for_code_eval
from .data import TaskDataError, builder_for, cache_reason, first_line, hub_unreachable
from .execution import code_answer, fenced_code

TASKS_FOLDER = Path(__file__).parents[1] / "lm_eval_tasks"  # d3's own tasks (d3_arith)
FEWSHOT_SEED = 1234  # lm-eval's default few-shot seed
GEN_LENGTH = 256  # every reference run decodes 256 answer tokens, whatever the task's limit


@functools.cache
def task_manager() -> Any:
    """lm-eval's task index (d3's tasks included); built once per process (~10 s)."""
    import datasets
    from lm_eval.tasks import TaskManager

    use_sandbox_for_code_eval()  # before any code task's module is imported
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)  # its errors reach us as one
    return TaskManager(include_path=str(TASKS_FOLDER))


def known_tasks() -> list[str]:
    """Every task and group name lm-eval knows here."""
    manager = task_manager()
    return sorted({*manager.all_tasks, *manager.all_groups})


@functools.cache
def task_yaml(name: str) -> Path | None:
    """The YAML file that defines task `name` in d3's or lm-eval's task folders, found by its
    `task: NAME` line: reading the files as text takes under a second, where the task
    index parses every one of them."""
    import lm_eval

    line = re.compile(rf"^task:\s*['\"]?{re.escape(name)}['\"]?\s*$", re.MULTILINE)
    for folder in (TASKS_FOLDER, Path(lm_eval.__file__).parent / "tasks"):
        for path in sorted(folder.rglob("*.yaml")):
            if line.search(path.read_text(encoding="utf-8", errors="replace")):
                return path
    return None


@functools.cache
def is_code_task(name: str) -> bool:
    """Whether lm-eval marks the task as running generated code (HumanEval, MBPP)."""
    from lm_eval.tasks._yaml_loader import load_yaml

    path = task_yaml(name)
    return path is not None and bool(load_yaml(str(path), resolve_func=False).get("unsafe_code"))


def local_data(data_file: str, config: dict[str, Any]) -> dict[str, Any]:
    """Config overrides that read the test split, and the few-shot examples, from a file."""
    path = Path(data_file).expanduser()
    if not path.is_file():
        raise TaskDataError(f"{config['task']}: data file {path} does not exist")
    split = config.get("test_split") or config.get("validation_split") or "test"
    overrides = {"dataset_path": builder_for(path), "dataset_name": None,
                 "dataset_kwargs": {"data_files": {split: str(path)}}, "test_split": split,
                 "validation_split": None, "training_split": None, "fewshot_split": None}
    if not (config.get("fewshot_config") or {}).get("samples"):  # shots the task names
        overrides["fewshot_split"] = split
    return overrides


def innermost(error: BaseException) -> BaseException:
    """The error at the bottom of a chain of raises (e.g. the JSON parser's under datasets')."""
    while error.__cause__ is not None or error.__context__ is not None:
        error = error.__cause__ or error.__context__
    return error


def load_tasks(name: str, data_file: str | None) -> dict[str, Any]:
    """lm-eval's task objects for `name` (a group gives each of its tasks), by task name."""
    from lm_eval.tasks._yaml_loader import load_yaml

    manager = task_manager()
    entry = manager.task_index.get(name)
    if entry is None:
        raise KeyError(name)
    if data_file:
        if entry.yaml_path is None or entry.kind.name != "TASK":
            raise TaskDataError(f"{name} is a group of tasks: --data-file needs one of its "
                                "tasks")
    else:
        unreachable = hub_unreachable()
        if unreachable:
            raise TaskDataError(f"{name}: cannot load its dataset: {unreachable}; pass a local "
                                "copy with --data-file (or set HF_HUB_OFFLINE=1 to use a "
                                "cached copy)")
    try:
        spec: str | dict[str, Any] = name
        if data_file:
            config = load_yaml(str(entry.yaml_path), resolve_func=True)
            spec = {**config, **local_data(data_file, config)}
        tasks = manager.load(spec)["tasks"]
    except TaskDataError:
        raise
    except Exception as error:  # datasets and lm-eval raise many kinds; report them alike
        cause = innermost(error)
        why = first_line(error) if cause is error else f"{first_line(error)}: {cache_reason(cause)}"
        source = f" from {data_file}" if data_file else ""
        raise TaskDataError(f"{name}: cannot load the task{source} ({why})") from error
    for task in tasks.values():
        if task.OUTPUT_TYPE != "generate_until":
            raise TaskDataError(f"{name}: {task.task_name} is a {task.OUTPUT_TYPE} task; d3 "
                                "decodes generate_until tasks only")
    return tasks


def captured_messages(messages: list[dict[str, str]], **_: Any) -> str:
    """A `chat_template` for lm-eval that returns the chat messages it was given."""
    return json.dumps(messages)


def cut_at(text: str, until: list[str]) -> str:
    """`text` up to the first occurrence of any stop string (lm-eval's `until`)."""
    ends = [text.find(stop) for stop in until if stop and stop in text]
    return text[:min(ends)] if ends else text


def code_response(context: str, output: str, doc: dict[str, Any], until: list[str]) -> str:
    """A code task's answer as the reference harness scores it. An answer that continues a
    fence the context opened (an assistant prefix such as "```python\n<stub>") is read with
    that fence; a fenced answer is kept whole (its helper functions too), anything else is
    cut at the stop strings; then it is cleaned (`code_answer`)."""
    parts = context.split("```")
    answer = ("```" + parts[-1] if len(parts) % 2 == 0 else "") + output
    return code_answer(answer if fenced_code(answer) else cut_at(answer, until), doc)


class HarnessTask:
    """An lm-eval generate-until task (or group) behind d3's `Task` interface."""

    gen_length = GEN_LENGTH

    def __init__(self, name: str, data_file: str | None = None) -> None:
        self.name = name
        self.tasks = load_tasks(name, data_file)
        self._examples: list[Example] | None = None

    def eval_examples(self, limit: int | None = None) -> list[Example]:
        """Each task's documents in the harness's order (a group's tasks one after the
        other); ids are `task-doc_id`."""
        if self._examples is None:
            try:
                self._examples = [example for leaf, task in self.tasks.items()
                                  for example in self.task_examples(leaf, task)]
            except (ValueError, KeyError) as error:  # e.g. more shots asked than rows
                raise TaskDataError(f"{self.name}: cannot build its prompts "
                                    f"({first_line(error)})") from error
        return self._examples[:limit]

    def task_examples(self, leaf: str, task: Any) -> list[Example]:
        """One task's examples: the context as the harness gives it without a chat template,
        and the same few-shot draw as the chat messages it gives with one."""
        docs, shots = list(task.eval_docs), task.config.num_fewshot or 0
        prefixes = [task.doc_to_prefix(doc) for doc in docs]
        task.set_fewshot_seed(FEWSHOT_SEED)
        raw = [task.fewshot_context(doc, shots, gen_prefix=prefix)
               for doc, prefix in zip(docs, prefixes, strict=True)]
        task.set_fewshot_seed(FEWSHOT_SEED)  # the same draws again, in the same order
        chats = [task.fewshot_context(doc, shots, apply_chat_template=True,
                                      chat_template=captured_messages, gen_prefix=prefix)
                 for doc, prefix in zip(docs, prefixes, strict=True)]
        kind = "code" if task.config.unsafe_code else "text"
        return [Example(f"{leaf}-{doc_id}", raw[doc_id], str(task.doc_to_target(doc)),
                        {"task": leaf, "doc_id": doc_id, "doc": doc, "kind": kind,
                         "messages": json.loads(chats[doc_id])})
                for doc_id, doc in enumerate(docs)]

    def score(self, example: Example, output: str) -> bool:
        """The task's first filter and first metric on the answer cut at its stop strings;
        right when the metric is 1 (a code answer is read by `code_response`)."""
        from lm_eval.api.instance import Instance

        metadata = example.metadata
        task, doc = self.tasks[metadata["task"]], metadata["doc"]
        settings = dict(task.config.generation_kwargs or {})
        until = list(settings.get("until") or [])
        if metadata["kind"] == "code":
            text = code_response(example.prompt, output, doc, until)
        else:
            text = cut_at(output, until)
        request = Instance("generate_until", doc, (example.prompt, settings), 0,
                           (task.task_name, example.metadata["doc_id"], 1))
        request.resps = [text]
        for ensemble in task._filters:
            ensemble.apply([request])
        metrics = task.process_results(doc, [request.filtered_resps[task._filters[0].name]])
        value = next(iter(metrics.values()))
        if isinstance(value, dict):  # code_eval reports {"pass@1": ...}
            value = next(iter(value.values()))
        return float(value) == 1.0
