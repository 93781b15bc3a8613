"""One query token per sequence against a static, preallocated KV cache (the decoder's cached step).

File layout: eager reference (fallback and oracle), then the Triton kernel, then its launcher.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def decode_attention_ref(q, k_cache, v_cache, lengths, *, scale=None):
    """Eager reference: masked ``scaled_dot_product_attention`` over the valid cache prefix.

    Arguments:
        q: (B, H, D) the current token's query.
        k_cache, v_cache: (B, H, T_max, D) static caches; row b is valid on ``[0, lengths[b])``.
        lengths: (B,) integer tensor, 1 <= lengths[b] <= T_max (the current token included).
        scale: softmax scale, default ``D ** -0.5``.
    Returns:
        (B, H, D) in q's dtype.
    Memory traffic: reads ``lengths.max()`` keys and values of every row (the kernel reads only
    each row's own valid prefix).
    """
    t = int(lengths.max())
    keys = torch.arange(t, device=q.device)
    mask = (keys[None, :] < lengths[:, None].to(q.device))[:, None, None, :]  # (B, 1, 1, t)
    out = F.scaled_dot_product_attention(
        q[:, :, None, :], k_cache[:, :, :t], v_cache[:, :, :t], attn_mask=mask, scale=scale
    )  # (B, H, 1, D)
    return out[:, :, 0]
