"""Int8 weight-only decoding (clvp/quantize.py): off by default, only the decoder's products change,
the weights sit in memory as int8, bad requests are refused before any change, and greedy codes on
the generation fixture stay those of transformers 4.46.3 where the oracle's choice is not a near-tie.
"""
from __future__ import annotations


import pytest
import torch
from safetensors.torch import load_file

from clvp import ClvpConfig, ClvpDecoderConfig, ClvpModelForConditionalGeneration
from clvp.cli import build_parser
from clvp.configuration import tiny_config
from clvp.quantize import INT8_MAX_ROWS, Int8Linear, int8_weight_only, is_int8

from _greedy_fixture import BASE, assert_greedy_codes_equal_oracle, greedy_cases

# Greedy cases of the fixture whose smallest top-1 / top-2 logit gap over all steps (recorded by the
# oracle run as min_greedy_margin) is at least this: int8 must give exactly the oracle's codes there.
# Measured on this fixture: all 10 such cases equal; 'greedy_rep_min_new' (gap 0.0008, a near-tie,
# left out) diverges at its 7th code, as any rounding may make it.
MIN_MARGIN = 0.02
PRODUCTS_PER_LAYER = ("attn.q_proj", "attn.k_proj", "attn.v_proj", "attn.out_proj", "mlp.c_fc", "mlp.c_proj")


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest.one_thread


def _tiny(**decoder) -> ClvpModelForConditionalGeneration:
    """A small random model (tiny_config's encoders) with its decoder built from ``decoder`` overrides."""
    torch.manual_seed(0)
    base = tiny_config()
    dc = ClvpDecoderConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, num_mel_attn_blocks=2,
                           max_position_embeddings=608, max_text_tokens=404, **decoder)
    cfg = ClvpConfig(text_config=base.text_config, speech_config=base.speech_config, decoder_config=dc,
                     projection_dim=32)
    return ClvpModelForConditionalGeneration(cfg).eval()


def _expected_names(model) -> set:
    n = model.config.decoder_config.num_hidden_layers
    return ({f"speech_decoder_model.model.decoder.layers.{i}.{p}" for i in range(n) for p in PRODUCTS_PER_LAYER}
            | {"speech_decoder_model.lm_head"})


def test_off_by_default():
    model = _tiny()
    assert not is_int8(model)
    assert not any(isinstance(m, Int8Linear) for m in model.modules())
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_replaces_only_the_decoder_products():
    model = _tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert int8_weight_only(model) is model and is_int8(model)
    int8 = {name for name, m in model.named_modules() if isinstance(m, Int8Linear)}
    assert int8 == _expected_names(model)
    after = model.state_dict()
    replaced = {f"{n}.weight" for n in int8}
    for key, value in before.items():
        if key in replaced:
            assert key not in after
        else:  # everything else (encoders, conditioning encoder, norms, embeddings, biases) untouched
            assert torch.equal(after[key], value), key
    int8_weight_only(model)  # a second call changes nothing
    assert {name for name, m in model.named_modules() if isinstance(m, Int8Linear)} == int8


def test_weights_are_int8_in_memory_and_round_per_output_row():
    model = _tiny()
    lm = model.speech_decoder_model
    c_fc = lm.model.decoder.layers[0].mlp.c_fc.weight.detach().t().clone()  # (out, in): Conv1D stores (in, out)
    head = lm.lm_head.weight.detach().clone()  # (out, in)
    int8_weight_only(model)
    for name, m in model.named_modules():
        if isinstance(m, Int8Linear):
            assert m.weight_int8.dtype == torch.int8 and m.weight_int8.element_size() == 1, name
            assert m.weight_int8.abs().max() <= 127
            assert m.weight_scale.dtype == torch.bfloat16 and m.weight_scale.shape == (m.out_features,)
            assert not any(p.dtype.is_floating_point and p.dim() == 2 for p in m.parameters(recurse=False))
    for w, mod in ((c_fc, lm.model.decoder.layers[0].mlp.c_fc), (head, lm.lm_head)):
        deq = mod.dequantized()  # (out, in)
        # symmetric rounding: each weight within half a step of its row's scale, and each row's
        # largest weight lands on +-127 (within bfloat16's rounding of the scale)
        step = mod.weight_scale.float()[:, None]
        assert (deq - w).abs().le(step * 0.5 + 1e-7).all()
        assert mod.weight_int8.abs().amax(dim=1).ge(126).all()


def test_product_matches_the_dequantized_weight():
    model = _tiny()
    lin = model.speech_decoder_model.lm_head
    w, b = lin.weight.detach().clone(), lin.bias.detach().clone()
    int8_weight_only(model)
    q = model.speech_decoder_model.lm_head
    for rows in (1, 4, INT8_MAX_ROWS + 1):  # the int8 kernel and, above INT8_MAX_ROWS, the dequantized product
        x = torch.randn(rows, 64)
        want = x @ q.dequantized().T + b  # (rows, out)
        got = q(x)
        # bfloat16 inputs and outputs in the int8 kernel: relative error ~2**-8 of the row's scale
        assert torch.allclose(got, want, atol=0.02 * want.abs().max().item(), rtol=0), rows
        assert not torch.equal(got, x @ w.T + b)  # the int8 weights, not the float ones


def test_refusals_name_the_problem_and_change_nothing():
    with pytest.raises(TypeError, match="model must be a ClvpModelForConditionalGeneration or a ClvpForCausalLM"):
        int8_weight_only(torch.nn.Linear(16, 16))
    half = _tiny().to(torch.float16)
    with pytest.raises(ValueError, match="model: .*float32 or bfloat16.*float16"):
        int8_weight_only(half)
    assert not is_int8(half)
    meta = _tiny().to("meta")
    with pytest.raises(ValueError, match="model: .*CPU only.*meta"):
        int8_weight_only(meta)
    odd = _tiny(n_inner=72)  # c_proj takes 72 inputs, not a multiple of 16
    with pytest.raises(ValueError, match="model: c_proj takes 72 inputs; the int8 kernel needs a multiple of 16"):
        int8_weight_only(odd)
    assert not any(isinstance(m, Int8Linear) for m in odd.modules())  # checked before changing anything


def test_bfloat16_model_and_the_decoder_alone():
    model = _tiny().to(torch.bfloat16)
    lm = int8_weight_only(model.speech_decoder_model)
    assert is_int8(model)
    out = lm.generate(input_ids=torch.tensor([[1, 2, 3]]), max_new_tokens=4)
    assert out.shape == (1, 7)


def test_int8_greedy_codes_equal_the_oracle_away_from_near_ties():
    """Token-exact against transformers 4.46.3's float32 codes on every fixture case with a greedy
    margin >= MIN_MARGIN (10 cases, 1-3 rows, 1-12 codes each)."""
    cases = greedy_cases(MIN_MARGIN)
    assert len(cases) >= 5
    assert_greedy_codes_equal_oracle(int8_weight_only(ClvpModelForConditionalGeneration.from_pretrained(BASE)), cases)


def test_int8_logit_error_is_small():
    """The fixture decoder, teacher-forced over the oracle's codes: int8 changes the logits (the int8
    weights are in use) by under 2% in relative L2 norm. Per-row symmetric int8 rounds each weight by
    at most 1/254 of its row's largest magnitude, and the kernel rounds its inputs and outputs to
    bfloat16 (2**-9 relative); through 2 layers and the head this measures 1.0% here, where a wrong
    scale or a transposed weight gives errors of order 100%."""
    g = load_file(str(BASE / "golden.safetensors"))
    seq = g["greedy_one_text_n_audios.raw"]  # (3, 13): start code then 12 codes
    with torch.no_grad():
        fp32 = ClvpModelForConditionalGeneration.from_pretrained(BASE).speech_decoder_model(input_ids=seq).logits
        int8 = int8_weight_only(ClvpModelForConditionalGeneration.from_pretrained(BASE))
        int8 = int8.speech_decoder_model(input_ids=seq).logits  # (3, 13, V)
    rel = ((int8 - fp32).norm() / fp32.norm()).item()
    assert 0 < rel < 0.02, rel
    assert torch.equal(int8.argmax(-1), fp32.argmax(-1))


def test_cli_flag_is_off_by_default_and_on_the_generating_commands():
    parser = build_parser()
    for command in ("demo", "rank"):
        extra = [] if command == "demo" else ["--model", "m"]
        assert parser.parse_args([command, *extra]).int8 is False
        assert parser.parse_args([command, *extra, "--int8"]).int8 is True
    with pytest.raises(SystemExit):
        parser.parse_args(["score", "--model", "m", "--text", "t", "--codes", "c", "--int8"])
