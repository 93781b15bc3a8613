"""Cached decode attention (kernels/decode_attention.py): the flash-decoding kernel against the eager reference.

Without CUDA the kernel runs in Triton's interpreter (conftest sets TRITON_INTERPRET=1) on small
shapes; with CUDA the same properties run on the GPU, plus the decoder's full shape and a
CUDA-graph replay with changed lengths.

Tolerance (tests/_tolerances.py, flash-attn's rule): with ``out_ref`` the reference one precision
up (float32 for 16-bit inputs, float64 for float32 inputs) and ``out_pt`` the reference in the
tested dtype, the kernel may differ from ``out_ref`` by at most ``2 * max|out_pt - out_ref| + floor``.
The reference is torch's masked ``scaled_dot_product_attention``, sharing no code with the kernel.

Every cache position at or beyond a row's length holds NaN for the kernel (the reference gets a
clean copy): a chunk, tile or lane past the length that leaked into the result would show as NaN.
"""
import importlib
import subprocess
import sys

import pytest
import torch
from hypothesis import example, given

from clvp import kernels
from clvp.kernels.decode_attention import (_block_n, _decode_attention, _num_splits, decode_attention,
                                           decode_attention_ref)

from _asserts import assert_close_verbose
from _tolerances import allowed_error
from conftest import ROOT, requires_cuda
from strategies import decode_attention_cases

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def make_cache(clean: torch.Tensor, layout: str, lengths: list[int]) -> torch.Tensor:
    """A (B, H, T, D) cache view in ``layout`` holding ``clean`` on each row's valid prefix and NaN elsewhere."""
    B, H, T, D = clean.shape
    if layout == "contiguous":  # what the decoder allocates
        cache = torch.full_like(clean, float("nan"))
    elif layout == "padded":  # a window of a larger buffer: row stride D + 16, NaN all around
        cache = torch.full((B, H, T + 3, D + 16), float("nan"), dtype=clean.dtype, device=clean.device)
        cache = cache[:, :, :T, :D]
    elif layout == "bthd":  # (B, T, H, D) storage viewed as (B, H, T, D)
        cache = torch.full((B, T, H, D), float("nan"), dtype=clean.dtype, device=clean.device).permute(0, 2, 1, 3)
    else:
        raise AssertionError(layout)
    for b, n in enumerate(lengths):
        cache[b, :, :n] = clean[b, :, :n]
    return cache


def make_inputs(case: dict, device=DEVICE):
    gen = torch.Generator().manual_seed(case["seed"])
    B, H, T, D = case["batch"], case["heads"], case["t_max"], case["head_dim"]
    dtype = case["dtype"]
    if case["layout"] == "contiguous":
        q = torch.randn(B, H, D, generator=gen).to(device=device, dtype=dtype)
    else:  # the query sliced out of a fused (B, H, 3, D) projection: strides (3HD, 3D, 1)
        q = torch.randn(B, H, 3, D, generator=gen).to(device=device, dtype=dtype)[:, :, 1]
    k_clean, v_clean = torch.randn(2, B, H, T, D, generator=gen).to(device=device, dtype=dtype)
    k = make_cache(k_clean, case["layout"], case["lengths"])
    v = make_cache(v_clean, case["layout"], case["lengths"])
    lengths = torch.tensor(case["lengths"], dtype=case["lengths_dtype"], device=device)
    return q, k, v, lengths, k_clean, v_clean


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return bool(((a == b) | (a.isnan() & b.isnan())).all())


def check_against_reference(case: dict, launch=None, device=DEVICE):
    q, k, v, lengths, k_clean, v_clean = make_inputs(case, device)
    originals = [t.clone() for t in (q, k, v, lengths)]
    dtype, scale = case["dtype"], case["scale"]

    if launch is None:
        out = _decode_attention(q, k, v, lengths, scale, case["num_splits"], case["block_n"])
    else:
        out = launch(q, k, v, lengths, scale=scale)

    up = torch.float64 if dtype == torch.float32 else torch.float32
    out_ref = decode_attention_ref(q.to(up), k_clean.to(up), v_clean.to(up), lengths, scale=scale)
    out_pt = decode_attention_ref(q, k_clean, v_clean, lengths, scale=scale)
    atol = allowed_error(out_pt, out_ref, dtype)
    err = (out.double() - out_ref.double()).abs().max().item()
    print(f"{case}: max|out - ref| = {err:.3g}, allowed {atol:.3g}")

    assert out.shape == q.shape and out.dtype == dtype and out.device == q.device
    assert torch.isfinite(out).all(), "NaN/inf in the output: a position past a row's length was read"
    assert_close_verbose(out, out_ref, atol=atol, what=f"decode_attention {dtype}")
    for before, after in zip(originals, (q, k, v, lengths)):
        assert same(before, after), "an input was modified"


def case(**overrides):
    base = dict(batch=2, heads=2, t_max=37, head_dim=64, lengths=[37, 5], lengths_dtype=torch.int64,
                num_splits=2, block_n=16, layout="contiguous", scale=None, dtype=torch.float32, seed=0)
    base.update(overrides)
    return base


@example(case=case(batch=1, heads=1, t_max=1, lengths=[1], num_splits=1, dtype=torch.float16))  # first step
@example(case=case(batch=3, heads=3, t_max=70, lengths=[1, 70, 33], num_splits=8, dtype=torch.bfloat16))  # empty chunks
@example(case=case(t_max=5, lengths=[5, 1], num_splits=8, block_n=64, layout="bthd"))  # more chunks than keys
@example(case=case(batch=4, heads=1, t_max=64, lengths=[64, 63, 17, 16], num_splits=3, block_n=16,
                   lengths_dtype=torch.int32, dtype=torch.float16))  # lengths on and off tile edges
@example(case=case(head_dim=24, layout="padded", scale=0.3, dtype=torch.bfloat16))  # head dim not a power of 2
@given(case=decode_attention_cases())
def test_matches_reference(case):
    check_against_reference(case)


@pytest.mark.parametrize(
    "overrides",
    [
        dict(batch=4, heads=3, t_max=70, lengths=[1, 70, 40, 2], dtype=torch.bfloat16),
        dict(batch=1, heads=1, t_max=66, lengths=[66], dtype=torch.float16, layout="bthd"),
        dict(batch=2, heads=2, t_max=9, lengths=[3, 9], head_dim=128, scale=0.3),
    ],
)
def test_public_launcher_matches_reference(overrides):
    """The launcher with its own split heuristic (on the CPU: up to 4 chunks when B * H is small)."""
    check_against_reference(case(**overrides), launch=decode_attention)


def test_single_key_returns_its_value_exactly():
    """Math, not the reference: a row of length 1 has softmax weight exactly 1 on key 0, so the output
    is v[b, :, 0] bit for bit, whatever the split count (all other chunks are empty)."""
    gen = torch.Generator().manual_seed(3)
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        q = (torch.randn(2, 2, 32, generator=gen) * 4).to(device=DEVICE, dtype=dtype)
        k, v = torch.randn(2, 2, 2, 40, 32, generator=gen).to(device=DEVICE, dtype=dtype)
        lengths = torch.tensor([1, 1], device=DEVICE)
        for num_splits in (1, 4):
            out = _decode_attention(q, k, v, lengths, None, num_splits, 16)
            assert torch.equal(out, v[:, :, 0]), f"{dtype}, {num_splits} splits"


def test_zero_query_averages_the_valid_values():
    """Math, not the reference: with q = 0 every valid key weighs 1/length, so the output is the
    mean of v over each row's prefix, and values past the length do not count."""
    gen = torch.Generator().manual_seed(4)
    k, v = torch.randn(2, 3, 2, 50, 64, generator=gen).to(DEVICE)
    lengths = torch.tensor([50, 7, 23], device=DEVICE)
    expected = torch.stack([v[b, :, :n].mean(dim=1) for b, n in enumerate(lengths.tolist())])  # (B, H, D)
    for num_splits in (1, 3, 8):
        out = _decode_attention(torch.zeros(3, 2, 64, device=DEVICE), k, v, lengths, None, num_splits, 16)
        assert_close_verbose(out, expected, atol=1e-6, what=f"mean of values, {num_splits} splits")


def test_dispatch_runs_the_kernel(kernels_backend, monkeypatch):
    """kernels.decode_attention with CLVP_KERNELS=triton goes through this launcher, not the reference."""
    q, k, v, lengths, _, _ = make_inputs(case(lengths=[37, 20]))
    expected = decode_attention(q, k, v, lengths)
    kernels_backend("triton")

    def _no_ref(*args, **kwargs):
        raise AssertionError("the dispatch called the eager reference under CLVP_KERNELS=triton")

    monkeypatch.setattr(kernels, "decode_attention_ref", _no_ref)
    assert torch.equal(kernels.decode_attention(q, k, v, lengths), expected)


def test_split_heuristic_depends_on_shapes_only(monkeypatch):
    """The documented split counts for a 132-SM GPU (2 programs per SM), and small counts on the CPU."""
    # the module itself (the attribute clvp.kernels.decode_attention is the dispatch function)
    monkeypatch.setattr(importlib.import_module("clvp.kernels.decode_attention"), "_sm_count", lambda index: 132)
    cuda = torch.device("cuda", 0)
    # 16 heads: B=1 -> ceil(264/16) = 17 chunks, but at most one per 32 keys of T_max
    assert _num_splits(16, 1000, cuda) == 17
    assert _num_splits(16, 128, cuda) == 4
    assert _num_splits(16 * 16, 512, cuda) == 2  # B=16: ceil(264/256)
    assert _num_splits(64 * 16, 1000, cuda) == 1  # B=64 fills the GPU alone
    assert _num_splits(1, 10_000, cuda) == 64  # never more than 64 chunks
    cpu = torch.device("cpu")
    assert [_num_splits(bh, 70, cpu) for bh in (1, 2, 3, 4, 12)] == [3, 2, 2, 1, 1]
    # tiles: a chunk's worth of keys, 16 to 64 for D = 64, 32 for D = 128
    assert _block_n(1000, 17, 64) == 64
    assert _block_n(1000, 32, 64) == 32
    assert _block_n(512, 3, 64) == 64
    assert _block_n(1000, 1, 128) == 32
    assert _block_n(5, 1, 64) == 16


def _bad(**kw):
    q = torch.randn(2, 3, 32)
    k = torch.randn(2, 3, 10, 32)
    args = dict(q=q, k=k, v=k, lengths=torch.tensor([10, 4]), scale=None)
    args.update(kw)
    return args


@pytest.mark.parametrize(
    "args, error, match",
    [
        (_bad(q=torch.randn(2, 3, 1, 32)), ValueError, r"q must be \(B, H, D\)"),
        (_bad(k=torch.randn(2, 3, 32)), ValueError, "must both be"),
        (_bad(v=torch.randn(2, 3, 11, 32)), ValueError, "must both be"),
        (_bad(k=torch.randn(2, 4, 10, 32), v=torch.randn(2, 4, 10, 32)), ValueError, "do not match q"),
        (_bad(q=torch.randn(2, 3, 32).double()), TypeError, "not supported"),
        (_bad(k=torch.randn(2, 3, 10, 32).half()), TypeError, "share one dtype"),
        (_bad(lengths=torch.tensor([10.0, 4.0])), TypeError, "int32 or int64"),
        (_bad(lengths=torch.tensor([10, 4, 3])), ValueError, r"lengths must be \(B,\)"),
        (_bad(lengths=torch.tensor([11, 4])), ValueError, r"lie in \[1, T_max=10\]"),
        (_bad(lengths=torch.tensor([10, 0])), ValueError, r"lie in \[1, T_max=10\]"),
        (_bad(q=torch.randn(2, 3, 512), k=torch.randn(2, 3, 10, 512), v=torch.randn(2, 3, 10, 512)),
         ValueError, "head dim"),
        (_bad(scale=torch.tensor(0.5)), TypeError, "scale must be"),
        (_bad(lengths=[10, 4]), TypeError, "must be a torch.Tensor"),
    ],
)
def test_rejects_bad_inputs(args, error, match):
    with pytest.raises(error, match=match):
        decode_attention(args["q"], args["k"], args["v"], args["lengths"], scale=args["scale"])


def test_module_imports_without_triton():
    """The eager reference must work where triton is not installed; the launcher then says what to use."""
    code = (
        "import sys; sys.modules['triton'] = None\n"  # makes `import triton` raise ImportError
        "import torch\n"
        "from kernels.decode_attention import decode_attention, decode_attention_ref\n"
        "q, k = torch.randn(1, 2, 16), torch.randn(1, 2, 5, 16)\n"
        "assert decode_attention_ref(q, k, k, torch.tensor([3])).shape == q.shape\n"
        "try:\n    decode_attention(q, k, k, torch.tensor([3]))\nexcept RuntimeError as e:\n"
        "    assert 'needs triton' in str(e)\n"
        "else:\n    raise SystemExit('no error without triton')\n"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr


def full_case(dtype, layout="contiguous", seed=0):
    """The decoder's shape: 16 candidates, 16 heads of 64, a 1000-position cache, ragged rows."""
    lengths = [1, 1000, 999, 512, 513, 64, 65, 2, 300, 700, 128, 129, 33, 800, 1000, 17]
    return case(batch=16, heads=16, t_max=1000, head_dim=64, lengths=lengths, layout=layout, dtype=dtype, seed=seed)


@requires_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_matches_reference_full_shapes_cuda(dtype):
    check_against_reference(full_case(dtype), launch=decode_attention)
    check_against_reference(full_case(dtype, layout="bthd", seed=1), launch=decode_attention)
    for num_splits in (1, 7, 64):
        check_against_reference(dict(full_case(dtype, seed=2), num_splits=num_splits, block_n=64))


@requires_cuda
@pytest.mark.cuda
def test_cuda_graph_replay_with_new_lengths():
    """Captured once, replayed with new lengths and queries written in place: the launcher must not
    read lengths on the host (capture would fail) nor bake them into the graph."""
    c = full_case(torch.bfloat16)
    q, k, v, lengths, k_clean, v_clean = make_inputs(c)
    k.copy_(k_clean)  # a real cache: valid everywhere, so any lengths may be replayed
    v.copy_(v_clean)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm-up (compilation) outside the capture, as CUDA graphs require
        decode_attention(q, k, v, lengths)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = decode_attention(q, k, v, lengths)
    gen = torch.Generator().manual_seed(5)
    for step in range(4):
        new_lengths = torch.randint(1, 1001, (16,), generator=gen)
        new_lengths[step] = 1
        lengths.copy_(new_lengths)
        q.copy_(torch.randn(q.shape, generator=gen))
        graph.replay()
        out_ref = decode_attention_ref(q.float(), k.float(), v.float(), lengths)
        out_pt = decode_attention_ref(q, k, v, lengths)
        assert_close_verbose(out, out_ref, atol=allowed_error(out_pt, out_ref, torch.bfloat16), what=f"replay {step}")


@pytest.mark.parametrize("native", [True, False], ids=["native_bf16", "emulated"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_cpu_half_path_is_as_close_as_sdpa(monkeypatch, dtype, native):
    """bfloat16 CPU inference with native bfloat16 products takes the float32-score attention of
    kernels/_attention_cpu.py: against float32 it is at most about as wrong as torch's own SDPA in that
    dtype, with per-row lengths, and a cache cut to its valid prefix (what a decode step passes on the
    CPU) gives the same as the whole. float16, or no native bfloat16, stays on SDPA (bit for bit)."""
    from clvp.kernels import _attention_cpu

    monkeypatch.setattr(_attention_cpu, "NATIVE_BF16", native)
    gen = torch.Generator().manual_seed(4)
    b, h, t_max, d = 3, 4, 50, 64
    q = torch.randn(b, h, d, generator=gen).to(dtype)
    k, v = (torch.randn(b, h, t_max, d, generator=gen).to(dtype) for _ in range(2))
    lengths = torch.tensor([50, 7, 1], dtype=torch.int32)
    mask = (torch.arange(t_max)[None, :] < lengths[:, None])[:, None, None, :]  # (B, 1, 1, T_max)
    with torch.no_grad():
        got = decode_attention_ref(q, k, v, lengths)
        ref = decode_attention_ref(q.float(), k.float(), v.float(), lengths)
        sdpa = torch.nn.functional.scaled_dot_product_attention(q[:, :, None], k, v, attn_mask=mask)[:, :, 0]
        same = torch.full((b,), 20, dtype=torch.int32)
        whole, cut = decode_attention_ref(q, k, v, same), decode_attention_ref(q, k[:, :, :20], v[:, :, :20], same)
    assert got.dtype == dtype and got.shape == (b, h, d)
    if dtype == torch.bfloat16 and native:
        assert not torch.equal(got, sdpa)  # the CPU path, not SDPA
        assert (got.float() - ref).abs().max().item() <= allowed_error(sdpa, ref, dtype)
        assert torch.equal(whole, cut)
    else:
        assert torch.equal(got, sdpa)
        torch.testing.assert_close(whole, cut, rtol=0, atol=2 * torch.finfo(dtype).eps)
