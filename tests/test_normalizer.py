"""CLVP's English normalizer (clvp/normalizer.py) against transformers' and Tortoise's.

Expected values: tests/fixtures/tokenizer_normalizer.json (made by tests/golden/make_tokenizer.py
from transformers 4.46.3's ``EnglishNormalizer`` and from Tortoise's ``english_cleaners`` over
inflect + unidecode), and the facts of docs/model.md §5.3-5.4.
"""
import json

import pytest
from hypothesis import given

from clvp.normalizer import EnglishNormalizer
from conftest import FIXTURES
from strategies import clvp_texts

NORMALIZER = json.loads((FIXTURES / "tokenizer_normalizer.json").read_text(encoding="utf-8"))
HF = EnglishNormalizer()
TORTOISE = EnglishNormalizer("tortoise")


def test_fixture_records_its_oracles():
    assert NORMALIZER["oracle"]["transformers"] == "4.46.3"
    assert len(NORMALIZER["hf"]) > 400 and len(NORMALIZER["tortoise"]) > 400


def _mismatches(normalizer, pairs):
    return [(text, expected, normalizer(text)) for text, expected in pairs if normalizer(text) != expected]


def test_hf_mode_equals_transformers():
    bad = _mismatches(HF, NORMALIZER["hf"])
    assert not bad, f"{len(bad)} of {len(NORMALIZER['hf'])} differ, e.g. (text, transformers, ours): {bad[:3]}"


def test_tortoise_mode_equals_tortoise_cleaners():
    bad = _mismatches(TORTOISE, NORMALIZER["tortoise"])
    assert not bad, f"{len(bad)} of {len(NORMALIZER['tortoise'])} differ, e.g. (text, Tortoise, ours): {bad[:3]}"


@pytest.mark.parametrize(
    "text, expected",
    [
        # docs/model.md §5.3: transformers' quirks, kept in the default mode
        ("café", "caf"),
        ("1st 2nd 21st", "onest twond twenty-onest"),
        ("1995", "one thousand, nine hundred ninety-five"),
        ("12345", "twelve thousand, three hundred forty-five"),
        ("2000 2005 1900", "two thousand two thousand five nineteen hundred"),
        ("£5", "five"),  # "£" is dropped before its rule can fire
        ("Mr. Smith", "mister smith"),
        ("a \t\n b", "a b"),
    ],
)
def test_hf_mode_facts(text, expected):
    assert HF(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        # docs/model.md §5.4: what the model was trained with
        ("21st", "twenty-first"),
        ("1995", "nineteen ninety-five"),
        ("café", "cafe"),
        ("£5", "five pounds"),
        ("it\u2019s", "it's"),
    ],
)
def test_tortoise_mode_facts(text, expected):
    assert TORTOISE(text) == expected


def test_adjacent_abbreviations_follow_rule_order():
    # One abbreviation right after another: transformers' rule-by-rule order decides ("co." after
    # "mister" has no word boundary any more). The fixture holds the oracle's answer for this case.
    pairs = dict(NORMALIZER["hf"])
    assert "MR. DR. mr.co. st.mr." in pairs
    assert HF("MR. DR. mr.co. st.mr.") == pairs["MR. DR. mr.co. st.mr."]
    assert HF("mr.co.") == "misterco."


def test_dollar_with_comma_does_not_raise():
    # transformers raises ValueError on int(",5"); we read the digits.
    assert HF("$,5") == "five dollars"


def test_bad_input():
    with pytest.raises(TypeError, match="takes a str"):
        HF(5)
    with pytest.raises(ValueError, match="text_normalization must be one of"):
        EnglishNormalizer("unidecode")


@given(text=clvp_texts())
def test_output_is_lowercase_ascii_without_digits(text):
    for normalizer in (HF, TORTOISE):
        out = normalizer(text)
        assert out.isascii(), out
        assert out == out.lower(), out
        assert not any(c.isdigit() for c in out), out
        assert '"' not in out
        assert all(c == " " for c in out if c.isspace()), repr(out)
