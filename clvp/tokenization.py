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
   merge outside the vocabulary becomes ``[UNK]``.

Where we differ from transformers 4.46.3 on purpose (it documents these but ignores them):
``add_prefix_space=True`` puts a space before the text, and ``is_split_into_words=True`` a space
before every word. ``get_special_tokens_mask`` marks the eos token too, and "$,5" no longer raises.

``text_normalization`` is a constructor argument, saved in tokenizer_config.json and read back by
``from_pretrained`` (transformers ignores the unknown key); it can be overridden there as a keyword.
"""
from __future__ import annotations

import codecs
import json
import os
import re
from importlib import resources
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from tokenizers import Tokenizer, models, pre_tokenizers

from .normalizer import TEXT_NORMALIZATIONS, EnglishNormalizer

__all__ = ["ClvpTokenizer", "BatchEncoding", "bytes_to_unicode"]

VOCAB_FILES_NAMES = {"vocab_file": "vocab.json", "merges_file": "merges.txt"}
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_MAP_FILE = "special_tokens_map.json"
ADDED_TOKENS_FILE = "added_tokens.json"
TORTOISE_TOKENIZER_FILE = "tokenizer.json"
VERY_LARGE_INTEGER = int(1e30)  # transformers' "no maximum length"

_SPECIAL_ATTRIBUTES = ("bos_token", "eos_token", "unk_token", "pad_token")
_PADDING = {True: "longest", False: "do_not_pad", "longest": "longest", "max_length": "max_length",
            "do_not_pad": "do_not_pad"}
_TRUNCATION = {True: True, False: False, None: None, "longest_first": True, "only_first": True,
               "do_not_truncate": False}


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable unicode character map (a space becomes "Ġ")."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


_BYTE_ENCODER = bytes_to_unicode()
_BYTE_DECODER = {c: b for b, c in _BYTE_ENCODER.items()}


def _token_bytes(token: str) -> bytes:
    """A vocabulary token's bytes (a character outside the byte map stands for its UTF-8)."""
    return b"".join(bytes([_BYTE_DECODER[c]]) if c in _BYTE_DECODER else c.encode("utf-8") for c in token)


def _content(token) -> str | None:
    """A special token given as a str, as a saved AddedToken dict, or as an object with ``.content``."""
    if token is None or isinstance(token, str):
        return token
    if isinstance(token, dict) and "content" in token:
        return token["content"]
    if hasattr(token, "content"):
        return token.content
    raise TypeError(f"a special token must be a str (or a dict with 'content'), got {type(token).__name__}")


class BatchEncoding(dict):
    """The tokenizer's output: a dict (``enc["input_ids"]``) that also reads as attributes
    (``enc.input_ids``) and moves its tensors with ``.to(device)``."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"BatchEncoding has no field {name!r}; fields: {list(self)}") from None

    def to(self, device) -> "BatchEncoding":
        return BatchEncoding({k: v.to(device) if hasattr(v, "to") else v for k, v in self.items()})


def _check_int(name: str, value, *, minimum: int) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be None or an integer >= {minimum}, got {value!r}")


class ClvpTokenizer:
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
        truncation_side, clean_up_tokenization_spaces, split_special_tokens: as in transformers.
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
    ):
        if (vocab_file is None) != (merges_file is None):
            raise ValueError("give both vocab_file and merges_file (Hugging Face's layout), or neither")
        if vocab_file is not None and tokenizer_file is not None:
            raise ValueError("give either vocab_file + merges_file or tokenizer_file, not both")
        if vocab_file is not None:
            encoder, merges = _read_hf_layout(vocab_file, merges_file)
        elif tokenizer_file is not None:
            encoder, merges = _read_tortoise_file(tokenizer_file)
        else:
            data = resources.files("clvp.data")
            encoder, merges = _parse_hf_layout(data.joinpath("vocab.json").read_text(encoding="utf-8"),
                                               data.joinpath("merges.txt").read_text(encoding="utf-8"))
        try:
            codecs.lookup_error(errors)
        except (LookupError, TypeError):
            raise ValueError(f"errors={errors!r} is not an error handler of bytes.decode "
                             "(e.g. 'replace', 'strict', 'ignore')") from None
        for name, value in (("padding_side", padding_side), ("truncation_side", truncation_side)):
            if value not in ("right", "left"):
                raise ValueError(f"{name} must be 'right' or 'left', got {value!r}")
        _check_int("model_max_length", model_max_length, minimum=0)
        if _content(unk_token) is None:
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
        self.text_normalization = text_normalization  # validated by the setter

        self.bos_token = _content(bos_token)
        self.eos_token = _content(eos_token)
        self.unk_token = _content(unk_token)
        self.pad_token = _content(pad_token)
        self.additional_special_tokens = [_content(t) for t in (additional_special_tokens or [])]

        # Added tokens as transformers numbers them: saved ids first, then each special token that is
        # neither in the vocabulary nor added gets len(vocabulary + added).
        self.added_tokens_encoder: dict[str, int] = {}
        for idx, tok in sorted((int(k), _content(v)) for k, v in (added_tokens_decoder or {}).items()):
            self.added_tokens_encoder[tok] = idx
        for tok in self.all_special_tokens:
            if tok in self.added_tokens_encoder:
                continue
            self.added_tokens_encoder[tok] = encoder[tok] if tok in encoder else len(self.get_vocab())
        self.added_tokens_decoder: dict[int, str] = {v: k for k, v in self.added_tokens_encoder.items()}
        self._build_backend()

    # ------------------------------------------------------------------------------------ set-up
    def _build_backend(self) -> None:
        encoder = self.encoder
        self._unk_id = self.convert_tokens_to_ids(self.unk_token)
        bpe_vocab = dict(encoder)
        bpe_vocab.setdefault(self.unk_token, self._unk_id)
        if "[SPACE]" in encoder:  # transformers maps the BPE token "Ġ" (a lone space) to "[SPACE]"
            bpe_vocab["\u0120"] = encoder["[SPACE]"]
        pairs = []
        for merge in self.bpe_merges:
            if len(merge) != 2:  # transformers keeps such lines as ranks that can never apply
                continue
            for piece in (merge[0], merge[1], merge[0] + merge[1]):
                bpe_vocab.setdefault(piece, self._unk_id)  # a piece outside the vocabulary is [UNK] there too
            pairs.append(merge)
        bpe = models.BPE(vocab=bpe_vocab, merges=pairs, unk_token=self.unk_token, fuse_unk=False)
        backend = Tokenizer(bpe)
        # GPT-2's regex ('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+), then bytes.
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        self._backend = backend
        self._id_bytes = {i: _token_bytes(t) for i, t in self.decoder.items()}
        specials = sorted(self.added_tokens_encoder, key=len, reverse=True)
        self._special_re = re.compile("|".join(re.escape(t) for t in specials)) if specials else None
        self._special_first_chars = {t[0] for t in specials if t}

    def __getstate__(self) -> dict:
        # The Rust BPE is rebuilt rather than pickled: its serialisation keeps one token per id, and
        # "Ġ" shares [SPACE]'s id here.
        return {k: v for k, v in self.__dict__.items() if k not in ("_backend", "_id_bytes", "_special_re")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._build_backend()

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
        for tok in [getattr(self, a) for a in _SPECIAL_ATTRIBUTES] + list(self.additional_special_tokens):
            if tok is not None and tok not in seen:
                seen.append(tok)
        return seen

    @property
    def all_special_ids(self) -> list[int]:
        return [self.convert_tokens_to_ids(t) for t in self.all_special_tokens]

    @property
    def special_tokens_map(self) -> dict:
        out = {a: getattr(self, a) for a in _SPECIAL_ATTRIBUTES if getattr(self, a) is not None}
        if self.additional_special_tokens:
            out["additional_special_tokens"] = list(self.additional_special_tokens)
        return out

    def _token_id(self, token):
        return None if token is None else self.convert_tokens_to_ids(token)

    bos_token_id = property(lambda self: self._token_id(self.bos_token))
    eos_token_id = property(lambda self: self._token_id(self.eos_token))
    unk_token_id = property(lambda self: self._token_id(self.unk_token))
    pad_token_id = property(lambda self: self._token_id(self.pad_token))

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
        return [self._id_to_token(i) for i in _as_id_list(ids) if i not in special]

    def _id_to_token(self, idx: int) -> str:
        if idx in self.added_tokens_decoder:
            return self.added_tokens_decoder[idx]
        if idx in self.decoder:
            return self.decoder[idx]
        raise ValueError(f"token id {idx} is not in the vocabulary (ids 0..{len(self) - 1})")

    def convert_tokens_to_string(self, tokens: Iterable[str]) -> str:
        return b"".join(_token_bytes(t) for t in tokens).decode("utf-8", errors=self.errors)

    # ---------------------------------------------------------------------------------- encoding
    def _split_specials(self, text: str) -> list:
        """[str | int]: the pieces of text between the added tokens, and those tokens' ids."""
        if (self.split_special_tokens or self._special_re is None
                or not any(c in text for c in self._special_first_chars)):
            return [text]
        out, last = [], 0
        for m in self._special_re.finditer(text):
            if m.start() > last:
                out.append(text[last : m.start()])
            out.append(self.added_tokens_encoder[m.group(0)])
            last = m.end()
        if last < len(text):
            out.append(text[last:])
        return out

    def _encode_texts(self, texts: Sequence[str], add_prefix_space: bool) -> list[list[int]]:
        """Ids of each text (no special tokens added), all BPE work in one ``tokenizers`` batch call."""
        normalize = self._normalizer
        pieces: list[str] = []
        plans: list = []  # per text: an index into pieces, or a list of (is_special, value)
        for text in texts:
            if add_prefix_space:
                text = " " + text
            parts = self._split_specials(text)
            if len(parts) == 1 and isinstance(parts[0], str):
                plans.append(len(pieces))
                pieces.append(normalize(parts[0]))
                continue
            plan = []
            for part in parts:
                if isinstance(part, int):
                    plan.append((True, part))
                else:
                    plan.append((False, len(pieces)))
                    pieces.append(normalize(part))
            plans.append(plan)
        encoded = [e.ids for e in self._backend.encode_batch_fast(pieces, add_special_tokens=False)] if pieces else []
        out = []
        for plan in plans:
            if isinstance(plan, int):
                out.append(encoded[plan])
            else:
                ids = []
                for is_special, value in plan:
                    if is_special:
                        ids.append(value)
                    else:
                        ids.extend(encoded[value])
                out.append(ids)
        return out

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
        tokens = []
        for part in self._split_specials(text):
            if isinstance(part, int):
                tokens.append(self.added_tokens_decoder[part])
                continue
            piece = self._normalizer(part)
            enc = self._backend.encode(piece, add_special_tokens=False)
            for tok_id, tok, (start, end) in zip(enc.ids, enc.tokens, enc.offsets):
                if tok_id == self._unk_id and tok == self.unk_token:
                    tok = "".join(_BYTE_ENCODER[b] for b in piece[start:end].encode("utf-8"))
                elif tok == "\u0120" and "[SPACE]" in self.encoder:
                    tok = "[SPACE]"
                tokens.append(tok)
        return tokens

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

    def __call__(
        self,
        text=None,
        add_special_tokens: bool = True,
        padding=False,
        truncation=None,
        max_length: int | None = None,
        is_split_into_words: bool = False,
        pad_to_multiple_of: int | None = None,
        padding_side: str | None = None,
        return_tensors: str | None = None,
        return_token_type_ids: bool | None = None,
        return_attention_mask: bool | None = None,
        return_special_tokens_mask: bool = False,
        return_length: bool = False,
        add_prefix_space: bool | None = None,
        verbose: bool = True,
    ) -> BatchEncoding:
        """Text(s) -> ``BatchEncoding`` with ``input_ids`` and ``attention_mask``.

        ``text``: a str or a list of str (with ``is_split_into_words=True``: a list of words, or a list
        of such lists). ``padding``: False / "do_not_pad", True / "longest", "max_length" (to
        ``max_length``). ``truncation``: True / "longest_first" / "only_first" cut to ``max_length``
        (the special tokens kept); if ``max_length`` is given without padding or truncation it
        truncates, as in transformers. ``return_tensors``: None (lists), "pt" or "np" (int64, shape
        (batch, length); a single str gives batch 1). ``verbose`` is accepted and unused (nothing warns).
        """
        if text is None:
            raise ValueError("text is required: a str or a list of str")
        batched = _is_batched(text, is_split_into_words)
        texts = text if batched else [text]
        padding_strategy, do_truncate, max_length = self._padding_truncation(padding, truncation, max_length,
                                                                            pad_to_multiple_of)
        if return_tensors not in (None, "pt", "np"):
            raise ValueError(f"return_tensors must be None, 'pt' or 'np', got {return_tensors!r}")
        if padding_side not in (None, "left", "right"):
            raise ValueError(f"padding_side must be None, 'left' or 'right', got {padding_side!r}")
        prefix = self.add_prefix_space if add_prefix_space is None else bool(add_prefix_space)

        if is_split_into_words:
            words = [w for t in texts for w in t]
            flat = self._encode_texts(words, add_prefix_space=True)
            all_ids, k = [], 0
            for t in texts:
                all_ids.append([i for ids in flat[k : k + len(t)] for i in ids])
                k += len(t)
        else:
            all_ids = self._encode_texts(texts, add_prefix_space=prefix)

        n_special = self.num_special_tokens_to_add() if add_special_tokens else 0
        if do_truncate and max_length is not None:
            keep = max(max_length - n_special, 0)
            if self.truncation_side == "right":
                all_ids = [ids[:keep] if len(ids) > keep else ids for ids in all_ids]
            else:
                all_ids = [ids[len(ids) - keep :] if len(ids) > keep else ids for ids in all_ids]
        special_masks = None
        if add_special_tokens and n_special:
            if return_special_tokens_mask:
                special_masks = [self.get_special_tokens_mask(ids) for ids in all_ids]
            all_ids = [self.build_inputs_with_special_tokens(ids) for ids in all_ids]
        elif return_special_tokens_mask:
            special_masks = [self.get_special_tokens_mask(ids, already_has_special_tokens=True) for ids in all_ids]

        want_mask = return_attention_mask
        if want_mask is None:
            want_mask = "attention_mask" in self.model_input_names
        extra = {}
        if return_token_type_ids:
            extra["token_type_ids"] = [[0] * len(ids) for ids in all_ids]
        if special_masks is not None:
            extra["special_tokens_mask"] = special_masks
        enc = self._pad(all_ids, padding_strategy, max_length, pad_to_multiple_of, padding_side or self.padding_side,
                        want_mask, return_tensors, extra)
        if return_length:
            enc["length"] = [len(ids) for ids in all_ids]
            if return_tensors is not None:
                enc["length"] = _to_tensor(np.asarray(enc["length"], dtype=np.int64), return_tensors)
        if not batched and return_tensors is None:
            for key in list(enc):
                enc[key] = enc[key][0]
        return enc

    def _padding_truncation(self, padding, truncation, max_length, pad_to_multiple_of):
        if isinstance(padding, str) and padding not in _PADDING or not isinstance(padding, (str, bool)):
            raise ValueError(f"padding must be True, False, 'longest', 'max_length' or 'do_not_pad', got {padding!r}")
        if not isinstance(truncation, (str, bool, type(None))) or truncation not in _TRUNCATION:
            raise ValueError("truncation must be None, True, False, 'longest_first', 'only_first' or "
                             f"'do_not_truncate' (CLVP encodes no text pairs), got {truncation!r}")
        _check_int("max_length", max_length, minimum=0)
        _check_int("pad_to_multiple_of", pad_to_multiple_of, minimum=1)
        padding_strategy = _PADDING[padding]
        do_truncate = _TRUNCATION[truncation]
        if do_truncate is None:
            # transformers: a max_length with neither padding nor truncation means truncation.
            do_truncate = max_length is not None and padding_strategy == "do_not_pad"
        if max_length is None and (do_truncate or padding_strategy == "max_length"):
            if self.model_max_length < VERY_LARGE_INTEGER:
                max_length = self.model_max_length
            elif padding_strategy == "max_length":
                raise ValueError("padding='max_length' needs max_length (this tokenizer has no model_max_length)")
            else:
                do_truncate = False  # transformers: no maximum length known, so nothing to truncate to
        if (do_truncate and padding_strategy != "do_not_pad" and pad_to_multiple_of is not None
                and max_length is not None and max_length % pad_to_multiple_of):
            raise ValueError(f"truncation and padding are both on but max_length={max_length} is not a multiple "
                             f"of pad_to_multiple_of={pad_to_multiple_of}")
        return padding_strategy, do_truncate, max_length

    def _pad(self, all_ids, strategy, max_length, pad_to_multiple_of, side, want_mask, return_tensors, extra):
        """Pad rows (lists of ids) to the longest or to max_length; rows already longer stay as they are."""
        lengths = [len(ids) for ids in all_ids]
        target = {"longest": max(lengths, default=0), "max_length": max_length, "do_not_pad": None}[strategy]
        if target is not None and pad_to_multiple_of and target % pad_to_multiple_of:
            target = (target // pad_to_multiple_of + 1) * pad_to_multiple_of
        pad_id = self.pad_token_id
        if target is not None and pad_id is None and any(n < target for n in lengths):
            raise ValueError("padding needs a pad token, and this tokenizer has pad_token=None")
        fill = {"input_ids": 0 if pad_id is None else pad_id, "attention_mask": 0, "token_type_ids": 0,
                "special_tokens_mask": 1}
        rows = {"input_ids": all_ids}
        if want_mask:
            rows["attention_mask"] = [[1] * n for n in lengths]
        rows.update(extra)
        left = side == "left"

        if return_tensors is None:
            if target is None:
                return BatchEncoding(rows)

            def pad_row(row, value):
                n = target - len(row)
                if n <= 0:
                    return row
                return [value] * n + row if left else row + [value] * n

            return BatchEncoding({k: [pad_row(r, fill[k]) for r in v] for k, v in rows.items()})

        width = target if target is not None else (lengths[0] if lengths else 0)
        if any(n != width for n in lengths) and (target is None or max(lengths) > target):
            raise ValueError(f"cannot make a tensor of sequences of different lengths (from {min(lengths)} to "
                             f"{max(lengths)} tokens); pass padding=True, or truncation=True with max_length")
        enc = BatchEncoding()
        for k, v in rows.items():
            arr = np.full((len(v), width), fill[k], dtype=np.int64)
            for i, row in enumerate(v):
                if row:
                    if left:
                        arr[i, width - len(row) :] = row
                    else:
                        arr[i, : len(row)] = row
            enc[k] = _to_tensor(arr, return_tensors)
        return enc

    def encode(self, text, add_special_tokens: bool = True, **kwargs):
        """One text -> its ids (a list, or a (1, n) tensor with ``return_tensors``)."""
        if not isinstance(text, str) and not kwargs.get("is_split_into_words"):
            raise TypeError(f"encode takes one text (a str), got {type(text).__name__}; use __call__ for a batch")
        return self(text, add_special_tokens=add_special_tokens, **kwargs)["input_ids"]

    def encode_plus(self, text, **kwargs) -> BatchEncoding:
        if not isinstance(text, str) and not kwargs.get("is_split_into_words"):
            raise TypeError(f"encode_plus takes one text (a str), got {type(text).__name__}")
        return self(text, **kwargs)

    def batch_encode_plus(self, batch_text_or_text_pairs, **kwargs) -> BatchEncoding:
        if not isinstance(batch_text_or_text_pairs, (list, tuple)):
            raise TypeError("batch_encode_plus takes a list of texts")
        return self(list(batch_text_or_text_pairs), **kwargs)

    def pad(self, encoded_inputs, padding=True, max_length=None, pad_to_multiple_of=None, padding_side=None,
            return_attention_mask=None, return_tensors=None) -> BatchEncoding:
        """Pad already-encoded ids: a dict with "input_ids" (a list of lists), or a list of such dicts."""
        if isinstance(encoded_inputs, (list, tuple)) and encoded_inputs and isinstance(encoded_inputs[0], dict):
            encoded_inputs = {"input_ids": [e["input_ids"] for e in encoded_inputs]}
        if not isinstance(encoded_inputs, dict) or "input_ids" not in encoded_inputs:
            raise TypeError("pad takes a dict with 'input_ids' or a list of such dicts")
        ids = [_as_id_list(row) for row in _as_rows(encoded_inputs["input_ids"])]
        strategy, _, max_length = self._padding_truncation(padding, False, max_length, pad_to_multiple_of)
        want_mask = True if return_attention_mask is None else return_attention_mask
        return self._pad(ids, strategy, max_length, pad_to_multiple_of, padding_side or self.padding_side, want_mask,
                         return_tensors, {})

    # ---------------------------------------------------------------------------------- decoding
    def decode(self, token_ids, skip_special_tokens: bool = False, clean_up_tokenization_spaces: bool | None = None,
               spaces_between_special_tokens: bool = True) -> str:
        """Ids -> text, as transformers 4.46.3: tokens joined (a space is "[SPACE]" unless
        ``clean_up_tokenization_spaces``, which also turns "[STOP]" into a space and drops "[UNK]")."""
        ids = _as_id_list(token_ids)
        special_ids = set(self.all_special_ids)
        special_tokens = set(self.all_special_tokens)
        # Added tokens that are not special (and additional special tokens past the vocabulary) are
        # decoded on their own and joined with a space, as transformers does.
        legacy = {t for t in self.added_tokens_encoder if t not in special_tokens} | {
            t for t in self.additional_special_tokens if self.convert_tokens_to_ids(t) >= self.vocab_size}
        sub_texts, current = [], []
        for i in ids:
            if skip_special_tokens and i in special_ids:
                continue
            if i in self.added_tokens_decoder:
                tok = self.added_tokens_decoder[i]
                if tok in legacy:
                    if current:
                        s = b"".join(current).decode("utf-8", errors=self.errors)
                        if s:
                            sub_texts.append(s)
                        current = []
                    sub_texts.append(tok)
                    continue
                current.append(_token_bytes(tok))
            elif i in self._id_bytes:
                current.append(self._id_bytes[i])
            else:
                raise ValueError(f"token id {i} is not in the vocabulary (ids 0..{len(self) - 1})")
        if current:
            sub_texts.append(b"".join(current).decode("utf-8", errors=self.errors))
        text = (" " if spaces_between_special_tokens else "").join(sub_texts)
        clean = clean_up_tokenization_spaces
        if clean is None:
            clean = self.clean_up_tokenization_spaces
        return self.clean_up_tokenization(text) if clean else text

    def batch_decode(self, sequences, **kwargs) -> list[str]:
        """A batch of id sequences (lists, a 2-D array or tensor) -> texts; kwargs as ``decode``."""
        return [self.decode(seq, **kwargs) for seq in _as_rows(sequences)]

    def clean_up_tokenization(self, text: str) -> str:
        vocab = self.get_vocab()
        if "[SPACE]" in vocab:
            text = text.replace("[SPACE]", " ")
        if "[STOP]" in vocab:
            text = text.replace("[STOP]", " ")
        return text.replace(self.unk_token, "").replace("   ", " ").replace("  ", " ")

    # ------------------------------------------------------------------------------ save and load
    def save_vocabulary(self, save_directory, filename_prefix: str | None = None) -> tuple[str, str]:
        """Write vocab.json and merges.txt (Hugging Face's layout) into an existing directory."""
        if not os.path.isdir(save_directory):
            raise ValueError(f"save_directory {str(save_directory)!r} is not an existing directory")
        prefix = filename_prefix + "-" if filename_prefix else ""
        vocab_file = os.path.join(save_directory, prefix + VOCAB_FILES_NAMES["vocab_file"])
        merges_file = os.path.join(save_directory, prefix + VOCAB_FILES_NAMES["merges_file"])
        with open(vocab_file, "w", encoding="utf-8") as f:
            f.write(json.dumps(self.encoder, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
        with open(merges_file, "w", encoding="utf-8") as f:
            f.write("#version: 0.2\n")
            for merge in self.bpe_merges:
                f.write(" ".join(merge) + "\n")
        return vocab_file, merges_file

    def save_pretrained(self, save_directory) -> tuple[str, ...]:
        """Write tokenizer_config.json, special_tokens_map.json, added_tokens.json, vocab.json and
        merges.txt as transformers 4.46.3 does (which can load them), plus ``text_normalization``."""
        if os.path.isfile(save_directory):
            raise ValueError(f"save_directory {str(save_directory)!r} is a file, not a directory")
        os.makedirs(save_directory, exist_ok=True)

        def added(tok):
            return {"content": tok, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
                    "special": tok in self.all_special_tokens}

        config = {
            "add_bos_token": self.add_bos_token,
            "add_eos_token": self.add_eos_token,
            "add_prefix_space": self.add_prefix_space,
            "added_tokens_decoder": {str(i): added(t) for i, t in sorted(self.added_tokens_decoder.items())},
            **({"additional_special_tokens": list(self.additional_special_tokens)}
               if self.additional_special_tokens else {}),
            "bos_token": self.bos_token,
            "clean_up_tokenization_spaces": self.clean_up_tokenization_spaces,
            "eos_token": self.eos_token,
            "errors": self.errors,
            "model_max_length": self.model_max_length,
            "pad_token": self.pad_token,
            "padding_side": self.padding_side,
            "split_special_tokens": self.split_special_tokens,
            "text_normalization": self.text_normalization,
            "tokenizer_class": "ClvpTokenizer",
            "truncation_side": self.truncation_side,
            "unk_token": self.unk_token,
        }
        special_map = {}
        for a in _SPECIAL_ATTRIBUTES:
            tok = getattr(self, a)
            if tok is not None:
                entry = added(tok)
                del entry["special"]
                special_map[a] = entry
        if self.additional_special_tokens:
            special_map["additional_special_tokens"] = list(self.additional_special_tokens)
        paths = [os.path.join(save_directory, n) for n in (TOKENIZER_CONFIG_FILE, SPECIAL_TOKENS_MAP_FILE)]
        for path, obj in zip(paths, (config, special_map)):
            with open(path, "w", encoding="utf-8") as f:
                f.write(json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
        beyond = {t: i for t, i in self.added_tokens_encoder.items() if i >= self.vocab_size}
        if beyond:
            path = os.path.join(save_directory, ADDED_TOKENS_FILE)
            with open(path, "w", encoding="utf-8") as f:
                f.write(json.dumps(beyond, ensure_ascii=False) + "\n")
            paths.append(path)
        return tuple(paths) + self.save_vocabulary(save_directory)

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
        init: dict = {}
        config_file = path / TOKENIZER_CONFIG_FILE
        if config_file.is_file():
            config = json.loads(config_file.read_text(encoding="utf-8"))
            for key, value in config.items():
                if key in _INIT_KEYS:  # others (tokenizer_class, auto_map, ...) carry no setting of ours
                    init[key] = value
            if "added_tokens_decoder" in config:
                init["added_tokens_decoder"] = {int(k): _content(v) for k, v in config["added_tokens_decoder"].items()}
        special_file = path / SPECIAL_TOKENS_MAP_FILE
        if special_file.is_file():
            for key, value in json.loads(special_file.read_text(encoding="utf-8")).items():
                if key == "additional_special_tokens":
                    init[key] = [_content(v) for v in value]
                elif key in _SPECIAL_ATTRIBUTES:
                    init[key] = _content(value)
        added_file = path / ADDED_TOKENS_FILE
        if added_file.is_file():
            decoder = dict(init.get("added_tokens_decoder") or {})
            for tok, idx in json.loads(added_file.read_text(encoding="utf-8")).items():
                decoder.setdefault(int(idx), tok)
            init["added_tokens_decoder"] = decoder
        init.update(kwargs)
        init.setdefault("name_or_path", str(pretrained_model_name_or_path))
        vocab, merges = path / VOCAB_FILES_NAMES["vocab_file"], path / VOCAB_FILES_NAMES["merges_file"]
        if vocab.is_file() and merges.is_file():
            return cls(vocab, merges, **init)
        if (path / TORTOISE_TOKENIZER_FILE).is_file():
            return cls(tokenizer_file=path / TORTOISE_TOKENIZER_FILE, **init)
        raise FileNotFoundError(f"{path} has neither vocab.json + merges.txt nor tokenizer.json")

    def __repr__(self) -> str:
        return (f"ClvpTokenizer(name_or_path={self.name_or_path!r}, vocab_size={self.vocab_size}, len={len(self)}, "
                f"text_normalization={self.text_normalization!r}, add_prefix_space={self.add_prefix_space}, "
                f"add_bos_token={self.add_bos_token}, add_eos_token={self.add_eos_token}, "
                f"special_tokens={self.special_tokens_map})")


# The settings from_pretrained reads from a tokenizer_config.json.
_INIT_KEYS = {"errors", "unk_token", "bos_token", "eos_token", "pad_token", "add_prefix_space", "add_bos_token",
              "add_eos_token", "text_normalization", "additional_special_tokens", "model_max_length", "padding_side",
              "truncation_side", "clean_up_tokenization_spaces", "split_special_tokens"}


# ---------------------------------------------------------------------------------------- helpers
def _parse_hf_layout(vocab_text: str, merges_text: str):
    encoder = json.loads(vocab_text)
    if not isinstance(encoder, dict) or not all(isinstance(v, int) for v in encoder.values()):
        raise ValueError("vocab.json must map tokens to integer ids")
    # transformers: the first line (#version) is skipped, and so is the last element of the split,
    # which is empty when the file ends with a newline.
    merges = [tuple(line.split()) for line in merges_text.split("\n")[1:-1]]
    return encoder, merges


def _read_hf_layout(vocab_file, merges_file):
    with open(vocab_file, encoding="utf-8") as f:
        vocab_text = f.read()
    with open(merges_file, encoding="utf-8") as f:
        merges_text = f.read()
    return _parse_hf_layout(vocab_text, merges_text)


def _read_tortoise_file(tokenizer_file):
    """Tortoise's tokenizer.json (a ``tokenizers`` BPE file) -> vocabulary and merges."""
    with open(tokenizer_file, encoding="utf-8") as f:
        data = json.load(f)
    model = data.get("model") if isinstance(data, dict) else None
    if not isinstance(model, dict) or model.get("type", "BPE") != "BPE" or "vocab" not in model:
        raise ValueError(f"{tokenizer_file} is not a BPE tokenizer.json (no model.vocab of type BPE)")
    merges = [tuple(m.split()) if isinstance(m, str) else tuple(m) for m in model.get("merges", [])]
    return dict(model["vocab"]), merges


def _is_batched(text, is_split_into_words: bool) -> bool:
    if is_split_into_words:
        if isinstance(text, (list, tuple)) and all(isinstance(w, str) for w in text):
            return False
        if isinstance(text, (list, tuple)) and all(
                isinstance(t, (list, tuple)) and all(isinstance(w, str) for w in t) for t in text):
            return True
        raise TypeError("with is_split_into_words=True, text must be a list of words (str) or a list of such lists")
    if isinstance(text, str):
        return False
    if isinstance(text, (list, tuple)) and all(isinstance(t, str) for t in text):
        return True
    raise TypeError(f"text must be a str or a list of str, got {type(text).__name__}"
                    + (" containing " + ", ".join(sorted({type(t).__name__ for t in text if not isinstance(t, str)}))
                       if isinstance(text, (list, tuple)) else ""))


def _as_id_list(ids) -> list[int]:
    if hasattr(ids, "tolist"):  # numpy array or torch tensor
        ids = ids.tolist()
    if isinstance(ids, int):
        return [ids]
    if not isinstance(ids, (list, tuple)) or not all(isinstance(i, (int, np.integer)) for i in ids):
        raise TypeError("token ids must be an int, a list of ints, or a 1-D array or tensor")
    return [int(i) for i in ids]


def _as_rows(sequences) -> list:
    if hasattr(sequences, "tolist"):
        sequences = sequences.tolist()
    if not isinstance(sequences, (list, tuple)):
        raise TypeError("expected a batch: a list of id lists, or a 2-D array or tensor")
    return list(sequences)


def _to_tensor(arr: np.ndarray, return_tensors: str):
    if return_tensors == "np":
        return arr
    import torch

    return torch.from_numpy(arr)
