"""Argument checks shared by the Triton launchers: one spelling of each rule and of its message.

Every message starts with the op's name (``"rotary_attention: ..."``). Error classes: RuntimeError
when the kernel cannot run at all, TypeError for a wrong kind of object or dtype, ValueError for a
wrong shape, size, value or device (and, as the launchers always did, for an argument that should
be an n-D tensor but is not a tensor at all).
"""
from __future__ import annotations

import torch

from ._triton import HAS_TRITON, triton_interpreter

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def dtype_names(dtypes) -> str:
    """``(torch.float32, torch.float16, torch.bfloat16)`` -> ``"float32, float16 or bfloat16"``."""
    names = [str(d).removeprefix("torch.") for d in dtypes]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def _shape_text(shape) -> str:
    return "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"


def check_triton(op: str, fallback: str, x=None) -> None:
    """The kernel can run: triton imports and, given a tensor ``x``, it is on CUDA or Triton's interpreter is on."""
    if not HAS_TRITON:
        raise RuntimeError(f"{op}: the Triton kernel needs triton; use {fallback}")
    if isinstance(x, torch.Tensor) and not x.is_cuda and not triton_interpreter():
        raise RuntimeError(
            f"{op}: the Triton kernel got CPU tensors: run it on CUDA tensors, or set TRITON_INTERPRET=1 before "
            f"triton is imported to simulate it, or use {fallback}"
        )


def check_is_tensor(op: str, **tensors) -> None:
    """Every argument is a ``torch.Tensor`` (TypeError otherwise)."""
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")


def check_tensor(x, name: str, *, op: str, dims: tuple[str, ...] | None = None, dtypes=None) -> None:
    """``x`` is a tensor with one dimension per name in ``dims`` (e.g. ``("B", "H", "T", "D")``) and a
    dtype in ``dtypes`` (either check skipped when None)."""
    if dims is not None and (not isinstance(x, torch.Tensor) or x.dim() != len(dims)):
        got = f"shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{op}: {name} must be {_shape_text(dims)}, a {len(dims)}-D tensor; got {got}")
    check_is_tensor(op, **{name: x})
    if dtypes is not None and x.dtype not in dtypes:
        raise TypeError(f"{op}: {name} has dtype {x.dtype}, which is not supported; allowed dtypes are "
                        f"{dtype_names(dtypes)}")


def check_shape(x, name: str, expected: tuple, *, op: str, doc: str = "") -> None:
    """``x`` is a tensor of shape ``expected``; a str entry of ``expected`` names a free dimension.
    ``doc`` (e.g. ``"(B, T_k)"``) says what the expected sizes are."""
    check_is_tensor(op, **{name: x})
    ok = x.dim() == len(expected) and all(isinstance(e, str) or n == e for n, e in zip(x.shape, expected))
    if not ok:
        want = f"{doc} = {_shape_text(expected)}" if doc else _shape_text(expected)
        raise ValueError(f"{op}: {name} must be {want}, got shape {tuple(x.shape)}")


def check_same_dtype(op: str, **tensors) -> None:
    """All tensors share one dtype (TypeError otherwise)."""
    if len({t.dtype for t in tensors.values()}) > 1:
        raise TypeError(f"{op}: {', '.join(tensors)} must share one dtype, got "
                        f"{', '.join(str(t.dtype) for t in tensors.values())}")


def check_same_device(op: str, **tensors) -> None:
    """All given tensors are on one device (ValueError otherwise); None and non-tensors are skipped
    (their own checks report them)."""
    given = {name: t for name, t in tensors.items() if isinstance(t, torch.Tensor)}
    if len({t.device for t in given.values()}) > 1:
        raise ValueError(f"{op}: {', '.join(given)} must be on one device, got "
                         f"{', '.join(str(t.device) for t in given.values())}")


def check_head_dim(head_dim: int, max_head_dim: int, *, op: str) -> None:
    """1 <= D <= max_head_dim."""
    if not 1 <= head_dim <= max_head_dim:
        raise ValueError(f"{op}: head dim D={head_dim} is not supported; allowed 1 <= D <= {max_head_dim}")
