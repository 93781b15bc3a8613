"""``ClvpFeatureExtractor`` against transformers 4.46.3's NumPy extractor, and its input contract.

Expected values come from tests/fixtures/feature_extractor.{json,npz}, written by the oracle
(tests/golden/make_feature_extractor.py): mel filter banks, preprocessor_config.json texts, and the
features and masks of synthetic calls covering the padding rules (max_length, longest, do_not_pad,
truncation, pad_to_multiple_of, left padding, norms, short and one-sample clips) and of the real
LJ Speech clips. The bound is the project's 1e-4 in the log domain (docs/parity.md §5; the CPU path
measures ~1e-6).
The Triton path (``CLVP_KERNELS=triton``, Triton's interpreter on the CPU) runs the small calls;
the full-size LJ features through the kernel run under ``@requires_cuda``.
"""
import json
import os
import pickle
import subprocess
import sys
import warnings
from collections import UserDict

import numpy as np
import pytest
import soundfile as sf
import torch
from hypothesis import given

from clvp.feature_extraction import BatchFeature, ClvpFeatureExtractor, tortoise_mel_norms
from _asserts import assert_close_verbose
from clvp.data import path as data_path
from conftest import DATA, FIXTURES, LJ_CLIPS, ORACLE_DIR, ROOT, requires_cuda
from strategies import clip_batches

GOLDEN_BOUND = 1e-4

META = json.loads((FIXTURES / "feature_extractor.json").read_text())
CALLS = {c["name"]: c for c in META["calls"]}
SYNTHETIC = [n for n, c in CALLS.items() if not c.get("real_speech")]
REAL = [n for n, c in CALLS.items() if c.get("real_speech")]
TRITON_CALLS = ["default", "longest_multiple", "short_fold", "one_sample", "left_norms", "do_not_pad"]


@pytest.fixture(scope="module")
def golden():
    return np.load(FIXTURES / "feature_extractor.npz")


@pytest.fixture(scope="module")
def lj():
    return [sf.read(str(data_path(name)), dtype="float32")[0] for name in LJ_CLIPS]


def extractor(config: str) -> ClvpFeatureExtractor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # all-zero mel filters at 4 kHz with fmax 8 kHz (as the oracle warns)
        return ClvpFeatureExtractor(**META["configs"][config])


def call_inputs(spec, golden, lj=None):
    if spec == "lj":
        return lj
    if spec == "lj_short":
        return [c[:33075] for c in lj]
    clips = {k[len("clip."):]: golden[k] for k in golden.files if k.startswith("clip.")}
    if isinstance(spec, list):
        return [clips[n] for n in spec]
    kind, names = spec.split(":")
    if kind == "2d":
        return np.stack([clips[n] for n in names.split(",")])
    if kind == "list":
        return [float(v) for v in clips[names]]
    if kind == "f64":
        return clips[names].astype(np.float64)
    raise AssertionError(spec)


def check_call(name, golden, lj=None, device=None):
    call = CALLS[name]
    fe = extractor(call["config"])
    out = fe(call_inputs(call["input"], golden, lj), sampling_rate=fe.sampling_rate, return_tensors="np",
             device=device, **call["kwargs"])
    feats = out["input_features"]
    assert feats.dtype == np.float32
    if call.get("real_speech"):
        assert feats.shape == tuple(golden[f"{name}.shape"])
        assert np.array_equal(out["attention_mask"].sum(axis=1), golden[f"{name}.attention_mask_sum"])
        feats = feats[..., golden[f"{name}.frames"]]
    else:
        mask_key = f"{name}.attention_mask"
        if mask_key in golden.files:
            assert out["attention_mask"].dtype == golden[mask_key].dtype
            assert np.array_equal(out["attention_mask"], golden[mask_key]), "attention_mask differs from the oracle's"
        else:
            assert "attention_mask" not in out
    expected = golden[f"{name}.input_features"]
    err = np.abs(feats - expected).max()
    print(f"{name}: max |err| {err:.3g}")
    assert_close_verbose(feats, expected, atol=GOLDEN_BOUND, what=f"{name} input_features vs transformers")


# ---------------------------------------------------------------------------------------------
# against the oracle's fixtures
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("config", sorted(META["configs"]))
def test_mel_filters_match_transformers(config, golden):
    expected = golden[f"mel_filters.{config}"]
    fe = extractor(config)
    assert fe.mel_filters.shape == expected.shape and fe.mel_filters.dtype == np.float64
    np.testing.assert_allclose(fe.mel_filters, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("config", sorted(META["configs"]))
def test_preprocessor_config_is_what_transformers_writes(config, tmp_path):
    fe = extractor(config)
    assert fe.to_json_string() == META["preprocessor_config"][config]
    (tmp_path / "preprocessor_config.json").write_text(META["preprocessor_config"][config])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = ClvpFeatureExtractor.from_pretrained(tmp_path)
    assert loaded.to_dict() == fe.to_dict()
    np.testing.assert_array_equal(loaded.mel_filters, fe.mel_filters)


@pytest.mark.parametrize("name", SYNTHETIC)
def test_synthetic_calls_match_transformers(name, golden):
    check_call(name, golden)


@pytest.mark.parametrize("name", REAL)
def test_real_speech_matches_transformers(name, golden, lj):
    check_call(name, golden, lj)


@pytest.mark.parametrize("name", TRITON_CALLS)
def test_triton_path_matches_transformers(name, golden, kernels_backend):
    kernels_backend("triton")  # the kernel through kernels.log_mel (interpreter on the CPU)
    check_call(name, golden)


@requires_cuda
@pytest.mark.parametrize("name", REAL)
def test_cuda_real_speech_matches_transformers(name, golden, lj):
    check_call(name, golden, lj, device="cuda")


@requires_cuda
def test_cuda_returns_tensors_on_the_device():
    fe = ClvpFeatureExtractor(mel_norms="tortoise")
    clips = [np.random.default_rng(0).standard_normal(n).astype(np.float32) * 0.1 for n in (30000, 150000)]
    out = fe(clips, sampling_rate=22050, return_tensors="pt", device="cuda")
    assert out.input_features.is_cuda and out.attention_mask.is_cuda
    cpu = fe(clips, sampling_rate=22050, return_tensors="pt")
    assert_close_verbose(out.input_features, cpu.input_features, atol=GOLDEN_BOUND, what="CUDA vs CPU")
    gpu_in = fe([torch.from_numpy(c).cuda() for c in clips], sampling_rate=22050, return_tensors="pt")
    assert gpu_in.input_features.is_cuda  # device defaults to the input tensors'


# ---------------------------------------------------------------------------------------------
# defaults, norms, serialisation
# ---------------------------------------------------------------------------------------------


def test_defaults_match_reference_section_4():
    fe = ClvpFeatureExtractor()
    assert (fe.feature_size, fe.sampling_rate, fe.default_audio_length) == (80, 22050, 6)
    assert (fe.hop_length, fe.n_fft) == (256, 1024)
    assert (fe.chunk_length, fe.padding_value, fe.mel_norms, fe.return_attention_mask) == (30, 0.0, None, False)
    assert fe.mel_filters.shape == (513, 80)
    out = fe(np.zeros(1000, dtype=np.float32), sampling_rate=22050, return_tensors="pt")
    assert out.input_features.shape == (1, 80, 517) and out.attention_mask.shape == (1, 132300)
    assert int(out.attention_mask.sum()) == 1000
    # digital silence is clamped: log(1e-5) everywhere
    np.testing.assert_allclose(out.input_features[0, :, 10:].numpy(), np.log(1e-5), rtol=1e-6)


def test_tortoise_norms(golden):
    shared = json.loads((DATA / "tortoise" / "mel_norms.json").read_text())
    assert tortoise_mel_norms() == [float(v) for v in shared]
    assert len(shared) == 80 and all(v < 0 for v in shared)
    fe = ClvpFeatureExtractor(mel_norms="tortoise")
    assert fe.mel_norms == tortoise_mel_norms()
    assert fe.to_dict()["mel_norms"] == tortoise_mel_norms()  # written as numbers, as Hugging Face does
    x = np.random.default_rng(1).standard_normal(40000).astype(np.float32) * 0.2
    raw = ClvpFeatureExtractor()(x, sampling_rate=22050, return_tensors="np").input_features
    normed = fe(x, sampling_rate=22050, return_tensors="np").input_features
    np.testing.assert_allclose(normed, raw / np.asarray(shared, dtype=np.float32)[None, :, None], rtol=1e-6)


def test_save_and_load_round_trip(tmp_path):
    fe = small_extractor(padding_side="left", mel_norms=list(np.linspace(-2, -8, 10)), return_attention_mask=True)
    written = fe.save_pretrained(tmp_path / "fe")
    assert written == [str(tmp_path / "fe" / "preprocessor_config.json")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the 4 kHz config's empty mel filters
        loaded = ClvpFeatureExtractor.from_pretrained(tmp_path / "fe")
        assert loaded.to_dict() == fe.to_dict()
        assert ClvpFeatureExtractor.from_pretrained(written[0]).to_dict() == fe.to_dict()  # the file itself
        assert ClvpFeatureExtractor.from_pretrained(tmp_path / "fe", hop_length=100).hop_length == 100  # override
        assert ClvpFeatureExtractor.from_dict(fe.to_dict()).to_json_string() == fe.to_json_string()
    assert "ClvpFeatureExtractor" in repr(fe)


def test_loading_rejects_what_it_cannot_use(tmp_path):
    with pytest.raises(OSError, match="does not download"):
        ClvpFeatureExtractor.from_pretrained("susnato/clvp_dev")
    with pytest.raises(ValueError, match="WhisperFeatureExtractor"):
        ClvpFeatureExtractor.from_dict({"feature_extractor_type": "WhisperFeatureExtractor"})
    with pytest.warns(UserWarning, match="unknown"):
        fe = ClvpFeatureExtractor.from_dict({"feature_size": 80, "some_new_key": 1})
    assert fe.feature_size == 80 and fe.some_new_key == 1  # kept, as transformers keeps it
    with pytest.raises(ValueError, match="mel_norms has 3 values"):
        ClvpFeatureExtractor(mel_norms=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="'tortoise'"):
        ClvpFeatureExtractor(mel_norms="librosa")
    with pytest.raises(ValueError, match="padding_side"):
        ClvpFeatureExtractor(padding_side="middle")
    with pytest.raises(ValueError, match="hop_length"):
        ClvpFeatureExtractor(hop_length=0)


# ---------------------------------------------------------------------------------------------
# input layouts and return types (Hugging Face's test_call, test_double_precision_pad)
# ---------------------------------------------------------------------------------------------


def small_extractor(**kw):
    """The 4 kHz config of the fixtures (10 mels, n_fft 400, hop 160, 1 s = 4000 samples by default)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # mel filters above the 2 kHz Nyquist are empty
        return ClvpFeatureExtractor(**{**META["configs"]["small"], **kw})


def test_input_layouts_agree():
    fe = small_extractor()
    rng = np.random.default_rng(3)
    clips = [rng.standard_normal(n).astype(np.float32) * 0.3 for n in (800, 1400, 2000)]
    ref = fe(clips, sampling_rate=4000, return_tensors="np").input_features  # (3, 10, 26)
    assert ref.shape == (3, 10, 26)
    as_lists = fe([c.tolist() for c in clips], sampling_rate=4000, return_tensors="np").input_features
    as_tensors = fe([torch.from_numpy(c) for c in clips], sampling_rate=4000, return_tensors="np").input_features
    as_f64 = fe([c.astype(np.float64) for c in clips], sampling_rate=4000, return_tensors="np").input_features
    as_column = fe([c[:, None] for c in clips], sampling_rate=4000, return_tensors="np").input_features  # (N, 1)
    for other in (as_lists, as_tensors, as_f64, as_column):
        assert other.dtype == np.float32
        np.testing.assert_array_equal(other, ref)
    one = fe(clips[0], sampling_rate=4000, return_tensors="np").input_features
    np.testing.assert_array_equal(one, ref[:1])
    one_list = fe(clips[0].tolist(), sampling_rate=4000, return_tensors="np").input_features
    np.testing.assert_array_equal(one_list, ref[:1])
    same_length = np.stack([c[:800] for c in clips])
    as_2d = fe(same_length, sampling_rate=4000, return_tensors="np").input_features  # 2-D = a batch
    as_2d_tensor = fe(torch.from_numpy(same_length), sampling_rate=4000, return_tensors="np").input_features
    as_list = fe(list(same_length), sampling_rate=4000, return_tensors="np").input_features
    np.testing.assert_array_equal(as_2d, as_list)
    np.testing.assert_array_equal(as_2d_tensor, as_list)
    # integer PCM is scaled as soundfile reads it (x / 32768 for int16), where Hugging Face casts it to
    # float32 unscaled and gives features 2 * log(32768) off: a deliberate divergence (docs/model.md §4)
    ints = (clips[0] * 1000).astype(np.int16)
    np.testing.assert_array_equal(fe(ints, sampling_rate=4000, return_tensors="np").input_features,
                                  fe(ints.astype(np.float32) / 32768, sampling_rate=4000,
                                     return_tensors="np").input_features)


def test_return_types():
    fe = small_extractor()
    clips = [np.full(500, 0.1, np.float32), np.full(900, -0.2, np.float32)]
    none = fe(clips, sampling_rate=4000)
    assert isinstance(none, BatchFeature) and isinstance(none, dict)
    assert isinstance(none.input_features, list) and len(none.input_features) == 2
    assert all(isinstance(f, np.ndarray) and f.dtype == np.float32 and f.shape == (10, 26) for f in none.input_features)
    assert isinstance(none.attention_mask, np.ndarray) and none.attention_mask.dtype == np.int32
    pt = fe(clips, sampling_rate=4000, return_tensors="pt")
    assert isinstance(pt.input_features, torch.Tensor) and pt.input_features.dtype == torch.float32
    assert pt.input_features.shape == (2, 10, 26)
    assert pt.attention_mask.dtype == torch.int32 and pt.attention_mask.shape == (2, 4000)
    assert pt.attention_mask.sum(1).tolist() == [500, 900]
    assert pt["input_features"] is pt.input_features
    half = pt.to(torch.float16)
    assert half.input_features.dtype == torch.float16 and half.attention_mask.dtype == torch.int32
    assert pickle.loads(pickle.dumps(pt)).keys() == pt.keys()
    with pytest.raises(AttributeError, match="input_values"):
        pt.input_values
    no_mask = fe(clips, sampling_rate=4000, return_tensors="np", return_attention_mask=False)
    assert set(no_mask) == {"input_features"}
    default_mask = fe(clips, sampling_rate=4000, return_tensors="np", return_attention_mask=None)
    assert set(default_mask) == {"input_features"}  # the extractor's own default: False


def test_unpadded_clips_of_different_lengths_come_back_as_a_list():
    fe = small_extractor()
    clips = [np.full(500, 0.1, np.float32), np.full(900, -0.2, np.float32)]
    out = fe(clips, sampling_rate=4000, padding=False)
    assert [f.shape for f in out.input_features] == [(10, 1 + 500 // 160), (10, 1 + 900 // 160)]
    assert [m.shape for m in out.attention_mask] == [(500,), (900,)]
    alone = fe(clips[1], sampling_rate=4000, padding=False, return_tensors="np").input_features[0]
    np.testing.assert_array_equal(out.input_features[1], alone)
    with pytest.raises(ValueError, match="padding='longest'"):
        fe(clips, sampling_rate=4000, padding=False, return_tensors="pt")


def test_padding_value_override_and_truncation_keeps_the_head():
    fe = small_extractor()
    clip = np.random.default_rng(5).standard_normal(6000).astype(np.float32)
    out = fe(clip, sampling_rate=4000, return_tensors="np").input_features
    head = fe(clip[:4000], sampling_rate=4000, return_tensors="np").input_features
    np.testing.assert_array_equal(out, head)
    loud_pad = fe(clip[:1000], sampling_rate=4000, return_tensors="np", padding_value=1.0).input_features
    ones = np.concatenate([clip[:1000], np.ones(3000, np.float32)])
    np.testing.assert_array_equal(loud_pad, fe(ones, sampling_rate=4000, return_tensors="np").input_features)


@given(case=clip_batches())
def test_features_of_a_clip_do_not_depend_on_its_batch(case):
    """Row i of a batch equals clip i extracted alone and padded to the same length."""
    fe = small_extractor(default_audio_length=0.5)  # max_length 2000: some clips are truncated
    rng = np.random.default_rng(case["seed"])
    clips = [(rng.standard_normal(n) * rng.choice([1e-3, 0.3])).astype(np.float32) for n in case["lengths"]]
    batch = fe(clips, sampling_rate=4000, return_tensors="pt", padding=case["padding"])
    i = case["index"]
    padded = batch.attention_mask.shape[1]
    alone = fe(clips[i], sampling_rate=4000, return_tensors="pt", padding="max_length",
               max_length=padded, truncation=True)
    assert torch.equal(batch.attention_mask[i], alone.attention_mask[0])
    assert_close_verbose(batch.input_features[i], alone.input_features[0], atol=1e-6,
                         what=f"clip {i} in a batch of {len(clips)} vs alone")


# ---------------------------------------------------------------------------------------------
# errors that say what is wrong
# ---------------------------------------------------------------------------------------------


def test_rejects_a_different_sampling_rate():
    fe = ClvpFeatureExtractor()
    with pytest.raises(ValueError, match=r"sampling_rate=16000.*22050"):
        fe(np.zeros(100, np.float32), sampling_rate=16000)


def test_warns_without_a_sampling_rate():
    with pytest.warns(UserWarning, match="sampling_rate"):
        small_extractor()(np.zeros(100, np.float32))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_rejects_non_finite_samples(bad):
    clip = np.zeros(300, np.float32)
    clip[123] = bad
    with pytest.raises(ValueError, match=r"clip 1 has 1 NaN or infinite samples \(the first at index 123\)"):
        small_extractor()([np.zeros(50, np.float32), clip], sampling_rate=4000)
    with pytest.raises(ValueError, match="NaN or infinite"):
        small_extractor()(torch.from_numpy(clip), sampling_rate=4000)


def test_rejects_empty_input():
    fe = small_extractor()
    with pytest.raises(ValueError, match="clip 1 is empty"):
        fe([np.zeros(10, np.float32), np.zeros(0, np.float32)], sampling_rate=4000)
    with pytest.raises(ValueError, match="clip 0 is empty"):
        fe(np.zeros(0, np.float32), sampling_rate=4000)
    with pytest.raises(ValueError, match="raw_speech is empty"):
        fe([], sampling_rate=4000)


def test_rejects_several_channels():
    fe = small_extractor()
    stereo = np.zeros((2, 500), np.float32)
    with pytest.raises(ValueError, match=r"clip 0 has shape \(2, 500\): more than one channel"):
        fe([stereo], sampling_rate=4000)
    with pytest.raises(ValueError, match=r"clip 1 has shape \(500, 2\): more than one channel"):
        fe([np.zeros(100, np.float32), stereo.T], sampling_rate=4000)
    with pytest.raises(ValueError, match="3-D array"):
        fe(np.zeros((2, 2, 500), np.float32), sampling_rate=4000)


def test_rejects_bad_arguments():
    fe = small_extractor()
    x = np.zeros(100, np.float32)
    with pytest.raises(ValueError, match="return_tensors='tf'"):
        fe(x, sampling_rate=4000, return_tensors="tf")
    with pytest.raises(ValueError, match="padding='shortest'"):
        fe(x, sampling_rate=4000, padding="shortest")
    with pytest.raises(ValueError, match="max_length"):
        fe(x, sampling_rate=4000, max_length=0)
    with pytest.raises(TypeError, match="str"):
        fe("a.wav", sampling_rate=4000)
    with pytest.raises(ValueError, match="complex"):
        fe(np.zeros(10, np.complex64), sampling_rate=4000)
    with pytest.raises(ValueError, match="clip 1 is a single number"):
        fe([np.zeros(10, np.float32), np.float32(1.0)], sampling_rate=4000)


# ---------------------------------------------------------------------------------------------
# live oracle (only where .oracle/ exists)
# ---------------------------------------------------------------------------------------------

LIVE_ORACLE = r"""
import sys, numpy as np
from transformers import ClvpFeatureExtractor
from transformers.utils import logging
logging.set_verbosity_error()
rng = np.random.default_rng(11)
clips = [(rng.standard_normal(n) * a).astype(np.float32) for n, a in ((50000, 0.3), (140000, 1e-3), (9000, 0.05))]
out = ClvpFeatureExtractor(mel_norms=[-(1.0 + i / 10) for i in range(80)])(
    clips, sampling_rate=22050, return_tensors="np", padding="longest", max_length=150000)
np.savez(sys.argv[1], feats=out["input_features"], mask=out["attention_mask"], *clips)
"""


@pytest.mark.oracle
@pytest.mark.skipif(not ORACLE_DIR.is_dir(), reason="transformers 4.46.3 is not installed in .oracle/")
def test_live_oracle(tmp_path):
    path = tmp_path / "oracle.npz"
    env = {**os.environ, "PYTHONPATH": str(ORACLE_DIR)}
    proc = subprocess.run([sys.executable, "-c", LIVE_ORACLE, str(path)], env=env, cwd=ROOT, timeout=300,
                          capture_output=True, text=True)
    assert proc.returncode == 0, f"the oracle subprocess failed:\n{proc.stderr[-3000:]}"
    z = np.load(path)
    clips = [z[f"arr_{i}"] for i in range(3)]
    fe = ClvpFeatureExtractor(mel_norms=[-(1.0 + i / 10) for i in range(80)])
    out = fe(clips, sampling_rate=22050, return_tensors="np", padding="longest", max_length=150000)
    assert np.array_equal(out["attention_mask"], z["mask"])
    assert_close_verbose(out["input_features"], z["feats"], atol=GOLDEN_BOUND, what="live oracle")


# ------------------------------------------------------- pad() (what data collators call), live oracle
# The same code runs pad() on transformers 4.46.3's extractor (in a subprocess) and on ours, over every
# padding strategy, truncation, pad_to_multiple_of, both padding sides, feature_size 1 (1-D rows) and
# 80 ((frames, 80) rows), list / NumPy / tensor / list-of-dicts inputs and a given attention mask.
_PAD_CASES = """
import itertools
import numpy as np
import torch

def make_inputs(kind, fs):
    rng = np.random.RandomState(0)
    rows = [rng.randn(*((n,) if fs == 1 else (n, fs))) for n in (5, 3, 6)]
    rows[1] = rows[1].astype(np.float32)
    if kind == "list":
        return {"input_features": [r.tolist() for r in rows]}
    if kind == "pt":
        return {"input_features": [torch.tensor(r) for r in rows]}
    if kind == "dicts":
        return [{"input_features": r} for r in rows]
    if kind == "mask":
        return {"input_features": rows, "attention_mask": [[1, 1, 1, 0, 0], [1, 0, 1], [1] * 6]}
    return {"input_features": rows}

def plain(x):
    if isinstance(x, torch.Tensor):
        return ("pt", str(x.dtype), x.numpy())
    if isinstance(x, np.ndarray) and x.dtype == object:
        return ("object", [np.asarray(v) for v in x])
    if isinstance(x, np.ndarray):
        return ("np", str(x.dtype), x)
    return ("other", repr(x))

SETTINGS = [(True, None, False, None), ("longest", None, False, 4), ("max_length", 7, False, None),
            ("max_length", 4, True, None), ("max_length", 4, False, None), (False, None, False, None),
            ("do_not_pad", 4, True, None), ("max_length", 5, True, 3), (True, 4, True, None)]

def cases():
    for fs, side, kind in itertools.product((1, 80), ("right", "left"), ("np", "list", "pt", "dicts", "mask")):
        for (padding, max_length, truncation, multiple), (mask, tensors) in itertools.product(
                SETTINGS, [(None, None), (True, "np"), (False, "pt")]):
            yield dict(fs=fs, side=side, kind=kind, padding=padding, max_length=max_length, truncation=truncation,
                       pad_to_multiple_of=multiple, return_attention_mask=mask, return_tensors=tensors)

def run(make):
    out = []
    for c in cases():
        fe = make(feature_size=c["fs"], padding_side=c["side"])
        kwargs = {k: v for k, v in c.items() if k not in ("fs", "side", "kind")}
        try:
            result = fe.pad(make_inputs(c["kind"], c["fs"]), **kwargs)
            out.append({k: plain(v) for k, v in result.items()})
        except Exception as e:  # the class is what is compared
            out.append(("error", type(e).__name__))
    return out
"""
_PAD_ORACLE = _PAD_CASES + """
import pickle, sys
from transformers import ClvpFeatureExtractor
with open(sys.argv[1], "wb") as f:
    pickle.dump(run(ClvpFeatureExtractor), f)
"""


def _same_output(ours, theirs) -> bool:
    if isinstance(ours, tuple) or isinstance(theirs, tuple):
        return ours == theirs
    if set(ours) != set(theirs):
        return False
    for key in ours:
        a, b = ours[key], theirs[key]
        if a[0] != b[0]:
            return False
        if a[0] == "object":
            if len(a[1]) != len(b[1]):
                return False
            if not all(x.dtype == y.dtype and np.array_equal(x, y) for x, y in zip(a[1], b[1])):
                return False
        elif a[1] != b[1] or not np.array_equal(a[2], b[2]):
            return False
    return True


@pytest.mark.oracle
@pytest.mark.skipif(not ORACLE_DIR.is_dir(), reason="transformers 4.46.3 is not installed in .oracle/")
def test_pad_matches_live_oracle(tmp_path):
    path = tmp_path / "pad.pkl"
    proc = subprocess.run([sys.executable, "-c", _PAD_ORACLE, str(path)], cwd=ROOT, timeout=300, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(ORACLE_DIR)})
    assert proc.returncode == 0, f"the oracle subprocess failed:\n{proc.stderr[-3000:]}"
    theirs = pickle.loads(path.read_bytes())
    space: dict = {}
    exec(_PAD_CASES, space)
    ours = space["run"](ClvpFeatureExtractor)
    assert len(ours) == len(theirs) == 540
    # most cases compare arrays, not failures (the 96 that fail ask for one tensor of unpadded rows)
    assert sum(isinstance(t, tuple) for t in theirs) < 100
    wrong = [(c, o, t) for c, o, t in zip(space["cases"](), ours, theirs) if not _same_output(o, t)]
    assert not wrong, f"{len(wrong)} of {len(ours)} differ; first: {wrong[0]}"


def test_pad_pinned_from_the_oracle():
    # printed by transformers 4.46.3's ClvpFeatureExtractor(feature_size=1).pad
    fe = ClvpFeatureExtractor(feature_size=1)
    out = fe.pad({"input_features": [[0.5, 0.25, 1.0], [2.0]], "attention_mask": [[1, 0, 1], [1]]},
                 padding="max_length", max_length=4, return_attention_mask=True)
    assert out["input_features"].dtype == np.float32
    assert out["input_features"].tolist() == [[0.5, 0.25, 1.0, 0.0], [2.0, 0.0, 0.0, 0.0]]
    assert out["attention_mask"].tolist() == [[1, 0, 1, 0], [1, 0, 0, 0]]
    left = ClvpFeatureExtractor(feature_size=1, padding_side="left", return_attention_mask=True)
    out = left.pad([{"input_features": torch.tensor([1.0, 2.0, 3.0])}, {"input_features": torch.tensor([4.0])}])
    assert isinstance(out["input_features"], torch.Tensor) and out["attention_mask"].dtype == torch.int32
    assert out["input_features"].tolist() == [[1.0, 2.0, 3.0], [0.0, 0.0, 4.0]]
    assert out["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]


_CONFIG_ORACLE = """
import json, sys
from transformers import ClvpFeatureExtractor
out = {}
for name, kwargs in json.loads(sys.stdin.read()).items():
    fe = ClvpFeatureExtractor(**kwargs)
    out[name] = {"dict": fe.to_dict(), "json": fe.to_json_string(),
                 "reloaded": ClvpFeatureExtractor.from_dict(fe.to_dict()).to_dict()}
print(json.dumps(out))
"""


@pytest.mark.oracle
@pytest.mark.skipif(not ORACLE_DIR.is_dir(), reason="transformers 4.46.3 is not installed in .oracle/")
def test_config_with_extra_keys_matches_live_oracle():
    # transformers keeps unknown constructor keywords as attributes and processor_class apart
    configs = {"default": {}, "extra": {"foo": 1, "do_normalize": True},
               "processor": {"processor_class": "ClvpProcessor", "padding_side": "left", "mel_norms": [2.0] * 80}}
    proc = subprocess.run([sys.executable, "-c", _CONFIG_ORACLE], input=json.dumps(configs), capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(ORACLE_DIR)}, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    theirs = json.loads(proc.stdout)
    for name, kwargs in configs.items():
        fe = ClvpFeatureExtractor(**kwargs)
        assert fe.to_dict() == theirs[name]["dict"], name
        assert fe.to_json_string() == theirs[name]["json"], name
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the extra keys are reported
            assert ClvpFeatureExtractor.from_dict(fe.to_dict()).to_dict() == theirs[name]["reloaded"], name


def test_pad_takes_any_mapping():
    fe = ClvpFeatureExtractor(feature_size=1)
    out = fe.pad([UserDict({"input_features": np.ones(3)}), UserDict({"input_features": np.ones(1)})])
    assert out["input_features"].tolist() == [[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]]
