"""``ClvpFeatureExtractor``: raw speech to CLVP's normalised log-mel features, in torch.

Same API, defaults, padding rules and numbers as Hugging Face's NumPy ``ClvpFeatureExtractor``
(transformers 4.46.3; docs/model.md §4): each clip is padded or truncated to ``max_length`` samples
(``default_audio_length`` seconds unless given), then a centred, reflect-padded STFT with a periodic
Hann window, power 2, an HTK-scale mel bank with Slaney area normalisation from 0 to 8 kHz,
``log(clamp(mel, 1e-5))`` and, when set, division by ``mel_norms``.

Differences from Hugging Face (all additions, none changes a number):

* ``mel_norms="tortoise"`` loads Tortoise's 80 norms shipped with the package (what the real CLVP
  checkpoint's preprocessor config carries); the default stays None, as in Hugging Face.
* ``device=``: the features are computed there; on CUDA that is one fused Triton launch
  (``kernels.log_mel``), on the CPU a float64 FFT (Hugging Face's precision) in torch.
* Bad input raises a ValueError that says what is wrong: a sampling rate other than the
  extractor's, NaN or infinite samples, an empty clip, several channels where one clip is expected.
* ``padding=False`` with clips of different lengths returns a list of per-clip features (for
  ``return_tensors=None``) instead of failing inside NumPy.
* ``padding_value=`` in ``__call__`` (documented by Hugging Face but ignored there) is honoured.

The numbers match Hugging Face's extractor to about 1e-6 in the log domain on real speech (float64
FFT on the CPU); the Triton kernel's float32 DFT stays within 1e-4 (tests/test_feature_extractor.py).
"""
from __future__ import annotations

import copy
import inspect
import json
import math
import numbers
import os
import warnings
from importlib import resources
from typing import Any, Sequence

import numpy as np
import torch

from . import kernels

CONFIG_NAME = "preprocessor_config.json"
_PADDING_STRATEGIES = ("longest", "max_length", "do_not_pad")
_RETURN_TENSORS = ("pt", "np", None)
# keys Hugging Face writes that are derived from the others (or name the class): read, then ignored
_DERIVED_KEYS = ("feature_extractor_type", "processor_class", "n_samples", "nb_max_frames", "mel_filters")


def tortoise_mel_norms() -> list[float]:
    """Tortoise's 80 mel norms (``tortoise/data/mel_norms.pth``; all negative, features come out near 1)."""
    text = resources.files("clvp.data").joinpath("mel_norms.json").read_text()
    return [float(v) for v in json.loads(text)]


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


class BatchFeature(dict):
    """The extractor's output: a dict with attribute access (``out.input_features``), like Hugging Face's."""

    def __getattr__(self, name: str):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"{type(self).__name__} has no field {name!r}; fields are {list(self)}") from None

    def __getstate__(self):
        return dict(self)

    def __setstate__(self, state):
        self.update(state)

    def to(self, *args, **kwargs) -> "BatchFeature":
        """Move every tensor to a device (``.to("cuda")``) or cast the floating ones (``.to(torch.float16)``)."""
        dtype = kwargs.pop("dtype", None)
        device = kwargs.pop("device", None)
        if kwargs:
            raise TypeError(f"unexpected arguments {sorted(kwargs)}; allowed are device and dtype")
        for arg in args:
            if isinstance(arg, torch.dtype):
                dtype = arg
            else:
                device = arg
        for key, value in self.items():
            if isinstance(value, torch.Tensor):
                if device is not None:
                    value = value.to(device)
                if dtype is not None and value.is_floating_point():
                    value = value.to(dtype)
                self[key] = value
        return self


class ClvpFeatureExtractor:
    r"""Log-mel features for CLVP from raw speech (Hugging Face's ``ClvpFeatureExtractor`` in torch).

    Args:
        feature_size: number of mel filters (80).
        sampling_rate: the audio's sampling rate in Hz (22050); other rates are rejected.
        default_audio_length: seconds every clip is padded or truncated to when ``max_length`` is not
            given in ``__call__`` (6, so 132,300 samples and 517 frames).
        hop_length: STFT hop in samples (256).
        chunk_length: kept for config compatibility (``n_samples = chunk_length * sampling_rate``);
            not used by ``__call__``, as in Hugging Face.
        n_fft: FFT and window size (1024).
        padding_value: the sample value used for padding (0.0, silence).
        mel_norms: per-filter divisors applied to the log-mel: None (Hugging Face's default), a sequence
            of ``feature_size`` floats, or ``"tortoise"`` for Tortoise's 80 norms shipped with the package
            (the real CLVP checkpoint's values; :func:`tortoise_mel_norms`).
        return_attention_mask: the default when ``__call__`` gets ``return_attention_mask=None``
            (``__call__`` itself defaults to True).
        padding_side: "right" (default) or "left".

    Example::

        fe = ClvpFeatureExtractor(mel_norms="tortoise")
        out = fe([clip_a, clip_b], sampling_rate=22050, return_tensors="pt", device="cuda")
        out.input_features  # (2, 80, 517) float32 on the GPU
    """

    model_input_names = ["input_features", "attention_mask"]

    def __init__(
        self,
        feature_size: int = 80,
        sampling_rate: int = 22050,
        default_audio_length: int | float = 6,
        hop_length: int = 256,
        chunk_length: int = 30,
        n_fft: int = 1024,
        padding_value: float = 0.0,
        mel_norms: Sequence[float] | str | None = None,
        return_attention_mask: bool = False,
        padding_side: str = "right",
    ):
        for name, value, low in (("feature_size", feature_size, 1), ("sampling_rate", sampling_rate, 1),
                                 ("hop_length", hop_length, 1), ("n_fft", n_fft, 2), ("chunk_length", chunk_length, 0)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if isinstance(default_audio_length, bool) or not isinstance(default_audio_length, numbers.Real) \
                or not default_audio_length > 0:
            raise ValueError(f"default_audio_length must be a positive number of seconds, got {default_audio_length!r}")
        if padding_side not in ("right", "left"):
            raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
        self.feature_size = int(feature_size)
        self.sampling_rate = int(sampling_rate)
        self.padding_value = padding_value
        self.padding_side = padding_side
        self.return_attention_mask = return_attention_mask
        self.n_fft = int(n_fft)
        self.hop_length = int(hop_length)
        self.chunk_length = int(chunk_length)
        self.n_samples = self.chunk_length * self.sampling_rate
        self.nb_max_frames = self.n_samples // self.hop_length
        self.default_audio_length = default_audio_length
        self.mel_norms = self._check_mel_norms(mel_norms)
        # (n_fft // 2 + 1, feature_size) float64, as Hugging Face stores it (not serialised)
        self.mel_filters = mel_filter_bank(
            num_frequency_bins=1 + self.n_fft // 2,
            num_mel_filters=self.feature_size,
            min_frequency=0.0,
            max_frequency=8000.0,
            sampling_rate=self.sampling_rate,
        )
        self._device_cache: dict = {}

    def _check_mel_norms(self, mel_norms):
        if mel_norms is None:
            return None
        if isinstance(mel_norms, str):
            if mel_norms != "tortoise":
                raise ValueError(
                    f"mel_norms={mel_norms!r} is not known; pass None, 'tortoise' or {self.feature_size} floats"
                )
            mel_norms = tortoise_mel_norms()
        if isinstance(mel_norms, torch.Tensor):
            mel_norms = mel_norms.detach().cpu().numpy()
        norms = [float(v) for v in np.asarray(mel_norms, dtype=np.float64).reshape(-1)]
        if len(norms) != self.feature_size:
            raise ValueError(f"mel_norms has {len(norms)} values but feature_size is {self.feature_size}")
        if not all(math.isfinite(v) and v != 0.0 for v in norms):
            raise ValueError("mel_norms must be finite and non-zero (they divide the log-mel)")
        return norms

    # ------------------------------------------------------------------------------------------
    # serialisation (Hugging Face's preprocessor_config.json)
    # ------------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The config as Hugging Face writes it (no ``mel_filters``: they are recomputed on load)."""
        return {
            "feature_size": self.feature_size,
            "sampling_rate": self.sampling_rate,
            "padding_value": self.padding_value,
            "padding_side": self.padding_side,
            "return_attention_mask": self.return_attention_mask,
            "n_fft": self.n_fft,
            "hop_length": self.hop_length,
            "chunk_length": self.chunk_length,
            "n_samples": self.n_samples,
            "nb_max_frames": self.nb_max_frames,
            "default_audio_length": self.default_audio_length,
            "mel_norms": copy.copy(self.mel_norms),
            "feature_extractor_type": type(self).__name__,
        }

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def to_json_file(self, json_file_path: str | os.PathLike) -> None:
        with open(json_file_path, "w", encoding="utf-8") as f:
            f.write(self.to_json_string())

    def save_pretrained(self, save_directory: str | os.PathLike) -> list[str]:
        """Write ``preprocessor_config.json`` into ``save_directory`` (created if needed); returns its path."""
        if os.path.isfile(save_directory):
            raise ValueError(f"save_directory {save_directory!r} is a file; pass a directory")
        os.makedirs(save_directory, exist_ok=True)
        path = os.path.join(save_directory, CONFIG_NAME)
        self.to_json_file(path)
        return [path]

    @classmethod
    def from_dict(cls, config: dict[str, Any], **kwargs) -> "ClvpFeatureExtractor":
        """Build from a config dict (``kwargs`` override its values)."""
        config = {**config, **kwargs}
        kind = config.get("feature_extractor_type", cls.__name__)
        if kind != cls.__name__:
            raise ValueError(f"the config is for a {kind}, not a {cls.__name__}")
        for key in _DERIVED_KEYS:
            config.pop(key, None)
        known = set(inspect.signature(cls.__init__).parameters) - {"self"}
        unknown = sorted(set(config) - known)
        if unknown:
            warnings.warn(f"ignoring unknown {cls.__name__} config keys {unknown}", stacklevel=2)
            for key in unknown:
                config.pop(key)
        return cls(**config)

    @classmethod
    def from_json_file(cls, json_file: str | os.PathLike, **kwargs) -> "ClvpFeatureExtractor":
        with open(json_file, encoding="utf-8") as f:
            return cls.from_dict(json.load(f), **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs) -> "ClvpFeatureExtractor":
        """Load a local folder holding ``preprocessor_config.json`` (or that file itself); kwargs override it.

        Nothing is downloaded: for a Hub checkpoint, fetch the folder first (e.g. with
        ``huggingface_hub.snapshot_download("susnato/clvp_dev")``) and pass its path.
        """
        path = os.fspath(pretrained_model_name_or_path)
        if os.path.isdir(path):
            path = os.path.join(path, CONFIG_NAME)
        if not os.path.isfile(path):
            raise OSError(
                f"no {CONFIG_NAME} at {pretrained_model_name_or_path!r}: pass a local folder that holds one (or the "
                "file itself); this package does not download from the Hugging Face Hub"
            )
        return cls.from_json_file(path, **kwargs)

    def __repr__(self) -> str:
        return f"{type(self).__name__} {self.to_json_string()}"

    # ------------------------------------------------------------------------------------------
    # features
    # ------------------------------------------------------------------------------------------

    def _tensors(self, device: torch.device):
        """Window (float64), filters and norms (float32) on ``device``, cached: no copies per call.

        The window stays float64: rounding it to float32 leaks about 1e-5 (log domain) into the
        quiet bins of loud speech frames. The Triton kernel reads it as float64 and converts in
        registers; the filters need no such care (a sum of non-negative terms).
        """
        key = (str(device), None if self.mel_norms is None else tuple(self.mel_norms), self.mel_filters.shape)
        cached = self._device_cache.get(key)
        if cached is None:
            window = torch.tensor(hann_window(self.n_fft), dtype=torch.float64, device=device)  # (n_fft,)
            filters = torch.tensor(self.mel_filters, dtype=torch.float32, device=device)  # (n_freq, n_mels)
            norms = None if self.mel_norms is None else torch.tensor(self.mel_norms, dtype=torch.float32, device=device)
            cached = self._device_cache[key] = (window, filters, norms)
        return cached

    def log_mel(self, waveforms: torch.Tensor) -> torch.Tensor:
        """(B, N) float32 clips, already padded to one length -> (B, feature_size, 1 + N // hop_length).

        Runs where ``waveforms`` lives: the Triton kernel on CUDA (``kernels.log_mel`` decides, see
        ``CLVP_KERNELS``), the float64-FFT reference on the CPU.
        """
        window, filters, norms = self._tensors(waveforms.device)
        return kernels.log_mel(waveforms, window, filters, norms, n_fft=self.n_fft, hop_length=self.hop_length)

    def __call__(
        self,
        raw_speech,
        sampling_rate: int | None = None,
        truncation: bool = True,
        pad_to_multiple_of: int | None = None,
        return_tensors: str | None = None,
        return_attention_mask: bool | None = True,
        padding: bool | str = "max_length",
        max_length: int | None = None,
        padding_value: float | None = None,
        device: str | torch.device | None = None,
    ) -> BatchFeature:
        """Pad or truncate the clips, then extract their log-mel features.

        Args:
            raw_speech: one mono clip (a 1-D NumPy array or tensor, or a list of floats) or a batch:
                a list of clips (lengths may differ) or a 2-D array / tensor (clips, samples).
            sampling_rate: the clips' rate in Hz; must equal ``self.sampling_rate`` (None only warns).
            truncation: cut clips longer than ``max_length`` (keeping their start).
            pad_to_multiple_of: round ``max_length`` (and the padded length) up to a multiple of this.
            return_tensors: "pt" (torch tensors on ``device``), "np", or None (a list of NumPy
                (feature_size, frames) arrays and a NumPy mask, as Hugging Face returns).
            return_attention_mask: return ``attention_mask`` (clips, padded samples), int32, 1 on real
                samples; None uses ``self.return_attention_mask``.
            padding: "max_length" (default: every clip to ``max_length``), "longest" or True (to the
                longest clip after truncation), "do_not_pad" or False.
            max_length: samples; default ``default_audio_length * sampling_rate``.
            padding_value: overrides ``self.padding_value`` for this call.
            device: where the features are computed and "pt" tensors returned; default the input
                tensors' device, else the CPU. On CUDA this is one Triton launch for the batch.
        Returns:
            BatchFeature with ``input_features`` (clips, feature_size, frames) float32 and, if asked,
            ``attention_mask``.
        """
        if sampling_rate is not None:
            if sampling_rate != self.sampling_rate:
                raise ValueError(
                    f"sampling_rate={sampling_rate} Hz does not match this feature extractor's sampling_rate="
                    f"{self.sampling_rate} Hz; resample the audio to {self.sampling_rate} Hz first "
                    f"(e.g. soxr.resample(audio, {sampling_rate}, {self.sampling_rate}))"
                )
        else:
            warnings.warn(
                f"pass sampling_rate= to {type(self).__name__}: without it audio at a rate other than "
                f"{self.sampling_rate} Hz gives wrong features silently",
                stacklevel=2,
            )
        if return_tensors not in _RETURN_TENSORS:
            raise ValueError(f"return_tensors={return_tensors!r} is not supported; allowed are 'pt', 'np' and None")
        strategy = self._padding_strategy(padding)
        if max_length is None:
            max_length = int(round(self.default_audio_length * self.sampling_rate))
        for name, value in (("max_length", max_length), ("pad_to_multiple_of", pad_to_multiple_of)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if return_attention_mask is None:
            return_attention_mask = self.return_attention_mask
        pad_value = self.padding_value if padding_value is None else padding_value

        clips = _as_clips(raw_speech)  # list of 1-D float32 tensors
        if device is None:
            device = clips[0].device
        device = torch.device(device)

        target = max_length
        if pad_to_multiple_of is not None and target % pad_to_multiple_of:
            target = (target // pad_to_multiple_of + 1) * pad_to_multiple_of
        if truncation:
            clips = [c[:target] for c in clips]
        lengths = [c.shape[0] for c in clips]
        if strategy == "longest":
            longest = max(lengths)
            if pad_to_multiple_of is not None and longest % pad_to_multiple_of:
                longest = (longest // pad_to_multiple_of + 1) * pad_to_multiple_of
            sizes = [longest] * len(clips)
        elif strategy == "max_length":  # clips longer than max_length stay long when not truncated
            sizes = [max(n, target) for n in lengths]
        else:
            sizes = lengths
        if len(set(sizes)) > 1:
            # Not one length (do_not_pad, or untruncated clips longer than max_length): Hugging Face
            # fails to stack these; here each clip is extracted alone and a list comes back.
            if return_tensors is not None:
                raise ValueError(
                    f"the clips are not padded to one length (lengths {sizes}), so they cannot be returned as "
                    f"one {return_tensors!r} tensor: use padding='longest' or 'max_length' with truncation=True, "
                    "or return_tensors=None for a list"
                )
            feats, masks = [], []
            for clip, size in zip(clips, sizes):
                wav, mask = self._pad([clip], size, pad_value, device)
                feats.append(self.log_mel(wav)[0].cpu().numpy())
                masks.append(mask[0].numpy())
            out = BatchFeature(input_features=feats)
            if return_attention_mask:
                out["attention_mask"] = masks
            return out
        padded_len = sizes[0]

        waveforms, mask = self._pad(clips, padded_len, pad_value, device)  # (B, padded_len), (B, padded_len)
        features = self.log_mel(waveforms)  # (B, feature_size, 1 + padded_len // hop_length)
        if return_tensors == "pt":
            out = BatchFeature(input_features=features)
            if return_attention_mask:
                out["attention_mask"] = mask.to(device)
            return out
        features = features.cpu().numpy()
        out = BatchFeature(input_features=features if return_tensors == "np" else list(features))
        if return_attention_mask:
            out["attention_mask"] = mask.numpy()
        return out

    @staticmethod
    def _padding_strategy(padding) -> str:
        if padding is True:
            return "longest"
        if padding is False:
            return "do_not_pad"
        if isinstance(padding, str) and padding in _PADDING_STRATEGIES:
            return padding
        raise ValueError(
            f"padding={padding!r} is not a padding strategy; allowed are {_PADDING_STRATEGIES}, True, False"
        )

    def _pad(self, clips, length: int, pad_value: float, device: torch.device):
        """Stack clips into (B, length) on ``device`` (padding on ``padding_side``) and their int32 masks (CPU)."""
        waveforms = torch.empty((len(clips), length), dtype=torch.float32, device=clips[0].device)
        lengths = torch.tensor([clip.shape[0] for clip in clips])
        for i, clip in enumerate(clips):
            n = clip.shape[0]
            start = 0 if self.padding_side == "right" else length - n
            waveforms[i, start : start + n] = clip
            waveforms[i, :start] = pad_value
            waveforms[i, start + n :] = pad_value
        mask = torch.zeros((len(clips), length), dtype=torch.int32)  # (B, length), 1 on real samples
        for i, n in enumerate(lengths.tolist()):  # row fills: ~5x cheaper than comparing a position grid
            start = 0 if self.padding_side == "right" else length - n
            mask[i, start : start + n] = 1
        return waveforms.to(device), mask


def _as_clips(raw_speech) -> list[torch.Tensor]:
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
        clip = _as_clip(item, i)
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


def _as_clip(item, index: int) -> torch.Tensor:
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
