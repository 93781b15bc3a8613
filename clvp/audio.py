"""Reading reference audio: any common format, rate and channel count, to mono float32 at 22.05 kHz.

Decoding is libsndfile's (soundfile) and resampling soxr's (high quality), not hand-written.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

CLVP_SAMPLING_RATE = 22050


def load_audio(path: str | Path, sampling_rate: int = CLVP_SAMPLING_RATE) -> np.ndarray:
    """Return a mono float32 waveform at ``sampling_rate``, clipped to [-1, 1] as Tortoise does."""
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"audio file {path} does not exist")
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)  # (frames, channels)
    except Exception as err:
        raise ValueError(f"cannot read {path} as audio ({err}); supported: WAV, FLAC, OGG/Vorbis, MP3 and other libsndfile formats") from None
    if data.shape[0] == 0:
        raise ValueError(f"audio file {path} holds no samples")
    mono = data.mean(axis=1)  # mixdown
    if rate != sampling_rate:
        import soxr

        mono = soxr.resample(mono, rate, sampling_rate, quality="HQ").astype(np.float32)
    if not np.isfinite(mono).all():
        raise ValueError(f"audio file {path} contains NaN or infinite samples")
    return np.clip(mono, -1.0, 1.0)
