"""Golden fixtures for ``ClvpFeatureExtractor``, made by the oracle (transformers 4.46.3, NumPy).

Run from the repository root with the oracle on the path (never in the library's own environment):

    PYTHONPATH=.oracle python tests/golden/make_feature_extractor.py

Writes
* ``tests/fixtures/feature_extractor.json``: oracle version, the oracle's ``preprocessor_config.json``
  text for each extractor config, and the list of calls (config, clips, keyword arguments);
* ``tests/fixtures/feature_extractor.npz`` (compressed): the mel filter banks, the synthetic clips,
  and for every call its ``input_features`` and ``attention_mask``. The real-speech calls (the two
  LJ Speech clips clvp/data/voice_lj.wav and clvp/data/voice_lj_2.wav, read as float32 with
  soundfile) keep a subset of frames, listed in ``<call>.frames``, to keep the file small.

This script imports only transformers, numpy and soundfile, never ``clvp`` or ``kernels``.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import soundfile as sf

import transformers
from transformers import ClvpFeatureExtractor
from transformers.utils import logging

logging.set_verbosity_error()  # the oracle warns on every call without sampling_rate

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
LJ = [ROOT / "clvp" / "data" / name for name in ("voice_lj.wav", "voice_lj_2.wav")]  # the two LJ Speech clips
TORTOISE_NORMS = json.loads((ROOT / "clvp" / "data" / "mel_norms.json").read_text())

# Extractor configs: the real one, with Tortoise's norms, and small ones for the padding rules
# (n_fft = 400 is a multiple of 4 but not a power of two: the kernel's masked tails).
CONFIGS = {
    "default": {},
    "tortoise": {"mel_norms": TORTOISE_NORMS},
    "small": dict(feature_size=10, sampling_rate=4000, hop_length=160, n_fft=400, default_audio_length=1,
                  chunk_length=8),
    "small_norms_left": dict(feature_size=10, sampling_rate=4000, hop_length=160, n_fft=400, default_audio_length=1,
                             chunk_length=8, padding_side="left",
                             mel_norms=[float(v) for v in np.linspace(-2.0, -8.0, 10)]),
    "tester": dict(feature_size=10, sampling_rate=4000, hop_length=160, chunk_length=8),  # HF's own test config
}

# Synthetic clips (small config, 4 kHz): speech-like bursts, a quiet one, a short one (< n_fft / 2,
# so the reflect padding folds more than once) and a one-sample clip.
rng = np.random.default_rng(1234)


def _burst(n, amp):
    t = np.arange(n) / 4000.0
    tone = np.sin(2 * np.pi * 220 * t) * np.sin(2 * np.pi * 3 * t) ** 2
    return (amp * (tone + 0.1 * rng.standard_normal(n))).astype(np.float32)


CLIPS = {
    "a": _burst(1000, 0.5),
    "b": _burst(5000, 0.3),
    "c": _burst(2500, 1e-3),  # quiet: most bins near the 1e-5 clamp
    "d": _burst(100, 0.2),  # shorter than n_fft / 2 = 200
    "e": np.array([0.25], dtype=np.float32),  # one sample
}
CLIPS["a_rev"] = CLIPS["a"][::-1].copy()

# (name, config, input, kwargs); input: list of clip names, "2d:<names>" (a 2-D array batch),
# "list:<name>" (one clip as a list of floats), "f64:<name>" (one float64 array)
SMALL_CALLS = [
    ("default", "small", ["a", "b", "c"], {}),
    ("longest", "small", ["a", "b", "c"], {"padding": "longest"}),
    ("longest_multiple", "small", ["a", "b", "c"],
     {"padding": "longest", "max_length": 3000, "pad_to_multiple_of": 512}),
    ("longest_no_trunc", "small", ["a", "b", "c"], {"padding": "longest", "truncation": False}),
    ("max_length_no_mask", "small", ["a", "b", "c"], {"max_length": 2048, "return_attention_mask": False}),
    ("max_length_multiple", "small", ["a", "c"], {"pad_to_multiple_of": 1000}),
    ("max_length_rounded", "small", ["a", "c"], {"max_length": 1500, "pad_to_multiple_of": 1024}),
    ("list_of_floats", "small", "list:a", {}),
    ("array_2d", "small", "2d:a,a_rev", {"padding": "longest"}),
    ("do_not_pad", "small", ["a", "a_rev"], {"padding": "do_not_pad"}),
    ("float64", "small", "f64:b", {}),
    ("short_fold", "small", ["d"], {"padding": "longest"}),
    ("one_sample", "small", ["e"], {"padding": False}),
    ("left_norms", "small_norms_left", ["a", "b", "c", "d"], {"padding": "longest", "max_length": 3000}),
    ("left_default", "small_norms_left", ["a", "c"], {}),
    ("tester", "tester", ["b", "a"], {}),
]


def _read_lj():
    clips = []
    for path in LJ:
        data, rate = sf.read(str(path), dtype="float32")
        assert rate == 22050 and data.ndim == 1, (path, rate, data.shape)
        clips.append(data)
    return clips


def _inputs(spec):
    if isinstance(spec, list):
        return [CLIPS[n] for n in spec]
    kind, names = spec.split(":")
    if kind == "2d":
        return np.stack([CLIPS[n] for n in names.split(",")])
    if kind == "list":
        return [float(v) for v in CLIPS[names]]
    if kind == "f64":
        return CLIPS[names].astype(np.float64)
    raise ValueError(spec)


def main():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "mel filter has all zero values" for the 4 kHz configs
        extractors = {name: ClvpFeatureExtractor(**cfg) for name, cfg in CONFIGS.items()}
    arrays = {f"clip.{n}": c for n, c in CLIPS.items()}
    for name, fe in extractors.items():
        arrays[f"mel_filters.{name}"] = fe.mel_filters
    meta = {
        "oracle": f"transformers {transformers.__version__}",
        "numpy": np.__version__,
        "configs": {name: cfg for name, cfg in CONFIGS.items()},
        "preprocessor_config": {name: fe.to_json_string() for name, fe in extractors.items()},
        "calls": [],
    }

    for name, cfg, spec, kwargs in SMALL_CALLS:
        fe = extractors[cfg]
        sr = fe.sampling_rate
        out = fe(_inputs(spec), sampling_rate=sr, return_tensors="np", **kwargs)
        arrays[f"{name}.input_features"] = np.asarray(out["input_features"], dtype=np.float32)
        if "attention_mask" in out:
            arrays[f"{name}.attention_mask"] = np.asarray(out["attention_mask"])
        meta["calls"].append({"name": name, "config": cfg, "input": spec, "kwargs": kwargs})

    # Real speech: the two LJ Speech clips (9.6 s and 9.0 s at 22.05 kHz).
    lj = _read_lj()
    lj_calls = [
        # the defaults: truncated to 6 s (517 frames), no norms; every frame kept
        ("lj_default", "default", "lj", {}, None),
        # Tortoise's norms on the whole clips (padding to the longest, 831 frames); every 4th frame + the tail
        ("lj_tortoise_longest", "tortoise", "lj", {"padding": "longest", "max_length": 10 * 22050},
         lambda t: np.unique(np.concatenate([np.arange(0, t, 4), np.arange(t - 8, t)]))),
        # 1.5 s clips padded with silence to 6 s: every 4th frame + the speech/silence boundary
        ("lj_short_padded", "tortoise", "lj_short", {},
         lambda t: np.unique(np.concatenate([np.arange(0, t, 4), np.arange(120, 142)]))),
    ]
    for name, cfg, spec, kwargs, pick in lj_calls:
        fe = extractors[cfg]
        clips = lj if spec == "lj" else [c[: 33075] for c in lj]
        out = fe(clips, sampling_rate=22050, return_tensors="np", **kwargs)
        feats = np.asarray(out["input_features"], dtype=np.float32)
        frames = np.arange(feats.shape[-1]) if pick is None else pick(feats.shape[-1])
        arrays[f"{name}.input_features"] = feats[..., frames]
        arrays[f"{name}.frames"] = frames
        arrays[f"{name}.attention_mask_sum"] = np.asarray(out["attention_mask"]).sum(axis=1)
        arrays[f"{name}.shape"] = np.asarray(feats.shape)
        meta["calls"].append({"name": name, "config": cfg, "input": spec, "kwargs": kwargs, "real_speech": True})

    FIXTURES.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(FIXTURES / "feature_extractor.npz", **arrays)
    (FIXTURES / "feature_extractor.json").write_text(json.dumps(meta, indent=1) + "\n")
    size = (FIXTURES / "feature_extractor.npz").stat().st_size
    print(f"wrote {len(arrays)} arrays ({size / 1e3:.0f} kB) and {len(meta['calls'])} calls with {meta['oracle']}")


if __name__ == "__main__":
    main()
