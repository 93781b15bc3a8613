"""The hot paths make no host read and compile into one graph (docs/architecture.md §4).

A host read of a tensor value (``.item()``, ``int(t)``, ``bool(t)``, ``.tolist()``) stalls a GPU
pipeline and breaks a torch.compile graph. The core's forwards (the text and speech encoders, the
conditioning encoder, the decoder's decode step) must make none: their inputs' values are checked
at the API boundary. Checked two ways, on the CPU with the eager references (``CLVP_KERNELS=eager``):

* a TorchFunctionMode counts every host read of a tensor during an eager forward (must be 0);
* ``torch.compile(fullgraph=True)`` (which raises on any graph break) gives the eager numbers, and
  ``torch._dynamo.explain`` counts one graph and no break.

Backend "aot_eager": dynamo plus AOT autograd's functionalised tracing on fake tensors, the part of
compilation that sees data-dependent reads, without inductor's C++ code generation (inductor
compiles these graphs too, with the eager numbers to 5e-7, but takes 40 to 100 s a graph on two
CPU cores); aot_eager's graphs run the same aten ops, so the numbers equal eager's exactly.

The Triton kernels are registered as torch.library ops (``torch.ops.clvp.*``): their fake
implementations must match what the launchers return, and a compiled function calling them traces
in one graph. Under Triton's interpreter ``wrap_triton`` cannot look into a kernel, so those
compile with backend "eager" (dynamo's graph with the ops as nodes, run by the interpreter).
"""
from __future__ import annotations

import pytest
import torch
from torch._library.simple_registry import singleton as op_registry
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.overrides import TorchFunctionMode

from clvp import kernels
from clvp.configuration import tiny_config
from clvp.feature_extraction import hann_window, mel_filter_bank
from clvp.generation import _Decoder
from clvp.modeling import ClvpModelForConditionalGeneration
from conftest import requires_cuda

BACKEND = "aot_eager"


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return ClvpModelForConditionalGeneration(tiny_config()).eval()


@pytest.fixture(autouse=True)
def _eager_kernels(monkeypatch):
    monkeypatch.setenv("CLVP_KERNELS", "eager")
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


# ----------------------------------------------------------------------------------------------
# Counting host reads
# ----------------------------------------------------------------------------------------------

_HOST_READS = {torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.__bool__, torch.Tensor.__int__,
               torch.Tensor.__float__, torch.Tensor.__index__}


class CountHostReads(TorchFunctionMode):
    """Counts the tensor methods that copy a value to the host (each one a device sync on CUDA)."""

    def __init__(self):
        super().__init__()
        self.reads = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in _HOST_READS:
            self.reads.append(getattr(func, "__name__", str(func)))
        return func(*args, **(kwargs or {}))


def host_reads(fn, *args, **kwargs) -> list:
    with torch.no_grad(), CountHostReads() as mode:
        fn(*args, **kwargs)
    return mode.reads


def test_the_counter_sees_each_kind_of_host_read():
    t = torch.tensor([3, 1])
    reads = host_reads(lambda: (int(t.max()), bool(t.all()), t.min().item(), t.tolist(), float(t[0])))
    assert sorted(reads) == sorted(["__int__", "__bool__", "item", "tolist", "__float__"])


def _text(model, padded=True):
    ids = torch.randint(1, 255, (2, 9))  # (B, T)
    mask = torch.ones_like(ids)
    if padded:
        mask[1, 6:] = 0
    return ids, mask


def _speech(model):
    ids = torch.randint(0, 8192, (3, 12))  # (B, T)
    mask = torch.ones_like(ids)
    mask[0, 10:] = 0
    return ids, mask


def _prefilled(model, batch=2, prompt=5, new=6):
    """A _Decoder after its prefill, with the next step's inputs in its buffers."""
    lm = model.speech_decoder_model
    x = torch.randn(batch, prompt, lm.config.hidden_size, generator=torch.Generator().manual_seed(5))  # (B, L, C)
    dec = _Decoder(lm, batch, prompt + new)
    with torch.no_grad():
        dec.prefill(x)
    dec.tokens.copy_(torch.tensor([7, 8192])[:batch])
    dec.position.fill_(prompt + 1)
    dec.slot.fill_(dec.pos)
    return dec


def test_core_forwards_make_no_host_read(model):
    enc_t, enc_s = model.text_encoder_model, model.speech_encoder_model
    ids, mask = _text(model)
    assert host_reads(enc_t.embeds, ids, mask) == []
    assert host_reads(enc_s.embeds, *_speech(model)) == []
    feats = torch.randn(2, 80, 20)  # (B, 80, frames)
    assert host_reads(model.conditioning_encoder, feats, ids, attention_mask=mask) == []
    dec = _prefilled(model)
    assert host_reads(dec._step_body) == []
    assert host_reads(kernels.decode_attention_ref, torch.randn(2, 2, 8), torch.randn(2, 2, 5, 8),
                      torch.randn(2, 2, 5, 8), torch.tensor([5, 2])) == []


def test_the_boundary_reads_once_per_value_check(model):
    """The Hugging Face forward checks the ids (vocabulary), the mask's values and its rows: one host
    read each, before the core runs."""
    ids, mask = _text(model)
    reads = host_reads(model.text_encoder_model, input_ids=ids, attention_mask=mask)
    assert len(reads) == 3, reads


# ----------------------------------------------------------------------------------------------
# torch.compile(fullgraph=True)
# ----------------------------------------------------------------------------------------------


def _one_graph(fn, *args, **kwargs):
    """torch._dynamo.explain: (graphs, breaks, reasons)."""
    torch._dynamo.reset()
    info = torch._dynamo.explain(fn)(*args, **kwargs)
    torch._dynamo.reset()
    return info.graph_count, info.graph_break_count, [str(b.reason) for b in info.break_reasons]


@pytest.mark.parametrize("which", ["text", "speech"])
@pytest.mark.parametrize("padded", [True, False])
def test_encoder_embeds_compiles_in_one_graph(model, which, padded):
    enc = model.text_encoder_model if which == "text" else model.speech_encoder_model
    ids, mask = _text(model, padded) if which == "text" else _speech(model)
    with torch.no_grad():
        assert _one_graph(enc.embeds, ids, mask) == (1, 0, [])
        want = enc.embeds(ids, mask)
        got = torch.compile(enc.embeds, fullgraph=True, backend=BACKEND)(ids, mask)
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_hf_encoder_forward_compiles_in_one_graph(model):
    """The Hugging Face forward too: its value checks are skipped while dynamo traces (the caller who
    compiles takes them on), the mask is passed on as is, and the numbers equal eager's (which
    drops a mask that masks nothing)."""
    enc = model.text_encoder_model
    ids, _ = _text(model)
    position_ids = torch.arange(ids.shape[1]).expand(2, -1)  # (B, T): per-row tables, no host read
    for mask in (_text(model)[1], torch.ones_like(ids)):
        def forward(i, m, p):
            return enc(input_ids=i, attention_mask=m, position_ids=p, return_dict=False)

        with torch.no_grad():
            assert _one_graph(forward, ids, mask, position_ids)[:2] == (1, 0)
            want = forward(ids, mask, position_ids)
            got = torch.compile(forward, fullgraph=True, backend=BACKEND)(ids, mask, position_ids)
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, rtol=0, atol=0)


def test_per_row_position_tables_give_the_shared_tables_numbers(model):
    """Equal rows of position_ids now take per-row tables (no host read to find them equal): the
    same numbers as the shared table that one row gives."""
    enc = model.text_encoder_model
    ids, mask = _text(model)
    with torch.no_grad():
        per_row = enc(input_ids=ids, attention_mask=mask, position_ids=torch.arange(9).expand(2, -1))
        shared = enc(input_ids=ids, attention_mask=mask, position_ids=torch.arange(9)[None])
    assert torch.equal(per_row.embeds, shared.embeds)
    assert torch.equal(per_row.last_hidden_state, shared.last_hidden_state)


def test_conditioning_encoder_compiles_in_one_graph(model):
    enc = model.conditioning_encoder
    ids, mask = _text(model)
    feats = torch.randn(2, 80, 20)  # (B, 80, frames)
    with torch.no_grad():
        assert _one_graph(enc, feats, ids, attention_mask=mask) == (1, 0, [])
        want = enc(feats, ids, attention_mask=mask)
        got = torch.compile(enc, fullgraph=True, backend=BACKEND)(feats, ids, attention_mask=mask)
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_decode_step_compiles_in_one_graph(model):
    """generation._Decoder._step_body, the step a CUDA graph captures: one graph, the eager logits, and
    the same keys and values written into the static caches."""
    eager, compiled = _prefilled(model), _prefilled(model)
    with torch.no_grad():
        assert _one_graph(_prefilled(model)._step_body)[:2] == (1, 0)
        want = eager._step_body()
        got = torch.compile(compiled._step_body, fullgraph=True, backend=BACKEND)()
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    for a, b in zip(eager.caches, compiled.caches):
        assert torch.equal(a.k, b.k) and torch.equal(a.v, b.v)


def test_decode_reference_masks_the_whole_cache():
    """decode_attention_ref over the whole static cache = attention over each row's valid prefix
    (rows attended one by one, the documented semantics), within float32 rounding."""
    torch.manual_seed(3)
    q, k, v = torch.randn(3, 2, 16), torch.randn(3, 2, 11, 16), torch.randn(3, 2, 11, 16)
    lengths = torch.tensor([1, 11, 6])
    out = kernels.decode_attention_ref(q, k, v, lengths)
    for b, n in enumerate(lengths.tolist()):
        p = torch.softmax((k[b, :, :n] @ q[b, :, :, None])[..., 0] * 16**-0.5, dim=-1)  # (H, n)
        torch.testing.assert_close(out[b], (p[:, None, :] @ v[b, :, :n])[:, 0], rtol=0, atol=2e-6)


# ----------------------------------------------------------------------------------------------
# The kernels as torch.library ops
# ----------------------------------------------------------------------------------------------

OPS = ("rotary_attention", "rotary_attention_lse", "rotary_attention_backward", "decode_attention", "log_mel")


def test_ops_are_registered():
    """Each op has its schema under the clvp namespace and a fake implementation (what torch.compile
    and the CUDA-graph trace use for shapes)."""
    for name in OPS:
        packet = getattr(torch.ops.clvp, name)
        assert str(packet.default._schema).startswith(f"clvp::{name}(")
        assert op_registry.find(f"clvp::{name}").fake_impl.kernel is not None, name


def _op_cases():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 20, 16) for _ in range(3))  # (B, H, T, D)
    cos, sin = kernels.rotary_tables(20, 8)  # (T, R)
    mask = torch.ones(2, 20, dtype=torch.bool)
    mask[1, 15:] = False
    wav = torch.randn(2, 1000)  # (B, N)
    window = torch.tensor(hann_window(64), dtype=torch.float32)
    filters = torch.tensor(mel_filter_bank(33, 8, 0.0, 8000.0, 22050), dtype=torch.float32)
    return {
        "rotary_attention": ((q, k, v, cos, sin, mask), dict(scale=0.3)),
        "rotary_attention_lse": ((q, k, v, cos, sin, mask), {}),
        "decode_attention": ((q[:, :, 0], k, v, torch.tensor([20, 7])), {}),
        "log_mel": ((wav, window, filters, None, 64, 16), {}),
    }


@pytest.mark.skipif(not kernels.HAS_TRITON, reason="triton is not installed")
def test_fake_implementations_match_the_launchers():
    """Under FakeTensorMode each op returns what its launcher returns: shapes, dtypes and strides."""
    for name, (args, kwargs) in _op_cases().items():
        op = getattr(torch.ops.clvp, name)
        real = op(*args, **kwargs)
        with FakeTensorMode(allow_non_fake_inputs=True):
            fake = op(*args, **kwargs)
        for r, f in zip(real if isinstance(real, tuple) else (real,), fake if isinstance(fake, tuple) else (fake,)):
            assert (f.shape, f.dtype, f.stride()) == (r.shape, r.dtype, r.stride()), name


@pytest.mark.skipif(not kernels.HAS_TRITON, reason="triton is not installed")
def test_compiled_calls_to_the_ops_trace_in_one_graph():
    """torch.compile(fullgraph=True) of functions calling torch.ops.clvp.*: dynamo traces the ops on
    fake tensors (their fake implementations) in one graph, and the compiled call gives the
    launcher's numbers (backend "eager": see the module docstring)."""
    cases = _op_cases()
    for name in ("rotary_attention", "decode_attention", "log_mel"):
        args, kwargs = cases[name]
        op = getattr(torch.ops.clvp, name)

        def fn(*a):
            return op(*a, **kwargs) * 2

        assert _one_graph(fn, *args)[:2] == (1, 0), name
        want = fn(*args)
        got = torch.compile(fn, fullgraph=True, backend="eager")(*args)
        assert torch.equal(got, want), name


@pytest.mark.skipif(not kernels.HAS_TRITON, reason="triton is not installed")
def test_registered_autograd_gives_the_reference_gradients():
    """``clvp::rotary_attention_lse`` carries the fused backward (register_autograd): gradients of q, k
    and v match the reference's autograd, and the log-sum-exp is not differentiable."""
    (q, k, v, cos, sin, mask), _ = _op_cases()["rotary_attention"]
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    out, lse = torch.ops.clvp.rotary_attention_lse(*leaves, cos, sin, mask)
    assert not lse.requires_grad
    grad_out = torch.randn_like(out)
    grads = torch.autograd.grad(out, leaves, grad_out)
    ref_leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    ref = kernels.rotary_attention_ref(*ref_leaves, cos, sin, mask)
    want = torch.autograd.grad(ref, ref_leaves, grad_out)
    for g, w in zip(grads, want):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(not kernels.HAS_TRITON, reason="triton is not installed")
def test_model_on_the_triton_path_compiles_with_the_ops_as_nodes(model, monkeypatch):
    """With CLVP_KERNELS=triton the encoder's dispatch calls torch.ops.clvp.rotary_attention: one
    graph holding one op node per layer, and the numbers of the uncompiled Triton path."""
    monkeypatch.setenv("CLVP_KERNELS", "triton")
    enc = model.text_encoder_model
    ids, mask = _text(model)
    graphs = []

    def record(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    with torch.no_grad():
        want = enc.embeds(ids, mask)
        got = torch.compile(enc.embeds, fullgraph=True, backend=record)(ids, mask)
    assert torch.equal(got, want)
    assert len(graphs) == 1
    ops = [n.target for n in graphs[0].graph.nodes if n.op == "call_function"]
    assert ops.count(torch.ops.clvp.rotary_attention.default) + ops.count(torch.ops.clvp.rotary_attention) == \
        len(enc.layers)


@requires_cuda
@pytest.mark.skipif(not kernels.HAS_TRITON, reason="triton is not installed")
def test_inductor_compiles_the_triton_path_on_cuda(monkeypatch):
    """On a GPU: inductor, fullgraph, through the registered ops (their AOT pass sees the kernels via
    wrap_triton): the encoder and the decode step give the uncompiled Triton path's numbers."""
    monkeypatch.setenv("CLVP_KERNELS", "auto")
    torch.manual_seed(0)
    model = ClvpModelForConditionalGeneration(tiny_config()).eval().cuda()
    enc = model.speech_encoder_model
    ids = torch.randint(0, 8192, (3, 40), device="cuda")  # (B, T)
    mask = torch.ones_like(ids)
    mask[0, 30:] = 0
    with torch.no_grad():
        want = enc.embeds(ids, mask)
        got = torch.compile(enc.embeds, fullgraph=True, backend="inductor")(ids, mask)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
        lm = model.speech_decoder_model
        x = torch.randn(2, 5, lm.config.hidden_size, device="cuda")  # (B, L, C)
        steps = []
        for compiled in (False, True):
            dec = _Decoder(lm, 2, 11)
            dec.prefill(x)
            dec.tokens.copy_(torch.tensor([7, 8192], device="cuda"))
            dec.position.fill_(6)
            dec.slot.fill_(dec.pos)
            body = torch.compile(dec._step_body, fullgraph=True, backend="inductor") if compiled else dec._step_body
            steps.append(body())
        torch.testing.assert_close(steps[1], steps[0], rtol=1e-4, atol=1e-4)
