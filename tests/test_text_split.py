"""clvp/text_split.py: chunks re-join to the text, fit the limits, and end only between words."""
import re

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from clvp.data import path as data_path
from clvp.text_split import MAX_TOKENS, chunk_statistics, split_text
from clvp.tokenization import ClvpTokenizer
from strategies import long_texts, split_limits

TOK = ClvpTokenizer()
NO_PUNCTUATION = " ".join(["word", "another", "thing", "longer", "and", "so", "on", "x"] * 200)[:5000].rsplit(" ", 1)[0]
NUMBERS = " ".join(f"It cost $1,000.50 or 3.14 or 1,000,000 on the {i}th of May 1995, and then" for i in range(1, 30))
QUOTES = " ".join('He said, "Go home now. It is late, and the wolf is out. Run!" Then she ran.' for _ in range(12))
LONG_WORDS = " ".join(["pneumonoultramicroscopicsilicovolcanoconiosis" * 3, "and"] * 12)
HUGE_WORD = "a" * 700 + " tail"


def tokens(text: str) -> int:
    return len(TOK(text)["input_ids"])


def fits_alone(word: str, max_tokens: int, max_chars: int) -> bool:
    return len(word) <= max_chars and tokens(word) <= max_tokens


def check(text, limits):
    max_tokens, target_chars, max_chars = limits
    chunks = split_text(text, TOK, max_tokens=max_tokens, target_chars=target_chars, max_chars=max_chars)
    normalised = " ".join(text.split())
    for c in chunks:
        assert c and c == c.strip() and "  " not in c
        assert len(c) <= max_chars, (len(c), c)
        assert tokens(c) <= max_tokens, (tokens(c), c)
    if all(fits_alone(w, max_tokens, max_chars) for w in normalised.split()):
        # chunk boundaries are spaces of the normalised text: no chunk starts or ends inside a word
        assert " ".join(chunks) == normalised
        words = normalised.split()
        assert sum(len(c.split()) for c in chunks) == len(words)
    else:  # an over-long word is cut: only then may a chunk end inside it
        assert "".join(chunks).replace(" ", "") == normalised.replace(" ", "")
    return chunks


@given(long_texts(), split_limits())
@example(NO_PUNCTUATION, (401, 200, 300))
@example(NUMBERS, (401, 200, 300))
@example(NUMBERS, (60, 40, 90))
@example(QUOTES, (401, 200, 300))
@example(LONG_WORDS, (401, 200, 300))
@example("", (401, 200, 300))
@example(" \n\t ", (401, 200, 300))
def test_chunks_rejoin_and_fit(text, limits):
    check(text, limits)


def test_no_punctuation_paragraph():
    chunks = check(NO_PUNCTUATION, (401, 200, 300))
    assert len(NO_PUNCTUATION) > 4900 and len(chunks) >= 17
    assert all(len(c) >= 100 for c in chunks[:-1])  # a full cut at a space, near the target


def test_numbers_stay_whole():
    chunks = check(NUMBERS, (60, 40, 90))  # tight: "1,000,000" costs many tokens once spelled out
    for c in chunks:
        assert not c.startswith((",", "."))
    for number in ("$1,000.50", "3.14", "1,000,000", "1995,"):
        assert sum(c.count(number) for c in chunks) == NUMBERS.count(number)


def test_sentences_first_and_quotes_kept():
    chunks = check(QUOTES, (401, 200, 300))
    for c in chunks:
        assert c.endswith(("Then she ran.", 'Run!"')), c  # sentence ends outside the quotes, never inside them
        assert c.count('"') % 2 == 0


def test_clause_boundaries_next():
    text = ", ".join(["the wolf ran through the woods"] * 30) + "."
    chunks = check(text, (401, 200, 300))
    assert all(c.endswith(",") for c in chunks[:-1])


def test_abbreviations_are_not_sentence_ends():
    text = "I met Mr. Smith and Dr. J. Watson there. " * 10
    chunks = check(text, (401, 60, 90))
    assert all(c.endswith("there.") for c in chunks)


def test_very_long_word_is_cut_only_when_it_must():
    chunks = split_text(HUGE_WORD, TOK)
    assert all(len(c) <= 300 and tokens(c) <= MAX_TOKENS for c in chunks)
    assert "".join(chunks).replace(" ", "") == HUGE_WORD.replace(" ", "")
    url = "https://example.com/" + "/".join(["segment"] * 60)
    chunks = split_text(url, TOK)
    assert all(c.endswith("/") for c in chunks[:-1])  # at its punctuation


def test_token_limit_counts_the_normaliser():
    text = " ".join(["1234567"] * 200)  # 7 characters, ~20 tokens each once spelled out
    chunks = check(text, (MAX_TOKENS, 200, 300))
    assert max(tokens(c) for c in chunks) <= MAX_TOKENS
    assert len(chunks) > len(text) // 300 + 1  # the token limit, not the characters, decided


def test_bad_limits():
    with pytest.raises(ValueError):
        split_text("text", TOK, max_chars=0)


def test_riding_hood_statistics():
    """The figures in clvp/text_split.py's docstring."""
    text = data_path("riding_hood.txt").read_text(encoding="utf-8")
    chunks = check(text, (401, 200, 300))
    stats = chunk_statistics(chunks, TOK)
    assert stats == {"chunks": 18, "chars_min": 123, "chars_median": 193.5, "chars_mean": 196.9, "chars_max": 277,
                     "tokens_min": 69, "tokens_median": 111.5, "tokens_max": 169}
    assert all(re.search(r'[.!?]"?$', c) for c in chunks)


@given(st.integers(1, 3))
def test_whole_text_fits_in_one_chunk(n):
    text = " ".join(["Short sentence."] * n)
    assert split_text(text, TOK) == [text]
