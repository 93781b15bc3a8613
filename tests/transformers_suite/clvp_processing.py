"""ClvpProcessor: transformers' ProcessorTesterMixin (its tests need Pillow; without it they skip in
both runs) and the processor checks CLVP's own tests make, on local files only."""
import shutil
import tempfile
import unittest
from pathlib import Path

import numpy as np

from clvp_feature_extraction import floats_list, synthetic_clip
from harness import classes
from hf_tests.test_processing_common import ProcessorTesterMixin

ClvpFeatureExtractor = classes.ClvpFeatureExtractor
ClvpProcessor = classes.ClvpProcessor
ClvpTokenizer = classes.ClvpTokenizer

DATA = Path(__file__).resolve().parents[2] / "clvp" / "data"


class _LocalProcessorFiles:
    def setUp(self):
        self.tmpdirname = tempfile.mkdtemp()
        for name in ("vocab.json", "merges.txt"):
            shutil.copy(DATA / name, Path(self.tmpdirname) / name)
        ClvpFeatureExtractor().save_pretrained(self.tmpdirname)

    def tearDown(self):
        shutil.rmtree(self.tmpdirname, ignore_errors=True)

    def get_tokenizer(self, **kwargs):
        return ClvpTokenizer.from_pretrained(self.tmpdirname, **kwargs)

    def get_feature_extractor(self, **kwargs):
        return ClvpFeatureExtractor.from_pretrained(self.tmpdirname, **kwargs)


class ClvpProcessorMixinTest(_LocalProcessorFiles, ProcessorTesterMixin, unittest.TestCase):
    processor_class = ClvpProcessor


class ClvpProcessorTest(_LocalProcessorFiles, unittest.TestCase):
    def test_save_load_pretrained_default(self):
        processor = ClvpProcessor(tokenizer=self.get_tokenizer(), feature_extractor=self.get_feature_extractor())
        with tempfile.TemporaryDirectory() as tmp:
            processor.save_pretrained(tmp)
            loaded = ClvpProcessor.from_pretrained(tmp)
        self.assertEqual(loaded.tokenizer.get_vocab(), processor.tokenizer.get_vocab())
        self.assertIsInstance(loaded.tokenizer, ClvpTokenizer)
        self.assertEqual(loaded.feature_extractor.to_json_string(), processor.feature_extractor.to_json_string())
        self.assertIsInstance(loaded.feature_extractor, ClvpFeatureExtractor)

    def test_save_load_pretrained_additional_features(self):
        processor = ClvpProcessor(tokenizer=self.get_tokenizer(), feature_extractor=self.get_feature_extractor())
        with tempfile.TemporaryDirectory() as tmp:
            processor.save_pretrained(tmp)
            loaded = ClvpProcessor.from_pretrained(tmp, pad_token="(PAD)", sampling_rate=16000)
        self.assertEqual(loaded.tokenizer.pad_token, "(PAD)")
        self.assertEqual(loaded.feature_extractor.sampling_rate, 16000)

    def test_feature_extractor(self):
        extractor = self.get_feature_extractor()
        processor = ClvpProcessor(tokenizer=self.get_tokenizer(), feature_extractor=extractor)
        audio = synthetic_clip(1.0, 22050)
        direct = extractor(audio, sampling_rate=22050, return_tensors="np")
        through = processor(raw_speech=audio, sampling_rate=22050, return_tensors="np")
        for key in direct:
            np.testing.assert_allclose(direct[key], through[key], atol=1e-4)

    def test_tokenizer(self):
        tokenizer = self.get_tokenizer()
        processor = ClvpProcessor(tokenizer=tokenizer, feature_extractor=self.get_feature_extractor())
        text = "This is a test string"
        direct = tokenizer(text)
        through = processor(text=text)
        for key in direct:
            self.assertListEqual(list(direct[key]), list(through[key]))

    def test_tokenizer_decode(self):
        tokenizer = self.get_tokenizer()
        processor = ClvpProcessor(tokenizer=tokenizer, feature_extractor=self.get_feature_extractor())
        ids = [[1, 4, 5, 8, 1, 0, 8], [3, 4, 3, 1, 1, 8, 9]]
        self.assertListEqual(processor.batch_decode(ids), tokenizer.batch_decode(ids))
        self.assertEqual(processor.decode(ids[0]), tokenizer.decode(ids[0]))

    def test_text_and_audio_together(self):
        processor = ClvpProcessor(tokenizer=self.get_tokenizer(), feature_extractor=self.get_feature_extractor())
        out = processor(text="hello there", raw_speech=floats_list((1, 4000))[0], sampling_rate=22050, return_tensors="np")
        self.assertIn("input_ids", out)
        self.assertIn("input_features", out)

    def test_model_input_names(self):
        processor = ClvpProcessor(tokenizer=self.get_tokenizer(), feature_extractor=self.get_feature_extractor())
        self.assertListEqual(
            sorted(processor.model_input_names),
            sorted(["input_ids", "input_features", "attention_mask"]),
        )
