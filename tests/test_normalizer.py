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


# ---------------------------------------------------------------------------------------------
# bounded work: no quadratic regex retries, no int() of a long digit run
# ---------------------------------------------------------------------------------------------

def test_long_digit_runs_read_by_length():
    # transformers says "number out of range" from 10**18 on (and raises beyond 4300 digits);
    # Tortoise mode reads numbers of 37 or more digits digit by digit. Leading zeros do not count.
    assert HF("1" * 100_000) == "number out of range"
    assert HF("1" * 100_000 + "st") == "number out of rangeth"  # the suffix of ...11, as transformers
    assert HF("1" * 100_000 + "21st") == "number out of rangest"
    assert HF("0" * 100_000 + "7") == "seven"
    assert HF("$" + "9" * 5000) == "number out of range dollars"
    assert HF("1," * 5000 + "1") == "number out of range"
    assert TORTOISE("12" * 50_000) == " ".join(["one two"] * 50_000)
    assert TORTOISE("0" * 5000 + "21st") == "twenty-first"


HANG_GUARD = r"""
import sys
from clvp.normalizer import EnglishNormalizer
size = 1 << 20
for unit in ("1", "1,", "1.", "1st ", "$1.", "12,3", "mr.", "a1"):
    text = (unit * (size // len(unit) + 1))[:size]
    for mode in ("hf", "tortoise"):
        out = EnglishNormalizer(mode)(text)
        assert len(out) <= 8 * size, (unit, mode, len(out))
print("ok")
"""


def test_one_megabyte_inputs_finish():
    """A hang guard, not a speed test: 1 MiB of digits, "1," and other number patterns (each took
    minutes to hours when the rules were quadratic; well under a second each now) must finish within
    a generous 60 s in a subprocess."""
    import subprocess
    import sys

    from conftest import ROOT

    proc = subprocess.run([sys.executable, "-c", HANG_GUARD], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


def test_work_is_linear_in_digit_runs(monkeypatch):
    """An operation count, not a time: the number rules see each digit a bounded number of times.
    The regexes are wrapped to count the characters their matches span and the int() conversions'
    digits; doubling a digit run at most doubles both (quadratic rules grew them 4x)."""
    import clvp.normalizer as normalizer

    counts = {"int_digits": 0, "match_chars": 0, "int_longest": 0}

    class CountingPattern:
        def __init__(self, pattern):
            self.pattern = pattern

        def sub(self, repl, text):
            def counted(m):
                counts["match_chars"] += m.end() - m.start()
                return m.expand(repl) if isinstance(repl, str) else repl(m)
            return self.pattern.sub(counted, text)

        def __getattr__(self, name):
            return getattr(self.pattern, name)

    real_int = int

    def counting_int(x, *args):
        if isinstance(x, str):
            counts["int_digits"] += len(x)
            counts["int_longest"] = max(counts["int_longest"], len(x))
        return real_int(x, *args)

    for name in ("_COMMA_NUMBER_RE", "_POUNDS_RE", "_DOLLARS_RE", "_DECIMAL_RE", "_ORDINAL_RE", "_NUMBER_RE"):
        monkeypatch.setattr(normalizer, name, CountingPattern(getattr(normalizer, name)))
    monkeypatch.setattr(normalizer, "int", counting_int, raising=False)

    def cost(text):
        counts.update(int_digits=0, match_chars=0, int_longest=0)
        for mode in ("hf", "tortoise"):
            normalizer.EnglishNormalizer(mode)(text)
        return counts["int_digits"], counts["match_chars"]

    for unit in ("1", "1,", "1.", "1st "):
        small, large = cost(unit * 20_000), cost(unit * 40_000)
        assert large[0] <= 2 * small[0] + 100 and large[1] <= 2 * small[1] + 100, (unit, small, large)
    cost("1" * 40_000)
    assert counts["int_longest"] <= 40  # a long run is read by its length, never through int()
