"""Fused rotary attention (kernels/rotary_attention.py): the Triton kernel against the eager reference.

On CPU the kernel runs in Triton's interpreter (conftest sets TRITON_INTERPRET=1), so the shapes are
small and the examples bounded; the full CLVP shapes run under ``@requires_cuda``.

Tolerance (tests/_tolerances.py, flash-attn's rule): with ``out_ref`` the reference one precision
up (float32 for 16-bit inputs, float64 for float32 inputs) and ``out_pt`` the reference in the tested
dtype, the kernel may differ from ``out_ref`` by at most ``2 * max|out_pt - out_ref| + floor``.
The reference's rotation math is independent of the kernel's (``torch.cat`` of the rotated halves vs
the kernel's two half tiles), and its attention is torch's ``scaled_dot_product_attention``.

The backward (``rotary_attention_autograd``, the Triton dK/dV and dQ kernels) is checked the same way
against the reference's autograd: dq, dk, dv from ``torch.autograd.grad`` through
``rotary_attention_ref`` one precision up (``grad_ref``) and in the tested dtype (``grad_pt``), the
same rule and floors. The reference's own autograd is checked by ``gradcheck`` in float64.
"""
import subprocess
import sys

import pytest
import torch
from hypothesis import example, given

from clvp import kernels
from clvp.kernels.rotary_attention import (apply_rotary_ref, rotary_attention, rotary_attention_autograd,
                                           rotary_attention_backward, rotary_attention_ref, rotary_tables)

from _asserts import assert_close_verbose
from _tolerances import allowed_error
from conftest import ROOT, requires_cuda
from strategies import rotary_attention_cases, rotary_attention_grad_cases

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # CPU: Triton's interpreter (conftest)


def make_mask(kind: str, batch: int, length: int, dtype, gen: torch.Generator, device="cpu"):
    """(B, T) key-padding mask, nonzero = keep; every row keeps at least one key."""
    if kind == "none":
        return None
    pos = torch.arange(length)
    if kind == "lengths":  # right padding: a fully padded tail after each row's length
        lengths = torch.randint(1, length + 1, (batch,), generator=gen)
        lengths[0] = length  # one unpadded row, as in a real batch
        keep = pos[None, :] < lengths[:, None]
    elif kind == "random":  # holes anywhere, plus one guaranteed key per row
        keep = torch.rand(batch, length, generator=gen) < 0.6
        keep[torch.arange(batch), torch.randint(0, length, (batch,), generator=gen)] = True
    elif kind == "late":  # only the last <= 3 keys: whole leading key blocks are masked
        keep = (pos >= length - 3)[None, :].expand(batch, length).clone()
    else:
        raise AssertionError(kind)
    return keep.to(device=device, dtype=dtype)


def make_inputs(case: dict, device=DEVICE):
    gen = torch.Generator().manual_seed(case["seed"])
    b, h, t, d = case["batch"], case["heads"], case["length"], case["head_dim"]
    x = torch.randn(3, b, t, h, d, generator=gen).to(device=device, dtype=case["dtype"])  # (3, B, T, H, D)
    if case["layout"] == "bthd":  # what the model passes: (B, T, H, D) projections viewed as (B, H, T, D)
        q, k, v = (y.permute(0, 2, 1, 3) for y in x.unbind(0))
    else:
        q, k, v = (y.transpose(1, 2).contiguous() for y in x.unbind(0))
    cos = sin = None
    if case["rot_dim"]:
        cos, sin = rotary_tables(t, case["rot_dim"], device)
    mask = make_mask(case["mask"], b, t, case["mask_dtype"], gen, device)
    return q, k, v, cos, sin, mask


def check_against_reference(case: dict, device=DEVICE):
    q, k, v, cos, sin, mask = make_inputs(case, device)
    originals = [t.clone() if t is not None else None for t in (q, k, v, cos, sin, mask)]
    dtype, scale = case["dtype"], case["scale"]

    out = rotary_attention(q, k, v, cos, sin, mask, scale=scale)

    up = torch.float64 if dtype == torch.float32 else torch.float32
    out_ref = rotary_attention_ref(q.to(up), k.to(up), v.to(up), cos, sin, mask, scale=scale)
    out_pt = rotary_attention_ref(q, k, v, cos, sin, mask, scale=scale)
    atol = allowed_error(out_pt, out_ref, dtype)
    err = (out.double() - out_ref.double()).abs().max().item()
    print(f"{case}: max|out - ref| = {err:.3g}, allowed {atol:.3g}")

    assert out.shape == q.shape and out.dtype == dtype and out.device == q.device
    # the output is a (B, H, T, D) view of a contiguous (B, T, H, D) buffer: merging heads is free
    assert out.transpose(1, 2).is_contiguous()
    assert_close_verbose(out, out_ref, atol=atol, what=f"rotary_attention {dtype}")
    for before, after in zip(originals, (q, k, v, cos, sin, mask)):
        assert before is None or torch.equal(before, after), "an input was modified"


def case(**overrides):
    base = dict(batch=2, heads=2, length=37, head_dim=64, rot_dim=32, layout="bthd", mask="lengths",
                mask_dtype=torch.bool, scale=None, dtype=torch.float32, seed=0)
    base.update(overrides)
    return base


@example(case=case(length=67, dtype=torch.bfloat16))  # CLVP's layout: R = 32 of D = 64, padded rows
@example(case=case(batch=1, heads=1, length=1, head_dim=32, rot_dim=32, mask="none", dtype=torch.float16))  # R == D
@example(case=case(batch=3, length=70, mask="late", mask_dtype=torch.float32))  # leading key blocks fully masked
@example(case=case(heads=3, length=17, rot_dim=0, mask="none", layout="bhtd"))  # conditioning encoder: no rotary
@example(case=case(length=32, rot_dim=16, mask="random", mask_dtype=torch.int64, scale=0.3, dtype=torch.float16))
@example(case=case(length=48, head_dim=32, rot_dim=32, mask="lengths", dtype=torch.bfloat16, layout="bhtd"))
@given(case=rotary_attention_cases())
def test_matches_reference(case):
    check_against_reference(case)


def test_rotary_moves_scores_and_values():
    """Math check independent of both implementations: a rotary width of 0 equals plain SDPA, and a
    non-zero width changes the output (q, k *and* v are rotated, docs/model.md §2.1)."""
    gen = torch.Generator().manual_seed(1)
    q, k, v = torch.randn(3, 1, 2, 20, 32, generator=gen).to(DEVICE)
    plain = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    assert_close_verbose(rotary_attention(q, k, v), plain, atol=1e-5, what="no rotary")
    cos, sin = rotary_tables(20, 32, DEVICE)
    # with all scores equal (q = 0) the output is the mean of the *rotated* values
    zero_q = torch.zeros_like(q)
    mean_rot_v = apply_rotary_ref(v, cos, sin).mean(dim=2, keepdim=True).expand_as(v)
    assert_close_verbose(rotary_attention(zero_q, k, v, cos, sin), mean_rot_v, atol=1e-5, what="mean of rot(v)")
    assert not torch.allclose(rotary_attention(zero_q, k, v, cos, sin), v.mean(dim=2, keepdim=True).expand_as(v))


def test_masked_keys_are_ignored():
    """Changing the values at masked key positions must not change the output."""
    gen = torch.Generator().manual_seed(2)
    q, k, v = torch.randn(3, 2, 1, 40, 64, generator=gen).to(DEVICE)
    cos, sin = rotary_tables(40, 32, DEVICE)
    mask = (torch.arange(40)[None, :] < torch.tensor([40, 9])[:, None]).to(DEVICE)  # row 1 keeps 9 keys
    out = rotary_attention(q, k, v, cos, sin, mask)
    k2, v2 = k.clone(), v.clone()
    k2[1, :, 9:] = 1e3
    v2[1, :, 9:] = -1e3
    assert torch.equal(rotary_attention(q, k2, v2, cos, sin, mask), out)


def test_rotation_is_the_documented_half_split():
    """docs/model.md §2.1 written out: with R = 4 of D = 6 and x = e0 (first channel of the first
    half), position t gives channel 0 = cos(t * f0) and channel 2 (its partner in the second half) =
    sin(t * f0), f0 = 10000^0 = 1; the channels past R pass through unchanged."""
    t = torch.arange(9, dtype=torch.float64)
    x = torch.zeros(1, 1, 9, 6, dtype=torch.float64)
    x[..., 0] = 1.0
    x[..., 4] = 7.0
    cos, sin = rotary_tables(9, 4)
    out = apply_rotary_ref(x, cos, sin)
    assert_close_verbose(out[0, 0, :, 0], torch.cos(t), atol=1e-6, what="cos(t)")
    assert_close_verbose(out[0, 0, :, 2], torch.sin(t), atol=1e-6, what="sin(t)")
    assert torch.equal(out[..., [1, 3]], torch.zeros(1, 1, 9, 2, dtype=torch.float64))
    assert torch.equal(out[..., 4:], x[..., 4:])
    assert x[..., 0].eq(1).all() and x[..., 2].eq(0).all()  # the input is left alone


@example(case=case(length=67, dtype=torch.bfloat16))  # CLVP's layout: R = 32 of D = 64, padded rows
@example(case=case(length=40, head_dim=32, rot_dim=32, mask="none", layout="bhtd", dtype=torch.float16))  # R == D
@given(case=rotary_attention_cases())
def test_in_place_reference_matches(case):
    """``in_place=True`` (what the encoders pass for their fresh projections) gives the reference's
    output bit for bit and leaves q, k, v rotated where they lie; without it q, k, v are untouched."""
    q, k, v, cos, sin, mask = make_inputs(case, "cpu")
    originals = [t.clone() for t in (q, k, v)]
    want = rotary_attention_ref(q, k, v, cos, sin, mask, scale=case["scale"])
    assert all(torch.equal(t, o) for t, o in zip((q, k, v), originals))
    got = rotary_attention_ref(q, k, v, cos, sin, mask, scale=case["scale"], in_place=True)
    assert torch.equal(got, want)
    for t, o in zip((q, k, v), originals):
        assert torch.equal(t, apply_rotary_ref(o, cos, sin) if cos is not None else o)


def test_dispatch_runs_the_kernel(kernels_backend):
    """kernels.rotary_attention with CLVP_KERNELS=triton goes through this launcher; eager through the reference."""
    q, k, v, cos, sin, mask = make_inputs(case(length=21))
    kernels_backend("triton")
    assert torch.equal(kernels.rotary_attention(q, k, v, cos, sin, mask), rotary_attention(q, k, v, cos, sin, mask))
    kernels_backend("eager")
    assert torch.equal(kernels.rotary_attention(q, k, v, cos, sin, mask), rotary_attention_ref(q, k, v, cos, sin, mask))


@pytest.mark.parametrize("backend", ["eager", "triton"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dispatch_takes_per_row_tables(kernels_backend, backend, dtype):
    """Per-row (B, 1, T, R) tables (rows at different positions, as the conditioning encoder's
    per-row position ids give) through kernels.rotary_attention equal the reference broadcasting them."""
    q, k, v, _, _, mask = make_inputs(case(batch=3, length=23, dtype=dtype))
    positions = torch.arange(23)[None, None, :] + torch.tensor([0, 5, 40])[:, None, None]  # (B, 1, T)
    cos, sin = rotary_tables(positions, 32, DEVICE)  # (B, 1, T, R)
    assert cos.shape == (3, 1, 23, 32)
    kernels_backend(backend)
    out = kernels.rotary_attention(q, k, v, cos, sin, mask)

    up = torch.float64 if dtype == torch.float32 else torch.float32
    out_ref = rotary_attention_ref(q.to(up), k.to(up), v.to(up), cos, sin, mask)
    out_pt = rotary_attention_ref(q, k, v, cos, sin, mask)
    assert out.shape == q.shape and out.dtype == dtype
    assert_close_verbose(out, out_ref, atol=allowed_error(out_pt, out_ref, dtype), what=f"per-row tables, {backend}")
    if backend == "eager":
        assert torch.equal(out, out_pt)


def _bad(**kw):
    q = torch.randn(1, 2, 8, 32)
    cos, sin = rotary_tables(8, 16)
    args = dict(q=q, k=q, v=q, cos=cos, sin=sin, key_padding_mask=None)
    args.update(kw)
    return args


@pytest.mark.parametrize(
    "args, error, match",
    [
        (_bad(q=torch.randn(2, 8, 32)), ValueError, "4-D"),
        (_bad(q=torch.randn(1, 2, 8, 32).double()), TypeError, "allowed dtypes"),
        (_bad(k=torch.randn(1, 2, 8, 32).half()), TypeError, "share one dtype"),
        (_bad(v=torch.randn(1, 3, 8, 32)), ValueError, "k and v must be"),
        (_bad(q=torch.randn(1, 2, 8, 512), k=torch.randn(1, 2, 8, 512), v=torch.randn(1, 2, 8, 512),
              cos=None, sin=None), ValueError, "head dim"),
        (_bad(sin=None), ValueError, "together"),
        (_bad(cos=torch.randn(8, 15), sin=torch.randn(8, 15)), ValueError, "even"),
        (_bad(cos=torch.randn(8, 64), sin=torch.randn(8, 64)), ValueError, "at most the head dim"),
        (_bad(cos=torch.randn(8, 16).double(), sin=torch.randn(8, 16).double()), TypeError, "float32"),
        (_bad(cos=torch.randn(9, 16), sin=torch.randn(9, 16)), ValueError, "rows"),
        (_bad(key_padding_mask=torch.ones(1, 7, dtype=torch.bool)), ValueError, "key_padding_mask must be"),
        (_bad(key_padding_mask=torch.ones(1, 8, dtype=torch.complex64)), TypeError, "not complex"),
    ],
)
def test_rejects_bad_inputs(args, error, match):
    with pytest.raises(error, match=match):
        rotary_attention(args["q"], args["k"], args["v"], args["cos"], args["sin"], args["key_padding_mask"])


def test_module_imports_without_triton():
    """The eager reference must work where triton is not installed; the launcher then says what to use."""
    code = (
        "import sys; sys.modules['triton'] = None\n"  # makes `import triton` raise ImportError
        "import torch\n"
        "from kernels.rotary_attention import rotary_attention, rotary_attention_ref\n"
        "q = torch.randn(1, 1, 4, 32)\n"
        "assert rotary_attention_ref(q, q, q).shape == q.shape\n"
        "try:\n    rotary_attention(q, q, q)\nexcept RuntimeError as e:\n    assert 'needs triton' in str(e)\n"
        "else:\n    raise SystemExit('no error without triton')\n"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr


@requires_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("length", [350, 430])
def test_matches_reference_full_shapes_cuda(dtype, length):
    """CLVP's encoder shapes: 16 candidates, 12 heads of 64, R = 32, right-padded rows."""
    for mask, layout in (("lengths", "bthd"), ("none", "bhtd")):
        check_against_reference(
            case(batch=16, heads=12, length=length, head_dim=64, rot_dim=32, layout=layout, mask=mask, dtype=dtype,
                 seed=length),
            device="cuda",
        )


@requires_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("head_dim, rot_dim", [(32, 32), (80, 32), (128, 64), (128, 0)])
def test_matches_reference_head_dims_cuda(head_dim, rot_dim):
    """Other head dims, including a non-power-of-two one padded inside the kernel."""
    check_against_reference(
        case(batch=2, heads=4, length=257, head_dim=head_dim, rot_dim=rot_dim, dtype=torch.bfloat16), device="cuda"
    )



def test_cpu_tensors_need_the_interpreter(monkeypatch):
    """Without TRITON_INTERPRET a CPU tensor cannot reach a compiled kernel: say so instead of crashing."""
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    q = torch.randn(1, 1, 4, 32)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        rotary_attention(q, q, q)


# ---- backward: rotary_attention_autograd -----------------------------------------------------


def make_grad_out(case: dict, shape, device=DEVICE):
    gen = torch.Generator().manual_seed(case["seed"] + 1)
    return torch.randn(shape, generator=gen).to(device=device, dtype=case["dtype"])


def check_gradients_against_reference(case: dict, device=DEVICE):
    q, k, v, cos, sin, mask = make_inputs(case, device)
    q, k, v = (t.detach().requires_grad_() for t in (q, k, v))  # leaves with the same (permuted) strides
    dtype, scale = case["dtype"], case["scale"]
    grad_out = make_grad_out(case, q.shape, device)

    out = rotary_attention_autograd(q, k, v, cos, sin, mask, scale=scale)
    grads = torch.autograd.grad(out, (q, k, v), grad_out)

    up = torch.float64 if dtype == torch.float32 else torch.float32
    ups = [t.detach().to(up).requires_grad_() for t in (q, k, v)]
    grads_ref = torch.autograd.grad(rotary_attention_ref(*ups, cos, sin, mask, scale=scale), ups, grad_out.to(up))
    grads_pt = torch.autograd.grad(rotary_attention_ref(q, k, v, cos, sin, mask, scale=scale), (q, k, v), grad_out)
    for name, x, g, g_ref, g_pt in zip("qkv", (q, k, v), grads, grads_ref, grads_pt):
        atol = allowed_error(g_pt, g_ref, dtype)
        err = (g.double() - g_ref.double()).abs().max().item()
        print(f"d{name}: max|ours - ref| = {err:.3g}, allowed {atol:.3g}")
        assert g.shape == x.shape and g.dtype == dtype and g.device == x.device
        assert_close_verbose(g, g_ref, atol=atol, what=f"d{name} {dtype}")
    if mask is not None:  # masked keys have zero probability: exactly zero dk and dv
        dropped = (mask == 0)[:, None, :, None].expand_as(k)  # (B, H, T, D)
        assert not grads[1][dropped].any() and not grads[2][dropped].any(), "a masked key got a gradient"


@example(case=case(length=33, dtype=torch.bfloat16))  # CLVP's layout: R = 32 of D = 64, padded rows, 3 key blocks
@example(case=case(batch=1, heads=1, length=1, head_dim=32, rot_dim=32, mask="none", dtype=torch.float16))  # R == D
@example(case=case(length=7, head_dim=40, rot_dim=16, mask="random", mask_dtype=torch.int64, layout="bhtd"))
@example(case=case(length=33, head_dim=40, rot_dim=40, mask="late", mask_dtype=torch.float32, dtype=torch.float16))
@example(case=case(heads=1, length=33, head_dim=40, rot_dim=0, scale=0.3, layout="bhtd", dtype=torch.bfloat16))
@given(case=rotary_attention_grad_cases())
def test_gradients_match_reference(case):
    """dq, dk, dv of the Triton backward against the reference's autograd (D = 40: padded channel
    groups; "late": whole leading key blocks masked; "lengths": rows with a masked tail)."""
    check_gradients_against_reference(case)


@pytest.mark.parametrize(
    "c",
    [
        case(length=33, dtype=torch.bfloat16),
        case(length=7, head_dim=40, rot_dim=16, mask="random", scale=0.3, dtype=torch.float16, layout="bhtd"),
        case(length=37, rot_dim=0, mask="late"),
        case(batch=1, heads=3, length=1, head_dim=32, rot_dim=32, mask="none"),
    ],
    ids=["bf16-clvp", "fp16-d40-random", "fp32-norot-late", "fp32-one-position"],
)
def test_autograd_forward_and_lse(c):
    """The autograd forward returns the plain launcher's output bit for bit (the forward kernel with
    STORE_LSE), and the stored log-sum-exp (base 2) is log2(e) * torch.logsumexp of the scores."""
    q, k, v, cos, sin, mask = make_inputs(c)
    plain = rotary_attention(q, k, v, cos, sin, mask, scale=c["scale"])
    with_lse, lse = rotary_attention(q, k, v, cos, sin, mask, scale=c["scale"], return_lse=True)
    auto = rotary_attention_autograd(*(t.detach().requires_grad_() for t in (q, k, v)), cos, sin, mask,
                                     scale=c["scale"])
    assert auto.requires_grad and auto.stride() == plain.stride()
    assert torch.equal(with_lse, plain) and torch.equal(auto.detach(), plain)

    B, H, T, D = q.shape
    scale = D**-0.5 if c["scale"] is None else c["scale"]
    qr, kr = (apply_rotary_ref(t, cos, sin) if cos is not None else t for t in (q, k))  # rounded as the kernel's
    scores = scale * (qr.double() @ kr.double().transpose(-1, -2))  # (B, H, T, T), float64
    if mask is not None:
        scores = scores.masked_fill(mask[:, None, None, :] == 0, float("-inf"))
    want = torch.logsumexp(scores, dim=-1) / torch.log(torch.tensor(2.0, dtype=torch.float64))  # base 2
    assert lse.shape == (B, H, T) and lse.dtype == torch.float32 and lse.is_contiguous()
    # float32 rounding: scores summed over D products in float32, then exp2/log2 (a few ulp each)
    bound = 1e-6 * (1 + scores.masked_fill(scores.isinf(), 0).abs().amax(dim=-1))
    err = (lse.double() - want).abs()
    print(f"max|lse - ref| = {err.max().item():.3g}, bound {bound.min().item():.3g}..{bound.max().item():.3g}")
    assert (err <= bound).all(), f"lse off by {err.max().item():.3g}"


def test_gradients_for_a_subset_of_inputs():
    """Only q needs a gradient (k, v frozen): dq is the same as when all three do, bit for bit."""
    c = case(length=21, dtype=torch.float16)
    q, k, v, cos, sin, mask = make_inputs(c)
    grad_out = make_grad_out(c, q.shape)
    qg = q.detach().requires_grad_()
    (dq_only,) = torch.autograd.grad(rotary_attention_autograd(qg, k, v, cos, sin, mask), qg, grad_out)
    all3 = [t.detach().requires_grad_() for t in (q, k, v)]
    dq_all = torch.autograd.grad(rotary_attention_autograd(*all3, cos, sin, mask), all3, grad_out)[0]
    assert torch.equal(dq_only, dq_all)


def test_reference_gradcheck():
    """The oracle's own autograd (rotation, mask, SDPA) against finite differences, in float64."""
    gen = torch.Generator().manual_seed(3)
    q, k, v = (t.requires_grad_() for t in torch.randn(3, 2, 2, 6, 8, generator=gen, dtype=torch.float64))
    cos, sin = rotary_tables(6, 4)  # R = 4 of D = 8: rotated halves and pass-through channels
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]], dtype=torch.bool)  # row 1: masked tail
    assert torch.autograd.gradcheck(lambda q, k, v: rotary_attention_ref(q, k, v, cos, sin, mask, scale=0.7),
                                    (q, k, v))


def test_double_backward_raises():
    """The Triton backward is first-order only: differentiating its gradients raises, clearly."""
    c = case(batch=1, heads=1, length=5, head_dim=32, rot_dim=16)
    q, k, v, cos, sin, mask = make_inputs(c)
    q, k, v = (t.detach().requires_grad_() for t in (q, k, v))
    out = rotary_attention_autograd(q, k, v, cos, sin, mask)
    # a constant output gradient (dq still depends on q, k, v)
    grads = torch.autograd.grad(out, (q, k, v), make_grad_out(c, q.shape), create_graph=True)
    for g in grads:
        with pytest.raises(RuntimeError, match="rotary_attention_autograd: double backward is not supported"):
            torch.autograd.grad(g.sum(), (q, k, v), allow_unused=True)
    # an output gradient that depends on the output (a gradient penalty's usual shape)
    out = rotary_attention_autograd(q, k, v, cos, sin, mask)
    (dq,) = torch.autograd.grad(out.square().sum(), q, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward is not supported"):
        dq.square().sum().backward()


def _bad_bwd(**kw):
    q = torch.randn(1, 2, 8, 32)
    cos, sin = rotary_tables(8, 16)
    args = dict(grad_out=q, q=q, k=q, v=q, out=q, lse=torch.zeros(1, 2, 8), cos=cos, sin=sin)
    args.update(kw)
    return args


@pytest.mark.parametrize(
    "args, error, match",
    [
        (_bad_bwd(grad_out=torch.randn(1, 2, 7, 32)), ValueError, "grad_out must be"),
        (_bad_bwd(out=torch.randn(1, 2, 8, 32).half()), TypeError, "share one dtype"),
        (_bad_bwd(lse=torch.zeros(1, 2, 7)), ValueError, "lse must be"),
        (_bad_bwd(lse=torch.zeros(1, 2, 8, dtype=torch.float64)), TypeError, "allowed dtypes are float32"),
        (_bad_bwd(sin=None), ValueError, "together"),
    ],
)
def test_backward_rejects_bad_inputs(args, error, match):
    with pytest.raises(error, match=f"rotary_attention_backward: .*{match}"):
        rotary_attention_backward(args["grad_out"], args["q"], args["k"], args["v"], args["out"], args["lse"],
                                  args["cos"], args["sin"])


@requires_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_gradients_match_reference_full_shapes_cuda(dtype):
    """CLVP's encoder shapes through the backward: 16 candidates, 12 heads of 64, R = 32, padded rows."""
    for mask, layout in (("lengths", "bthd"), ("none", "bhtd")):
        check_gradients_against_reference(
            case(batch=16, heads=12, length=350, head_dim=64, rot_dim=32, layout=layout, mask=mask, dtype=dtype),
            device="cuda",
        )


@requires_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("head_dim, rot_dim", [(32, 32), (80, 32), (128, 64), (256, 0)])
def test_gradients_match_reference_head_dims_cuda(head_dim, rot_dim):
    """The backward's other CUDA configs (D <= 64, <= 128, <= 256), a padded D = 80 among them."""
    check_gradients_against_reference(
        case(batch=2, heads=4, length=257, head_dim=head_dim, rot_dim=rot_dim, dtype=torch.bfloat16), device="cuda"
    )


@pytest.mark.parametrize("native", [True, False], ids=["native_bf16", "emulated"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("block_bytes", [None, 4 * 40 * 40])  # default blocks, or one head per block
def test_cpu_half_path_is_as_close_as_sdpa(monkeypatch, dtype, block_bytes, native):
    """bfloat16 CPU inference, on a CPU with native bfloat16 products, takes the float32-score
    attention of kernels/_attention_cpu.py (blocks of heads per batch row): against float32 SDPA it is
    at most about as wrong as torch's own SDPA in that dtype (the same rule as the kernel), masked keys
    included. float16, or bfloat16 without native products, stays on SDPA (bit for bit)."""
    from clvp.kernels import _attention_cpu

    ra = sys.modules[rotary_attention_ref.__module__]  # the module (the package's name is the launcher)
    monkeypatch.setattr(_attention_cpu, "NATIVE_BF16", native)
    if block_bytes is not None:
        monkeypatch.setattr(ra, "ROW_SCORES_BYTES", block_bytes)
    gen = torch.Generator().manual_seed(3)
    b, h, t, d = 3, 4, 40, 64
    x = torch.randn(3, b, t, h, d, generator=gen)  # (3, B, T, H, D), the model's layout
    q, k, v = (y.permute(0, 2, 1, 3).to(dtype) for y in x.unbind(0))  # (B, H, T, D) views
    mask = make_mask("random", b, t, torch.bool, gen)
    cos, sin = rotary_tables(t, 32)
    with torch.no_grad():
        got = rotary_attention_ref(q, k, v, cos, sin, mask)
        ref = rotary_attention_ref(*(y.float() for y in (q, k, v)), cos, sin, mask)
        rq, rk, rv = (apply_rotary_ref(y, cos, sin) for y in (q, k, v))
        sdpa = torch.nn.functional.scaled_dot_product_attention(rq, rk, rv, attn_mask=mask[:, None, None, :])
    assert got.dtype == dtype and got.shape == (b, h, t, d)
    assert got.transpose(1, 2).is_contiguous()  # (B, T, H, D) memory, like SDPA's output: merging heads is a view
    if dtype == torch.bfloat16 and native:
        assert not torch.equal(got, sdpa)  # the CPU path, not SDPA
        assert (got.float() - ref).abs().max().item() <= allowed_error(sdpa, ref, dtype)
    else:
        assert torch.equal(got, sdpa)
