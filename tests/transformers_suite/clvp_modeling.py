"""transformers' ModelTesterMixin on CLVP's models with tiny configs: the text/speech encoder, the
speech decoder (ClvpModel and ClvpForCausalLM) and the composite ClvpModelForConditionalGeneration.

transformers' GenerationTesterMixin lives in ``tests/generation/test_utils.py``, which the sdist does
not ship; a few generate checks of our own stand in for it here.
"""
import copy
import tempfile
import unittest

import numpy as np
import torch
from transformers.testing_utils import torch_device

from clvp_feature_extraction import synthetic_clip
from harness import classes
from hf_tests.test_modeling_common import ModelTesterMixin, _config_zero_init, ids_tensor, random_attention_mask

ClvpConfig = classes.ClvpConfig
ClvpDecoderConfig = classes.ClvpDecoderConfig
ClvpEncoderConfig = classes.ClvpEncoderConfig
ClvpEncoder = classes.ClvpEncoder
ClvpModel = classes.ClvpModel
ClvpForCausalLM = classes.ClvpForCausalLM
ClvpModelForConditionalGeneration = classes.ClvpModelForConditionalGeneration
ClvpFeatureExtractor = classes.ClvpFeatureExtractor

DEVICE = torch_device  # where the mixins put the models: CUDA when there is one


def right_padded_mask(batch_size: int, seq_length: int) -> torch.Tensor:
    """(batch, seq) mask of ones then zeros, every row at least one token and one pad long."""
    mask = random_attention_mask([batch_size, seq_length])
    starts = np.random.randint(1, seq_length - 1, size=(batch_size,))
    for row, start in enumerate(starts):
        mask[row, :start] = 1
        mask[row, start:] = 0
    return mask


class ClvpEncoderTester:
    # hidden 128 over 4 heads: transformers 4.46.3's rotary width is max(projection_dim // (2 * heads), 32),
    # so a head narrower than 32 (hidden 32 over 4 heads) fails in transformers itself
    def __init__(self, parent, batch_size=2, seq_length=7, vocab_size=99, hidden_size=128, projection_dim=32):
        self.parent = parent
        self.batch_size = batch_size
        self.seq_length = seq_length
        self.is_training = True
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.projection_dim = projection_dim
        self.num_hidden_layers = 2
        self.num_attention_heads = 4
        self.intermediate_size = 64

    def get_config(self):
        return ClvpEncoderConfig(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            projection_dim=self.projection_dim,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            intermediate_size=self.intermediate_size,
            dropout=0.1,
            attention_dropout=0.1,
            bos_token_id=self.vocab_size - 1,
            eos_token_id=self.vocab_size - 1,
        )

    def prepare_config_and_inputs(self):
        input_ids = ids_tensor([self.batch_size, self.seq_length], self.vocab_size)  # (batch, seq)
        return self.get_config(), input_ids, right_padded_mask(self.batch_size, self.seq_length)

    def prepare_config_and_inputs_for_common(self):
        config, input_ids, mask = self.prepare_config_and_inputs()
        return config, {"input_ids": input_ids.to(DEVICE), "attention_mask": mask.to(DEVICE)}

    def create_and_check_model(self, config, input_ids, mask):
        model = ClvpEncoder(config=config).to(DEVICE).eval()
        with torch.no_grad():
            masked = model(input_ids, attention_mask=mask)
            plain = model(input_ids)
        for result in (masked, plain):
            self.parent.assertEqual(result.last_hidden_state.shape, (self.batch_size, self.seq_length, self.hidden_size))
            self.parent.assertEqual(result[0].shape, (self.batch_size, self.projection_dim))


class ClvpEncoderTest(ModelTesterMixin, unittest.TestCase):
    all_model_classes = (ClvpEncoder,)
    test_pruning = False
    test_head_masking = False
    test_torchscript = False

    def setUp(self):
        self.model_tester = ClvpEncoderTester(self)

    def test_model(self):
        self.model_tester.create_and_check_model(*self.model_tester.prepare_config_and_inputs())

    @unittest.skip(reason="the encoder has no loss")
    def test_training(self):
        pass

    @unittest.skip(reason="the encoder has no loss")
    def test_training_gradient_checkpointing(self):
        pass


class ClvpDecoderTester:
    def __init__(self, parent, batch_size=2, seq_length=7):
        self.parent = parent
        self.batch_size = batch_size
        self.seq_length = seq_length
        self.is_training = True
        self.vocab_size = 300
        self.hidden_size = 32
        self.num_hidden_layers = 2
        self.num_attention_heads = 2

    def get_config(self):
        return ClvpDecoderConfig(
            vocab_size=self.vocab_size,
            max_position_embeddings=256,
            max_text_tokens=256,
            hidden_size=self.hidden_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            bos_token_id=97,
            eos_token_id=98,
        )

    def prepare_config_and_inputs(self):
        input_ids = ids_tensor([self.batch_size, self.seq_length], self.vocab_size)  # (batch, seq)
        return self.get_config(), input_ids, right_padded_mask(self.batch_size, self.seq_length)

    def prepare_config_and_inputs_for_common(self):
        config, input_ids, mask = self.prepare_config_and_inputs()
        return config, {"input_ids": input_ids.to(DEVICE), "attention_mask": mask.to(DEVICE)}

    def create_and_check_model(self, config, input_ids, mask):
        model = ClvpForCausalLM(config).to(DEVICE).eval()
        with torch.no_grad():
            result = model(input_ids=input_ids, attention_mask=mask)
        self.parent.assertEqual(result[0].shape, (self.batch_size, self.seq_length, self.vocab_size))


class ClvpDecoderTest(ModelTesterMixin, unittest.TestCase):
    all_model_classes = (ClvpModel, ClvpForCausalLM)
    all_generative_model_classes = (ClvpForCausalLM,)
    test_pruning = False

    def setUp(self):
        self.model_tester = ClvpDecoderTester(self)

    def test_model(self):
        self.model_tester.create_and_check_model(*self.model_tester.prepare_config_and_inputs())

    def _prepare_for_class(self, inputs_dict, model_class, return_labels=False):
        inputs_dict = copy.copy(inputs_dict)
        if return_labels and model_class is ClvpForCausalLM:
            shape = [self.model_tester.batch_size, self.model_tester.seq_length]
            inputs_dict["labels"] = torch.zeros(shape, dtype=torch.long, device=DEVICE)  # (batch, seq)
        return inputs_dict

    def test_training(self):  # only the causal LM has a loss
        config, inputs_dict = self.model_tester.prepare_config_and_inputs_for_common()
        config.return_dict = True
        model = ClvpForCausalLM(config).to(DEVICE).train()
        loss = model(**self._prepare_for_class(inputs_dict, ClvpForCausalLM, return_labels=True)).loss
        loss.backward()

    def test_training_gradient_checkpointing(self):
        config, inputs_dict = self.model_tester.prepare_config_and_inputs_for_common()
        config.use_cache = False
        config.return_dict = True
        model = ClvpForCausalLM(config).to(DEVICE)
        model.gradient_checkpointing_enable()
        model.train()
        loss = model(**self._prepare_for_class(inputs_dict, ClvpForCausalLM, return_labels=True)).loss
        loss.backward()

    # stand-ins for GenerationTesterMixin (not in the sdist)
    def test_generate_greedy_max_new_tokens(self):
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        model = ClvpForCausalLM(config).to(DEVICE).eval()
        out = model.generate(inputs["input_ids"], do_sample=False, max_new_tokens=4, min_new_tokens=4)
        self.assertEqual(out.shape, (self.model_tester.batch_size, self.model_tester.seq_length + 4))
        self.assertTrue(torch.equal(out[:, : self.model_tester.seq_length], inputs["input_ids"]))

    def test_generate_greedy_is_argmax(self):
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        model = ClvpForCausalLM(config).to(DEVICE).eval()
        ids = inputs["input_ids"]
        out = model.generate(ids, do_sample=False, max_new_tokens=1, min_new_tokens=1)
        with torch.no_grad():
            logits = model(input_ids=ids).logits  # (batch, seq, vocab)
        self.assertTrue(torch.equal(out[:, -1], logits[:, -1].argmax(-1)))

    def test_generate_dict_with_scores(self):
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        model = ClvpForCausalLM(config).to(DEVICE).eval()
        out = model.generate(
            inputs["input_ids"],
            do_sample=False,
            max_new_tokens=3,
            min_new_tokens=3,
            return_dict_in_generate=True,
            output_scores=True,
        )
        self.assertEqual(len(out.scores), 3)
        self.assertEqual(out.scores[0].shape, (self.model_tester.batch_size, self.model_tester.vocab_size))

    def test_generate_beam_search(self):
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        model = ClvpForCausalLM(config).to(DEVICE).eval()
        out = model.generate(
            inputs["input_ids"], do_sample=False, num_beams=2, num_return_sequences=2, max_new_tokens=3, min_new_tokens=3
        )
        self.assertEqual(out.shape, (2 * self.model_tester.batch_size, self.model_tester.seq_length + 3))

    def test_generate_sampling_seeded(self):
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        model = ClvpForCausalLM(config).to(DEVICE).eval()
        torch.manual_seed(3)
        first = model.generate(inputs["input_ids"], do_sample=True, top_k=5, max_new_tokens=3, min_new_tokens=3)
        torch.manual_seed(3)
        second = model.generate(inputs["input_ids"], do_sample=True, top_k=5, max_new_tokens=3, min_new_tokens=3)
        self.assertTrue(torch.equal(first, second))


class ClvpModelForConditionalGenerationTester:
    def __init__(self, parent):
        self.parent = parent
        self.encoder_tester = ClvpEncoderTester(parent)
        self.is_training = False
        self.batch_size = self.encoder_tester.batch_size

    def get_config(self):
        decoder = ClvpDecoderConfig(
            vocab_size=200,
            max_position_embeddings=150,
            max_text_tokens=100,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            bos_token_id=97,
            eos_token_id=98,
        )
        text = self.encoder_tester.get_config()
        speech = self.encoder_tester.get_config()
        speech.vocab_size = 300
        return ClvpConfig.from_sub_model_configs(text, speech, decoder, projection_dim=64)

    def prepare_config_and_inputs(self):
        _, input_ids, mask = self.encoder_tester.prepare_config_and_inputs()
        clip = synthetic_clip(1.5, 22050)  # (samples,)
        features = ClvpFeatureExtractor()(raw_speech=clip, sampling_rate=22050, return_tensors="pt")["input_features"]
        return self.get_config(), input_ids, mask, features.to(DEVICE)  # features (1, 80, frames)

    def prepare_config_and_inputs_for_common(self):
        config, input_ids, mask, features = self.prepare_config_and_inputs()
        inputs = {
            "input_ids": input_ids.to(DEVICE),
            "attention_mask": mask.to(DEVICE),
            "input_features": features,
            "return_loss": False,
        }
        return config, inputs

    def create_and_check_model(self, config, input_ids, mask, features):
        model = ClvpModelForConditionalGeneration(config).to(DEVICE).eval()
        with torch.no_grad():
            result = model(input_ids=input_ids, input_features=features, attention_mask=mask)
        self.parent.assertEqual(result.logits_per_speech.shape, (2, self.batch_size))
        self.parent.assertEqual(result.logits_per_text.shape, (self.batch_size, 2))


class ClvpModelForConditionalGenerationTest(ModelTesterMixin, unittest.TestCase):
    all_model_classes = (ClvpModelForConditionalGeneration,)
    test_head_masking = False
    test_pruning = False
    test_resize_embeddings = False
    test_attention_outputs = False
    test_torchscript = False

    def setUp(self):
        self.model_tester = ClvpModelForConditionalGenerationTester(self)

    def test_model(self):
        self.model_tester.create_and_check_model(*self.model_tester.prepare_config_and_inputs())

    @unittest.skip(reason="two kinds of hidden states (text and speech); the encoder tests check them")
    def test_hidden_states_output(self):
        pass

    @unittest.skip(reason="checked on the encoder and decoder models")
    def test_retain_grad_hidden_states_attentions(self):
        pass

    @unittest.skip(reason="the composite has no get_input_embeddings (three encoders take ids)")
    def test_inputs_embeds(self):
        pass

    @unittest.skip(reason="the composite has no get_input_embeddings (three encoders take ids)")
    def test_model_get_set_embeddings(self):
        pass

    def test_hidden_states_output(self):
        # one tuple per part (decoder, text encoder, speech encoder), asked for by argument or by config
        config, inputs_dict = self.model_tester.prepare_config_and_inputs_for_common()

        def check(outputs, config):
            parts = (
                ("decoder_hidden_states", config.decoder_config),
                ("text_encoder_hidden_states", config.text_config),
                ("speech_encoder_hidden_states", config.speech_config),
            )
            for name, part in parts:
                states = getattr(outputs, name)
                self.assertEqual(len(states), part.num_hidden_layers + 1, msg=name)
                self.assertEqual(states[0].shape[-1], part.hidden_size, msg=name)
            # text states keep the text length; the other two are longer (conditioning, fixed codes)
            self.assertEqual(outputs.text_encoder_hidden_states[0].shape[-2], self.model_tester.encoder_tester.seq_length)

        model = ClvpModelForConditionalGeneration(config).to(DEVICE).eval()
        with torch.no_grad():
            check(model(**inputs_dict, output_hidden_states=True), config)
        config.output_hidden_states = True
        model = ClvpModelForConditionalGeneration(config).to(DEVICE).eval()
        with torch.no_grad():
            check(model(**inputs_dict), config)

    def test_initialization(self):
        # the logit scale starts at log(1 / 0.07) (CLIP's temperature); the rest is zero or one
        config, _ = self.model_tester.prepare_config_and_inputs_for_common()
        model = ClvpModelForConditionalGeneration(config=_config_zero_init(config))
        for name, param in model.named_parameters():
            if not param.requires_grad:
                continue
            if name == "logit_scale":
                self.assertAlmostEqual(param.item(), float(np.log(1 / 0.07)), delta=1e-3)
            else:
                self.assertIn(((param.data.mean() * 1e9).round() / 1e9).item(), [0.0, 1.0], msg=name)

    def test_load_speech_text_decoder_config(self):
        config, _ = self.model_tester.prepare_config_and_inputs_for_common()
        with tempfile.TemporaryDirectory() as tmp:
            config.save_pretrained(tmp)
            text = ClvpEncoderConfig.from_pretrained(tmp)
            decoder = ClvpDecoderConfig.from_pretrained(tmp)
        self.assertDictEqual(config.text_config.to_dict(), text.to_dict())
        self.assertDictEqual(config.decoder_config.to_dict(), decoder.to_dict())

    def test_generate_speech_ids(self):  # stand-in for GenerationTesterMixin (not in the sdist)
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        model = ClvpModelForConditionalGeneration(config).to(DEVICE).eval()
        out = model.generate(
            input_ids=inputs["input_ids"][:1],
            input_features=inputs["input_features"],
            do_sample=False,
            max_new_tokens=5,
            return_dict_in_generate=True,  # transformers 4.46.3 returns nothing usable without it
        )
        self.assertEqual(out.speech_ids.shape[0], 1)
        self.assertEqual(out.logits_per_text.shape, (1, 1))
