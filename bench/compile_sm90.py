"""Every Triton kernel compiled ahead of time for Hopper (sm_90), without a GPU: registers, spills,
shared memory and tensor-core use of each launch configuration the launchers can pick.

    python -m clvp.bench.compile_sm90 [--save] [--jobs N] [--json FILE]

``--save`` writes the table to ``bench/results/compile_sm90.md``; ``--json FILE`` also writes the rows
as JSON (the CI test, tests/test_compile_sm90.py, reads them from a temporary folder).

What is compiled: the configurations the launchers themselves hold (kernels/rotary_attention.py's
forward autotune lists per input kind and its fixed backward configs, kernels/decode_attention.py's
split and merge launches, kernels/log_mel.py's CUDA blocks), for each dtype the dispatch sends
(kernels/__init__.py: bfloat16, float16, float32 with TF32 dots, and float32 with IEEE dots, which only
``CLVP_KERNELS=triton`` runs) and the constexpr variants of the real Tortoise checkpoint: head dim 64,
rotary width 32 with a key-padding mask (text/speech encoders) and width 0 without (conditioning
encoder; the encoders' per-row rotary tables, which the dispatch applies first, also launch with 0);
a decoder KV cache of 608+ positions (64-key tiles, one split or several); log-mel with n_fft 1024 and
80 mels, with and without a bin split.

How: ``triton.compile`` of the kernel's source for ``GPUTarget("cuda", 90, 32)`` with the argument
types and the specialisations the launch would have (pointers and multiples of 16 marked divisible by
16, unit strides as the constant 1, as Triton's launcher specialises them), then ptxas's own report
(registers, spill stores and loads) and the compiled metadata (shared memory). A tensor-core dot shows
as ``wgmma`` (Hopper's warpgroup MMA) or ``mma`` instructions in the PTX; an IEEE float32 dot compiles
to FMA loops and shows neither. Nothing is cached: every run compiles into a temporary Triton cache.
The limit checked is sm_90's 227 KiB (232,448 bytes) of shared memory per block.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import datetime as _dt
import importlib
import io
import json
import multiprocessing
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from clvp.bench._common import bench_parser, markdown_table, progress, results_dir, write_result

try:  # optional: without triton (or without its CUDA backend) there is nothing to compile
    import triton
    from triton.backends import backends as TRITON_BACKENDS
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
except ImportError as err:  # pragma: no cover - depends on the machine
    triton = None
    TRITON_IMPORT_ERROR = str(err)

# the kernel files (the package's dispatch functions share their names, hence the explicit module paths)
ROTARY_ATTENTION = importlib.import_module("clvp.kernels.rotary_attention")
DECODE_ATTENTION = importlib.import_module("clvp.kernels.decode_attention")
LOG_MEL = importlib.import_module("clvp.kernels.log_mel")
MODULES = {"rotary_attention": ROTARY_ATTENTION, "decode_attention": DECODE_ATTENTION, "log_mel": LOG_MEL}

SHARED_LIMIT = 232_448  # bytes of shared memory one block may use on sm_90 (227 KiB, H100 and H200)
CAPABILITY = 90
WARP_SIZE = 32
STEM = "compile_sm90"

# The real model's shapes (the Tortoise checkpoint, docs/model.md): head dim 64, rotary width 32,
# 12 heads of the 768-wide encoders, 16 of the 1024-wide decoder; text up to 350 tokens, speech up to
# 500; a decoder cache of 608 positions; 80 mels from n_fft 1024, hop 256.
HEAD_DIM, ROT_DIM, ENC_HEADS, ENC_T = 64, 32, 12, 500
DEC_HEADS, DEC_T_MAX = 16, 608
N_FFT, N_MELS, HOP = 1024, 80, 256

# The kinds of input the dispatch sends, as (row label, pointer element type, the launcher's dtype name,
# allow_tf32). float32 appears twice: with TF32 dots (what the dispatch runs on CUDA when torch allows
# TF32) and with IEEE dots (only CLVP_KERNELS=triton with TF32 disallowed runs that).
INPUT_KINDS = (
    ("bf16", "bf16", torch.bfloat16, False),
    ("fp16", "fp16", torch.float16, False),
    ("fp32 tf32", "fp32", torch.float32, True),
    ("fp32 ieee", "fp32", torch.float32, False),
)
SIXTEEN_BIT = ("bf16", "fp16")


@dataclasses.dataclass
class Case:
    """One kernel specialisation to compile: the kernel, its argument values (tensors given by their
    element type, e.g. ``"*bf16"``) and constexprs, and the launch options."""

    op: str  # the kernel file's stem
    kernel: str  # the @triton.jit function's name in it
    dtype: str  # one of INPUT_KINDS' labels (or "fp32" for log-mel)
    variant: str  # the constexpr variant in words
    config: str  # the launch configuration in words
    pointers: dict  # argument name -> element type ("bf16", "fp32", "u8", "i32")
    scalars: dict  # argument name -> int or float value (ints specialise as the launch would)
    constexprs: dict  # argument name -> value
    num_warps: int
    num_stages: int
    has_dots: bool  # does the kernel multiply with tl.dot


@dataclasses.dataclass
class Row:
    """What one compile reports; ``error`` is set (and the figures None) when it did not compile."""

    op: str
    kernel: str
    dtype: str
    variant: str
    config: str
    has_dots: bool
    registers: int | None = None
    spill_stores: int | None = None  # bytes
    spill_loads: int | None = None  # bytes
    shared: int | None = None  # bytes
    wgmma: int | None = None  # wgmma instructions in the PTX
    mma: int | None = None  # mma (sm_80-style) instructions in the PTX
    seconds: float | None = None
    error: str | None = None

    @property
    def tensor_cores(self) -> bool:
        return bool(self.wgmma or self.mma)


# ----------------------------------------------------------------------------------------------
# The cases: read from the launchers' own tables, so the check follows them
# ----------------------------------------------------------------------------------------------


def _bhtd_strides(prefix: str, heads: int, t: int, d: int) -> dict:
    """Strides of a (B, H, T, D) permuted view of a contiguous (B, T, H, D) buffer (the model's
    projections and the launchers' outputs): unit stride along D."""
    return {f"stride_{prefix}_b": t * heads * d, f"stride_{prefix}_h": d, f"stride_{prefix}_t": heads * d,
            f"stride_{prefix}_d": 1}


def rotary_cases() -> list[Case]:
    """The rotary attention kernels: the forward over every autotune config of each input kind, the
    backward's fixed configs, for rotary width 32 with a mask and 0 without."""
    ra = ROTARY_ATTENTION
    cases = []
    t = ENC_T
    common_scalars = {"H": ENC_HEADS, "T_Q": t, "T_K": t}
    tables = {"stride_cos_t": ROT_DIM, "stride_cos_r": 1, "stride_sin_t": ROT_DIM, "stride_sin_r": 1,
              "stride_mask_b": t, "stride_mask_t": 1}
    # the text/speech encoders over padded batches, and the conditioning encoder (no rotary, no mask; the
    # encoders' per-row rotary tables also reach the kernel as R = 0). The mask and the log-sum-exp
    # store change a few registers at most (a full run with all four mask x rotary pairs showed it), so
    # the two other pairs are left out to keep CI's compile time down.
    variants = [(ROT_DIM, True), (0, False)]
    for label, elem, dtype, allow_tf32 in INPUT_KINDS:
        for rot, has_mask in variants:
            variant = f"D={HEAD_DIM} R={rot} {'mask' if has_mask else 'no mask'}"
            meta = ra._kernel_meta(HEAD_DIM, dtype, rot, has_mask, emulate_bf16=False, allow_tf32=allow_tf32)
            strides = {**_bhtd_strides("q", ENC_HEADS, t, HEAD_DIM), **_bhtd_strides("k", ENC_HEADS, t, HEAD_DIM),
                       **_bhtd_strides("v", ENC_HEADS, t, HEAD_DIM), **tables}
            pointers = {"Q": elem, "K": elem, "V": elem, "COS": "fp32", "SIN": "fp32", "MASK": "u8"}
            # forward: every config the autotuner may pick, storing the log-sum-exp (as under autograd)
            # only for the main variant (it adds one store)
            for bm, bn, w, s in ra._cuda_configs(dtype, allow_tf32):
                for store_lse in ((False, True) if (rot, has_mask) == (ROT_DIM, True) else (False,)):
                    cases.append(Case(
                        "rotary_attention", "_rotary_attention_kernel", label,
                        variant + (" +lse" if store_lse else ""), f"{bm}x{bn} w{w} s{s}",
                        {**pointers, "OUT": elem, "LSE": "fp32"},
                        {**strides, **_bhtd_strides("out", ENC_HEADS, t, HEAD_DIM), **common_scalars,
                         "qk_scale": 0.18, "T_BUCKET": 512},
                        {**meta, "BLOCK_M": bm, "BLOCK_N": bn, "STORE_LSE": store_lse}, w, s, True,
                    ))
            # the backward: one fixed config per kernel
            (dkdv_m, dkdv_n, dkdv_w, dkdv_s), (dq_m, dq_n, dq_w, dq_s) = ra._bwd_cuda_config(HEAD_DIM, dtype,
                                                                                           allow_tf32)
            bwd_scalars = {**strides, **_bhtd_strides("do", ENC_HEADS, t, HEAD_DIM), **common_scalars,
                           "sm_scale": 0.125, "qk_scale": 0.18}
            bwd_pointers = {**pointers, "DO": elem, "LSE": "fp32", "DELTA": "fp32"}
            cases.append(Case(
                "rotary_attention", "_rotary_attention_bwd_dkdv_kernel", label, variant,
                f"{dkdv_m}x{dkdv_n} w{dkdv_w} s{dkdv_s}", {**bwd_pointers, "DK": elem, "DV": elem},
                {**bwd_scalars, **_bhtd_strides("dk", ENC_HEADS, t, HEAD_DIM),
                 **_bhtd_strides("dv", ENC_HEADS, t, HEAD_DIM)},
                {**meta, "BLOCK_M": dkdv_m, "BLOCK_N": dkdv_n}, dkdv_w, dkdv_s, True,
            ))
            cases.append(Case(
                "rotary_attention", "_rotary_attention_bwd_dq_kernel", label, variant,
                f"{dq_m}x{dq_n} w{dq_w} s{dq_s}", {**bwd_pointers, "DQ": elem},
                {**bwd_scalars, **_bhtd_strides("dq", ENC_HEADS, t, HEAD_DIM)},
                {**meta, "BLOCK_M": dq_m, "BLOCK_N": dq_n}, dq_w, dq_s, True,
            ))
            if rot == ROT_DIM and not allow_tf32:  # the delta preprocess: no dots, one per element type
                cases.append(Case(
                    "rotary_attention", "_rotary_attention_bwd_preprocess", label, f"D={HEAD_DIM}",
                    f"{ra._BWD_PREPROCESS_ROWS} rows w4", {"OUT": elem, "DO": elem, "DELTA": "fp32"},
                    {**_bhtd_strides("out", ENC_HEADS, t, HEAD_DIM), **_bhtd_strides("do", ENC_HEADS, t, HEAD_DIM),
                     "H": ENC_HEADS, "T_Q": t},
                    {"HEAD_DIM": HEAD_DIM, "D_BLOCK": HEAD_DIM, "BLOCK_M": ra._BWD_PREPROCESS_ROWS}, 4, 3, False,
                ))
    return cases


def decode_cases() -> list[Case]:
    """The decode-attention split kernel (one split: output written directly; several: partials) and
    the merge, at the decoder's shapes, with the launcher's own tile, warp and stage rules."""
    da = DECODE_ATTENTION
    cases = []
    for label, elem, dtype, allow_tf32 in INPUT_KINDS:
        if allow_tf32:  # no dots: float32 is one kernel whatever the TF32 setting
            continue
        label = "fp32" if elem == "fp32" else label
        for batch, sms in ((16, 132), (1, 132)):
            splits = da._num_splits_for(batch * DEC_HEADS, DEC_T_MAX, 2 * sms)
            block_n = da._block_n(DEC_T_MAX, splits, HEAD_DIM)
            num_warps, num_stages = da._launch_options(block_n, HEAD_DIM, dtype)
            cache = {"stride_k_b": DEC_HEADS * DEC_T_MAX * HEAD_DIM, "stride_k_h": DEC_T_MAX * HEAD_DIM,
                     "stride_k_t": HEAD_DIM, "stride_k_d": 1}
            cases.append(Case(
                "decode_attention", "_decode_attn_split_kernel", label,
                f"B={batch} T_max={DEC_T_MAX} splits={splits}", f"{block_n} keys w{num_warps} s{num_stages}",
                {"Q": elem, "K": elem, "V": elem, "LENGTHS": "i32", "OUT": elem, "PART_ACC": "fp32",
                 "PART_M": "fp32", "PART_L": "fp32"},
                {"stride_q_b": DEC_HEADS * HEAD_DIM, "stride_q_h": HEAD_DIM, "stride_q_d": 1, **cache,
                 **{k.replace("_k_", "_v_"): v for k, v in cache.items()}, "stride_len_b": 1,
                 "stride_out_b": DEC_HEADS * HEAD_DIM, "stride_out_h": HEAD_DIM, "stride_out_d": 1,
                 "H": DEC_HEADS, "T_MAX": DEC_T_MAX, "qk_scale": 0.18},
                {"HEAD_DIM": HEAD_DIM, "BLOCK_D": HEAD_DIM, "BLOCK_N": block_n, "NUM_SPLITS": splits,
                 "NUM_STAGES": num_stages},
                num_warps, 3, False,
            ))
            if splits > 1:
                block_s, merge_warps = da._merge_options(splits, HEAD_DIM)
                cases.append(Case(
                    "decode_attention", "_decode_attn_merge_kernel", label, f"B={batch} splits={splits}",
                    f"w{merge_warps}", {"PART_ACC": "fp32", "PART_M": "fp32", "PART_L": "fp32", "OUT": elem},
                    {"stride_out_b": DEC_HEADS * HEAD_DIM, "stride_out_h": HEAD_DIM, "stride_out_d": 1,
                     "H": DEC_HEADS},
                    {"HEAD_DIM": HEAD_DIM, "BLOCK_D": HEAD_DIM, "NUM_SPLITS": splits, "BLOCK_S": block_s},
                    merge_warps, 3, False,
                ))
    return cases


def log_mel_cases() -> list[Case]:
    """The log-mel kernel with the launcher's CUDA blocks, n_fft 1024 and 80 mels (Tortoise's), float32
    clips (the feature extractor's), with and without a split over the bins."""
    lm = LOG_MEL
    blocks = lm._cuda_blocks(N_FFT)
    qp = lm._padded_quarter(N_FFT, blocks)
    k_chunks = qp // blocks["BLOCK_K"]
    cases = []
    for k_split in sorted({1, k_chunks}):
        n = 30 * 22050
        frames = 1 + n // HOP
        cases.append(Case(
            "log_mel", "_log_mel_kernel", "fp32", f"n_fft={N_FFT} mels={N_MELS} K_SPLIT={k_split}",
            f"{blocks['BLOCK_T']}x{blocks['BLOCK_M']}x{blocks['BLOCK_K']} w{blocks['num_warps']}",
            {"WAV": "fp32", "WINDOW": "fp64", "TABLES": "fp32", "FB": "fp32", "NORMS": "fp32", "OUT": "fp32",
             "WS": "fp32", "COUNT": "i32"},
            {"stride_wav_b": n, "stride_wav_l": 1, "stride_window": 1, "stride_fb_f": N_MELS, "stride_fb_m": 1,
             "stride_norms": 1, "stride_out_b": N_MELS * frames, "stride_out_m": frames, "stride_out_t": 1,
             "n_samples": n, "period": 2 * (n - 1), "n_frames": frames, "n_mels": N_MELS, "hop_length": HOP,
             "k_chunks_per_split": k_chunks // k_split},
            {"N_FFT": N_FFT, "QP": qp, "HAS_NORMS": True, "LOG_CLAMP": lm.LOG_CLAMP, "K_SPLIT": k_split,
             "BLOCK_T": blocks["BLOCK_T"], "BLOCK_M": blocks["BLOCK_M"], "BLOCK_K": blocks["BLOCK_K"],
             "BLOCK_MEL": max(16, 1 << (N_MELS - 1).bit_length())},
            blocks["num_warps"], blocks.get("num_stages", 3), True,
        ))
    return cases


def all_cases() -> list[Case]:
    return rotary_cases() + decode_cases() + log_mel_cases()


# ----------------------------------------------------------------------------------------------
# Compiling
# ----------------------------------------------------------------------------------------------


EXIT_UNAVAILABLE = 3  # the exit status when this installation cannot compile for sm_90 at all


def cuda_backend_problem(*, interpreter_counts: bool = True) -> str | None:
    """Why this triton cannot compile for sm_90 here (None when it can): no triton, no CUDA backend,
    no runnable ptxas, or (with ``interpreter_counts``) Triton's interpreter switched on in this
    process, whose kernels are not compilable (run this module in a process without it)."""
    if triton is None:
        return f"triton does not import ({TRITON_IMPORT_ERROR})"
    if interpreter_counts and os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        return "TRITON_INTERPRET is on: Triton's interpreter replaces the compiler in this process"
    if "nvidia" not in TRITON_BACKENDS:
        return f"this triton has no CUDA backend (backends: {', '.join(sorted(TRITON_BACKENDS)) or 'none'})"
    try:
        ptxas = _ptxas_path()
    except Exception as err:  # depends on the installation
        return f"no ptxas for sm_90 ({err})"
    if not ptxas or not os.access(ptxas, os.X_OK):
        return f"no usable ptxas for sm_90 (looked for {ptxas!r})"
    try:
        subprocess.run([ptxas, "--version"], capture_output=True, check=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as err:
        return f"ptxas {ptxas} does not run ({err})"
    return None


def _ptxas_path() -> str:
    """The ptxas this triton uses for sm_90 (triton >= 3.7 picks its newer bundled ptxas for sm_90 and
    up; older versions have one ptxas, both honour TRITON_PTXAS_PATH)."""
    nvidia = importlib.import_module("triton.backends.nvidia.compiler")
    try:
        return nvidia.get_ptxas(CAPABILITY).path
    except TypeError:  # older triton: get_ptxas() takes no architecture
        return nvidia.get_ptxas().path


def ptxas_version() -> str:
    try:
        out = subprocess.run([_ptxas_path(), "--version"], capture_output=True, text=True, timeout=60).stdout
    except Exception as err:  # pragma: no cover - depends on the installation
        return f"unknown ({err})"
    m = re.search(r"release ([\d.]+), V([\d.]+)", out)
    return f"{m.group(2)} (CUDA {m.group(1)})" if m else out.strip().splitlines()[-1]


def _signature(fn, case: Case):
    """(signature, constexprs, attrs) for ``triton.compile``, as Triton's launcher specialises the
    arguments: pointers (16-byte aligned from torch's allocator) and integers that are multiples of 16
    get the divisibility hint, integers equal to 1 become the constant 1."""
    signature, constexprs, attrs = {}, {}, {}
    for i, name in enumerate(fn.arg_names):
        if name in case.constexprs:  # keyed by argument path, (index,), as every triton >= 3.3 takes them
            signature[name] = "constexpr"
            constexprs[(i,)] = case.constexprs[name]
        elif name in case.pointers:
            signature[name] = "*" + case.pointers[name]
            attrs[(i,)] = [["tt.divisibility", 16]]
        elif name in case.scalars:
            value = case.scalars[name]
            if isinstance(value, float):
                signature[name] = "fp32"
            elif value == 1:
                signature[name] = "constexpr"
                constexprs[(i,)] = 1
            else:
                signature[name] = "i32" if -2**31 <= value < 2**31 else "i64"
                if value % 16 == 0:
                    attrs[(i,)] = [["tt.divisibility", 16]]
        else:
            params = {p.name: p for p in fn.params}
            if name in params and params[name].is_constexpr and params[name].default is not None:
                continue  # a defaulted constexpr keeps its default
            raise KeyError(f"{case.kernel}: no value for argument {name!r}")
    return signature, constexprs, attrs


_PTXAS_LINE = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")
_REGS_LINE = re.compile(r"Used (\d+) registers")


def compile_case(case: Case) -> Row:
    """Compile one case for sm_90 and read its figures (never raises: a failure is the row's error)."""
    row = Row(case.op, case.kernel, case.dtype, case.variant, case.config, case.has_dots)
    fn = getattr(MODULES[case.op], case.kernel)
    t0 = time.perf_counter()
    log = io.StringIO()
    try:
        signature, constexprs, attrs = _signature(fn, case)
        src = ASTSource(fn, signature, constexprs, attrs)
        with contextlib.suppress(AttributeError):  # triton >= 3.4 prints ptxas -v's report on request
            triton.knobs.nvidia.dump_ptxas_log = True
        with contextlib.redirect_stdout(log):
            compiled = triton.compile(src, target=GPUTarget("cuda", CAPABILITY, WARP_SIZE),
                                      options={"num_warps": case.num_warps, "num_stages": case.num_stages})
    except Exception as err:
        row.error = f"{type(err).__name__}: {str(err).strip().splitlines()[0][:200] if str(err).strip() else ''}"
        row.seconds = time.perf_counter() - t0
        return row
    row.seconds = time.perf_counter() - t0
    ptx = compiled.asm["ptx"]
    row.shared = int(compiled.metadata.shared)
    row.wgmma = len(re.findall(r"^\s*wgmma\.mma_async", ptx, re.MULTILINE))
    row.mma = len(re.findall(r"^\s*mma\.sync", ptx, re.MULTILINE))
    report = log.getvalue()
    spills, regs = _PTXAS_LINE.search(report), _REGS_LINE.search(report)
    if spills is None or regs is None:  # this triton printed no report: run ptxas -v on the PTX ourselves
        report = _ptxas_report(ptx)
        spills, regs = _PTXAS_LINE.search(report), _REGS_LINE.search(report)
    if spills is None or regs is None:
        row.error = "no ptxas report"
        return row
    row.registers = int(regs.group(1))
    row.spill_stores, row.spill_loads = int(spills.group(1)), int(spills.group(2))
    return row


def _ptxas_report(ptx: str) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "kernel.ptx"
        path.write_text(ptx)
        arch = "sm_90a" if ".target sm_90a" in ptx else "sm_90"
        out = subprocess.run([_ptxas_path(), "-v", f"--gpu-name={arch}", str(path), "-o", str(path) + ".o"],
                             capture_output=True, text=True, timeout=600)
        return out.stdout + out.stderr


def _init_worker(cache_dir: str) -> None:
    os.environ["TRITON_CACHE_DIR"] = cache_dir  # the run's own empty cache: every case really compiles


def compile_all(cases: list[Case] | None = None, jobs: int | None = None) -> list[Row]:
    """Compile every case (default: ``all_cases()``) in ``jobs`` worker processes (default: the CPU
    count), into a temporary Triton cache removed afterwards; rows in the cases' order."""
    problem = cuda_backend_problem()
    if problem:
        raise RuntimeError(problem)
    cases = all_cases() if cases is None else cases
    jobs = max(1, jobs or os.cpu_count() or 1)
    rows: list[Row | None] = [None] * len(cases)
    with tempfile.TemporaryDirectory(prefix="clvp-sm90-cache-") as cache:
        # fork: the workers inherit the imported modules (no CUDA is initialised here, so it is safe)
        ctx = multiprocessing.get_context("fork")
        with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_init_worker,
                                                    initargs=(cache,)) as pool:
            futures = {pool.submit(compile_case, case): i for i, case in enumerate(cases)}
            for n, fut in enumerate(concurrent.futures.as_completed(futures), 1):
                i = futures[fut]
                rows[i] = fut.result()
                r = rows[i]
                progress(f"[{n}/{len(cases)}] {r.kernel} {r.dtype} {r.variant} {r.config}: "
                         + (r.error or f"{r.registers} regs, {r.spill_stores} B spilled, {r.shared} B shared"))
    return rows


# ----------------------------------------------------------------------------------------------
# The report
# ----------------------------------------------------------------------------------------------

HEADERS = ["kernel", "dtype", "variant", "config", "registers", "spills (B, stores / loads)", "shared (B)",
           "wgmma / mma", "tensor cores", "fits 227 KiB"]


def table_rows(rows: list[Row]) -> list[list]:
    out = []
    for r in rows:
        if r.error:
            out.append([r.kernel, r.dtype, r.variant, r.config, "-", "-", "-", "-", "-", f"compile failed: {r.error}"])
            continue
        if not r.has_dots:
            tc = "no dots"
        elif r.tensor_cores:
            tc = "yes"
        else:  # float32 with IEEE dots (the forced rotary path, log-mel) has no tensor-core form
            tc = "no (IEEE fp32)" if r.dtype in ("fp32 ieee", "fp32") else "NO"
        out.append([r.kernel, r.dtype, r.variant, r.config, r.registers, f"{r.spill_stores} / {r.spill_loads}",
                    r.shared, f"{r.wgmma} / {r.mma}", tc, "yes" if r.shared <= SHARED_LIMIT else "NO"])
    return out


def conditions_sm90(seconds: float, jobs: int, load: float) -> dict:
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "target": f"sm_{CAPABILITY} (GPUTarget('cuda', {CAPABILITY}, {WARP_SIZE})), compiled without a GPU",
        "triton": triton.__version__,
        "ptxas": f"{Path(_ptxas_path()).name} {ptxas_version()} (the one this triton runs for sm_90)",
        "python": platform.python_version(),
        "shared-memory limit": f"{SHARED_LIMIT} B (227 KiB per block)",
        "compile time": f"{seconds:.0f} s with {jobs} worker processes on {os.cpu_count()} CPUs, load average "
                        f"{load:.1f} at the start (a shared machine: the time scales with the load)",
    }


NOTES = """\
Registers and spills are ptxas's report for the kernel (`ptxas -v`); shared memory is Triton's
allocation for the block (software-pipelined tiles and layout conversions). Rows come from the
launchers' own configuration tables, so every config the autotuner or a fixed launch can pick is here
(D = 64, the real model's head dim). "fp32 tf32" is what the dispatch runs for float32 on CUDA when
torch allows TF32 (`torch.backends.cuda.matmul.allow_tf32`); "fp32 ieee" runs only when
CLVP_KERNELS=triton forces the kernels with TF32 disallowed: exact float32 dots compile to FMA loops
(no wgmma / mma) that hold whole tiles in registers, which only its small tiles keep from spilling.
Decode attention has no tl.dot (one query row: a broadcast product); the log-mel kernel's dots are
IEEE float32 by design (the DFT's quiet decades survive the log; kernels/log_mel.py), so neither shows
tensor-core instructions. Not timed: compiling says what fits, not what is fastest. Rule and
rationale: docs/speed.md.
"""


def main(argv=None) -> list[Row]:
    parser = bench_parser(__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=None, help="compile processes (default: the CPU count)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON to this file")
    args = parser.parse_args(argv)
    if args.jobs is not None and args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    problem = cuda_backend_problem()
    if problem:
        print(f"cannot compile for sm_90 here: {problem}", file=sys.stderr)
        raise SystemExit(EXIT_UNAVAILABLE)
    jobs = args.jobs or os.cpu_count() or 1
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    rows = compile_all(jobs=jobs)
    seconds = time.perf_counter() - t0
    info = conditions_sm90(seconds, jobs, load)
    if args.json is not None:
        args.json.write_text(json.dumps({"conditions": info, "rows": [dataclasses.asdict(r) for r in rows]},
                                        indent=1))
    write_result(STEM, "Triton kernels compiled for sm_90 (Hopper)", info, markdown_table(HEADERS, table_rows(rows)),
                 NOTES, results=results_dir(args))
    return rows


if __name__ == "__main__":
    main()
