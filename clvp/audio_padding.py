"""Padding and truncation of speech clips to one length, with the attention mask over samples, under
Hugging Face's rules (transformers 4.46.3's ``SequenceFeatureExtractor.pad``): pure functions.

* ``padding_strategy``: the ``padding`` argument -> "longest" | "max_length" | "do_not_pad";
* ``padded_length``: ``max_length`` rounded up to ``pad_to_multiple_of`` (the truncation length too);
* ``padded_sizes``: each clip's length after padding (not all equal: the clips cannot be stacked);
* ``pad_clips``: stack the clips into one (clips, samples) tensor and their int32 masks;
* ``pad_features``: the feature extractor's ``pad`` (what data collators call), on NumPy arrays.
"""
from __future__ import annotations

import numbers
from collections.abc import Mapping

import numpy as np
import torch

__all__ = ["PADDING_STRATEGIES", "padding_strategy", "padded_length", "padded_sizes", "pad_clips", "pad_features"]

PADDING_STRATEGIES = ("longest", "max_length", "do_not_pad")


def padding_strategy(padding) -> str:
    if padding is True:
        return "longest"
    if padding is False:
        return "do_not_pad"
    if isinstance(padding, str) and padding in PADDING_STRATEGIES:
        return padding
    raise ValueError(f"padding={padding!r} is not a padding strategy; allowed are {PADDING_STRATEGIES}, True, False")


def _round_up(n: int, multiple: int | None) -> int:
    if multiple is None or n % multiple == 0:
        return n
    return (n // multiple + 1) * multiple


def padded_length(max_length: int, pad_to_multiple_of: int | None) -> int:
    """Check both (positive integers, ``pad_to_multiple_of`` may be None); -> ``max_length`` rounded up to
    a multiple of ``pad_to_multiple_of``: what clips are padded to with "max_length", and truncated to."""
    for name, value in (("max_length", max_length), ("pad_to_multiple_of", pad_to_multiple_of)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1):
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return _round_up(max_length, pad_to_multiple_of)


def padded_sizes(lengths: list[int], strategy: str, target: int, pad_to_multiple_of: int | None) -> list[int]:
    """Each clip's length after padding: all the longest one's (rounded up) for "longest", at least
    ``target`` for "max_length" (a clip longer than it, left untruncated, stays long), unchanged for
    "do_not_pad"."""
    if strategy == "longest":
        return [_round_up(max(lengths), pad_to_multiple_of)] * len(lengths)
    if strategy == "max_length":
        return [max(n, target) for n in lengths]
    return list(lengths)


def pad_clips(clips: list[torch.Tensor], length: int, pad_value: float, side: str, device: torch.device):
    """Stack 1-D clips (each at most ``length`` samples) into (clips, length) float32 on ``device``, padded
    with ``pad_value`` on ``side`` ("right" or "left"), and their (clips, length) int32 masks on the CPU
    (1 on real samples)."""
    waveforms = torch.empty((len(clips), length), dtype=torch.float32, device=clips[0].device)  # (B, length)
    lengths = torch.tensor([clip.shape[0] for clip in clips])
    for i, clip in enumerate(clips):
        n = clip.shape[0]
        start = 0 if side == "right" else length - n
        waveforms[i, start : start + n] = clip
        waveforms[i, :start] = pad_value
        waveforms[i, start + n :] = pad_value
    mask = torch.zeros((len(clips), length), dtype=torch.int32)  # (B, length), 1 on real samples
    for i, n in enumerate(lengths.tolist()):  # row fills: ~5x cheaper than comparing a position grid
        start = 0 if side == "right" else length - n
        mask[i, start : start + n] = 1
    return waveforms.to(device), mask


# ------------------------------------------------------------------ the feature extractor's pad()
def _as_numpy(value):
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _first_element(rows):
    first = rows[0]
    if isinstance(first, (list, tuple)):
        first = next((row[0] for row in rows if len(row)), first)
    return first


def _stack(rows: list, return_tensors: str):
    """Rows (NumPy arrays) -> one array / tensor; rows of different shapes give a NumPy object array
    (as transformers does) or, for "pt", a ValueError."""
    if len({r.shape for r in rows}) > 1:
        if return_tensors == "pt":
            raise ValueError(f"cannot make one tensor of rows of different lengths ({sorted({len(r) for r in rows})}); "
                             "pass padding=True or padding='max_length' with max_length, or return_tensors='np'")
        out = np.empty(len(rows), dtype=object)
        out[:] = rows
        return out
    arr = np.stack(rows) if rows else np.zeros((0,), np.float32)
    return torch.from_numpy(arr) if return_tensors == "pt" else arr


def pad_features(processed, *, main_key: str, padding, max_length, truncation: bool, pad_to_multiple_of,
                 return_attention_mask: bool, return_tensors, padding_value, side: str):
    """transformers 4.46.3's ``SequenceFeatureExtractor.pad``: ``processed`` is a dict with ``main_key``
    (a batch of sequences: lists, NumPy arrays or tensors, time on the first axis) and other per-row
    fields (e.g. ``attention_mask``), or a list of such dicts (a data collator's batch).

    Each row is truncated to ``max_length`` (rounded up to ``pad_to_multiple_of``) when ``truncation``,
    then padded on its first axis with ``padding_value`` to the longest row ("longest" / True) or to
    ``max_length`` ("max_length"); the attention mask (int32 ones unless given) is padded with zeros.
    ``return_tensors`` defaults to "pt" for tensor input, else "np"; float64 rows become float32.
    -> {field: array / tensor} (rows of different lengths: a NumPy object array)."""
    if isinstance(processed, (list, tuple)) and processed and all(isinstance(e, Mapping) for e in processed):
        processed = {key: [e[key] for e in processed] for key in processed[0]}
    if isinstance(processed, Mapping):  # transformers' BatchFeature is a mapping, not a dict
        processed = dict(processed)
    if not isinstance(processed, dict):
        raise TypeError(f"processed_features must be a dict with {main_key!r} (or a list of such dicts), got "
                        f"{type(processed).__name__}")
    if main_key not in processed:
        raise ValueError(f"processed_features must include {main_key!r}, but it has {list(processed)}")
    strategy = padding_strategy(padding)
    if strategy == "max_length" and max_length is None:
        raise ValueError("padding='max_length' needs max_length")
    if truncation and max_length is None:
        raise ValueError("truncation=True needs max_length")
    if max_length is not None:
        padded_length(max_length, pad_to_multiple_of)  # checks both
    if return_tensors not in (None, "np", "pt"):
        raise ValueError(f"return_tensors={return_tensors!r} is not supported; allowed are 'pt', 'np' and None")
    if strategy != "do_not_pad" and padding_value is None:
        raise ValueError("padding needs a padding_value; set feature_extractor.padding_value (silence is 0.0)")
    rows = processed[main_key]
    if len(rows) == 0:
        out = dict(processed)
        if return_attention_mask:
            out["attention_mask"] = []
        return out
    if return_tensors is None:
        return_tensors = "pt" if isinstance(_first_element(rows), torch.Tensor) else "np"
    fields = {}
    for key, value in processed.items():
        if isinstance(value, (list, tuple)) and value and isinstance(value[0], (int, float)):
            fields[key] = _as_numpy(value)  # one value per row
        else:
            fields[key] = [_as_numpy(v) for v in value]
    sizes = {key: len(v) for key, v in fields.items()}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"every field needs one entry per row; got {sizes}")
    limit = None if max_length is None else _round_up(max_length, pad_to_multiple_of)
    examples = []
    for i in range(len(rows)):
        ex = {k: v[i] for k, v in fields.items()}
        if truncation and len(ex[main_key]) > limit:
            ex[main_key] = ex[main_key][:limit]
            if "attention_mask" in ex:
                ex["attention_mask"] = ex["attention_mask"][:limit]
        examples.append(ex)
    if strategy == "longest":
        strategy, max_length = "max_length", max(len(ex[main_key]) for ex in examples)
    target = None if max_length is None else _round_up(max_length, pad_to_multiple_of)
    out: dict = {}
    for ex in examples:
        n = len(ex[main_key])
        if return_attention_mask and "attention_mask" not in ex:
            ex["attention_mask"] = np.ones(n, dtype=np.int32)
        missing = target - n if strategy != "do_not_pad" and target is not None else 0
        if missing > 0:
            before, after = (missing, 0) if side == "left" else (0, missing)
            if return_attention_mask:
                ex["attention_mask"] = np.pad(ex["attention_mask"], (before, after))
            seq = ex[main_key]
            ex[main_key] = np.pad(seq, [(before, after)] + [(0, 0)] * (seq.ndim - 1), constant_values=padding_value)
        for key, value in ex.items():
            value = np.asarray(value)
            out.setdefault(key, []).append(value.astype(np.float32) if value.dtype == np.float64 else value)
    return {key: _stack(value, return_tensors) for key, value in out.items()}
