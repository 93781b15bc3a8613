"""transformers' TokenizerTesterMixin on ClvpTokenizer, over the published Tortoise vocabulary
(``clvp/data/vocab.json`` and ``merges.txt``), plus the checks CLVP's own tokenizer tests add."""
import shutil
import unittest
from pathlib import Path

from harness import classes
from hf_tests.test_tokenization_common import TokenizerTesterMixin

ClvpTokenizer = classes.ClvpTokenizer

DATA = Path(__file__).resolve().parents[2] / "clvp" / "data"


class ClvpTokenizationTest(TokenizerTesterMixin, unittest.TestCase):
    tokenizer_class = ClvpTokenizer
    test_rust_tokenizer = False  # CLVP has no fast tokenizer class in transformers 4.46.3
    from_pretrained_kwargs = {"add_prefix_space": True}
    test_seq2seq = False
    test_sentencepiece_ignore_case = True

    def setUp(self):
        super().setUp()
        for name in ("vocab.json", "merges.txt"):
            shutil.copy(DATA / name, Path(self.tmpdirname) / name)
        self.vocab_file = str(Path(self.tmpdirname) / "vocab.json")
        self.merges_file = str(Path(self.tmpdirname) / "merges.txt")

    def get_tokenizer(self, **kwargs):
        return ClvpTokenizer.from_pretrained(self.tmpdirname, **kwargs)

    def get_input_output_texts(self, tokenizer):
        return "lower newer", "lower newer"

    def test_full_tokenizer_ids_match_vocab(self):
        # tokens map to their vocabulary entries, and unknown tokens to the unknown id
        tokenizer = ClvpTokenizer(self.vocab_file, self.merges_file)
        tokens = tokenizer.tokenize("lower newer")
        self.assertIn("[SPACE]", tokens)
        vocab = tokenizer.get_vocab()
        self.assertEqual(tokenizer.convert_tokens_to_ids(tokens), [vocab[t] for t in tokens])
        self.assertEqual(tokenizer.convert_tokens_to_ids(["not-a-token"]), [vocab["[UNK]"]])

    def test_token_type_ids(self):
        tokenizer = self.get_tokenizer()
        output = tokenizer("Test this method.", return_token_type_ids=True, add_special_tokens=True)
        self.assertIn(0, output["token_type_ids"])

    def test_special_tokens_mask_input_pairs_and_bos_token(self):
        tokenizer = self.get_tokenizer(add_bos_token=True)
        first, second = "Encode this.", "This one too please."
        plain = tokenizer.encode(first, add_special_tokens=False) + tokenizer.encode(second, add_special_tokens=False)
        encoded = tokenizer.encode_plus(first, second, add_special_tokens=True, return_special_tokens_mask=True)
        ids, mask = encoded["input_ids"], encoded["special_tokens_mask"]
        self.assertEqual(len(mask), len(ids))
        self.assertEqual([i for i, m in zip(ids, mask) if not m], plain)

    def test_padding_if_pad_token_set_slow(self):
        tokenizer = ClvpTokenizer.from_pretrained(self.tmpdirname, pad_token="<pad>")
        pad = tokenizer.pad_token_id
        single = tokenizer("This is a simple input", padding="max_length", max_length=30, return_tensors="np")
        self.assertEqual(single["input_ids"].shape[-1], 30)
        self.assertIn(pad, single["input_ids"])
        self.assertIn(0, single["attention_mask"])
        batch = tokenizer(["This is a simple input looooooooong", "This is a simple input"], padding=True, return_tensors="np")
        self.assertNotIn(pad, batch["input_ids"][0])
        self.assertIn(pad, batch["input_ids"][1])
        pair = tokenizer("This is a simple input", "This is a pair", padding="max_length", max_length=60, return_tensors="np")
        self.assertEqual(pair["input_ids"].shape[-1], 60)
        self.assertIn(0, pair["attention_mask"])
        pairs = tokenizer(
            [("This is a simple input loooooong", "This is a simple input"), ("This is a pair", "short")],
            padding=True,
            return_tensors="np",
        )
        self.assertNotIn(0, pairs["attention_mask"][0])
        self.assertIn(0, pairs["attention_mask"][1])
