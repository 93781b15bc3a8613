"""``ClvpProcessor`` (clvp/processing.py) against transformers 4.46.3's ``ClvpProcessor``.

Expected values: tests/fixtures/tokenizer_processor.json (tests/golden/make_tokenizer.py: the
oracle's processor with its default feature extractor and the real vocabulary on two synthetic
clips), plus the parts' own outputs for the routing and the attention-mask rule.
"""
import json
import os
import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

from clvp.feature_extraction import ClvpFeatureExtractor
from clvp.processing import ClvpProcessor
from clvp.tokenization import ClvpTokenizer
from conftest import FIXTURES, ORACLE_DIR, ROOT

sys.path.insert(0, str(ROOT / "tests" / "golden"))
from make_tokenizer import processor_clips  # noqa: E402  (the clips are made in one place)

PROCESSOR = json.loads((FIXTURES / "tokenizer_processor.json").read_text(encoding="utf-8"))
CLIPS = processor_clips()
PROC = ClvpProcessor(ClvpFeatureExtractor(), ClvpTokenizer())
FEATURE_ATOL = 1e-4  # within 1e-4 of transformers' NumPy extractor (docs/parity.md §5)


def _call(proc, call):
    kwargs = dict(call)
    if "raw_speech" in kwargs:
        picked = [CLIPS["ab".index(c)] for c in kwargs["raw_speech"]]
        kwargs["raw_speech"] = picked[0] if len(picked) == 1 else picked
    return proc(**kwargs)


@pytest.mark.parametrize("case", PROCESSOR["calls"], ids=lambda c: json.dumps(c["call"]))
def test_matches_oracle(case):
    out = _call(PROC, case["call"])
    expected = case["output"]
    assert sorted(out.keys()) == expected["keys"]
    for key, value in expected.items():
        if key == "keys":
            continue
        got = out[key]
        if key == "input_features":
            got = np.asarray(got)
            assert list(got.shape) == value["shape"]
            np.testing.assert_allclose(got[:, :3, :6], value["first"], atol=FEATURE_ATOL, rtol=0)
            np.testing.assert_allclose(got.astype(np.float64).sum(axis=(1, 2)), value["sum"],
                                       atol=FEATURE_ATOL * got[0].size, rtol=0)
        elif isinstance(value, dict):  # the audio mask, as its shape and row sums
            got = np.asarray(got)
            assert list(got.shape) == value["shape"] and got.sum(axis=-1).tolist() == value["row_sums"]
        else:
            assert np.asarray(got).tolist() == value, key


def test_text_mask_is_never_replaced_by_the_audio_mask():
    texts = ["hi", "hello there"]
    out = PROC(text=texts, raw_speech=CLIPS, sampling_rate=22050, return_tensors="pt", text_kwargs={"padding": True})
    ids = PROC.tokenizer(texts, return_tensors="pt", padding=True)
    assert ids["attention_mask"].tolist() == [[1, 1, 0, 0, 0], [1, 1, 1, 1, 1]]
    assert torch.equal(out["input_ids"], ids["input_ids"])
    assert torch.equal(out["attention_mask"], ids["attention_mask"])
    assert out["attention_mask"].shape == (2, ids["input_ids"].shape[1])  # not (2, 132300) samples
    audio = PROC.feature_extractor(CLIPS, sampling_rate=22050, return_tensors="pt")
    torch.testing.assert_close(out["input_features"], audio["input_features"], atol=0, rtol=0)


def test_model_input_names_are_the_union_of_the_parts():
    names = set(PROC.feature_extractor.model_input_names) | set(PROC.tokenizer.model_input_names)
    assert set(PROC.model_input_names) == names
    assert PROCESSOR["model_input_names"] == PROC.model_input_names


def test_decode_and_batch_decode_forward_to_the_tokenizer():
    ids = PROC.tokenizer(["This is a test string", "hi"])["input_ids"]
    assert PROC.batch_decode(ids) == PROC.tokenizer.batch_decode(ids)
    assert PROC.decode(ids[0], clean_up_tokenization_spaces=True) == "this is a test string"


def test_routing_of_keyword_arguments():
    # text_kwargs / audio_kwargs reach one part only: a max_length in tokens vs one in samples
    out = PROC(text="hello there my friend", raw_speech=CLIPS[1], sampling_rate=22050, return_tensors="np",
               text_kwargs={"max_length": 3, "truncation": True}, audio_kwargs={"max_length": 4096})
    assert out["input_ids"].shape == (1, 3)
    assert out["input_features"].shape == (1, 80, 4096 // 256 + 1)
    # a shared keyword reaches both, as in transformers
    out = PROC(text=["a", "bb cc"], raw_speech=CLIPS, sampling_rate=22050, padding="longest", return_tensors="np")
    assert out["input_ids"].shape[1] == len(PROC.tokenizer("bb cc")["input_ids"])
    assert out["input_features"].shape[-1] == len(CLIPS[1]) // 256 + 1
    # device: the features are computed there and the text tensors moved there too
    out = PROC(text="hi", raw_speech=CLIPS[0], sampling_rate=22050, return_tensors="pt", device="cpu")
    assert out["input_ids"].device.type == out["input_features"].device.type == "cpu"


def test_save_and_load(tmp_path):
    proc = ClvpProcessor(ClvpFeatureExtractor(mel_norms="tortoise"), ClvpTokenizer(text_normalization="tortoise"))
    files = proc.save_pretrained(tmp_path)
    assert {p.rsplit("/", 1)[-1] for p in files} >= {"preprocessor_config.json", "tokenizer_config.json", "vocab.json",
                                                     "merges.txt", "special_tokens_map.json"}
    for name in ("preprocessor_config.json", "tokenizer_config.json"):
        assert json.loads((tmp_path / name).read_text())["processor_class"] == "ClvpProcessor"
    back = ClvpProcessor.from_pretrained(tmp_path)
    assert back.tokenizer.text_normalization == "tortoise"
    assert back.feature_extractor.mel_norms == proc.feature_extractor.mel_norms
    a = proc(text="The 21st of May.", raw_speech=CLIPS[0], sampling_rate=22050, return_tensors="pt")
    b = back(text="The 21st of May.", raw_speech=CLIPS[0], sampling_rate=22050, return_tensors="pt")
    assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["input_features"], b["input_features"])
    # keywords go to the part whose constructor takes them (HF test_processor: extra kwargs)
    extra = ClvpProcessor.from_pretrained(tmp_path, pad_token="(PAD)", padding_value=1.0)
    assert extra.tokenizer.pad_token == "(PAD)" and len(extra.tokenizer) == 257
    assert extra.feature_extractor.padding_value == 1.0


def test_defaults_are_the_real_front_end():
    proc = ClvpProcessor()
    assert len(proc.tokenizer) == 256
    assert proc(text="Hello world")["input_ids"] == [62, 84, 28, 2, 179, 79]


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: PROC(), ValueError, "text=, raw_speech="),
        (lambda: PROC("hello"), TypeError, "by keyword"),
        (lambda: PROC(text="hi", nonsense=1), TypeError, "nonsense"),
        (lambda: PROC(raw_speech=CLIPS[0], sampling_rate=16000), ValueError, "16000"),
        (lambda: ClvpProcessor(ClvpTokenizer(), ClvpTokenizer()), TypeError, "feature_extractor must be"),
        (lambda: ClvpProcessor(ClvpFeatureExtractor(), "tok"), TypeError, "tokenizer must be"),
        (lambda: ClvpProcessor.from_pretrained(ROOT, nonsense=1), TypeError, "nonsense"),
    ],
)
def test_bad_input(call, error, match):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(error, match=match):
            call()


# ------------------------------------------------------- transformers' keywords, against the live oracle
_LIVE_CALLS = [
    {"text": "hello there", "text_pair": "a pair"},
    {"text": ["hello there", "x"], "text_pair": ["a pair", "it's 5 o'clock"], "padding": True, "return_tensors": "np"},
    {"text": ["The quick brown fox.", "a b"], "truncation": True, "max_length": 5, "return_overflowing_tokens": True,
     "stride": 1},
    {"text": "hello there", "text_pair": "a pair", "truncation": "only_second", "max_length": 12,
     "return_token_type_ids": True, "return_special_tokens_mask": True, "return_length": True},
    {"text": ["a", "bc d"], "pad_to_max_length": True},
    {"text": ["hello", "there you"], "raw_speech": "ab", "sampling_rate": 22050, "return_tensors": "np"},
    {"text": "hello", "text_pair": "there", "raw_speech": "a", "sampling_rate": 22050, "return_tensors": "pt"},
    {"raw_speech": "ab", "sampling_rate": 22050, "return_tensors": "np", "padding": "longest"},
]
_LIVE_SCRIPT = """
import json, pickle, sys
import numpy as np
sys.path.insert(0, sys.argv[2])
from make_tokenizer import processor_clips
from transformers import ClvpFeatureExtractor, ClvpProcessor, ClvpTokenizer
from transformers.utils import logging
logging.set_verbosity_error()
d = sys.argv[1]
proc = ClvpProcessor(ClvpFeatureExtractor(), ClvpTokenizer(d + "/vocab.json", d + "/merges.txt"))
clips = processor_clips()
out = []
for call in json.loads(sys.stdin.read()):
    if "raw_speech" in call:
        picked = [clips["ab".index(c)] for c in call["raw_speech"]]
        call["raw_speech"] = picked[0] if len(picked) == 1 else picked
    result = proc(**call)
    out.append({k: [x.tolist() for x in v] if isinstance(v, list) and v and isinstance(v[0], np.ndarray)
                else v.tolist() if hasattr(v, "tolist") else v for k, v in result.items()})
sys.stdout.buffer.write(pickle.dumps(out))
"""


@pytest.mark.oracle
@pytest.mark.skipif(not ORACLE_DIR.exists(), reason="transformers 4.46.3 is not installed in .oracle")
def test_text_pairs_and_tokenizer_keywords_match_live_oracle():
    result = subprocess.run([sys.executable, "-c", _LIVE_SCRIPT, str(ROOT / "tests" / "data" / "hf_layout"),
                             str(ROOT / "tests" / "golden")], input=json.dumps(_LIVE_CALLS).encode(),
                            capture_output=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ORACLE_DIR)},
                            timeout=600)
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    theirs = pickle.loads(result.stdout)
    for call, expected in zip(_LIVE_CALLS, theirs):
        out = _call(PROC, call)
        assert sorted(out.keys()) == sorted(expected), call
        for key, value in expected.items():
            got = out[key]
            if key == "input_features":
                np.testing.assert_allclose(np.asarray(got), np.asarray(value), atol=FEATURE_ATOL, rtol=0)
            else:
                assert (got.tolist() if hasattr(got, "tolist") else got) == value, (call, key)
            assert type(got).__name__ == {"pt": "Tensor", "np": "ndarray"}.get(call.get("return_tensors"),
                                                                                type(got).__name__)


def test_saving_marks_the_parts_as_transformers_does(tmp_path):
    # transformers' save_pretrained marks the extractor itself, so a reloaded one equals it
    proc = ClvpProcessor(ClvpFeatureExtractor(), ClvpTokenizer())
    proc.save_pretrained(tmp_path)
    back = ClvpProcessor.from_pretrained(tmp_path)
    assert back.feature_extractor.to_json_string() == proc.feature_extractor.to_json_string()
    assert json.loads(proc.feature_extractor.to_json_string())["processor_class"] == "ClvpProcessor"
    assert back.tokenizer.get_vocab() == proc.tokenizer.get_vocab()
