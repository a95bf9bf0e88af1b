"""`ModelSpec`: the token and family facts decoders read, from a model's tokenizer and
config.json (which must agree) and its family."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from transformers import PreTrainedTokenizerBase

from ..families import D3, Family, ModelLoadError
from ..model import D3Model


@dataclass(frozen=True)
class ModelSpec:
    """Family facts a decoder needs, so no decoder ever names a model or a token id."""

    mask_token_id: int
    stop_token_ids: tuple[int, ...]
    pad_token_id: int
    block_size: int
    logit_shift: bool = False
    chat_template: str = "never"  # which prompts are templated: always | code | never
    prompt_wrappers: tuple[tuple[str, str], ...] = ()  # (lm-eval task, "...{prompt}...")
    commit_lowest_entropy: bool = True  # §3.1 step 9: LLaDA always commits the best (A7)
    strict_entropy_threshold: bool = False  # Dream selects H < γ, LLaDA H ≤ γ (A7)
    eos_token_ids: tuple[int, ...] = ()  # early stop fires on these (empty: every stop id)
    vanilla_by_entropy: bool = False  # vanilla decodes as Dream's own (entropy, its schedule)


def agreed_token_id(where: str, what: str,
                    sources: Iterable[tuple[str, int | None]]) -> int | None:
    """The one id that every source naming a token gives; an error when they disagree."""
    found = {source: value for source, value in sources if value is not None}
    if len(set(found.values())) > 1:
        given = ", ".join(f"{source} says {value}" for source, value in found.items())
        raise ModelLoadError(f"{where}: conflicting {what} token ids ({given})")
    return next(iter(found.values()), None)


def as_ids(value: Any) -> list[int]:
    """config.json writes token ids as an int, a list of ints, or null."""
    if value is None:
        return []
    return [int(item) for item in value] if isinstance(value, (list, tuple)) else [int(value)]


def spec_for(model: D3Model, tokenizer: PreTrainedTokenizerBase, family: Family = D3) -> ModelSpec:
    """Token facts from the tokenizer and config.json (which must agree), plus family facts."""
    config, where = model.config, model.name_or_path
    vocab = tokenizer.get_vocab()
    mask_id = agreed_token_id(where, "mask", [
        ("the tokenizer", tokenizer.mask_token_id),
        ("config.json", config.mask_token_id),
        (f"the vocabulary's {family.mask_token}", vocab.get(family.mask_token or "")),
    ])
    if mask_id is None:
        raise ModelLoadError(f"{where}: the tokenizer has no mask token "
                             "and config.json no mask_token_id")
    if not 0 <= mask_id < config.vocab_size:
        raise ModelLoadError(f"{where}: mask token id {mask_id} is outside the model's "
                             f"vocabulary of {config.vocab_size}")
    eos_ids = as_ids(tokenizer.eos_token_id) + as_ids(config.eos_token_id)
    if not eos_ids:
        raise ModelLoadError(f"{where}: the tokenizer has no EOS token "
                             "and config.json no eos_token_id")
    end_of_turn = [vocab[token] for token in family.end_of_turn_tokens if token in vocab]
    stop_ids = tuple(dict.fromkeys(eos_ids + end_of_turn))
    pad_id = next((value for value in (tokenizer.pad_token_id, config.pad_token_id)
                   if value is not None), eos_ids[0])
    return ModelSpec(
        mask_token_id=mask_id, stop_token_ids=stop_ids, pad_token_id=pad_id,
        eos_token_ids=tuple(dict.fromkeys(eos_ids)),
        block_size=config.block_size, logit_shift=family.logit_shift,
        chat_template=family.chat_template if tokenizer.chat_template is not None else "never",
        prompt_wrappers=family.prompt_wrappers,
        commit_lowest_entropy=family.commit_lowest_entropy,
        strict_entropy_threshold=family.strict_entropy_threshold,
        vanilla_by_entropy=family.vanilla_by_entropy)
