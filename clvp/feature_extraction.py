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

The work is done by small pure steps, in call order: clvp/audio_input.py (raw speech -> checked
mono float32 clips), clvp/audio_padding.py (truncation and padding to one length, with the mask),
``kernels.log_mel`` (the features, with the filters, window and norms of clvp/mel_filters.py), and
the output container of clvp/batch.py.
"""
from __future__ import annotations

import copy
import inspect
import json
import numbers
import os
import warnings
from typing import Any, Sequence

import torch

from . import kernels
from .atomic import atomic_folder, atomic_write_text
from .audio_input import MAX_SAMPLE_MAGNITUDE, as_clips, check_sampling_rate
from .audio_padding import pad_clips, pad_features, padded_length, padded_sizes, padding_strategy
from .batch import BatchFeature
from .mel_filters import check_mel_norms, hann_window, hertz_to_mel, mel_filter_bank, mel_to_hertz, tortoise_mel_norms

# the mel helpers stay importable from here, as before they moved to clvp/mel_filters.py
__all__ = ["ClvpFeatureExtractor", "BatchFeature", "CONFIG_NAME", "tortoise_mel_norms", "mel_filter_bank",
           "hann_window", "hertz_to_mel", "mel_to_hertz"]

CONFIG_NAME = "preprocessor_config.json"
_RETURN_TENSORS = ("pt", "np", None)
# keys Hugging Face writes that are derived from the others (or name the class): read, then ignored
_DERIVED_KEYS = ("feature_extractor_type", "n_samples", "nb_max_frames", "mel_filters")


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
        **kwargs,
    ):
        # transformers keeps any other keyword as an attribute (saved back by to_dict), and
        # processor_class apart; so do we. Derived keys are recomputed below.
        processor_class = kwargs.pop("processor_class", None)
        for key in _DERIVED_KEYS:
            kwargs.pop(key, None)
        for key in kwargs:
            if key.startswith("_") or callable(getattr(type(self), key, None)):
                raise TypeError(f"{key}= is not a feature extractor setting (it is a method or private name)")
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
        self.mel_norms = check_mel_norms(mel_norms, self.feature_size)
        # (n_fft // 2 + 1, feature_size) float64, as Hugging Face stores it (not serialised)
        self.mel_filters = mel_filter_bank(
            num_frequency_bins=1 + self.n_fft // 2,
            num_mel_filters=self.feature_size,
            min_frequency=0.0,
            max_frequency=8000.0,
            sampling_rate=self.sampling_rate,
        )
        self._device_cache: dict = {}
        self._processor_class = processor_class
        self._extra_keys = sorted(kwargs)
        for key, value in kwargs.items():
            setattr(self, key, value)

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
            **{key: copy.deepcopy(getattr(self, key)) for key in self._extra_keys},
            "_processor_class": self._processor_class,
            "feature_extractor_type": type(self).__name__,
        }

    def to_json_string(self) -> str:
        """The JSON of ``to_dict``, with ``processor_class`` only when set (as transformers writes it)."""
        config = self.to_dict()
        processor_class = config.pop("_processor_class")
        if processor_class is not None:
            config["processor_class"] = processor_class
        return json.dumps(config, indent=2, sort_keys=True) + "\n"

    def to_json_file(self, json_file_path: str | os.PathLike) -> None:
        atomic_write_text(json_file_path, self.to_json_string())  # the old file or the new one, never half

    def save_pretrained(self, save_directory: str | os.PathLike) -> list[str]:
        """Write ``preprocessor_config.json`` into ``save_directory`` (created if needed); returns its path."""
        if os.path.isfile(save_directory):
            raise ValueError(f"save_directory {save_directory!r} is a file; pass a directory")
        with atomic_folder(save_directory) as folder:  # clvp/atomic.py: all or nothing
            self.to_json_file(folder / CONFIG_NAME)
        return [os.path.join(save_directory, CONFIG_NAME)]

    @classmethod
    def from_dict(cls, config: dict[str, Any], **kwargs) -> "ClvpFeatureExtractor":
        """Build from a config dict (``kwargs`` override its values)."""
        config = {**config, **kwargs}
        kind = config.get("feature_extractor_type", cls.__name__)
        if kind != cls.__name__:
            raise ValueError(f"the config is for a {kind}, not a {cls.__name__}")
        if "_processor_class" in config:  # to_dict's name for it
            config["processor_class"] = config.pop("_processor_class")
        for key in ("feature_extractor_type",) + _DERIVED_KEYS:
            config.pop(key, None)
        known = set(inspect.signature(cls.__init__).parameters) - {"self", "kwargs"} | {"processor_class"}
        unknown = sorted(set(config) - known)
        if unknown:  # kept as attributes, as transformers does; a warning, as they may be typos
            warnings.warn(f"unknown {cls.__name__} config keys {unknown}: kept as attributes, not used",
                          stacklevel=2)
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
                a list of clips (lengths may differ) or a 2-D array / tensor (clips, samples) with fewer
                clips than samples; a 2-D input with more rows than columns looks like soundfile's
                (samples, channels) and is refused (mix down with ``x.mean(axis=1)``). Float samples
                are expected in [-1, 1]; NaN, inf or a magnitude above 1e4 are refused. Integer PCM
                arrays are scaled as soundfile reads them (int16 / 32768, int32 / 2**31, uint8
                (x - 128) / 128; Hugging Face casts them unscaled); other integer dtypes raise a TypeError.
                All of this is checked before any padding or feature work (clvp/audio_input.py).
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
        check_sampling_rate(sampling_rate, self.sampling_rate, type(self).__name__)
        if return_tensors not in _RETURN_TENSORS:
            raise ValueError(f"return_tensors={return_tensors!r} is not supported; allowed are 'pt', 'np' and None")
        strategy = padding_strategy(padding)
        if max_length is None:
            max_length = int(round(self.default_audio_length * self.sampling_rate))
        target = padded_length(max_length, pad_to_multiple_of)  # samples, rounded up to pad_to_multiple_of
        want_mask = self.return_attention_mask if return_attention_mask is None else return_attention_mask
        pad_value = self.padding_value if padding_value is None else padding_value
        if isinstance(pad_value, bool) or not isinstance(pad_value, numbers.Real) \
                or not abs(pad_value) <= MAX_SAMPLE_MAGNITUDE:  # NaN fails too
            raise ValueError(f"padding_value must be a finite sample value (|value| <= {MAX_SAMPLE_MAGNITUDE:g}; "
                             f"silence is 0.0), got {pad_value!r}")
        if device is not None:
            try:
                device = torch.device(device)
            except (RuntimeError, TypeError) as err:
                raise ValueError(f"device={device!r} is not a torch device ({err}); pass e.g. 'cpu' or 'cuda'") from None
            if device.type == "cuda" and (not torch.cuda.is_available()
                                          or (device.index or 0) >= torch.cuda.device_count()):
                raise ValueError(f"device={str(device)!r} is not available here ({torch.cuda.device_count()} CUDA "
                                 "devices visible); pass device='cpu' or an existing GPU")

        clips = as_clips(raw_speech)  # [(samples_i,)] float32 tensors, checked
        device = torch.device(clips[0].device if device is None else device)
        if truncation:
            clips = [c[:target] for c in clips]  # each clip keeps its start
        sizes = padded_sizes([c.shape[0] for c in clips], strategy, target, pad_to_multiple_of)
        if len(set(sizes)) > 1:
            return self._features_one_by_one(clips, sizes, pad_value, device, return_tensors, want_mask)
        waveforms, mask = pad_clips(clips, sizes[0], pad_value, self.padding_side, device)  # (B, L), (B, L) on CPU
        features = self.log_mel(waveforms)  # (B, feature_size, 1 + L // hop_length) float32 on device
        return _batch_output(features, mask if want_mask else None, return_tensors, device)

    def pad(self, processed_features, padding=True, max_length: int | None = None, truncation: bool = False,
            pad_to_multiple_of: int | None = None, return_attention_mask: bool | None = None,
            return_tensors: str | None = None) -> BatchFeature:
        """Pad (and with ``truncation`` cut) already-extracted sequences to one length, as transformers'
        ``SequenceFeatureExtractor.pad`` (what data collators call): ``processed_features`` is a dict
        with "input_features" (a batch of lists, arrays or tensors, padded on their first axis with
        ``self.padding_value`` on ``self.padding_side``) and other per-row fields, or a list of such
        dicts. ``return_attention_mask=None`` uses ``self.return_attention_mask``; a given mask is kept
        and padded. ``return_tensors``: "pt", "np", or None (tensors for tensor input, else NumPy).
        clvp/audio_padding.py does the work."""
        want_mask = self.return_attention_mask if return_attention_mask is None else return_attention_mask
        out = pad_features(processed_features, main_key=self.model_input_names[0], padding=padding,
                           max_length=max_length, truncation=truncation, pad_to_multiple_of=pad_to_multiple_of,
                           return_attention_mask=want_mask, return_tensors=return_tensors,
                           padding_value=self.padding_value, side=self.padding_side)
        return BatchFeature(out)

    def _features_one_by_one(self, clips, sizes, pad_value, device, return_tensors, want_mask) -> BatchFeature:
        """Clips not padded to one length (do_not_pad, or untruncated clips longer than max_length):
        Hugging Face fails to stack these; here each clip is extracted alone and lists come back."""
        if return_tensors is not None:
            raise ValueError(
                f"the clips are not padded to one length (lengths {sizes}), so they cannot be returned as "
                f"one {return_tensors!r} tensor: use padding='longest' or 'max_length' with truncation=True, "
                "or return_tensors=None for a list"
            )
        feats, masks = [], []
        for clip, size in zip(clips, sizes):
            wav, mask = pad_clips([clip], size, pad_value, self.padding_side, device)  # (1, size), (1, size)
            feats.append(self.log_mel(wav)[0].cpu().numpy())  # (feature_size, 1 + size // hop_length)
            masks.append(mask[0].numpy())
        out = BatchFeature(input_features=feats)
        if want_mask:
            out["attention_mask"] = masks
        return out


def _batch_output(features: torch.Tensor, mask: torch.Tensor | None, return_tensors: str | None,
                  device: torch.device) -> BatchFeature:
    """(B, feature_size, frames) features and the (B, samples) int32 CPU mask (None: not asked for) as
    ``return_tensors`` asks: tensors on ``device`` ("pt"), NumPy arrays ("np"), or, as Hugging Face
    returns for None, a list of (feature_size, frames) arrays and a NumPy mask."""
    if return_tensors == "pt":
        out = BatchFeature(input_features=features)
        if mask is not None:
            out["attention_mask"] = mask.to(device)
        return out
    features = features.cpu().numpy()
    out = BatchFeature(input_features=features if return_tensors == "np" else list(features))
    if mask is not None:
        out["attention_mask"] = mask.numpy()
    return out
