"""Waveform to normalised log-mel spectrogram (CLVP's feature front end, reference.md §4).

File layout: eager reference (fallback and oracle), then the Triton kernel, then its launcher.
"""
from __future__ import annotations

import torch


def log_mel_ref(waveforms, window, mel_filters, mel_norms=None, *, n_fft, hop_length):
    """Eager reference: centred reflect-padded STFT, power 2, mel projection, log clamp, norm division.

    Arguments:
        waveforms: (B, N) float32 clips, already padded or truncated to a common length.
        window: (n_fft,) analysis window (periodic Hann for CLVP).
        mel_filters: (n_fft // 2 + 1, n_mels) filter bank.
        mel_norms: (n_mels,) divisors, or None.
    Returns:
        (B, n_mels, 1 + N // hop_length) float32.
    """
    spec = torch.stft(
        waveforms.float(), n_fft, hop_length, window=window.float(), center=True,
        pad_mode="reflect", return_complex=True,
    )  # (B, n_freq, frames)
    power = spec.real.square() + spec.imag.square()
    mel = torch.einsum("fm,bft->bmt", mel_filters.float(), power)  # (B, n_mels, frames)
    out = torch.log(mel.clamp(min=1e-5))
    if mel_norms is not None:
        out = out / mel_norms.float()[None, :, None]
    return out
