"""Bidirectional attention with CLVP's partial rotary embedding on q, k *and* v.

CLVP quirks (docs/model.md §2.1-2.2): the rotation is the half-split (GPT-NeoX) one over the first
``rotary_dim`` channels of every head (32 of 64 in the real model), the remaining channels pass
through, and *v is rotated too* (an x-transformers legacy) without being un-rotated afterwards.
The encoders mask padded keys only (queries at padded positions still produce output).

File layout: the rotary tables and the eager reference (fallback and oracle), then the Triton
kernels (the forward, which can also store each query row's log-sum-exp, and the FlashAttention-2
style backward: a delta preprocess, a dK/dV kernel over key blocks and a dQ kernel over query
blocks), then their launchers, then the autograd wrapper ``rotary_attention_autograd``.
"""
from __future__ import annotations

import functools
from typing import Optional

import torch
import torch.nn.functional as F

from ._attention_cpu import attention_fp32_scores, wants_fp32_scores
from ._checks import (FLOAT_DTYPES, check_head_dim, check_same_device, check_same_dtype, check_shape, check_tensor,
                      check_triton)
from ._triton import LOG2E, launch, tl, triton, triton_interpreter

ROTARY_BASE = 10000  # angles t * ROTARY_BASE^(-2i/R)


def rotary_inv_freq(rotary_dim: int, device=None) -> torch.Tensor:
    """The rotary frequencies ROTARY_BASE^(-2i/R), i < R/2, as transformers computes them: (R/2,)
    float32, computed on the CPU (the same bits on every device) and then moved to ``device``."""
    inv_freq = 1.0 / (ROTARY_BASE ** (torch.arange(0, rotary_dim, 2, dtype=torch.int64).float() / rotary_dim))
    return inv_freq if device is None else inv_freq.to(device)


def rotary_angles(positions, rotary_dim: int, device=None) -> torch.Tensor:
    """CLVP's rotary angles (docs/model.md §2.1): ``cat(freqs, freqs)`` with ``freqs[..., t, i] =
    positions[..., t] * 10000^(-2i/R)``, i < R/2.

    Arguments:
        positions: an int T (positions 0 .. T-1) or a tensor (..., T) of positions.
        rotary_dim: R, even.
        device: where the angles go (default: the positions' device; the CPU for an int).
    Returns:
        (..., T, R) float32. Bit-identical to ``ClvpRotaryPositionalEmbedding`` (clvp/modeling.py):
        the same inverse frequencies, computed on the CPU as that module's buffer is, then
        ``positions.float()[..., None] * inv_freq`` on the positions' device.
    """
    if not isinstance(positions, torch.Tensor):
        positions = torch.arange(int(positions), device=device)
    elif device is not None:
        positions = positions.to(device)
    freqs = positions.to(torch.float32)[..., None] * rotary_inv_freq(rotary_dim, positions.device)  # (..., T, R/2)
    return torch.cat((freqs, freqs), dim=-1)  # (..., T, R)


def rotary_tables(positions, rotary_dim: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The (cos, sin) tables of :func:`rotary_angles`, each (..., T, R) float32: (T, R) for an int T,
    the tables every op here takes; (B, 1, T, R) for per-row positions of shape (B, 1, T)."""
    emb = rotary_angles(positions, rotary_dim, device)
    return emb.cos(), emb.sin()


def apply_rotary_(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the first ``R = cos.shape[-1]`` channels of ``x`` (..., T, D) by angles (T, R), in place;
    returns ``x``. The channels past R are not touched.

    Half-split rotation with x1 = x[..., :R/2], x2 = x[..., R/2:R] and the tables' halves:
    ``[x1 | x2] -> [x1 * cos1 - x2 * sin1 | x2 * cos2 + x1 * sin2]``. Both halves are computed in
    float32 before either is written, then cast back to ``x.dtype`` (one rounding; float64 inputs,
    the tests' up-precision oracle, rotate in float64, so that oracle and its autograd are float64
    throughout, e.g. for ``torch.autograd.gradcheck``). Working on the halves as views needs no
    ``rotate_half`` copy (no concatenation, no negated copy) and leaves the pass-through channels
    where they are.
    """
    half = cos.shape[-1] // 2
    work = torch.promote_types(x.dtype, torch.float32)
    x1, x2 = x[..., :half], x[..., half:2 * half]  # views (..., T, R/2)
    w1, w2 = x1.to(work), x2.to(work)  # the same memory when x is already float32 / float64
    r1 = w1 * cos[..., :half] - w2 * sin[..., :half]
    r2 = w2 * cos[..., half:] + w1 * sin[..., half:]
    x1.copy_(r1)
    x2.copy_(r2)
    return x


def apply_rotary_ref(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """:func:`apply_rotary_` on a copy of ``x`` (same strides): x (..., T, D), cos, sin (T, R) or
    broadcastable (e.g. (B, 1, T, R) per-row tables) -> (..., T, D) in x's dtype; x is not modified."""
    return apply_rotary_(x.clone(), cos, sin)


def rotary_attention_ref(q, k, v, cos=None, sin=None, key_padding_mask=None, *, scale=None, in_place=False):
    """Eager reference: rotate q, k, v, then ``scaled_dot_product_attention`` (for bfloat16 CPU inputs
    without autograd, the same attention with float32 scores a batch row at a time, ``_attention_cpu``:
    torch's CPU SDPA is slow there, docs/speed.md §9).

    Arguments:
        q, k, v: (B, H, T, D), any strides, float32 / float16 / bfloat16.
        cos, sin: (T, R) float32 rotary tables (``cat(freqs, freqs)``), or None for no rotary.
        key_padding_mask: (B, T), nonzero = attend to that key; None attends everywhere.
            Every row must keep at least one key.
        scale: softmax scale, default ``D ** -0.5``.
        in_place: q, k and v are the caller's scratch (fresh projections nobody else reads, as in
            ``ClvpSelfAttention``): rotate them where they lie instead of in copies. Same numbers,
            bit for bit; saves a copy of q, k and v per call, the largest elementwise cost of an
            encoder layer on the CPU (docs/speed.md §9).
    Returns:
        (B, H, T, D) in q's dtype. With q, k, v viewed from (B, T, H, D) projections, SDPA returns
        the same (B, T, H, D) layout, so merging the heads back is a view.
    Memory traffic: reads q, k, v and writes out once each, plus the rotation: a read and write of
    the first R channels (and, without ``in_place``, a copy of q, k and v); the fused kernel saves those.
    """
    if cos is not None:
        rotate = apply_rotary_ if in_place else apply_rotary_ref
        q, k, v = (rotate(t, cos, sin) for t in (q, k, v))
    mask = None
    if key_padding_mask is not None:
        mask = key_padding_mask.bool()[:, None, None, :]  # (B, 1, 1, T)
    if wants_fp32_scores(q, k, v) and 4 * q.shape[-2] * k.shape[-2] <= ROW_SCORES_BYTES:
        return _attention_by_rows(q, k, v, mask, q.shape[-1] ** -0.5 if scale is None else scale)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)


# Largest float32 score block (heads x T x T) of one step of ``_attention_by_rows``: a few MB, so
# that a block's scores, softmax and product stay in the CPU's caches (longer sequences take SDPA).
ROW_SCORES_BYTES = 1 << 23


def _attention_by_rows(q, k, v, mask, scale: float) -> torch.Tensor:
    """The CPU's bfloat16 attention (``_attention_cpu``), a block of heads of one batch row at a time.

    q (B, H, Tq, D), k, v (B, H, T, D), mask (B, 1, 1, T) bool or None -> (B, H, Tq, D) in q's dtype,
    laid out (B, Tq, H, D) like SDPA's output for such views. About 1.5x faster than torch's CPU
    SDPA in bfloat16 at the encoders' shapes (16 x 12 heads x 250 x 64; docs/speed.md §9).
    """
    b, h, tq, d = q.shape
    t = k.shape[-2]
    out = torch.empty(b, tq, h, d, dtype=q.dtype, device=q.device).transpose(1, 2)  # (B, H, Tq, D) view
    step = max(1, ROW_SCORES_BYTES // (4 * tq * t))  # heads per block
    for i in range(b):
        bias = None
        if mask is not None:  # (1, T) additive: 0 where attended, -inf where masked
            bias = torch.zeros(1, t, device=q.device).masked_fill_(~mask[i, 0], float("-inf"))
        for j in range(0, h, step):
            attention_fp32_scores(q[i, j:j + step], k[i, j:j + step], v[i, j:j + step], bias, scale,
                                  out=out[i, j:j + step])  # (h', Tq, D)
    return out


# ----------------------------------------------------------------------------------------------
# Triton kernels
# ----------------------------------------------------------------------------------------------

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
def _load_table_halves(
    COS, SIN, stride_cos_t, stride_cos_r, stride_sin_t, stride_sin_r,  # (T, R) float32
    offs_t, T, offs_h, HALF: tl.constexpr,
):
    """The tables' halves at positions offs_t: cos[:, :h], cos[:, h:R], sin[:, :h], sin[:, h:R], each a
    (len(offs_t), len(offs_h)) float32 tile, zeros outside."""
    ok = (offs_t[:, None] < T) & (offs_h[None, :] < HALF)
    cos_ptrs = COS + offs_t[:, None] * stride_cos_t + offs_h[None, :] * stride_cos_r
    sin_ptrs = SIN + offs_t[:, None] * stride_sin_t + offs_h[None, :] * stride_sin_r
    cos1 = tl.load(cos_ptrs, mask=ok, other=0.0)
    cos2 = tl.load(cos_ptrs + HALF * stride_cos_r, mask=ok, other=0.0)
    sin1 = tl.load(sin_ptrs, mask=ok, other=0.0)
    sin2 = tl.load(sin_ptrs + HALF * stride_sin_r, mask=ok, other=0.0)
    return cos1, cos2, sin1, sin2


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
    x1 = _load_cols(X, stride_x_t, stride_x_d, offs_t, T, 0, offs_h, HALF, False).to(tl.float32)
    x2 = _load_cols(X, stride_x_t, stride_x_d, offs_t, T, HALF, offs_h, HALF, False).to(tl.float32)
    cos1, cos2, sin1, sin2 = _load_table_halves(
        COS, SIN, stride_cos_t, stride_cos_r, stride_sin_t, stride_sin_r, offs_t, T, offs_h, HALF
    )
    r1 = _to_input_dtype(x1 * cos1 - x2 * sin1, x_dtype, EMULATE_BF16)
    r2 = _to_input_dtype(x2 * cos2 + x1 * sin2, x_dtype, EMULATE_BF16)
    return r1, r2


@triton.jit
def _unrotate_halves(
    g1, g2,  # float32 gradients w.r.t. rot(x)[:, :h] and rot(x)[:, h:R] at positions offs_t
    COS, SIN, stride_cos_t, stride_cos_r, stride_sin_t, stride_sin_r,
    offs_t, T, offs_h, HALF: tl.constexpr,
):
    """The transpose of :func:`_load_rotated_halves`' rotation: gradients w.r.t. x1 and x2, in float32.

        dx1 =  g1 * cos[:, :h] + g2 * sin[:, h:R]
        dx2 = -g1 * sin[:, :h] + g2 * cos[:, h:R]
    (the reference's float32 -> input dtype cast has the identity as its gradient).
    """
    cos1, cos2, sin1, sin2 = _load_table_halves(
        COS, SIN, stride_cos_t, stride_cos_r, stride_sin_t, stride_sin_r, offs_t, T, offs_h, HALF
    )
    return g1 * cos1 + g2 * sin2, g2 * cos2 - g1 * sin1


@triton.jit
def _store_cols(X, stride_x_t, stride_x_d, offs_t, T, col0, offs_c, n_cols, x, EMULATE_BF16: tl.constexpr):
    """x[offs_t, col0 + offs_c] = float32 tile ``x`` rounded to X's dtype, for offs_t < T and offs_c < n_cols."""
    x_dtype = X.dtype.element_ty
    tl.store(
        X + offs_t[:, None] * stride_x_t + (col0 + offs_c)[None, :] * stride_x_d,
        _to_input_dtype(x, x_dtype, EMULATE_BF16).to(x_dtype),
        mask=(offs_t[:, None] < T) & (offs_c[None, :] < n_cols),
    )


@triton.jit
def _rotary_attention_kernel(
    Q, K, V, COS, SIN, MASK, OUT, LSE,
    stride_q_b, stride_q_h, stride_q_t, stride_q_d,  # Q: (B, H, T_Q, D), any strides
    stride_k_b, stride_k_h, stride_k_t, stride_k_d,  # K: (B, H, T_K, D)
    stride_v_b, stride_v_h, stride_v_t, stride_v_d,  # V: (B, H, T_K, D)
    stride_cos_t, stride_cos_r, stride_sin_t, stride_sin_r,  # COS, SIN: (T, ROT_DIM) float32
    stride_mask_b, stride_mask_t,  # MASK: (B, T_K), nonzero = keep
    stride_out_b, stride_out_h, stride_out_t, stride_out_d,  # OUT: (B, H, T_Q, D)
    # LSE: (B, H, T_Q) float32, contiguous (written only with STORE_LSE)
    H, T_Q, T_K,
    qk_scale,  # softmax scale * LOG2E: the softmax runs in base 2 (exp2 is one instruction)
    T_BUCKET,  # next_power_of_2(T_K): only an autotuning key
    HEAD_DIM: tl.constexpr,  # D
    ROT_DIM: tl.constexpr,  # R, even, 0 = no rotary
    HALF_BLOCK: tl.constexpr,  # R / 2 padded to a power of two >= 16 (tl.dot's minimum)
    PASS_BLOCK: tl.constexpr,  # D - R padded likewise
    HAS_MASK: tl.constexpr,
    DOT_PRECISION: tl.constexpr,  # float32 inputs: "ieee" (exact) or "tf32" (allow_tf32); 16-bit: ignored
    EMULATE_BF16: tl.constexpr,  # interpreter + bfloat16 only: bf16 values carried in float32 (see launcher)
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    STORE_LSE: tl.constexpr = False,  # also store every query row's log-sum-exp (for the backward)
):
    """Flash-attention forward for (BLOCK_M queries, one batch row, one head) with rotary applied on load.

    Every head's channels are handled as three column groups: the two rotary halves [0, R/2) and
    [R/2, R), and the pass-through [R, D). q . k sums three dots; p @ v fills three accumulators.
    With STORE_LSE, LSE[b, h, i] = m_i + log2(l_i) = log2(sum_j exp2(qk_scale * q~_i . k~_j)) over the
    kept keys: the log-sum-exp of the softmax's scores in base-2 units (natural units times LOG2E),
    from which the backward recomputes p = exp2(qk_scale * s - LSE) without a running max.
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
    if STORE_LSE:
        tl.store(LSE + pid_bh * T_Q + offs_m, m_i + tl.log2(l_i), mask=offs_m < T_Q)


@triton.jit
def _rotary_attention_bwd_preprocess(
    OUT, DO, DELTA,
    stride_out_b, stride_out_h, stride_out_t, stride_out_d,  # OUT: (B, H, T_Q, D), the forward's output
    stride_do_b, stride_do_h, stride_do_t, stride_do_d,  # DO: (B, H, T_Q, D), the output's gradient
    # DELTA: (B, H, T_Q) float32, contiguous
    H, T_Q,
    HEAD_DIM: tl.constexpr,
    D_BLOCK: tl.constexpr,  # D padded to a power of two >= 16
    BLOCK_M: tl.constexpr,
):
    """delta[b, h, i] = sum_d dO[i, d] * O[i, d] in float32 for BLOCK_M query rows of one (batch row, head).

    delta_i = sum_j P_ij dP_ij (since O_i = sum_j P_ij V~_j and dP_ij = dO_i . V~_j): the row term of the
    softmax's gradient dS = P * (dP - delta), computed once here rather than in every key block.
    """
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1).to(tl.int64)
    b = pid_bh // H
    h = pid_bh % H
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, D_BLOCK)
    o = _load_cols(OUT + b * stride_out_b + h * stride_out_h, stride_out_t, stride_out_d, offs_m, T_Q, 0, offs_d,
                   HEAD_DIM, False).to(tl.float32)
    do = _load_cols(DO + b * stride_do_b + h * stride_do_h, stride_do_t, stride_do_d, offs_m, T_Q, 0, offs_d,
                    HEAD_DIM, False).to(tl.float32)
    tl.store(DELTA + pid_bh * T_Q + offs_m, tl.sum(o * do, 1), mask=offs_m < T_Q)


@triton.jit
def _rotary_attention_bwd_dkdv_kernel(
    Q, K, V, COS, SIN, MASK, DO, LSE, DELTA, DK, DV,
    stride_q_b, stride_q_h, stride_q_t, stride_q_d,  # Q: (B, H, T_Q, D), any strides
    stride_k_b, stride_k_h, stride_k_t, stride_k_d,  # K: (B, H, T_K, D)
    stride_v_b, stride_v_h, stride_v_t, stride_v_d,  # V: (B, H, T_K, D)
    stride_cos_t, stride_cos_r, stride_sin_t, stride_sin_r,  # COS, SIN: (T, ROT_DIM) float32
    stride_mask_b, stride_mask_t,  # MASK: (B, T_K), nonzero = keep
    stride_do_b, stride_do_h, stride_do_t, stride_do_d,  # DO: (B, H, T_Q, D)
    # LSE, DELTA: (B, H, T_Q) float32, contiguous (LSE in base-2 units, as the forward stores it)
    stride_dk_b, stride_dk_h, stride_dk_t, stride_dk_d,  # DK: (B, H, T_K, D)
    stride_dv_b, stride_dv_h, stride_dv_t, stride_dv_d,  # DV: (B, H, T_K, D)
    H, T_Q, T_K,
    sm_scale,  # the softmax scale
    qk_scale,  # sm_scale * LOG2E, as in the forward
    HEAD_DIM: tl.constexpr,
    ROT_DIM: tl.constexpr,
    HALF_BLOCK: tl.constexpr,
    PASS_BLOCK: tl.constexpr,
    HAS_MASK: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    EMULATE_BF16: tl.constexpr,
    BLOCK_M: tl.constexpr,  # query rows per step of the loop
    BLOCK_N: tl.constexpr,  # keys per program
):
    """dk and dv for BLOCK_N keys of one (batch row, head): the keys stay put, the queries stream past.

    With K~, V~ (BLOCK_N keys) and, per query block, Q~, dO, LSE and delta, everything transposed so
    that the keys are the rows (no transposed accumulators):
        P^T  = exp2(qk_scale * K~ Q~^T - LSE)            masked keys: 0
        dV~ += P^T dO                                    (P^T rounded to the input dtype, as p in the forward)
        dP^T = V~ dO^T
        dS^T = P^T * (dP^T - delta)
        dK~ += dS^T Q~                                   (dS^T rounded to the input dtype)
    then dK~ *= sm_scale, and dk, dv are dK~, dV~ through the transposed rotation (by the keys' angles).
    Query rows past T_Q load q = dO = 0 and delta = 0, so they add nothing.
    """
    pid_n = tl.program_id(0)
    pid_bh = tl.program_id(1).to(tl.int64)
    b = pid_bh // H
    h = pid_bh % H
    Q_BH = Q + b * stride_q_b + h * stride_q_h
    K_BH = K + b * stride_k_b + h * stride_k_h
    V_BH = V + b * stride_v_b + h * stride_v_h
    DO_BH = DO + b * stride_do_b + h * stride_do_h
    LSE_BH = LSE + pid_bh * T_Q
    DELTA_BH = DELTA + pid_bh * T_Q
    in_dtype = Q.dtype.element_ty

    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # (BLOCK_N,) key positions
    offs_h = tl.arange(0, HALF_BLOCK)
    offs_p = tl.arange(0, PASS_BLOCK)
    keep = offs_n < T_K
    if HAS_MASK:
        kpm = tl.load(MASK + b * stride_mask_b + offs_n * stride_mask_t, mask=keep, other=0)
        keep = keep & (kpm != 0)
    if ROT_DIM > 0:  # rotated by the key positions' angles
        k1, k2 = _load_rotated_halves(
            K_BH, stride_k_t, stride_k_d, COS, SIN, stride_cos_t, stride_cos_r, stride_sin_t, stride_sin_r,
            offs_n, T_K, offs_h, ROT_DIM // 2, EMULATE_BF16,
        )  # 2 x (BLOCK_N, HALF_BLOCK)
        v1, v2 = _load_rotated_halves(
            V_BH, stride_v_t, stride_v_d, COS, SIN, stride_cos_t, stride_cos_r, stride_sin_t, stride_sin_r,
            offs_n, T_K, offs_h, ROT_DIM // 2, EMULATE_BF16,
        )
        dk1 = tl.zeros([BLOCK_N, HALF_BLOCK], dtype=tl.float32)
        dk2 = tl.zeros([BLOCK_N, HALF_BLOCK], dtype=tl.float32)
        dv1 = tl.zeros([BLOCK_N, HALF_BLOCK], dtype=tl.float32)
        dv2 = tl.zeros([BLOCK_N, HALF_BLOCK], dtype=tl.float32)
    if HEAD_DIM > ROT_DIM:
        kp = _load_cols(K_BH, stride_k_t, stride_k_d, offs_n, T_K, ROT_DIM, offs_p, HEAD_DIM - ROT_DIM, EMULATE_BF16)
        vp = _load_cols(V_BH, stride_v_t, stride_v_d, offs_n, T_K, ROT_DIM, offs_p, HEAD_DIM - ROT_DIM, EMULATE_BF16)
        dkp = tl.zeros([BLOCK_N, PASS_BLOCK], dtype=tl.float32)
        dvp = tl.zeros([BLOCK_N, PASS_BLOCK], dtype=tl.float32)

    for start_m in range(0, T_Q, BLOCK_M):
        offs_m = start_m + tl.arange(0, BLOCK_M)  # (BLOCK_M,) query positions
        m_ok = offs_m < T_Q
        s_t = tl.zeros([BLOCK_N, BLOCK_M], dtype=tl.float32)  # scores, transposed
        dp_t = tl.zeros([BLOCK_N, BLOCK_M], dtype=tl.float32)  # dP^T = V~ dO^T
        if ROT_DIM > 0:
            q1, q2 = _load_rotated_halves(
                Q_BH, stride_q_t, stride_q_d, COS, SIN, stride_cos_t, stride_cos_r, stride_sin_t, stride_sin_r,
                offs_m, T_Q, offs_h, ROT_DIM // 2, EMULATE_BF16,
            )  # 2 x (BLOCK_M, HALF_BLOCK)
            do1 = _load_cols(DO_BH, stride_do_t, stride_do_d, offs_m, T_Q, 0, offs_h, ROT_DIM // 2, EMULATE_BF16)
            do2 = _load_cols(DO_BH, stride_do_t, stride_do_d, offs_m, T_Q, ROT_DIM // 2, offs_h, ROT_DIM // 2,
                             EMULATE_BF16)
            s_t = tl.dot(k1, tl.trans(q1), s_t, input_precision=DOT_PRECISION)
            s_t = tl.dot(k2, tl.trans(q2), s_t, input_precision=DOT_PRECISION)
            dp_t = tl.dot(v1, tl.trans(do1), dp_t, input_precision=DOT_PRECISION)
            dp_t = tl.dot(v2, tl.trans(do2), dp_t, input_precision=DOT_PRECISION)
        if HEAD_DIM > ROT_DIM:
            qp = _load_cols(Q_BH, stride_q_t, stride_q_d, offs_m, T_Q, ROT_DIM, offs_p, HEAD_DIM - ROT_DIM,
                            EMULATE_BF16)  # (BLOCK_M, PASS_BLOCK)
            dop = _load_cols(DO_BH, stride_do_t, stride_do_d, offs_m, T_Q, ROT_DIM, offs_p, HEAD_DIM - ROT_DIM,
                             EMULATE_BF16)
            s_t = tl.dot(kp, tl.trans(qp), s_t, input_precision=DOT_PRECISION)
            dp_t = tl.dot(vp, tl.trans(dop), dp_t, input_precision=DOT_PRECISION)
        lse = tl.load(LSE_BH + offs_m, mask=m_ok, other=0.0)
        delta = tl.load(DELTA_BH + offs_m, mask=m_ok, other=0.0)
        p_t = tl.exp2(s_t * qk_scale - lse[None, :])  # (BLOCK_N, BLOCK_M), <= 1 on kept keys
        p_t = tl.where(keep[:, None], p_t, 0.0)
        ds_t = _to_input_dtype(p_t * (dp_t - delta[None, :]), in_dtype, EMULATE_BF16)
        p_t = _to_input_dtype(p_t, in_dtype, EMULATE_BF16)
        if ROT_DIM > 0:
            dv1 = tl.dot(p_t, do1, dv1, input_precision=DOT_PRECISION)
            dv2 = tl.dot(p_t, do2, dv2, input_precision=DOT_PRECISION)
            dk1 = tl.dot(ds_t, q1, dk1, input_precision=DOT_PRECISION)
            dk2 = tl.dot(ds_t, q2, dk2, input_precision=DOT_PRECISION)
        if HEAD_DIM > ROT_DIM:
            dvp = tl.dot(p_t, dop, dvp, input_precision=DOT_PRECISION)
            dkp = tl.dot(ds_t, qp, dkp, input_precision=DOT_PRECISION)

    # back through the rotation (keys' angles), rounded once to the input dtype
    DK_BH = DK + b * stride_dk_b + h * stride_dk_h
    DV_BH = DV + b * stride_dv_b + h * stride_dv_h
    if ROT_DIM > 0:
        g1, g2 = _unrotate_halves(dk1 * sm_scale, dk2 * sm_scale, COS, SIN, stride_cos_t, stride_cos_r,
                                  stride_sin_t, stride_sin_r, offs_n, T_K, offs_h, ROT_DIM // 2)
        _store_cols(DK_BH, stride_dk_t, stride_dk_d, offs_n, T_K, 0, offs_h, ROT_DIM // 2, g1, EMULATE_BF16)
        _store_cols(DK_BH, stride_dk_t, stride_dk_d, offs_n, T_K, ROT_DIM // 2, offs_h, ROT_DIM // 2, g2, EMULATE_BF16)
        g1, g2 = _unrotate_halves(dv1, dv2, COS, SIN, stride_cos_t, stride_cos_r,
                                  stride_sin_t, stride_sin_r, offs_n, T_K, offs_h, ROT_DIM // 2)
        _store_cols(DV_BH, stride_dv_t, stride_dv_d, offs_n, T_K, 0, offs_h, ROT_DIM // 2, g1, EMULATE_BF16)
        _store_cols(DV_BH, stride_dv_t, stride_dv_d, offs_n, T_K, ROT_DIM // 2, offs_h, ROT_DIM // 2, g2, EMULATE_BF16)
    if HEAD_DIM > ROT_DIM:
        _store_cols(DK_BH, stride_dk_t, stride_dk_d, offs_n, T_K, ROT_DIM, offs_p, HEAD_DIM - ROT_DIM,
                    dkp * sm_scale, EMULATE_BF16)
        _store_cols(DV_BH, stride_dv_t, stride_dv_d, offs_n, T_K, ROT_DIM, offs_p, HEAD_DIM - ROT_DIM, dvp,
                    EMULATE_BF16)


@triton.jit
def _rotary_attention_bwd_dq_kernel(
    Q, K, V, COS, SIN, MASK, DO, LSE, DELTA, DQ,
    stride_q_b, stride_q_h, stride_q_t, stride_q_d,  # Q: (B, H, T_Q, D), any strides
    stride_k_b, stride_k_h, stride_k_t, stride_k_d,  # K: (B, H, T_K, D)
    stride_v_b, stride_v_h, stride_v_t, stride_v_d,  # V: (B, H, T_K, D)
    stride_cos_t, stride_cos_r, stride_sin_t, stride_sin_r,  # COS, SIN: (T, ROT_DIM) float32
    stride_mask_b, stride_mask_t,  # MASK: (B, T_K), nonzero = keep
    stride_do_b, stride_do_h, stride_do_t, stride_do_d,  # DO: (B, H, T_Q, D)
    # LSE, DELTA: (B, H, T_Q) float32, contiguous (LSE in base-2 units, as the forward stores it)
    stride_dq_b, stride_dq_h, stride_dq_t, stride_dq_d,  # DQ: (B, H, T_Q, D)
    H, T_Q, T_K,
    sm_scale,
    qk_scale,
    HEAD_DIM: tl.constexpr,
    ROT_DIM: tl.constexpr,
    HALF_BLOCK: tl.constexpr,
    PASS_BLOCK: tl.constexpr,
    HAS_MASK: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    EMULATE_BF16: tl.constexpr,
    BLOCK_M: tl.constexpr,  # query rows per program
    BLOCK_N: tl.constexpr,  # keys per step of the loop
):
    """dq for BLOCK_M query rows of one (batch row, head): the queries stay put, the keys stream past.

        P    = exp2(qk_scale * Q~ K~^T - LSE)            masked keys: 0
        dP   = dO V~^T
        dS   = P * (dP - delta)
        dQ~ += dS K~                                     (dS rounded to the input dtype)
    then dQ~ *= sm_scale and dq is dQ~ through the transposed rotation (by the queries' angles).
    """
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1).to(tl.int64)
    b = pid_bh // H
    h = pid_bh % H
    Q_BH = Q + b * stride_q_b + h * stride_q_h
    K_BH = K + b * stride_k_b + h * stride_k_h
    V_BH = V + b * stride_v_b + h * stride_v_h
    DO_BH = DO + b * stride_do_b + h * stride_do_h
    in_dtype = Q.dtype.element_ty

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # (BLOCK_M,) query positions
    offs_h = tl.arange(0, HALF_BLOCK)
    offs_p = tl.arange(0, PASS_BLOCK)
    m_ok = offs_m < T_Q
    if ROT_DIM > 0:
        q1, q2 = _load_rotated_halves(
            Q_BH, stride_q_t, stride_q_d, COS, SIN, stride_cos_t, stride_cos_r, stride_sin_t, stride_sin_r,
            offs_m, T_Q, offs_h, ROT_DIM // 2, EMULATE_BF16,
        )  # 2 x (BLOCK_M, HALF_BLOCK)
        do1 = _load_cols(DO_BH, stride_do_t, stride_do_d, offs_m, T_Q, 0, offs_h, ROT_DIM // 2, EMULATE_BF16)
        do2 = _load_cols(DO_BH, stride_do_t, stride_do_d, offs_m, T_Q, ROT_DIM // 2, offs_h, ROT_DIM // 2,
                         EMULATE_BF16)
        dq1 = tl.zeros([BLOCK_M, HALF_BLOCK], dtype=tl.float32)
        dq2 = tl.zeros([BLOCK_M, HALF_BLOCK], dtype=tl.float32)
    if HEAD_DIM > ROT_DIM:
        qp = _load_cols(Q_BH, stride_q_t, stride_q_d, offs_m, T_Q, ROT_DIM, offs_p, HEAD_DIM - ROT_DIM, EMULATE_BF16)
        dop = _load_cols(DO_BH, stride_do_t, stride_do_d, offs_m, T_Q, ROT_DIM, offs_p, HEAD_DIM - ROT_DIM,
                         EMULATE_BF16)
        dqp = tl.zeros([BLOCK_M, PASS_BLOCK], dtype=tl.float32)
    lse = tl.load(LSE + pid_bh * T_Q + offs_m, mask=m_ok, other=0.0)
    delta = tl.load(DELTA + pid_bh * T_Q + offs_m, mask=m_ok, other=0.0)

    for start_n in range(0, T_K, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)  # (BLOCK_N,) key positions
        keep = offs_n < T_K
        if HAS_MASK:
            kpm = tl.load(MASK + b * stride_mask_b + offs_n * stride_mask_t, mask=keep, other=0)
            keep = keep & (kpm != 0)
        s = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
        dp = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
        if ROT_DIM > 0:
            k1, k2 = _load_rotated_halves(
                K_BH, stride_k_t, stride_k_d, COS, SIN, stride_cos_t, stride_cos_r, stride_sin_t, stride_sin_r,
                offs_n, T_K, offs_h, ROT_DIM // 2, EMULATE_BF16,
            )  # 2 x (BLOCK_N, HALF_BLOCK)
            v1, v2 = _load_rotated_halves(
                V_BH, stride_v_t, stride_v_d, COS, SIN, stride_cos_t, stride_cos_r, stride_sin_t, stride_sin_r,
                offs_n, T_K, offs_h, ROT_DIM // 2, EMULATE_BF16,
            )
            s = tl.dot(q1, tl.trans(k1), s, input_precision=DOT_PRECISION)
            s = tl.dot(q2, tl.trans(k2), s, input_precision=DOT_PRECISION)
            dp = tl.dot(do1, tl.trans(v1), dp, input_precision=DOT_PRECISION)
            dp = tl.dot(do2, tl.trans(v2), dp, input_precision=DOT_PRECISION)
        if HEAD_DIM > ROT_DIM:
            kp = _load_cols(K_BH, stride_k_t, stride_k_d, offs_n, T_K, ROT_DIM, offs_p, HEAD_DIM - ROT_DIM,
                            EMULATE_BF16)  # (BLOCK_N, PASS_BLOCK)
            vp = _load_cols(V_BH, stride_v_t, stride_v_d, offs_n, T_K, ROT_DIM, offs_p, HEAD_DIM - ROT_DIM,
                            EMULATE_BF16)
            s = tl.dot(qp, tl.trans(kp), s, input_precision=DOT_PRECISION)
            dp = tl.dot(dop, tl.trans(vp), dp, input_precision=DOT_PRECISION)
        p = tl.exp2(s * qk_scale - lse[:, None])  # (BLOCK_M, BLOCK_N)
        p = tl.where(keep[None, :], p, 0.0)
        ds = _to_input_dtype(p * (dp - delta[:, None]), in_dtype, EMULATE_BF16)
        if ROT_DIM > 0:
            dq1 = tl.dot(ds, k1, dq1, input_precision=DOT_PRECISION)
            dq2 = tl.dot(ds, k2, dq2, input_precision=DOT_PRECISION)
        if HEAD_DIM > ROT_DIM:
            dqp = tl.dot(ds, kp, dqp, input_precision=DOT_PRECISION)

    DQ_BH = DQ + b * stride_dq_b + h * stride_dq_h
    if ROT_DIM > 0:  # back through the rotation (queries' angles)
        g1, g2 = _unrotate_halves(dq1 * sm_scale, dq2 * sm_scale, COS, SIN, stride_cos_t, stride_cos_r,
                                  stride_sin_t, stride_sin_r, offs_m, T_Q, offs_h, ROT_DIM // 2)
        _store_cols(DQ_BH, stride_dq_t, stride_dq_d, offs_m, T_Q, 0, offs_h, ROT_DIM // 2, g1, EMULATE_BF16)
        _store_cols(DQ_BH, stride_dq_t, stride_dq_d, offs_m, T_Q, ROT_DIM // 2, offs_h, ROT_DIM // 2, g2, EMULATE_BF16)
    if HEAD_DIM > ROT_DIM:
        _store_cols(DQ_BH, stride_dq_t, stride_dq_d, offs_m, T_Q, ROT_DIM, offs_p, HEAD_DIM - ROT_DIM,
                    dqp * sm_scale, EMULATE_BF16)


# Launch configurations, per kind of dot: "16-bit" (float16/bfloat16 inputs on tensor cores), "tf32"
# (float32 inputs with TF32 dots, what the dispatch runs for float32 on CUDA when torch allows TF32)
# and "ieee" (float32 with exact float32 dots: FMA loops, no tensor cores; only CLVP_KERNELS=triton
# runs it, kernels/__init__.py). Every entry is checked by compiling it for sm_90
# (bench/compile_sm90.py, tests/test_compile_sm90.py; figures in bench/results/compile_sm90.md):
# it must fit sm_90's 227 KiB of shared memory per block (a config over it would fail at launch),
# and the 16-bit and TF32 ones must not spill registers. Not yet timed on a GPU.
# In Triton's interpreter (CPU tests) one fixed small config keeps the simulation fast while still
# crossing several query and key blocks at the test lengths.
_CUDA_CONFIGS = {  # dot kind -> forward autotune list of (BLOCK_M, BLOCK_N, num_warps, num_stages)
    # 64-128 query rows per program give each K/V tile enough tensor-core work while
    # B * H * cdiv(T, BLOCK_M) still fills 132 SMs at B = 16, T = 350; 3-4 stages pipeline the K/V loads.
    # (128, 64, 4 warps) compiled to exactly 255 registers, the ceiling, and 128 x 128 at 4 warps spills:
    # neither is listed.
    "16-bit": (
        (128, 64, 8, 3),
        (128, 128, 8, 3),
        (128, 32, 4, 4),
        (64, 64, 4, 3),
        (64, 64, 4, 4),
        (64, 128, 4, 3),
        (64, 32, 4, 4),
    ),
    # float32 tiles take twice the shared memory and registers of 16-bit ones: 128 x 128 spills even at
    # 8 warps and 64 x 128 at 3 stages needs 256 KiB, over the limit; 8 warps for the 64-row tiles.
    "tf32": (
        (128, 64, 8, 3),
        (128, 32, 8, 3),
        (64, 64, 8, 3),
        (64, 64, 4, 2),
        (64, 32, 4, 3),
    ),
    # exact float32 dots are FMA loops holding whole tiles in registers: 64 x 64 spills kilobytes at
    # any warp count, so small tiles at 8 warps (4 warps spill from 64 x 32 up).
    "ieee": (
        (64, 32, 8, 2),
        (32, 64, 8, 2),
        (32, 32, 4, 2),
    ),
}
_INTERPRETER_BLOCKS = (32, 16)  # (BLOCK_M, BLOCK_N)
MAX_HEAD_DIM = 256


def _dot_kind(dtype: torch.dtype, allow_tf32: bool) -> str:
    """The key of the config tables for inputs of ``dtype``."""
    if dtype != torch.float32:
        return "16-bit"
    return "tf32" if allow_tf32 else "ieee"


def _dot_precision(dtype: torch.dtype, emulate_bf16: bool, allow_tf32: bool) -> str:
    """tl.dot's input_precision: "ieee" for float32 unless TF32 is allowed (and for the interpreter's
    bfloat16 emulation, whose values are float32 carriers of exact bfloat16 products); "tf32" otherwise
    (ignored for 16-bit inputs, which multiply on tensor cores in their own dtype)."""
    if emulate_bf16 or (dtype == torch.float32 and not allow_tf32):
        return "ieee"
    return "tf32"


def _cuda_configs(dtype: torch.dtype, allow_tf32: bool) -> tuple:
    """The forward's CUDA autotune list for inputs of ``dtype``."""
    return _CUDA_CONFIGS[_dot_kind(dtype, allow_tf32)]


@functools.cache
def _autotuned_kernel(kind: str):
    configs = [
        triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=s) for bm, bn, w, s in _CUDA_CONFIGS[kind]
    ]
    return triton.autotune(configs=configs, key=["T_BUCKET", "HEAD_DIM", "ROT_DIM", "HAS_MASK"])(
        _rotary_attention_kernel
    )


# The backward's CUDA launch: one fixed config per kernel, (BLOCK_M, BLOCK_N, num_warps, num_stages),
# by dot kind and head dim; BLOCK_N keys per dK/dV program (BLOCK_M the query step of its loop),
# BLOCK_M queries per dQ program (BLOCK_N the key step). Not timed: no GPU was available. Chosen from
# sm_90 compiles without a GPU (bench/compile_sm90.py for D = 64; larger head dims by hand, as below),
# as the largest tiles that compile without register spills:
#   bf16/fp16, D = 64, R = 32, 64 x 64, 4 warps, 2 stages: 252 / 190 registers, 0 spills, 66 / 64 KB
#     shared memory (3 stages: 99 KB, no gain in registers; 8 warps: 178 / 142 registers);
#   bf16, D = 128, R = 64, 64 x 64, 8 warps: 254 / 212 registers, 0 spills, 131 / 128 KB (4 warps spill);
#   bf16, D = 256: dkdv 64-query steps x 32 keys, 8 warps, 1 stage (R = 0: 170 registers, no spills;
#     R = 64: 128 B spilled), dq 32 x 32, 4 warps, 2 stages (no spills, 68-100 KB);
#   float32 with TF32 dots, D = 64: dkdv 64 x 64 at 8 warps (222 registers; 4 warps spill), dq 64 x 32
#     at 8 warps (165 registers; 64 x 64 needs 232);
#   float32 with IEEE dots (FMA, not tensor cores) takes several times the registers: 64 x 64 spills
#     kilobytes even at D = 64, so smaller tiles (D = 64: 138 / 156 registers, no spills).
# All stay under sm_90's 227 KB of shared memory per block.
_BWD_PREPROCESS_ROWS = 32  # query rows per delta program (D up to 256: 32 x 256 float32 tiles)
_BWD_CUDA_CONFIGS = {  # dot kind -> ((max head dim, dkdv config, dq config), ...)
    "16-bit": (
        (64, (64, 64, 4, 2), (64, 64, 4, 2)),
        (128, (64, 64, 8, 2), (64, 64, 8, 2)),
        (256, (64, 32, 8, 1), (32, 32, 4, 2)),
    ),
    "tf32": (  # D > 64: the IEEE tiles (not compiled with TF32; the real model's D is 64)
        (64, (64, 64, 8, 2), (64, 32, 8, 2)),
        (128, (32, 16, 4, 2), (16, 32, 4, 2)),
        (256, (16, 16, 4, 2), (16, 16, 4, 2)),
    ),
    "ieee": (
        (64, (64, 32, 8, 2), (64, 32, 8, 2)),
        (128, (32, 16, 4, 2), (16, 32, 4, 2)),
        (256, (16, 16, 4, 2), (16, 16, 4, 2)),
    ),
}


def _bwd_cuda_config(head_dim: int, dtype: torch.dtype, allow_tf32: bool):
    """(dkdv config, dq config) for head dim D and the inputs' dot kind, each (BLOCK_M, BLOCK_N, num_warps,
    num_stages)."""
    for max_d, dkdv, dq in _BWD_CUDA_CONFIGS[_dot_kind(dtype, allow_tf32)]:
        if head_dim <= max_d:
            return dkdv, dq
    raise AssertionError(head_dim)  # the launcher checks D <= MAX_HEAD_DIM


# ----------------------------------------------------------------------------------------------
# Launchers
# ----------------------------------------------------------------------------------------------


def _check_inputs(op: str, q, k, v, cos, sin, key_padding_mask) -> int:
    """The shared checks of the forward and backward launchers; returns the rotary width R (0 = none)."""
    check_triton(op, "kernels.rotary_attention_ref", q)
    for name, t in (("q", q), ("k", k), ("v", v)):
        check_tensor(t, name, dims=("B", "H", "T", "D"), dtypes=FLOAT_DTYPES, op=op)
    check_same_dtype(op, q=q, k=k, v=v)
    check_same_device(op, q=q, k=k, v=v, cos=cos, sin=sin, key_padding_mask=key_padding_mask)
    B, H, T_q, D = q.shape
    T_k = k.shape[2]
    if k.shape != v.shape or k.shape[:2] != (B, H) or k.shape[3] != D:
        raise ValueError(
            f"{op}: k and v must be (B, H, T_k, D) = ({B}, {H}, T_k, {D}) with q (B, H, T_q, D) = {tuple(q.shape)}; "
            f"got k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    check_head_dim(D, MAX_HEAD_DIM, op=op)
    if (cos is None) != (sin is None):
        raise ValueError(f"{op}: cos and sin must be given together (or both None for no rotary)")
    rot_dim = 0
    if cos is not None:
        check_tensor(cos, "cos", dims=("T", "R"), dtypes=(torch.float32,), op=op)
        check_shape(sin, "sin", tuple(cos.shape), doc="cos's shape (T, R)", op=op)
        check_tensor(sin, "sin", dtypes=(torch.float32,), op=op)
        rot_dim = cos.shape[1]
        if rot_dim % 2 or rot_dim > D:
            raise ValueError(f"{op}: rotary width R={rot_dim} must be even and at most the head dim D={D}")
        if cos.shape[0] != T_q or T_k != T_q:
            raise ValueError(
                f"{op}: with rotary, cos/sin rows ({cos.shape[0]}) must equal the query and key lengths ({T_q}, {T_k})"
            )
    if key_padding_mask is not None:
        check_shape(key_padding_mask, "key_padding_mask", (B, T_k), doc="(B, T_k)", op=op)
        if key_padding_mask.is_complex():
            raise TypeError(f"{op}: key_padding_mask must be bool, integer or float, not complex")
    if B * H * T_q > 0:  # (an empty output returns before the launch)
        if T_k == 0:
            raise ValueError(f"{op}: T_k = 0: every query row must keep at least one key")
        if B * H > 65535:
            raise ValueError(f"{op}: B * H = {B * H} exceeds the CUDA grid's second dimension (65535); split the batch")
    return rot_dim


def _kernel_operands(q, cos, sin, key_padding_mask, rot_dim: int):
    """(cos, sin, mask) as the kernels take them: never-read placeholders for absent ones, a bool
    mask viewed as uint8 (no copy)."""
    if rot_dim == 0:
        cos = sin = q.new_empty((1, 1), dtype=torch.float32)  # never read: ROT_DIM = 0 compiles the rotation out
    if key_padding_mask is None:
        mask = q.new_empty((1, 1), dtype=torch.uint8)  # never read
    else:
        mask = key_padding_mask.view(torch.uint8) if key_padding_mask.dtype == torch.bool else key_padding_mask
    return cos, sin, mask


def _kernel_meta(head_dim: int, dtype: torch.dtype, rot_dim: int, has_mask: bool, emulate_bf16: bool,
                 allow_tf32: bool) -> dict:
    """The constexprs the forward and backward kernels share (also what bench/compile_sm90.py compiles)."""
    return dict(
        HEAD_DIM=head_dim,
        ROT_DIM=rot_dim,
        HALF_BLOCK=max(16, triton.next_power_of_2(rot_dim // 2)),
        PASS_BLOCK=max(16, triton.next_power_of_2(head_dim - rot_dim)),
        HAS_MASK=has_mask,
        DOT_PRECISION=_dot_precision(dtype, emulate_bf16, allow_tf32),
        EMULATE_BF16=emulate_bf16,
    )


def rotary_attention(q, k, v, cos=None, sin=None, key_padding_mask=None, *, scale=None, return_lse=False,
                     allow_tf32=False):
    """Fused bidirectional attention with CLVP's partial rotary on q, k and v (Triton).

    Same signature and semantics as :func:`rotary_attention_ref`.

    Arguments:
        q: (B, H, T_q, D); k, v: (B, H, T_k, D). Any strides (the model passes permuted views of
            (B, T, H, D) projections; they are read in place, never copied). One dtype for all three:
            float32, float16 or bfloat16. D from 1 to 256 (designed for 32..128): the kernel works on
            three channel groups, [0, R/2), [R/2, R) and [R, D), each padded to a power of two >= 16
            (tl.dot's minimum) with masked loads and stores, so D need not be a power of two.
        cos, sin: (T, R) float32 tables (``cat(freqs, freqs)``, see :func:`rotary_tables`), R even,
            0 <= R <= D, T = T_q = T_k; both None for no rotary (the conditioning encoder). The first
            R channels of every head of q, k and v are rotated (half-split) by their own position's
            angles; the rest pass through. (Per-row (B, 1, T, R) tables are handled by the dispatch,
            ``kernels.rotary_attention``.)
        key_padding_mask: (B, T_k), nonzero = attend to that key (bool, integer or float); None
            attends everywhere. Every row must keep at least one key (not checked: it would cost a sync).
        scale: softmax scale, default ``D ** -0.5``.
        return_lse: also return every query row's log-sum-exp, what the backward needs (the output
            is bit-identical either way).
        allow_tf32: float32 inputs multiply with TF32 tensor-core dots (10-bit mantissas, float32
            accumulation) instead of exact float32 FMA loops; ignored for 16-bit inputs. The dispatch
            (kernels/__init__.py) passes torch's float32 matmul setting.
    Returns:
        (B, H, T_q, D) in q's dtype: a permuted view of a contiguous (B, T_q, H, D) buffer, so
        ``out.transpose(1, 2).reshape(B, T_q, H * D)`` is free. With ``return_lse``, ``(out, lse)``:
        lse (B, H, T_q) float32, contiguous, in base-2 units: ``lse[b, h, i] =
        log2(sum_j exp(scale * q~_i . k~_j))`` over the kept keys j (q~, k~ the rotated q, k rounded to
        the input dtype), i.e. natural log-sum-exp times log2(e).
    Numerics: rotation in float32 rounded back to the input dtype (as the reference), scores and
    the online softmax in float32, p rounded to the input dtype for the p @ v product; float32
    inputs use IEEE float32 dot products unless ``allow_tf32``.
    """
    op = "rotary_attention"
    rot_dim = _check_inputs(op, q, k, v, cos, sin, key_padding_mask)
    B, H, T_q, D = q.shape
    T_k = k.shape[2]

    out = torch.empty((B, T_q, H, D), dtype=q.dtype, device=q.device).permute(0, 2, 1, 3)  # (B, H, T_q, D) view
    lse = torch.empty((B, H, T_q), dtype=torch.float32, device=q.device) if return_lse else None
    if out.numel() == 0:
        return (out, lse) if return_lse else out
    cos, sin, mask = _kernel_operands(q, cos, sin, key_padding_mask, rot_dim)
    scale = D**-0.5 if scale is None else float(scale)
    interpreting = triton_interpreter()
    # Triton's interpreter does not support bfloat16 arithmetic: it stores bf16 as uint16, its tl.dot
    # multiplies the bit patterns (triton-lang/triton#11584) and its float32 -> bf16 cast truncates.
    # So under the interpreter, bf16 values are carried in float32 and rounded to nearest-even by
    # hand: bf16 x bf16 products are exact in float32, so the dots are the same arithmetic as a bf16
    # tensor-core dot with float32 accumulation, and every rounding matches the GPU's.
    emulate_bf16 = interpreting and q.dtype == torch.bfloat16
    args = (
        q, k, v, cos, sin, mask, out,
        lse if return_lse else cos,  # LSE: never written without STORE_LSE
        *q.stride(), *k.stride(), *v.stride(),
        *cos.stride(), *sin.stride(),
        *mask.stride(),
        *out.stride(),
        H, T_q, T_k,
        scale * LOG2E,
        triton.next_power_of_2(T_k),
    )
    meta = _kernel_meta(D, q.dtype, rot_dim, key_padding_mask is not None, emulate_bf16, bool(allow_tf32))
    meta["STORE_LSE"] = return_lse

    if q.is_cuda and not interpreting:
        grid = lambda META: (triton.cdiv(T_q, META["BLOCK_M"]), B * H)  # noqa: E731
        launch(_autotuned_kernel(_dot_kind(q.dtype, bool(allow_tf32))))[grid](*args, **meta)
    else:
        block_m, block_n = _INTERPRETER_BLOCKS
        grid = (triton.cdiv(T_q, block_m), B * H)
        launch(_rotary_attention_kernel)[grid](*args, **meta, BLOCK_M=block_m, BLOCK_N=block_n)
    return (out, lse) if return_lse else out


def rotary_attention_backward(grad_out, q, k, v, out, lse, cos=None, sin=None, key_padding_mask=None, *,
                              scale=None, allow_tf32=False):
    """Gradients of :func:`rotary_attention` w.r.t. q, k and v (Triton, FlashAttention-2 style).

    Arguments:
        grad_out: (B, H, T_q, D), the gradient of ``out``; any strides, q's dtype.
        q, k, v, cos, sin, key_padding_mask, scale, allow_tf32: as given to the forward (same rules, same
            checks).
        out: (B, H, T_q, D), the forward's output; any strides, q's dtype.
        lse: (B, H, T_q) float32, the forward's ``return_lse`` log-sum-exp (base 2).
    Returns:
        (dq, dk, dv): (B, H, T_q, D), (B, H, T_k, D), (B, H, T_k, D) in q's dtype, each a permuted view
        of a contiguous (B, T, H, D) buffer (the model's projection layout, as the forward's output).
    Work: three launches, no atomics. (1) delta = rowsum(dO * O) in float32, (B, H, T_q), grid
    (cdiv(T_q, 32), B * H). (2) dk, dv: grid (cdiv(T_k, BLOCK_N), B * H), each program keeps BLOCK_N
    keys and loops over all query blocks. (3) dq: grid (cdiv(T_q, BLOCK_M), B * H), each program keeps
    BLOCK_M queries and loops over all key blocks. Both recompute the probabilities from the saved
    log-sum-exp and the rotated q, k, v (rotation applied on load, as in the forward); the
    gradients w.r.t. the rotated tensors go back through the transposed rotation in float32 and
    are rounded once to the input dtype. Masked keys get zero probability, so zero dk and dv.
    Numerics: scores, probabilities, dP and dS in float32; P and dS rounded to the input dtype for
    their tensor-core products (float32 inputs: IEEE float32 dots, or TF32 with ``allow_tf32``),
    accumulation in float32.
    """
    op = "rotary_attention_backward"
    rot_dim = _check_inputs(op, q, k, v, cos, sin, key_padding_mask)
    B, H, T_q, D = q.shape
    T_k = k.shape[2]
    check_tensor(grad_out, "grad_out", dims=("B", "H", "T_q", "D"), op=op)
    check_shape(grad_out, "grad_out", tuple(q.shape), doc="q's shape (B, H, T_q, D)", op=op)
    check_tensor(out, "out", dims=("B", "H", "T_q", "D"), op=op)
    check_shape(out, "out", tuple(q.shape), doc="q's shape (B, H, T_q, D)", op=op)
    check_same_dtype(op, q=q, grad_out=grad_out, out=out)
    check_tensor(lse, "lse", dims=("B", "H", "T_q"), dtypes=(torch.float32,), op=op)
    check_shape(lse, "lse", (B, H, T_q), doc="(B, H, T_q)", op=op)
    check_same_device(op, q=q, grad_out=grad_out, out=out, lse=lse)

    def bthd(t):  # (B, H, t, D) view of a contiguous (B, t, H, D) buffer
        return torch.empty((B, t, H, D), dtype=q.dtype, device=q.device).permute(0, 2, 1, 3)

    dq, dk, dv = bthd(T_q), bthd(T_k), bthd(T_k)
    if dq.numel() == 0 or dk.numel() == 0:  # no query or no key: nothing flows back
        return dq.zero_(), dk.zero_(), dv.zero_()
    cos, sin, mask = _kernel_operands(q, cos, sin, key_padding_mask, rot_dim)
    lse = lse.contiguous()  # (B * H, T_q) rows, as the forward writes it: no copy
    delta = torch.empty((B, H, T_q), dtype=torch.float32, device=q.device)
    scale = D**-0.5 if scale is None else float(scale)
    interpreting = triton_interpreter()
    emulate_bf16 = interpreting and q.dtype == torch.bfloat16  # see rotary_attention
    meta = _kernel_meta(D, q.dtype, rot_dim, key_padding_mask is not None, emulate_bf16, bool(allow_tf32))
    common = (
        q, k, v, cos, sin, mask, grad_out, lse, delta,
    )
    strides = (
        *q.stride(), *k.stride(), *v.stride(),
        *cos.stride(), *sin.stride(),
        *mask.stride(),
        *grad_out.stride(),
    )
    sizes = (H, T_q, T_k, scale, scale * LOG2E)
    if q.is_cuda and not interpreting:
        (dkdv_m, dkdv_n, dkdv_w, dkdv_s), (dq_m, dq_n, dq_w, dq_s) = _bwd_cuda_config(D, q.dtype, bool(allow_tf32))
        pre_m, cuda = _BWD_PREPROCESS_ROWS, dict(num_warps=4)
        dkdv_cuda, dq_cuda = dict(num_warps=dkdv_w, num_stages=dkdv_s), dict(num_warps=dq_w, num_stages=dq_s)
    else:  # the interpreter: the forward's small fixed blocks
        dq_m, dq_n = dkdv_m, dkdv_n = _INTERPRETER_BLOCKS
        pre_m = _INTERPRETER_BLOCKS[0]
        cuda = dkdv_cuda = dq_cuda = {}

    launch(_rotary_attention_bwd_preprocess)[(triton.cdiv(T_q, pre_m), B * H)](
        out, grad_out, delta, *out.stride(), *grad_out.stride(), H, T_q,
        HEAD_DIM=D, D_BLOCK=max(16, triton.next_power_of_2(D)), BLOCK_M=pre_m, **cuda,
    )
    launch(_rotary_attention_bwd_dkdv_kernel)[(triton.cdiv(T_k, dkdv_n), B * H)](
        *common, dk, dv, *strides, *dk.stride(), *dv.stride(), *sizes,
        **meta, BLOCK_M=dkdv_m, BLOCK_N=dkdv_n, **dkdv_cuda,
    )
    launch(_rotary_attention_bwd_dq_kernel)[(triton.cdiv(T_q, dq_m), B * H)](
        *common, dq, *strides, *dq.stride(), *sizes,
        **meta, BLOCK_M=dq_m, BLOCK_N=dq_n, **dq_cuda,
    )
    return dq, dk, dv


# The launchers registered as torch.library ops (``kernels.rotary_attention`` calls them on the
# Triton path): torch.compile and CUDA graphs trace each as one node with the fake implementations
# below, and the AOT pass (inductor) sees the kernels through ``launch``. ``clvp::rotary_attention``
# is the inference op; ``clvp::rotary_attention_lse`` also returns the log-sum-exp and carries the
# autograd (registered below), whose backward is ``clvp::rotary_attention_backward``.

def _bthd_empty(q, t: int) -> torch.Tensor:
    """A (B, H, t, D) view of a contiguous (B, t, H, D) buffer: the layout the launchers return."""
    B, H, _, D = q.shape
    return q.new_empty((B, t, H, D)).permute(0, 2, 1, 3)


@torch.library.triton_op("clvp::rotary_attention", mutates_args=())
def rotary_attention_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cos: Optional[torch.Tensor],
                        sin: Optional[torch.Tensor], key_padding_mask: Optional[torch.Tensor],
                        scale: Optional[float] = None, allow_tf32: bool = False) -> torch.Tensor:
    """:func:`rotary_attention` as a torch.library op: q (B, H, T_q, D), k, v (B, H, T_k, D) -> (B, H, T_q, D)."""
    return rotary_attention(q, k, v, cos, sin, key_padding_mask, scale=scale, allow_tf32=allow_tf32)


@rotary_attention_op.register_fake
def _rotary_attention_fake(q, k, v, cos, sin, key_padding_mask, scale=None, allow_tf32=False):
    return _bthd_empty(q, q.shape[2])  # (B, H, T_q, D)


@torch.library.triton_op("clvp::rotary_attention_lse", mutates_args=())
def rotary_attention_lse_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cos: Optional[torch.Tensor],
                            sin: Optional[torch.Tensor], key_padding_mask: Optional[torch.Tensor],
                            scale: Optional[float] = None,
                            allow_tf32: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`rotary_attention` with ``return_lse=True``: (out (B, H, T_q, D), lse (B, H, T_q) float32)."""
    return rotary_attention(q, k, v, cos, sin, key_padding_mask, scale=scale, return_lse=True, allow_tf32=allow_tf32)


@rotary_attention_lse_op.register_fake
def _rotary_attention_lse_fake(q, k, v, cos, sin, key_padding_mask, scale=None, allow_tf32=False):
    return _bthd_empty(q, q.shape[2]), q.new_empty(q.shape[:3], dtype=torch.float32)  # (B, H, T_q, D), (B, H, T_q)


@torch.library.triton_op("clvp::rotary_attention_backward", mutates_args=())
def rotary_attention_backward_op(grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                 out: torch.Tensor, lse: torch.Tensor, cos: Optional[torch.Tensor],
                                 sin: Optional[torch.Tensor], key_padding_mask: Optional[torch.Tensor],
                                 scale: Optional[float] = None,
                                 allow_tf32: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`rotary_attention_backward` as a torch.library op: (dq (B, H, T_q, D), dk, dv (B, H, T_k, D))."""
    return rotary_attention_backward(grad_out, q, k, v, out, lse, cos, sin, key_padding_mask, scale=scale,
                                     allow_tf32=allow_tf32)


@rotary_attention_backward_op.register_fake
def _rotary_attention_backward_fake(grad_out, q, k, v, out, lse, cos, sin, key_padding_mask, scale=None,
                                    allow_tf32=False):
    return _bthd_empty(q, q.shape[2]), _bthd_empty(q, k.shape[2]), _bthd_empty(q, k.shape[2])


# ----------------------------------------------------------------------------------------------
# Autograd
# ----------------------------------------------------------------------------------------------


class _FirstOrderOnly(torch.autograd.Function):
    """The identity on a gradient from the Triton backward, made to depend on what that gradient
    depends on (q, k, v, grad_out): differentiating it again raises a clear error, where
    ``once_differentiable`` would only say "does not require grad" for a constant grad_out."""

    @staticmethod
    def forward(ctx, grad, *depends_on):
        return grad.view_as(grad)

    @staticmethod
    def backward(ctx, *grads):
        raise RuntimeError(
            "rotary_attention_autograd: double backward is not supported (its Triton backward is first-order "
            "only); use kernels.rotary_attention_ref for higher-order gradients"
        )


def _rotary_attention_setup_context(ctx, inputs, output):
    """Autograd of ``clvp::rotary_attention_lse``: save q, k, v (the caller's tensors, no copies),
    the tables, the mask, the output and the (B, H, T_q) float32 log-sum-exp; the backward
    recomputes the probabilities from them. The log-sum-exp itself is not differentiable."""
    q, k, v, cos, sin, key_padding_mask, scale, allow_tf32 = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, cos, sin, key_padding_mask, out, lse)
    ctx.scale, ctx.allow_tf32 = scale, allow_tf32
    ctx.mark_non_differentiable(lse)


def _rotary_attention_backward_formula(ctx, grad_out, grad_lse):
    """Gradients flow to q, k and v only (None for cos, sin, the mask, the scale and the TF32 flag);
    the backward is not itself differentiable: with ``create_graph=True`` the gradients come back
    marked so that differentiating them raises (see ``_FirstOrderOnly``)."""
    q, k, v, cos, sin, key_padding_mask, out, lse = ctx.saved_tensors
    with torch.no_grad():
        grads = torch.ops.clvp.rotary_attention_backward(grad_out, q, k, v, out, lse, cos, sin, key_padding_mask,
                                                         ctx.scale, ctx.allow_tf32)
    if torch.is_grad_enabled():  # create_graph=True: a later differentiation of these must fail loudly
        grads = tuple(_FirstOrderOnly.apply(g, q, k, v, grad_out) for g in grads)
    return (*grads, None, None, None, None, None)


rotary_attention_lse_op.register_autograd(_rotary_attention_backward_formula,
                                          setup_context=_rotary_attention_setup_context)


def rotary_attention_autograd(q, k, v, cos=None, sin=None, key_padding_mask=None, *, scale=None, allow_tf32=False):
    """:func:`rotary_attention` (same arguments, same output bits) with a Triton backward for q, k, v.

    For training or any use that needs gradients; the plain launcher is cheaper when none are
    needed (it stores no log-sum-exp and saves nothing). Only a first-order backward is supported.
    The op ``clvp::rotary_attention_lse`` carries the autograd (``register_autograd``), so that
    torch.compile traces forward and backward as registered ops.
    """
    return torch.ops.clvp.rotary_attention_lse(q, k, v, cos, sin, key_padding_mask, scale, bool(allow_tf32))[0]
