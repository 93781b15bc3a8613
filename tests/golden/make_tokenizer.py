"""Golden fixtures for ``ClvpTokenizer`` and its English normalizer, made by the oracles.

Run from the repository root (never in the library's own environment):

    python -m pip install --target /tmp/tortoise_ref inflect==7.6.0 unidecode==1.4.0   # once
    PYTHONPATH=.oracle:/tmp/tortoise_ref python tests/golden/make_tokenizer.py

Writes
* ``tests/fixtures/tokenizer_ids.json``: transformers 4.46.3's ``ClvpTokenizer`` on the real vocabulary
  (tests/data/hf_layout): per text its ids, tokens and decodes (Little Red Riding Hood from
  clvp/data/riding_hood.txt sentence by sentence, the numbers sentence of transformers' tokenizer test
  (docs/parity.md §7.3), edge cases); padded / truncated batches;
  add_bos_token / add_eos_token; the HF test suite's small vocabulary; a tokenizer saved by the oracle
  (its tokenizer_config.json, special_tokens_map.json, added_tokens.json) with its outputs.
* ``tests/fixtures/tokenizer_normalizer.json``: transformers' ``EnglishNormalizer`` and Tortoise's
  ``english_cleaners`` (the rules of tortoise/utils/tokenizer.py, rewritten here over inflect and
  unidecode) on edge cases and seeded random strings. The Tortoise reference keeps "£" away from
  unidecode so that its pounds rule fires (ours does that on purpose; Tortoise turns "£" into "PS"),
  and its random strings use only characters our transliteration table covers.

This script imports transformers, inflect and unidecode, never ``clvp``.
"""
from __future__ import annotations

import json
import random
from importlib import metadata
import re
import tempfile
from pathlib import Path

# The oracles (transformers, inflect, unidecode) are imported in main(), so that the tests can import
# processor_clips() from here without them.
inflect = unidecode = _inflect = None

ROOT = Path(__file__).resolve().parents[2]
HF_LAYOUT = ROOT / "tests" / "data" / "hf_layout"  # the real vocabulary in transformers' layout
RIDING_HOOD = ROOT / "clvp" / "data" / "riding_hood.txt"
FIXTURES = ROOT / "tests" / "fixtures"

NUMBERS_SENTENCE = "hello and this is an example text and I have $1000. my lucky number is 12345."

EDGE_CASES = [
    "Hello world", " Hello world", "This is an example text.", NUMBERS_SENTENCE,
    # contractions
    "It's don't I'LL we're they've I'm you'd", "IT'S DON'T WON'T", "rock 'n' roll o'clock's", "'s 't 're",
    # punctuation
    "Wait... what?! (Really) - yes; no: maybe/so", "!!!???", "--", "'quoted' \"double\" \"\"",
    # unicode
    "café naïve résumé", "Zoë's coöperation", "日本語 text", "emoji 😀 here", "£100 and €50", "straße",
    "\u201csmart quotes\u201d and \u2018single\u2019 \u2014 dash", "ﬁne ligature", "nbsp\u00a0here",
    # digits
    "1st 2nd 3rd 4th 11th 12th 13th 21st 22nd 101st 111th", "1995 2000 2005 2010 1900 3000 999 1000 1001",
    "3.14 0.5 10.0", "1,000,000 and 12,345.67", "007 0 00", "123456789012345678901234", "10 to 20", "4thousand",
    # money
    "$1 $1.00 $1.01 $0.01 $0 $12.5 $1,000 $1.2.3", "£5 £1,000", "$ 5 and $",
    # abbreviations
    "Mr. and Mrs. Smith met Dr. Jones at St. Paul's.",
    "Capt. Lt. Col. Gen. Maj. Sgt. Rev. Hon. Esq. Ltd. Co. Jr. Drs. Ft.",
    "MR. DR. mr.co. st.mr.", "dr.mr.st.", "Mrs.Dr.", "the co. ltd.", "mister. st.. dr..",
    # whitespace
    "", " ", "   ", "\t\n", "a  b   c", "  leading and trailing  ", "line\nbreak\r\ntab\tx", "\x1c sep\x1f",
    # characters outside the vocabulary
    "a_b@c#d$e%f&g*h+i=j<k>l[m]n{o}p|q~r^s`t\\u", "@@ __ ##",
    # added tokens in the text
    "hello[STOP]world", "x <|endoftext|> y", "[UNK] [SPACE] [stop] <|ENDOFTEXT|>", "<|endoftext|>", "[STOP][STOP]",
    "<|endoftext|>hello", "trailing[UNK]",
]

SPLIT_WORDS = [["hello", "world"], ["Hello", "there", "friend!"], ["1995", "was", "fine"], ["a"]]


def dump(obj) -> str:
    """JSON with one value per line, except that lists of integers stay on one line."""
    text = json.dumps(obj, indent=1, ensure_ascii=False)
    return re.sub(r"\[\s+([-\d,\s]+?)\s+\]", lambda m: "[" + re.sub(r"\s+", "", m.group(1)) + "]", text) + "\n"


def riding_hood_sentences() -> list[str]:
    text = RIDING_HOOD.read_text(encoding="utf-8")
    return [s for line in text.splitlines() if line.strip() for s in re.split(r"(?<=[.!?])\s+", line.strip()) if s]


def encode_case(tok, text: str) -> dict:
    ids = tok(text)["input_ids"]
    return {
        "text": text,
        "input_ids": ids,
        "tokens": tok.tokenize(text),
        "decode": tok.decode(ids),
        "decode_clean": tok.decode(ids, clean_up_tokenization_spaces=True),
        "decode_skip": tok.decode(ids, skip_special_tokens=True),
    }


def batch_case(tok, texts, **kwargs) -> dict:
    out = tok(texts, **kwargs)
    return {"texts": texts, "kwargs": kwargs, "output": {k: [list(map(int, r)) for r in v] for k, v in out.items()}}


# ------------------------------------------------------------------------------- Tortoise's cleaner
_ABBREVIATIONS = [(re.compile(r"\b%s\." % a, re.IGNORECASE), w) for a, w in [
    ("mrs", "misess"), ("mr", "mister"), ("dr", "doctor"), ("st", "saint"), ("co", "company"), ("jr", "junior"),
    ("maj", "major"), ("gen", "general"), ("drs", "doctors"), ("rev", "reverend"), ("lt", "lieutenant"),
    ("hon", "honorable"), ("sgt", "sergeant"), ("capt", "captain"), ("esq", "esquire"), ("ltd", "limited"),
    ("col", "colonel"), ("ft", "fort")]]


def _tortoise_dollars(m):
    match = m.group(1)
    parts = match.split(".")
    if len(parts) > 2:
        return match + " dollars"
    dollars = int(parts[0]) if parts[0] else 0
    cents = int(parts[1]) if len(parts) > 1 and parts[1] else 0
    if dollars and cents:
        return "%s %s, %s %s" % (dollars, "dollar" if dollars == 1 else "dollars",
                                 cents, "cent" if cents == 1 else "cents")
    if dollars:
        return "%s %s" % (dollars, "dollar" if dollars == 1 else "dollars")
    if cents:
        return "%s %s" % (cents, "cent" if cents == 1 else "cents")
    return "zero dollars"


def _tortoise_number(m):
    num = int(m.group(0))
    if 1000 < num < 3000:
        if num == 2000:
            return "two thousand"
        if 2000 < num < 2010:
            return "two thousand " + _inflect.number_to_words(num % 100)
        if num % 100 == 0:
            return _inflect.number_to_words(num // 100) + " hundred"
        return _inflect.number_to_words(num, andword="", zero="oh", group=2).replace(", ", " ")
    return _inflect.number_to_words(num, andword="")


def tortoise_cleaners(text: str) -> str:
    text = "£".join(unidecode.unidecode(part) for part in text.split("£"))  # keep "£" for the pounds rule
    text = text.lower()
    text = re.sub(r"([0-9][0-9\,]+[0-9])", lambda m: m.group(1).replace(",", ""), text)
    text = re.sub(r"£([0-9\,]*[0-9]+)", r"\1 pounds", text)
    text = re.sub(r"\$([0-9\.\,]*[0-9]+)", _tortoise_dollars, text)
    text = re.sub(r"([0-9]+\.[0-9]+)", lambda m: m.group(1).replace(".", " point "), text)
    text = re.sub(r"[0-9]+(st|nd|rd|th)", lambda m: _inflect.number_to_words(m.group(0)), text)
    text = re.sub(r"[0-9]+", _tortoise_number, text)
    text = text.replace("£", "")
    for regex, word in _ABBREVIATIONS:
        text = regex.sub(word, text)
    return re.sub(r"\s+", " ", text).replace('"', "")


# Characters the transliteration covers (its table, and letters NFKD reduces to ASCII).
TRANSLIT_CHARS = (
    "¡¢¤¥¦§¨©«¬®¯°±´µ¶·¸»¼½¾¿ÆÐ×ØÞßæð÷øþĐđĦħıĸŁłŉŊŋŒœŦŧ"
    "‐‑‒–—―‖‗‘’‚‛“”„‟†‡•‣‧‰‱′″‴‵‶‷‸‹›※‽‾‿⁀⁁⁂⁃⁄€™⅐⅑⅒⅓⅔⅕⅖⅗⅘⅙⅚⅛⅜⅝⅞"
    "àáâãäåçèéêëìíîïñòóôõöùúûüýÿÀÁÂÃÄÅÇÈÉÊËÌÍÎÏÑÒÓÔÕÖÙÚÛÜÝ"
    "ĀāĂăĄąĆćČčĎďĒēĘęĚěĞğĪīİĽľŃńŇňŌōŐőŔŕŘřŚśŞşŠšŢţŤťŪūŮůŰűŹźŻżŽž"
    "²³¹ºª\u00a0\u2009…ﬁﬂ"
)
PIECES = ["mr.", "Mrs.", "dr.", "st.", "co.", "jr.", "drs.", "ltd.", "ft.", "Capt.", "1st", "22nd", "103rd", "11th",
          "1995", "1905", "2005", "1900", "2000", "$1.50", "$0.01", "$1", "1,000", "12,345", "3.14", "£5", "£",
          "1000000", "101", "<|endoftext|>", "[STOP]"]


def random_strings(seed: int, n: int, extra: str) -> list[str]:
    rng = random.Random(seed)
    alphabet = list("abcdemorstlgjfvhnpqiyABCDEMRST .,;:!?'\"-$0123456789\t\n  ") + list(extra) + PIECES
    return ["".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 40))) for _ in range(n)]


def processor_clips():
    """Two short deterministic clips at 22.05 kHz (a chirp and a tone with noise), float32."""
    import numpy as np

    rng = np.random.default_rng(0)
    t_a = np.arange(5000) / 22050.0
    t_b = np.arange(8000) / 22050.0
    clip_a = 0.3 * np.sin(2 * np.pi * (200 + 800 * t_a) * t_a)
    clip_b = 0.2 * np.sin(2 * np.pi * 440 * t_b) + 0.01 * rng.standard_normal(t_b.shape)
    return [clip_a.astype(np.float32), clip_b.astype(np.float32)]


def processor_fixture(tok, versions) -> dict:
    """transformers' ClvpProcessor (its feature extractor with default settings, our vocabulary)."""
    from transformers import ClvpFeatureExtractor, ClvpProcessor

    proc = ClvpProcessor(ClvpFeatureExtractor(), tok)
    clips = processor_clips()

    def summary(out):
        res = {"keys": sorted(out.keys())}
        for key, value in out.items():
            if key == "input_features":
                arr = value if hasattr(value, "shape") else __import__("numpy").stack(value)
                res["input_features"] = {"shape": list(arr.shape), "first": arr[:, :3, :6].tolist(),
                                         "sum": arr.sum(axis=(1, 2)).tolist()}
            elif key == "attention_mask" and hasattr(value, "shape") and value.shape[-1] > 1000:  # the audio mask
                res[key] = {"shape": list(value.shape), "row_sums": value.sum(axis=-1).tolist()}
            else:
                res[key] = [list(map(int, r)) for r in value] if not isinstance(value[0], (int,)) else list(value)
        return res

    calls = [
        {"text": "This is an example text."},
        {"text": ["hi", "hello there"], "padding": True},
        {"raw_speech": "a", "sampling_rate": 22050, "return_tensors": "np"},
        {"text": ["hi", "hello there"], "raw_speech": "ab", "sampling_rate": 22050, "padding": True,
         "return_tensors": "np"},
        {"text": "hello", "raw_speech": "b", "sampling_rate": 22050, "return_tensors": "np"},
    ]
    out = []
    for call in calls:
        kwargs = dict(call)
        if "raw_speech" in kwargs:
            picked = [clips["ab".index(c)] for c in kwargs["raw_speech"]]
            kwargs["raw_speech"] = picked[0] if len(picked) == 1 else picked
        out.append({"call": call, "output": summary(proc(**kwargs))})
    return {"oracle": versions, "clips": "processor_clips() in tests/golden/make_tokenizer.py",
            "model_input_names": proc.model_input_names, "calls": out}


def main() -> None:
    global inflect, unidecode, _inflect
    import inflect
    import tokenizers
    import transformers
    import unidecode
    from transformers import ClvpTokenizer
    from transformers.models.clvp.number_normalizer import EnglishNormalizer
    from transformers.utils import logging

    logging.set_verbosity_error()
    _inflect = inflect.engine()
    vocab, merges = str(HF_LAYOUT / "vocab.json"), str(HF_LAYOUT / "merges.txt")
    tok = ClvpTokenizer(vocab, merges)
    sentences = riding_hood_sentences()
    versions = {"transformers": transformers.__version__, "tokenizers": tokenizers.__version__}

    cases = [encode_case(tok, t) for t in [*EDGE_CASES, *sentences]]
    # What add_prefix_space=True must give: the oracle's ids with the space written out.
    prefixed = {t: tok(" " + t)["input_ids"] for t in [*EDGE_CASES[:12], *sentences[:5]]}
    split_words = {" ".join(ws): [tok(" " + w)["input_ids"] for w in ws] for ws in SPLIT_WORDS}
    few = sentences[:6] + ["", "Hi!", NUMBERS_SENTENCE]
    batches = [
        batch_case(tok, few, padding=True),
        batch_case(tok, few, padding="longest", pad_to_multiple_of=8),
        batch_case(tok, few, padding="max_length", max_length=120),
        batch_case(tok, few, padding="max_length", max_length=16, truncation=True),
        batch_case(tok, few, truncation=True, max_length=5),
        batch_case(tok, few, max_length=7),
        batch_case(tok, few, padding=True, return_attention_mask=False),
        batch_case(tok, few, padding=True, padding_side="left"),
        batch_case(tok, few, padding=True, add_special_tokens=False),
    ]
    bos_eos = ClvpTokenizer(vocab, merges, add_bos_token=True, add_eos_token=True)
    special_batches = [
        batch_case(bos_eos, few, padding=True),
        batch_case(bos_eos, few, padding=True, truncation=True, max_length=6),
        batch_case(bos_eos, few, add_special_tokens=False),
    ]
    bos_only = ClvpTokenizer(vocab, merges, add_bos_token=True)
    # Special tokens beyond the vocabulary: a new pad token and an additional special token.
    extra = ClvpTokenizer(vocab, merges, pad_token="<pad>", additional_special_tokens=["<x>"])
    extra_cases = {
        "len": len(extra), "all_special_ids": extra.all_special_ids,
        "cases": [{"text": t, "input_ids": extra(t)["input_ids"],
                   "decode": extra.decode(extra(t)["input_ids"]),
                   "decode_skip": extra.decode(extra(t)["input_ids"], skip_special_tokens=True),
                   "decode_nospace": extra.decode(extra(t)["input_ids"], spaces_between_special_tokens=False),
                   "decode_clean": extra.decode(extra(t)["input_ids"], clean_up_tokenization_spaces=True)}
                  for t in ["café <x> ok", "<x><x>a<pad>b", "hi<x>", "plain text"]],
        "padded": batch_case(extra, ["a", "bcd", "<x>"], padding=True),
    }

    # The HF test suite's small vocabulary (docs/model.md §5.2).
    small_vocab = ["l", "o", "w", "e", "r", "s", "t", "i", "d", "n", "\u0120", "\u0120l", "\u0120n", "\u0120lo",
                   "\u0120low", "er", "\u0120lowest", "\u0120newer", "\u0120wider", "<unk>", "<|endoftext|>", "[SPACE]"]
    small_merges = ["#version: 0.2", "\u0120 l", "\u0120l o", "\u0120lo w", "e r", ""]
    with tempfile.TemporaryDirectory() as tmp:
        vf, mf = Path(tmp, "vocab.json"), Path(tmp, "merges.txt")
        vf.write_text(json.dumps({t: i for i, t in enumerate(small_vocab)}), encoding="utf-8")
        mf.write_text("\n".join(small_merges), encoding="utf-8")
        small = ClvpTokenizer(str(vf), str(mf), unk_token="<unk>")
        small_texts = ["lower newer", "lowest wider", " low lower", "newer<unk>", "xyz low"]
        small_cases = {
            "vocab": small_vocab, "merges": small_merges, "unk_token": "<unk>", "len": len(small),
            "special_ids": {"bos": small.bos_token_id, "eos": small.eos_token_id, "pad": small.pad_token_id,
                            "unk": small.unk_token_id},
            "cases": [{"text": t, "tokens": small.tokenize(t), "input_ids": small(t)["input_ids"],
                       "decode": small.decode(small(t)["input_ids"])} for t in small_texts],
            "padded": batch_case(small, small_texts, padding=True),
        }

        # A tokenizer saved by the oracle, with settings off their defaults.
        saved = ClvpTokenizer(vocab, merges, add_bos_token=True, pad_token="<pad>", clean_up_tokenization_spaces=True)
        saved_dir = Path(tmp, "saved")
        saved.save_pretrained(str(saved_dir))
        saved_files = {p.name: p.read_text(encoding="utf-8") for p in sorted(saved_dir.iterdir())
                       if p.name not in ("vocab.json", "merges.txt")}
        saved_case = {
            "files": saved_files, "len": len(saved), "pad_token_id": saved.pad_token_id,
            "batch": batch_case(saved, few, padding=True),
            "decode_default": saved.decode(saved("Hello world, how are you?")["input_ids"]),
        }
        default_dir = Path(tmp, "default")
        tok.save_pretrained(str(default_dir))
        default_files = {p.name: p.read_text(encoding="utf-8") for p in sorted(default_dir.iterdir())}

    ids_fixture = {
        "oracle": versions,
        "vocabulary": "tests/data/hf_layout (vocab.json + merges.txt)",
        "len": len(tok), "vocab_size": tok.vocab_size,
        "special_ids": {"bos": tok.bos_token_id, "eos": tok.eos_token_id, "pad": tok.pad_token_id,
                        "unk": tok.unk_token_id, "all": tok.all_special_ids},
        "riding_hood_sentences": len(sentences),
        "cases": cases,
        "prefixed": prefixed,
        "split_words": split_words,
        "batches": batches,
        "bos_eos_batches": special_batches,
        "bos_only": {t: bos_only(t)["input_ids"] for t in few},
        "extra_specials": extra_cases,
        "small_vocab": small_cases,
        "saved": saved_case,
        "default_saved_files": default_files,
        "batch_decode": {"ids": [[62, 84, 28, 2, 179, 79], [255, 40, 0, 0], [1, 2, 3]],
                         "plain": tok.batch_decode([[62, 84, 28, 2, 179, 79], [255, 40, 0, 0], [1, 2, 3]]),
                         "skip": tok.batch_decode([[62, 84, 28, 2, 179, 79], [255, 40, 0, 0], [1, 2, 3]],
                                                  skip_special_tokens=True),
                         "clean": tok.batch_decode([[62, 84, 28, 2, 179, 79], [255, 40, 0, 0], [1, 2, 3]],
                                                   clean_up_tokenization_spaces=True)},
    }
    (FIXTURES / "tokenizer_ids.json").write_text(dump(ids_fixture), encoding="utf-8")

    hf_norm = EnglishNormalizer()
    hf_texts = EDGE_CASES + sentences + random_strings(0, 400, "éß’“—½€中Ω\u00a0\x1c")
    hf_pairs = []
    for t in hf_texts:
        try:
            hf_pairs.append([t, hf_norm(t)])
        except ValueError:  # transformers raises on "$,5"-like input (int(",5")); ours does not
            continue
    tortoise_texts = EDGE_CASES + sentences + [TRANSLIT_CHARS] + list(TRANSLIT_CHARS)
    tortoise_texts += random_strings(1, 400, TRANSLIT_CHARS)
    tortoise_pairs = []
    for t in tortoise_texts:
        if not all(ord(c) < 128 or c in TRANSLIT_CHARS + "£" for c in t):
            continue
        try:
            tortoise_pairs.append([t, tortoise_cleaners(t)])
        except ValueError:
            continue
    norm_fixture = {
        "oracle": {**versions, "inflect": metadata.version("inflect"), "unidecode": metadata.version("unidecode")},
        "hf": hf_pairs,
        "tortoise": tortoise_pairs,
    }
    (FIXTURES / "tokenizer_normalizer.json").write_text(dump(norm_fixture), encoding="utf-8")
    (FIXTURES / "tokenizer_processor.json").write_text(dump(processor_fixture(tok, versions)), encoding="utf-8")
    print(f"wrote {len(cases)} id cases, {len(batches) + len(special_batches)} batches, "
          f"{len(hf_pairs)} + {len(tortoise_pairs)} normalizer cases")


if __name__ == "__main__":
    main()
