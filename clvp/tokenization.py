"""``ClvpTokenizer``: CLVP's byte-level BPE tokenizer with Hugging Face's API, on the ``tokenizers`` library.

Ids equal transformers 4.46.3's (slow, pure-Python) ``ClvpTokenizer`` for the same vocabulary on any
text (docs/model.md §5); the BPE runs in Rust (``tokenizers``) and the English normalizer is cheap
(clvp/normalizer.py), so a batch is several times faster. The pipeline per text:

1. split on the added (special) tokens ``<|endoftext|>``, ``[STOP]``, ``[UNK]`` (kept whole, as
   transformers does; ``split_special_tokens=True`` turns that off);
2. normalize each other piece (``text_normalization="hf"``: transformers' normalizer, quirks
   included; ``"tortoise"``: what the model was trained with, see clvp/normalizer.py);
3. GPT-2's pre-tokenization regex and byte -> unicode map, then BPE with the merges of merges.txt
   (its first line skipped), in ``tokenizers``;
4. the token "Ġ" (a lone space) becomes ``[SPACE]`` when the vocabulary has it; a character or
   merge outside the vocabulary becomes ``[UNK]``;
5. bos / eos tokens, truncation and padding, then lists, NumPy arrays or tensors.

This class is the facade with transformers' API; the work is done by pure parts: steps 1, 3 and 4
and decoding in clvp/bpe.py, step 2 in clvp/normalizer.py, the encoding calls (``__call__``, text
pairs, ``pad``, ...) in clvp/encoding.py over padding and truncation in clvp/padding.py,
the files (vocab.json + merges.txt + the JSON settings, Tortoise's tokenizer.json) in
clvp/tokenizer_files.py, and the output container in clvp/batch.py.

Where we differ from transformers 4.46.3 on purpose (it documents these but ignores them):
``add_prefix_space=True`` puts a space before the text, and ``is_split_into_words=True`` a space
before every word. ``get_special_tokens_mask`` marks the eos token too, and "$,5" no longer raises.

``text_normalization`` is a constructor argument, saved in tokenizer_config.json and read back by
``from_pretrained`` (transformers ignores the unknown key); it can be overridden there as a keyword.
"""
from __future__ import annotations

import codecs
import inspect
import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .atomic import atomic_folder
from .batch import BatchEncoding
from .encoding import EncodingMixin
from .bpe import ByteLevelBPE, bytes_to_unicode, number_added_tokens, token_bytes
from .normalizer import TEXT_NORMALIZATIONS, EnglishNormalizer
from .padding import VERY_LARGE_INTEGER, as_id_list, as_rows, check_int
from .tokenizer_files import (ALL_SPECIAL_ATTRIBUTES, EXTRA_SPECIAL_ATTRIBUTES, SPECIAL_ATTRIBUTES,
                              VOCAB_FILES_NAMES, read_hf_layout, read_packaged_vocabulary,
                              read_saved_settings, read_tortoise_file, special_token_content, vocabulary_files,
                              write_settings, write_vocabulary)
from .tokenizer_files import (  # noqa: F401  (the file names stay importable from here, as before the split)
    ADDED_TOKENS_FILE, SPECIAL_TOKENS_MAP_FILE, TOKENIZER_CONFIG_FILE, TORTOISE_TOKENIZER_FILE)

__all__ = ["ClvpTokenizer", "BatchEncoding", "bytes_to_unicode"]


class ClvpTokenizer(EncodingMixin):
    """CLVP's tokenizer (byte-level BPE), with transformers' ``ClvpTokenizer`` API.

    Args:
        vocab_file, merges_file: Hugging Face's layout. Both None (and no ``tokenizer_file``): the real
            CLVP vocabulary shipped with this package (255 tokens + ``<|endoftext|>`` = 256).
        errors: how ``decode`` treats invalid UTF-8 (``bytes.decode``'s ``errors``), default "replace".
        unk_token, bos_token, eos_token, pad_token: "[UNK]", "<|endoftext|>" (added as id 255 to the
            real vocabulary), "[STOP]", "[STOP]". A token not in the vocabulary gets the next free id.
        add_prefix_space: put a space before the text (so the first word is encoded like any other).
        add_bos_token, add_eos_token: with ``add_special_tokens=True`` (the default), put the bos
            token in front and the eos token at the end.
        tokenizer_file: Tortoise's tokenizer.json instead of vocab_file + merges_file.
        text_normalization: "hf" (transformers' normalizer, the default) or "tortoise" (what the model
            was trained with). Saved in tokenizer_config.json.
        additional_special_tokens, added_tokens_decoder ({id: token}), model_max_length, padding_side,
        truncation_side, clean_up_tokenization_spaces, split_special_tokens, verbose, model_input_names:
            as in transformers.
        **kwargs: any other keyword transformers takes (do_lower_case, processor_class, ...) is kept in
            ``init_kwargs`` and otherwise unused, as there; one naming a method (add_special_tokens) is a
            TypeError, as there.
    """

    vocab_files_names = VOCAB_FILES_NAMES
    model_input_names = ["input_ids", "attention_mask"]

    def __init__(
        self,
        vocab_file: str | os.PathLike | None = None,
        merges_file: str | os.PathLike | None = None,
        errors: str = "replace",
        unk_token="[UNK]",
        bos_token="<|endoftext|>",
        eos_token="[STOP]",
        pad_token="[STOP]",
        add_prefix_space: bool = False,
        add_bos_token: bool = False,
        add_eos_token: bool = False,
        *,
        tokenizer_file: str | os.PathLike | None = None,
        text_normalization: str = "hf",
        additional_special_tokens: Sequence | None = None,
        added_tokens_decoder: dict | None = None,
        model_max_length: int = VERY_LARGE_INTEGER,
        padding_side: str = "right",
        truncation_side: str = "right",
        clean_up_tokenization_spaces: bool = False,
        split_special_tokens: bool = False,
        name_or_path: str = "",
        verbose: bool = True,
        model_input_names: Sequence[str] | None = None,
        **kwargs,
    ):
        extra_special = {a: special_token_content(kwargs.pop(a, None)) for a in EXTRA_SPECIAL_ATTRIBUTES}
        # transformers 4.46.3 takes any other keyword (do_lower_case, processor_class, chat_template, ...)
        # and only keeps it in init_kwargs; so do we. A keyword naming a method is refused, as there.
        for key in kwargs:
            if callable(getattr(type(self), key, None)):
                raise TypeError(f"{key}= is not a constructor setting: it names the method {key} (transformers "
                                f"refuses it too); pass {key}= to the method instead")
        if "max_len" in kwargs and model_max_length == VERY_LARGE_INTEGER:  # transformers' old name
            model_max_length = kwargs["max_len"]
        if not isinstance(verbose, bool):
            raise TypeError(f"verbose must be True or False, got {verbose!r}")
        if model_input_names is not None and (not isinstance(model_input_names, (list, tuple)) or not all(
                isinstance(n, str) for n in model_input_names) or "input_ids" not in model_input_names[:1]):
            raise ValueError("model_input_names must be a list of str starting with 'input_ids' (e.g. ['input_ids', "
                             f"'attention_mask']), got {model_input_names!r}")
        if (vocab_file is None) != (merges_file is None):
            raise ValueError("give both vocab_file and merges_file (Hugging Face's layout), or neither")
        if vocab_file is not None and tokenizer_file is not None:
            raise ValueError("give either vocab_file + merges_file or tokenizer_file, not both")
        if vocab_file is not None:
            encoder, merges = read_hf_layout(vocab_file, merges_file)
        elif tokenizer_file is not None:
            encoder, merges = read_tortoise_file(tokenizer_file)
        else:
            encoder, merges = read_packaged_vocabulary()
        try:
            codecs.lookup_error(errors)
        except (LookupError, TypeError):
            raise ValueError(f"errors={errors!r} is not an error handler of bytes.decode "
                             "(e.g. 'replace', 'strict', 'ignore')") from None
        for name, value in (("padding_side", padding_side), ("truncation_side", truncation_side)):
            if value not in ("right", "left"):
                raise ValueError(f"{name} must be 'right' or 'left', got {value!r}")
        check_int("model_max_length", model_max_length, minimum=0)
        if special_token_content(unk_token) is None:
            raise ValueError("unk_token is required: characters outside the vocabulary map to it")

        self.encoder: dict[str, int] = encoder
        self.decoder: dict[int, str] = {v: k for k, v in encoder.items()}
        self.bpe_merges: list[tuple[str, ...]] = merges
        self.errors = errors
        self.add_prefix_space = bool(add_prefix_space)
        self.add_bos_token = bool(add_bos_token)
        self.add_eos_token = bool(add_eos_token)
        self.model_max_length = int(model_max_length)
        self.padding_side = padding_side
        self.truncation_side = truncation_side
        self.clean_up_tokenization_spaces = bool(clean_up_tokenization_spaces)
        self.split_special_tokens = bool(split_special_tokens)
        self.name_or_path = str(name_or_path)
        self.verbose = verbose
        if model_input_names is not None:
            self.model_input_names = list(model_input_names)
        # every constructor argument, as transformers stores them (its tests read them back)
        self.init_kwargs = {**{k: v for k, v in locals().items() if k in _INIT_PARAMETERS},
                            **{k: v for k, v in extra_special.items() if v is not None}, **kwargs}
        self.init_inputs = ()
        self.text_normalization = text_normalization  # validated by the setter

        self.bos_token = special_token_content(bos_token)
        self.eos_token = special_token_content(eos_token)
        self.unk_token = special_token_content(unk_token)
        self.pad_token = special_token_content(pad_token)
        for name, token in extra_special.items():  # sep_token, cls_token, mask_token: None unless given
            setattr(self, name, token)
        self.additional_special_tokens = [special_token_content(t) for t in (additional_special_tokens or [])]

        saved = [(int(k), special_token_content(v)) for k, v in (added_tokens_decoder or {}).items()]
        self.added_tokens_encoder: dict[str, int] = number_added_tokens(encoder, saved, self.all_special_tokens)
        self.added_tokens_decoder: dict[int, str] = {v: k for k, v in self.added_tokens_encoder.items()}
        self._strip: dict[str, tuple[bool, bool]] = {}
        self._bpe = ByteLevelBPE(encoder, merges, self.added_tokens_encoder, self.unk_token)

    @property
    def _backend(self):
        """The ``tokenizers`` BPE itself (what the benchmark times alone)."""
        return self._bpe.backend

    @property
    def text_normalization(self) -> str:
        return self._text_normalization

    @text_normalization.setter
    def text_normalization(self, mode: str) -> None:
        if mode not in TEXT_NORMALIZATIONS:
            raise ValueError(f"text_normalization must be one of {TEXT_NORMALIZATIONS}, got {mode!r}")
        self._text_normalization = mode
        self._normalizer = EnglishNormalizer(mode)

    @property
    def normalizer(self) -> EnglishNormalizer:
        return self._normalizer

    # ---------------------------------------------------------------------------- vocabulary facts
    @property
    def vocab_size(self) -> int:
        """Size of the base vocabulary, without added tokens (255 for CLVP)."""
        return len(self.encoder)

    def __len__(self) -> int:
        """Size of the vocabulary with the added tokens (256 for CLVP = the text model's vocab_size)."""
        return len(self.get_vocab())

    def get_vocab(self) -> dict[str, int]:
        return dict(self.encoder, **self.added_tokens_encoder)

    @property
    def all_special_tokens(self) -> list[str]:
        seen = []
        for tok in [getattr(self, a) for a in ALL_SPECIAL_ATTRIBUTES] + list(self.additional_special_tokens):
            if tok is not None and tok not in seen:
                seen.append(tok)
        return seen

    @property
    def all_special_ids(self) -> list[int]:
        return [self.convert_tokens_to_ids(t) for t in self.all_special_tokens]

    @property
    def special_tokens_map(self) -> dict:
        out = {a: getattr(self, a) for a in ALL_SPECIAL_ATTRIBUTES if getattr(self, a) is not None}
        if self.additional_special_tokens:
            out["additional_special_tokens"] = list(self.additional_special_tokens)
        return out

    def _token_id(self, token):
        return None if token is None else self.convert_tokens_to_ids(token)

    def _token_id_property(name: str):  # noqa: N805  (builds the class's *_token_id properties)
        def get(self):
            return self._token_id(getattr(self, name))

        def set_(self, value):  # transformers: setting an id sets the token it names
            setattr(self, name, None if value is None else self.convert_ids_to_tokens(value))

        return property(get, set_, doc=f"The id of ``{name}`` (None when it is unset).")

    bos_token_id = _token_id_property("bos_token")
    eos_token_id = _token_id_property("eos_token")
    unk_token_id = _token_id_property("unk_token")
    sep_token_id = _token_id_property("sep_token")
    pad_token_id = _token_id_property("pad_token")
    cls_token_id = _token_id_property("cls_token")
    mask_token_id = _token_id_property("mask_token")
    del _token_id_property

    is_fast = False  # transformers' flag: a Python ("slow") tokenizer
    pad_token_type_id = 0  # what token_type_ids are padded with

    @property
    def additional_special_tokens_ids(self) -> list[int]:
        return [self.convert_tokens_to_ids(t) for t in self.additional_special_tokens]

    @additional_special_tokens_ids.setter
    def additional_special_tokens_ids(self, ids) -> None:
        self.additional_special_tokens = [self.convert_ids_to_tokens(i) for i in ids]

    # ------------------------------------------------------------------------------ adding tokens
    def add_tokens(self, new_tokens, special_tokens: bool = False) -> int:
        """Add tokens (a str, or a list of str / AddedToken-like objects with ``.content``), as
        transformers does: each is kept whole when encoding, gets the next free id (or its id in the
        vocabulary), and with ``special_tokens=True`` joins ``additional_special_tokens``. -> how many
        new ids were made."""
        if isinstance(new_tokens, str) or hasattr(new_tokens, "content"):
            new_tokens = [new_tokens]
        if not isinstance(new_tokens, (list, tuple)):
            raise TypeError(f"new_tokens must be a str or a list of str, got {type(new_tokens).__name__}")
        contents = [special_token_content(t) for t in new_tokens]
        self._remember_strip(new_tokens)
        if special_tokens:
            self.additional_special_tokens += [t for t in dict.fromkeys(contents)
                                               if t and t not in self.additional_special_tokens]
        return self._register(contents)

    def add_special_tokens(self, special_tokens_dict: dict, replace_additional_special_tokens: bool = True) -> int:
        """Set special tokens ({"pad_token": "<pad>", "cls_token": ..., "additional_special_tokens": [...]})
        and add those new to the vocabulary, as transformers does (``replace_additional_special_tokens``:
        the given list replaces the current one instead of extending it). -> how many new ids were made."""
        if not isinstance(special_tokens_dict, dict):
            raise TypeError(f"special_tokens_dict must be a dict, got {type(special_tokens_dict).__name__}")
        allowed = ALL_SPECIAL_ATTRIBUTES + ("additional_special_tokens",)
        unknown = sorted(set(special_tokens_dict) - set(allowed))
        if unknown:
            raise ValueError(f"special_tokens_dict keys {unknown} are not special-token attributes; allowed are "
                             f"{list(allowed)}")
        contents = []
        for key, value in special_tokens_dict.items():
            if key == "additional_special_tokens":
                if not isinstance(value, (list, tuple)):
                    raise TypeError(f"additional_special_tokens must be a list of str, got {type(value).__name__}")
                tokens = [special_token_content(t) for t in value]
                kept = [] if replace_additional_special_tokens else list(self.additional_special_tokens)
                self.additional_special_tokens = kept + [t for t in dict.fromkeys(tokens) if t not in kept]
                contents += tokens
            else:
                token = special_token_content(value)
                if token is None:
                    raise TypeError(f"{key} must be a str, got None")
                self._remember_strip([value])
                setattr(self, key, token)
                contents.append(token)
        return self._register(contents)

    def _remember_strip(self, tokens) -> None:
        """The lstrip / rstrip of AddedToken-like objects (or saved dicts): whitespace they drop."""
        for t in tokens:
            flags = (t.get("lstrip", False), t.get("rstrip", False)) if isinstance(t, dict) else (
                getattr(t, "lstrip", False), getattr(t, "rstrip", False))
            if not isinstance(t, str) and any(flags):
                self._strip[special_token_content(t)] = (bool(flags[0]), bool(flags[1]))

    def _register(self, contents: list) -> int:
        """Give each token not added yet its vocabulary id or the next free one; rebuild the BPE."""
        made = 0
        for token in contents:
            if not token or token in self.added_tokens_encoder:
                continue
            idx = self.encoder.get(token)
            if idx is None:
                idx, made = len(self), made + 1
            self.added_tokens_encoder[token] = idx
            self.added_tokens_decoder[idx] = token
        self._bpe = ByteLevelBPE(self.encoder, self.bpe_merges, self.added_tokens_encoder, self.unk_token, self._strip)
        return made

    def convert_tokens_to_ids(self, tokens):
        """Token(s) -> id(s); a token outside the vocabulary -> the unk id."""
        if tokens is None:
            return None
        if isinstance(tokens, str):
            if tokens in self.added_tokens_encoder:
                return self.added_tokens_encoder[tokens]
            return self.encoder.get(tokens, self.added_tokens_encoder.get(self.unk_token))
        return [self.convert_tokens_to_ids(t) for t in tokens]

    def convert_ids_to_tokens(self, ids, skip_special_tokens: bool = False):
        """Id(s) -> token(s); with ``skip_special_tokens`` the special ids are left out."""
        if isinstance(ids, (int, np.integer)):
            return self._id_to_token(int(ids))
        special = set(self.all_special_ids) if skip_special_tokens else ()
        return [self._id_to_token(i) for i in as_id_list(ids) if i not in special]

    def _id_to_token(self, idx: int) -> str:
        if idx in self.added_tokens_decoder:
            return self.added_tokens_decoder[idx]
        if idx in self.decoder:
            return self.decoder[idx]
        raise ValueError(f"token id {idx} is not in the vocabulary (ids 0..{len(self) - 1})")

    def convert_tokens_to_string(self, tokens: Iterable[str]) -> str:
        return b"".join(token_bytes(t) for t in tokens).decode("utf-8", errors=self.errors)

    # ---------------------------------------------------------------------------------- encoding
    def tokenize(self, text: str, add_prefix_space: bool | None = None, is_split_into_words: bool = False) -> list[str]:
        """Text -> tokens as transformers' ``tokenize`` gives them ("[SPACE]" for spaces; a character
        outside the vocabulary stays itself here and becomes [UNK] only as an id)."""
        if is_split_into_words:
            if not isinstance(text, (list, tuple)) or not all(isinstance(w, str) for w in text):
                raise TypeError("with is_split_into_words=True, tokenize takes a list of words (str)")
            return [t for w in text for t in self.tokenize(w, add_prefix_space=True)]
        if not isinstance(text, str):
            raise TypeError(f"tokenize takes a str, got {type(text).__name__}")
        if self.add_prefix_space if add_prefix_space is None else add_prefix_space:
            text = " " + text
        return self._bpe.tokenize(text, self._normalizer, self.split_special_tokens)

    def build_inputs_with_special_tokens(self, token_ids_0: list[int], token_ids_1: list[int] | None = None
                                         ) -> list[int]:
        bos = [self.bos_token_id] if self.add_bos_token else []
        eos = [self.eos_token_id] if self.add_eos_token else []
        out = bos + list(token_ids_0) + eos
        if token_ids_1 is not None:
            out = out + bos + list(token_ids_1) + eos
        return out

    def num_special_tokens_to_add(self, pair: bool = False) -> int:
        return (int(self.add_bos_token) + int(self.add_eos_token)) * (2 if pair else 1)

    def get_special_tokens_mask(self, token_ids_0, token_ids_1=None, already_has_special_tokens: bool = False
                                ) -> list[int]:
        """1 for a special token, 0 for a text token."""
        if already_has_special_tokens:
            special = set(self.all_special_ids)
            return [int(i in special) for i in list(token_ids_0) + list(token_ids_1 or [])]
        one = [1] * self.add_bos_token + [0] * len(token_ids_0) + [1] * self.add_eos_token
        if token_ids_1 is not None:
            one += [1] * self.add_bos_token + [0] * len(token_ids_1) + [1] * self.add_eos_token
        return one

    def _ids_of(self, texts, is_split_into_words: bool, add_prefix_space: bool | None) -> list[list[int]]:
        """Ids of each text (a str, or with ``is_split_into_words`` a list of words), no special tokens
        added, in one batch. Words of pre-split texts are encoded alone, each with a space in front (as
        transformers does)."""
        prefix = self.add_prefix_space if add_prefix_space is None else bool(add_prefix_space)
        if not is_split_into_words:
            return self._bpe.encode_batch(texts, self._normalizer, prefix, self.split_special_tokens)
        words = [w for t in texts for w in t]
        flat = self._bpe.encode_batch(words, self._normalizer, True, self.split_special_tokens)
        all_ids, k = [], 0
        for t in texts:
            all_ids.append([i for ids in flat[k : k + len(t)] for i in ids])
            k += len(t)
        return all_ids

    # ---------------------------------------------------------------------------------- decoding
    def decode(self, token_ids, skip_special_tokens: bool = False, clean_up_tokenization_spaces: bool | None = None,
               spaces_between_special_tokens: bool = True) -> str:
        """Ids -> text, as transformers 4.46.3: tokens joined (a space is "[SPACE]" unless
        ``clean_up_tokenization_spaces``, which also turns "[STOP]" into a space and drops "[UNK]")."""
        ids = as_id_list(token_ids)
        special_ids = set(self.all_special_ids)
        special_tokens = set(self.all_special_tokens)
        # Added tokens that are not special (and additional special tokens past the vocabulary) are
        # decoded on their own and joined with a space, as transformers does.
        alone = {t for t in self.added_tokens_encoder if t not in special_tokens} | {
            t for t in self.additional_special_tokens if self.convert_tokens_to_ids(t) >= self.vocab_size}
        text = self._bpe.decode(ids, skip_ids=special_ids if skip_special_tokens else (), alone=alone,
                                errors=self.errors, spaces_between_special_tokens=spaces_between_special_tokens)
        clean = clean_up_tokenization_spaces
        if clean is None:
            clean = self.clean_up_tokenization_spaces
        return self.clean_up_tokenization(text) if clean else text

    def batch_decode(self, sequences, **kwargs) -> list[str]:
        """A batch of id sequences (lists, a 2-D array or tensor) -> texts; kwargs as ``decode``."""
        return [self.decode(seq, **kwargs) for seq in as_rows(sequences)]

    def clean_up_tokenization(self, text: str) -> str:
        vocab = self.get_vocab()
        if "[SPACE]" in vocab:
            text = text.replace("[SPACE]", " ")
        if "[STOP]" in vocab:
            text = text.replace("[STOP]", " ")
        return text.replace(self.unk_token, "").replace("   ", " ").replace("  ", " ")

    # ------------------------------------------------------------------------------ save and load
    def save_vocabulary(self, save_directory, filename_prefix: str | None = None) -> tuple[str, str]:
        """Write vocab.json and merges.txt (Hugging Face's layout) into an existing directory, both or
        neither (clvp/atomic.py)."""
        if not os.path.isdir(save_directory):
            raise ValueError(f"save_directory {str(save_directory)!r} is not an existing directory")
        with atomic_folder(save_directory) as folder:
            paths = write_vocabulary(folder, self.encoder, self.bpe_merges, filename_prefix)
        return tuple(os.path.join(save_directory, os.path.basename(p)) for p in paths)

    def save_pretrained(self, save_directory) -> tuple[str, ...]:
        """Write tokenizer_config.json, special_tokens_map.json, added_tokens.json, vocab.json and
        merges.txt as transformers 4.46.3 does (which can load them), plus ``text_normalization``.
        All or nothing (clvp/atomic.py); a stale added_tokens.json (no tokens added now) is removed."""
        if os.path.isfile(save_directory):
            raise ValueError(f"save_directory {str(save_directory)!r} is a file, not a directory")
        settings = {key: getattr(self, key) for key in (
            "add_bos_token", "add_eos_token", "add_prefix_space", "clean_up_tokenization_spaces", "errors",
            "model_max_length", "padding_side", "split_special_tokens", "text_normalization", "truncation_side")}
        with atomic_folder(save_directory, drop=[ADDED_TOKENS_FILE]) as folder:
            paths = write_settings(folder, settings=settings,
                                   special_tokens={a: getattr(self, a) for a in ALL_SPECIAL_ATTRIBUTES
                                                   if a in SPECIAL_ATTRIBUTES or getattr(self, a) is not None},
                                   additional_special_tokens=self.additional_special_tokens,
                                   added_tokens_encoder=self.added_tokens_encoder, vocab_size=self.vocab_size)
            paths += self.save_vocabulary(folder)
        return tuple(os.path.join(save_directory, os.path.basename(p)) for p in paths)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs) -> "ClvpTokenizer":
        """Load from a local directory: Hugging Face's layout (vocab.json + merges.txt, with
        tokenizer_config.json, special_tokens_map.json and added_tokens.json when present) or Tortoise's
        tokenizer.json; or from a tokenizer.json file. Keyword arguments override the saved settings.
        (Nothing is downloaded: for the real CLVP vocabulary use ``ClvpTokenizer()``.)"""
        path = Path(pretrained_model_name_or_path)
        if path.is_file():
            if path.suffix != ".json":
                raise ValueError(f"{path} is a file but not a tokenizer.json; give a directory with vocab.json "
                                 "+ merges.txt or a Tortoise tokenizer.json")
            return cls(tokenizer_file=path, name_or_path=str(path), **kwargs)
        if not path.is_dir():
            raise FileNotFoundError(
                f"{str(pretrained_model_name_or_path)!r} is not a local directory or file; from_pretrained reads "
                "local files only (download a hub tokenizer first). ClvpTokenizer() loads the real CLVP vocabulary "
                "shipped with this package.")
        init = {**read_saved_settings(path), **kwargs}
        init.setdefault("name_or_path", str(pretrained_model_name_or_path))
        return cls(**vocabulary_files(path), **init)

    def __repr__(self) -> str:
        return (f"ClvpTokenizer(name_or_path={self.name_or_path!r}, vocab_size={self.vocab_size}, len={len(self)}, "
                f"text_normalization={self.text_normalization!r}, add_prefix_space={self.add_prefix_space}, "
                f"add_bos_token={self.add_bos_token}, add_eos_token={self.add_eos_token}, "
                f"special_tokens={self.special_tokens_map})")


# the constructor's named parameters, kept in init_kwargs
_INIT_PARAMETERS = [name for name in inspect.signature(ClvpTokenizer.__init__).parameters
                    if name not in ("self", "kwargs")]
