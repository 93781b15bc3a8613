"""Fused rotary attention (kernels/rotary_attention.py): the Triton kernel against the eager reference.

On CPU the kernel runs in Triton's interpreter (conftest sets TRITON_INTERPRET=1), so the shapes are
small and the examples bounded; the full CLVP shapes run under ``@requires_cuda``.

Tolerance (tests/_tolerances.py, flash-attn's rule): with ``out_ref`` the reference one precision
up (float32 for 16-bit inputs, float64 for float32 inputs) and ``out_pt`` the reference in the tested
dtype, the kernel may differ from ``out_ref`` by at most ``2 * max|out_pt - out_ref| + floor``.
The reference's rotation math is independent of the kernel's (``torch.cat`` of halves vs a gathered
partner tile), and its attention is torch's ``scaled_dot_product_attention``.
"""
import subprocess
import sys

import pytest
import torch
from hypothesis import example, given

from clvp import kernels
from clvp.kernels.rotary_attention import apply_rotary_ref, rotary_attention, rotary_attention_ref
from tests._asserts import assert_close_verbose
from tests._tolerances import allowed_error
from tests.conftest import ROOT, requires_cuda
from tests.strategies import rotary_attention_cases

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # CPU: Triton's interpreter (conftest)


def rotary_tables(length: int, rot_dim: int, device="cpu"):
    """CLVP's tables (docs/model.md §2.1): angles t * 10000^(-2i/R), duplicated as cat(freqs, freqs)."""
    inv_freq = 1.0 / (10000 ** (torch.arange(0, rot_dim, 2, dtype=torch.float32, device=device) / rot_dim))
    freqs = torch.arange(length, dtype=torch.float32, device=device)[:, None] * inv_freq  # (T, R/2)
    emb = torch.cat((freqs, freqs), dim=-1)  # (T, R)
    return emb.cos(), emb.sin()


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


def test_dispatch_runs_the_kernel(kernels_backend):
    """kernels.rotary_attention with CLVP_KERNELS=triton goes through this launcher; eager through the reference."""
    q, k, v, cos, sin, mask = make_inputs(case(length=21))
    kernels_backend("triton")
    assert torch.equal(kernels.rotary_attention(q, k, v, cos, sin, mask), rotary_attention(q, k, v, cos, sin, mask))
    kernels_backend("eager")
    assert torch.equal(kernels.rotary_attention(q, k, v, cos, sin, mask), rotary_attention_ref(q, k, v, cos, sin, mask))


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
