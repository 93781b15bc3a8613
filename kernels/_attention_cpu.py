"""Softmax attention for 16-bit inputs on the CPU, shared by the eager references.

torch's CPU ``scaled_dot_product_attention`` in bfloat16 / float16 runs far slower than the
float32 arithmetic it needs (measured on a 2-core AVX-512-BF16 VM, torch 2.13, docs/speed.md §9 and
§11): at the encoders' shapes (12 heads x 250 x 250, D = 64) about 3x its own two products, and for
a decode step's single query about 5x this function. The references call it for 16-bit CPU
inputs without autograd; everywhere else they use SDPA.
"""
from __future__ import annotations

from typing import Optional

import torch


def wants_fp32_scores(q: torch.Tensor, *others: torch.Tensor) -> bool:
    """Whether ``attention_fp32_scores`` serves this call: 16-bit CPU inputs, no gradient wanted."""
    return (q.device.type == "cpu" and q.dtype in (torch.bfloat16, torch.float16)
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
