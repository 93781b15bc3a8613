"""Padding and truncation of token id lists with transformers 4.46.3's rules: pure functions over
plain Python lists and dicts, no tokenizer state.

* ``padding_and_truncation``: the ``padding`` / ``truncation`` / ``max_length`` arguments (and the
  deprecated ``pad_to_max_length`` / ``truncation_strategy``) -> what to do, checked;
* ``truncate_sequences``: cut one sequence or a pair by a number of ids, with the overflowing ids
  (and ``stride`` ids of context) for "only_first" / "only_second" / a single "longest_first";
* ``pad_encoding``: pad one encoding (input_ids and its per-token rows: attention_mask, token_type_ids,
  special_tokens_mask), keeping a given attention mask;
* ``pad_batch``: the same over a batch, to its longest row or to ``max_length``;
* ``to_tensors``: lists -> (batch, length) int64 NumPy arrays or torch tensors.
"""
from __future__ import annotations

import itertools

import numpy as np
import torch

__all__ = ["VERY_LARGE_INTEGER", "LARGE_INTEGER", "PADDING_STRATEGIES", "TRUNCATION_STRATEGIES", "check_int",
           "padding_and_truncation", "truncate_sequences", "pad_encoding", "pad_batch", "pad_batch_to_arrays",
           "to_tensors", "to_tensor",
           "as_id_list", "as_rows", "to_python"]

VERY_LARGE_INTEGER = int(1e30)  # transformers' "no maximum length" (the default model_max_length)
LARGE_INTEGER = int(1e20)  # a model_max_length above this counts as "none known", as in transformers

PADDING_STRATEGIES = {True: "longest", False: "do_not_pad", "longest": "longest", "max_length": "max_length",
                      "do_not_pad": "do_not_pad"}
TRUNCATION_STRATEGIES = {True: "longest_first", False: "do_not_truncate", "longest_first": "longest_first",
                         "only_first": "only_first", "only_second": "only_second",
                         "do_not_truncate": "do_not_truncate"}
# What each per-token row is padded with (input_ids: the pad token's id, passed in).
_FILL = {"attention_mask": 0, "token_type_ids": 0, "special_tokens_mask": 1}


def check_int(name: str, value, *, minimum: int) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be None or an integer >= {minimum}, got {value!r}")


def _strategy_name(value, table: dict, what: str, allowed: str):
    if isinstance(value, (str, bool)) and value in table:
        return table[value]
    if hasattr(value, "value") and value.value in table:  # transformers' PaddingStrategy / TruncationStrategy enums
        return table[value.value]
    raise ValueError(f"{what} must be {allowed}, got {value!r}")


def padding_and_truncation(padding, truncation, max_length, pad_to_multiple_of, model_max_length: int, *,
                           pad_to_max_length: bool = False, truncation_strategy=None, has_pad_token: bool = True):
    """Validate the arguments; -> (padding: "longest" | "max_length" | "do_not_pad", truncation:
    "longest_first" | "only_first" | "only_second" | "do_not_truncate", max_length: int | None), with
    transformers' defaults filled in:

    * a ``max_length`` with ``padding=False`` and ``truncation=None`` means "longest_first";
    * ``pad_to_max_length=True`` (deprecated) means "max_length" padding, or "longest" without max_length;
    * ``truncation_strategy=`` (deprecated) is used when ``truncation`` is None;
    * without ``max_length``, ``model_max_length`` is used, or, when it is unset, truncation is off.
      Unlike transformers (which warns and does not pad), padding="max_length" with no length to pad
      to is a ValueError.
    """
    padding_strategy = _strategy_name(padding, PADDING_STRATEGIES, "padding",
                                      "True, False, 'longest', 'max_length' or 'do_not_pad'")
    if truncation is None and truncation_strategy is not None:
        truncation = truncation_strategy
    trunc = "do_not_truncate" if truncation is None else _strategy_name(
        truncation, TRUNCATION_STRATEGIES, "truncation",
        "None, True, False, 'longest_first', 'only_first', 'only_second' or 'do_not_truncate'")
    check_int("max_length", max_length, minimum=0)
    check_int("pad_to_multiple_of", pad_to_multiple_of, minimum=1)
    if max_length is not None and padding is False and truncation is None:
        trunc = "longest_first"  # transformers: a max_length alone means truncation
    if padding is False and pad_to_max_length:
        padding_strategy = "longest" if max_length is None else "max_length"
    if max_length is None:
        known = model_max_length <= LARGE_INTEGER
        if padding_strategy == "max_length":
            if not known:
                raise ValueError("padding='max_length' needs max_length (this tokenizer has no model_max_length)")
            max_length = model_max_length
        if trunc != "do_not_truncate":
            if known:
                max_length = model_max_length
            else:
                trunc = "do_not_truncate"  # transformers: no maximum length known, so nothing to truncate to
    if padding_strategy != "do_not_pad" and not has_pad_token:
        raise ValueError(f"padding={padding!r} needs a pad token, and this tokenizer has pad_token=None; "
                         "set tokenizer.pad_token or pass padding=False")
    if (trunc != "do_not_truncate" and padding_strategy != "do_not_pad" and pad_to_multiple_of is not None
            and max_length is not None and max_length % pad_to_multiple_of):
        raise ValueError(f"truncation and padding are both on but max_length={max_length} is not a multiple "
                         f"of pad_to_multiple_of={pad_to_multiple_of}")
    return padding_strategy, trunc, max_length


def _cut(ids: list, n: int, stride: int, side: str) -> tuple[list, list]:
    """``ids`` less ``n`` ids from ``side``; and those ids with ``stride`` more of context."""
    window = min(len(ids), stride + n)
    if side == "left":
        return ids[n:], ids[:window]
    return ids[: len(ids) - n], ids[len(ids) - window :]


def truncate_sequences(ids: list, pair_ids: list | None, num_tokens_to_remove: int, strategy: str, stride: int,
                       side: str) -> tuple[list, list | None, list]:
    """Remove ``num_tokens_to_remove`` ids, as transformers 4.46.3's ``truncate_sequences``:

    * "only_first" (or "longest_first" without a pair): from ``ids``; "only_second": from ``pair_ids``.
      The removed ids plus ``stride`` ids before them (after them for ``side="left"``) are the
      overflowing tokens. A sequence too short to lose that many ids is left whole (transformers
      logs an error and does the same).
    * "longest_first" with a pair: from the longer one until both are equally long, then from both
      alternately (the first one losing the odd one out); no overflowing tokens.
    -> (ids, pair_ids, overflowing ids)."""
    if num_tokens_to_remove <= 0 or strategy == "do_not_truncate":
        return ids, pair_ids, []
    if strategy == "only_first" or (strategy == "longest_first" and pair_ids is None):
        if len(ids) > num_tokens_to_remove:
            ids, overflow = _cut(ids, num_tokens_to_remove, stride, side)
            return ids, pair_ids, overflow
        return ids, pair_ids, []
    if strategy == "only_second":
        if pair_ids is not None and len(pair_ids) > num_tokens_to_remove:
            pair_ids, overflow = _cut(pair_ids, num_tokens_to_remove, stride, side)
            return ids, pair_ids, overflow
        return ids, pair_ids, []
    # longest_first with a pair
    first = min(abs(len(pair_ids) - len(ids)), num_tokens_to_remove)
    rest = num_tokens_to_remove - first
    from_ids = (first if len(ids) > len(pair_ids) else 0) + rest // 2
    from_pair = num_tokens_to_remove - from_ids
    if side == "left":
        return ids[from_ids:], pair_ids[from_pair:], []
    return ids[: max(len(ids) - from_ids, 0)], pair_ids[: max(len(pair_ids) - from_pair, 0)], []


def _round_up(n: int, multiple: int | None) -> int:
    return n if not multiple or n % multiple == 0 else (n // multiple + 1) * multiple


def pad_encoding(encoding: dict, strategy: str, max_length: int | None, pad_to_multiple_of: int | None, side: str,
                 pad_id: int | None, want_mask: bool) -> dict:
    """One encoding ({"input_ids": [...], other per-token rows, other keys}) padded, as transformers'
    ``_pad``: to ``max_length`` ("max_length") or its own length ("longest"), rounded up to
    ``pad_to_multiple_of``; ids longer than that stay as they are. With ``want_mask`` an attention mask
    is added (all ones) unless one is given, and the mask is padded with zeros; a given mask is kept
    (and, as in transformers, left unpadded when ``want_mask`` is False). token_type_ids are padded with
    0, special_tokens_mask with 1, input_ids with ``pad_id``; other keys are left alone. -> a new dict."""
    out = dict(encoding)
    ids = out["input_ids"]
    target = len(ids) if strategy == "longest" else max_length
    if target is not None:
        target = _round_up(target, pad_to_multiple_of)
    if want_mask and "attention_mask" not in out:
        out["attention_mask"] = [1] * len(ids)
    missing = 0 if strategy == "do_not_pad" or target is None else target - len(ids)
    if missing <= 0:
        return out
    if pad_id is None:
        raise ValueError("padding needs a pad token, and this tokenizer has pad_token=None")
    fill = dict(_FILL, input_ids=pad_id)
    for key in ("input_ids", "token_type_ids", "special_tokens_mask", "attention_mask"):
        if key not in out or (key == "attention_mask" and not want_mask):
            continue
        row = list(out[key])
        out[key] = [fill[key]] * missing + row if side == "left" else row + [fill[key]] * missing
    return out


def pad_batch(batch: dict, strategy: str, max_length: int | None, pad_to_multiple_of: int | None, side: str,
              pad_id: int | None, want_mask: bool) -> dict:
    """A batch ({"input_ids": [[...], ...], other keys: one value per row}) padded as ``pad_encoding``
    pads each row; "longest" pads every row to the longest one. -> a new dict of lists."""
    rows = batch["input_ids"]
    sizes = {key: len(value) for key, value in batch.items()}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"every field of a batch to pad needs one entry per row; got {sizes}")
    out = dict(batch)
    lengths = [len(r) for r in rows]
    if want_mask and "attention_mask" not in out:
        out["attention_mask"] = [[1] * n for n in lengths]
    target = {"longest": max(lengths, default=0), "max_length": max_length, "do_not_pad": None}[strategy]
    if target is None:
        return out
    target = _round_up(target, pad_to_multiple_of)
    if all(n >= target for n in lengths):
        return out
    if pad_id is None:
        raise ValueError("padding needs a pad token, and this tokenizer has pad_token=None")
    fill = dict(_FILL, input_ids=pad_id)
    left = side == "left"
    for key in ("input_ids", "token_type_ids", "special_tokens_mask", "attention_mask"):
        if key not in out or (key == "attention_mask" and not want_mask):
            continue
        value = fill[key]
        padded = []
        for row, n in zip(out[key], lengths):  # each field is padded by its row's missing ids, as transformers
            missing = target - n
            row = list(row)
            padded.append(row if missing <= 0 else [value] * missing + row if left else row + [value] * missing)
        out[key] = padded
    return out


def pad_batch_to_arrays(batch: dict, strategy: str, max_length: int | None, pad_to_multiple_of: int | None,
                        side: str, pad_id: int | None, want_mask: bool, return_tensors: str) -> dict | None:
    """``to_tensors(pad_batch(...))`` for a batch of per-token rows (and "length"), filling (batch, length)
    int64 arrays directly: no padded lists are made. -> None when the batch holds other fields or the rows
    cannot make one array (the caller then takes the general path, which says why)."""
    if not set(batch) <= {"input_ids", "token_type_ids", "special_tokens_mask", "attention_mask", "length"}:
        return None
    rows = batch["input_ids"]
    lengths = [len(r) for r in rows]
    target = {"longest": max(lengths, default=0), "max_length": max_length, "do_not_pad": None}[strategy]
    if target is not None:
        target = _round_up(target, pad_to_multiple_of)
    width = target if target is not None else (lengths[0] if lengths else 0)
    if any(n != width for n in lengths) and (target is None or max(lengths) > target):
        return None
    if pad_id is None and any(n < width for n in lengths):
        return None
    fields = {key: batch[key] for key in ("input_ids", "token_type_ids", "special_tokens_mask") if key in batch}
    if want_mask:
        fields["attention_mask"] = batch.get("attention_mask")
    elif "attention_mask" in batch:
        return None  # a given mask left unpadded: the general path
    fill = dict(_FILL, input_ids=pad_id)
    left = side == "left"
    out = {}
    for key, value in fields.items():
        arr = np.full((len(rows), width), fill[key], dtype=np.int64)  # (batch, width), filled with the pad value
        for i, n in enumerate(lengths):
            cols = slice(width - n, width) if left else slice(0, n)
            arr[i, cols] = 1 if value is None else value[i]
        out[key] = to_tensor(arr, return_tensors)
    if "length" in batch:
        out["length"] = to_tensor(np.asarray(batch["length"], dtype=np.int64), return_tensors)  # (batch,)
    return out


def _int_matrix(value) -> np.ndarray | None:
    """A list of equal-length lists of ints as a (rows, length) int64 array, quickly; else None."""
    if not value or not all(type(r) is list for r in value):
        return None
    width = len(value[0])
    if any(len(r) != width for r in value) or not all(type(i) is int for i in value[0]):
        return None
    try:
        return np.fromiter(itertools.chain.from_iterable(value), dtype=np.int64,
                           count=len(value) * width).reshape(len(value), width)
    except (TypeError, ValueError):
        return None


def to_tensors(fields: dict, return_tensors: str | None, prepend_batch_axis: bool = False) -> dict:
    """Each value as ``return_tensors`` asks: None leaves lists; "np" gives int64 arrays, "pt" tensors
    (``prepend_batch_axis``: one row becomes a batch of one). Rows of different lengths cannot make
    a tensor: a ValueError that says to pad."""
    if return_tensors is None:
        return dict(fields)
    out = {}
    for key, value in fields.items():
        if isinstance(value, torch.Tensor):
            value = value.numpy() if return_tensors == "np" else value
        if isinstance(value, (torch.Tensor, np.ndarray)) and not prepend_batch_axis:
            out[key] = to_tensor(np.asarray(value), return_tensors) if isinstance(value, np.ndarray) else value
            continue
        value = [value] if prepend_batch_axis else value
        fast = _int_matrix(value)
        if fast is not None:
            out[key] = to_tensor(fast, return_tensors)
            continue
        try:
            arr = np.asarray(value)
        except ValueError:
            arr = None
        if arr is None or arr.dtype == object:
            lengths = sorted({len(v) for v in value if hasattr(v, "__len__")})
            what = "overflowing_tokens of different lengths" if key == "overflowing_tokens" else \
                f"sequences of different lengths ({key}: from {lengths[0]} to {lengths[-1]} tokens)"
            raise ValueError(f"cannot make a {return_tensors!r} tensor of {what}; pass padding=True, or "
                             "truncation=True with max_length, or return_tensors=None")
        if arr.size == 0 or np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool:
            arr = arr.astype(np.int64)
        out[key] = to_tensor(arr, return_tensors)
    return out


def to_tensor(arr: np.ndarray, return_tensors: str):
    """A NumPy array as ``return_tensors`` asks: itself ("np") or a tensor sharing its memory ("pt")."""
    return arr if return_tensors == "np" else torch.from_numpy(np.ascontiguousarray(arr))


# ------------------------------------------------------------------------------- ids coming in
def to_python(value):
    """A tensor / array (or a list of them) -> nested Python lists, as transformers' ``to_py_obj``."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [to_python(v) for v in value]
    return value


def as_id_list(ids) -> list[int]:
    """An int, a list of ints, or a 1-D array / tensor -> a list of Python ints."""
    if hasattr(ids, "tolist"):  # numpy array or torch tensor
        ids = ids.tolist()
    if isinstance(ids, int):
        return [ids]
    if not isinstance(ids, (list, tuple)) or not all(isinstance(i, (int, np.integer)) for i in ids):
        raise TypeError("token ids must be an int, a list of ints, or a 1-D array or tensor")
    return [int(i) for i in ids]


def as_rows(sequences) -> list:
    """A batch of id sequences (a list of lists, or a 2-D array / tensor) -> a list of its rows."""
    if hasattr(sequences, "tolist"):
        sequences = sequences.tolist()
    if not isinstance(sequences, (list, tuple)):
        raise TypeError("expected a batch: a list of id lists, or a 2-D array or tensor")
    return list(sequences)
