"""CLVP's English text normalizer, in two modes.

``EnglishNormalizer("hf")`` (the default) gives exactly the text transformers 4.46.3's
``ClvpTokenizer`` feeds to its BPE, quirks included (docs/model.md §5.3):

1. non-ASCII characters are *dropped* ("café" -> "caf", so "£" is gone before its rule can fire);
2. lowercase;
3. numbers, in this order: commas inside numbers removed; "£N" -> "N pounds"; "$N.M" -> "N dollars,
   M cents"; "a.b" -> "a point b"; ordinals -> ``number_to_words(n) + suffix`` ("21st" ->
   "twenty-onest"); integers, with 2000 -> "two thousand", 2001-2009 -> "two thousand five",
   multiples of 100 in (1000, 3000) -> "nineteen hundred", every other number read as a cardinal
   ("1995" -> "one thousand, nine hundred ninety-five"), and "number out of range" from 10**18 on;
4. abbreviations ("mr." -> "mister", ...);
5. whitespace runs -> one space; 6. double quotes removed.

``EnglishNormalizer("tortoise")`` gives what the model was trained with (Tortoise's
``english_cleaners``: unidecode + inflect) instead: accented letters transliterated ("café" ->
"cafe", "’" -> "'", "—" -> "--"; a table taken from unidecode for Latin-1, Latin Extended-A and the
common punctuation, Unicode NFKD for other accented letters; characters with neither, e.g. Greek
or CJK, are still dropped), "£N" read as "N pounds" (Tortoise's unidecode turns "£" into "PS"
before its pounds rule can see it; we keep the rule working), ordinals as words ("21st" ->
"twenty-first", "101st" -> "one hundred and first"), years 1001-2999 read in pairs ("1995" ->
"nineteen ninety-five", "1905" -> "nineteen oh five"), other cardinals as inflect writes them
("1001" -> "one thousand one"). Numbers of 37 or more digits (Tortoise raises on them) are read
digit by digit. Both modes read "$,5" as "five dollars" where transformers and Tortoise raise.

Speed (transformers runs a dozen regular expressions over every sentence): the number rules run only
on text that has a digit, the 18 abbreviation rules are one alternation (tried only when a reversed
scan finds a candidate), and the whitespace rule runs only when there is more than single spaces.
The single-pass abbreviation rule differs from the rule-by-rule one only when one abbreviation
directly follows another ("mr.co."); then the rule-by-rule path is taken, so the output is the same
on every input.

Work is linear in the input (with transformers' regular expressions it was quadratic in digit runs:
100,000 digits took 93 s, and int() raised ValueError beyond 4300 digits): the decimal and ordinal
rules start only at the first digit
of a run, and numbers are handled as digit strings, so one of more than 40 digits is never passed to
``int()``; its reading depends on its length alone ("number out of range" in "hf" mode as in
transformers from 10**18 on, whatever the length; digit by digit in "tortoise" mode from 10**36 on).
bench/bench_normalizer.py times 1 MB of digits.

Provenance: the rules, word lists and ``number_to_words`` follow transformers v4.46.3
``src/transformers/models/clvp/number_normalizer.py`` (Apache-2.0), which adapts
neonbjb/tortoise-tts ``tortoise/utils/tokenizer.py``.
"""
from __future__ import annotations

import re
import unicodedata

__all__ = ["EnglishNormalizer", "TEXT_NORMALIZATIONS"]

TEXT_NORMALIZATIONS = ("hf", "tortoise")

_ABBREVIATIONS = [
    ("mrs", "misess"),
    ("mr", "mister"),
    ("dr", "doctor"),
    ("st", "saint"),
    ("co", "company"),
    ("jr", "junior"),
    ("maj", "major"),
    ("gen", "general"),
    ("drs", "doctors"),
    ("rev", "reverend"),
    ("lt", "lieutenant"),
    ("hon", "honorable"),
    ("sgt", "sergeant"),
    ("capt", "captain"),
    ("esq", "esquire"),
    ("ltd", "limited"),
    ("col", "colonel"),
    ("ft", "fort"),
]
_ABBREVIATION_MAP = dict(_ABBREVIATIONS)
# Rule by rule, as transformers applies them (the exact fallback).
_ABBREVIATION_RES = [(re.compile(r"\b%s\." % a, re.IGNORECASE), w) for a, w in _ABBREVIATIONS]
# All in one pass. Text is lowercase by now, so no IGNORECASE; no abbreviation is a prefix of another
# followed by ".", so the alternation order cannot change which one matches.
_ABBREVIATION_RE = re.compile(r"\b(%s)\." % "|".join(a for a, _ in _ABBREVIATIONS))
# The same test on the reversed text: it starts with a literal ".", which re finds by fast search, so
# sentences without an abbreviation (nearly all) cost a tenth of the forward scan.
_ABBREVIATION_REVERSED_RE = re.compile(r"\.(?:%s)\b" % "|".join(a[::-1] for a, _ in _ABBREVIATIONS))

_DIGIT_RE = re.compile(r"[0-9]")
# "\s+" -> " " but matching only what changes: runs of two or more, or one whitespace that is not " ".
_WHITESPACE_RE = re.compile(r"\s{2,}|[^\S ]")
_COMMA_NUMBER_RE = re.compile(r"([0-9][0-9\,]+[0-9])")
_POUNDS_RE = re.compile(r"£([0-9\,]*[0-9]+)")
_DOLLARS_RE = re.compile(r"\$([0-9\.\,]*[0-9]+)")
# Both start only at the first digit of a run ("(?<![0-9])") and never give digits back ("++"): a match
# can only begin there, so the matches are transformers' ones, but a run of n digits that is not
# followed by "." / a suffix costs O(n) instead of the O(n**2) of retrying from every digit in it.
_DECIMAL_RE = re.compile(r"(?<![0-9])([0-9]++\.[0-9]+)")
_ORDINAL_RE = re.compile(r"(?<![0-9])[0-9]++(st|nd|rd|th)")
_NUMBER_RE = re.compile(r"[0-9]+")

_ONES = ["", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
_TEENS = ["ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
_TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
# inflect's scale words (Tortoise mode reads up to 10**33 - 1 with them).
_SCALES = ["", " thousand", " million", " billion", " trillion", " quadrillion", " quintillion", " sextillion",
           " septillion", " octillion", " nonillion", " decillion"]
_ORDINAL_WORDS = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
                  "nine": "ninth", "twelve": "twelfth"}

# unidecode's transliteration where NFKD + dropping combining marks gives something else (or nothing),
# for U+00A0-U+017F, U+2010-U+2044, the vulgar fractions, "€" and "™". "£" is kept for the pounds rule.
_TRANSLITERATION = str.maketrans({
    "\u00a1": "!", "\u00a2": "C/", "\u00a4": "$?", "\u00a5": "Y=", "\u00a6": "|", "\u00a7": "SS", "\u00a8": '"',
    "\u00a9": "(c)", "\u00ab": "<<", "\u00ac": "!", "\u00ae": "(r)", "\u00af": "-", "\u00b0": "deg", "\u00b1": "+-",
    "\u00b4": "'", "\u00b5": "u", "\u00b6": "P", "\u00b7": "*", "\u00b8": ",", "\u00bb": ">>", "\u00bc": " 1/4",
    "\u00bd": " 1/2", "\u00be": " 3/4", "\u00bf": "?", "\u00c6": "AE", "\u00d0": "D", "\u00d7": "x", "\u00d8": "O",
    "\u00de": "Th", "\u00df": "ss", "\u00e6": "ae", "\u00f0": "d", "\u00f7": "/", "\u00f8": "o", "\u00fe": "th",
    "\u0110": "D", "\u0111": "d", "\u0126": "H", "\u0127": "h", "\u0131": "i", "\u0138": "k", "\u0141": "L",
    "\u0142": "l", "\u0149": "'n", "\u014a": "NG", "\u014b": "ng", "\u0152": "OE", "\u0153": "oe", "\u0166": "T",
    "\u0167": "t", "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "--", "\u2015": "--",
    "\u2016": "||", "\u2017": "_", "\u2018": "'", "\u2019": "'", "\u201a": ",", "\u201b": "'", "\u201c": '"',
    "\u201d": '"', "\u201e": ",,", "\u201f": '"', "\u2020": "+", "\u2021": "++", "\u2022": "*", "\u2023": "*>",
    "\u2027": ".", "\u2028": "\n", "\u2029": "\n\n", "\u2030": "%0", "\u2031": "%00", "\u2032": "'", "\u2033": "''",
    "\u2034": "'''", "\u2035": "`", "\u2036": "``", "\u2037": "```", "\u2038": "^", "\u2039": "<", "\u203a": ">",
    "\u203b": "*", "\u203d": "!?", "\u203e": "-", "\u203f": "_", "\u2040": "-", "\u2041": "^", "\u2042": "***",
    "\u2043": "--", "\u2044": "/", "\u20ac": "EUR", "\u2122": "(tm)", "\u2150": " 1/7 ", "\u2151": " 1/9 ",
    "\u2152": " 1/10 ", "\u2153": " 1/3 ", "\u2154": " 2/3 ", "\u2155": " 1/5 ", "\u2156": " 2/5 ", "\u2157": " 3/5 ",
    "\u2158": " 4/5 ", "\u2159": " 1/6 ", "\u215a": " 5/6 ", "\u215b": " 1/8 ", "\u215c": " 3/8 ", "\u215d": " 5/8 ",
    "\u215e": " 7/8 ",
})


def _drop_non_ascii(text: str) -> str:
    return text.encode("ascii", "ignore").decode("ascii")


def transliterate(text: str) -> str:
    """Unicode -> ASCII the way unidecode does for Latin text, keeping "£" for the pounds rule."""
    text = text.translate(_TRANSLITERATION)
    if text.isascii():
        return text
    out = []
    for ch in text:
        if ch < "\x80" or ch == "£":
            out.append(ch)
            continue
        for c in unicodedata.normalize("NFKD", ch):
            if c < "\x80":
                out.append(c)
    return "".join(out)


def _below_hundred(num: int) -> str:
    """0 < num < 100: "seven", "fifteen", "forty", "forty-two"."""
    if num < 10:
        return _ONES[num]
    if num < 20:
        return _TEENS[num - 10]
    return _TENS[num // 10] + ("-" + _ONES[num % 10] if num % 10 else "")


def _hf_number_to_words(num: int) -> str:
    """transformers' ``EnglishNormalizer.number_to_words``: no "and", ", " between groups of three,
    "number out of range" from 10**18 on."""
    if num == 0:
        return "zero"
    if num < 0:
        return "minus " + _hf_number_to_words(-num)
    if num < 100:
        return _below_hundred(num)
    if num < 1000:
        return _ONES[num // 100] + " hundred" + (" " + _below_hundred(num % 100) if num % 100 else "")
    if num >= 1000**6:
        return "number out of range"
    power = 1
    while num >= 1000 ** (power + 1):
        power += 1
    base = 1000**power
    rest = num % base
    return _hf_number_to_words(num // base) + _SCALES[power] + (", " + _hf_number_to_words(rest) if rest else "")


def _below_thousand(num: int, andword: str) -> str:
    """0 < num < 1000 the way inflect writes a group: "one hundred and five" / "one hundred five"."""
    hundreds, rest = divmod(num, 100)
    if not hundreds:
        return _below_hundred(rest)
    if not rest:
        return _ONES[hundreds] + " hundred"
    return _ONES[hundreds] + " hundred " + (andword + " " if andword else "") + _below_hundred(rest)


def _inflect_cardinal(num: int, andword: str = "and") -> str:
    """A non-negative integer in words as ``inflect.engine().number_to_words(num, andword=...)`` writes it.

    Groups of three joined by ", ", except that a last group below 100 after a higher group is joined
    by " and " (or a space with ``andword=""``): 1001 -> "one thousand and one".
    """
    if num == 0:
        return "zero"
    if num >= 1000 ** len(_SCALES):
        return " ".join("zero" if d == "0" else _ONES[int(d)] for d in str(num))
    groups = []
    i = 0
    while num:
        num, g = divmod(num, 1000)
        groups.append((g, i))
        i += 1
    parts = [(_below_thousand(g, andword) + _SCALES[i]) for g, i in reversed(groups) if g]
    last_group, last_index = groups[0]
    if len(parts) > 1 and last_index == 0 and 0 < last_group < 100:
        joiner = " " + andword + " " if andword else " "
        return ", ".join(parts[:-1]) + joiner + parts[-1]
    return ", ".join(parts)


# Numbers of more digits than this are never converted with int() (quadratic in the digits, and a
# ValueError beyond 4300 of them): transformers reads all of them as "number out of range" (from 10**18
# on), Tortoise mode digit by digit (from 10**33 on), so their digit count alone decides.
_MAX_INT_DIGITS = 40


def _significant_digits(digits: str) -> str:
    """A run of ASCII digits without its leading zeros ("" for zero): ``str(int(digits))`` in O(n)."""
    return digits.lstrip("0")


def _hf_words_of_digits(digits: str) -> str:
    """``_hf_number_to_words(int(digits))`` for a digit run of any length, in O(len(digits))."""
    significant = _significant_digits(digits)
    if len(significant) > 18:  # >= 10**18
        return "number out of range"
    return _hf_number_to_words(int(significant or "0"))


def _cardinal_of_digits(digits: str, andword: str) -> str:
    """``_inflect_cardinal(int(digits), andword)`` for a digit run of any length, in O(len(digits))."""
    significant = _significant_digits(digits)
    if len(significant) > 3 * len(_SCALES):  # >= 1000 ** len(_SCALES): digit by digit
        return " ".join("zero" if d == "0" else _ONES[int(d)] for d in significant)
    return _inflect_cardinal(int(significant or "0"), andword)


def _ordinal_of_words(words: str) -> str:
    """inflect's ordinal of a cardinal in words: "twenty-one" -> "twenty-first", "ninety" -> "ninetieth"."""
    for cardinal, ordinal in _ORDINAL_WORDS.items():
        if words.endswith(cardinal):
            return words[: -len(cardinal)] + ordinal
    if words.endswith("ty"):
        return words[:-2] + "tieth"
    return words + "th"


def _year_words(num: int) -> str:
    """inflect ``number_to_words(num, andword="", zero="oh", group=2)`` for 1001-2999, ", " -> " "."""
    high, low = divmod(num, 100)
    low_words = _inflect_cardinal(low, "") if low >= 10 else "oh " + _ONES[low]
    return _inflect_cardinal(high, "") + " " + low_words


class EnglishNormalizer:
    """Text -> the lowercase ASCII text CLVP's BPE sees. ``mode``: "hf" (default) or "tortoise"."""

    def __init__(self, mode: str = "hf"):
        if mode not in TEXT_NORMALIZATIONS:
            raise ValueError(f"text_normalization must be one of {TEXT_NORMALIZATIONS}, got {mode!r}")
        self.mode = mode

    def __repr__(self) -> str:
        return f"EnglishNormalizer(mode={self.mode!r})"

    # ----------------------------------------------------------------- the pieces (transformers' names)
    def number_to_words(self, num: int) -> str:
        if self.mode == "hf":
            return _hf_number_to_words(num)
        return ("minus " if num < 0 else "") + _inflect_cardinal(abs(num), "")

    def convert_to_ascii(self, text: str) -> str:
        if text.isascii():
            return text
        if self.mode == "hf":
            return _drop_non_ascii(text)
        return transliterate(text)

    @staticmethod
    def _remove_commas(m) -> str:
        return m.group(1).replace(",", "")

    @staticmethod
    def _expand_decimal_point(m) -> str:
        return m.group(1).replace(".", " point ")

    @staticmethod
    def _expand_dollars(m) -> str:
        match = m.group(1)
        parts = match.split(".")
        if len(parts) > 2:
            return match + " dollars"  # unexpected format, kept as transformers and Tortoise keep it
        # transformers and Tortoise raise on "$,5" (int(",5")); the commas left here are not digits.
        # Kept as digit strings (what int() then "%s" would give: no leading zeros, "" for zero), so
        # a long run costs O(n), not int()'s O(n**2) (or its ValueError beyond 4300 digits).
        dollars = _significant_digits(parts[0].replace(",", ""))
        cents = _significant_digits(parts[1].replace(",", "")) if len(parts) > 1 else ""
        if dollars and cents:
            dollar_unit = "dollar" if dollars == "1" else "dollars"
            cent_unit = "cent" if cents == "1" else "cents"
            return "%s %s, %s %s" % (dollars, dollar_unit, cents, cent_unit)
        if dollars:
            return "%s %s" % (dollars, "dollar" if dollars == "1" else "dollars")
        if cents:
            return "%s %s" % (cents, "cent" if cents == "1" else "cents")
        return "zero dollars"

    def _expand_ordinal(self, m) -> str:
        digits = m.group(0)[:-2]
        if self.mode == "tortoise":
            return _ordinal_of_words(_cardinal_of_digits(digits, "and"))
        # transformers: the cardinal plus the suffix ("1st" -> "onest"; a bug kept for parity).
        last_two = int(digits[-2:])  # num % 100
        if 10 <= last_two <= 20:
            suffix = "th"
        else:
            suffix = {1: "st", 2: "nd", 3: "rd"}.get(last_two % 10, "th")
        return _hf_words_of_digits(digits) + suffix

    def _expand_number(self, m) -> str:
        digits = _significant_digits(m.group(0))
        if len(digits) > _MAX_INT_DIGITS:  # far beyond both modes' cardinals: no int() of it
            return _hf_words_of_digits(digits) if self.mode == "hf" else _cardinal_of_digits(digits, "")
        num = int(digits or "0")
        if self.mode == "hf":
            if 1000 < num < 3000:
                if num == 2000:
                    return "two thousand"
                if 2000 < num < 2010:
                    return "two thousand " + _hf_number_to_words(num % 100)
                if num % 100 == 0:
                    return _hf_number_to_words(num // 100) + " hundred"
            return _hf_number_to_words(num)
        if 1000 < num < 3000:
            if num == 2000:
                return "two thousand"
            if 2000 < num < 2010:
                return "two thousand " + _inflect_cardinal(num % 100, "and")
            if num % 100 == 0:
                return _inflect_cardinal(num // 100, "and") + " hundred"
            return _year_words(num)
        return _inflect_cardinal(num, "")

    def normalize_numbers(self, text: str) -> str:
        text = _COMMA_NUMBER_RE.sub(self._remove_commas, text)
        if "£" in text:
            text = _POUNDS_RE.sub(r"\1 pounds", text)
        if "$" in text:
            text = _DOLLARS_RE.sub(self._expand_dollars, text)
        if "." in text:
            text = _DECIMAL_RE.sub(self._expand_decimal_point, text)
        text = _ORDINAL_RE.sub(self._expand_ordinal, text)
        return _NUMBER_RE.sub(self._expand_number, text)

    def expand_abbreviations(self, text: str) -> str:
        if "." not in text or not _ABBREVIATION_REVERSED_RE.search(text[::-1]):
            return text
        matches = list(_ABBREVIATION_RE.finditer(text))
        if not matches:
            return text
        for a, b in zip(matches, matches[1:]):
            if a.end() == b.start():  # "mr.co.": rule order decides; take the exact rule-by-rule path
                for regex, replacement in _ABBREVIATION_RES:
                    text = regex.sub(replacement, text)
                return text
        out, last = [], 0
        for m in matches:
            out.append(text[last : m.start()])
            out.append(_ABBREVIATION_MAP[m.group(1)])
            last = m.end()
        out.append(text[last:])
        return "".join(out)

    @staticmethod
    def collapse_whitespace(text: str) -> str:
        return _WHITESPACE_RE.sub(" ", text)

    # ----------------------------------------------------------------------------------- the whole
    def __call__(self, text: str) -> str:
        if not isinstance(text, str):
            raise TypeError(f"the normalizer takes a str, got {type(text).__name__}")
        text = self.convert_to_ascii(text).lower()
        if _DIGIT_RE.search(text):
            text = self.normalize_numbers(text)
        if not text.isascii():  # Tortoise mode: a "£" that no number followed
            text = _drop_non_ascii(text)
        text = self.expand_abbreviations(text)
        if "  " in text or not text.isprintable():  # else there is no whitespace but single spaces
            text = _WHITESPACE_RE.sub(" ", text)
        if '"' in text:
            text = text.replace('"', "")
        return text
