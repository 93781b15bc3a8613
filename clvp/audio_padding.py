"""Padding and truncation of speech clips to one length, with the attention mask over samples, under
Hugging Face's rules (transformers 4.46.3's ``SequenceFeatureExtractor.pad``): pure functions.

* ``padding_strategy``: the ``padding`` argument -> "longest" | "max_length" | "do_not_pad";
* ``padded_length``: ``max_length`` rounded up to ``pad_to_multiple_of`` (the truncation length too);
* ``padded_sizes``: each clip's length after padding (not all equal: the clips cannot be stacked);
* ``pad_clips``: stack the clips into one (clips, samples) tensor and their int32 masks.
"""
from __future__ import annotations

import numbers

import torch

__all__ = ["PADDING_STRATEGIES", "padding_strategy", "padded_length", "padded_sizes", "pad_clips"]

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
