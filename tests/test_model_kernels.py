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

