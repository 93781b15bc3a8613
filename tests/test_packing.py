"""Packed decoder weights (clvp/packing.py): the same numbers as the dense products (within float
rounding), the same checkpoint, the same greedy codes as transformers 4.46.3 on the generation
fixture, one copy of the weights in memory, and bad requests refused before any change."""
from __future__ import annotations


import pytest
import torch

from clvp import ClvpModelForConditionalGeneration
from clvp.cli import _decoder_weights, build_parser
from clvp.configuration import tiny_config
from clvp.packing import PackedLinear, is_packed, pack_decoder_weights, unpack_decoder_weights
from clvp.products import Conv1D, Linear, onednn_linear_available
from clvp.quantize import int8_weight_only

from _greedy_fixture import BASE, assert_greedy_codes_equal_oracle, greedy_cases

PRODUCTS_PER_LAYER = ("attn.q_proj", "attn.k_proj", "attn.v_proj", "attn.out_proj", "mlp.c_fc", "mlp.c_proj")

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.skipif(not onednn_linear_available(), reason="this torch build has no oneDNN linear op")]


def _tiny() -> ClvpModelForConditionalGeneration:
    torch.manual_seed(0)
    return ClvpModelForConditionalGeneration(tiny_config()).eval()


def _packed_names(model) -> set:
    return {name for name, m in model.named_modules() if isinstance(m, PackedLinear)}


def test_packs_the_decoder_products_and_keeps_the_checkpoint():
    model = _tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert not is_packed(model)
    assert pack_decoder_weights(model) is model and is_packed(model)
    n = model.config.decoder_config.num_hidden_layers
    assert _packed_names(model) == ({f"speech_decoder_model.model.decoder.layers.{i}.{p}" for i in range(n)
                                     for p in PRODUCTS_PER_LAYER} | {"speech_decoder_model.lm_head"})
    after = model.state_dict()
    assert list(after) == list(before)  # same keys, same order: save_pretrained writes the usual checkpoint
    for key, value in before.items():
        assert after[key].shape == value.shape and torch.equal(after[key], value), key
    # one copy of each weight: the packed layers hold no dense weight and no parameter
    for name in _packed_names(model):
        mod = model.get_submodule(name)
        assert mod.dense is None and list(mod.parameters()) == []
    pack_decoder_weights(model)  # a second call changes nothing
    assert torch.equal(model.state_dict()["speech_decoder_model.lm_head.weight"], before["speech_decoder_model.lm_head.weight"])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_products_match_the_dense_ones_within_rounding(dtype):
    model = _tiny().to(dtype)
    lm = model.speech_decoder_model
    conv, head = lm.model.decoder.layers[0].mlp.c_fc, lm.lm_head
    w_conv, b_conv = conv.weight.detach().t().double(), conv.bias.detach().double()  # (out, in)
    w_head, b_head = head.weight.detach().double(), head.bias.detach().double()
    dense = {"conv": conv, "head": head}
    pack_decoder_weights(model)
    packed = {"conv": lm.model.decoder.layers[0].mlp.c_fc, "head": lm.lm_head}
    for rows in (1, 4, 16, 70):  # decode steps and a prefill
        x = torch.randn(rows, 64).to(dtype)
        for key, (w, b) in {"conv": (w_conv, b_conv), "head": (w_head, b_head)}.items():
            exact = x.double() @ w.T + b  # (rows, out)
            got, ref = packed[key](x), dense[key](x)
            assert got.dtype == dtype and got.shape == exact.shape
            # as close to the float64 product as the dense product in the same dtype (flash-attention's rule)
            bound = 2 * (ref.double() - exact).abs().max().item() + (1e-5 if dtype == torch.float32 else 8e-3)
            assert (got.double() - exact).abs().max().item() <= bound, (key, rows)


def test_greedy_codes_equal_the_oracle_on_the_fixture():
    """Token-exact against transformers 4.46.3's float32 codes on every greedy fixture case."""
    cases = greedy_cases()
    assert len(cases) >= 5
    assert_greedy_codes_equal_oracle(pack_decoder_weights(ClvpModelForConditionalGeneration.from_pretrained(BASE).eval()),
                                     cases)


def test_save_load_move_and_unpack(tmp_path):
    model = pack_decoder_weights(_tiny())
    key = "speech_decoder_model.model.decoder.layers.0.mlp.c_fc.weight"
    want = model.state_dict()[key].clone()
    model.save_pretrained(tmp_path)  # the usual checkpoint, readable by a dense model
    dense = ClvpModelForConditionalGeneration.from_pretrained(tmp_path)
    assert torch.equal(dense.state_dict()[key], want)
    # loading new values into a packed model repacks them
    new = {k: v + 1 if k == key else v for k, v in model.state_dict().items()}
    model.load_state_dict(new)
    assert torch.equal(model.state_dict()[key], want + 1)
    with pytest.raises(RuntimeError, match="size mismatch for .*c_fc.weight"):
        model.load_state_dict({**new, key: torch.zeros(3, 3)})
    # a dtype change converts and repacks; a device the packing cannot serve holds the weight dense
    model.to(torch.bfloat16)
    head = model.speech_decoder_model.lm_head
    assert head.packed is not None and head.weight_dtype == torch.bfloat16
    assert torch.equal(model.state_dict()[key], (want + 1).to(torch.bfloat16))
    model.to(torch.float16)
    assert head.packed is None and head.dense.dtype == torch.float16
    x = torch.randn(2, 64, dtype=torch.float16)
    torch.testing.assert_close(head(x), torch.nn.functional.linear(x.float(), head.dense.float(), head.bias.float()).half(),
                               rtol=2e-3, atol=2e-3)
    model.float()
    unpack_decoder_weights(model)
    assert not is_packed(model) and not _packed_names(model)
    c_fc = model.speech_decoder_model.model.decoder.layers[0].mlp.c_fc
    assert isinstance(c_fc, Conv1D) and c_fc.weight.shape == want.shape and c_fc.weight.stride() == (1, want.shape[0])
    assert isinstance(model.speech_decoder_model.lm_head, Linear)
    assert torch.equal(model.state_dict()[key], (want + 1).to(torch.bfloat16).float())


def test_refusals_name_the_problem_and_change_nothing():
    with pytest.raises(TypeError, match="model must be a ClvpModelForConditionalGeneration or a ClvpForCausalLM"):
        pack_decoder_weights(torch.nn.Linear(16, 16))
    half = _tiny().to(torch.float16)
    with pytest.raises(ValueError, match="model: packed weights need a float32 or bfloat16 model, got torch.float16"):
        pack_decoder_weights(half)
    meta = _tiny().to("meta")
    with pytest.raises(ValueError, match="model: packed weights are for the CPU; the decoder is on meta"):
        pack_decoder_weights(meta)
    training = _tiny().train()
    with pytest.raises(ValueError, match="model: packed weights are for inference.*model.eval"):
        pack_decoder_weights(training)
    int8 = int8_weight_only(_tiny())
    with pytest.raises(TypeError, match="model: q_proj is a Int8Linear, not a dense linear layer"):
        pack_decoder_weights(int8)
    for m in (half, meta, training, int8):
        assert not _packed_names(m)  # checked before changing anything
    packed = pack_decoder_weights(_tiny())
    with pytest.raises(TypeError, match="x: a packed float32 layer got bfloat16 input"):
        packed.speech_decoder_model.lm_head(torch.randn(2, 64, dtype=torch.bfloat16))
    ids = torch.tensor([[1, 2, 3]])
    with pytest.raises(ValueError, match=r"x requires grad, but the decoder's packed weights give no gradient.*no_grad"):
        packed.speech_decoder_model(input_ids=ids)  # autograd on: the embeddings require grad
    with torch.no_grad():
        assert packed.speech_decoder_model(input_ids=ids).logits.shape == (1, 3, 8194)


def test_cli_packs_for_generation_unless_told_not_to():
    parser = build_parser()
    args = parser.parse_args(["demo"])
    assert args.no_pack is False
    assert is_packed(_decoder_weights(args, _tiny()))
    assert not is_packed(_decoder_weights(parser.parse_args(["demo", "--no-pack"]), _tiny()))
    assert not is_packed(_decoder_weights(parser.parse_args(["demo"]), _tiny().to(torch.float16)))
    int8 = _decoder_weights(parser.parse_args(["demo", "--int8"]), _tiny())
    assert not is_packed(int8)
