"""transformers' SequenceFeatureExtractionTestMixin (which includes FeatureExtractionSavingTestMixin)
on ClvpFeatureExtractor, plus CLVP's own call checks on synthetic audio (no dataset download)."""
import os
import random
import tempfile
import unittest

import numpy as np
import torch

from harness import classes
from hf_tests.test_sequence_feature_extraction_common import SequenceFeatureExtractionTestMixin

ClvpFeatureExtractor = classes.ClvpFeatureExtractor

_RNG = random.Random(0)


def floats_list(shape, scale=1.0):
    """A nested list of uniform floats in [0, scale), shape (rows, cols)."""
    return [[_RNG.random() * scale for _ in range(shape[1])] for _ in range(shape[0])]


def synthetic_clip(seconds: float, sampling_rate: int, pitch_hz: float = 220.0) -> np.ndarray:
    """A decaying tone with a little noise: (samples,) float32 in [-1, 1], a stand-in for speech."""
    t = np.arange(int(seconds * sampling_rate)) / sampling_rate  # (samples,)
    noise = np.random.default_rng(1).normal(0.0, 0.01, t.shape)
    return (0.5 * np.sin(2 * np.pi * pitch_hz * t) * np.exp(-t) + noise).astype(np.float32)


class ClvpFeatureExtractionTester:
    def __init__(self, parent, batch_size=7, min_seq_length=400, max_seq_length=2000, feature_size=10):
        self.parent = parent
        self.batch_size = batch_size
        self.min_seq_length = min_seq_length
        self.max_seq_length = max_seq_length
        self.seq_length_diff = (max_seq_length - min_seq_length) // (batch_size - 1)
        self.feature_size = feature_size
        self.hop_length = 160
        self.chunk_length = 8
        self.padding_value = 0.0
        self.sampling_rate = 4000
        self.return_attention_mask = False

    def prepare_feat_extract_dict(self):
        return {
            "feature_size": self.feature_size,
            "hop_length": self.hop_length,
            "chunk_length": self.chunk_length,
            "padding_value": self.padding_value,
            "sampling_rate": self.sampling_rate,
            "return_attention_mask": self.return_attention_mask,
        }

    def prepare_inputs_for_common(self, equal_length=False, numpify=False):
        # equal_length: batch_size rows of max_seq_length; otherwise lengths grow from min_seq_length
        lengths = (
            [self.max_seq_length] * self.batch_size
            if equal_length
            else range(self.min_seq_length, self.max_seq_length, self.seq_length_diff)
        )
        speech = [floats_list((n, self.feature_size)) for n in lengths]  # each (n, feature_size)
        return [np.asarray(x) for x in speech] if numpify else speech


class ClvpFeatureExtractionTest(SequenceFeatureExtractionTestMixin, unittest.TestCase):
    feature_extraction_class = ClvpFeatureExtractor

    def setUp(self):
        self.feat_extract_tester = ClvpFeatureExtractionTester(self)

    def assert_same_dict(self, a, b):
        # the filter bank, where serialised, round-trips as floats; everything else exactly
        filters_a, filters_b = a.pop("mel_filters", None), b.pop("mel_filters", None)
        self.assertEqual(filters_a is None, filters_b is None)
        if filters_a is not None:
            np.testing.assert_allclose(np.asarray(filters_a), np.asarray(filters_b), atol=1e-6)
        self.assertEqual(a, b)

    def test_feat_extract_from_and_save_pretrained(self):
        first = self.feature_extraction_class(**self.feat_extract_dict)
        with tempfile.TemporaryDirectory() as tmp:
            first.save_pretrained(tmp)
            second = self.feature_extraction_class.from_pretrained(tmp)
        self.assert_same_dict(first.to_dict(), second.to_dict())

    def test_feat_extract_to_json_file(self):
        first = self.feature_extraction_class(**self.feat_extract_dict)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "feat_extract.json")
            first.to_json_file(path)
            second = self.feature_extraction_class.from_json_file(path)
        self.assert_same_dict(first.to_dict(), second.to_dict())

    def test_call(self):
        extractor = self.feature_extraction_class(**self.feat_extract_dict)
        speech = [floats_list((1, n))[0] for n in range(800, 1400, 200)]  # lists of floats, lengths 800..1200
        arrays = [np.asarray(x) for x in speech]
        features = extractor(arrays, padding="max_length", return_tensors="np").input_features
        self.assertEqual(features.ndim, 3)
        self.assertEqual(features.shape[-2], extractor.feature_size)
        single = extractor(arrays[0], return_tensors="np").input_features
        batched = extractor(arrays, return_tensors="np").input_features
        np.testing.assert_allclose(single[0], batched[0], atol=1e-3)
        from_lists = extractor(speech, return_tensors="np").input_features
        np.testing.assert_allclose(from_lists, batched, atol=1e-3)
        from_2d = extractor(np.asarray([arrays[0]] * 2), return_tensors="np").input_features
        np.testing.assert_allclose(from_2d[0], single[0], atol=1e-3)
        # longer than the model's clip: truncated to the same number of frames
        long = [floats_list((1, x))[0] for x in (100, 200)] + [np.ones(50000)]
        truncated = extractor(long, return_tensors="np").input_features
        self.assertEqual(truncated.shape[-1], batched.shape[-1])

    def test_double_precision_pad(self):
        extractor = self.feature_extraction_class(**self.feat_extract_dict)
        speech = np.random.rand(100, 32).astype(np.float64)
        for tensor_type in ("np", "pt"):
            padded = extractor.pad([{"input_features": speech}], return_tensors=tensor_type).input_features
            self.assertEqual(padded.dtype, np.float32 if tensor_type == "np" else torch.float32)

    def test_synthetic_clip_defaults(self):
        # the default extractor on a 22.05 kHz clip: 80 mel bands, 6 s of 256-sample hops
        extractor = self.feature_extraction_class()
        clip = synthetic_clip(2.0, 22050)
        out = extractor(clip, sampling_rate=22050, return_tensors="pt")
        self.assertEqual(tuple(out.input_features.shape), (1, 80, 517))
        self.assertTrue(torch.isfinite(out.input_features).all())
        with_mask = extractor([clip, clip[:22050]], sampling_rate=22050, return_attention_mask=True, return_tensors="pt")
        self.assertEqual(with_mask.attention_mask.shape[0], 2)
        self.assertGreater(int(with_mask.attention_mask[0].sum()), int(with_mask.attention_mask[1].sum()))

