"""Word-level tokenizers for d3's embedded tasks, built with `tokenizers`."""

from __future__ import annotations

from collections.abc import Sequence

from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import WhitespaceSplit
from transformers import PreTrainedTokenizerFast

PAD, UNK, MASK, EOS = "[PAD]", "[UNK]", "[MASK]", "[EOS]"
SPECIAL_TOKENS = (PAD, UNK, MASK, EOS)


def build_word_tokenizer(words: Sequence[str]) -> PreTrainedTokenizerFast:
    """A whitespace word-level tokenizer over `words` with pad, unk, mask and EOS tokens."""
    vocab = {token: index for index, token in enumerate([*SPECIAL_TOKENS, *words])}
    if len(vocab) != len(SPECIAL_TOKENS) + len(words):
        raise ValueError("duplicate words in the vocabulary")
    backend = Tokenizer(WordLevel(vocab, unk_token=UNK))
    backend.pre_tokenizer = WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD,
        unk_token=UNK,
        mask_token=MASK,
        eos_token=EOS,
        padding_side="left",
    )
