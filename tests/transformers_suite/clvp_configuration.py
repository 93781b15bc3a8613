"""transformers' ConfigTester on the three CLVP configs, one test per check (transformers runs them
all in one ``test_config``; separate tests give separate counts)."""
import unittest

from harness import classes
from hf_tests.test_configuration_common import ConfigTester

ClvpConfig = classes.ClvpConfig
ClvpDecoderConfig = classes.ClvpDecoderConfig
ClvpEncoderConfig = classes.ClvpEncoderConfig

CHECKS = (
    "create_and_test_config_common_properties",
    "create_and_test_config_to_json_string",
    "create_and_test_config_to_json_file",
    "create_and_test_config_from_and_save_pretrained",
    "create_and_test_config_from_and_save_pretrained_subfolder",
    "create_and_test_config_with_num_labels",
    "check_config_can_be_init_without_params",
    "check_config_arguments_init",
)


class _ConfigChecks:
    """One ``test_<check>`` per ConfigTester check; subclasses build ``self.config_tester``."""

    def test_config_common_properties(self):
        self.config_tester.create_and_test_config_common_properties()

    def test_config_to_json_string(self):
        self.config_tester.create_and_test_config_to_json_string()

    def test_config_to_json_file(self):
        self.config_tester.create_and_test_config_to_json_file()

    def test_config_from_and_save_pretrained(self):
        self.config_tester.create_and_test_config_from_and_save_pretrained()

    def test_config_from_and_save_pretrained_subfolder(self):
        self.config_tester.create_and_test_config_from_and_save_pretrained_subfolder()

    def test_config_with_num_labels(self):
        self.config_tester.create_and_test_config_with_num_labels()

    def test_config_can_be_init_without_params(self):
        self.config_tester.check_config_can_be_init_without_params()

    def test_config_arguments_init(self):
        self.config_tester.check_config_arguments_init()

    def test_run_common_tests(self):  # transformers' own entry point, all checks in order
        self.config_tester.run_common_tests()


class ClvpEncoderConfigTest(_ConfigChecks, unittest.TestCase):
    def setUp(self):
        # hidden_size alone, as transformers' CLVP test passes it: 64 over the default 12 heads, which
        # transformers stores and clvp refuses at construction (docs/parity.md §8)
        self.config_tester = ConfigTester(self, config_class=ClvpEncoderConfig, hidden_size=64)


class ClvpDecoderConfigTest(_ConfigChecks, unittest.TestCase):
    def setUp(self):
        self.config_tester = ConfigTester(self, config_class=ClvpDecoderConfig, hidden_size=32, num_hidden_layers=2)


class ClvpConfigTest(_ConfigChecks, unittest.TestCase):
    def setUp(self):
        # the composite config has no hidden size or vocabulary of its own
        self.config_tester = ConfigTester(
            self,
            config_class=ClvpConfig,
            has_text_modality=False,
            common_properties=["projection_dim", "logit_scale_init_value"],
            projection_dim=64,
        )

    def test_sub_configs_round_trip(self):
        # a composite built from its parts gives back the parts (`from_sub_model_configs`)
        sizes = {"hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "projection_dim": 32}
        text = ClvpEncoderConfig(vocab_size=99, bos_token_id=98, eos_token_id=0, **sizes)
        speech = ClvpEncoderConfig(vocab_size=300, **sizes)
        decoder = ClvpDecoderConfig(
            vocab_size=200, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, bos_token_id=97, eos_token_id=98
        )
        config = ClvpConfig.from_sub_model_configs(text, speech, decoder, projection_dim=64)
        self.assertEqual(config.projection_dim, 64)
        self.assertEqual(config.text_config.vocab_size, 99)
        self.assertEqual(config.speech_config.vocab_size, 300)
        self.assertEqual(config.decoder_config.vocab_size, 200)
        self.assertEqual(config.decoder_config.num_attention_heads, 2)
        self.assertEqual(ClvpConfig.from_dict(config.to_dict()).to_dict(), config.to_dict())
