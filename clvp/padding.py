"""Padding and truncation of token id lists, with transformers 4.46.3's rules: pure functions over
lists of id lists (one list per text), no tokenizer state.

* ``padding_and_truncation``: the ``padding`` / ``truncation`` / ``max_length`` arguments -> what to do;
* ``truncate_ids``: cut every list to a number of ids, from the right or the left;
* ``pad_ids``: pad the lists (and their attention masks, and any other per-token rows) to the longest or to
  ``max_length``, rounded up to ``pad_to_multiple_of``, on the right or the left; as lists, or as
  (batch, length) int64 NumPy arrays / torch tensors.
"""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["VERY_LARGE_INTEGER", "check_int", "padding_and_truncation", "truncate_ids", "pad_ids", "as_id_list",
           "as_rows", "to_tensor"]

VERY_LARGE_INTEGER = int(1e30)  # transformers' "no maximum length"

PADDING_STRATEGIES = {True: "longest", False: "do_not_pad", "longest": "longest", "max_length": "max_length",
                      "do_not_pad": "do_not_pad"}
# CLVP encodes no text pairs, so every truncation strategy is "cut the one sequence" (or None: decide later).
TRUNCATION = {True: True, False: False, None: None, "longest_first": True, "only_first": True,
              "do_not_truncate": False}
# What each per-token row is padded with (input_ids: the pad token's id, passed to pad()).
_FILL = {"attention_mask": 0, "token_type_ids": 0, "special_tokens_mask": 1}


def check_int(name: str, value, *, minimum: int) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be None or an integer >= {minimum}, got {value!r}")


def padding_and_truncation(padding, truncation, max_length, pad_to_multiple_of, model_max_length: int):
    """Validate the arguments; -> (strategy: "longest" | "max_length" | "do_not_pad", truncate: bool,
    max_length: int | None), with transformers' defaults filled in."""
    if isinstance(padding, str) and padding not in PADDING_STRATEGIES or not isinstance(padding, (str, bool)):
        raise ValueError(f"padding must be True, False, 'longest', 'max_length' or 'do_not_pad', got {padding!r}")
    if not isinstance(truncation, (str, bool, type(None))) or truncation not in TRUNCATION:
        raise ValueError("truncation must be None, True, False, 'longest_first', 'only_first' or "
                         f"'do_not_truncate' (CLVP encodes no text pairs), got {truncation!r}")
    check_int("max_length", max_length, minimum=0)
    check_int("pad_to_multiple_of", pad_to_multiple_of, minimum=1)
    strategy = PADDING_STRATEGIES[padding]
    do_truncate = TRUNCATION[truncation]
    if do_truncate is None:
        # transformers: a max_length with neither padding nor truncation means truncation.
        do_truncate = max_length is not None and strategy == "do_not_pad"
    if max_length is None and (do_truncate or strategy == "max_length"):
        if model_max_length < VERY_LARGE_INTEGER:
            max_length = model_max_length
        elif strategy == "max_length":
            raise ValueError("padding='max_length' needs max_length (this tokenizer has no model_max_length)")
        else:
            do_truncate = False  # transformers: no maximum length known, so nothing to truncate to
    if (do_truncate and strategy != "do_not_pad" and pad_to_multiple_of is not None
            and max_length is not None and max_length % pad_to_multiple_of):
        raise ValueError(f"truncation and padding are both on but max_length={max_length} is not a multiple "
                         f"of pad_to_multiple_of={pad_to_multiple_of}")
    return strategy, do_truncate, max_length


def truncate_ids(all_ids: list[list[int]], keep: int, side: str) -> list[list[int]]:
    """Every list cut to at most ``keep`` ids: its first ones (``side="right"``) or its last ones ("left")."""
    if side == "right":
        return [ids[:keep] if len(ids) > keep else ids for ids in all_ids]
    return [ids[len(ids) - keep :] if len(ids) > keep else ids for ids in all_ids]


def pad_ids(all_ids: list[list[int]], strategy: str, max_length: int | None, pad_to_multiple_of: int | None,
        side: str, pad_id: int | None, want_mask: bool, return_tensors: str | None, extra: dict) -> dict:
    """Pad the id lists to the longest or to ``max_length`` (lists already longer stay as they are).

    Returns {"input_ids", "attention_mask" (with ``want_mask``), *extra}: lists of lists for
    ``return_tensors=None``, else (batch, length) int64 arrays ("np") or tensors ("pt"), which need
    every row to have one length. ``extra`` holds other per-token rows (token_type_ids,
    special_tokens_mask), padded the same way."""
    lengths = [len(ids) for ids in all_ids]
    target = {"longest": max(lengths, default=0), "max_length": max_length, "do_not_pad": None}[strategy]
    if target is not None and pad_to_multiple_of and target % pad_to_multiple_of:
        target = (target // pad_to_multiple_of + 1) * pad_to_multiple_of
    if target is not None and pad_id is None and any(n < target for n in lengths):
        raise ValueError("padding needs a pad token, and this tokenizer has pad_token=None")
    fill = dict(_FILL, input_ids=0 if pad_id is None else pad_id)
    rows = {"input_ids": all_ids}
    if want_mask:
        rows["attention_mask"] = [[1] * n for n in lengths]
    rows.update(extra)
    left = side == "left"

    if return_tensors is None:
        if target is None:
            return rows

        def pad_row(row, value):
            n = target - len(row)
            if n <= 0:
                return row
            return [value] * n + row if left else row + [value] * n

        return {k: [pad_row(r, fill[k]) for r in v] for k, v in rows.items()}

    width = target if target is not None else (lengths[0] if lengths else 0)
    if any(n != width for n in lengths) and (target is None or max(lengths) > target):
        raise ValueError(f"cannot make a tensor of sequences of different lengths (from {min(lengths)} to "
                         f"{max(lengths)} tokens); pass padding=True, or truncation=True with max_length")
    out = {}
    for k, v in rows.items():
        arr = np.full((len(v), width), fill[k], dtype=np.int64)  # (batch, width), filled with the pad value
        for i, row in enumerate(v):
            if row:
                if left:
                    arr[i, width - len(row) :] = row
                else:
                    arr[i, : len(row)] = row
        out[k] = to_tensor(arr, return_tensors)
    return out


def to_tensor(arr: np.ndarray, return_tensors: str):
    """An int64 NumPy array as ``return_tensors`` asks: itself ("np") or a tensor sharing its memory ("pt")."""
    return arr if return_tensors == "np" else torch.from_numpy(arr)


# ------------------------------------------------------------------------------- ids coming in
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
