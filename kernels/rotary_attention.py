"""Bidirectional attention with CLVP's partial rotary embedding on q, k *and* v.

CLVP quirks (reference.md §2.1-2.2): the rotation is the half-split (GPT-NeoX) one over the first
``rotary_dim`` channels of every head (32 of 64 in the real model), the remaining channels pass
through, and *v is rotated too* (an x-transformers legacy) without being un-rotated afterwards.
The encoders mask padded keys only (queries at padded positions still produce output).

File layout: eager reference (fallback and oracle), then the Triton kernel, then its launcher.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def apply_rotary_ref(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the first ``R = cos.shape[-1]`` channels of ``x`` (..., T, D) by angles (T, R).

    The rotation runs in float32 and the result is cast back to ``x.dtype``.
    """
    rot = cos.shape[-1]
    half = rot // 2
    xr = x[..., :rot].float()  # (..., T, R)
    rotated = torch.cat((-xr[..., half:], xr[..., :half]), dim=-1)  # rotate_half: [x1|x2] -> [-x2|x1]
    out = xr * cos + rotated * sin
    if rot == x.shape[-1]:
        return out.to(x.dtype)
    return torch.cat((out.to(x.dtype), x[..., rot:]), dim=-1)


def rotary_attention_ref(q, k, v, cos=None, sin=None, key_padding_mask=None, *, scale=None):
    """Eager reference: rotate q, k, v, then ``scaled_dot_product_attention``.

    Arguments:
        q, k, v: (B, H, T, D), any strides, float32 / float16 / bfloat16.
        cos, sin: (T, R) float32 rotary tables (``cat(freqs, freqs)``), or None for no rotary.
        key_padding_mask: (B, T), nonzero = attend to that key; None attends everywhere.
            Every row must keep at least one key.
        scale: softmax scale, default ``D ** -0.5``.
    Returns:
        (B, H, T, D) in q's dtype.
    Memory traffic: reads q, k, v and writes out once each, plus one extra read and write of q, k
    and v for the rotation (the fused kernel saves those).
    """
    if cos is not None:
        q, k, v = (apply_rotary_ref(t, cos, sin) for t in (q, k, v))
    mask = None
    if key_padding_mask is not None:
        mask = key_padding_mask.bool()[:, None, None, :]  # (B, 1, 1, T)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
