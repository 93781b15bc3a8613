"""Model-level equivalence: every sub-model with CLVP_KERNELS=triton (the Triton kernels, through
Triton's interpreter on the CPU) against CLVP_KERNELS=eager, and the dispatch's own rules."""
import pytest
import torch

from clvp import kernels
from clvp import ClvpConfig, ClvpDecoderConfig, ClvpEncoderConfig, ClvpModelForConditionalGeneration

from _asserts import assert_close_verbose


def tiny_model():
    torch.manual_seed(0)
    text = ClvpEncoderConfig(vocab_size=256, hidden_size=64, intermediate_size=48, projection_dim=32,
                             num_hidden_layers=2, num_attention_heads=2)
    speech = ClvpEncoderConfig(vocab_size=256, hidden_size=64, intermediate_size=48, projection_dim=32,
                               num_hidden_layers=2, num_attention_heads=2)
    dec = ClvpDecoderConfig(vocab_size=258, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                            num_mel_attn_blocks=2, max_position_embeddings=48, max_text_tokens=32,
                            bos_token_id=256, eos_token_id=257)  # fixing codes go up to 248
    return ClvpModelForConditionalGeneration(ClvpConfig(text_config=text, speech_config=speech, decoder_config=dec,
                                                        projection_dim=32)).eval()


def run_both(kernels_backend, fn):
    kernels_backend("eager")
    ref = fn()
    kernels_backend("triton")
    out = fn()
    return ref, out


@pytest.mark.skipif(not kernels.HAS_TRITON, reason="triton is not installed")
def test_encoders_and_conditioning_equal_eager(kernels_backend):
    model = tiny_model()
    ids = torch.randint(1, 256, (2, 9))
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[1, 6:] = 0
    codes = torch.randint(0, 256, (3, 13))
    feats = torch.randn(2, 80, 21)

    def run():
        with torch.no_grad():
            return (
                model.text_encoder_model(input_ids=ids, attention_mask=mask).last_hidden_state,
                model.speech_encoder_model(input_ids=codes).embeds,
                model.conditioning_encoder(feats, ids, attention_mask=mask),
            )

    ref, out = run_both(kernels_backend, run)
    for name, r, o in zip(("text encoder", "speech encoder", "conditioning encoder"), ref, out):
        assert_close_verbose(o, r, atol=1e-4, rtol=1e-4, what=name)


@pytest.mark.skipif(not kernels.HAS_TRITON, reason="triton is not installed")
def test_greedy_generation_token_identical(kernels_backend):
    model = tiny_model()
    ids = torch.randint(1, 256, (1, 7))
    feats = torch.randn(1, 80, 17)

    def run():
        out = model.generate(input_ids=ids, input_features=feats, do_sample=False, max_new_tokens=12)
        return out.speech_ids, out.logits_per_text

    (ref_ids, ref_logits), (ids_t, logits_t) = run_both(kernels_backend, run)
    assert torch.equal(ids_t, ref_ids)
    assert_close_verbose(logits_t, ref_logits, atol=1e-4, what="logits_per_text")


def test_dispatch_rejects_unknown_backend(monkeypatch):
    monkeypatch.setenv("CLVP_KERNELS", "cuda")
    with pytest.raises(ValueError, match="allowed values are auto, eager, triton"):
        kernels.use_triton(torch.zeros(1))


def test_dispatch_auto_uses_eager_on_cpu(monkeypatch):
    monkeypatch.delenv("CLVP_KERNELS", raising=False)
    assert kernels.use_triton(torch.zeros(1)) is False
    monkeypatch.setenv("CLVP_KERNELS", "eager")
    assert kernels.use_triton(torch.zeros(1)) is False


def test_dispatch_triton_on_cpu_needs_the_interpreter(monkeypatch):
    if not kernels.HAS_TRITON:
        pytest.skip("triton is not installed")
    monkeypatch.setenv("CLVP_KERNELS", "triton")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        kernels.use_triton(torch.zeros(1))


# ----------------------------------------------------------------------------------------------
# Training through the kernels: every parameter's gradient under triton matches eager
# ----------------------------------------------------------------------------------------------


def _grads(model, loss_fn) -> dict:
    model.zero_grad(set_to_none=True)
    loss_fn(model).backward()
    return {n: None if p.grad is None else p.grad.detach().clone() for n, p in model.named_parameters()}


def _training_inputs():
    ids = torch.randint(1, 256, (2, 9))
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[1, 6:] = 0  # a padded text: masked keys in the text encoder
    return ids, mask, torch.randn(2, 80, 21)


LOSSES = {
    # CLVP's contrastive loss: the text and speech encoders (the decoder's argmax codes carry no gradient)
    "contrastive": lambda ids, mask, feats: lambda m: m(input_ids=ids, input_features=feats, attention_mask=mask,
                                                        return_loss=True).loss,
    # the conditioning encoder (attention without rotary) and the text embeddings of the prompt
    "conditioning": lambda ids, mask, feats: lambda m: m.conditioning_encoder(feats, ids, attention_mask=mask)
    .float().square().mean(),
    # the decoder as a language model with labels (causal attention: SDPA in both modes)
    "causal_lm": lambda ids, mask, feats: lambda m: m.speech_decoder_model(input_ids=ids, labels=ids).loss,
}


@pytest.mark.skipif(not kernels.HAS_TRITON, reason="triton is not installed")
@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_every_gradient_under_triton_matches_eager(kernels_backend, loss):
    """Gradients through the Triton kernels (interpreter) against eager float32, with the tolerance
    measured on eager float32's own distance from eager float64 (tests/_tolerances.py's rule)."""
    import copy

    model = tiny_model()
    loss_fn = LOSSES[loss](*_training_inputs())
    kernels_backend("eager")
    exact = _grads(copy.deepcopy(model).double(), loss_fn)
    ref = _grads(model, loss_fn)
    kernels_backend("triton")
    got = _grads(model, loss_fn)
    with_grad = [n for n, g in ref.items() if g is not None]
    assert with_grad, "the loss reaches no parameter"
    assert [n for n, g in got.items() if g is not None] == with_grad  # no parameter loses its gradient
    for name in with_grad:
        scale = exact[name].abs().max().item()
        bound = 2 * (ref[name].double() - exact[name]).abs().max().item() + 1e-5 * (1 + scale)
        err = (got[name].double() - exact[name]).abs().max().item()
        assert err <= bound, f"{loss}: {name}: max |triton - float64| {err:.3g} > {bound:.3g} (|g| {scale:.3g})"


# ----------------------------------------------------------------------------------------------
# The dispatch never returns a result without its gradient
# ----------------------------------------------------------------------------------------------


def _decode_inputs(requires_grad):
    q = torch.randn(2, 2, 16, requires_grad=requires_grad)
    k = torch.randn(2, 2, 9, 16, requires_grad=requires_grad)
    v = torch.randn(2, 2, 9, 16, requires_grad=requires_grad)
    return q, k, v, torch.tensor([9, 4], dtype=torch.int32)


def _log_mel_inputs(requires_grad):
    from clvp.feature_extraction import hann_window, mel_filter_bank

    wav = torch.randn(2, 2048, dtype=torch.float32, requires_grad=requires_grad)
    window = torch.tensor(hann_window(256), dtype=torch.float64)
    filters = torch.tensor(mel_filter_bank(129, 16, 0.0, 8000.0, 22050), dtype=torch.float32)
    return wav, window, filters


@pytest.mark.skipif(not kernels.HAS_TRITON, reason="triton is not installed")
@pytest.mark.parametrize("op", ["decode_attention", "log_mel"])
def test_ops_without_a_backward_fall_back_to_their_reference_for_gradients(kernels_backend, monkeypatch, op):
    """With gradients wanted, the differentiable reference runs (same numbers as eager, a grad_fn);
    without, the Triton launcher runs."""
    import importlib

    module = importlib.import_module(f"clvp.kernels.{op}")
    launched = []
    launcher = getattr(kernels, f"_{op}_triton")
    monkeypatch.setattr(kernels, f"_{op}_triton", lambda *a, **k: launched.append(1) or launcher(*a, **k))
    if op == "decode_attention":
        call = lambda inputs: kernels.decode_attention(*inputs)  # noqa: E731
        make = _decode_inputs
    else:
        call = lambda inputs: kernels.log_mel(*inputs, n_fft=256, hop_length=64)  # noqa: E731
        make = _log_mel_inputs
    kernels_backend("triton")
    with torch.no_grad():
        call(make(True))
    call(make(False))
    assert len(launched) == 2  # no gradient wanted: the kernel, both times

    torch.manual_seed(1)
    inputs = make(True)
    out = call(inputs)
    assert len(launched) == 2 and out.grad_fn is not None  # gradient wanted: the reference
    grads = torch.autograd.grad(out.square().sum(), [t for t in inputs if t.requires_grad])
    kernels_backend("eager")
    torch.manual_seed(1)
    inputs_ref = make(True)
    ref = torch.autograd.grad(call(inputs_ref).square().sum(), [t for t in inputs_ref if t.requires_grad])
    for g, r in zip(grads, ref):
        assert torch.equal(g, r)
    assert module.__name__.endswith(op)


def test_references_pass_gradcheck_in_float64():
    """The oracles' own gradients, by finite differences (the rotary reference: tests/test_rotary_attention.py)."""
    from clvp.kernels import decode_attention_ref, log_mel_ref

    q, k, v, lengths = _decode_inputs(False)
    q, k, v = (t.double().requires_grad_() for t in (q[:1, :1, :4], k[:1, :1, :5, :4], v[:1, :1, :5, :4]))
    assert torch.autograd.gradcheck(lambda q, k, v: decode_attention_ref(q, k, v, torch.tensor([3])), (q, k, v))
    wav, window, filters = _log_mel_inputs(False)
    wav = (wav[:1, :512].double() * 0.3 + 1.0).requires_grad_()  # away from the log clamp
    # log_mel_ref returns float32 (the spectrum is stored as complex64, as Hugging Face's extractor
    # does), so finite differences need a step and tolerances that float32 output rounding allows
    assert torch.autograd.gradcheck(
        lambda w: log_mel_ref(w, window, filters.double(), None, n_fft=256, hop_length=128), (wav,),
        eps=1e-3, atol=2e-3, rtol=2e-2)
