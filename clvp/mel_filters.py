"""The fixed parts of CLVP's log-mel: the HTK-scale mel filter bank with Slaney area normalisation,
the periodic Hann window, and the per-filter mel norms (Tortoise's 80, or any given).

NumPy float64, with Hugging Face's layout and numbers (transformers 4.46.3's ``audio_utils``); the
feature extractor copies them to its device once (clvp/feature_extraction.py) and the log-mel itself
runs in kernels/log_mel.py.
"""
from __future__ import annotations

import json
import math
import warnings
from importlib import resources

import numpy as np
import torch

__all__ = ["hertz_to_mel", "mel_to_hertz", "mel_filter_bank", "hann_window", "tortoise_mel_norms", "check_mel_norms"]


def tortoise_mel_norms() -> list[float]:
    """Tortoise's 80 mel norms (``tortoise/data/mel_norms.pth``; all negative, features come out near 1)."""
    text = resources.files("clvp.data").joinpath("mel_norms.json").read_text()
    return [float(v) for v in json.loads(text)]


def check_mel_norms(mel_norms, feature_size: int) -> list[float] | None:
    """``mel_norms`` as the extractor stores it: None, or ``feature_size`` finite non-zero floats
    (from a sequence, an array, a tensor, or ``"tortoise"``)."""
    if mel_norms is None:
        return None
    if isinstance(mel_norms, str):
        if mel_norms != "tortoise":
            raise ValueError(f"mel_norms={mel_norms!r} is not known; pass None, 'tortoise' or {feature_size} floats")
        mel_norms = tortoise_mel_norms()
    if isinstance(mel_norms, torch.Tensor):
        mel_norms = mel_norms.detach().cpu().numpy()
    norms = [float(v) for v in np.asarray(mel_norms, dtype=np.float64).reshape(-1)]
    if len(norms) != feature_size:
        raise ValueError(f"mel_norms has {len(norms)} values but feature_size is {feature_size}")
    if not all(math.isfinite(v) and v != 0.0 for v in norms):
        raise ValueError("mel_norms must be finite and non-zero (they divide the log-mel)")
    return norms


def hertz_to_mel(freq):
    """HTK mel scale: 2595 log10(1 + f / 700)."""
    return 2595.0 * np.log10(1.0 + np.asarray(freq, dtype=np.float64) / 700.0)


def mel_to_hertz(mels):
    """Inverse of :func:`hertz_to_mel`."""
    return 700.0 * (np.power(10.0, np.asarray(mels, dtype=np.float64) / 2595.0) - 1.0)


def mel_filter_bank(
    num_frequency_bins: int,
    num_mel_filters: int,
    min_frequency: float,
    max_frequency: float,
    sampling_rate: int,
) -> np.ndarray:
    """Triangular filters equally spaced on the HTK mel scale, Slaney area-normalised.

    Returns (num_frequency_bins, num_mel_filters) float64, the layout and numbers of Hugging Face's
    ``audio_utils.mel_filter_bank(..., norm="slaney", mel_scale="htk")`` (which equals librosa's
    ``htk=True, norm="slaney"``): the FFT bins sit at ``linspace(0, sampling_rate // 2, bins)`` and
    filter m, spanning edge frequencies f[m] < f[m+1] < f[m+2], is scaled by 2 / (f[m+2] - f[m]).
    """
    mel_edges = np.linspace(hertz_to_mel(min_frequency), hertz_to_mel(max_frequency), num_mel_filters + 2)
    filter_freqs = mel_to_hertz(mel_edges)  # (M + 2,) edge and centre frequencies in Hz
    fft_freqs = np.linspace(0, sampling_rate // 2, num_frequency_bins)  # (F,)
    filter_diff = np.diff(filter_freqs)  # (M + 1,)
    slopes = filter_freqs[None, :] - fft_freqs[:, None]  # (F, M + 2)
    down_slopes = -slopes[:, :-2] / filter_diff[:-1]  # rising edge of each triangle
    up_slopes = slopes[:, 2:] / filter_diff[1:]  # falling edge
    filters = np.maximum(0.0, np.minimum(down_slopes, up_slopes))  # (F, M)
    filters *= (2.0 / (filter_freqs[2:] - filter_freqs[:-2]))[None, :]  # Slaney: constant energy per channel
    if (filters.max(axis=0) == 0.0).any():
        warnings.warn(
            f"At least one mel filter has all zero values: num_mel_filters ({num_mel_filters}) may be too high "
            f"or num_frequency_bins ({num_frequency_bins}) too low for max_frequency {max_frequency} Hz at "
            f"sampling_rate {sampling_rate} Hz.",
            stacklevel=2,
        )
    return filters


def hann_window(length: int) -> np.ndarray:
    """Periodic Hann window, float64: 0.5 - 0.5 cos(2π n / length) (``np.hanning(length + 1)[:-1]``)."""
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(length) / length)
