"""d3 as an lm-evaluation-harness model (`--model d3`).

`generate_until` decodes the harness's requests with d3's driver in real batches (slots
refilled as rows finish), each request's `max_gen_toks` rounded up to whole blocks and its
`until` strings cutting the text. A context the harness formatted (`--apply_chat_template`)
is tokenized as it is; a raw one goes through the model family's reference rule, as
`d3 decode` feeds it (`checkpoints.encode_prompt`: e.g. LLaDA templates code tasks only).
Code answers are read as the reference harness reads them (`code_response`).

Every d3 decoding option is a `--model_args` key; `records=PATH` appends d3's
own per-sample records (forwards, TPF, seconds, environment; `id` is the harness's doc id)
that `d3 aup --lm-eval-samples` joins to the harness's `--log_samples` output.

lm-eval 0.4 finds models only among those imported, so run it as `d3-lm-eval` (the
harness's own command line, with d3's model and the `d3_arith` task registered).
"""

from __future__ import annotations

import difflib
import logging
import math
import sys
from pathlib import Path
from typing import Any

import torch
from lm_eval.api.instance import Instance
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

from .checkpoints import DEFAULT_MODEL, encode_prompt, load_model
from .decode import METHOD_OPTIONS, DecodeOptions, noise_key, resolve_options
from .runner import SampleResult, decode_answers, run_record, write_results
from .tasks.code_eval import use_sandbox_for_code_eval
from .tasks.execution import isolation
from .tasks.harness_task import TASKS_FOLDER, code_response, cut_at, is_code_task

log = logging.getLogger(__name__)
RUN_SETTINGS = ("block_size", "temperature", "seed", "score_dtype")


class HarnessError(ValueError):
    """A request or argument the adapter cannot serve; the message says which."""


@register_model("d3")
class D3LM(LM):
    """d3's decoders behind lm-eval's `LM` interface."""

    def __init__(self, pretrained: str = DEFAULT_MODEL, method: str = "multiblock",
                 batch_size: int | str = 64, device: str | None = None, dtype: str = "auto",
                 records: str | None = None, sync_every: int = 1, compile: bool = False,
                 max_batch_size: int | None = None, **options: Any) -> None:
        super().__init__()
        check_keys(method, options)  # before loading: a typo costs no 8 B load
        if str(batch_size).startswith("auto"):
            raise HarnessError("batch_size auto is not supported by d3: give a number")
        if device and device.startswith("cuda") and not torch.cuda.is_available():
            log.warning("no CUDA device here (lm-eval's default device is cuda): "
                        "d3 decodes on the CPU")
            device = "cpu"
        self.loaded = load_model(str(pretrained), device or "auto", dtype)
        self.method, self.batch_size = method, int(batch_size)
        self.sync_every, self.compile = int(sync_every), bool(compile)
        self.records = Path(records) if records else None
        shared = {name: options.pop(name) for name in RUN_SETTINGS if name in options}
        self.shared = {"block_size": self.loaded.spec.block_size, **shared}
        self.given = options
        resolve_options(method, self.loaded.decoding, options,  # fail on bad args at once
                        gen_length=self.shared["block_size"], **self.shared)

    @property
    def tokenizer_name(self) -> str:
        return self.loaded.name.replace("/", "__")

    def apply_chat_template(self, chat_history: list[dict[str, str]],
                            add_generation_prompt: bool = True) -> str:
        return self.loaded.tokenizer.apply_chat_template(
            chat_history, tokenize=False, add_generation_prompt=add_generation_prompt)

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        return self.loaded.tokenizer.chat_template or ""

    def options_for(self, max_gen_toks: int) -> DecodeOptions:
        """The run's options for answers of up to `max_gen_toks` tokens (whole blocks)."""
        block = self.shared["block_size"]
        return resolve_options(self.method, self.loaded.decoding, self.given,
                               gen_length=block * math.ceil(max_gen_toks / block),
                               **self.shared)

    def generate_until(self, requests: list[Instance], disable_tqdm: bool = False) -> list[str]:
        by_length: dict[int, list[int]] = {}
        for index, request in enumerate(requests):
            _, settings = request.args
            by_length.setdefault(int(settings.get("max_gen_toks", 256)), []).append(index)
        texts: list[str] = [""] * len(requests)
        for max_gen_toks, indices in by_length.items():
            self.decode_group([requests[index] for index in indices], max_gen_toks, texts,
                              indices)
        return texts

    def decode_group(self, requests: list[Instance], max_gen_toks: int, texts: list[str],
                     indices: list[int]) -> None:
        """Decode requests sharing one answer length; fill `texts` at `indices`."""
        loaded, options = self.loaded, self.options_for(max_gen_toks)
        ids = [sample_id(request) for request in requests]
        kinds = ["code" if request.task_name and is_code_task(request.task_name) else "text"
                 for request in requests]
        prompts = [encode_prompt(loaded, request.args[0], kind=kind, task=request.task_name or "")
                   for request, kind in zip(requests, kinds, strict=True)]
        keys = [noise_key(options.seed, f"{request.task_name}/{identifier}")
                for request, identifier in zip(requests, ids, strict=True)]
        run = run_record(loaded, "", self.method, options, self.batch_size, self.compile)
        if "code" in kinds:
            run["env"]["sandbox"] = isolation().description
        results = []
        for done, answer, text in decode_answers(loaded, prompts, keys, self.method, options,
                                                 self.batch_size, self.sync_every,
                                                 self.compile, max_gen_toks):
            request = requests[done.index]
            until = list(request.args[1].get("until") or [])
            texts[indices[done.index]] = (
                code_response(request.args[0], text, request.doc, until)
                if kinds[done.index] == "code" else cut_at(text, until))
            results.append(SampleResult(
                request.task_name or "", self.method, loaded.name, ids[done.index],
                run["config"], len(answer), done.forwards, len(answer) / done.forwards,
                done.seconds, None, texts[indices[done.index]], run["env"]))
        if self.records:
            for _ in write_results(results, self.records):
                pass

    def loglikelihood(self, requests: list[Instance], disable_tqdm: bool = False):
        raise HarnessError("d3 generates only: loglikelihood tasks (multiple choice) are not "
                           "supported; use generate_until tasks such as gsm8k_cot_zeroshot")

    def loglikelihood_rolling(self, requests: list[Instance], disable_tqdm: bool = False):
        raise HarnessError("d3 generates only: loglikelihood_rolling (perplexity) is not "
                           "supported")


def check_keys(method: str, options: dict[str, Any]) -> None:
    """Every `model_args` key beyond the adapter's own is an option of `method` or a run
    setting; a misspelled one is named with the closest known key."""
    if method not in METHOD_OPTIONS:
        raise HarnessError(f"unknown method {method!r}; known: {', '.join(METHOD_OPTIONS)}")
    known = [*METHOD_OPTIONS[method], *RUN_SETTINGS]
    for key in options:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise HarnessError(f"model_args key {key!r} is not an option of {method}{hint}")


def sample_id(request: Instance) -> str:
    """The record id of a request: the harness's doc id."""
    return str(request.doc_id)


def main() -> None:
    """`d3-lm-eval ...`: lm-eval's command line with d3's model and tasks registered."""
    from lm_eval.__main__ import cli_evaluate

    use_sandbox_for_code_eval()  # lm-eval's code tasks score in d3's sandbox, offline too
    arguments = sys.argv[1:]
    if "--include_path" not in arguments and arguments[:1] not in (["ls"], ["list"]):
        arguments += ["--include_path", str(TASKS_FOLDER)]
    sys.argv = [sys.argv[0], *arguments]
    try:
        cli_evaluate()
    except (ValueError, OSError, ConnectionError) as error:  # bad model_args, model, data
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        print(f"error: {first}", file=sys.stderr)
        sys.exit(2)
