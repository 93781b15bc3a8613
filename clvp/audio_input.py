"""Raw speech in: every input layout the feature extractor takes -> a list of mono clips, each a 1-D
float32 tensor, with the bad ones rejected by a ValueError that says what is wrong (another sampling
rate, NaN or infinite samples, an empty clip, several channels, complex or non-numeric values).
"""
from __future__ import annotations

import numbers
import warnings

import numpy as np
import torch

__all__ = ["check_sampling_rate", "as_clips", "as_clip"]


def check_sampling_rate(sampling_rate: int | None, expected: int, owner: str) -> None:
    """Raise if the audio's rate is not the extractor's; warn if it was not given (``owner``: the
    extractor's class name, for the message)."""
    if sampling_rate is not None:
        if sampling_rate != expected:
            raise ValueError(
                f"sampling_rate={sampling_rate} Hz does not match this feature extractor's sampling_rate="
                f"{expected} Hz; resample the audio to {expected} Hz first "
                f"(e.g. soxr.resample(audio, {sampling_rate}, {expected}))"
            )
        return
    warnings.warn(
        f"pass sampling_rate= to {owner}: without it audio at a rate other than "
        f"{expected} Hz gives wrong features silently",
        stacklevel=3,  # the line that called the extractor, not its __call__
    )


def as_clips(raw_speech) -> list[torch.Tensor]:
    """Normalise every accepted input layout to a list of 1-D float32 tensors, rejecting bad audio."""
    if isinstance(raw_speech, (np.ndarray, torch.Tensor)):
        if raw_speech.ndim == 1:
            items = [raw_speech]
        elif raw_speech.ndim == 2:  # a batch (clips, samples), as in Hugging Face
            items = list(raw_speech)
        else:
            raise ValueError(
                f"got a {raw_speech.ndim}-D array of shape {tuple(raw_speech.shape)}: expected one mono clip "
                "(samples,) or a batch (clips, samples); for multi-channel audio pass one channel or their mean"
            )
    elif isinstance(raw_speech, (list, tuple)):
        if len(raw_speech) == 0:
            raise ValueError("raw_speech is empty: pass at least one clip")
        if isinstance(raw_speech[0], numbers.Real) or (
            isinstance(raw_speech[0], (np.ndarray, torch.Tensor)) and raw_speech[0].ndim == 0
        ):
            items = [raw_speech]  # one clip given as a list of floats
        else:
            items = list(raw_speech)
    else:
        raise TypeError(
            f"raw_speech of type {type(raw_speech).__name__} is not supported; pass a NumPy array, a torch tensor, "
            "a list of floats, or a list of those (one per clip)"
        )
    clips = []
    for i, item in enumerate(items):
        clip = as_clip(item, i)
        if clip.shape[0] == 0:
            raise ValueError(f"clip {i} is empty: every clip needs at least one sample")
        clips.append(clip)
    # NaN or inf anywhere make the sum non-finite: one cheap reduction per clip, one sync (a finite
    # clip whose float32 sum overflows only costs the exact check below)
    sums = torch.stack([c.sum() for c in clips]).cpu()
    for i in (~torch.isfinite(sums)).nonzero().flatten().tolist():
        bad = ~torch.isfinite(clips[i])
        if bad.any():
            first = int(bad.nonzero()[0, 0])
            raise ValueError(
                f"clip {i} has {int(bad.sum())} NaN or infinite samples (the first at index {first}); "
                "clean or drop it before feature extraction"
            )
    return clips


def as_clip(item, index: int) -> torch.Tensor:
    """One clip (a tensor, an array or a list of numbers) -> a 1-D float32 tensor; ``index`` names it in errors."""
    if isinstance(item, torch.Tensor):
        clip = item.detach()
    else:
        try:
            arr = np.asarray(item)
        except ValueError as err:
            raise ValueError(f"clip {index} is not a flat sequence of samples: {err}") from None
        if np.iscomplexobj(arr):
            raise ValueError(f"clip {index} is complex; audio samples must be real")
        if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
            raise ValueError(f"clip {index} is not a flat sequence of numbers (got dtype {arr.dtype})")
        arr = arr.astype(np.float32, copy=not arr.flags.writeable)  # float64 -> float32 as Hugging Face does
        clip = torch.from_numpy(arr)
    if clip.is_complex():
        raise ValueError(f"clip {index} is complex; audio samples must be real")
    if clip.ndim == 0:
        raise ValueError(f"clip {index} is a single number; a clip is a 1-D sequence of samples")
    if clip.ndim > 1:
        squeezed = clip.squeeze()
        if squeezed.ndim > 1 or clip.ndim > 2:
            raise ValueError(
                f"clip {index} has shape {tuple(clip.shape)}: more than one channel where one mono clip is expected; "
                "pass one channel or the mean over channels"
            )
        clip = squeezed.reshape(-1)
    return clip.to(torch.float32).contiguous()
