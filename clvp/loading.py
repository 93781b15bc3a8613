"""Reading and writing checkpoints in Hugging Face's layout (config.json + model.safetensors), and
the conveniences of transformers' ``PreTrainedModel`` that concern loading (``PreTrainedMixin``).

Strict where transformers is lenient: any missing, unexpected or mis-shaped tensor is an error that
names them (transformers only warns and leaves random weights). ``from_pretrained(..., strict=False)``
is the explicit opt-in to transformers' behaviour: what the checkpoint has is loaded, the rest is
initialised, and a warning names every re-initialised tensor (docs/parity.md). A ``.bin`` is read
only with ``torch.load(..., weights_only=True)``: a checkpoint never runs code.
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import torch
import torch.utils.checkpoint

from .atomic import atomic_folder
from .products import cpu_has_fast_half

WEIGHTS_SAFE = "model.safetensors"
WEIGHTS_SAFE_INDEX = "model.safetensors.index.json"
WEIGHTS_BIN = "pytorch_model.bin"

_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
}


def resolve_dtype(dtype) -> torch.dtype | None:
    """None, a torch float dtype, or one of the names in ``_DTYPES`` -> torch dtype."""
    if dtype is None or isinstance(dtype, torch.dtype):
        if isinstance(dtype, torch.dtype) and dtype not in (torch.float32, torch.bfloat16, torch.float16):
            raise ValueError(f"dtype {dtype} is not supported; use float32, bfloat16 or float16")
        return dtype
    if isinstance(dtype, str) and dtype.lower() in _DTYPES:
        return _DTYPES[dtype.lower()]
    raise ValueError(f"unknown dtype {dtype!r}; allowed: {', '.join(sorted(_DTYPES))}")


def warn_if_slow_half(dtype, device) -> None:
    if dtype in (torch.bfloat16, torch.float16) and (device is None or torch.device(device).type == "cpu") \
            and not cpu_has_fast_half(dtype):
        warnings.warn(
            f"this CPU has no native {str(dtype).replace('torch.', '')} matrix instructions (torch reports "
            f"{torch.backends.cpu.get_cpu_capability()}): the weights are stored in half precision, products of "
            "32 rows or more run in float32 and smaller ones (decode steps) in torch's emulated half precision; "
            "expect float32 speed at best, and slower generation than with float32 weights", RuntimeWarning,
            stacklevel=3,
        )


def resolve_device(device) -> torch.device | None:
    if device is None:
        return None
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {device!r}; use e.g. 'cpu', 'cuda' or 'cuda:0'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but CUDA is not available on this machine")
    return dev


def read_state_dict(folder: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load the tensors of a checkpoint folder: model.safetensors (preferred), a sharded
    safetensors index, or pytorch_model.bin (weights only)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"model folder {folder} does not exist")
    if (folder / WEIGHTS_SAFE).is_file():
        return _read_safetensors(folder / WEIGHTS_SAFE)
    if (folder / WEIGHTS_SAFE_INDEX).is_file():
        try:
            index = json.loads((folder / WEIGHTS_SAFE_INDEX).read_text())
            shards = sorted(set(index["weight_map"].values()))
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as err:
            raise ValueError(f"{folder / WEIGHTS_SAFE_INDEX} is not a valid safetensors index: {err}") from None
        state = {}
        for shard in shards:
            state.update(_read_safetensors(_shard_path(folder, shard)))
        return state
    if (folder / WEIGHTS_BIN).is_file():
        path = folder / WEIGHTS_BIN
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # truncated, corrupt, or pickles code: all refused
            raise ValueError(f"cannot read {path} as a weights-only PyTorch checkpoint: {type(err).__name__}: {err}") from None
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise ValueError(f"{path} does not hold a flat dict of tensors")
        return state
    raise FileNotFoundError(f"no {WEIGHTS_SAFE}, {WEIGHTS_SAFE_INDEX} or {WEIGHTS_BIN} in {folder}")


def _shard_path(folder: Path, shard) -> Path:
    """The file a safetensors index names, confined to the model folder (no absolute paths, no ``..``
    and no symlink leading out of it)."""
    index = folder / WEIGHTS_SAFE_INDEX
    if not isinstance(shard, str) or not shard or "\x00" in shard:
        raise ValueError(f"{index} names an invalid shard {shard!r}; shards are file names inside {folder}")
    root = folder.resolve()
    path = (folder / shard).resolve()
    if Path(shard).is_absolute() or path == root or root not in path.parents:
        raise ValueError(
            f"{index} names shard {shard!r}, outside the model folder {folder}; shards must be files inside it"
        )
    return path


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    if not path.is_file():
        raise FileNotFoundError(f"checkpoint shard {path} is missing")
    try:
        return load_file(str(path))
    except Exception as err:
        raise ValueError(f"cannot read {path} (truncated or corrupt safetensors file): {err}") from None


_ALIGNMENT = 64  # bytes: what torch's CPU allocator gives every tensor it makes


def aligned(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Replace, in place, the tensors whose data does not start on a 64-byte boundary by aligned
    copies (safetensors hands out tensors at the file's offsets), one at a time so that memory
    peaks at one extra tensor. MKL's small-batch float32 products round differently with
    unaligned operands, so without this the same checkpoint could give different last bits, and
    on near-ties different tokens, depending on how it was read. Returns ``state``."""
    for key, value in state.items():
        if value.data_ptr() % _ALIGNMENT:
            state[key] = value.clone()
    return state


def compare_state_dict(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> dict[str, list]:
    """transformers' loading info: ``missing_keys``, ``unexpected_keys``, ``mismatched_keys`` (key,
    checkpoint shape, model shape) and ``error_msgs``, each sorted."""
    expected = {k: v.shape for k, v in model.state_dict().items()}
    return {
        "missing_keys": sorted(set(expected) - set(state)),
        "unexpected_keys": sorted(set(state) - set(expected)),
        "mismatched_keys": sorted(
            (k, tuple(state[k].shape), tuple(expected[k]))
            for k in set(expected) & set(state) if tuple(state[k].shape) != tuple(expected[k])
        ),
        "error_msgs": [],
    }


def check_state_dict(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Raise a ValueError naming every missing, unexpected and mis-shaped tensor."""
    info = compare_state_dict(model, state)
    missing, unexpected = info["missing_keys"], info["unexpected_keys"]
    mis_shaped = [f"{k}: checkpoint {a} vs model {b}" for k, a, b in info["mismatched_keys"]]
    if missing or unexpected or mis_shaped:
        def listing(name, items):
            if not items:
                return ""
            shown = ", ".join(items[:12]) + (f", ... ({len(items) - 12} more)" if len(items) > 12 else "")
            return f"\n  {len(items)} {name}: {shown}"

        raise ValueError(
            f"the checkpoint {source} does not match the model built from its config:"
            + listing("missing", missing) + listing("unexpected", unexpected) + listing("mis-shaped", mis_shaped)
        )


_HUB_ONLY = ("cache_dir", "force_download", "resume_download", "proxies", "local_files_only", "token",
             "revision", "use_auth_token", "trust_remote_code", "mirror", "_from_auto", "_from_pipeline",
             "low_cpu_mem_usage", "use_safetensors", "attn_implementation")


class PreTrainedMixin:
    """transformers' ``PreTrainedModel`` surface for the CLVP modules (``config_class`` set by each):
    loading and saving, ``num_parameters``, the gradient-checkpointing switches (the forwards of
    clvp/modeling.py honour them), ``tie_weights``."""

    config_class = None
    base_model_prefix = "clvp"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    gradient_checkpointing = False  # per module; set by gradient_checkpointing_enable on every CLVP module
    _tied_weights_keys = None  # nothing is tied in CLVP
    _keys_to_ignore_on_load_missing = None
    _keys_to_ignore_on_load_unexpected = None

    def get_output_embeddings(self):
        """None: no CLVP module ties an output head to its input embeddings (transformers' default)."""
        return None

    def num_parameters(self, only_trainable: bool = False, exclude_embeddings: bool = False) -> int:
        """Number of parameters (transformers' rule: ``exclude_embeddings`` leaves out nn.Embedding weights)."""
        skip = set()
        if exclude_embeddings:
            skip = {id(m.weight) for m in self.modules() if isinstance(m, torch.nn.Embedding)}
        return sum(p.numel() for p in self.parameters()
                   if id(p) not in skip and (p.requires_grad or not only_trainable))

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: dict | None = None) -> None:
        """Recompute each layer's activations in the backward pass (torch.utils.checkpoint) while
        training; ``gradient_checkpointing_kwargs`` go to ``torch.utils.checkpoint.checkpoint``
        (default ``use_reentrant=True``, as transformers)."""
        if gradient_checkpointing_kwargs is None:
            gradient_checkpointing_kwargs = {"use_reentrant": True}
        if not isinstance(gradient_checkpointing_kwargs, dict):
            raise TypeError(f"gradient_checkpointing_kwargs must be a dict or None, got "
                            f"{type(gradient_checkpointing_kwargs).__name__}")
        for module in self.modules():
            if isinstance(module, PreTrainedMixin):
                module.gradient_checkpointing = True
                module._checkpoint_kwargs = dict(gradient_checkpointing_kwargs)

    def gradient_checkpointing_disable(self) -> None:
        for module in self.modules():
            if isinstance(module, PreTrainedMixin):
                module.gradient_checkpointing = False

    @property
    def is_gradient_checkpointing(self) -> bool:
        return any(getattr(m, "gradient_checkpointing", False) for m in self.modules())

    def checkpointed(self, layer, *args):
        """``layer(*args)``, through torch.utils.checkpoint when checkpointing is on and training."""
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            return torch.utils.checkpoint.checkpoint(layer, *args, **getattr(self, "_checkpoint_kwargs", {}))
        return layer(*args)

    def resize_token_embeddings(self, new_num_tokens: int | None = None, pad_to_multiple_of: int | None = None,
                                mean_resizing: bool = True) -> torch.nn.Embedding:
        """Resize the input embeddings (transformers' rules): rows kept up to the smaller size, new rows
        set to the mean of the old ones (``mean_resizing``; else initialised as at construction), and
        ``config.vocab_size`` updated. The output head is not an embedding in CLVP and is left as is,
        as in transformers. Returns the (new) embedding module."""
        old = self.get_input_embeddings()
        if new_num_tokens is None and pad_to_multiple_of is None:
            return old
        if pad_to_multiple_of is not None:
            if not isinstance(pad_to_multiple_of, int) or isinstance(pad_to_multiple_of, bool) or pad_to_multiple_of < 1:
                # transformers' wording first (callers match on it), then what is allowed
                raise ValueError(f"Asking to pad the embedding matrix to a multiple of `{pad_to_multiple_of}`, which is "
                                 "not and integer. Please make sure to pass an integer: pad_to_multiple_of must be a "
                                 "positive integer or None")
            n = old.num_embeddings if new_num_tokens is None else new_num_tokens
            new_num_tokens = -(-n // pad_to_multiple_of) * pad_to_multiple_of
        if not isinstance(new_num_tokens, int) or isinstance(new_num_tokens, bool) or new_num_tokens < 1:
            raise ValueError(f"new_num_tokens must be a positive integer or None, got {new_num_tokens!r}")
        if new_num_tokens == old.num_embeddings:
            return old
        new = torch.nn.Embedding(new_num_tokens, old.embedding_dim, device=old.weight.device, dtype=old.weight.dtype)
        self._init_weights(new)
        keep = min(old.num_embeddings, new_num_tokens)
        with torch.no_grad():
            new.weight[:keep] = old.weight[:keep]
            if mean_resizing and new_num_tokens > keep:
                new.weight[keep:] = old.weight.float().mean(0).to(old.weight.dtype)
        self.set_input_embeddings(new)
        self.config.vocab_size = self.vocab_size = new_num_tokens  # transformers sets both
        return new

    def tie_weights(self) -> None:
        """Nothing to tie: CLVP's output head is not its input embedding (as in transformers)."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike = None, *model_args, config=None,
                        dtype=None, torch_dtype=None, device=None, device_map=None, output_loading_info: bool = False,
                        strict: bool = True, subfolder: str = "", ignore_mismatched_sizes: bool = False,
                        **config_overrides):
        """Load a folder with config.json and model.safetensors (or pytorch_model.bin).

        ``dtype`` / ``torch_dtype`` (transformers' name; "auto" = the checkpoint's), ``device`` /
        ``device_map`` (one device), ``config`` (a config object instead of the folder's),
        ``output_loading_info`` (also return transformers' dict of ``missing_keys``,
        ``unexpected_keys``, ``mismatched_keys``, ``error_msgs``). Other keywords override config
        attributes; an unknown name is a TypeError, as in transformers' model constructors.

        Strict by default: a missing, unexpected or mis-shaped tensor is a ValueError naming them
        (transformers warns and initialises them randomly). ``strict=False`` opts in to that:
        every tensor the checkpoint has is loaded, the rest are initialised (transformers' rules)
        and a warning names each re-initialised tensor; unexpected ones are ignored."""
        if model_args:
            raise TypeError(f"{cls.__name__}.from_pretrained takes the folder as its only positional argument, "
                            f"got {len(model_args)} more")
        state_dict = config_overrides.pop("state_dict", None)
        if pretrained_model_name_or_path is None:
            if state_dict is None or config is None:
                raise TypeError(f"{cls.__name__}.from_pretrained needs pretrained_model_name_or_path (a model folder), "
                                "or both config= and state_dict=")
            pretrained_model_name_or_path = ""  # transformers' "no checkpoint": the given config and tensors
        elif state_dict is not None:
            raise ValueError("pass a model folder or state_dict=, not both")
        if state_dict is not None and (not isinstance(state_dict, dict)
                                       or not all(isinstance(v, torch.Tensor) for v in state_dict.values())):
            raise TypeError("state_dict must be a dict of tensor names to tensors")
        if not isinstance(pretrained_model_name_or_path, (str, os.PathLike)):
            raise TypeError(f"pretrained_model_name_or_path must be a folder path (str or os.PathLike), got "
                            f"{type(pretrained_model_name_or_path).__name__}")
        for flag, value in (("strict", strict), ("output_loading_info", output_loading_info),
                            ("ignore_mismatched_sizes", ignore_mismatched_sizes)):
            if not isinstance(value, bool):
                raise TypeError(f"{flag} must be True or False, got {value!r}")
        if dtype is not None and torch_dtype is not None and dtype != torch_dtype:
            raise ValueError(f"dtype={dtype!r} and torch_dtype={torch_dtype!r} disagree; pass one of them")
        dtype = torch_dtype if dtype is None else dtype
        if device is not None and device_map is not None:
            raise ValueError("pass device or device_map, not both")
        if device_map is not None:
            if not isinstance(device_map, (str, int, torch.device)) or device_map == "auto":
                raise ValueError(f"device_map must name one device (e.g. 'cpu' or 'cuda:0'), got {device_map!r}; "
                                 "splitting a model over devices is not supported")
            device = f"cuda:{device_map}" if isinstance(device_map, int) else device_map
        for name in _HUB_ONLY:
            config_overrides.pop(name, None)  # download and backend switches: nothing to do for a local folder
        folder = Path(pretrained_model_name_or_path) / subfolder
        auto_dtype = isinstance(dtype, str) and dtype == "auto"
        dtype = None if auto_dtype else resolve_dtype(dtype)
        device = resolve_device(device)
        if state_dict is None and not folder.is_dir():
            raise FileNotFoundError(f"model folder {folder} does not exist")
        if config is None:
            if not (folder / "config.json").is_file():
                raise FileNotFoundError(f"{folder} has no config.json; is it a CLVP model folder?")
            config = cls.config_class.from_json_file(folder / "config.json")
        elif not isinstance(config, cls.config_class):
            raise TypeError(f"config must be a {cls.config_class.__name__}, got {type(config).__name__}")
        if config_overrides:  # known attributes only, validated like the file's own values
            config = config.with_overrides(**config_overrides)
        config.name_or_path = str(pretrained_model_name_or_path)
        state = aligned(dict(state_dict) if state_dict is not None else read_state_dict(folder))
        if auto_dtype:
            dtype = config.torch_dtype or next((v.dtype for v in state.values() if v.is_floating_point()), None)
            dtype = resolve_dtype(dtype)
        if strict and not ignore_mismatched_sizes:
            with torch.device("meta"):
                model = cls(config, init_weights=False)
            check_state_dict(model, state, str(folder))
            model.load_state_dict(state, strict=True, assign=True)
            info = compare_state_dict(model, state)
        else:
            model, info = cls._load_lenient(config, state, str(folder), strict)
        model.eval()
        if state_dict is None:
            model._read_extra_files(folder)
        if dtype is not None or device is not None:
            warn_if_slow_half(dtype, device)
            model.to(device=device, dtype=dtype)
        return (model, info) if output_loading_info else model

    def _read_extra_files(self, folder: Path) -> None:
        """Read what ``_extra_files`` wrote (a subclass's; nothing here)."""

    def _extra_files(self) -> dict[str, str]:
        """Further files ``save_pretrained`` writes beside config.json: name -> text (a subclass's)."""
        return {}

    @classmethod
    def _load_lenient(cls, config, state, source: str, strict: bool):
        """``strict=False``: load the tensors that fit, keep the fresh initialisation of the others and
        name them in a warning. ``ignore_mismatched_sizes`` alone (strict) still refuses missing or
        unexpected tensors."""
        model = cls(config)
        info = compare_state_dict(model, state)
        if strict and (info["missing_keys"] or info["unexpected_keys"]):
            check_state_dict(model, state, source)
        bad = {k for k, _, _ in info["mismatched_keys"]}
        usable = {k: v for k, v in state.items() if k not in bad and k not in info["unexpected_keys"]}
        model.load_state_dict(usable, strict=False)
        fresh = sorted(info["missing_keys"] + sorted(bad))
        if fresh:
            warnings.warn(
                f"{cls.__name__}.from_pretrained({source!r}, strict=False): {len(fresh)} tensor(s) were not in the "
                f"checkpoint (or had another shape) and are freshly initialised: {', '.join(fresh)}; train the "
                "model before using it", UserWarning, stacklevel=3)
        if info["unexpected_keys"]:
            warnings.warn(
                f"{cls.__name__}.from_pretrained({source!r}, strict=False): {len(info['unexpected_keys'])} "
                f"checkpoint tensor(s) are not used by the model: {', '.join(info['unexpected_keys'])}",
                UserWarning, stacklevel=3)
        return model, info

    def save_pretrained(self, save_directory: str | os.PathLike, safe_serialization: bool = True, **kwargs) -> None:
        """Write config.json and model.safetensors (or pytorch_model.bin) all or nothing (clvp/atomic.py):
        the folder's other files (tokenizer, preprocessor) are kept; weights of the other format, and
        sharded ones, are removed in the same step, so the folder loads as exactly this model.
        Of transformers' other arguments, ``is_main_process=False`` writes nothing and
        ``max_shard_size`` is accepted (one file is written); ``push_to_hub`` is refused."""
        if kwargs.pop("push_to_hub", False):
            raise ValueError("push_to_hub is not supported; upload the saved folder yourself")
        kwargs.pop("max_shard_size", None)
        is_main_process = kwargs.pop("is_main_process", True)
        if kwargs:
            raise TypeError(f"save_pretrained got unsupported argument(s) {', '.join(sorted(kwargs))}; supported: "
                            "save_directory, safe_serialization, is_main_process, max_shard_size")
        if not is_main_process:
            return
        path = save_directory

        def stale_weights(old: Path) -> set[str]:
            names = {WEIGHTS_SAFE, WEIGHTS_SAFE_INDEX, WEIGHTS_BIN, WEIGHTS_BIN + ".index.json"}
            for index in (WEIGHTS_SAFE_INDEX, WEIGHTS_BIN + ".index.json"):
                try:
                    shards = json.loads((old / index).read_text())["weight_map"].values()
                    names |= {s for s in shards if isinstance(s, str) and os.path.basename(s) == s}
                except (OSError, ValueError, KeyError, TypeError, AttributeError):
                    pass
            return names | {n for n in os.listdir(old) if n.startswith(("model-", "pytorch_model-")) and "-of-" in n
                            and n.endswith((".safetensors", ".bin"))}

        with atomic_folder(path, drop_fn=stale_weights) as folder:
            self.config.save_pretrained(folder)
            for name, text in self._extra_files().items():
                (folder / name).write_text(text)
            state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
            if safe_serialization:
                from safetensors.torch import save_file

                save_file(state, str(folder / WEIGHTS_SAFE), metadata={"format": "pt"})
            else:
                torch.save(state, folder / WEIGHTS_BIN)
