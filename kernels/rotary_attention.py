"""Bidirectional attention with CLVP's partial rotary embedding on q, k *and* v.

CLVP quirks (docs/model.md §2.1-2.2): the rotation is the half-split (GPT-NeoX) one over the first
``rotary_dim`` channels of every head (32 of 64 in the real model), the remaining channels pass
through, and *v is rotated too* (an x-transformers legacy) without being un-rotated afterwards.
The encoders mask padded keys only (queries at padded positions still produce output).

File layout: eager reference (fallback and oracle), then the Triton kernel, then its launcher.
"""
from __future__ import annotations

import functools
import os

import torch
import torch.nn.functional as F

from ._triton import tl, triton


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


# ----------------------------------------------------------------------------------------------
# Triton kernel
# ----------------------------------------------------------------------------------------------

RCP_LN2 = 1.4426950408889634  # log2(e): the softmax runs in base 2 (exp2 is one instruction)


@triton.jit
def _to_input_dtype(x, DTYPE: tl.constexpr, EMULATE_BF16: tl.constexpr):
    """Round float32 ``x`` to the input dtype. With EMULATE_BF16 (interpreter only) the bfloat16
    value is kept in float32, rounded to nearest-even by hand (the interpreter's cast truncates)."""
    if EMULATE_BF16:
        bits = x.to(tl.uint32, bitcast=True)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
        return bits.to(tl.float32, bitcast=True)
    else:
        return x.to(DTYPE)


@triton.jit
def _load_cols(X, stride_x_t, stride_x_d, offs_t, T, col0, offs_c, n_cols, EMULATE_BF16: tl.constexpr):
    """x[offs_t, col0 + offs_c] for offs_c < n_cols, zeros outside: a (len(offs_t), len(offs_c)) tile."""
    x = tl.load(
        X + offs_t[:, None] * stride_x_t + (col0 + offs_c)[None, :] * stride_x_d,
        mask=(offs_t[:, None] < T) & (offs_c[None, :] < n_cols), other=0.0,
    )
    if EMULATE_BF16:
        x = x.to(tl.float32)  # exact
    return x


@triton.jit
def _load_rotated_halves(
    X, stride_x_t, stride_x_d,  # X points at one (batch, head): a (T, D) slab with any strides
    COS, SIN, stride_cos_t, stride_cos_r, stride_sin_t, stride_sin_r,  # (T, R) float32
    offs_t, T, offs_h,
    HALF: tl.constexpr,  # R / 2
    EMULATE_BF16: tl.constexpr,
):
    """The rotated first R channels of x at positions offs_t, as two (len(offs_t), len(offs_h)) halves.

    Half-split rotation (docs/model.md §2.1), with x1 = x[:, :h], x2 = x[:, h:R] and the tables' halves:
        rot(x)[:, :h]  = x1 * cos[:, :h]  - x2 * sin[:, :h]
        rot(x)[:, h:R] = x2 * cos[:, h:R] + x1 * sin[:, h:R]
    computed in float32 and rounded back to the input dtype, as the reference does. Splitting the
    halves (rather than gathering a permuted partner tile) loads every element once, contiguously.
    """
    x_dtype = X.dtype.element_ty
    t_ok = offs_t[:, None] < T
    h_ok = offs_h[None, :] < HALF
    x1 = _load_cols(X, stride_x_t, stride_x_d, offs_t, T, 0, offs_h, HALF, False).to(tl.float32)
    x2 = _load_cols(X, stride_x_t, stride_x_d, offs_t, T, HALF, offs_h, HALF, False).to(tl.float32)
    cos_ptrs = COS + offs_t[:, None] * stride_cos_t + offs_h[None, :] * stride_cos_r
    sin_ptrs = SIN + offs_t[:, None] * stride_sin_t + offs_h[None, :] * stride_sin_r
    cos1 = tl.load(cos_ptrs, mask=t_ok & h_ok, other=0.0)
    cos2 = tl.load(cos_ptrs + HALF * stride_cos_r, mask=t_ok & h_ok, other=0.0)
    sin1 = tl.load(sin_ptrs, mask=t_ok & h_ok, other=0.0)
    sin2 = tl.load(sin_ptrs + HALF * stride_sin_r, mask=t_ok & h_ok, other=0.0)
    r1 = _to_input_dtype(x1 * cos1 - x2 * sin1, x_dtype, EMULATE_BF16)
    r2 = _to_input_dtype(x2 * cos2 + x1 * sin2, x_dtype, EMULATE_BF16)
    return r1, r2


@triton.jit
def _rotary_attention_kernel(
    Q, K, V, COS, SIN, MASK, OUT,
    stride_q_b, stride_q_h, stride_q_t, stride_q_d,  # Q: (B, H, T_Q, D), any strides
    stride_k_b, stride_k_h, stride_k_t, stride_k_d,  # K: (B, H, T_K, D)
    stride_v_b, stride_v_h, stride_v_t, stride_v_d,  # V: (B, H, T_K, D)
    stride_cos_t, stride_cos_r, stride_sin_t, stride_sin_r,  # COS, SIN: (T, ROT_DIM) float32
    stride_mask_b, stride_mask_t,  # MASK: (B, T_K), nonzero = keep
    stride_out_b, stride_out_h, stride_out_t, stride_out_d,  # OUT: (B, H, T_Q, D)
    H, T_Q, T_K,
    qk_scale,  # softmax scale * log2(e)
    T_BUCKET,  # next_power_of_2(T_K): only an autotuning key
    HEAD_DIM: tl.constexpr,  # D
    ROT_DIM: tl.constexpr,  # R, even, 0 = no rotary
    HALF_BLOCK: tl.constexpr,  # R / 2 padded to a power of two >= 16 (tl.dot's minimum)
    PASS_BLOCK: tl.constexpr,  # D - R padded likewise
    HAS_MASK: tl.constexpr,
    DOT_PRECISION: tl.constexpr,  # "ieee" for float32 inputs (no TF32 rounding), else "tf32" (ignored)
    EMULATE_BF16: tl.constexpr,  # interpreter + bfloat16 only: bf16 values carried in float32 (see launcher)
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """Flash-attention forward for (BLOCK_M queries, one batch row, one head) with rotary applied on load.

    Every head's channels are handled as three column groups: the two rotary halves [0, R/2) and
    [R/2, R), and the pass-through [R, D). q . k sums three dots; p @ v fills three accumulators.
    """
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1).to(tl.int64)
    b = pid_bh // H
    h = pid_bh % H
    Q_BH = Q + b * stride_q_b + h * stride_q_h
    K_BH = K + b * stride_k_b + h * stride_k_h
    V_BH = V + b * stride_v_b + h * stride_v_h
    O_BH = OUT + b * stride_out_b + h * stride_out_h

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # (BLOCK_M,) query positions
    offs_h = tl.arange(0, HALF_BLOCK)
    offs_p = tl.arange(0, PASS_BLOCK)
    if ROT_DIM > 0:  # rotated by the query positions' angles
        q1, q2 = _load_rotated_halves(
            Q_BH, stride_q_t, stride_q_d, COS, SIN, stride_cos_t, stride_cos_r, stride_sin_t, stride_sin_r,
            offs_m, T_Q, offs_h, ROT_DIM // 2, EMULATE_BF16,
        )  # 2 x (BLOCK_M, HALF_BLOCK)
        acc1 = tl.zeros([BLOCK_M, HALF_BLOCK], dtype=tl.float32)  # running p @ rot(v), channels [0, R/2)
        acc2 = tl.zeros([BLOCK_M, HALF_BLOCK], dtype=tl.float32)  # channels [R/2, R)
    if HEAD_DIM > ROT_DIM:
        qp = _load_cols(Q_BH, stride_q_t, stride_q_d, offs_m, T_Q, ROT_DIM, offs_p, HEAD_DIM - ROT_DIM, EMULATE_BF16)
        accp = tl.zeros([BLOCK_M, PASS_BLOCK], dtype=tl.float32)  # channels [R, D)

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)  # running max (log2 units)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)  # running sum of exp2
    for start_n in range(0, T_K, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)  # (BLOCK_N,) key positions
        # scores: k is rotated by the *key* positions' angles
        s = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
        if ROT_DIM > 0:
            k1, k2 = _load_rotated_halves(
                K_BH, stride_k_t, stride_k_d, COS, SIN, stride_cos_t, stride_cos_r, stride_sin_t, stride_sin_r,
                offs_n, T_K, offs_h, ROT_DIM // 2, EMULATE_BF16,
            )  # 2 x (BLOCK_N, HALF_BLOCK)
            s = tl.dot(q1, tl.trans(k1), s, input_precision=DOT_PRECISION)
            s = tl.dot(q2, tl.trans(k2), s, input_precision=DOT_PRECISION)
        if HEAD_DIM > ROT_DIM:
            kp = _load_cols(K_BH, stride_k_t, stride_k_d, offs_n, T_K, ROT_DIM, offs_p, HEAD_DIM - ROT_DIM,
                            EMULATE_BF16)  # (BLOCK_N, PASS_BLOCK)
            s = tl.dot(qp, tl.trans(kp), s, input_precision=DOT_PRECISION)
        s = s * qk_scale  # (BLOCK_M, BLOCK_N), log2 units
        keep = offs_n < T_K
        if HAS_MASK:
            kpm = tl.load(MASK + b * stride_mask_b + offs_n * stride_mask_t, mask=keep, other=0)
            keep = keep & (kpm != 0)
        # masked scores are finite (-1e30, not -inf) so that a block whose keys are all masked gives
        # exp2(0) = 1 under a finite max instead of NaN; the first kept key's block wipes it (alpha = 0)
        s = tl.where(keep[None, :], s, -1.0e30)

        # online softmax: rescale what was accumulated under the old max
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.exp2(m_i - m_new)  # (BLOCK_M,), 0 on the first block
        p = tl.exp2(s - m_new[:, None])  # (BLOCK_M, BLOCK_N)
        l_i = l_i * alpha + tl.sum(p, 1)
        p = _to_input_dtype(p, V.dtype.element_ty, EMULATE_BF16)  # p @ v on the input dtype's tensor cores
        m_i = m_new

        # values: v is rotated too (CLVP), by the key positions' angles, and never un-rotated
        if ROT_DIM > 0:
            v1, v2 = _load_rotated_halves(
                V_BH, stride_v_t, stride_v_d, COS, SIN, stride_cos_t, stride_cos_r, stride_sin_t, stride_sin_r,
                offs_n, T_K, offs_h, ROT_DIM // 2, EMULATE_BF16,
            )  # 2 x (BLOCK_N, HALF_BLOCK)
            acc1 = tl.dot(p, v1, acc1 * alpha[:, None], input_precision=DOT_PRECISION)
            acc2 = tl.dot(p, v2, acc2 * alpha[:, None], input_precision=DOT_PRECISION)
        if HEAD_DIM > ROT_DIM:
            vp = _load_cols(V_BH, stride_v_t, stride_v_d, offs_n, T_K, ROT_DIM, offs_p, HEAD_DIM - ROT_DIM,
                            EMULATE_BF16)  # (BLOCK_N, PASS_BLOCK)
            accp = tl.dot(p, vp, accp * alpha[:, None], input_precision=DOT_PRECISION)

    # Every row keeps at least one key, so l_i >= 1. (A row with none would average its masked
    # keys' values instead of producing NaN: the masked score is finite.)
    o_dtype = OUT.dtype.element_ty
    m_ok = offs_m[:, None] < T_Q
    o_rows = O_BH + offs_m[:, None] * stride_out_t
    if ROT_DIM > 0:
        h_ok = m_ok & (offs_h[None, :] < ROT_DIM // 2)
        out1 = _to_input_dtype(acc1 / l_i[:, None], o_dtype, EMULATE_BF16).to(o_dtype)
        out2 = _to_input_dtype(acc2 / l_i[:, None], o_dtype, EMULATE_BF16).to(o_dtype)
        tl.store(o_rows + offs_h[None, :] * stride_out_d, out1, mask=h_ok)
        tl.store(o_rows + (ROT_DIM // 2 + offs_h)[None, :] * stride_out_d, out2, mask=h_ok)
    if HEAD_DIM > ROT_DIM:
        outp = _to_input_dtype(accp / l_i[:, None], o_dtype, EMULATE_BF16).to(o_dtype)
        tl.store(o_rows + (ROT_DIM + offs_p)[None, :] * stride_out_d, outp,
                 mask=m_ok & (offs_p[None, :] < HEAD_DIM - ROT_DIM))


# Launch configurations. On CUDA a small list is autotuned per (T bucket, D, R, mask, dtype).
# Chosen from sm_90 compiles of this kernel (ptxas -v, bf16, D = 64, R = 32; not yet timed on a GPU):
# 64-128 query rows per program give each K/V tile enough tensor-core work while
# B * H * cdiv(T, BLOCK_M) still fills 132 SMs at B = 16, T = 350; 8 warps for 128-row tiles keep
# the fp32 accumulators and scores in registers (4 warps spill a little); 3-4 stages pipeline the
# K/V loads (53-90 KB of shared memory). Configs that do not fit (float32 inputs need about twice
# the shared memory) fail to compile and the autotuner skips them.
# In Triton's interpreter (CPU tests) one fixed small config keeps the simulation fast while still
# crossing several query and key blocks at the test lengths.
_CUDA_CONFIGS = (  # (BLOCK_M, BLOCK_N, num_warps, num_stages)
    (128, 64, 8, 3),
    (128, 128, 8, 3),
    (128, 64, 4, 3),
    (128, 32, 4, 4),
    (64, 64, 4, 3),
    (64, 64, 4, 4),
    (64, 128, 4, 3),
    (64, 32, 4, 4),
)
_INTERPRETER_BLOCKS = (32, 16)  # (BLOCK_M, BLOCK_N)
_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
MAX_HEAD_DIM = 256


@functools.cache
def _autotuned_kernel():
    configs = [
        triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=s) for bm, bn, w, s in _CUDA_CONFIGS
    ]
    return triton.autotune(configs=configs, key=["T_BUCKET", "HEAD_DIM", "ROT_DIM", "HAS_MASK"])(
        _rotary_attention_kernel
    )


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def rotary_attention(q, k, v, cos=None, sin=None, key_padding_mask=None, *, scale=None):
    """Fused bidirectional attention with CLVP's partial rotary on q, k and v (Triton).

    Same signature and semantics as :func:`rotary_attention_ref`.

    Arguments:
        q: (B, H, T_q, D); k, v: (B, H, T_k, D). Any strides (the model passes permuted views of
            (B, T, H, D) projections; they are read in place, never copied). One dtype for all three:
            float32, float16 or bfloat16. D from 1 to 256 (designed for 32..128): the kernel works on
            three channel groups, [0, R/2), [R/2, R) and [R, D), each padded to a power of two >= 16
            (tl.dot's minimum) with masked loads and stores, so D need not be a power of two.
        cos, sin: (T, R) float32 tables (``cat(freqs, freqs)``), R even, 0 <= R <= D, T = T_q = T_k;
            both None for no rotary (the conditioning encoder). The first R channels of every head of
            q, k and v are rotated (half-split) by their own position's angles; the rest pass through.
        key_padding_mask: (B, T_k), nonzero = attend to that key (bool, integer or float); None
            attends everywhere. Every row must keep at least one key (not checked: it would cost a sync).
        scale: softmax scale, default ``D ** -0.5``.
    Returns:
        (B, H, T_q, D) in q's dtype: a permuted view of a contiguous (B, T_q, H, D) buffer, so
        ``out.transpose(1, 2).reshape(B, T_q, H * D)`` is free.
    Numerics: rotation in float32 rounded back to the input dtype (as the reference), scores and
    the online softmax in float32, p rounded to the input dtype for the p @ v product; float32
    inputs use IEEE float32 dot products (no TF32).
    """
    if tl is None:
        raise RuntimeError("rotary_attention (Triton) needs triton; use kernels.rotary_attention_ref")
    if isinstance(q, torch.Tensor) and not q.is_cuda and not _interpreting():
        raise RuntimeError(
            "rotary_attention (Triton) got CPU tensors: run it on CUDA tensors, or set TRITON_INTERPRET=1 before "
            "triton is imported to simulate it, or use kernels.rotary_attention_ref"
        )
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor) or t.dim() != 4:
            raise ValueError(f"{name} must be a 4-D (B, H, T, D) tensor, got {getattr(t, 'shape', type(t))}")
        if t.dtype not in _FLOAT_DTYPES:
            raise TypeError(f"{name} has dtype {t.dtype}; allowed dtypes are float32, float16, bfloat16")
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"q, k, v must share one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k, v must be on one device, got {q.device}, {k.device}, {v.device}")
    B, H, T_q, D = q.shape
    T_k = k.shape[2]
    if k.shape != v.shape or k.shape[:2] != (B, H) or k.shape[3] != D:
        raise ValueError(
            f"k and v must be (B, H, T_k, D) = ({B}, {H}, T_k, {D}) with q (B, H, T_q, D) = {tuple(q.shape)}; "
            f"got k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    if not 1 <= D <= MAX_HEAD_DIM:
        raise ValueError(f"head dim D={D} is not supported; allowed 1 <= D <= {MAX_HEAD_DIM}")

    if (cos is None) != (sin is None):
        raise ValueError("cos and sin must be given together (or both None for no rotary)")
    rot_dim = 0
    if cos is not None:
        if cos.dim() != 2 or cos.shape != sin.shape:
            raise ValueError(f"cos and sin must both be (T, R), got {tuple(cos.shape)} and {tuple(sin.shape)}")
        if cos.dtype != torch.float32 or sin.dtype != torch.float32:
            raise TypeError(f"cos and sin must be float32 tables, got {cos.dtype} and {sin.dtype}")
        rot_dim = cos.shape[1]
        if rot_dim % 2 or rot_dim > D:
            raise ValueError(f"rotary width R={rot_dim} must be even and at most the head dim D={D}")
        if cos.shape[0] != T_q or T_k != T_q:
            raise ValueError(
                f"with rotary, cos/sin rows ({cos.shape[0]}) must equal the query and key lengths ({T_q}, {T_k})"
            )
        if cos.device != q.device or sin.device != q.device:
            raise ValueError(f"cos/sin are on {cos.device}/{sin.device} but q is on {q.device}")
    if rot_dim == 0:
        cos = sin = q.new_empty((1, 1), dtype=torch.float32)  # never read: ROT_DIM = 0 compiles the rotation out

    has_mask = key_padding_mask is not None
    if has_mask:
        if key_padding_mask.shape != (B, T_k):
            raise ValueError(f"key_padding_mask must be (B, T_k) = ({B}, {T_k}), got {tuple(key_padding_mask.shape)}")
        if key_padding_mask.device != q.device:
            raise ValueError(f"key_padding_mask is on {key_padding_mask.device} but q is on {q.device}")
        if key_padding_mask.is_complex():
            raise TypeError("key_padding_mask must be bool, integer or float, not complex")
        mask = key_padding_mask.view(torch.uint8) if key_padding_mask.dtype == torch.bool else key_padding_mask
    else:
        mask = q.new_empty((1, 1), dtype=torch.uint8)  # never read

    scale = D**-0.5 if scale is None else float(scale)
    out = torch.empty((B, T_q, H, D), dtype=q.dtype, device=q.device).permute(0, 2, 1, 3)  # (B, H, T_q, D) view
    if out.numel() == 0:
        return out
    if T_k == 0:
        raise ValueError("T_k = 0: every query row must keep at least one key")
    if B * H > 65535:
        raise ValueError(f"B * H = {B * H} exceeds the CUDA grid's second dimension (65535); split the batch")

    args = (
        q, k, v, cos, sin, mask, out,
        *q.stride(), *k.stride(), *v.stride(),
        *cos.stride(), *sin.stride(),
        *mask.stride(),
        *out.stride(),
        H, T_q, T_k,
        scale * RCP_LN2,
        triton.next_power_of_2(T_k),
    )
    # Triton's interpreter does not support bfloat16 arithmetic: it stores bf16 as uint16, its tl.dot
    # multiplies the bit patterns (triton-lang/triton#11584) and its float32 -> bf16 cast truncates.
    # So under the interpreter, bf16 values are carried in float32 and rounded to nearest-even by
    # hand: bf16 x bf16 products are exact in float32, so the dots are the same arithmetic as a bf16
    # tensor-core dot with float32 accumulation, and every rounding matches the GPU's.
    emulate_bf16 = _interpreting() and q.dtype == torch.bfloat16
    meta = dict(
        HEAD_DIM=D,
        ROT_DIM=rot_dim,
        HALF_BLOCK=max(16, triton.next_power_of_2(rot_dim // 2)),
        PASS_BLOCK=max(16, triton.next_power_of_2(D - rot_dim)),
        HAS_MASK=has_mask,
        DOT_PRECISION="ieee" if q.dtype == torch.float32 or emulate_bf16 else "tf32",
        EMULATE_BF16=emulate_bf16,
    )
    if q.is_cuda and not _interpreting():
        kernel = _autotuned_kernel()
        grid = lambda META: (triton.cdiv(T_q, META["BLOCK_M"]), B * H)  # noqa: E731
        kernel[grid](*args, **meta)
    else:
        block_m, block_n = _INTERPRETER_BLOCKS
        grid = (triton.cdiv(T_q, block_m), B * H)
        _rotary_attention_kernel[grid](*args, **meta, BLOCK_M=block_m, BLOCK_N=block_n)
    return out
