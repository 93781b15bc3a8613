"""Every Triton kernel config the launchers can pick, compiled for Hopper (sm_90) without a GPU
(bench/compile_sm90.py), and the float32 dispatch rule that keeps the exact-float32 kernels off CUDA.

The compile runs once, in a subprocess without Triton's interpreter (conftest switches it on here,
and interpreted kernels cannot be compiled), writing its rows as JSON into a temporary folder. What it
must show: every config fits sm_90's 227 KiB of shared memory; nothing the dispatch runs by default
spills registers (bfloat16, float16, float32 with TF32 dots, decode attention, log-mel); every 16-bit
and TF32 dot is a tensor-core instruction (wgmma or mma in the PTX), and the IEEE float32 dots are not
(they are exact). Skipped only where triton has no CUDA backend or no runnable ptxas.
"""
import importlib
import json
import os
import subprocess
import sys
import types

import pytest
import torch

from clvp import kernels
from clvp.cli import _device_and_dtype, default_dtype

compile_sm90 = importlib.import_module("clvp.bench.compile_sm90")
rotary = importlib.import_module("clvp.kernels.rotary_attention")

COMPILE_TIMEOUT = 1200  # seconds: about 2 minutes on 2 idle cores, far more on a loaded machine


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    problem = compile_sm90.cuda_backend_problem(interpreter_counts=False)
    if problem:
        pytest.skip(f"cannot compile for sm_90 with this triton: {problem}")
    out = tmp_path_factory.mktemp("sm90") / "rows.json"
    env = {**os.environ, "TRITON_INTERPRET": "0"}
    proc = subprocess.run([sys.executable, "-m", "clvp.bench.compile_sm90", "--json", str(out)], env=env,
                          cwd=out.parent, capture_output=True, text=True, timeout=COMPILE_TIMEOUT)
    if proc.returncode == compile_sm90.EXIT_UNAVAILABLE:
        pytest.skip(proc.stderr.strip().splitlines()[-1])
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert not any(out.parent.glob("*.md")), "without --save the module must not write a result file"
    return json.loads(out.read_text())["rows"]


def _where(r) -> str:
    return f"{r['kernel']} {r['dtype']} {r['variant']} {r['config']}"


def test_every_case_compiles(rows):
    failed = [f"{_where(r)}: {r['error']}" for r in rows if r["error"]]
    assert not failed, "\n".join(failed)


def test_every_config_fits_sm90_shared_memory(rows):
    over = [f"{_where(r)}: {r['shared']} B" for r in rows if not r["error"] and r["shared"] > compile_sm90.SHARED_LIMIT]
    assert not over, f"over sm_90's {compile_sm90.SHARED_LIMIT} B per block:\n" + "\n".join(over)


def test_nothing_the_dispatch_runs_by_default_spills(rows):
    """Everything but the IEEE float32 rotary kernels, which only CLVP_KERNELS=triton runs."""
    checked = [r for r in rows if not r["error"] and r["dtype"] != "fp32 ieee"]
    assert {r["dtype"] for r in checked} >= {"bf16", "fp16", "fp32 tf32", "fp32"}
    spilled = [f"{_where(r)}: {r['registers']} registers, {r['spill_stores']} B stored / {r['spill_loads']} B loaded"
               for r in checked if r["spill_stores"] or r["spill_loads"]]
    assert not spilled, "register spills:\n" + "\n".join(spilled)


def test_16_bit_and_tf32_dots_use_tensor_cores(rows):
    dots = [r for r in rows if not r["error"] and r["has_dots"] and r["dtype"] in ("bf16", "fp16", "fp32 tf32")]
    assert {r["kernel"] for r in dots} == {"_rotary_attention_kernel", "_rotary_attention_bwd_dkdv_kernel",
                                           "_rotary_attention_bwd_dq_kernel"}
    scalar = [_where(r) for r in dots if not (r["wgmma"] or r["mma"])]
    assert not scalar, "dots without wgmma/mma instructions:\n" + "\n".join(scalar)


def test_ieee_float32_dots_stay_exact(rows):
    """DOT_PRECISION reaches the kernels: without allow_tf32 no float32 dot may round to TF32."""
    ieee = [r for r in rows if not r["error"] and r["dtype"] == "fp32 ieee" and r["has_dots"]]
    assert ieee
    rounded = [_where(r) for r in ieee if r["wgmma"] or r["mma"]]
    assert not rounded, "IEEE float32 dots compiled to tensor-core (TF32) instructions:\n" + "\n".join(rounded)


def test_the_cases_are_the_launchers_configs():
    """The check compiles what the launchers hold, for every dtype the dispatch sends (no GPU needed)."""
    cases = compile_sm90.all_cases()
    for label, _, dtype, allow_tf32 in compile_sm90.INPUT_KINDS:
        fwd = {c.config for c in cases if c.kernel == "_rotary_attention_kernel" and c.dtype == label}
        assert fwd == {f"{bm}x{bn} w{w} s{s}" for bm, bn, w, s in rotary._cuda_configs(dtype, allow_tf32)}
        (dkdv, dq) = rotary._bwd_cuda_config(compile_sm90.HEAD_DIM, dtype, allow_tf32)
        for kernel, (bm, bn, w, s) in (("_rotary_attention_bwd_dkdv_kernel", dkdv),
                                       ("_rotary_attention_bwd_dq_kernel", dq)):
            assert {c.config for c in cases if c.kernel == kernel and c.dtype == label} == {f"{bm}x{bn} w{w} s{s}"}
    assert {c.kernel for c in cases} >= {"_decode_attn_split_kernel", "_decode_attn_merge_kernel", "_log_mel_kernel",
                                         "_rotary_attention_bwd_preprocess"}


def test_no_listed_config_is_over_the_limit_by_arithmetic():
    """A lower bound that needs no compiler: the pipelined K and V tiles alone (num_stages copies of
    BLOCK_N x D elements each) must fit, for every forward config of every dot kind at D = 64."""
    for kind, configs in rotary._CUDA_CONFIGS.items():
        size = 2 if kind == "16-bit" else 4
        for bm, bn, w, s in configs:
            assert s * 2 * bn * compile_sm90.HEAD_DIM * size <= compile_sm90.SHARED_LIMIT, (kind, bm, bn, w, s)


# ----------------------------------------------------------------------------------------------
# The float32 rule (kernels/__init__.py): TF32 kernel when torch allows TF32, else the reference
# ----------------------------------------------------------------------------------------------


def _cuda_like(dtype):
    """What ``use_triton`` reads of a tensor (its device and dtype), for a CUDA tensor on a machine without one."""
    return types.SimpleNamespace(is_cuda=True, dtype=dtype)


@pytest.fixture
def tf32():
    """Set torch's TF32 switch for one test, restored after it. Not through monkeypatch: the switch is
    a property of torch's cuBLAS module object, which monkeypatch cannot always read back (it then
    tries to delete the attribute on undo, fails, and leaves the test's other patches, such as
    CLVP_KERNELS, in place for the rest of the session)."""
    before = torch.backends.cuda.matmul.allow_tf32

    def _set(allowed: bool):
        torch.backends.cuda.matmul.allow_tf32 = allowed

    yield _set
    torch.backends.cuda.matmul.allow_tf32 = before


@pytest.mark.skipif(not kernels.HAS_TRITON, reason="triton is not installed")
def test_auto_sends_float32_attention_to_the_reference_unless_tf32(monkeypatch, tf32):
    monkeypatch.delenv("CLVP_KERNELS", raising=False)
    tf32(False)
    assert kernels.use_triton(_cuda_like(torch.float32), float32_dots=True) is False
    assert kernels.use_triton(_cuda_like(torch.float32)) is True  # no dots (decode attention): the kernel
    assert kernels.use_triton(_cuda_like(torch.bfloat16), float32_dots=True) is True
    assert kernels.use_triton(_cuda_like(torch.float16), float32_dots=True) is True
    tf32(True)
    assert kernels.tf32_allowed() is True
    assert kernels.use_triton(_cuda_like(torch.float32), float32_dots=True) is True
    torch.set_float32_matmul_precision("highest")  # torch's other spelling of the same switch
    assert kernels.tf32_allowed() is False
    torch.set_float32_matmul_precision("high")
    try:
        assert kernels.tf32_allowed() is True
    finally:
        torch.set_float32_matmul_precision("highest")
    assert kernels.use_triton(torch.zeros(1), float32_dots=True) is False  # CPU tensors: the reference


@pytest.mark.skipif(not kernels.HAS_TRITON, reason="triton is not installed")
def test_forced_triton_keeps_float32_attention_on_the_kernel(monkeypatch, tf32):
    monkeypatch.setenv("CLVP_KERNELS", "triton")
    tf32(False)
    assert kernels.use_triton(_cuda_like(torch.float32), float32_dots=True) is True
    monkeypatch.setenv("CLVP_KERNELS", "eager")
    tf32(True)
    assert kernels.use_triton(_cuda_like(torch.float32), float32_dots=True) is False


@pytest.mark.skipif(not kernels.HAS_TRITON, reason="triton is not installed")
@pytest.mark.parametrize("allowed", [False, True])
def test_the_dispatch_passes_the_tf32_setting_to_the_kernel(monkeypatch, tf32, allowed):
    """The Triton path gets allow_tf32 = torch's setting; the kernel's float32 dots follow it."""
    monkeypatch.setenv("CLVP_KERNELS", "triton")
    tf32(allowed)
    seen = {}

    def op(*args, **kwargs):
        seen.update(kwargs)
        return rotary.rotary_attention_ref(*args[:6], scale=kwargs.get("scale"))

    monkeypatch.setattr(kernels, "_rotary_attention_triton", op)
    q = torch.randn(1, 2, 8, 16)  # (B, H, T, D)
    kernels.rotary_attention(q, q, q)
    assert seen["allow_tf32"] is allowed
    meta = rotary._kernel_meta(16, torch.float32, 0, False, emulate_bf16=False, allow_tf32=allowed)
    assert meta["DOT_PRECISION"] == ("tf32" if allowed else "ieee")
    emulated = rotary._kernel_meta(16, torch.bfloat16, 0, False, emulate_bf16=True, allow_tf32=allowed)
    assert emulated["DOT_PRECISION"] == "ieee"  # the interpreter's bf16 carriers: exact products


# ----------------------------------------------------------------------------------------------
# The CLI's default dtype: bfloat16 on CUDA, float32 elsewhere, --dtype fp32 on request
# ----------------------------------------------------------------------------------------------


def test_cli_default_dtype_rule():
    assert default_dtype("cuda") == "bf16"
    assert default_dtype("cpu") == "fp32"


def test_cli_device_and_dtype(monkeypatch):
    assert _device_and_dtype(None, None) == (torch.device("cpu"), torch.float32)
    assert _device_and_dtype("cpu", "bf16")[1] == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # resolving "cuda" allocates nothing
    assert _device_and_dtype("cuda", None) == (torch.device("cuda"), torch.bfloat16)
    assert _device_and_dtype("cuda:0", None)[1] == torch.bfloat16
    assert _device_and_dtype("cuda", "fp32")[1] == torch.float32
    assert _device_and_dtype("cuda", "fp16")[1] == torch.float16
