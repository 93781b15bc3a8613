"""Long text into chunks the model accepts: ``split_text(text, tokenizer)``.

One generation call takes one text of at most ``max_text_tokens - 3`` tokens (401 with the real
checkpoint's 404; ``clvp.generation.validate_request`` refuses a longer one). A book is cut here into
chunks that each fit:

* whitespace is normalised first (runs of spaces, tabs and newlines become one space), and a chunk
  only ever ends at a space, so ``" ".join(chunks)`` gives the normalised text back, and a word,
  a number ("3.14", "1,000", "$1.50") or an abbreviation is never cut;
* each chunk is at most ``max_chars`` characters and at most ``max_tokens`` tokens, counted by the
  given tokenizer exactly as generation will count them (its normaliser included: "1995" is
  "nineteen ninety-five" there, so digits can cost many more tokens than characters);
* where to cut, best first: the end of a sentence outside quotes (". ! ? …" with any closing quotes
  or brackets, but not after "Mr." or a single initial), a clause boundary outside quotes
  (", ; : — –" or before a dash or an opening bracket), the end of a sentence inside quotes, a clause
  boundary inside quotes, and last any space. Among the cuts of the best kind that leave a chunk of
  at least half of ``target_chars`` the one nearest ``target_chars`` wins (as Tortoise's
  ``split_and_recombine_text`` aims at 200 characters, at most 300);
* a single word that alone exceeds a limit (a 400-character URL, a 60-digit number) is the one
  thing cut inside: at its last punctuation mark that fits, else at the longest prefix that fits.
  Only then does re-joining with spaces differ from the input (by the spaces added at those cuts).

Measured on clvp/data/riding_hood.txt (3,587 characters; the packaged vocabulary with either
normaliser, the defaults target_chars=200, max_chars=300, max_tokens=401): 18 chunks of 123 to
277 characters (median 193.5, mean 196.9; sorted: 123 129 145 158 170 171 175 178 192 195 199 201
211 228 255 266 271 277) and 69 to 169 tokens (median 111.5), far under the token limit; all 17
cuts are sentence ends outside quotes. tests/test_text_split.py::test_riding_hood_statistics
recomputes these figures.
"""
from __future__ import annotations

import re
import statistics

__all__ = ["split_text", "chunk_statistics", "MAX_TOKENS"]

MAX_TOKENS = 401  # the real checkpoint: decoder max_text_tokens 404 minus 3 (bos / eos added by the model)

# boundary kinds after a word, best first (a larger number is a better place to cut)
SENTENCE, CLAUSE, QUOTED_SENTENCE, QUOTED_CLAUSE, SPACE = 5, 4, 3, 2, 1

_CLOSERS = "\"'”’)]}»"
_SENTENCE_END = re.compile(r"[.!?…]+[" + re.escape(_CLOSERS) + r"]*$")
_CLAUSE_END = re.compile(r"([,;:—–]|--|-)[" + re.escape(_CLOSERS) + r"]*$")
_CLAUSE_START = re.compile(r"^(—|–|--|-|\(|\[)")
_ABBREVIATIONS = {"mr.", "mrs.", "ms.", "dr.", "st.", "co.", "jr.", "sr.", "prof.", "gen.", "capt.", "lt.", "col.",
                  "sgt.", "rev.", "hon.", "vs.", "etc.", "e.g.", "i.e.", "no.", "mt.", "ft.", "esq.", "maj.", "gov."}
_DOUBLE_QUOTES = "\"“”«»"


def _token_counter(tokenizer):
    """len(input_ids) of a chunk as generation tokenizes it (``tokenizer(text)["input_ids"]``)."""
    def count(text: str) -> int:
        return len(tokenizer(text)["input_ids"])

    return count


def _is_sentence_end(word: str, next_word: str | None) -> bool:
    if not _SENTENCE_END.search(word):
        return False
    bare = word.rstrip(_CLOSERS)
    if bare.lower() in _ABBREVIATIONS or re.fullmatch(r"[A-Za-z]\.", bare):  # "Mr." / "J." (an initial)
        return False
    if next_word is not None and next_word[:1].islower():  # "e.g. this", "... and then"
        return False
    return True


def _quote_depths(words: list[str]) -> list[bool]:
    """For each word: is the space after it inside a double-quoted passage?"""
    inside, out = False, []
    for w in words:
        for ch in w:
            if ch == "“" or ch == "«":
                inside = True
            elif ch == "”" or ch == "»":
                inside = False
            elif ch == '"':
                inside = not inside
        out.append(inside)
    return out


def _boundary_kinds(words: list[str]) -> list[int]:
    """kinds[i]: how good a cut after words[i] is (SENTENCE ... SPACE)."""
    quoted = _quote_depths(words)
    kinds = []
    for i, w in enumerate(words):
        nxt = words[i + 1] if i + 1 < len(words) else None
        if _is_sentence_end(w, nxt):
            kind = QUOTED_SENTENCE if quoted[i] else SENTENCE
        elif _CLAUSE_END.search(w) or (nxt is not None and _CLAUSE_START.search(nxt)):
            kind = QUOTED_CLAUSE if quoted[i] else CLAUSE
        else:
            kind = SPACE
        kinds.append(kind)
    return kinds


def _cut_word(word: str, fits) -> tuple[str, str]:
    """Split one over-long word: the longest prefix that ``fits``, moved back to its last punctuation
    mark when that keeps at least half of it; (prefix, rest), both non-empty."""
    lo, hi = 1, len(word) - 1  # the longest fitting prefix length, by bisection (fits is ~monotone)
    if not fits(word[:1]):
        raise ValueError(f"the limits are too small for even one character of {word[:20]!r}")
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(word[:mid]):
            lo = mid
        else:
            hi = mid - 1
    cut = lo
    for j in range(lo, max(lo // 2, 1) - 1, -1):
        if not word[j - 1].isalnum():
            cut = j
            break
    return word[:cut], word[cut:]


def split_text(text: str, tokenizer, *, max_tokens: int = MAX_TOKENS, target_chars: int = 200,
               max_chars: int = 300) -> list[str]:
    """Cut ``text`` into chunks of at most ``max_chars`` characters and ``max_tokens`` tokens (as
    ``tokenizer(chunk)["input_ids"]`` counts them), at sentence ends first, then clause boundaries,
    never inside a word or a number (module docstring). An empty or blank text gives ``[]``."""
    if max_chars < 1 or max_tokens < 1 or target_chars < 1:
        raise ValueError(f"max_chars, max_tokens and target_chars must be positive, got {max_chars}, {max_tokens}, "
                         f"{target_chars}")
    count = _token_counter(tokenizer)
    words = text.split()
    if not words:
        return []

    def fits(chunk: str) -> bool:
        return len(chunk) <= max_chars and count(chunk) <= max_tokens

    # over-long single words are cut first (the only cuts inside a word)
    pieces: list[str] = []
    for w in words:
        while not fits(w):
            head, w = _cut_word(w, fits)
            pieces.append(head)
        pieces.append(w)
    words = pieces
    kinds = _boundary_kinds(words)
    # character end of words[s:e] joined with spaces = ends[e] - ends[s] - 1 (ends[0] = 0 counts a space)
    ends = [0]
    for w in words:
        ends.append(ends[-1] + len(w) + 1)

    def length(s: int, e: int) -> int:
        return ends[e] - ends[s] - 1

    chunks = []
    s, n = 0, len(words)
    min_chars = max(1, target_chars // 2)
    while s < n:
        # the most words that fit in characters, then in tokens (bisection; counts grow with words)
        e = s + 1
        while e < n and length(s, e + 1) <= max_chars:
            e += 1
        if not fits(" ".join(words[s:e])):
            lo, hi = s + 1, e
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if fits(" ".join(words[s:mid])):
                    lo = mid
                else:
                    hi = mid - 1
            e = lo
        if e == n:
            chunks.append(" ".join(words[s:n]))
            break
        cut = _choose_cut(s, e, kinds, length, target_chars, min_chars)
        while cut > s + 1 and not fits(" ".join(words[s:cut])):  # token counts are not quite monotone
            cut -= 1
        chunks.append(" ".join(words[s:cut]))
        s = cut
    return chunks


def _choose_cut(s: int, e: int, kinds, length, target_chars: int, min_chars: int) -> int:
    """The end (exclusive word index) of the chunk starting at ``s``, of the cuts s+1..e allowed."""
    options = [(kinds[c - 1], c) for c in range(s + 1, e + 1)]
    long_enough = [o for o in options if length(s, o[1]) >= min_chars] or options
    best_kind = max(k for k, _ in long_enough)
    best = [c for k, c in long_enough if k == best_kind]
    return min(best, key=lambda c: (abs(length(s, c) - target_chars), -c))


def chunk_statistics(chunks: list[str], tokenizer=None) -> dict:
    """Count, min / median / mean / max characters (and tokens with a tokenizer) of ``chunks``."""
    stats = {"chunks": len(chunks)}
    if not chunks:
        return stats
    chars = [len(c) for c in chunks]
    stats.update(chars_min=min(chars), chars_median=statistics.median(chars),
                 chars_mean=round(statistics.mean(chars), 1), chars_max=max(chars))
    if tokenizer is not None:
        count = _token_counter(tokenizer)
        toks = [count(c) for c in chunks]
        stats.update(tokens_min=min(toks), tokens_median=statistics.median(toks), tokens_max=max(toks))
    return stats
