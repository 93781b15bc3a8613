"""The encoding entry points of transformers 4.46.3's (slow) tokenizers, for ``ClvpTokenizer``:
``__call__``, ``encode``, ``encode_plus``, ``batch_encode_plus``, ``prepare_for_model``,
``truncate_sequences``, ``pad`` and the token-type ids, with transformers' signatures and rules
(text pairs, every padding and truncation strategy, overflowing tokens with a stride, a given
attention mask kept by ``pad``).

``EncodingMixin`` holds only the flow; the tokenizer supplies the ids (``_ids_of``: texts -> ids in
one batch, with the Rust BPE), the special tokens (``build_inputs_with_special_tokens``,
``get_special_tokens_mask``, ``num_special_tokens_to_add``) and its settings (``pad_token_id``,
``padding_side``, ``truncation_side``, ``model_max_length``, ``model_input_names``). The list work
is in clvp/padding.py.

Where this differs from transformers 4.46.3 (docs/model.md §5.5): token_type_ids and
special_tokens_mask line up with input_ids when bos / eos tokens are added (transformers' are
shorter then); an empty batch gives empty rows instead of a ValueError; padding="max_length"
with no length known, and keyword arguments nothing takes, raise instead of warning.
"""
from __future__ import annotations

import logging
import numbers
from collections.abc import Mapping

import numpy as np

from .batch import BatchEncoding
from .padding import (pad_batch, pad_batch_to_arrays, pad_encoding, padding_and_truncation, to_python, to_tensors,
                      truncate_sequences)

__all__ = ["EncodingMixin", "RETURN_TENSORS"]

logger = logging.getLogger(__name__)

RETURN_TENSORS = (None, "pt", "np")


def is_batched(text, is_split_into_words: bool, name: str = "text") -> bool:
    """Is ``text`` a batch? Raises a TypeError for a layout ``__call__`` does not take (transformers: a
    str, a list of str or of (text, text_pair) pairs, or with ``is_split_into_words`` a list of words
    or a list of such lists)."""
    if not is_split_into_words and name == "text" and isinstance(text, (list, tuple)) and text and all(
            isinstance(t, (list, tuple)) and len(t) == 2 and all(isinstance(x, str) for x in t) for t in text):
        return True  # a batch of (text, text_pair) pairs
    if is_split_into_words:
        if isinstance(text, (list, tuple)) and all(isinstance(w, str) for w in text):
            return False
        if isinstance(text, (list, tuple)) and all(
                isinstance(t, (list, tuple)) and all(isinstance(w, str) for w in t) for t in text):
            return True
        raise TypeError(f"with is_split_into_words=True, {name} must be a list of words (str) or a list of such lists")
    if isinstance(text, str):
        return False
    if isinstance(text, (list, tuple)) and all(isinstance(t, str) for t in text):
        return True
    raise TypeError(f"{name} must be a str or a list of str, got {type(text).__name__}"
                    + (" containing " + ", ".join(sorted({type(t).__name__ for t in text if not isinstance(t, str)}))
                       if isinstance(text, (list, tuple)) else ""))


def _check_common(return_tensors, padding_side, stride, return_offsets_mapping) -> None:
    if return_tensors not in RETURN_TENSORS:
        raise ValueError(f"return_tensors must be None, 'pt' or 'np', got {return_tensors!r}")
    if padding_side not in (None, "left", "right"):
        raise ValueError(f"padding_side must be None, 'left' or 'right', got {padding_side!r}")
    if isinstance(stride, bool) or not isinstance(stride, numbers.Integral) or stride < 0:
        raise ValueError(f"stride must be an integer >= 0, got {stride!r}")
    if return_offsets_mapping:
        raise NotImplementedError("return_offsets_mapping is not available for ClvpTokenizer (transformers 4.46.3 "
                                  "has it only for fast tokenizers, and CLVP has none)")


class EncodingMixin:
    """transformers' encoding API over the tokenizer's ``_ids_of`` (see the module docstring)."""

    # ------------------------------------------------------------------------------ entry points
    def __call__(self, text=None, text_pair=None, text_target=None, text_pair_target=None,
                 add_special_tokens: bool = True, padding=False, truncation=None, max_length: int | None = None,
                 stride: int = 0, is_split_into_words: bool = False, pad_to_multiple_of: int | None = None,
                 padding_side: str | None = None, return_tensors: str | None = None,
                 return_token_type_ids: bool | None = None, return_attention_mask: bool | None = None,
                 return_overflowing_tokens: bool = False, return_special_tokens_mask: bool = False,
                 return_offsets_mapping: bool = False, return_length: bool = False, verbose: bool = True,
                 add_prefix_space: bool | None = None, pad_to_max_length: bool = False, truncation_strategy=None,
                 ) -> BatchEncoding:
        """Text(s), or text pairs, -> ``BatchEncoding`` with ``input_ids`` and ``attention_mask``, as
        transformers' ``__call__``.

        ``text`` / ``text_pair``: a str or a list of str (batch), or with ``is_split_into_words=True`` a
        list of words or a list of such lists; a batch of pairs is two lists of one length.
        ``text_target`` (and ``text_pair_target``) are encoded alike and returned as ``labels``.
        ``padding``: False / "do_not_pad", True / "longest", "max_length". ``truncation``: True /
        "longest_first", "only_first", "only_second", False / "do_not_truncate" (None: only when
        ``max_length`` is given without padding). ``return_overflowing_tokens`` with ``stride``: the ids
        cut off (with ``stride`` ids of context) and ``num_truncated_tokens``. ``return_tensors``: None
        (lists), "pt" or "np" ((batch, length) int64; a single text gives batch 1). ``verbose=False``
        silences the warning (logged once) about ids longer than ``model_max_length``."""
        if text is None and text_target is None:
            raise ValueError("text is required (or text_target): a str or a list of str")
        kwargs = dict(add_special_tokens=add_special_tokens, padding=padding, truncation=truncation,
                      max_length=max_length, stride=stride, is_split_into_words=is_split_into_words,
                      pad_to_multiple_of=pad_to_multiple_of, padding_side=padding_side, return_tensors=return_tensors,
                      return_token_type_ids=return_token_type_ids, return_attention_mask=return_attention_mask,
                      return_overflowing_tokens=return_overflowing_tokens,
                      return_special_tokens_mask=return_special_tokens_mask,
                      return_offsets_mapping=return_offsets_mapping, return_length=return_length,
                      add_prefix_space=add_prefix_space, pad_to_max_length=pad_to_max_length,
                      truncation_strategy=truncation_strategy, verbose=verbose)
        encodings = None if text is None else self._call_one(text, text_pair, **kwargs)
        if text_target is None:
            return encodings
        target = self._call_one(text_target, text_pair_target, **kwargs)
        if encodings is None:
            return target
        encodings["labels"] = target["input_ids"]
        return encodings

    def _call_one(self, text, text_pair, *, is_split_into_words, **kwargs) -> BatchEncoding:
        batched = is_batched(text, is_split_into_words)
        if text_pair is not None:
            pair_batched = is_batched(text_pair, is_split_into_words, "text_pair")
            if batched and not pair_batched:
                raise TypeError("when tokenizing a batch of texts, text_pair must be a list with one text per text")
            if batched and len(text) != len(text_pair):
                raise ValueError(f"text_pair must have one text per text: batch length of text is {len(text)}, "
                                 f"of text_pair {len(text_pair)}")
        if batched:
            pairs = list(zip(text, text_pair)) if text_pair is not None else list(text)
            return self._encode_batch(pairs, is_split_into_words=is_split_into_words, **kwargs)
        return self._encode_one(text, text_pair, is_split_into_words=is_split_into_words, **kwargs)

    def encode(self, text, text_pair=None, add_special_tokens: bool = True, padding=False, truncation=None,
               max_length: int | None = None, stride: int = 0, padding_side: str | None = None,
               return_tensors: str | None = None, **kwargs):
        """One text (or a pair) -> its ids: a list, or a (1, n) tensor with ``return_tensors``. A text is a
        str, a list of tokens, or a list of ids (used as they are), as in transformers."""
        return self.encode_plus(text, text_pair, add_special_tokens=add_special_tokens, padding=padding,
                                truncation=truncation, max_length=max_length, stride=stride,
                                padding_side=padding_side, return_tensors=return_tensors, **kwargs)["input_ids"]

    def encode_plus(self, text, text_pair=None, **kwargs) -> BatchEncoding:
        """One text (or a pair) -> ``BatchEncoding``; arguments as ``__call__``."""
        return self._encode_one(text, text_pair, **self._defaults(kwargs))

    def batch_encode_plus(self, batch_text_or_text_pairs, **kwargs) -> BatchEncoding:
        """A list of texts or of (text, text_pair) tuples -> ``BatchEncoding``; arguments as ``__call__``."""
        if not isinstance(batch_text_or_text_pairs, (list, tuple)):
            raise TypeError("batch_text_or_text_pairs must be a list of texts or of (text, text_pair) pairs, got "
                            f"{type(batch_text_or_text_pairs).__name__}")
        return self._encode_batch(list(batch_text_or_text_pairs), **self._defaults(kwargs))

    def prepare_for_model(self, ids, pair_ids=None, prepend_batch_axis: bool = False, **kwargs) -> BatchEncoding:
        """Ids (and pair ids), no special tokens yet -> a model input: special tokens, truncation,
        padding, tensors (1-D unless ``prepend_batch_axis``), as transformers' ``prepare_for_model``."""
        kwargs = self._defaults(kwargs)
        kwargs.pop("is_split_into_words")
        kwargs.pop("add_prefix_space")
        return self._finish_one(self._id_list(ids, "ids"),
                                None if pair_ids is None else self._id_list(pair_ids, "pair_ids"),
                                prepend_batch_axis=bool(prepend_batch_axis), **kwargs)

    def truncate_sequences(self, ids, pair_ids=None, num_tokens_to_remove: int = 0,
                           truncation_strategy="longest_first", stride: int = 0):
        """-> (ids, pair_ids, overflowing ids), as transformers' ``truncate_sequences`` (clvp/padding.py)."""
        _, strategy, _ = padding_and_truncation(False, truncation_strategy, None, None, 0)
        return truncate_sequences(list(ids), None if pair_ids is None else list(pair_ids), num_tokens_to_remove,
                                  strategy, stride, self.truncation_side)

    def create_token_type_ids_from_sequences(self, token_ids_0, token_ids_1=None) -> list[int]:
        """0 for the first sequence, 1 for the second, each with the special tokens added around it (so
        as long as ``build_inputs_with_special_tokens``' output)."""
        first = len(self.build_inputs_with_special_tokens(list(token_ids_0)))
        if token_ids_1 is None:
            return [0] * first
        return [0] * first + [1] * (len(self.build_inputs_with_special_tokens(list(token_ids_0), list(token_ids_1)))
                                    - first)

    @property
    def max_len_single_sentence(self) -> int:
        return self.model_max_length - self.num_special_tokens_to_add(pair=False)

    @property
    def max_len_sentences_pair(self) -> int:
        return self.model_max_length - self.num_special_tokens_to_add(pair=True)

    def pad(self, encoded_inputs, padding=True, max_length: int | None = None, pad_to_multiple_of: int | None = None,
            padding_side: str | None = None, return_attention_mask: bool | None = None,
            return_tensors: str | None = None, verbose: bool = True) -> BatchEncoding:
        """Pad already-encoded inputs, as transformers' ``pad``: a dict (or ``BatchEncoding``) with
        "input_ids" (one list of ids, or a batch of them: lists, arrays or tensors) and any other
        fields, or a list of such dicts (what a data collator gets). A given ``attention_mask`` is kept
        and padded with zeros; token_type_ids and special_tokens_mask are padded too, other fields kept.
        Tensor inputs give tensors back unless ``return_tensors`` says otherwise."""
        if isinstance(encoded_inputs, (list, tuple)) and encoded_inputs and isinstance(encoded_inputs[0], Mapping):
            if not all(isinstance(e, Mapping) for e in encoded_inputs):
                raise TypeError("encoded_inputs must be a dict or a list of dicts, not a mix")
            encoded_inputs = {key: [e[key] for e in encoded_inputs] for key in encoded_inputs[0]}
        if isinstance(encoded_inputs, Mapping):  # transformers' BatchEncoding is a mapping, not a dict
            encoded_inputs = dict(encoded_inputs)
        if not isinstance(encoded_inputs, dict):
            raise TypeError("encoded_inputs must be a dict with 'input_ids' (or a list of such dicts), got "
                            f"{type(encoded_inputs).__name__}")
        if "input_ids" not in encoded_inputs:
            raise ValueError(f"encoded_inputs must include 'input_ids', but it has {list(encoded_inputs)}")
        _check_common(return_tensors, padding_side, 0, False)
        ids = encoded_inputs["input_ids"]
        if ids is None or len(ids) == 0:
            out = dict(encoded_inputs)
            if return_attention_mask:
                out["attention_mask"] = []
            return BatchEncoding(out)
        first = ids[0]
        if isinstance(first, (list, tuple)):
            first = next((row[0] for row in ids if len(row)), first)
        if not isinstance(first, (int, list, tuple)):
            if return_tensors is None:
                return_tensors = "np" if isinstance(first, (np.ndarray, np.integer)) else "pt"
            encoded_inputs = {key: to_python(value) for key, value in encoded_inputs.items()}
            ids = encoded_inputs["input_ids"]
        strategy, _, max_length = padding_and_truncation(padding, False, max_length, pad_to_multiple_of,
                                                         self.model_max_length,
                                                         has_pad_token=self.pad_token is not None)
        side = padding_side or self.padding_side
        want_mask = self._want_mask(return_attention_mask)
        if not isinstance(ids[0], (list, tuple)):
            padded = pad_encoding(encoded_inputs, strategy, max_length, pad_to_multiple_of, side, self.pad_token_id,
                                  want_mask)
            return BatchEncoding(to_tensors(padded, return_tensors, prepend_batch_axis=True))
        padded = pad_batch(encoded_inputs, strategy, max_length, pad_to_multiple_of, side, self.pad_token_id,
                           want_mask)
        return BatchEncoding(to_tensors(padded, return_tensors))

    # ---------------------------------------------------------------------------------- the flow
    _ENCODE_DEFAULTS = dict(add_special_tokens=True, padding=False, truncation=None, max_length=None, stride=0,
                            is_split_into_words=False, pad_to_multiple_of=None, padding_side=None,
                            return_tensors=None, return_token_type_ids=None, return_attention_mask=None,
                            return_overflowing_tokens=False, return_special_tokens_mask=False,
                            return_offsets_mapping=False, return_length=False, add_prefix_space=None,
                            pad_to_max_length=False, truncation_strategy=None, verbose=True)

    def _defaults(self, kwargs: dict) -> dict:
        unknown = sorted(set(kwargs) - set(self._ENCODE_DEFAULTS))
        if unknown:
            raise TypeError(f"unexpected keyword argument(s) {unknown}; allowed are {sorted(self._ENCODE_DEFAULTS)}")
        return {**self._ENCODE_DEFAULTS, **kwargs}

    def _want_mask(self, return_attention_mask) -> bool:
        if return_attention_mask is None:
            return "attention_mask" in self.model_input_names
        return bool(return_attention_mask)

    def _id_list(self, ids, name: str) -> list[int]:
        ids = to_python(ids)
        if not isinstance(ids, (list, tuple)) or not all(isinstance(i, (int, np.integer)) and not isinstance(i, bool)
                                                         for i in ids):
            raise TypeError(f"{name} must be a list of token ids (int), got {type(ids).__name__}")
        return [int(i) for i in ids]

    def _inputs_to_ids(self, items: list, is_split_into_words: bool, add_prefix_space) -> list:
        """Each item -> its ids: a str is tokenized (all str items in one batch); a list of str is a list
        of words (``is_split_into_words``) or of tokens; a list of ints is ids already; None stays None."""
        if all(type(t) is str or t is None for t in items):  # the common case: texts (and no pairs)
            texts = [t for t in items if t is not None]
            ids = iter(self._ids_of(texts, False, add_prefix_space))
            return [None if t is None else next(ids) for t in items]
        out: list = [None] * len(items)
        texts = [(i, t) for i, t in enumerate(items) if isinstance(t, str)]
        if texts:
            for (i, _), ids in zip(texts, self._ids_of([t for _, t in texts], False, add_prefix_space)):
                out[i] = ids
        words = [(i, t) for i, t in enumerate(items) if isinstance(t, (list, tuple)) and t
                 and all(isinstance(w, str) for w in t) and is_split_into_words]
        if words:
            for (i, _), ids in zip(words, self._ids_of([t for _, t in words], True, add_prefix_space)):
                out[i] = ids
        for i, t in enumerate(items):
            if t is None or isinstance(t, str) or (is_split_into_words and out[i] is not None):
                continue
            if isinstance(t, (list, tuple)) and t and all(isinstance(w, str) for w in t):
                out[i] = self.convert_tokens_to_ids(list(t))
            elif isinstance(t, (list, tuple)) and all(isinstance(w, (int, np.integer)) and not isinstance(w, bool)
                                                      for w in t):
                out[i] = [int(w) for w in t]  # ids already (or nothing)
            else:
                raise TypeError("a text must be a str, a list of str (tokens, or words with is_split_into_words=True) "
                                f"or a list of token ids (int), got {type(t).__name__}")
        return out

    def _strategies(self, padding, truncation, max_length, pad_to_multiple_of, pad_to_max_length,
                    truncation_strategy, return_tensors, padding_side, stride, return_offsets_mapping):
        _check_common(return_tensors, padding_side, stride, return_offsets_mapping)
        return padding_and_truncation(padding, truncation, max_length, pad_to_multiple_of, self.model_max_length,
                                      pad_to_max_length=pad_to_max_length, truncation_strategy=truncation_strategy,
                                      has_pad_token=self.pad_token is not None)

    def _encode_one(self, text, text_pair, *, is_split_into_words, add_prefix_space, **kwargs) -> BatchEncoding:
        self._strategies(kwargs["padding"], kwargs["truncation"], kwargs["max_length"], kwargs["pad_to_multiple_of"],
                         kwargs["pad_to_max_length"], kwargs["truncation_strategy"], kwargs["return_tensors"],
                         kwargs["padding_side"], kwargs["stride"], kwargs["return_offsets_mapping"])
        ids, pair_ids = self._inputs_to_ids([text, text_pair], is_split_into_words, add_prefix_space)
        if ids is None:
            raise TypeError("text must be a str, a list of str or a list of token ids, got None")
        return self._finish_one(ids, pair_ids, prepend_batch_axis=True, **kwargs)

    def _finish_one(self, ids, pair_ids, *, prepend_batch_axis, padding, truncation, max_length, pad_to_multiple_of,
                    pad_to_max_length, truncation_strategy, return_tensors, padding_side, stride,
                    return_offsets_mapping, return_attention_mask, return_length, verbose, **kwargs) -> BatchEncoding:
        strategy, trunc, max_length = self._strategies(padding, truncation, max_length, pad_to_multiple_of,
                                                       pad_to_max_length, truncation_strategy, return_tensors,
                                                       padding_side, stride, return_offsets_mapping)
        encoded = self._prepare(ids, pair_ids, trunc=trunc, max_length=max_length, stride=stride, **kwargs)
        self._warn_if_too_long(encoded["input_ids"], max_length, verbose)
        want_mask = self._want_mask(return_attention_mask)
        if strategy != "do_not_pad" or want_mask:
            encoded = pad_encoding(encoded, strategy, max_length, pad_to_multiple_of, padding_side or self.padding_side,
                                   self.pad_token_id, want_mask)
        if return_length:
            encoded["length"] = len(encoded["input_ids"])  # after padding, as transformers does for one text
        return BatchEncoding(to_tensors(encoded, return_tensors, prepend_batch_axis=prepend_batch_axis))

    def _encode_batch(self, items: list, *, is_split_into_words, add_prefix_space, padding, truncation, max_length,
                      pad_to_multiple_of, pad_to_max_length, truncation_strategy, return_tensors, padding_side, stride,
                      return_offsets_mapping, return_attention_mask, return_length, verbose, **kwargs) -> BatchEncoding:
        strategy, trunc, max_length = self._strategies(padding, truncation, max_length, pad_to_multiple_of,
                                                       pad_to_max_length, truncation_strategy, return_tensors,
                                                       padding_side, stride, return_offsets_mapping)
        firsts, seconds = [], []
        for item in items:  # a text; (text, text_pair); with is_split_into_words a list of words
            if not isinstance(item, (list, tuple)) or (is_split_into_words and item and isinstance(item[0], str)) \
                    or all(isinstance(x, (int, np.integer)) for x in item):
                firsts.append(item)
                seconds.append(None)
            elif len(item) == 2:
                firsts.append(item[0])
                seconds.append(item[1])
            else:
                raise TypeError(f"a batch item that is a {type(item).__name__} must be a (text, text_pair) pair, "
                                f"got {len(item)} elements")
        all_ids = self._inputs_to_ids(firsts + seconds, is_split_into_words, add_prefix_space)
        n = len(items)
        rows = [self._prepare(all_ids[i], all_ids[n + i], trunc=trunc, max_length=max_length, stride=stride,
                              **kwargs) for i in range(n)]
        for row in rows:
            self._warn_if_too_long(row["input_ids"], max_length, verbose)
        keys = list(rows[0]) if rows else ["input_ids"]
        batch = {key: [row[key] for row in rows] for key in keys}
        if return_length:
            batch["length"] = [len(ids) for ids in batch["input_ids"]]  # before padding, as transformers does
        want_mask = self._want_mask(return_attention_mask)
        side = padding_side or self.padding_side
        if return_tensors is not None and rows:  # straight into arrays when it can
            arrays = pad_batch_to_arrays(batch, strategy, max_length, pad_to_multiple_of, side, self.pad_token_id,
                                         want_mask, return_tensors)
            if arrays is not None:
                return BatchEncoding(arrays)
        batch = pad_batch(batch, strategy, max_length, pad_to_multiple_of, side, self.pad_token_id, want_mask)
        if not rows:  # an empty batch: (0, 0) tensors (transformers raises here)
            batch = {key: [] for key in ["input_ids"] + (["attention_mask"] if want_mask else [])}
            if return_tensors is not None:
                return BatchEncoding({k: to_tensors({k: np.zeros((0, 0), np.int64)}, return_tensors)[k] for k in batch})
        return BatchEncoding(to_tensors(batch, return_tensors))

    def _warn_if_too_long(self, ids, max_length, verbose) -> None:
        """Warn once per tokenizer, as transformers does (same text, same once-only record in
        ``deprecation_warnings``, which a caller may clear), when ids longer than ``model_max_length``
        are returned untruncated: the model would index past its positions."""
        warned = self.__dict__.setdefault("deprecation_warnings", {})
        if max_length is None and verbose and len(ids) > self.model_max_length and not warned.get(
                "sequence-length-is-longer-than-the-specified-maximum"):
            logger.warning("Token indices sequence length is longer than the specified maximum sequence length for "
                           "this model (%d > %d). Running this sequence through the model will result in indexing "
                           "errors: pass truncation=True", len(ids), self.model_max_length)
            warned["sequence-length-is-longer-than-the-specified-maximum"] = True

    def _prepare(self, ids, pair_ids, *, add_special_tokens, trunc, max_length, stride, return_token_type_ids,
                 return_overflowing_tokens, return_special_tokens_mask) -> dict:
        """Ids (and pair ids) -> {"input_ids", and as asked "overflowing_tokens", "num_truncated_tokens",
        "token_type_ids", "special_tokens_mask"}: truncated, special tokens added, not padded."""
        pair = pair_ids is not None
        if return_token_type_ids and not add_special_tokens:
            raise ValueError("return_token_type_ids=True needs add_special_tokens=True (transformers calls the other "
                             "combination undefined); pass return_token_type_ids=None")
        if return_overflowing_tokens and trunc == "longest_first" and pair:
            raise ValueError("Not possible to return overflowing tokens for pair of sequences with the `longest_first`. "
                             "Please select another truncation strategy than `longest_first`, for instance "
                             "`only_second` or `only_first`. (transformers' wording: return_overflowing_tokens=True "
                             "cannot be used with truncation='longest_first' on text pairs)")
        if return_overflowing_tokens and max_length is None:
            raise ValueError("return_overflowing_tokens=True needs max_length (or a model_max_length)")
        if return_token_type_ids is None:
            return_token_type_ids = "token_type_ids" in self.model_input_names
        total = len(ids) + (len(pair_ids) if pair else 0) + (
            self.num_special_tokens_to_add(pair=pair) if add_special_tokens else 0)
        overflow = []
        if trunc != "do_not_truncate" and max_length and total > max_length:
            ids, pair_ids, overflow = truncate_sequences(ids, pair_ids, total - max_length, trunc, stride,
                                                         self.truncation_side)
        out: dict = {}
        if return_overflowing_tokens:
            out["overflowing_tokens"] = overflow
            out["num_truncated_tokens"] = total - max_length
        if add_special_tokens:
            out["input_ids"] = self.build_inputs_with_special_tokens(ids, pair_ids)
        else:
            out["input_ids"] = ids + pair_ids if pair else list(ids)
        if return_token_type_ids:
            out["token_type_ids"] = (self.create_token_type_ids_from_sequences(ids, pair_ids) if add_special_tokens
                                     else [0] * len(out["input_ids"]))
        if return_special_tokens_mask:
            out["special_tokens_mask"] = (self.get_special_tokens_mask(ids, pair_ids) if add_special_tokens
                                          else [0] * len(out["input_ids"]))
        return out

