"""The generation fixture's greedy cases (tests/fixtures/generation_base, recorded from transformers
4.46.3) and the token-exact check against them, shared by the tests of alternative decoder products
(tests/test_quantize.py, tests/test_packing.py)."""
from __future__ import annotations

import json
from typing import Optional

from safetensors.torch import load_file

import clvp.generation as gen

from conftest import FIXTURES

BASE = FIXTURES / "generation_base"


def greedy_cases(min_margin: Optional[float] = None) -> list:
    """(name, case) of every composite greedy case the oracle recorded without error; with
    ``min_margin``, only those whose smallest top-1 / top-2 logit gap over all steps is at least that."""
    meta = json.loads((BASE / "golden.json").read_text())
    return [(name, c) for name, c in meta["cases"].items()
            if c["call"] == "composite" and name.startswith("greedy") and "error" not in c
            and (min_margin is None or (c.get("min_greedy_margin") is not None and c["min_greedy_margin"] >= min_margin))]


def assert_greedy_codes_equal_oracle(model, cases) -> None:
    """``model``'s greedy codes equal the oracle's raw codes on every case, token for token."""
    g = load_file(str(BASE / "golden.safetensors"))
    for name, case in cases:
        ids = g["in." + case["inputs"].get("text_key", "text_ids")][case["inputs"]["text"]]
        feats = g["in.features"][case["inputs"]["audio"]]
        kwargs = {k: v for k, v in case["kwargs"].items() if k != "output_hidden_states"}
        raw = gen.generate_speech_ids(model, input_ids=ids, input_features=feats, **kwargs)
        want = g[f"{name}.raw"]
        n = min(raw.shape[1], want.shape[1])  # pad_to_max_mel_tokens pads the oracle's raw ids
        assert raw[:, :n].tolist() == want[:, :n].tolist(), name
