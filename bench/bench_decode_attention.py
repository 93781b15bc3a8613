"""Cached decode attention: the flash-decoding Triton kernel against torch, in GB/s of K/V read.

Run: ``python -m clvp.bench.bench_decode_attention [--save]`` (or ``clvp bench --only decode_attention``).

Shapes: batch 1, 16, 64 x context 128, 512, 1000 with the decoder's 16 heads of 64; every row
full (lengths = context = T_max). Bytes per call = 2 * B * ctx * H * D * element size (K and V read
once; q and the output are negligible), reported against the card's measured copy bandwidth
(a 1 GiB device-to-device copy, read + write bytes).

On CUDA (bfloat16), side by side:
* ``triton``: ``kernels.decode_attention.decode_attention``;
* ``sdpa+mask``: ``scaled_dot_product_attention`` with q_len = 1 and a (B, 1, 1, ctx) boolean
  mask (how a static-cache decoder calls torch; the mask keeps flash out);
* ``sdpa flash``: the same without a mask under the flash backend (cannot express ragged lengths:
  an upper bound for torch);
* ``eager``: ``decode_attention_ref``, the eager twin (masked SDPA over the whole static cache).
The first three are timed inside one CUDA graph that calls them on enough separate input copies to
exceed L2 (so the figures are HBM reads, without Python launch cost, as in a graph-captured decode
step); the eager twin is timed with ``triton.testing.do_bench``, launch by launch, as the model's eager
path runs it.

On the CPU only the eager paths run (float32); the kernel needs CUDA to be timed (Triton's
interpreter is a correctness tool, thousands of times slower).
"""
from __future__ import annotations

import math
import os
import re
import statistics

import torch
import torch.nn.functional as F

from clvp.bench._common import (bench_parser, conditions, copy_bandwidth, cuda_time, markdown_table, progress,
                                results_dir, time_fn, write_result)
from clvp.kernels.decode_attention import decode_attention_ref

BATCHES = (1, 16, 64)
CONTEXTS = (128, 512, 1000)
HEADS, HEAD_DIM = 16, 64
L2_BYTES = 256 * 2**20  # input copies per CUDA graph until this many bytes: well above any L2


def kv_bytes(batch: int, ctx: int, dtype: torch.dtype) -> int:
    return 2 * batch * ctx * HEADS * HEAD_DIM * torch.finfo(dtype).bits // 8


def make_inputs(batch: int, ctx: int, dtype, device):
    q = torch.randn(batch, HEADS, HEAD_DIM, device=device, dtype=dtype)  # (B, H, D)
    k = torch.randn(batch, HEADS, ctx, HEAD_DIM, device=device, dtype=dtype)  # (B, H, T_max, D)
    v = torch.randn(batch, HEADS, ctx, HEAD_DIM, device=device, dtype=dtype)
    lengths = torch.full((batch,), ctx, dtype=torch.int32, device=device)  # (B,) full rows
    mask = (torch.arange(ctx, device=device)[None, :] < lengths[:, None])[:, None, None, :]  # (B, 1, 1, ctx)
    return q, k, v, lengths, mask


def sdpa_masked(q, k, v, mask):
    return F.scaled_dot_product_attention(q[:, :, None, :], k, v, attn_mask=mask)[:, :, 0]  # (B, H, D)


def graph_time(calls: list, reps: int = 20) -> float:
    """Median seconds per call of ``calls`` (zero-argument launches on separate inputs), all captured
    in one CUDA graph and replayed: no launch overhead, and no input still in L2 from its last use."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm-up (Triton compiles, cuBLAS/cuDNN plans) outside the capture
        for call in calls:
            call()
    torch.cuda.current_stream().wait_stream(stream)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for call in calls:
            call()
    graph.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3 / len(calls))
    del graph
    return statistics.median(times)


def bench_cuda(results):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from clvp.kernels.decode_attention import _block_n, _decode_attention, _num_splits, decode_attention

    device, dtype = "cuda", torch.bfloat16
    copy_bw = copy_bandwidth(device)
    rows = []
    for batch in BATCHES:
        for ctx in CONTEXTS:
            nbytes = kv_bytes(batch, ctx, dtype)
            copies = max(2, min(1024, math.ceil(L2_BYTES / nbytes)))
            sets = [make_inputs(batch, ctx, dtype, device) for _ in range(copies)]

            def flash(q, k, v):
                with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                    return F.scaled_dot_product_attention(q[:, :, None, :], k, v)[:, :, 0]

            t_triton = graph_time([lambda s=s: decode_attention(*s[:4]) for s in sets])
            t_masked = graph_time([lambda s=s: sdpa_masked(s[0], s[1], s[2], s[4]) for s in sets])
            t_flash = graph_time([lambda s=s: flash(*s[:3]) for s in sets])
            q, k, v, lengths, _ = sets[0]
            t_eager = cuda_time(lambda: decode_attention_ref(q, k, v, lengths))[0]
            row = [batch, ctx, nbytes / 1e6]
            for t in (t_triton, t_masked, t_flash, t_eager):
                row += [t * 1e6, nbytes / t / 1e9]
            row.append(f"{100 * nbytes / t_triton / copy_bw:.0f}%")
            rows.append(row)
            del sets
            torch.cuda.empty_cache()
    # the split-count sweep behind the heuristic (kernels/decode_attention.py, _num_splits)
    sweep = []
    for batch, ctx in ((1, 1000), (16, 512), (16, 1000), (64, 1000)):
        nbytes = kv_bytes(batch, ctx, dtype)
        sets = [make_inputs(batch, ctx, dtype, device) for _ in range(max(2, min(1024, math.ceil(L2_BYTES / nbytes))))]
        chosen = _num_splits(batch * HEADS, ctx, torch.device(device))
        for splits in sorted({1, 2, 3, 4, 8, 16, 32, chosen}):
            bn = _block_n(ctx, splits, HEAD_DIM)
            t = graph_time([lambda s=s, n=splits, b=bn: _decode_attention(*s[:4], None, n, b) for s in sets])
            mark = "<- heuristic" if splits == chosen else ""
            sweep.append([batch, ctx, splits, bn, mark, t * 1e6, nbytes / t / 1e9])
        del sets
        torch.cuda.empty_cache()
    sweep_table = markdown_table(["B", "ctx", "splits", "BLOCK_N", "", "µs", "GB/s"], sweep)
    headers = ["B", "ctx", "K+V MB", "triton µs", "triton GB/s", "sdpa+mask µs", "sdpa+mask GB/s",
               "sdpa flash µs", "sdpa flash GB/s", "eager µs", "eager GB/s", "triton % of copy"]
    name = torch.cuda.get_device_name()
    suffix = "-" + re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    info = conditions(
        device, dtype="bfloat16", heads=HEADS, head_dim=HEAD_DIM, lengths="all rows full (lengths = ctx = T_max)",
        copy_bandwidth=f"{copy_bw / 1e9:.0f} GB/s (1 GiB device-to-device copy, read + write)",
        timing="triton / sdpa: median of 20 replays of one CUDA graph over >= 256 MiB of input copies; "
               "eager: triton.testing.do_bench median (L2 flushed, includes launch)",
    )
    notes = """
GB/s = 2 * B * ctx * H * D * 2 bytes (K and V read once) / time. Target (docs/speed.md §7.2): triton >= 2500 GB/s
at B = 16, ctx >= 512 on an H100. `sdpa flash` has no mask (cannot skip ragged tails): an upper bound
for torch, not a substitute. The eager twin reads the whole static cache (it masks instead of slicing).

### Split-count sweep (triton, same timing)
""" + sweep_table
    write_result("decode_attention", "decode_attention: Triton flash-decoding vs torch", info,
                 markdown_table(headers, rows), notes, suffix=suffix, results=results)


def bench_cpu(results):
    device, dtype = "cpu", torch.float32
    copy_bw = copy_bandwidth(device)
    rows = []
    for batch in BATCHES:
        for ctx in CONTEXTS:
            nbytes = kv_bytes(batch, ctx, dtype)
            q, k, v, lengths, mask = make_inputs(batch, ctx, dtype, device)
            masked = time_fn(lambda: sdpa_masked(q, k, v, mask), warmup=2, repeat=5, min_time=0.2)
            eager = time_fn(lambda: decode_attention_ref(q, k, v, lengths), warmup=2, repeat=5, min_time=0.2)
            row = [batch, ctx, nbytes / 1e6]
            for t in (masked, eager):
                row += [t["median"] * 1e6, t["min"] * 1e6, nbytes / t["median"] / 1e9]
            row.append(f"{100 * nbytes / eager['median'] / copy_bw:.0f}%")
            rows.append(row)
    headers = ["B", "ctx", "K+V MB", "sdpa+mask µs", "(min)", "sdpa+mask GB/s", "eager µs", "(min)", "eager GB/s",
               "eager % of copy"]
    info = conditions(
        device, dtype="float32", heads=HEADS, head_dim=HEAD_DIM, lengths="all rows full (lengths = ctx = T_max)",
        copy_bandwidth=f"{copy_bw / 1e9:.1f} GB/s (1 GiB copy, read + write)",
        timing="clvp.bench._common.time_fn median (>= 5 calls and >= 0.2 s after 2 warm-up calls)",
        load_average=" / ".join(f"{x:.1f}" for x in os.getloadavg()) + " (1 / 5 / 15 min; the machine is shared)",
    )
    notes = """
No CUDA device on this machine: the Triton kernel was not timed (it needs CUDA; Triton's interpreter
is for correctness only). Only the eager paths ran, in float32. GB/s = 2 * B * ctx * H * D * 4 bytes
(K and V read once) / median time. The 2-core machine was shared with other jobs (load average
above): medians of small cases sit on OS scheduling quanta (~20 ms); the min column is closer to
the uncontended cost. The GPU target (docs/speed.md §7.2: >= 2500 GB/s at B = 16, ctx >= 512 on an H100)
is unmeasured here; run this module on a CUDA machine to write bench/results/decode_attention-<gpu>.md.
"""
    write_result("decode_attention", "decode_attention: eager paths on the CPU (kernel needs CUDA)", info,
                 markdown_table(headers, rows), notes, suffix="-cpu", results=results)


def main(argv=None):
    args = bench_parser(__doc__.splitlines()[0]).parse_args(argv)
    if torch.cuda.is_available():
        bench_cuda(results_dir(args))
    else:
        progress("no CUDA device: timing the eager paths only (the Triton kernel needs CUDA)")
        bench_cpu(results_dir(args))


if __name__ == "__main__":
    main()
