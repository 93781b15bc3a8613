"""Configs of the CLVP sub-models, with Hugging Face's names, defaults and config.json layout.

Defaults are those of transformers' ``ClvpEncoderConfig`` / ``ClvpDecoderConfig`` / ``ClvpConfig``
(= the Tortoise checkpoint), except where a comment says otherwise. A config.json written by
transformers loads here and one written here loads in transformers: keys this project does not use
(``id2label``, generation defaults, ...) are kept in ``extra`` and written back unchanged.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from .atomic import atomic_folder, atomic_write_text

CONFIG_NAME = "config.json"


class _Config:
    """JSON round-trip shared by the three configs (dataclasses underneath)."""

    model_type: ClassVar[str] = ""

    @classmethod
    def _field_names(cls) -> set[str]:
        return {f.name for f in dataclasses.fields(cls) if f.name != "extra"}

    @classmethod
    def from_dict(cls, config_dict: dict, **overrides):
        if not isinstance(config_dict, dict):
            raise TypeError(f"{cls.__name__}.from_dict expects a dict, got {type(config_dict).__name__}")
        data = {**config_dict, **overrides}
        model_type = data.pop("model_type", cls.model_type)
        if model_type not in (cls.model_type, None):
            raise ValueError(
                f"config has model_type {model_type!r} but {cls.__name__} expects {cls.model_type!r}"
            )
        known = cls._field_names()
        kwargs = {k: v for k, v in data.items() if k in known}
        extra = {k: v for k, v in data.items() if k not in known}
        return cls(**kwargs, extra=extra)

    def to_dict(self) -> dict:
        out = copy.deepcopy(self.extra)
        for name in self._field_names():
            value = getattr(self, name)
            out[name] = value.to_dict() if isinstance(value, _Config) else copy.deepcopy(value)
        out["model_type"] = self.model_type
        return dict(sorted(out.items()))

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def to_json_file(self, path: str | os.PathLike) -> None:
        atomic_write_text(path, self.to_json_string())  # the old file or the new one, never half of it

    @classmethod
    def from_json_file(cls, path: str | os.PathLike):
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no config file at {path}")
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{path} is not valid JSON: {err}") from None
        return cls._from_file_dict(data, path)

    @classmethod
    def _from_file_dict(cls, data, path, **overrides):
        """``from_dict`` for the contents of a file: errors name the file too."""
        if not isinstance(data, dict):
            raise ValueError(f"{path} must hold a JSON object (a {cls.__name__}), got {type(data).__name__}")
        unknown = sorted(k for k in overrides if k not in cls._field_names())
        if unknown:
            raise TypeError(f"unknown {cls.__name__} field(s) {', '.join(map(repr, unknown))}; known fields: "
                            f"{', '.join(sorted(cls._field_names()))}")
        try:
            return cls.from_dict(data, **overrides)
        except (TypeError, ValueError) as err:
            raise type(err)(f"{path}: {err}") from None

    def with_overrides(self, **overrides):
        """A copy with the given known fields replaced and validated again; unknown names are refused."""
        known = sorted(self._field_names())
        unknown = sorted(k for k in overrides if k not in known)
        if unknown:
            raise TypeError(
                f"unknown {type(self).__name__} field(s) {', '.join(map(repr, unknown))}; known fields: {', '.join(known)}"
            )
        return dataclasses.replace(self, **overrides)

    def save_pretrained(self, save_directory: str | os.PathLike) -> None:
        with atomic_folder(save_directory) as folder:  # clvp/atomic.py: all or nothing
            self.to_json_file(folder / CONFIG_NAME)

    def __eq__(self, other):  # compare the meaningful fields, like transformers' configs
        return type(self) is type(other) and self.to_dict() == other.to_dict()

    def __repr__(self):
        return f"{type(self).__name__} {self.to_json_string()}"


def _kind(value) -> str:
    return type(value).__name__


def _check_int(cls_name, name, value, minimum=None, maximum=None, optional=False) -> None:
    """An int (not a bool) in [minimum, maximum]; None too when ``optional``."""
    if value is None and optional:
        return
    if not isinstance(value, int) or isinstance(value, bool):
        allowed = "an integer" + (" or None" if optional else "")
        raise TypeError(f"{cls_name}.{name} must be {allowed}, got {value!r} ({_kind(value)})")
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        if maximum is None:
            allowed = f">= {minimum}"
        elif minimum is None:
            allowed = f"<= {maximum}"
        else:
            allowed = f"in {minimum}..{maximum}"
        raise ValueError(f"{cls_name}.{name} must be an integer {allowed}, got {value}")


def _check_float(cls_name, name, value, minimum=None, maximum=None, strict_min=False) -> None:
    """A finite real number (int or float, not a bool) in the given range."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise TypeError(f"{cls_name}.{name} must be a number, got {value!r} ({_kind(value)})")
    if not math.isfinite(value):
        raise ValueError(f"{cls_name}.{name} must be a finite number, got {value}")
    low_bad = minimum is not None and (value <= minimum if strict_min else value < minimum)
    if low_bad or (maximum is not None and value > maximum):
        lo = "" if minimum is None else f"{'>' if strict_min else '>='} {minimum}"
        hi = "" if maximum is None else f"<= {maximum}"
        raise ValueError(f"{cls_name}.{name} must be {' and '.join(x for x in (lo, hi) if x)}, got {value}")


def _check_bool(cls_name, name, value) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{cls_name}.{name} must be true or false (a bool), got {value!r} ({_kind(value)})")


def _check_str(cls_name, name, value, allowed=None, optional=False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str):
        raise TypeError(f"{cls_name}.{name} must be a string{' or None' if optional else ''}, got {value!r} ({_kind(value)})")
    if allowed is not None and value not in allowed:
        raise ValueError(f"{cls_name}.{name}={value!r} is not supported; allowed: {', '.join(sorted(allowed))}")


def _check_token(cls_name, name, value, vocab_size, optional=False) -> None:
    _check_int(cls_name, name, value, 0, vocab_size - 1, optional)


def _check_extra(cls_name, extra) -> None:
    if not isinstance(extra, dict):
        raise TypeError(f"{cls_name}.extra must be a dict, got {_kind(extra)}")


def _sub_config_dict(path: str | os.PathLike, key: str) -> dict:
    path = Path(path)
    file = path / CONFIG_NAME if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"no {CONFIG_NAME} in {path}")
    try:
        data = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{file} is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{file} must hold a JSON object, got {type(data).__name__}")
    if data.get("model_type") == "clvp":
        if key not in data:
            raise ValueError(f"{file} is a ClvpConfig without a {key!r} entry")
        if not isinstance(data[key], dict):
            raise ValueError(f"{file}: {key} must be a JSON object, got {type(data[key]).__name__}")
        return data[key], f"{file} ({key})"
    return data, str(file)


@dataclass(eq=False, repr=False)
class ClvpEncoderConfig(_Config):
    """Config of a CLVP text or speech encoder (``model_type`` "clvp_encoder")."""

    model_type: ClassVar[str] = "clvp_encoder"

    vocab_size: int = 256  # text vocabulary; the real speech encoder uses 8192 (see ClvpConfig)
    hidden_size: int = 768
    intermediate_size: int = 1536  # GLU width: fc1 projects to 2 * intermediate_size, then halves
    projection_dim: int = 768  # output embedding size; also sets the rotary width (quirk, docs/model.md §2.1)
    num_hidden_layers: int = 20
    num_attention_heads: int = 12  # head_dim = hidden_size // num_attention_heads = 64
    hidden_act: str = "gelu"  # exact (erf) GELU in the GLU gate
    layer_norm_eps: float = 1e-5  # for the RMSNorms and the final LayerNorm
    attention_dropout: float = 0.1  # training only
    dropout: float = 0.1  # training only
    use_rotary_embedding: bool = True
    use_attention_bias: bool = False  # q/k/v biases; out_proj always has one
    summary_type: str = "mean"  # mean over all positions, padded ones included (CLVP quirk)
    initializer_factor: float = 1.0
    bos_token_id: int = 255
    eos_token_id: int = 0
    pad_token_id: int | None = None
    extra: dict = field(default_factory=dict)  # unknown keys of a transformers config.json, kept as-is

    def __post_init__(self):
        self._check_fields()
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_attention_heads ({self.num_attention_heads})"
            )
        if self.use_rotary_embedding and self.rotary_dim > self.head_dim:
            raise ValueError(
                f"the rotary width max(projection_dim // (2 * num_attention_heads), 32) = {self.rotary_dim} exceeds "
                f"head_dim = {self.head_dim}; use fewer heads, a larger hidden_size or use_rotary_embedding=False"
            )
        if self.summary_type != "mean":
            raise ValueError(f"summary_type={self.summary_type!r} is not supported; CLVP uses 'mean'")

    def _check_fields(self) -> None:
        """Type and range of every field, named, before anything uses them."""
        n = type(self).__name__
        for name in ("vocab_size", "hidden_size", "intermediate_size", "projection_dim", "num_hidden_layers",
                     "num_attention_heads"):
            _check_int(n, name, getattr(self, name), 1)
        _check_str(n, "hidden_act", self.hidden_act, _ACTIVATIONS)
        _check_float(n, "layer_norm_eps", self.layer_norm_eps, 0, strict_min=True)
        _check_float(n, "attention_dropout", self.attention_dropout, 0, 1)
        _check_float(n, "dropout", self.dropout, 0, 1)
        _check_bool(n, "use_rotary_embedding", self.use_rotary_embedding)
        _check_bool(n, "use_attention_bias", self.use_attention_bias)
        _check_str(n, "summary_type", self.summary_type)
        _check_float(n, "initializer_factor", self.initializer_factor, 0)
        _check_token(n, "bos_token_id", self.bos_token_id, self.vocab_size)
        _check_token(n, "eos_token_id", self.eos_token_id, self.vocab_size)
        _check_token(n, "pad_token_id", self.pad_token_id, self.vocab_size, optional=True)
        _check_extra(n, self.extra)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def rotary_dim(self) -> int:
        """Rotary width: ``max(projection_dim // (2 * heads), 32)``, as transformers computes it
        (docs/model.md §2.1)."""
        return max(self.projection_dim // (self.num_attention_heads * 2), 32)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, config_type: str = "text_config", **overrides):
        """Load from a folder or file; from a saved ClvpConfig pick ``config_type`` ("text_config" | "speech_config")."""
        if config_type not in ("text_config", "speech_config"):
            raise ValueError(f"config_type must be 'text_config' or 'speech_config', got {config_type!r}")
        data, source = _sub_config_dict(path, config_type)
        return cls._from_file_dict(data, source, **overrides)


@dataclass(eq=False, repr=False)
class ClvpDecoderConfig(_Config):
    """Config of the GPT-2-style speech-code decoder and the conditioning encoder ("clvp_decoder")."""

    model_type: ClassVar[str] = "clvp_decoder"

    vocab_size: int = 8194  # 8192 speech codes + start (8192) + stop (8193)
    max_position_embeddings: int = 608  # mel position table: 604 + 2 + 2 in Tortoise
    max_text_tokens: int = 404  # text position table of the conditioning encoder: 402 + 2
    hidden_size: int = 1024
    num_hidden_layers: int = 30
    num_attention_heads: int = 16
    n_inner: int | None = None  # MLP width; None means 4 * hidden_size
    num_mel_attn_blocks: int = 6  # attention blocks of the conditioning encoder
    activation_function: str = "gelu_new"  # tanh-approximated GELU
    resid_pdrop: float = 0.1  # training only
    embd_pdrop: float = 0.1  # training only
    attention_dropout: float = 0.1  # training only
    layer_norm_epsilon: float = 1e-5
    initializer_range: float = 0.02
    summary_type: str = "cls_index"  # present in transformers' config, unused
    summary_use_proj: bool = True
    summary_activation: str | None = None
    summary_proj_to_labels: bool = True
    summary_first_dropout: float = 0.1
    use_cache: bool = True
    bos_token_id: int = 8192  # start code fed first to the decoder
    eos_token_id: int = 8193  # stop code
    pad_token_id: int | None = None
    feature_size: int = 80  # mel bins of the conditioning audio
    use_attention_bias: bool = True
    initializer_factor: float = 1.0
    decoder_fixing_codes: list = field(default_factory=lambda: [83, 45, 45, 248])  # fix_speech_decoder_output filler
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        self._check_fields()
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_attention_heads ({self.num_attention_heads})"
            )
        if self.activation_function not in _ACTIVATIONS:
            raise ValueError(
                f"activation_function={self.activation_function!r} is not supported; allowed: {sorted(_ACTIVATIONS)}"
            )
        self.decoder_fixing_codes = list(self.decoder_fixing_codes)

    def _check_fields(self) -> None:
        """Type and range of every field, named, before anything uses them."""
        n = type(self).__name__
        for name in ("vocab_size", "max_position_embeddings", "max_text_tokens", "hidden_size", "num_hidden_layers",
                     "num_attention_heads", "feature_size"):
            _check_int(n, name, getattr(self, name), 1)
        _check_int(n, "n_inner", self.n_inner, 1, optional=True)
        _check_int(n, "num_mel_attn_blocks", self.num_mel_attn_blocks, 0)
        _check_str(n, "activation_function", self.activation_function)
        for name in ("resid_pdrop", "embd_pdrop", "attention_dropout", "summary_first_dropout"):
            _check_float(n, name, getattr(self, name), 0, 1)
        _check_float(n, "layer_norm_epsilon", self.layer_norm_epsilon, 0, strict_min=True)
        _check_float(n, "initializer_range", self.initializer_range, 0)
        _check_float(n, "initializer_factor", self.initializer_factor, 0)
        _check_str(n, "summary_type", self.summary_type)
        _check_str(n, "summary_activation", self.summary_activation, optional=True)
        for name in ("summary_use_proj", "summary_proj_to_labels", "use_cache", "use_attention_bias"):
            _check_bool(n, name, getattr(self, name))
        _check_token(n, "bos_token_id", self.bos_token_id, self.vocab_size)
        _check_token(n, "eos_token_id", self.eos_token_id, self.vocab_size)
        _check_token(n, "pad_token_id", self.pad_token_id, self.vocab_size, optional=True)
        codes = self.decoder_fixing_codes
        if not isinstance(codes, (list, tuple)) or len(codes) != 4 or not all(
                isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in codes):
            raise ValueError(
                f"{n}.decoder_fixing_codes must be a list of 4 non-negative integer codes (filler, then the 3 "
                f"ending codes; Tortoise's are [83, 45, 45, 248]), got {codes!r}"
            )
        _check_extra(n, self.extra)

    @property
    def inner_dim(self) -> int:
        return self.n_inner if self.n_inner is not None else 4 * self.hidden_size

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **overrides):
        data, source = _sub_config_dict(path, "decoder_config")
        return cls._from_file_dict(data, source, **overrides)


_ACTIVATIONS = {"gelu", "gelu_new", "relu", "silu", "tanh", "gelu_pytorch_tanh", "quick_gelu"}


def _coerce(value, cls, name):
    if value is None:
        return None
    if isinstance(value, cls):
        return value
    if isinstance(value, dict):
        try:
            return cls.from_dict(value)
        except (TypeError, ValueError) as err:
            raise type(err)(f"{name}: {err}") from None
    raise TypeError(f"{name} must be a {cls.__name__} or a dict, got {type(value).__name__}")


@dataclass(eq=False, repr=False)
class ClvpConfig(_Config):
    """Config of the whole model: text encoder, speech encoder, decoder, and the contrastive head.

    Unlike transformers, ``ClvpConfig()`` without a ``speech_config`` gives the speech encoder the
    real checkpoint's vocabulary of 8192 codes (transformers' default is 256, so its default model
    cannot embed the codes its own decoder generates). Pass ``speech_config`` explicitly to choose.
    """

    model_type: ClassVar[str] = "clvp"

    text_config: Any = None  # ClvpEncoderConfig or dict; default ClvpEncoderConfig()
    speech_config: Any = None  # default ClvpEncoderConfig(vocab_size=8192): the real checkpoint's
    decoder_config: Any = None  # default ClvpDecoderConfig()
    projection_dim: int = 768
    logit_scale_init_value: float = 2.6592  # ln(1 / 0.07), Tortoise's initial temperature
    initializer_factor: float = 1.0
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        self.text_config = _coerce(self.text_config, ClvpEncoderConfig, "text_config") or ClvpEncoderConfig()
        self.speech_config = _coerce(self.speech_config, ClvpEncoderConfig, "speech_config") or ClvpEncoderConfig(
            vocab_size=8192
        )
        self.decoder_config = _coerce(self.decoder_config, ClvpDecoderConfig, "decoder_config") or ClvpDecoderConfig()
        n = type(self).__name__
        _check_int(n, "projection_dim", self.projection_dim, 1)
        _check_float(n, "logit_scale_init_value", self.logit_scale_init_value, -100, 100)
        _check_float(n, "initializer_factor", self.initializer_factor, 0)
        _check_extra(n, self.extra)
        if self.text_config.projection_dim != self.speech_config.projection_dim:
            raise ValueError(
                f"ClvpConfig: text_config.projection_dim ({self.text_config.projection_dim}) and "
                f"speech_config.projection_dim ({self.speech_config.projection_dim}) must be equal: the two embeddings are compared"
            )
        speech_vocab = self.speech_config.vocab_size
        bad = [c for c in self.decoder_config.decoder_fixing_codes if c >= speech_vocab]
        if bad:
            raise ValueError(
                f"ClvpConfig.decoder_config.decoder_fixing_codes contains code {bad[0]}, outside the speech encoder's "
                f"vocabulary (speech_config.vocab_size = {speech_vocab}, allowed 0..{speech_vocab - 1})"
            )

    @classmethod
    def from_sub_model_configs(cls, text_config, speech_config, decoder_config, **kwargs):
        return cls(text_config=text_config, speech_config=speech_config, decoder_config=decoder_config, **kwargs)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **overrides):
        path = Path(path)
        file = path / CONFIG_NAME if path.is_dir() else path
        config = cls.from_json_file(file)
        return config.with_overrides(**overrides) if overrides else config


def tiny_config(**overrides) -> ClvpConfig:
    """A small random-init-friendly config for demos and tests (same structure, small sizes)."""
    text = ClvpEncoderConfig(vocab_size=256, hidden_size=64, intermediate_size=96, projection_dim=32,
                             num_hidden_layers=2, num_attention_heads=2)
    speech = ClvpEncoderConfig(vocab_size=8192, hidden_size=64, intermediate_size=96, projection_dim=32,
                               num_hidden_layers=2, num_attention_heads=2)
    decoder = ClvpDecoderConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, num_mel_attn_blocks=2,
                                max_position_embeddings=608, max_text_tokens=404)
    return ClvpConfig(text_config=text, speech_config=speech, decoder_config=decoder, projection_dim=32, **overrides)
