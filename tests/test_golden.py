"""The one-driver decoder, scoring in float64, reproduces the decoders it replaced token for
token and forward for forward (tests/golden/decode_golden.json.gz, written by
tests/golden/make_golden.py before the rewrite). CI checks the first GOLDEN_PROMPTS held-out
prompts of every setting; D3_GOLDEN_PROMPTS=1000 checks all of them."""

from __future__ import annotations

import gzip
import json
import os
from functools import cache
from pathlib import Path

import pytest
from golden.make_golden import SETTINGS, decode_setting, held_out_prompts

GOLDEN = Path(__file__).parent / "golden" / "decode_golden.json.gz"
GOLDEN_PROMPTS = int(os.environ.get("D3_GOLDEN_PROMPTS", "24"))


@cache
def golden() -> dict:
    with gzip.open(GOLDEN, "rt", encoding="utf-8") as handle:
        return json.load(handle)


@cache
def prompts() -> list[list[int]]:
    return held_out_prompts(GOLDEN_PROMPTS)


@pytest.mark.parametrize(("name", "model", "rules", "method", "changes"), SETTINGS,
                         ids=[setting[0] for setting in SETTINGS])
def test_float64_scoring_reproduces_the_previous_decoders(name, model, rules, method, changes):
    expected = golden()[name][:GOLDEN_PROMPTS]
    decoded = decode_setting(model, rules, method, changes, prompts())
    differing = [index for index, (mine, theirs) in enumerate(zip(decoded, expected, strict=True))
                 if mine != theirs]
    assert not differing, f"{len(differing)} rows differ, first {golden()['ids'][differing[0]]}"
