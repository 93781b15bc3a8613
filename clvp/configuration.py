"""Configs of the CLVP sub-models, with Hugging Face's names, defaults and config.json layout.

Defaults are those of transformers' ``ClvpEncoderConfig`` / ``ClvpDecoderConfig`` / ``ClvpConfig``
(= the Tortoise checkpoint), except where a comment says otherwise. A config.json written by
transformers loads here and one written here loads in transformers.

Like transformers' ``PretrainedConfig``, every config also has the common attributes
(``output_hidden_states``, ``output_attentions``, ``return_dict``, ``torchscript``, ``torch_dtype``,
``id2label`` / ``num_labels``, ``pruned_heads``, the generation defaults, ...; ``COMMON_DEFAULTS``)
and accepts any other keyword, stored as an attribute and written back to config.json. These live
in ``extra``. Unlike transformers, the fields CLVP uses are validated at construction (a wrong type
or range is a TypeError / ValueError naming the field), see docs/parity.md.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from .atomic import atomic_folder, atomic_write_text

CONFIG_NAME = "config.json"


# transformers 4.46.3's PretrainedConfig attributes and their defaults (the oracle's ``to_dict()`` of a
# default config); ``id2label`` / ``label2id`` follow ``num_labels`` (2 by default).
COMMON_DEFAULTS: dict[str, Any] = {
    "return_dict": True, "output_hidden_states": False, "output_attentions": False, "torchscript": False,
    "torch_dtype": None, "use_bfloat16": False, "tf_legacy_loss": False, "pruned_heads": {},
    "tie_word_embeddings": True, "chunk_size_feed_forward": 0, "is_encoder_decoder": False, "is_decoder": False,
    "cross_attention_hidden_size": None, "add_cross_attention": False, "tie_encoder_decoder": False,
    "max_length": 20, "min_length": 0, "do_sample": False, "early_stopping": False, "num_beams": 1,
    "num_beam_groups": 1, "diversity_penalty": 0.0, "temperature": 1.0, "top_k": 50, "top_p": 1.0,
    "typical_p": 1.0, "repetition_penalty": 1.0, "length_penalty": 1.0, "no_repeat_ngram_size": 0,
    "encoder_no_repeat_ngram_size": 0, "bad_words_ids": None, "num_return_sequences": 1, "output_scores": False,
    "return_dict_in_generate": False, "forced_bos_token_id": None, "forced_eos_token_id": None,
    "remove_invalid_values": False, "exponential_decay_length_penalty": None, "suppress_tokens": None,
    "begin_suppress_tokens": None, "architectures": None, "finetuning_task": None,
    "id2label": {0: "LABEL_0", 1: "LABEL_1"}, "label2id": {"LABEL_0": 0, "LABEL_1": 1}, "tokenizer_class": None,
    "prefix": None, "bos_token_id": None, "pad_token_id": None, "eos_token_id": None, "sep_token_id": None,
    "decoder_start_token_id": None, "task_specific_params": None, "problem_type": None, "_name_or_path": "",
    "transformers_version": None,
}
_COMMON_BOOLS = ("return_dict", "output_hidden_states", "output_attentions", "torchscript", "use_bfloat16",
                 "tie_word_embeddings", "is_encoder_decoder", "is_decoder", "add_cross_attention")
_PROBLEM_TYPES = ("regression", "single_label_classification", "multi_label_classification")
_TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
                 "float64": torch.float64}


def _normalise_common(cls_name: str, values: dict) -> dict:
    """transformers' conversions of the common attributes (``num_labels`` -> ``id2label``, JSON's string
    keys -> ints, ``torch_dtype`` names -> torch dtypes), and type checks of the switches forwards read."""
    values = dict(values)
    values.pop("model_type", None)
    num_labels = values.pop("num_labels", None)
    if num_labels is not None:
        _check_int(cls_name, "num_labels", num_labels, 0)
        if "id2label" not in values or len(values["id2label"] or {}) != num_labels:
            values["id2label"] = {i: f"LABEL_{i}" for i in range(num_labels)}
    if values.get("id2label") is not None:
        if not isinstance(values["id2label"], dict):
            raise TypeError(f"{cls_name}.id2label must be a dict of label ids to names, got {_kind(values['id2label'])}")
        values["id2label"] = {int(k): v for k, v in values["id2label"].items()}
        if values.get("label2id") is None:
            values["label2id"] = {v: k for k, v in values["id2label"].items()}
    if isinstance(values.get("pruned_heads"), dict):
        values["pruned_heads"] = {int(k): v for k, v in values["pruned_heads"].items()}
    dtype = values.get("torch_dtype")
    if isinstance(dtype, str):
        if dtype not in _TORCH_DTYPES:
            raise ValueError(f"{cls_name}.torch_dtype={dtype!r} is not supported; allowed: {', '.join(_TORCH_DTYPES)}")
        values["torch_dtype"] = _TORCH_DTYPES[dtype]
    elif dtype is not None and not isinstance(dtype, torch.dtype):
        raise TypeError(f"{cls_name}.torch_dtype must be a torch dtype, one of its names or None, got {dtype!r}")
    for name in _COMMON_BOOLS:
        if name in values:
            _check_bool(cls_name, name, values[name])
    if values.get("problem_type") is not None and values["problem_type"] not in _PROBLEM_TYPES:
        raise ValueError(f"{cls_name}.problem_type={values['problem_type']!r} is not supported; allowed: "
                         f"{', '.join(_PROBLEM_TYPES)} or None")
    return values


def _accepts_any_keyword(cls):
    """Let the dataclass ``__init__`` take any keyword, as transformers' configs do: the fields are
    validated by ``__post_init__``; every other keyword is stored in ``extra`` (an attribute)."""
    init = cls.__init__
    names = {f.name for f in dataclasses.fields(cls)}

    @functools.wraps(init)
    def __init__(self, *args, extra=None, **kwargs):
        if extra is not None and not isinstance(extra, dict):
            raise TypeError(f"{cls.__name__}.extra must be a dict, got {_kind(extra)}")
        others = {k: kwargs.pop(k) for k in list(kwargs) if k not in names}
        common = _normalise_common(cls.__name__, {**copy.deepcopy(extra or {}), **others})
        init(self, *args, extra=common, **kwargs)

    cls.__init__ = __init__
    return cls


class _Config:
    """JSON round-trip and transformers' ``PretrainedConfig`` surface shared by the three configs
    (dataclasses underneath; the common and unknown attributes live in ``extra``)."""

    model_type: ClassVar[str] = ""
    is_composition: ClassVar[bool] = False

    @classmethod
    def _field_names(cls) -> set[str]:
        return {f.name for f in dataclasses.fields(cls) if f.name != "extra"}

    def __getattr__(self, name):  # only called when the normal lookup fails: common and unknown attributes
        if name.startswith("__") or name == "extra":
            raise AttributeError(name)
        extra = self.__dict__.get("extra")
        if extra is not None:
            if name in extra:
                return extra[name]
            if name in COMMON_DEFAULTS:
                cache = self.__dict__.setdefault("_defaults_in_use", {})
                if name not in cache:  # one copy, so that in-place changes (pruned_heads[...] = ...) stick
                    cache[name] = copy.deepcopy(COMMON_DEFAULTS[name])
                return cache[name]
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def __setattr__(self, name, value):
        if name in self._field_names() or name in ("extra", "_defaults_in_use") \
                or isinstance(getattr(type(self), name, None), property):
            object.__setattr__(self, name, value)
        else:
            self.extra.update(_normalise_common(type(self).__name__, {name: value}))

    @property
    def use_return_dict(self) -> bool:
        """transformers' rule: tuples when ``return_dict`` is False or for TorchScript."""
        return self.return_dict and not self.torchscript

    @property
    def num_labels(self) -> int:
        return len(self.id2label)

    @num_labels.setter
    def num_labels(self, value: int) -> None:
        _check_int(type(self).__name__, "num_labels", value, 0)
        if self.id2label is None or len(self.id2label) != value:
            self.extra["id2label"] = {i: f"LABEL_{i}" for i in range(value)}
            self.extra["label2id"] = {v: k for k, v in self.extra["id2label"].items()}

    @property
    def name_or_path(self) -> str:
        return self._name_or_path

    @name_or_path.setter
    def name_or_path(self, value) -> None:
        self.extra["_name_or_path"] = str(value)

    def get_text_config(self, decoder: bool = False):
        """transformers' accessor: the text part of a composite config, else the config itself."""
        return self

    def update(self, config_dict: dict) -> None:
        """Set attributes from a dict (transformers' ``PretrainedConfig.update``)."""
        if not isinstance(config_dict, dict):
            raise TypeError(f"{type(self).__name__}.update expects a dict, got {_kind(config_dict)}")
        for key, value in config_dict.items():
            setattr(self, key, value)

    @classmethod
    def _known(cls, name: str) -> bool:
        return name in cls._field_names() or name in COMMON_DEFAULTS or name == "num_labels"

    @classmethod
    def from_dict(cls, config_dict: dict, return_unused_kwargs: bool = False, **overrides):
        """A config from ``config_dict`` (every key kept); ``overrides`` replace known attributes.

        Unknown override names are a TypeError, or with ``return_unused_kwargs=True`` come back as
        ``(config, unused)`` (transformers ignores them silently)."""
        if not isinstance(config_dict, dict):
            raise TypeError(f"{cls.__name__}.from_dict expects a dict, got {type(config_dict).__name__}")
        unused = {k: v for k, v in overrides.items() if not cls._known(k) and k not in config_dict}
        if unused and not return_unused_kwargs:
            raise TypeError(f"unknown {cls.__name__} field(s) {', '.join(map(repr, sorted(unused)))}; known fields: "
                            f"{', '.join(sorted(cls._field_names()))} and transformers' common attributes")
        data = {**config_dict, **{k: v for k, v in overrides.items() if k not in unused}}
        model_type = data.pop("model_type", cls.model_type)
        if model_type not in (cls.model_type, None):
            raise ValueError(
                f"config has model_type {model_type!r} but {cls.__name__} expects {cls.model_type!r}"
            )
        known = cls._field_names()
        kwargs = {k: v for k, v in data.items() if k in known}
        extra = {k: v for k, v in data.items() if k not in known}
        config = cls(**kwargs, extra=extra)
        return (config, unused) if return_unused_kwargs else config

    def to_dict(self) -> dict:
        """Every attribute, as transformers' ``to_dict`` (torch dtypes as their names)."""
        common = copy.deepcopy(COMMON_DEFAULTS)
        common.pop("transformers_version")  # written only when known (a file written by transformers)
        return self._as_dict({**common, **self._common_values()}, diff=False)

    def to_diff_dict(self) -> dict:
        """What config.json holds: the CLVP fields, ``model_type``, every attribute given (those of a
        config.json written by transformers included), and defaults changed in place since."""
        used = {k: v for k, v in self.__dict__.get("_defaults_in_use", {}).items() if v != COMMON_DEFAULTS[k]}
        return self._as_dict({**copy.deepcopy(used), **copy.deepcopy(self.extra)}, diff=True)

    def _common_values(self) -> dict:
        """The common and unknown attributes set so far (given, or defaults read and possibly changed)."""
        return copy.deepcopy({**self.__dict__.get("_defaults_in_use", {}), **self.extra})

    def _as_dict(self, out: dict, diff: bool) -> dict:
        for name in self._field_names():
            value = getattr(self, name)
            if isinstance(value, _Config):
                value = value.to_diff_dict() if diff else value.to_dict()
            out[name] = copy.deepcopy(value)
        if isinstance(out.get("torch_dtype"), torch.dtype):
            out["torch_dtype"] = str(out["torch_dtype"]).replace("torch.", "")
        out["model_type"] = self.model_type
        return dict(sorted(out.items()))

    def to_json_string(self, use_diff: bool = True) -> str:
        data = self.to_diff_dict() if use_diff else self.to_dict()
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    def to_json_file(self, path: str | os.PathLike, use_diff: bool = True) -> None:
        atomic_write_text(path, self.to_json_string(use_diff))  # the old file or the new one, never half of it

    @classmethod
    def from_json_file(cls, path: str | os.PathLike):
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no config file at {path}")
        return cls._from_file_dict(_load_json(path), path)

    @classmethod
    def _from_file_dict(cls, data, path, **overrides):
        """``from_dict`` for the contents of a file: errors name the file too."""
        if not isinstance(data, dict):
            raise ValueError(f"{path} must hold a JSON object (a {cls.__name__}), got {type(data).__name__}")
        return_unused = overrides.pop("return_unused_kwargs", False)
        unknown = {k: v for k, v in overrides.items() if not cls._known(k) and k not in data}
        if unknown and not return_unused:
            raise TypeError(f"unknown {cls.__name__} field(s) {', '.join(map(repr, sorted(unknown)))}; known fields: "
                            f"{', '.join(sorted(cls._field_names()))} and transformers' common attributes")
        try:
            config = cls.from_dict(data, **{k: v for k, v in overrides.items() if k not in unknown})
        except (TypeError, ValueError) as err:
            raise type(err)(f"{path}: {err}") from None
        return (config, unknown) if return_unused else config

    def with_overrides(self, **overrides):
        """A copy with the given known attributes replaced and validated again; unknown names are refused."""
        known = sorted(self._field_names())
        unknown = sorted(k for k in overrides if not self._known(k) and k not in self.extra)
        if unknown:
            raise TypeError(
                f"unknown {type(self).__name__} field(s) {', '.join(map(repr, unknown))}; known fields: {', '.join(known)}"
                " and transformers' common attributes"
            )
        fields_ = {k: v for k, v in overrides.items() if k in known}
        others = {k: v for k, v in overrides.items() if k not in known}
        return dataclasses.replace(self, **fields_, extra={**self._common_values(), **others})

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs) -> None:
        """Write config.json (all or nothing, clvp/atomic.py). transformers' hub arguments
        (``push_to_hub``) are not supported."""
        if kwargs.get("push_to_hub"):
            raise ValueError("push_to_hub is not supported; upload the saved folder yourself")
        with atomic_folder(save_directory) as folder:  # clvp/atomic.py: all or nothing
            self.to_json_file(folder / CONFIG_NAME)

    @classmethod
    def get_config_dict(cls, pretrained_model_name_or_path, **kwargs) -> tuple[dict, dict]:
        """The raw dict of a folder's (or file's) config.json and the keywords not used to find it."""
        return _load_json(_config_file(Path(pretrained_model_name_or_path) / kwargs.pop("subfolder", ""))), kwargs

    def __eq__(self, other):  # compare the meaningful attributes (not where the config was loaded from)
        if type(self) is not type(other):
            return False
        mine, theirs = self.to_dict(), other.to_dict()
        mine.pop("_name_or_path"), theirs.pop("_name_or_path")
        return mine == theirs

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


def _path_arg(path, subfolder: str = "") -> Path:
    """``from_pretrained``'s folder (transformers' ``pretrained_model_name_or_path``) as a Path."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"pretrained_model_name_or_path must be a folder path (str or os.PathLike), got "
                        f"{type(path).__name__}; loading from the Hugging Face Hub is not supported")
    if not isinstance(subfolder, str):
        raise TypeError(f"subfolder must be a string, got {type(subfolder).__name__}")
    return Path(path) / subfolder


def _config_file(path: Path) -> Path:
    """A folder's config.json, or ``path`` itself when it is a file; FileNotFoundError otherwise."""
    file = path / CONFIG_NAME if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"no {CONFIG_NAME} in {path}")
    return file


def _load_json(file: Path):
    """The parsed JSON of a config file, or a ValueError naming the file."""
    try:
        return json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{file} is not valid JSON: {err}") from None


def _sub_config_dict(path: str | os.PathLike, key: str) -> dict:
    file = _config_file(Path(path))
    data = _load_json(file)
    if not isinstance(data, dict):
        raise ValueError(f"{file} must hold a JSON object, got {type(data).__name__}")
    if data.get("model_type") == "clvp":
        if key not in data:
            raise ValueError(f"{file} is a ClvpConfig without a {key!r} entry")
        if not isinstance(data[key], dict):
            raise ValueError(f"{file}: {key} must be a JSON object, got {type(data[key]).__name__}")
        return data[key], f"{file} ({key})"
    return data, str(file)


@_accepts_any_keyword
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
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike = None, config_type: str = "text_config",
                        subfolder: str = "", **overrides):
        """Load from a folder or file; from a saved ClvpConfig pick ``config_type`` ("text_config" | "speech_config").
        ``return_unused_kwargs=True`` returns ``(config, unknown overrides)`` as transformers does."""
        if config_type not in ("text_config", "speech_config"):
            raise ValueError(f"config_type must be 'text_config' or 'speech_config', got {config_type!r}")
        data, source = _sub_config_dict(_path_arg(pretrained_model_name_or_path, subfolder), config_type)
        return cls._from_file_dict(data, source, **overrides)


@_accepts_any_keyword
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
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike = None, subfolder: str = "",
                        **overrides):
        """Load from a folder or file (the ``decoder_config`` of a saved ClvpConfig too)."""
        data, source = _sub_config_dict(_path_arg(pretrained_model_name_or_path, subfolder), "decoder_config")
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


@_accepts_any_keyword
@dataclass(eq=False, repr=False)
class ClvpConfig(_Config):
    """Config of the whole model: text encoder, speech encoder, decoder, and the contrastive head.

    Unlike transformers, ``ClvpConfig()`` without a ``speech_config`` gives the speech encoder the
    real checkpoint's vocabulary of 8192 codes (transformers' default is 256, so its default model
    cannot embed the codes its own decoder generates). Pass ``speech_config`` explicitly to choose.
    """

    model_type: ClassVar[str] = "clvp"
    is_composition: ClassVar[bool] = True  # transformers' flag; ClvpConfig() still works, as in transformers

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

    def get_text_config(self, decoder: bool = False):
        """transformers' accessor: the text encoder's config (as transformers' ClvpConfig gives)."""
        return self.text_config

    @classmethod
    def from_sub_model_configs(cls, text_config, speech_config, decoder_config, **kwargs):
        return cls(text_config=text_config, speech_config=speech_config, decoder_config=decoder_config, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike = None, subfolder: str = "",
                        return_unused_kwargs: bool = False, **overrides):
        """Load a folder's (or a file's) config.json; ``overrides`` replace known attributes (unknown
        names: a TypeError, or returned as ``(config, unused)`` with ``return_unused_kwargs=True``)."""
        path = _path_arg(pretrained_model_name_or_path, subfolder)
        file = path / CONFIG_NAME if path.is_dir() else path
        config = cls.from_json_file(file)
        unused = {k: v for k, v in overrides.items() if not cls._known(k) and k not in config.extra}
        if return_unused_kwargs:
            overrides = {k: v for k, v in overrides.items() if k not in unused}
        config = config.with_overrides(**overrides) if overrides else config
        return (config, unused) if return_unused_kwargs else config


def tiny_config(**overrides) -> ClvpConfig:
    """A small random-init-friendly config for demos and tests (same structure, small sizes)."""
    text = ClvpEncoderConfig(vocab_size=256, hidden_size=64, intermediate_size=96, projection_dim=32,
                             num_hidden_layers=2, num_attention_heads=2)
    speech = ClvpEncoderConfig(vocab_size=8192, hidden_size=64, intermediate_size=96, projection_dim=32,
                               num_hidden_layers=2, num_attention_heads=2)
    decoder = ClvpDecoderConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, num_mel_attn_blocks=2,
                                max_position_embeddings=608, max_text_tokens=404)
    return ClvpConfig(text_config=text, speech_config=speech, decoder_config=decoder, projection_dim=32, **overrides)
