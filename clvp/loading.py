"""Reading and writing checkpoints in Hugging Face's layout (config.json + model.safetensors).

Strict where transformers is lenient: any missing, unexpected or mis-shaped tensor is an error that
names them (transformers only warns and leaves random weights). A ``.bin`` is read only with
``torch.load(..., weights_only=True)``: a checkpoint never runs code.
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import torch

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


def check_state_dict(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Raise a ValueError naming every missing, unexpected and mis-shaped tensor."""
    expected = {k: v.shape for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mis_shaped = sorted(
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k])}"
        for k in set(expected) & set(state)
        if tuple(state[k].shape) != tuple(expected[k])
    )
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


class PreTrainedMixin:
    """``from_pretrained`` / ``save_pretrained`` for the CLVP modules (``config_class`` set by each)."""

    config_class = None

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, dtype=None, device=None, **config_overrides):
        """Load a folder with config.json and model.safetensors (or pytorch_model.bin)."""
        dtype = resolve_dtype(dtype)
        device = resolve_device(device)
        folder = Path(path)
        if not folder.is_dir():
            raise FileNotFoundError(f"model folder {folder} does not exist")
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"{folder} has no config.json; is it a CLVP model folder?")
        config = cls.config_class.from_json_file(folder / "config.json")
        if config_overrides:  # known fields only, validated like the file's own values
            config = config.with_overrides(**config_overrides)
        state = aligned(read_state_dict(folder))
        with torch.device("meta"):
            model = cls(config, init_weights=False)
        check_state_dict(model, state, str(folder))
        model.load_state_dict(state, strict=True, assign=True)
        model.eval()
        if dtype is not None or device is not None:
            warn_if_slow_half(dtype, device)
            model.to(device=device, dtype=dtype)
        return model

    def save_pretrained(self, path: str | os.PathLike, safe_serialization: bool = True) -> None:
        """Write config.json and model.safetensors (or pytorch_model.bin) all or nothing (clvp/atomic.py):
        the folder's other files (tokenizer, preprocessor) are kept; weights of the other format, and
        sharded ones, are removed in the same step, so the folder loads as exactly this model."""
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
            state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
            if safe_serialization:
                from safetensors.torch import save_file

                save_file(state, str(folder / WEIGHTS_SAFE), metadata={"format": "pt"})
            else:
                torch.save(state, folder / WEIGHTS_BIN)
