"""Raw speech in: every input layout the feature extractor takes -> a list of mono clips, each a 1-D
float32 tensor, with the bad ones rejected by a ValueError that says what is wrong (another sampling
rate, NaN or infinite samples, samples beyond ``MAX_SAMPLE_MAGNITUDE``, an empty clip, several
channels, complex or non-numeric values), before any copy or padding.

* A 2-D array / tensor is a batch (clips, samples), as in Hugging Face, only when it has fewer rows
  than columns: (samples, channels), soundfile's layout (e.g. (22050, 2)), would otherwise be read as
  22,050 clips of 2 samples, each padded to 6 s (one second of stereo took 23.5 GB). It is refused
  with a hint to mix down (``x.mean(axis=1)``) or pass a list of 1-D clips; the same for a list of
  equal-length lists of numbers (``x.tolist()`` of such an array). A (channels, samples) array cannot
  be told from a batch of equal-length clips: it is read as one clip per channel.
* Integer PCM arrays and tensors are scaled to [-1, 1) as soundfile reads them: int16 / 32768,
  int32 / 2**31, uint8 (x - 128) / 128. Other integer dtypes (int8, int64, uint16, ...) have no PCM
  scale and raise a TypeError. (Hugging Face casts integers to float32 unscaled, so int16 audio gave
  features shifted by log(32768**2).) A Python list of numbers is used as given.
* Finite samples larger in magnitude than ``MAX_SAMPLE_MAGNITUDE`` (1e4) are refused: audio lies in
  [-1, 1] (loud clipping reaches a few units), and huge values (e.g. 3e38) overflow to NaN features.
"""
from __future__ import annotations

import numbers
import warnings

import numpy as np
import torch

__all__ = ["check_sampling_rate", "as_clips", "as_clip", "MAX_SAMPLE_MAGNITUDE", "PCM_SCALES"]

# Largest |sample| accepted: 80 dB above full scale, far beyond clipped audio (a few units) and far
# below what overflows the power spectrum in float32.
MAX_SAMPLE_MAGNITUDE = 1e4
# integer PCM dtype -> (offset, scale): float = (x - offset) / scale, as soundfile reads PCM
PCM_SCALES = {"int16": (0, 32768.0), "int32": (0, 2.0**31), "uint8": (128, 128.0)}


def check_sampling_rate(sampling_rate: int | None, expected: int, owner: str) -> None:
    """Raise if the audio's rate is not the extractor's; warn if it was not given (``owner``: the
    extractor's class name, for the message)."""
    if sampling_rate is not None:
        if isinstance(sampling_rate, bool) or not isinstance(sampling_rate, numbers.Real):
            raise TypeError(f"sampling_rate must be an integer number of Hz (here {expected}), "
                            f"got {type(sampling_rate).__name__} {sampling_rate!r}")
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
            _check_batch_shape(tuple(raw_speech.shape), "array")
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
            if all(isinstance(x, (list, tuple)) for x in items) and len({len(x) for x in items}) == 1 \
                    and items[0] and isinstance(items[0][0], numbers.Real):
                _check_batch_shape((len(items), len(items[0])), "list of lists")  # e.g. stereo.tolist()
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
    # NaN, inf or an absurd sample anywhere make the extremes fail "within bound" (NaN propagates through
    # aminmax): one reduction per clip without a copy, one sync; the exact diagnosis only for a bad clip
    extremes = torch.stack([torch.stack(torch.aminmax(c)) for c in clips]).cpu()  # (clips, 2): min, max
    within = (extremes[:, 0] >= -MAX_SAMPLE_MAGNITUDE) & (extremes[:, 1] <= MAX_SAMPLE_MAGNITUDE)
    for i in (~within).nonzero().flatten().tolist():
        bad = ~torch.isfinite(clips[i])
        if bad.any():
            first = int(bad.nonzero()[0, 0])
            raise ValueError(
                f"clip {i} has {int(bad.sum())} NaN or infinite samples (the first at index {first}); "
                "clean or drop it before feature extraction"
            )
        big = clips[i].abs() > MAX_SAMPLE_MAGNITUDE
        first = int(big.nonzero()[0, 0])
        raise ValueError(
            f"clip {i} has {int(big.sum())} samples of magnitude above {MAX_SAMPLE_MAGNITUDE:g} (the first, "
            f"{float(clips[i][first]):g}, at index {first}): audio samples lie in [-1, 1] (clipped audio a few "
            "units); scale the audio (integer PCM: divide by 32768 for int16) or drop the clip"
        )
    return clips


def _check_batch_shape(shape: tuple[int, int], what: str) -> None:
    """A 2-D batch (clips, samples) must have fewer clips than samples per clip; (samples, channels),
    soundfile's layout, would be read as one tiny clip per frame, each padded to max_length."""
    rows, cols = shape
    if rows > cols:
        raise ValueError(
            f"raw_speech is a 2-D {what} of shape {shape}, which looks like (samples, channels) audio: a 2-D "
            f"input is read as a batch (clips, samples), here {rows} clips of {cols} samples each, every one "
            "padded to max_length. Mix the channels down to one clip (x.mean(axis=1)), pick one (x[:, 0]), "
            "or pass a list of 1-D clips; a 2-D batch needs fewer clips than samples per clip"
        )


def as_clip(item, index: int) -> torch.Tensor:
    """One clip (a tensor, an array or a list of numbers) -> a 1-D float32 tensor; ``index`` names it in errors."""
    if isinstance(item, (np.ndarray, torch.Tensor)):
        item = _pcm_to_float(item, index)
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


def _pcm_to_float(item, index: int):
    """An integer PCM array / tensor -> float32 scaled to [-1, 1) as soundfile reads it; other
    integer dtypes raise a TypeError; floats, bools and complex pass through unchanged."""
    if isinstance(item, torch.Tensor):
        if item.dtype.is_floating_point or item.dtype.is_complex or item.dtype == torch.bool:
            return item
        name = str(item.dtype).replace("torch.", "")
    else:
        if item.dtype.kind not in "iu":
            return item
        name = item.dtype.name
    if name not in PCM_SCALES:
        raise TypeError(
            f"clip {index} has integer dtype {name}, which is no PCM sample format: pass float audio in [-1, 1] "
            f"or integer PCM as {', '.join(PCM_SCALES)} (scaled as soundfile reads it: int16 / 32768, "
            "int32 / 2**31, uint8 (x - 128) / 128)"
        )
    offset, scale = PCM_SCALES[name]
    if isinstance(item, torch.Tensor):
        x = item.detach().to(torch.float64 if name == "int32" else torch.float32)
        return ((x - offset) / scale).to(torch.float32)
    x = item.astype(np.float64 if name == "int32" else np.float32)
    return ((x - offset) / scale).astype(np.float32)
