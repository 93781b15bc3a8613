"""Softmax attention for bfloat16 inputs on the CPU, shared by the eager references.

torch's CPU ``scaled_dot_product_attention`` in bfloat16 runs far slower than the float32
arithmetic it needs (measured on a 2-core AVX-512-BF16 VM, torch 2.13, docs/speed.md §9 and §11):
at the encoders' shapes (12 heads x 250 x 250, D = 64) about 3x its own two products, and for a
decode step's single query about 5x this function. The references call it for bfloat16 CPU inputs
without autograd on a CPU that multiplies bfloat16 natively; everywhere else they use SDPA (without
native bfloat16 products, and for float16 on that same VM, this path's bfloat16 / float16 product
with v is emulated and several times slower than SDPA).
"""
from __future__ import annotations

from typing import Optional

import torch

from ._cpu import cpu_has_fast_half

# Probed once at import (a constant is also what torch.compile traces through).
NATIVE_BF16 = cpu_has_fast_half(torch.bfloat16)


def wants_fp32_scores(q: torch.Tensor, *others: torch.Tensor) -> bool:
    """Whether ``attention_fp32_scores`` serves this call: bfloat16 CPU inputs, a CPU with native
    bfloat16 products, no gradient wanted."""
    return (q.device.type == "cpu" and q.dtype == torch.bfloat16 and NATIVE_BF16
            and not (torch.is_grad_enabled() and any(t.requires_grad for t in (q, *others))))


def attention_fp32_scores(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: Optional[torch.Tensor],
                          scale: float, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """softmax(q k^T * scale + bias) v.

    q (..., Tq, D), k and v (..., T, D) in one 16-bit dtype; bias None or float32 broadcastable to
    (..., Tq, T) (0 where attended, -inf where masked). Returns (..., Tq, D) in q's dtype, written
    into ``out`` when given. The scores and the softmax are float32; the probabilities are rounded
    to q's dtype for the product with v, the rounding torch's own CPU flash attention makes.
    """
    s = torch.matmul(q.float(), k.float().transpose(-1, -2)).mul_(scale)  # (..., Tq, T) float32
    if bias is not None:
        s.add_(bias)
    p = torch.softmax(s, dim=-1).to(q.dtype)  # (..., Tq, T)
    if out is None:
        return torch.matmul(p, v)
    out.copy_(torch.matmul(p, v))
    return out
