"""The model's matrix products on the CPU: which formulation runs fastest, and the layers that use it.

``Linear`` and ``Conv1D`` hold the same parameters and state-dict keys as ``nn.Linear`` and GPT-2's
Conv1D; their forward goes through ``affine``, which picks, per call, the fastest way torch offers
on this CPU. Each choice below comes with the measurement that justifies it (development machines:
2-core AMD EPYC VMs, one AVX2 only, one with AVX-512-BF16, torch 2.13; bench/results/generation-cpu.md
and model-cpu.md). On other devices ``affine`` is plain ``F.linear``. Decode steps go faster still
with the decoder's weights packed for oneDNN (``clvp.packing``, docs/speed.md §11).
"""
from __future__ import annotations

import functools
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .kernels._cpu import cpu_has_fast_half  # noqa: F401  (public here: loading and the benchmarks use it)

# Below this many rows a product is a weight stream (decode steps): torch's half-precision path then
# wins even when emulated (it reads half the bytes), while an upcast copies every weight to float32.
UPCAST_MIN_ROWS = 32

# Up to this many rows a float32 CPU product runs through oneDNN's linear op where torch has it and no
# gradient is wanted (``_onednn_small``), else as ``W @ x.T`` (the weight as the left operand):
# MKL then takes a faster path (apparently no per-call packing of the weight), 1.5-3.5x faster than
# ``x @ W.T`` for 2 to 64 rows (4.9 -> 12.8 GB/s of weights at 4 rows), and no slower at 1; above
# ~96 rows the usual order wins. Decode steps are such products.
WEIGHT_LEFT_MAX_ROWS = 64


@functools.lru_cache(maxsize=None)
def _emulated_half(dtype: torch.dtype) -> bool:
    """True when this CPU has no native matrix instructions for ``dtype`` (bf16 / fp16)."""
    return dtype in (torch.bfloat16, torch.float16) and not cpu_has_fast_half(dtype)


def _upcast_product(rows: int, x: torch.Tensor, weight: torch.Tensor) -> bool:
    # Where half precision is emulated (~100x slower than float32), keep the half-precision storage
    # but multiply in float32: a copy of the weight per call, still far faster.
    return (x.device.type == "cpu" and weight.dtype == x.dtype and _emulated_half(x.dtype)
            and rows >= UPCAST_MIN_ROWS)


def _probe_onednn_linear() -> bool:
    try:
        return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    except (AttributeError, RuntimeError):
        return False


# Whether this torch build has oneDNN's linear op (``torch.ops.mkldnn._linear_pointwise``, the op
# torch.compile's CPU backend emits for linear layers). Probed once at import: a plain constant is
# also what torch.compile can trace through.
ONEDNN_LINEAR = _probe_onednn_linear()


def onednn_linear_available() -> bool:
    """Whether this torch build has oneDNN's linear op (see ``ONEDNN_LINEAR``)."""
    return ONEDNN_LINEAR


def _onednn_small(rows: int, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> bool:
    # A float32 weight stream of a few rows (decode steps) through oneDNN's linear op: 1.6x faster than
    # MKL's ``W @ x.T`` at 4 rows and 1.3x at 16 on the AVX-512 machine (bench/results/generation-cpu.md).
    # The op has no autograd formula, so only where no gradient is wanted.
    return (x.device.type == "cpu" and ONEDNN_LINEAR and x.dtype == torch.float32 and weight.dtype == torch.float32
            and 0 < rows <= WEIGHT_LEFT_MAX_ROWS and weight.is_contiguous()
            and (bias is None or (bias.dtype == torch.float32 and bias.is_contiguous()))
            and not (torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, bias))))


def affine(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """``x @ weight.T + bias`` for x (..., in), weight (out, in) (any strides), bias (out,) or None.

    Returns (..., out) contiguous, in x's dtype, by the fastest CPU formulation (see above).
    """
    x2 = x.reshape(-1, x.shape[-1])  # (rows, in)
    rows = x2.shape[0]
    if _upcast_product(rows, x, weight):
        out = F.linear(x2.float(), weight.float(), None if bias is None else bias.float()).to(x.dtype)
    elif _onednn_small(rows, x, weight, bias):
        out = torch.ops.mkldnn._linear_pointwise(x2.contiguous(), weight, bias, "none", [], "")  # (rows, out)
    elif x.device.type == "cpu" and x.dtype == torch.float32 and 0 < rows <= WEIGHT_LEFT_MAX_ROWS:
        x2 = x2.contiguous()  # x2.t() must be a transposed view: a column-major copy is 3x slower
        out_t = torch.mm(weight, x2.t()) if bias is None else torch.addmm(bias[:, None], weight, x2.t())  # (out, rows)
        out = out_t.t().contiguous()  # (rows, out); the next product needs it row-major to take this path
    else:
        out = F.linear(x2, weight, bias)
    return out.view(*x.shape[:-1], weight.shape[0])


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters and state-dict keys) whose products go through ``affine``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return affine(x, self.weight, self.bias)


def _contiguous_weight(module, state_dict, prefix, local_metadata):
    key = prefix + "weight"
    if key in state_dict:
        state_dict[key] = state_dict[key].contiguous()


class Conv1D(nn.Module):
    """GPT-2's Conv1D: a linear layer whose weight is stored (in, out); ``y = x @ W + b``."""

    def __init__(self, nf: int, nx: int):
        super().__init__()
        self.nf = nf
        # (in, out) as in the checkpoint, but column-major (memory (out, in), nn.Linear's): oneDNN's
        # half-precision CPU product is ~45x slower with a row-major (K, N) operand (4 rows, AVX2), and
        # the small-batch float32 order of ``affine`` wants the (out, in) rows contiguous
        self.weight = nn.Parameter(torch.empty(nf, nx).t())  # (nx, nf) view of (nf, nx) memory
        self.bias = nn.Parameter(torch.zeros(nf))
        self._register_state_dict_hook(_contiguous_weight)  # state_dict() stays saveable as-is (safetensors)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "weight"
        if key in state_dict and state_dict[key].dim() == 2:  # keep the column-major layout, assign=True too
            state_dict[key] = state_dict[key].t().contiguous().t()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return affine(x, self.weight.t(), self.bias)
