"""Reading reference audio: any common format, rate and channel count, to mono float32 at 22.05 kHz.

Decoding is libsndfile's (soundfile) and resampling soxr's (high quality), not hand-written.
"""
from __future__ import annotations

import numbers
import os
from pathlib import Path

import numpy as np

CLVP_SAMPLING_RATE = 22050
# the feature extractor's bound (clvp/audio_input.py MAX_SAMPLE_MAGNITUDE; kept here too: both are leaves)
MAX_SAMPLE_MAGNITUDE = 1e4


def load_audio(path: str | Path, sampling_rate: int = CLVP_SAMPLING_RATE) -> np.ndarray:
    """Return a mono float32 waveform at ``sampling_rate``, clipped to [-1, 1] as Tortoise does.

    Integer PCM files are scaled by libsndfile (int16 / 32768, ...). Refused with a ValueError before
    any resampling: a file that is not audio or holds no samples, NaN or infinite samples, and float
    samples of magnitude above 1e4 (not audio: a corrupt or unscaled file; mere clipping, a few units,
    is clipped to [-1, 1]). ``path`` must be a str or os.PathLike naming a file, ``sampling_rate`` a
    positive integer (TypeError / ValueError otherwise).
    """
    import soundfile as sf

    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike naming an audio file, got {type(path).__name__}")
    if isinstance(sampling_rate, bool) or not isinstance(sampling_rate, numbers.Integral) or sampling_rate < 1:
        raise ValueError(f"sampling_rate must be a positive integer number of Hz (CLVP's is {CLVP_SAMPLING_RATE}), "
                         f"got {sampling_rate!r}")
    path = Path(path)
    if path.is_dir():
        raise FileNotFoundError(f"audio file {path} is a directory; pass the path of one audio file")
    if not path.is_file():
        raise FileNotFoundError(f"audio file {path} does not exist")
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)  # (frames, channels)
    except Exception as err:
        raise ValueError(f"cannot read {path} as audio ({err}); supported: WAV, FLAC, OGG/Vorbis, MP3 and other libsndfile formats") from None
    if data.shape[0] == 0:
        raise ValueError(f"audio file {path} holds no samples")
    mono = data.mean(axis=1)  # mixdown
    peak = float(np.abs(mono).max())
    if not np.isfinite(peak):
        raise ValueError(f"audio file {path} contains NaN or infinite samples")
    if peak > MAX_SAMPLE_MAGNITUDE:
        raise ValueError(f"audio file {path} has samples of magnitude {peak:g}, above {MAX_SAMPLE_MAGNITUDE:g}: "
                         "audio lies in [-1, 1]; the file is corrupt or holds unscaled float samples")
    if rate != sampling_rate:
        import soxr

        mono = soxr.resample(mono, rate, sampling_rate, quality="HQ").astype(np.float32)
    if not np.isfinite(mono).all():
        raise ValueError(f"audio file {path} contains NaN or infinite samples")
    return np.clip(mono, -1.0, 1.0)
