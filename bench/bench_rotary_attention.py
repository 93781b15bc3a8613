"""Fused rotary attention against the eager twin, rotate-then-SDPA and Hugging Face's attention module.

Run: ``python -m clvp.bench.bench_rotary_attention`` (``--help`` for options), or ``clvp bench --only
rotary_attention``.

Shapes (docs/speed.md §6.2): batch 1 and 16, 12 heads of 64, lengths 128 / 350 / 430, rotary width
32, key padding masks (row 0 unpadded, the others right-padded to a length drawn from [0.6 T, T]),
q / k / v as the model passes them: permuted views of (B, T, H, D) projections.

Rows:
* ``triton fused``: ``kernels.rotary_attention.rotary_attention`` (CUDA only: on a CPU the kernel can
  only run in Triton's interpreter, a simulator whose timings mean nothing);
* ``eager twin``: ``rotary_attention_ref``, the reference the model falls back to (rotation with a
  ``torch.cat`` per tensor, boolean mask, ``scaled_dot_product_attention``);
* ``rotate+SDPA``: the careful plain-torch baseline of docs/speed.md §6.2 (ii): one contiguous copy
  of q, k, v with the first R channels rotated in place, then SDPA with an additive mask built once;
* ``HF ClvpSelfAttention``: transformers 4.46.3's module from ``.oracle/`` (eager softmax(QK^T)V with
  materialised scores). It includes its q/k/v/out projections, so its time covers more work than the
  attention FLOPs counted here; it is skipped when ``.oracle/`` is missing.

TFLOP/s = 4 B H T^2 D / t (two matmuls; padded keys counted, as every implementation computes them).
The peak is measured in the same process: a large matrix product in the benchmarked dtype.
"""
from __future__ import annotations

import os
import re

import torch
import torch.nn.functional as F

from clvp.bench._common import (ORACLE, bench_parser, conditions, cuda_time, device_name, import_oracle,
                                markdown_table, matmul_peak, progress, results_dir, time_fn, write_result)
from clvp.kernels.rotary_attention import apply_rotary_ref, rotary_angles, rotary_attention_ref, rotary_tables

HEADS, HEAD_DIM, ROT_DIM = 12, 64, 32
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def attention_flops(b: int, h: int, t: int, d: int) -> float:
    return 4.0 * b * h * t * t * d  # q k^T and p v, 2 T^2 D each per head


def make_case(b: int, t: int, dtype, device, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    qkv = torch.randn(b, t, 3, HEADS, HEAD_DIM, generator=gen).to(device=device, dtype=dtype)  # (B, T, 3, H, D)
    q, k, v = (qkv[:, :, i].permute(0, 2, 1, 3) for i in range(3))  # (B, H, T, D) views, as the model passes
    lengths = torch.randint(int(0.6 * t), t + 1, (b,), generator=gen)
    lengths[0] = t
    mask = (torch.arange(t)[None, :] < lengths[:, None]).to(device)  # (B, T) bool, True = keep
    cos, sin = rotary_tables(t, ROT_DIM, device)  # (T, R) float32 each
    return q, k, v, cos, sin, mask


def rotate_then_sdpa(q, k, v, cos, sin, additive_mask):
    """Plain-torch baseline: rotate the first R channels of contiguous copies in place, then SDPA."""
    rot = cos.shape[-1]

    def rotated(x):
        x = x.contiguous()  # (B, H, T, D): one copy, which SDPA wants anyway
        x[..., :rot] = apply_rotary_ref(x[..., :rot], cos, sin)
        return x

    return F.scaled_dot_product_attention(rotated(q), rotated(k), rotated(v), attn_mask=additive_mask)


def hf_attention(dtype, device):
    """transformers 4.46.3's ClvpSelfAttention with CLVP's encoder sizes, or None without the oracle."""
    if import_oracle() is None:
        return None, f"{ORACLE} not found or transformers does not import from it"
    try:
        from transformers.models.clvp.configuration_clvp import ClvpEncoderConfig
        from transformers.models.clvp.modeling_clvp import ClvpSelfAttention
    except Exception as exc:  # pragma: no cover - depends on the oracle install
        return None, f"import failed: {exc!r}"
    config = ClvpEncoderConfig(hidden_size=HEADS * HEAD_DIM, num_attention_heads=HEADS, projection_dim=768)
    return ClvpSelfAttention(config).to(device=device, dtype=dtype).eval(), ""


def short_gpu_name(device) -> str:
    match = re.search(r"\b([A-Z]{1,2}\d{2,4})\b", torch.cuda.get_device_name(device))
    return match.group(1).lower() if match else "cuda"


def main(argv=None):
    parser = bench_parser(__doc__.split("\n")[0])
    parser.add_argument("--dtypes", default=None, help="comma list of fp32,fp16,bf16 (default: bf16,fp16 on CUDA, fp32 on CPU)")
    parser.add_argument("--batches", default="1,16")
    parser.add_argument("--lengths", default="128,350,430")
    parser.add_argument("--repeat", type=int, default=5, help="CPU timing repeats, at least (CUDA uses do_bench)")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads (default 1: on a shared 2-core machine two OpenMP threads stall at every "
                             "barrier when another job holds a core, which made timings swing 10x)")
    parser.add_argument("--no-hf", action="store_true", help="skip transformers' ClvpSelfAttention")
    args = parser.parse_args(argv)

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    if not cuda:
        torch.set_num_threads(args.threads)
    dtype_names = (args.dtypes or ("bf16,fp16" if cuda else "fp32")).split(",")
    batches = [int(x) for x in args.batches.split(",")]
    lengths = [int(x) for x in args.lengths.split(",")]

    triton_fn = None
    if cuda:
        from clvp.kernels.rotary_attention import rotary_attention as triton_fn

    def timer(fn):
        if cuda:
            return cuda_time(fn)[0]
        return time_fn(fn, warmup=2, repeat=args.repeat, min_time=0.5)["median"]

    headers = ["dtype", "B", "T", "method", "time (ms)", "TFLOP/s", "% of peak", "speed-up vs rotate+SDPA"]
    rows, notes, peaks = [], [], {}
    for dname in dtype_names:
        dtype = DTYPES[dname]
        peaks[dname] = matmul_peak(dtype, device)
        hf_module, hf_why = (None, "--no-hf") if args.no_hf else hf_attention(dtype, device)
        for b in batches:
            for t in lengths:
                q, k, v, cos, sin, mask = make_case(b, t, dtype, device)
                additive = torch.zeros(b, 1, 1, t, dtype=dtype, device=device).masked_fill(
                    ~mask[:, None, None, :], torch.finfo(dtype).min
                )  # built once per forward in a model, so outside the timed call
                methods = {}
                if triton_fn is not None:
                    methods["triton fused"] = lambda: triton_fn(q, k, v, cos, sin, mask)
                methods["eager twin"] = lambda: rotary_attention_ref(q, k, v, cos, sin, mask)
                methods["rotate+SDPA"] = lambda: rotate_then_sdpa(q, k, v, cos, sin, additive)
                if hf_module is not None:
                    hidden = torch.randn(b, t, HEADS * HEAD_DIM, device=device).to(dtype)
                    hf_mask = torch.zeros(b, 1, t, t, dtype=dtype, device=device).masked_fill(
                        ~mask[:, None, None, :], torch.finfo(dtype).min
                    )  # HF's (B, 1, T, T) additive mask
                    pos = torch.arange(t, device=device)[None, :]
                    rope = rotary_angles(t, ROT_DIM, device)[None].to(dtype)  # HF casts the angles to its dtype

                    def hf_call(hidden=hidden, hf_mask=hf_mask, pos=pos, rope=rope):
                        return hf_module(hidden, rotary_pos_emb=rope, attention_mask=hf_mask, position_ids=pos)[0]

                    methods["HF ClvpSelfAttention (+proj)"] = hf_call

                if triton_fn is not None:  # correctness at the benchmarked shape, against the eager twin
                    err = (triton_fn(q, k, v, cos, sin, mask).float() - methods["eager twin"]().float()).abs().max()
                    notes.append(f"{dname} B={b} T={t}: max |triton - eager twin| = {err.item():.3g}")

                times = {}
                with torch.inference_mode():
                    for name, fn in methods.items():
                        try:
                            times[name] = timer(fn)
                        except Exception as exc:  # e.g. HF's module in bf16
                            times[name] = None
                            notes.append(f"{dname} B={b} T={t}: {name} failed: {type(exc).__name__}: {exc}"[:300])
                flops = attention_flops(b, HEADS, t, HEAD_DIM)
                base = times.get("rotate+SDPA")
                for name, sec in times.items():
                    if sec is None:
                        rows.append([dname, b, t, name, "failed", "", "", ""])
                        continue
                    tflops = flops / sec / 1e12
                    rows.append([
                        dname, b, t, name, sec * 1e3, tflops, 100.0 * flops / sec / peaks[dname],
                        (base / sec) if base else "",
                    ])
                progress(" | ".join(str(v) for v in rows[-1]))
        if hf_module is None and not args.no_hf:
            notes.append(f"HF ClvpSelfAttention not timed: {hf_why}")

    peak_text = ", ".join(f"{k} {v / 1e12:.3g} TFLOP/s" for k, v in peaks.items())
    info = conditions(
        device,
        shapes=f"B in {batches}, H={HEADS}, D={HEAD_DIM}, T in {lengths}, rotary width {ROT_DIM}",
        dtypes=",".join(dtype_names),
        inputs="q, k, v permuted views of (B, T, H, D); key padding: row 0 full, others lengths in [0.6T, T]",
        measured_peak=f"{peak_text} (square matmul, n = {'8192' if cuda else '2048 fp32 / 512 16-bit'})",
        timing="triton.testing.do_bench median" if cuda
        else f"wall-clock median of >= {args.repeat} calls (and >= 0.5 s) after 2 warm-ups",
        load_average=" / ".join(f"{x:.2f}" for x in os.getloadavg()) + " (1 / 5 / 15 min, at the end; other jobs share this machine)",
    )
    text_notes = [
        "TFLOP/s counts the attention only (4 B H T^2 D); the HF row also runs its four 768x768 projections "
        "(8 B T 768^2 FLOP more), so its TFLOP/s understates that module's arithmetic rate.",
    ]
    if not cuda and "bf16" not in dtype_names:
        bf16_peak = matmul_peak(torch.bfloat16, device)
        text_notes.append(
            f"bf16 not timed by default on a CPU: a bf16 matmul runs at {bf16_peak / 1e9:.3g} GFLOP/s on this one "
            f"(fp32: {peaks.get('fp32', 0) / 1e9:.3g} GFLOP/s); pass --dtypes fp32,bf16 to time it anyway."
        )
    if not cuda:
        text_notes.append(
            f"No CUDA device here ({device_name(device)}): the Triton kernel was not timed. On a CPU it only runs "
            "in Triton's interpreter (a numpy simulator), whose timings mean nothing; its correctness is covered "
            "by tests/test_rotary_attention.py. Run this script on a GPU for the kernel's figures."
        )
    text_notes += notes
    suffix = f"-{short_gpu_name(device)}" if cuda else "-cpu"
    write_result(
        "rotary_attention",
        "Fused rotary attention (CLVP encoders)",
        info,
        markdown_table(headers, rows),
        "\n".join(f"- {n}" for n in text_notes),
        suffix=suffix,
        results=results_dir(args),
    )


if __name__ == "__main__":
    main()
