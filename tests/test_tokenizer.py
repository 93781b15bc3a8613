"""``ClvpTokenizer`` (clvp/tokenization.py) against transformers 4.46.3's ``ClvpTokenizer``.

Expected values come from tests/fixtures/tokenizer_ids.json (made by tests/golden/make_tokenizer.py
with the oracle on the real vocabulary) and from docs/model.md §5 / docs/parity.md §7; the
properties (padding, batching, round trips) are checked with hypothesis; ``-m oracle`` also compares
against the live oracle on random texts (one subprocess per batch of texts).
"""
import json
import os
import shutil
import subprocess
import sys
import types
from collections import UserDict

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from clvp.tokenization import ClvpTokenizer
from conftest import DATA, FIXTURES, ORACLE_DIR, ROOT
from strategies import clvp_texts, vocab_texts

IDS = json.loads((FIXTURES / "tokenizer_ids.json").read_text(encoding="utf-8"))
HF_LAYOUT = DATA / "hf_layout"
TOK = ClvpTokenizer()  # the packaged real vocabulary
NUMBERS_SENTENCE = "hello and this is an example text and I have $1000. my lucky number is 12345."
# transformers' slow test_outputs_with_numbers (docs/parity.md §7.3)
NUMBERS_IDS = [62, 84, 28, 2, 53, 2, 147, 2, 54, 2, 43, 2, 169, 122, 29, 64, 2, 136, 37, 33, 2, 53, 2, 22, 2, 148, 2,
               110, 2, 40, 206, 53, 2, 134, 84, 59, 32, 9, 2, 125, 2, 25, 34, 197, 38, 2, 27, 231, 15, 44, 2, 54, 2, 33,
               100, 25, 76, 2, 40, 206, 53, 7, 2, 40, 46, 18, 2, 21, 97, 17, 219, 2, 87, 210, 8, 19, 22, 76, 9]


def _plain(enc) -> dict:
    return {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in enc.items()}


# ------------------------------------------------------------------------------- documented facts
def test_documented_ids():
    assert TOK("Hello world")["input_ids"] == [62, 84, 28, 2, 179, 79]
    assert TOK(" Hello world")["input_ids"] == [2, 62, 84, 28, 2, 179, 79]
    assert TOK(NUMBERS_SENTENCE)["input_ids"] == NUMBERS_IDS
    assert TOK("This is an example text.")["input_ids"] == [147, 2, 54, 2, 43, 2, 169, 122, 29, 64, 2, 136, 37, 33, 9]


def test_vocabulary_facts():
    assert IDS["oracle"]["transformers"] == "4.46.3"
    assert (len(TOK), TOK.vocab_size) == (IDS["len"], IDS["vocab_size"]) == (256, 255)
    special = IDS["special_ids"]
    assert (TOK.bos_token_id, TOK.eos_token_id, TOK.pad_token_id, TOK.unk_token_id) == (
        special["bos"], special["eos"], special["pad"], special["unk"]) == (255, 0, 0, 1)
    assert TOK.all_special_ids == special["all"]
    assert TOK.convert_tokens_to_ids(["[SPACE]", "th", "<|endoftext|>", "zz"]) == [2, 40, 255, 1]
    assert TOK.convert_ids_to_tokens([2, 40, 255, 0]) == ["[SPACE]", "th", "<|endoftext|>", "[STOP]"]
    assert TOK.model_input_names == ["input_ids", "attention_mask"]


# ------------------------------------------------------------------------------ oracle fixtures
@pytest.mark.parametrize("case", IDS["cases"], ids=lambda c: repr(c["text"])[:40])
def test_matches_oracle(case):
    text = case["text"]
    assert TOK(text)["input_ids"] == case["input_ids"]
    assert TOK.encode(text) == case["input_ids"]
    assert TOK.tokenize(text) == case["tokens"]
    assert TOK.decode(case["input_ids"]) == case["decode"]
    assert TOK.decode(case["input_ids"], clean_up_tokenization_spaces=True) == case["decode_clean"]
    assert TOK.decode(case["input_ids"], skip_special_tokens=True) == case["decode_skip"]


def test_riding_hood_is_covered():
    assert IDS["riding_hood_sentences"] > 30
    texts = [c["text"] for c in IDS["cases"]]
    assert TOK(texts)["input_ids"] == [c["input_ids"] for c in IDS["cases"]]


@pytest.mark.parametrize("case", IDS["batches"], ids=lambda c: json.dumps(c["kwargs"]))
def test_batches_match_oracle(case):
    assert _plain(TOK(case["texts"], **case["kwargs"])) == case["output"]
    if case["kwargs"].get("padding") and "max_length" not in case["kwargs"]:
        for return_tensors in ("np", "pt"):
            out = TOK(case["texts"], return_tensors=return_tensors, **case["kwargs"])
            assert isinstance(out["input_ids"], np.ndarray if return_tensors == "np" else torch.Tensor)
            assert out["input_ids"].dtype in (np.int64, torch.int64)
            assert _plain(out) == case["output"]


@pytest.mark.parametrize("case", IDS["bos_eos_batches"], ids=lambda c: json.dumps(c["kwargs"]))
def test_bos_eos_match_oracle(case):
    tok = ClvpTokenizer(add_bos_token=True, add_eos_token=True)
    assert _plain(tok(case["texts"], **case["kwargs"])) == case["output"]


def test_bos_only_matches_oracle():
    tok = ClvpTokenizer(add_bos_token=True)
    for text, ids in IDS["bos_only"].items():
        assert tok(text)["input_ids"] == ids


def test_special_tokens_beyond_the_vocabulary_match_oracle():
    extra = IDS["extra_specials"]
    tok = ClvpTokenizer(pad_token="<pad>", additional_special_tokens=["<x>"])
    assert len(tok) == extra["len"] and tok.all_special_ids == extra["all_special_ids"]
    for case in extra["cases"]:
        ids = case["input_ids"]
        assert tok(case["text"])["input_ids"] == ids
        assert tok.decode(ids) == case["decode"]
        assert tok.decode(ids, skip_special_tokens=True) == case["decode_skip"]
        assert tok.decode(ids, spaces_between_special_tokens=False) == case["decode_nospace"]
        assert tok.decode(ids, clean_up_tokenization_spaces=True) == case["decode_clean"]
    assert _plain(tok(extra["padded"]["texts"], **extra["padded"]["kwargs"])) == extra["padded"]["output"]


def test_single_text_as_tensors_has_a_batch_of_one():
    out = TOK("Hello world", return_tensors="pt")
    assert out["input_ids"].tolist() == [[62, 84, 28, 2, 179, 79]] and out.attention_mask.shape == (1, 6)
    assert TOK([], return_tensors="np")["input_ids"].shape == (0, 0)


def test_batch_decode_matches_oracle():
    case = IDS["batch_decode"]
    assert TOK.batch_decode(case["ids"]) == case["plain"]
    assert TOK.batch_decode(np.array([r + [0] * (6 - len(r)) for r in case["ids"]]))[0] == case["plain"][0]
    assert TOK.batch_decode(case["ids"], skip_special_tokens=True) == case["skip"]
    assert TOK.batch_decode(case["ids"], clean_up_tokenization_spaces=True) == case["clean"]
    assert TOK.decode(torch.tensor(case["ids"][0])) == case["plain"][0]


def test_small_hf_test_vocabulary(tmp_path):
    small = IDS["small_vocab"]
    (tmp_path / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(small["vocab"])}), encoding="utf-8")
    (tmp_path / "merges.txt").write_text("\n".join(small["merges"]), encoding="utf-8")
    tok = ClvpTokenizer(tmp_path / "vocab.json", tmp_path / "merges.txt", unk_token="<unk>")
    assert len(tok) == small["len"]
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id, tok.unk_token_id) == tuple(
        small["special_ids"][k] for k in ("bos", "eos", "pad", "unk"))
    # transformers' small-vocabulary test (docs/model.md §5.2)
    assert tok.tokenize("lower newer") == ["l", "o", "w", "er", "[SPACE]", "n", "e", "w", "er"]
    assert tok.convert_tokens_to_ids(tok.tokenize("lower newer") + ["<unk>"]) == [0, 1, 2, 15, 21, 9, 3, 2, 15, 19]
    for case in small["cases"]:
        assert tok.tokenize(case["text"]) == case["tokens"]
        assert tok(case["text"])["input_ids"] == case["input_ids"]
        assert tok.decode(case["input_ids"]) == case["decode"]
    assert _plain(tok(small["padded"]["texts"], **small["padded"]["kwargs"])) == small["padded"]["output"]


# ---------------------------------------------------------------------- what HF documents, fixed
def test_add_prefix_space():
    for text, ids in IDS["prefixed"].items():
        assert ClvpTokenizer(add_prefix_space=True)(text)["input_ids"] == ids
        assert TOK(text, add_prefix_space=True)["input_ids"] == ids
    assert TOK("hello")["input_ids"] == TOK(" hello", add_prefix_space=False)["input_ids"][1:]


def test_is_split_into_words_puts_a_space_before_each_word():
    for joined, per_word in IDS["split_words"].items():
        expected = [i for ids in per_word for i in ids]
        assert TOK(joined.split(" "), is_split_into_words=True)["input_ids"] == expected
    batch = [w.split(" ") for w in IDS["split_words"]]
    out = TOK(batch, is_split_into_words=True)["input_ids"]
    assert out == [[i for ids in per_word for i in ids] for per_word in IDS["split_words"].values()]


def test_special_tokens_mask_marks_bos_and_eos():
    tok = ClvpTokenizer(add_bos_token=True, add_eos_token=True)
    out = tok("hi", return_special_tokens_mask=True)
    assert out["input_ids"] == [255, 21, 22, 0]
    assert out["special_tokens_mask"] == [1, 0, 0, 1]


# ----------------------------------------------------------------------------- loading, saving
def test_loads_every_layout_with_the_same_ids(tmp_path):
    sample = [c["text"] for c in IDS["cases"][:20]]
    expected = [c["input_ids"] for c in IDS["cases"][:20]]
    hf = ClvpTokenizer(HF_LAYOUT / "vocab.json", HF_LAYOUT / "merges.txt")
    tortoise = ClvpTokenizer(tokenizer_file=DATA / "tortoise" / "tokenizer.json")
    from_dir = ClvpTokenizer.from_pretrained(HF_LAYOUT)
    shutil.copy(DATA / "tortoise" / "tokenizer.json", tmp_path / "tokenizer.json")
    from_tortoise_dir = ClvpTokenizer.from_pretrained(tmp_path)
    from_tortoise_file = ClvpTokenizer.from_pretrained(tmp_path / "tokenizer.json")
    for tok in (hf, tortoise, from_dir, from_tortoise_dir, from_tortoise_file):
        assert len(tok) == 256
        assert tok(sample)["input_ids"] == expected


def test_loads_a_tokenizer_saved_by_transformers(tmp_path):
    saved = IDS["saved"]
    for name, text in saved["files"].items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(HF_LAYOUT / name, tmp_path / name)
    tok = ClvpTokenizer.from_pretrained(tmp_path)
    assert len(tok) == saved["len"] and tok.pad_token_id == saved["pad_token_id"]
    assert tok.add_bos_token and tok.clean_up_tokenization_spaces
    assert _plain(tok(saved["batch"]["texts"], **saved["batch"]["kwargs"])) == saved["batch"]["output"]
    assert tok.decode(tok("Hello world, how are you?")["input_ids"]) == saved["decode_default"]


def test_save_pretrained_writes_transformers_files(tmp_path):
    files = TOK.save_pretrained(tmp_path)
    oracle_files = IDS["default_saved_files"]
    assert sorted(p.rsplit("/", 1)[-1] for p in files) == sorted(oracle_files)
    for name, text in oracle_files.items():
        ours = json.loads((tmp_path / name).read_text(encoding="utf-8")) if name.endswith(".json") else \
            (tmp_path / name).read_text(encoding="utf-8")
        theirs = json.loads(text) if name.endswith(".json") else text
        if name == "tokenizer_config.json":  # our extra settings, each at transformers' default
            extra = {k: ours.pop(k) for k in set(ours) - set(theirs)}
            assert extra == {"padding_side": "right", "truncation_side": "right", "split_special_tokens": False,
                             "text_normalization": "hf"}
        assert ours == theirs, name


def test_save_load_round_trip(tmp_path):
    tok = ClvpTokenizer(text_normalization="tortoise", add_eos_token=True, pad_token="<pad>",
                        additional_special_tokens=["<x>"])
    tok.save_pretrained(tmp_path)
    back = ClvpTokenizer.from_pretrained(tmp_path)
    assert back.text_normalization == "tortoise"
    assert back.get_vocab() == tok.get_vocab() and len(back) == 258
    texts = ["It's the 21st of May, 1995.", "café <x> ok", "x"]
    assert _plain(back(texts, padding=True)) == _plain(tok(texts, padding=True))
    assert ClvpTokenizer.from_pretrained(tmp_path, text_normalization="hf").text_normalization == "hf"
    vocab_file, merges_file = TOK.save_vocabulary(tmp_path, filename_prefix="p")
    assert json.loads(open(vocab_file, encoding="utf-8").read()) == json.loads(
        (HF_LAYOUT / "vocab.json").read_text(encoding="utf-8"))
    assert open(merges_file, encoding="utf-8").read() == (HF_LAYOUT / "merges.txt").read_text(encoding="utf-8")


def test_pickles_and_copies():  # DataLoader workers receive the tokenizer pickled
    import copy
    import pickle

    tok = ClvpTokenizer(text_normalization="tortoise", add_bos_token=True)
    texts = ["1995 hello [STOP]", "x y z", "a_b"]
    for _ in range(5):  # the "Ġ" -> [SPACE] mapping once got lost at random in the Rust BPE's serialisation
        for back in (pickle.loads(pickle.dumps(tok)), copy.deepcopy(tok)):
            assert back.text_normalization == "tortoise"
            assert back(texts)["input_ids"] == tok(texts)["input_ids"]
            assert back.tokenize(texts[1]) == ["x", "[SPACE]", "y", "[SPACE]", "z"]


def test_tortoise_normalization_changes_only_the_text():
    tok = ClvpTokenizer(text_normalization="tortoise")
    assert tok("21st")["input_ids"] == TOK("twenty-first")["input_ids"]
    assert tok("1995 café")["input_ids"] == TOK("nineteen ninety-five cafe")["input_ids"]
    tok.text_normalization = "hf"
    assert tok("21st")["input_ids"] == TOK("21st")["input_ids"]


# ------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: TOK(5), TypeError, "text must be a str or a list of str"),
        (lambda: TOK(["a", 3]), TypeError, "containing int"),
        (lambda: TOK(None), ValueError, "text is required"),
        (lambda: TOK("a b", is_split_into_words=True), TypeError, "list of words"),
        (lambda: TOK("a", padding="most"), ValueError, "padding must be"),
        (lambda: TOK("a", truncation="only_third"), ValueError, "truncation must be"),
        (lambda: TOK("a", max_length=-1), ValueError, "max_length must be"),
        (lambda: TOK("a", return_tensors="tf"), ValueError, "return_tensors must be"),
        (lambda: TOK(["a", "b c"], return_tensors="pt"), ValueError, "different lengths"),
        (lambda: TOK(["a"], padding="max_length"), ValueError, "needs max_length"),
        (lambda: TOK("a", nonsense=1), TypeError, "nonsense"),
        (lambda: TOK.decode([300]), ValueError, "not in the vocabulary"),
        (lambda: TOK.decode("abc"), TypeError, "token ids"),
        (lambda: ClvpTokenizer(text_normalization="x"), ValueError, "text_normalization"),
        (lambda: ClvpTokenizer(HF_LAYOUT / "vocab.json"), ValueError, "both vocab_file and merges_file"),
        (lambda: ClvpTokenizer(errors="nope"), ValueError, "error handler"),
        (lambda: ClvpTokenizer.from_pretrained("susnato/clvp_dev"), FileNotFoundError, "local"),
        (lambda: ClvpTokenizer(padding_side="up"), ValueError, "padding_side"),
    ],
)
def test_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()


# ------------------------------------------------------------------------------------ properties
@given(texts=st.lists(clvp_texts(), min_size=1, max_size=5), side=st.sampled_from(["left", "right"]),
       extra=st.integers(0, 4), tensors=st.sampled_from([None, "np"]))
def test_padding_never_changes_the_tokens(texts, side, extra, tensors):
    plain = TOK(texts)["input_ids"]
    longest = max(map(len, plain))
    for kwargs in ({"padding": True}, {"padding": "max_length", "max_length": longest + extra}):
        out = TOK(texts, padding_side=side, return_tensors=tensors, **kwargs)
        ids, mask = np.asarray(out["input_ids"]), np.asarray(out["attention_mask"])
        assert ids.shape == (len(texts), longest if kwargs["padding"] is True else longest + extra)
        for row, m, expected in zip(ids, mask, plain):
            assert row[m == 1].tolist() == expected
            assert (row[m == 0] == TOK.pad_token_id).all()
            assert m.sum() == len(expected)
            kept = np.flatnonzero(m)
            if len(kept):  # the real tokens are contiguous, on the padding side's other end
                assert kept[-1] - kept[0] + 1 == len(kept)
                assert (kept[0] == 0) if side == "right" else (kept[-1] == len(m) - 1)


@given(texts=st.lists(clvp_texts(), max_size=6), normalization=st.sampled_from(["hf", "tortoise"]))
def test_batch_equals_one_by_one(texts, normalization):
    tok = TOK if normalization == "hf" else ClvpTokenizer(text_normalization="tortoise")
    batch = tok(texts)["input_ids"]
    assert batch == [tok(t)["input_ids"] for t in texts]
    assert all(0 <= i < len(tok) for ids in batch for i in ids)


@given(text=vocab_texts(), normalization=st.sampled_from(["hf", "tortoise"]))
def test_decode_encode_round_trips_the_normalized_text(text, normalization):
    tok = TOK if normalization == "hf" else ClvpTokenizer(text_normalization="tortoise")
    ids = tok.encode(text)
    assert tok.decode(ids).replace("[SPACE]", " ") == tok.normalizer(text)
    assert tok.convert_tokens_to_string(tok.tokenize(text)).replace("[SPACE]", " ") == tok.normalizer(text)


@given(text=clvp_texts(), max_length=st.integers(0, 12))
def test_truncation_keeps_a_prefix(text, max_length):
    # transformers 4.46.3 never cuts a sequence to nothing: max_length=0 means no limit, and a cut that
    # would remove every id leaves the sequence whole (it logs an error)
    full = TOK(text)["input_ids"]
    assert TOK(text, truncation=True, max_length=max_length)["input_ids"] == (full[:max_length] if max_length else full)
    tok = ClvpTokenizer(add_bos_token=True, add_eos_token=True, truncation_side="left")
    cut = tok(text, truncation=True, max_length=max_length + 2)["input_ids"]
    kept = full[max(len(full) - max_length, 0):] if max_length else full
    assert cut == [255] + kept + [0]


# --------------------------------------------------------------------------------- live oracle
_ORACLE_SCRIPT = """
import json, sys
from transformers import ClvpTokenizer
from transformers.utils import logging
logging.set_verbosity_error()
d = sys.argv[1]
tok = ClvpTokenizer(d + "/vocab.json", d + "/merges.txt")
texts = json.loads(sys.stdin.read())
out = []
for t in texts:
    try:
        ids = tok(t)["input_ids"]
        out.append([ids, tok.decode(ids), tok.decode(ids, clean_up_tokenization_spaces=True)])
    except ValueError as e:  # transformers raises on "$,5" (int(",5"))
        out.append(None)
print(json.dumps(out))
"""


@pytest.mark.oracle
@pytest.mark.skipif(not ORACLE_DIR.exists(), reason="transformers 4.46.3 is not installed in .oracle")
@settings(max_examples=2, deadline=None)
@given(texts=st.lists(clvp_texts(max_pieces=20), min_size=100, max_size=100))
def test_matches_live_oracle(texts):
    result = subprocess.run([sys.executable, "-c", _ORACLE_SCRIPT, str(HF_LAYOUT)], input=json.dumps(texts),
                            capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ORACLE_DIR)},
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    for text, expected in zip(texts, json.loads(result.stdout)):
        if expected is None:
            continue
        ids, decoded, cleaned = expected
        assert TOK(text)["input_ids"] == ids, repr(text)
        assert TOK.decode(ids) == decoded and TOK.decode(ids, clean_up_tokenization_spaces=True) == cleaned


_ORACLE_LOAD_SCRIPT = """
import json, sys
from transformers import ClvpTokenizer
from transformers.utils import logging
logging.set_verbosity_error()
tok = ClvpTokenizer.from_pretrained(sys.argv[1])
texts = json.loads(sys.stdin.read())
print(json.dumps({"len": len(tok), "special": tok.all_special_ids, "add_eos": tok.add_eos_token,
                  "batch": tok(texts, padding=True)["input_ids"]}))
"""


@pytest.mark.oracle
@pytest.mark.skipif(not ORACLE_DIR.exists(), reason="transformers 4.46.3 is not installed in .oracle")
def test_transformers_loads_our_saved_files(tmp_path):
    tok = ClvpTokenizer(add_eos_token=True, pad_token="<pad>", text_normalization="tortoise")
    tok.save_pretrained(tmp_path)
    texts = ["Hello world", "It's 5 o'clock.", "x"]
    result = subprocess.run([sys.executable, "-c", _ORACLE_LOAD_SCRIPT, str(tmp_path)], input=json.dumps(texts),
                            capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ORACLE_DIR)},
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    theirs = json.loads(result.stdout)
    assert theirs["len"] == len(tok) and theirs["special"] == tok.all_special_ids and theirs["add_eos"]
    # same ids: these texts read the same under both normalizations
    assert theirs["batch"] == tok(texts, padding=True)["input_ids"]


# ------------------------------------------------ transformers' encoding API, against the live oracle
# Each case is JSON: {"init": constructor kwargs, "method": name, "args": [...], "kwargs": {...}}; the
# same code (_RUN_CASES) runs it on the oracle's ClvpTokenizer (in a subprocess) and on ours, and the
# outputs (or the exception's class) must be equal. {"__pt__": x} / {"__np__": x} stand for tensors.
_RUN_CASES = """
import json
import numpy as np
import torch

def build(x):
    if isinstance(x, dict) and "__added__" in x:  # an AddedToken (ADDED: the side's own kind)
        return ADDED(**x["__added__"])
    if isinstance(x, dict) and "__pt__" in x:
        return torch.tensor(x["__pt__"])
    if isinstance(x, dict) and "__np__" in x:
        return np.array(x["__np__"])
    if isinstance(x, dict):
        return {k: build(v) for k, v in x.items()}
    if isinstance(x, list):
        return [build(v) for v in x]
    return x

def plain(x):
    if isinstance(x, (torch.Tensor, np.ndarray)):
        return {"type": type(x).__name__, "dtype": str(x.dtype).replace("torch.", ""), "value": x.tolist()}
    if hasattr(x, "keys"):
        return {k: plain(x[k]) for k in x.keys()}
    if isinstance(x, (list, tuple)):
        return [plain(v) for v in x]
    return x

def run_cases(make, cases):
    out, made = [], {}
    for case in cases:
        key = json.dumps(case["init"], sort_keys=True)
        if key not in made:
            made[key] = make(**case["init"])
        try:
            result = getattr(made[key], case["method"])(*build(case["args"]), **build(case["kwargs"]))
            out.append(plain(result))
        except Exception as e:  # the class is what is compared
            out.append({"error": type(e).__name__})
    return out
"""
_ORACLE_CASES_SCRIPT = _RUN_CASES + """
import sys
from transformers import AddedToken as ADDED, ClvpTokenizer
from transformers.utils import logging
logging.set_verbosity_error()
d = sys.argv[1]
print(json.dumps(run_cases(lambda **kw: ClvpTokenizer(d + "/vocab.json", d + "/merges.txt", **kw),
                           json.loads(sys.stdin.read()))))
"""
_ours = {"ADDED": types.SimpleNamespace}  # ours takes any object with .content (and .lstrip / .rstrip)
exec(_RUN_CASES, _ours)

TEXTS = ["hello there", "a pair", "The quick brown fox jumps over it.", "x", "It's 5 o'clock, [UNK] ok"]


def _call_cases() -> list[dict]:
    """__call__ on a text, a pair, a batch and a batch of pairs, under every padding and truncation
    strategy, with overflowing tokens and a stride, lengths, token types and special-token masks."""
    inputs = [([TEXTS[0]], {}), ([TEXTS[2], TEXTS[1]], {}), ([TEXTS], {}), ([TEXTS[:3], TEXTS[2:]], {}),
              ([], {"text": TEXTS[3], "text_pair": TEXTS[4]})]
    cases = []
    for args, named in inputs:
        for padding in (False, True, "longest", "max_length", "do_not_pad"):
            for truncation in (None, True, False, "longest_first", "only_first", "only_second"):
                for max_length in (None, 3, 9):
                    if padding == "max_length" and max_length is None:
                        continue  # transformers warns and does not pad; ours raises (docs/model.md §5.5)
                    kwargs = dict(named, padding=padding, truncation=truncation, max_length=max_length,
                                  return_length=True, return_special_tokens_mask=True, return_token_type_ids=True)
                    cases.append({"init": {}, "method": "__call__", "args": args, "kwargs": kwargs})
                    if truncation in ("only_first", "only_second", True) and max_length is not None:
                        cases.append({"init": {}, "method": "__call__", "args": args,
                                      "kwargs": dict(named, padding=padding, truncation=truncation,
                                                     max_length=max_length, stride=2,
                                                     return_overflowing_tokens=True)})
    for side in ("left", "right"):
        for args in ([TEXTS[2]], [TEXTS[2], TEXTS[0]], [TEXTS[:2], TEXTS[2:4]]):
            for trunc in ("only_first", "only_second", "longest_first"):
                cases.append({"init": {"truncation_side": side, "padding_side": side}, "method": "__call__",
                              "args": args, "kwargs": {"truncation": trunc, "max_length": 7, "padding": "max_length",
                                                       "pad_to_multiple_of": 7}})
    return cases


def _other_cases() -> list[dict]:
    bos_eos = {"add_bos_token": True, "add_eos_token": True}
    batch = [{"input_ids": [5, 6, 7], "attention_mask": [1, 1, 0]}, {"input_ids": [8], "attention_mask": [1]}]
    calls = [
        ("encode", [TEXTS[0], TEXTS[1]], {}), ("encode", [[62, 84, 28], [14]], {}), ("encode", [["h", "i"]], {}),
        ("encode", [TEXTS[2], TEXTS[0]], {"truncation": "only_first", "max_length": 6}),
        ("encode", [TEXTS[0]], {"return_tensors": "pt"}), ("encode_plus", [TEXTS[0], TEXTS[1]], {}),
        ("encode_plus", [TEXTS[0], TEXTS[1]], {"return_tensors": "np", "padding": "max_length", "max_length": 16}),
        ("encode_plus", [TEXTS[2]], {"max_length": 5, "truncation": True, "stride": 1,
                                     "return_overflowing_tokens": True, "return_tensors": "pt"}),
        ("batch_encode_plus", [[[TEXTS[0], TEXTS[1]], [TEXTS[2], TEXTS[3]]]], {"padding": True}),
        ("batch_encode_plus", [[[TEXTS[0], TEXTS[1]], TEXTS[3]]], {"return_tensors": None}),
        ("__call__", [TEXTS[:2]], {"pad_to_max_length": True}),
        ("__call__", [TEXTS[:2]], {"pad_to_max_length": True, "max_length": 12}),
        ("__call__", [TEXTS[:2]], {"padding": True, "return_tensors": "pt"}),
        ("__call__", [TEXTS[:2], TEXTS[2:4]], {"padding": True, "return_tensors": "np"}),
        ("encode_plus", [["hello", "there"], ["a", "pair"]], {}),  # lists of tokens
        ("__call__", [TEXTS[0]], {"text_target": TEXTS[1]}), ("__call__", [], {"text_target": TEXTS[1]}),
        ("__call__", [TEXTS[:2], TEXTS[:1]], {}), ("__call__", [TEXTS[:2], TEXTS[0]], {}),
        ("__call__", [TEXTS[0]], {"return_offsets_mapping": True}),
        ("__call__", [TEXTS[0]], {"return_token_type_ids": True, "add_special_tokens": False}),
        ("__call__", [TEXTS[0], TEXTS[1]], {"truncation": "longest_first", "max_length": 4,
                                            "return_overflowing_tokens": True}),
        ("__call__", [TEXTS[0]], {"return_special_tokens_mask": True, "add_special_tokens": False}),
        ("__call__", ["hi [UNK] <|endoftext|> [STOP]"], {"return_special_tokens_mask": True}),
        ("prepare_for_model", [[5, 6, 7], [8, 9]], {}),
        ("prepare_for_model", [[5, 6, 7], [8, 9]], {"return_tensors": "pt", "padding": "max_length",
                                                    "max_length": 8, "return_token_type_ids": True}),
        ("prepare_for_model", [[5, 6, 7, 8]], {"truncation": True, "max_length": 2, "stride": 1,
                                               "return_overflowing_tokens": True}),
        ("truncate_sequences", [[1, 2, 3, 4, 5], [6, 7]], {"num_tokens_to_remove": 3}),
        ("truncate_sequences", [[1, 2, 3, 4, 5], [6, 7]], {"num_tokens_to_remove": 2, "stride": 2,
                                                           "truncation_strategy": "only_first"}),
        ("truncate_sequences", [[1, 2, 3], [6, 7, 8, 9]], {"num_tokens_to_remove": 2, "stride": 1,
                                                           "truncation_strategy": "only_second"}),
        ("truncate_sequences", [[1, 2], [6]], {"num_tokens_to_remove": 5}),
        ("pad", [batch], {}), ("pad", [batch], {"return_attention_mask": False}),
        ("pad", [batch], {"padding": "max_length", "max_length": 6, "padding_side": "left"}),
        ("pad", [batch], {"pad_to_multiple_of": 4, "return_tensors": "pt"}),
        ("pad", [{"input_ids": [[5, 6, 7], [8]], "special_tokens_mask": [[0, 0, 0], [0]],
                  "token_type_ids": [[0, 0, 1], [1]]}], {}),
        ("pad", [{"input_ids": [5, 6]}], {"padding": "max_length", "max_length": 4}),
        ("pad", [{"input_ids": {"__pt__": [[5, 6, 7], [8, 9, 0]]},
                  "attention_mask": {"__pt__": [[1, 1, 1], [1, 1, 0]]}}], {"padding": "max_length", "max_length": 5}),
        ("pad", [[{"input_ids": {"__np__": [5, 6, 7]}}, {"input_ids": {"__np__": [8]}}]], {}),
        ("pad", [{"attention_mask": [[1]]}], {}),
        ("create_token_type_ids_from_sequences", [[5, 6], [7]], {}),
        ("get_special_tokens_mask", [[1, 0, 5, 255]], {"already_has_special_tokens": True}),
        ("num_special_tokens_to_add", [], {"pair": True}),
        ("convert_ids_to_tokens", [[62, 84, 0, 255]], {"skip_special_tokens": True}),
        ("convert_tokens_to_ids", [["[SPACE]", "zz", "<|endoftext|>"]], {}),
        ("decode", [[62, 84, 28, 2, 1, 0, 255]], {"skip_special_tokens": True}),
        ("batch_decode", [[[62, 84, 28, 2, 0], [14, 1]]], {"clean_up_tokenization_spaces": True}),
        ("tokenize", [TEXTS[4]], {}),
    ]
    cases = [{"init": {}, "method": m, "args": a, "kwargs": k} for m, a, k in calls]
    cases += [{"init": bos_eos, "method": m, "args": a, "kwargs": k} for m, a, k in [
        ("__call__", [TEXTS[0], TEXTS[1]], {}), ("__call__", [TEXTS[:2], TEXTS[2:4]], {"padding": True}),
        ("__call__", [TEXTS[2], TEXTS[1]], {"truncation": "only_first", "max_length": 9, "return_length": True}),
        ("num_special_tokens_to_add", [], {"pair": True}), ("build_inputs_with_special_tokens", [[5], [6]], {})]]
    cases += [{"init": init, "method": "__call__", "args": [TEXTS[:2]], "kwargs": {"padding": True}} for init in (
        {"padding_side": "left", "model_max_length": 5}, {"do_lower_case": True, "verbose": False},
        {"model_input_names": ["input_ids"]}, {"clean_up_tokenization_spaces": True, "processor_class": "X"})]
    cases.append({"init": {"model_max_length": 4}, "method": "__call__", "args": [TEXTS[:2]],
                  "kwargs": {"padding": "max_length", "truncation": True}})
    # one tokenizer changed step by step (its own init, so the others stay as made)
    steps = [("add_tokens", [["th", "hello"]], {}), ("add_tokens", ["hello"], {}),
             ("add_tokens", [["<s1>"]], {"special_tokens": True}), ("__len__", [], {}),
             ("tokenize", ["say hello <s1>x the"], {}),
             ("__call__", ["a <s1> b hello the"], {"return_special_tokens_mask": True}),
             ("decode", [[14, 2, 257, 2, 15, 2, 256]], {"skip_special_tokens": True}),
             ("add_special_tokens", [{"cls_token": "<cls>", "additional_special_tokens": ["<a>"]}], {}),
             ("__getattribute__", ["all_special_tokens"], {}), ("__getattribute__", ["all_special_ids"], {}),
             ("__getattribute__", ["special_tokens_map"], {}), ("__getattribute__", ["cls_token_id"], {}),
             ("add_special_tokens", [{"additional_special_tokens": ["<b>"]}],
              {"replace_additional_special_tokens": False}),
             ("__getattribute__", ["additional_special_tokens"], {}),
             ("add_special_tokens", [{"pad_token": "<pad>"}], {}), ("__getattribute__", ["pad_token_id"], {}),
             ("__call__", [["a <cls> b", "x"]], {"padding": True}), ("get_vocab", [], {})]
    cases += [{"init": {"errors": "strict"}, "method": m, "args": a, "kwargs": k} for m, a, k in steps]
    # AddedTokens that drop the whitespace around them, special tokens set by id, a batch of pairs
    def added(content):
        return {"__added__": {"content": content, "lstrip": True, "rstrip": True}}
    text = ">>>>|||<||<<|<< aaaaa bbbbbb low cccccccccdddddddd <<<<<|||>|>>>>|> l"
    steps = [("add_tokens", [[added("aaaaa bbbbbb"), added("cccccccccdddddddd")]], {}),
             ("encode", ["aaaaa bbbbbb low cccccccccdddddddd l"], {"add_special_tokens": False}),
             ("tokenize", ["x aaaaa bbbbbb low cccccccccdddddddd l"], {}),
             ("add_special_tokens", [{"eos_token": added(">>>>|||<||<<|<<"), "pad_token": added("<<<<<|||>|>>>>|>")}],
              {}),
             ("encode", [text], {"add_special_tokens": False}), ("tokenize", [text], {}), ("__len__", [], {}),
             ("__call__", [[["hello there", "a pair"], ["x", "y"]]], {"padding": True}),
             ("__setattr__", ["bos_token_id", None], {}), ("__getattribute__", ["bos_token"], {}),
             ("__setattr__", ["bos_token_id", 40], {}), ("__getattribute__", ["bos_token"], {}),
             ("__setattr__", ["additional_special_tokens_ids", [41]], {}),
             ("__getattribute__", ["additional_special_tokens"], {})]
    cases += [{"init": {"errors": "ignore"}, "method": m, "args": a, "kwargs": k} for m, a, k in steps]
    return cases


@pytest.mark.oracle
@pytest.mark.skipif(not ORACLE_DIR.exists(), reason="transformers 4.46.3 is not installed in .oracle")
def test_encoding_api_matches_live_oracle():
    cases = _call_cases() + _other_cases()
    result = subprocess.run([sys.executable, "-c", _ORACLE_CASES_SCRIPT, str(HF_LAYOUT)], input=json.dumps(cases),
                            capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ORACLE_DIR)},
                            timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    theirs = json.loads(result.stdout)
    ours = _ours["run_cases"](lambda **kw: ClvpTokenizer(HF_LAYOUT / "vocab.json", HF_LAYOUT / "merges.txt", **kw),
                              cases)
    assert len(theirs) == len(cases) > 300
    # most cases compare outputs, not just failures (the 30 pairs asking for overflowing tokens
    # under "longest_first" must fail)
    assert sum(isinstance(t, dict) and "error" in t for t in theirs) < 40
    wrong = [(case, o, t) for case, o, t in zip(cases, ours, theirs) if o != t]
    assert not wrong, f"{len(wrong)} of {len(cases)} differ; first: {wrong[0]}"


@pytest.mark.oracle
@pytest.mark.skipif(not ORACLE_DIR.exists(), reason="transformers 4.46.3 is not installed in .oracle")
def test_transformers_loads_our_added_tokens(tmp_path):
    tok = ClvpTokenizer()
    tok.add_tokens(["hello", "<new>"])
    tok.add_special_tokens({"cls_token": "<cls>", "additional_special_tokens": ["<a>"]})
    tok.save_pretrained(tmp_path)
    texts = ["say hello <new>x", "<cls> a <a> b", "x"]
    result = subprocess.run([sys.executable, "-c", _ORACLE_LOAD_SCRIPT, str(tmp_path)], input=json.dumps(texts),
                            capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ORACLE_DIR)},
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    theirs = json.loads(result.stdout)
    assert theirs["len"] == len(tok) == 260 and theirs["special"] == tok.all_special_ids
    assert theirs["batch"] == tok(texts, padding=True)["input_ids"]
    back = ClvpTokenizer.from_pretrained(tmp_path)
    assert back.get_vocab() == tok.get_vocab() and back.cls_token == "<cls>"
    assert back(texts, padding=True)["input_ids"] == theirs["batch"]


# ------------------------------------------- transformers' encoding API: pinned oracle values
# (printed by transformers 4.46.3's ClvpTokenizer on the real vocabulary, tests/data/hf_layout)
def test_pairs_overflow_and_targets_pinned_from_the_oracle():
    assert _plain(TOK("hello there", max_length=4, truncation=True, return_overflowing_tokens=True, stride=2)) == {
        "overflowing_tokens": [28, 2, 172], "num_truncated_tokens": 1, "input_ids": [62, 84, 28, 2],
        "attention_mask": [1, 1, 1, 1]}
    out = TOK("a b c d", "e f g h", truncation="only_second", max_length=6, return_overflowing_tokens=True, stride=1)
    # the second text is too short to lose 8 ids: both stay whole (transformers logs an error)
    assert out["input_ids"] == [14, 2, 15, 2, 16, 2, 17, 18, 2, 19, 2, 20, 2, 21]
    assert (out["overflowing_tokens"], out["num_truncated_tokens"]) == ([], 8)
    assert TOK.encode([5, 6, 7], [8]) == [5, 6, 7, 8] and TOK.encode(["h", "i"]) == [21, 22]
    assert _plain(TOK("a b", text_target="cd")) == {"input_ids": [14, 2, 15], "attention_mask": [1, 1, 1],
                                                    "labels": [16, 17]}
    assert TOK(["a", "bcd e"], pad_to_max_length=True)["input_ids"] == [[14, 0, 0, 0, 0], [15, 16, 17, 2, 18]]
    # return_length: after padding for one text, before it for a batch
    assert TOK("hello", padding="max_length", max_length=8, return_length=True)["length"] == 8
    assert TOK(["hello"], padding="max_length", max_length=8, return_length=True)["length"] == [3]
    one = TOK.prepare_for_model([5, 6, 7], [8, 9], return_tensors="np")
    assert one["input_ids"].tolist() == [5, 6, 7, 8, 9] and one["attention_mask"].shape == (5,)
    with pytest.raises(NotImplementedError):
        TOK("a", return_offsets_mapping=True)


def test_pad_keeps_a_given_mask_pinned_from_the_oracle():
    batch = {"input_ids": [[1, 2, 3], [4]], "attention_mask": [[1, 0, 1], [1]]}
    assert _plain(TOK.pad(batch)) == {"input_ids": [[1, 2, 3], [4, 0, 0]], "attention_mask": [[1, 0, 1], [1, 0, 0]]}
    # transformers leaves a given mask unpadded when return_attention_mask=False
    assert _plain(TOK.pad(batch, return_attention_mask=False)) == {"input_ids": [[1, 2, 3], [4, 0, 0]],
                                                                   "attention_mask": [[1, 0, 1], [1]]}
    assert _plain(TOK.pad({"input_ids": [1, 2, 3]}, padding="max_length", max_length=5)) == {
        "input_ids": [1, 2, 3, 0, 0], "attention_mask": [1, 1, 1, 0, 0]}
    out = TOK.pad([{"input_ids": [1, 2, 3], "length": 3}, {"input_ids": [4], "length": 1}], return_tensors="pt")
    assert out["input_ids"].tolist() == [[1, 2, 3], [4, 0, 0]] and out["length"].tolist() == [3, 1]
    assert out["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    # a collator's tensors come back as tensors
    tensors = TOK.pad({"input_ids": torch.tensor([[5, 6], [7, 0]]), "attention_mask": torch.tensor([[1, 1], [1, 0]])},
                      padding="max_length", max_length=3)
    assert tensors["input_ids"].tolist() == [[5, 6, 0], [7, 0, 0]]
    assert tensors["attention_mask"].tolist() == [[1, 1, 0], [1, 0, 0]]


def test_special_tokens_mask_flags_only_added_tokens():
    # transformers: [UNK] and <|endoftext|> in the text are not flagged; only tokens the tokenizer adds
    out = TOK("hi [UNK] <|endoftext|>", return_special_tokens_mask=True)
    assert out["input_ids"] == [21, 22, 2, 1, 2, 255] and out["special_tokens_mask"] == [0] * 6
    assert TOK("hi [UNK]", return_special_tokens_mask=True, add_special_tokens=False)["special_tokens_mask"] == [0] * 4
    assert TOK.get_special_tokens_mask([1, 0, 5, 255], already_has_special_tokens=True) == [1, 1, 0, 1]


def test_token_types_and_special_mask_line_up_with_bos_and_eos():
    # ids from the oracle; transformers' token types ([0, 0, 1, 1]) and mask ([1, 0, 0, 1, 0, 0]) are
    # shorter than them, ours line up (docs/model.md §5.5)
    tok = ClvpTokenizer(add_bos_token=True, add_eos_token=True)
    out = tok("hi", "yo", return_token_type_ids=True, return_special_tokens_mask=True)
    assert out["input_ids"] == [255, 21, 22, 0, 255, 38, 28, 0]
    assert out["token_type_ids"] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert out["special_tokens_mask"] == [1, 0, 0, 1, 1, 0, 0, 1]
    batch = tok(["hi", "a"], ["yo", "abc d"], return_token_type_ids=True, padding=True, return_tensors="pt")
    assert batch["token_type_ids"].shape == batch["input_ids"].shape == (2, 9)


def test_constructor_takes_what_transformers_takes():
    # as the oracle: do_lower_case kept in init_kwargs (and unused), max_len is model_max_length, no mask
    tok = ClvpTokenizer(do_lower_case=True, verbose=False, processor_class="ClvpProcessor", max_len=7,
                        model_input_names=["input_ids"], cls_token="<cls>")
    assert tok.init_kwargs["do_lower_case"] is True and tok("A")["input_ids"] == TOK("A")["input_ids"]
    assert tok.verbose is False and tok.model_max_length == 7 and tok.cls_token_id == 256
    assert _plain(tok(["a", "bc"], padding=True)) == {"input_ids": [[14, 0], [15, 16]]}
    assert tok.max_len_single_sentence == 7
    assert ClvpTokenizer(add_bos_token=True).max_len_sentences_pair == int(1e30) - 2


def test_add_tokens_pinned_from_the_oracle():
    tok = ClvpTokenizer()
    assert (tok.add_tokens(["th", "hello"]), tok.add_tokens("hello"), tok.add_tokens(["<s1>"], special_tokens=True)) \
        == (1, 0, 1)
    assert len(tok) == 258 and tok.all_special_tokens == ["<|endoftext|>", "[STOP]", "[UNK]", "<s1>"]
    assert tok("a <s1> b hello")["input_ids"] == [14, 2, 257, 2, 15, 2, 256]
    assert tok.decode([14, 2, 257, 2, 15], skip_special_tokens=True) == "a[SPACE][SPACE]b"
    assert tok.add_special_tokens({"cls_token": "<cls>", "additional_special_tokens": ["<a>"]}) == 2
    assert tok.all_special_tokens == ["<|endoftext|>", "[STOP]", "[UNK]", "<cls>", "<a>"]
    assert tok.add_special_tokens({"additional_special_tokens": ["<b>"]}, replace_additional_special_tokens=False) == 1
    assert tok.additional_special_tokens == ["<a>", "<b>"]


def test_pad_takes_any_mapping_and_ids_set_tokens():
    # transformers' BatchEncoding is a UserDict (a Mapping, not a dict); data collators hand those to pad
    rows = [UserDict({"input_ids": [1, 2, 3]}), UserDict({"input_ids": [4]})]
    assert _plain(TOK.pad(rows)) == {"input_ids": [[1, 2, 3], [4, 0, 0]], "attention_mask": [[1, 1, 1], [1, 0, 0]]}
    tok = ClvpTokenizer()
    tok.bos_token_id = None  # transformers: setting an id sets the token
    assert (tok.bos_token, tok.bos_token_id) == (None, None)
    tok.pad_token_id = 40
    assert tok.pad_token == "th" and tok(["a", "bc"], padding=True)["input_ids"] == [[14, 40], [15, 16]]
    assert (tok.is_fast, tok.pad_token_type_id, tok.init_inputs) == (False, 0, ())
    assert {"vocab_file", "merges_file", "errors", "add_prefix_space"} <= set(tok.init_kwargs)


def test_warns_once_about_ids_longer_than_model_max_length(caplog):
    # transformers logs this once per tokenizer when untruncated ids exceed model_max_length
    tok = ClvpTokenizer(model_max_length=3)
    with caplog.at_level("WARNING", logger="clvp.encoding"):
        assert len(tok("hello there")["input_ids"]) == 5
        tok(["hello there"])
    # transformers' wording, so that filters written for it keep working
    expected = "Token indices sequence length is longer than the specified maximum sequence length for this model (5 > 3)"
    assert len([r for r in caplog.records if r.getMessage().startswith(expected)]) == 1
    caplog.clear()
    tok.deprecation_warnings = {}  # transformers' way to hear it again
    with caplog.at_level("WARNING", logger="clvp.encoding"):
        tok("hello there")
    assert len([r for r in caplog.records if r.getMessage().startswith(expected)]) == 1
    caplog.clear()
    with caplog.at_level("WARNING", logger="clvp.encoding"):
        ClvpTokenizer(model_max_length=3)("hello there", verbose=False)
        tok("hello there", truncation=True)
    assert not caplog.records
