"""Prompt token ids as each model family's reference harness feeds them (chat templates)."""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase

from .load import LoadedModel
from .spec import ModelSpec


def template_markers(tokenizer: PreTrainedTokenizerBase) -> list[str]:
    """The special tokens the chat template writes around a user turn (e.g. <|im_start|>)."""
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": "\x00"}],
                                             add_generation_prompt=True, tokenize=False)
    specials = {token.content for token in tokenizer.added_tokens_decoder.values()}
    return [token for token in specials | set(tokenizer.all_special_tokens)
            if token and token in rendered]


def uses_template(spec: ModelSpec, kind: str | None) -> bool:
    """Whether a prompt of a task of `kind` ("code", "text", or None for a free prompt: a
    prompts file, a trajectory dataset) goes through the chat template."""
    return spec.chat_template == "always" or (spec.chat_template == "code" and kind != "text")


def encode_prompt(loaded: LoadedModel, prompt: str, messages: list[dict[str, str]] | None = None,
                  kind: str | None = None, task: str = "") -> list[int]:
    """Prompt token ids as the model family's reference harness feeds them.

    `prompt` is the raw text and `messages` the same prompt as chat turns (default: one
    user turn); a closing assistant turn is a prefix the answer continues. Templated (see
    `uses_template`), the user turn first gets the family's wrapper for `task`, if any. A
    prompt that already carries the template's markers (a templated dataset question) is
    tokenized as it is, so the template is applied at most once (A1).
    """
    tokenizer = loaded.tokenizer
    if not uses_template(loaded.spec, kind) or any(
            marker in prompt for marker in template_markers(tokenizer)):
        return tokenizer(prompt, add_special_tokens=False).input_ids
    turns = [dict(turn) for turn in messages or [{"role": "user", "content": prompt}]]
    wrapper = dict(loaded.spec.prompt_wrappers).get(task)
    user = next(turn for turn in reversed(turns) if turn["role"] == "user")
    if wrapper:
        user["content"] = wrapper.format(prompt=user["content"].strip())
    prefix = turns[-1]["role"] == "assistant"
    return list(tokenizer.apply_chat_template(
        turns, add_generation_prompt=not prefix, continue_final_message=prefix, tokenize=True,
        return_dict=False))
