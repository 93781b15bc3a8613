"""One query token per sequence against a static, preallocated KV cache (the decoder's cached step).

File layout: eager reference (fallback and oracle), then the Triton kernels, then their launcher
(``decode_attention``: docstring, checks, split choice; ``_decode_attention``: allocation, grid, launch).

The Triton path is flash-decoding (Dao et al., "Flash-Decoding for long-context inference", 2023):
the key axis of every (batch, head) row is cut into ``NUM_SPLITS`` chunks, one program per chunk
computes an un-normalised partial output with its running max and sum (its log-sum-exp), and a
second small kernel merges the chunks. Splitting gives the GPU enough programs when
``batch * heads`` alone cannot fill it (batch 1 to 16 with 16 heads on a 132-SM H100).

Built to be captured in a CUDA graph: the launcher never reads ``lengths`` on the host, its grid,
scratch buffers and compile-time constants depend only on shapes, and each row's chunk boundaries
are computed inside the kernel from that row's length.
"""
from __future__ import annotations

import functools
from typing import Optional

import torch
import torch.nn.functional as F

from ._attention_cpu import attention_fp32_scores, wants_fp32_scores
from ._checks import FLOAT_DTYPES, check_head_dim, check_is_tensor, check_same_device, check_same_dtype, check_shape, \
    check_tensor, check_triton
from ._triton import LOG2E, launch, tl, triton

_jit = triton.jit


def decode_attention_ref(q, k_cache, v_cache, lengths, *, scale=None):
    """Eager reference: masked ``scaled_dot_product_attention`` over the valid cache prefix (for bfloat16
    CPU inputs without autograd, the same attention with float32 scores, ``_attention_cpu``).

    Arguments:
        q: (B, H, D) the current token's query.
        k_cache, v_cache: (B, H, T_max, D) static caches; row b is valid on ``[0, lengths[b])``.
        lengths: (B,) integer tensor, 1 <= lengths[b] <= T_max (the current token included).
        scale: softmax scale, default ``D ** -0.5``.
    Returns:
        (B, H, D) in q's dtype.
    The mask covers the whole static cache, so nothing here reads ``lengths`` on the host (no
    device sync; a decode step built on it compiles into one graph). The masked entries get zero
    weight, but are multiplied by it: they must be finite, as the model's zero-initialised caches are.
    Memory traffic: reads all ``T_max`` keys and values of every row (the kernel reads only each
    row's own valid prefix).
    """
    keys = torch.arange(k_cache.shape[2], device=q.device)  # (T_max,)
    mask = (keys[None, :] < lengths[:, None].to(q.device))[:, None, None, :]  # (B, 1, 1, T_max)
    if wants_fp32_scores(q, k_cache, v_cache):  # bfloat16 on the CPU: ~5x faster than SDPA there
        bias = torch.zeros(mask.shape, device=q.device).masked_fill_(~mask, float("-inf"))  # (B, 1, 1, T_max)
        return attention_fp32_scores(q[:, :, None, :], k_cache, v_cache, bias,
                                     q.shape[-1] ** -0.5 if scale is None else scale)[:, :, 0]
    out = F.scaled_dot_product_attention(q[:, :, None, :], k_cache, v_cache, attn_mask=mask, scale=scale)  # (B, H, 1, D)
    return out[:, :, 0]


# ----------------------------------------------------------------------------------------------
# Triton kernels
# ----------------------------------------------------------------------------------------------

@_jit
def _decode_attn_split_kernel(
    Q, K, V, LENGTHS, OUT, PART_ACC, PART_M, PART_L,
    stride_q_b, stride_q_h, stride_q_d,
    stride_k_b, stride_k_h, stride_k_t, stride_k_d,
    stride_v_b, stride_v_h, stride_v_t, stride_v_d,
    stride_len_b,
    stride_out_b, stride_out_h, stride_out_d,
    H, T_MAX, qk_scale,  # qk_scale = softmax scale * LOG2E: the softmax runs in base 2 (exp2 is one MUFU op)
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, NUM_SPLITS: tl.constexpr,
    NUM_STAGES: tl.constexpr,
):
    """One (batch, head, key chunk): online softmax over the chunk's valid keys.

    Q: (B, H, D); K, V: (B, H, T_max, D); LENGTHS: (B,) int32/int64.
    NUM_SPLITS == 1: OUT (B, H, D) receives the normalised output directly.
    NUM_SPLITS > 1: PART_ACC (B*H, NUM_SPLITS, D) the un-normalised sum of p * v, PART_M and PART_L
    (B*H, NUM_SPLITS) the chunk's max score (log2 units) and sum of p; an empty chunk writes
    m = -1e30, l = 0, acc = 0 and so weighs exactly zero in the merge.
    Grid: (B * H, NUM_SPLITS).
    """
    pid_bh = tl.program_id(0).to(tl.int64)
    split = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H

    # Chunk boundaries from this row's own length (read on the device, so graph replays with new
    # lengths re-balance the chunks). Chunks are whole tiles so every tile load starts aligned.
    length = tl.load(LENGTHS + b * stride_len_b).to(tl.int32)
    length = tl.minimum(length, T_MAX)  # never read past the cache, whatever the caller passed
    chunk = tl.cdiv(tl.cdiv(length, NUM_SPLITS), BLOCK_N) * BLOCK_N
    lo = split * chunk
    hi = tl.minimum(lo + chunk, length)  # lo >= hi: an empty chunk, the loop below does not run

    offs_d = tl.arange(0, BLOCK_D)
    mask_d = offs_d < HEAD_DIM  # folds away when HEAD_DIM is a power of two
    # q pre-multiplied by scale * LOG2E: the scores come out in log2 units for exp2
    q = tl.load(Q + b * stride_q_b + h * stride_q_h + offs_d * stride_q_d, mask=mask_d, other=0.0)
    q = q.to(tl.float32) * qk_scale  # (BLOCK_D,)
    k_row = K + b * stride_k_b + h * stride_k_h + offs_d[None, :] * stride_k_d  # (1, BLOCK_D)
    v_row = V + b * stride_v_b + h * stride_v_h + offs_d[None, :] * stride_v_d  # (1, BLOCK_D)

    # Online softmax kept per key slot j of the tile (keys j, j + BLOCK_N, j + 2 BLOCK_N, ...):
    # the loop then needs no reduction across warps (only the within-warp sum over D for the
    # scores); the slots are merged once after the loop. m starts at a finite -1e30 rather than
    # -inf so that a slot with no valid key yet gives alpha = 2^0 and p = 2^-inf = 0, never NaN.
    m_i = tl.full([BLOCK_N], -1.0e30, tl.float32)  # (BLOCK_N,) running max per slot, log2 units
    l_i = tl.zeros([BLOCK_N], tl.float32)  # (BLOCK_N,) running sum of 2^(s - m) per slot
    acc = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)  # running sum of p * v per slot
    for start_n in tl.range(lo, hi, BLOCK_N, num_stages=NUM_STAGES):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        mask_n = offs_n < hi
        mask_nd = mask_n[:, None] & mask_d[None, :]
        k = tl.load(k_row + offs_n[:, None] * stride_k_t, mask=mask_nd, other=0.0)  # (BLOCK_N, BLOCK_D)
        v = tl.load(v_row + offs_n[:, None] * stride_v_t, mask=mask_nd, other=0.0)  # (BLOCK_N, BLOCK_D)
        # one query row: a broadcast multiply and a row sum, exact float32 (no tensor-core dot)
        s = tl.sum(k.to(tl.float32) * q[None, :], axis=1)  # (BLOCK_N,)
        s = tl.where(mask_n, s, float("-inf"))
        m_new = tl.maximum(m_i, s)
        alpha = tl.exp2(m_i - m_new)  # (BLOCK_N,)
        p = tl.exp2(s - m_new)  # (BLOCK_N,), 0 on masked keys
        acc = acc * alpha[:, None] + p[:, None] * v.to(tl.float32)
        l_i = l_i * alpha + p
        m_i = m_new
    # merge the slots: a slot that never saw a valid key has m = -1e30 and weighs 2^-huge = 0
    m_row = tl.max(m_i, axis=0)  # scalar; -1e30 for an empty chunk
    w = tl.exp2(m_i - m_row)  # (BLOCK_N,)
    l_row = tl.sum(l_i * w, axis=0)  # scalar; 0 for an empty chunk
    acc_row = tl.sum(acc * w[:, None], axis=0)  # (BLOCK_D,); 0 for an empty chunk

    if NUM_SPLITS == 1:  # the only chunk holds keys [0, length): normalise and write the output
        out = acc_row / l_row
        out_ptrs = OUT + b * stride_out_b + h * stride_out_h + offs_d * stride_out_d
        tl.store(out_ptrs, out.to(OUT.dtype.element_ty), mask=mask_d)
    else:
        part = pid_bh * NUM_SPLITS + split
        tl.store(PART_ACC + part * HEAD_DIM + offs_d, acc_row, mask=mask_d)
        tl.store(PART_M + part, m_row)
        tl.store(PART_L + part, l_row)


@_jit
def _decode_attn_merge_kernel(
    PART_ACC, PART_M, PART_L, OUT,
    stride_out_b, stride_out_h, stride_out_d,
    H,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, NUM_SPLITS: tl.constexpr, BLOCK_S: tl.constexpr,
):
    """Merge the chunks of one (batch, head): out = sum_s w_s acc_s / sum_s w_s l_s, w_s = 2^(m_s - max m).

    PART_ACC: (B*H, NUM_SPLITS, D), PART_M, PART_L: (B*H, NUM_SPLITS) float32; OUT: (B, H, D).
    Chunk 0 always holds key 0, so max m is a real score and an empty chunk (m = -1e30, l = 0,
    acc = 0) weighs 2^(-1e30 - max m) = 0.
    Grid: (B * H,).
    """
    pid_bh = tl.program_id(0).to(tl.int64)
    b = pid_bh // H
    h = pid_bh % H
    offs_s = tl.arange(0, BLOCK_S)
    offs_d = tl.arange(0, BLOCK_D)
    mask_s = offs_s < NUM_SPLITS
    mask_d = offs_d < HEAD_DIM
    part = pid_bh * NUM_SPLITS + offs_s  # (BLOCK_S,)
    m = tl.load(PART_M + part, mask=mask_s, other=float("-inf"))  # (BLOCK_S,)
    l = tl.load(PART_L + part, mask=mask_s, other=0.0)  # (BLOCK_S,)
    acc = tl.load(
        PART_ACC + part[:, None] * HEAD_DIM + offs_d[None, :], mask=mask_s[:, None] & mask_d[None, :], other=0.0
    )  # (BLOCK_S, BLOCK_D)
    w = tl.exp2(m - tl.max(m, axis=0))  # (BLOCK_S,)
    out = tl.sum(w[:, None] * acc, axis=0) / tl.sum(w * l, axis=0)  # (BLOCK_D,)
    out_ptrs = OUT + b * stride_out_b + h * stride_out_h + offs_d * stride_out_d
    tl.store(out_ptrs, out.to(OUT.dtype.element_ty), mask=mask_d)


# ----------------------------------------------------------------------------------------------
# Launcher
# ----------------------------------------------------------------------------------------------

MAX_HEAD_DIM = 256
_MIN_CHUNK = 32  # keys: a chunk shorter than this costs more in merge traffic than it balances
_MAX_SPLITS = 64
# Programs to aim for per SM. A 16-bit 64 x 64 program keeps two 16 KiB K+V tiles in flight
# (cp.async, 3 stages); at 2 programs per SM that is ~64 KiB per SM, ~8 MiB on an H100, well above
# the ~3 MiB that 3.35 TB/s x ~1 us of latency needs, while all programs still fit in one wave
# (~93 registers x 128 threads: 5 programs per SM). Untuned: sweep it on the GPU
# (bench/bench_decode_attention.py prints the split-count sweep).
_PROGRAMS_PER_SM = 2


@functools.lru_cache(maxsize=None)
def _sm_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def _num_splits(batch_heads: int, t_max: int, device: torch.device) -> int:
    """How many key chunks per row: enough programs to fill the device, from shapes only.

    On CUDA: ``ceil(PROGRAMS_PER_SM * SMs / (B * H))`` (an H100 has 132 SMs; with H = 16:
    B=1 -> 17, B=16 -> 2, B=64 -> 1), at most one chunk per ``_MIN_CHUNK`` keys of ``T_max`` and
    at most ``_MAX_SPLITS``. On the CPU (Triton's interpreter, programs run one after another) the
    programs target is 4, so at most 4 splits.
    """
    if device.type == "cuda":
        target = _PROGRAMS_PER_SM * _sm_count(device.index if device.index is not None else torch.cuda.current_device())
    else:
        target = 4
    return _num_splits_for(batch_heads, t_max, target)


def _num_splits_for(batch_heads: int, t_max: int, target: int) -> int:
    """The split count for ``target`` programs: ``ceil(target / (B * H))``, capped as ``_num_splits`` says."""
    cap = max(1, min(_MAX_SPLITS, triton.cdiv(t_max, _MIN_CHUNK)))
    return max(1, min(cap, triton.cdiv(target, batch_heads)))


def _block_n(t_max: int, num_splits: int, head_dim: int) -> int:
    """Keys per tile: a tile of about 4096 elements (8 KiB of K plus 8 KiB of V in 16-bit, 32
    elements per thread at 4 warps), no longer than a chunk needs, at least 16."""
    cap = max(16, 4096 // triton.next_power_of_2(head_dim))  # D=64 -> 64, D=128 -> 32, D=16 -> 256
    return max(16, min(cap, 128, triton.next_power_of_2(triton.cdiv(t_max, num_splits))))


def _launch_options(block_n: int, head_dim: int, dtype: torch.dtype) -> tuple[int, int]:
    """(num_warps, NUM_STAGES) of the split kernel: 4 warps for a 64 x 64 tile; cp.async software
    pipelining of the K/V tiles (the loop is a tl.range): with 3 stages two tiles are in flight while
    one is used, 32 KiB of shared memory per 16-bit 64 x 64 program; float32 tiles are twice the bytes,
    so 2 stages keep about as many programs resident. (bench/results/compile_sm90.md: no spills.)"""
    num_warps = max(1, min(8, block_n * triton.next_power_of_2(head_dim) // 1024))
    num_stages = 3 if dtype.itemsize <= 2 else 2
    return num_warps, num_stages


def _merge_options(num_splits: int, head_dim: int) -> tuple[int, int]:
    """(BLOCK_S, num_warps) of the merge kernel: the splits padded to a power of two."""
    block_s = triton.next_power_of_2(num_splits)
    return block_s, max(1, min(4, block_s * triton.next_power_of_2(head_dim) // 1024))


def decode_attention(q, k_cache, v_cache, lengths, *, scale=None):
    """Flash-decoding attention of one query per row over each row's valid cache prefix.

    Arguments:
        q: (B, H, D) float32 / float16 / bfloat16, any strides.
        k_cache, v_cache: (B, H, T_max, D) in q's dtype, any strides; row b attends keys and
            values ``[0, lengths[b])``, whatever the cache holds beyond (never read).
        lengths: (B,) int32 or int64 on q's device, 1 <= lengths[b] <= T_max. Checked on CPU
            tensors only; on CUDA it is never read on the host (graph capture), lengths above
            T_max are clamped to T_max and lengths below 1 give NaN rows.
        scale: softmax scale, default ``D ** -0.5``.
    Returns:
        (B, H, D) in q's dtype; float32 scores, softmax and accumulation.
    CUDA graphs: the grid (B*H, splits), the scratch buffers (B*H, splits, D) and the compiled
    variant depend on shapes only, so a captured call replays correctly with new lengths.
    Memory traffic: reads ``sum_b lengths[b]`` keys and values of every head once, plus
    ``2 * B * H * splits * (D + 2) * 4`` bytes of partials when split.
    """
    op = "decode_attention"
    check_triton(op, "kernels.decode_attention_ref")
    check_is_tensor(op, q=q, k_cache=k_cache, v_cache=v_cache, lengths=lengths)
    check_tensor(q, "q", dims=("B", "H", "D"), dtypes=FLOAT_DTYPES, op=op)
    if k_cache.dim() != 4 or k_cache.shape != v_cache.shape:
        raise ValueError(
            f"{op}: k_cache and v_cache must both be (B, H, T_max, D), got shapes "
            f"{tuple(k_cache.shape)} and {tuple(v_cache.shape)}"
        )
    B, H, D = q.shape
    t_max = k_cache.shape[2]
    if k_cache.shape[:2] != (B, H) or k_cache.shape[3] != D:
        raise ValueError(
            f"{op}: caches {tuple(k_cache.shape)} do not match q {tuple(q.shape)}; "
            "expected (B, H, T_max, D) with q's B, H, D"
        )
    check_same_dtype(op, q=q, k_cache=k_cache, v_cache=v_cache)
    check_tensor(lengths, "lengths", dtypes=(torch.int32, torch.int64), op=op)
    check_shape(lengths, "lengths", (B,), doc="(B,)", op=op)
    check_same_device(op, q=q, k_cache=k_cache, v_cache=v_cache, lengths=lengths)
    check_head_dim(D, MAX_HEAD_DIM, op=op)
    if t_max < 1:
        raise ValueError(f"{op}: the cache needs T_max >= 1 positions")
    if scale is not None and not isinstance(scale, (int, float)):
        raise TypeError(f"{op}: scale must be a Python number or None, got {type(scale).__name__}")
    # The values of lengths are checked only where that costs no device sync (CPU tensors): on
    # CUDA a check would stall the stream and break graph capture, and the kernel clamps to T_max.
    # (Nor while torch.compile traces: its fake tensors have no values.)
    if lengths.device.type == "cpu" and B > 0 and not torch.compiler.is_compiling():
        lo, hi = int(lengths.min()), int(lengths.max())
        if lo < 1 or hi > t_max:
            raise ValueError(f"{op}: lengths must lie in [1, T_max={t_max}], got min {lo}, max {hi}")

    num_splits = _num_splits(max(1, B * H), t_max, q.device)
    return _decode_attention(q, k_cache, v_cache, lengths, scale, num_splits, _block_n(t_max, num_splits, D))


def _decode_attention(q, k_cache, v_cache, lengths, scale, num_splits, block_n):
    """Launch with an explicit split count and tile size (the tests use this to force empty chunks);
    arguments as :func:`decode_attention`, already checked."""
    B, H, D = q.shape
    t_max = k_cache.shape[2]
    out = torch.empty((B, H, D), dtype=q.dtype, device=q.device)  # (B, H, D)
    if B == 0 or H == 0:
        return out
    if num_splits > 1:
        # fixed-shape scratch: (B*H, S, D) partial sums of p * v, (B*H, S) running max and sum
        part_acc = torch.empty((B * H, num_splits, D), dtype=torch.float32, device=q.device)
        part_m = torch.empty((B * H, num_splits), dtype=torch.float32, device=q.device)
        part_l = torch.empty((B * H, num_splits), dtype=torch.float32, device=q.device)
    else:
        part_acc = part_m = part_l = out  # unused: the single chunk writes OUT directly
    scale = D**-0.5 if scale is None else float(scale)
    block_d = triton.next_power_of_2(D)
    num_warps, num_stages = _launch_options(block_n, D, q.dtype)

    grid = (B * H, num_splits)
    launch(_decode_attn_split_kernel)[grid](
        q, k_cache, v_cache, lengths, out, part_acc, part_m, part_l,
        q.stride(0), q.stride(1), q.stride(2),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2), k_cache.stride(3),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2), v_cache.stride(3),
        lengths.stride(0),
        out.stride(0), out.stride(1), out.stride(2),
        H, t_max, scale * LOG2E,
        HEAD_DIM=D, BLOCK_D=block_d, BLOCK_N=block_n, NUM_SPLITS=num_splits, NUM_STAGES=num_stages,
        num_warps=num_warps,
    )
    if num_splits > 1:
        block_s, merge_warps = _merge_options(num_splits, D)
        launch(_decode_attn_merge_kernel)[(B * H,)](
            part_acc, part_m, part_l, out,
            out.stride(0), out.stride(1), out.stride(2),
            H,
            HEAD_DIM=D, BLOCK_D=block_d, NUM_SPLITS=num_splits, BLOCK_S=block_s,
            num_warps=merge_warps,
        )
    return out


# The launcher registered as the op ``clvp::decode_attention`` (what ``kernels.decode_attention``
# calls on the Triton path): torch.compile and CUDA graphs trace it as one node with the fake
# implementation below, and the AOT pass (inductor) sees the kernels through ``launch``.
@torch.library.triton_op("clvp::decode_attention", mutates_args=())
def decode_attention_op(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, lengths: torch.Tensor,
                        scale: Optional[float] = None) -> torch.Tensor:
    """:func:`decode_attention` as a torch.library op: q (B, H, D), caches (B, H, T_max, D),
    lengths (B,) -> (B, H, D)."""
    return decode_attention(q, k_cache, v_cache, lengths, scale=scale)


@decode_attention_op.register_fake
def _decode_attention_fake(q, k_cache, v_cache, lengths, scale=None):
    return torch.empty(tuple(q.shape), dtype=q.dtype, device=q.device)  # (B, H, D), contiguous as the launcher's
