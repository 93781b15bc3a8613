"""Bad inputs through the library are refused up front with a ValueError or TypeError that names the
argument (or config field), what is wrong and what is allowed: never a deep torch error, a hang, a
silent NaN or plausible garbage. Table-driven: each row is (id, call, error class, message fragment).
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from clvp.configuration import ClvpConfig, ClvpDecoderConfig, ClvpEncoderConfig, tiny_config
from clvp.generation import GenerationConfig, NonFiniteError
from clvp.modeling import ClvpModelForConditionalGeneration

from conftest import ROOT


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return ClvpModelForConditionalGeneration(tiny_config()).eval()


@pytest.fixture(scope="module")
def saved(model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    model.save_pretrained(folder)
    return folder


IDS = torch.tensor([[5, 6, 7]])
FEATS = torch.randn(1, 80, 12)
SHORT = dict(max_new_tokens=2)


def _cfg_dict(**changes):
    d = tiny_config().to_dict()
    for path, value in changes.items():
        node = d
        *parents, last = path.split(".")
        for p in parents:
            node = node[p]
        node[last] = value
    return d


def _from_file(tmp, data):
    path = tmp / "config.json"
    path.write_text(json.dumps(data))
    return ClvpConfig.from_json_file(path)


def _with_index(saved, tmp, shard):
    import shutil

    folder = tmp / "sharded"
    shutil.copytree(saved, folder)
    (folder / "model.safetensors").rename(folder / "shard-1.safetensors")
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"x": shard}}))
    return ClvpModelForConditionalGeneration.from_pretrained(folder)


# (id, call(model, saved, tmp), error class, fragment of the message)
CASES = [
    # ---- configs: every field typed and ranged, named
    ("enc-hidden-size-str", lambda m, s, t: ClvpEncoderConfig(hidden_size="64"), TypeError, "hidden_size must be an integer"),
    ("enc-heads-zero", lambda m, s, t: ClvpEncoderConfig(num_attention_heads=0), ValueError, "num_attention_heads must be an integer >= 1"),
    ("enc-rotary-str", lambda m, s, t: ClvpEncoderConfig(use_rotary_embedding="false"), TypeError, "use_rotary_embedding must be true or false"),
    ("enc-eos-outside-vocab", lambda m, s, t: ClvpEncoderConfig(eos_token_id=99999), ValueError, "eos_token_id must be an integer in 0..255"),
    ("enc-hidden-act-unknown", lambda m, s, t: ClvpEncoderConfig(hidden_act="swish2"), ValueError, "hidden_act='swish2' is not supported"),
    ("enc-eps-negative", lambda m, s, t: ClvpEncoderConfig(layer_norm_eps=-1.0), ValueError, "layer_norm_eps must be > 0"),
    ("enc-dropout-nan", lambda m, s, t: ClvpEncoderConfig(dropout=float("nan")), ValueError, "dropout must be a finite number"),
    ("enc-vocab-float", lambda m, s, t: ClvpEncoderConfig(vocab_size=256.0), TypeError, "vocab_size must be an integer"),
    ("dec-eos-outside-vocab", lambda m, s, t: ClvpDecoderConfig(eos_token_id=99999), ValueError, "ClvpDecoderConfig.eos_token_id must be an integer in 0..8193"),
    ("dec-positions-zero", lambda m, s, t: ClvpDecoderConfig(max_position_embeddings=0), ValueError, "max_position_embeddings must be an integer >= 1"),
    ("dec-use-cache-int", lambda m, s, t: ClvpDecoderConfig(use_cache=1), TypeError, "use_cache must be true or false"),
    ("dec-fixing-codes", lambda m, s, t: ClvpDecoderConfig(decoder_fixing_codes=[1, 2]), ValueError, "decoder_fixing_codes must be a list of 4"),
    ("dec-n-inner-zero", lambda m, s, t: ClvpDecoderConfig(n_inner=0), ValueError, "n_inner must be an integer >= 1"),
    ("clvp-projection-str", lambda m, s, t: ClvpConfig(projection_dim="32"), TypeError, "projection_dim must be an integer"),
    ("clvp-logit-scale-inf", lambda m, s, t: ClvpConfig(logit_scale_init_value=math.inf), ValueError, "logit_scale_init_value must be a finite number"),
    ("clvp-nested-field-named", lambda m, s, t: ClvpConfig.from_dict(_cfg_dict(**{"text_config.num_attention_heads": 0})),
     ValueError, "text_config: ClvpEncoderConfig.num_attention_heads"),
    ("config-file-named", lambda m, s, t: _from_file(t, _cfg_dict(**{"decoder_config.hidden_size": "64"})),
     TypeError, "config.json: decoder_config: ClvpDecoderConfig.hidden_size must be an integer"),
    ("clvp-projection-mismatch", lambda m, s, t: ClvpConfig(text_config=dict(projection_dim=16)), ValueError,
     "text_config.projection_dim (16) and speech_config.projection_dim (768) must be equal"),
    ("sub-config-override-typo", lambda m, s, t: ClvpDecoderConfig.from_pretrained(s, hidden_sise=3), TypeError,
     "unknown ClvpDecoderConfig field(s) 'hidden_sise'"),
    ("config-file-not-object", lambda m, s, t: _from_file(t, [1, 2]), ValueError, "must hold a JSON object"),
    # ---- from_pretrained: unknown overrides refused, known ones validated; shards confined
    ("override-typo", lambda m, s, t: ClvpModelForConditionalGeneration.from_pretrained(s, some_typo=1), TypeError,
     "unknown ClvpConfig field(s) 'some_typo'; known fields: decoder_config"),
    ("override-bad-value", lambda m, s, t: ClvpModelForConditionalGeneration.from_pretrained(s, projection_dim=-1),
     ValueError, "projection_dim must be an integer >= 1"),
    ("config-override-typo", lambda m, s, t: ClvpConfig.from_pretrained(s, projection_dimm=3), TypeError, "known fields"),
    ("override-common-bad", lambda m, s, t: ClvpModelForConditionalGeneration.from_pretrained(s, return_dict="no"),
     TypeError, "ClvpConfig.return_dict must be true or false"),
    ("from-pretrained-no-path", lambda m, s, t: ClvpModelForConditionalGeneration.from_pretrained(), TypeError,
     "needs pretrained_model_name_or_path"),
    ("from-pretrained-path-int", lambda m, s, t: ClvpModelForConditionalGeneration.from_pretrained(3), TypeError,
     "pretrained_model_name_or_path must be a folder path"),
    ("from-pretrained-loading-info-str", lambda m, s, t: ClvpModelForConditionalGeneration.from_pretrained(
        s, output_loading_info="yes"), TypeError, "output_loading_info must be True or False"),
    ("from-pretrained-device-map-auto", lambda m, s, t: ClvpModelForConditionalGeneration.from_pretrained(
        s, device_map="auto"), ValueError, "device_map must name one device"),
    ("from-pretrained-torch-dtype-int8", lambda m, s, t: ClvpModelForConditionalGeneration.from_pretrained(
        s, torch_dtype=torch.int8), ValueError, "dtype torch.int8 is not supported"),
    ("save-pretrained-unknown", lambda m, s, t: m.save_pretrained(t / "x", shard_everything=True), TypeError,
     "save_pretrained got unsupported argument(s) shard_everything"),
    ("config-torch-dtype-name", lambda m, s, t: ClvpEncoderConfig(torch_dtype="int3"), ValueError,
     "ClvpEncoderConfig.torch_dtype='int3' is not supported"),
    ("shard-parent-escape", lambda m, s, t: _with_index(s, t, os.path.join(os.pardir, os.pardir, "etc", "x")), ValueError, "outside the model folder"),
    ("shard-absolute", lambda m, s, t: _with_index(s, t, "/etc/passwd"), ValueError, "outside the model folder"),
    # ---- model forward / features
    ("forward-numpy-ids", lambda m, s, t: m(input_ids=np.array([[5, 6]]), input_features=FEATS), TypeError, "input_ids must be a torch.Tensor"),
    ("forward-list-ids", lambda m, s, t: m.get_text_features(input_ids=[[5, 6]]), TypeError, "input_ids must be a torch.Tensor"),
    ("forward-uint8-ids", lambda m, s, t: m.get_text_features(input_ids=IDS.to(torch.uint8)), TypeError, "torch.long or torch.int32"),
    ("forward-zero-frames", lambda m, s, t: m(input_ids=IDS, input_features=torch.randn(1, 80, 0)), ValueError, "at least one frame"),
    ("forward-nan-features", lambda m, s, t: m(input_ids=IDS, input_features=torch.full((1, 80, 5), math.nan)), ValueError,
     "input_features contains NaN or inf"),
    ("forward-absurd-features", lambda m, s, t: m(input_ids=IDS, input_features=torch.full((1, 80, 5), 1e30)), ValueError,
     "input_features has values up to 1e+30"),
    ("forward-mask-shape", lambda m, s, t: m(input_ids=IDS, input_features=FEATS, attention_mask=torch.ones(1, 5)), ValueError,
     "attention_mask has shape (1, 5), expected (batch, seq_len) = (1, 3)"),
    ("forward-mask-values", lambda m, s, t: m.get_text_features(input_ids=IDS, attention_mask=torch.tensor([[1, 2, 1]])), ValueError,
     "attention_mask must hold only 0 (padding) and 1"),
    ("text-embeds-nan", lambda m, s, t: m.get_text_features(text_encoder_inputs_embeds=torch.full((1, 3, 64), math.nan)), ValueError,
     "inputs_embeds contains NaN or inf"),
    ("cond-embeds-inf", lambda m, s, t: m(conditioning_encoder_inputs_embeds=torch.full((1, 3, 64), math.inf), input_features=FEATS),
     ValueError, "conditioning_encoder_inputs_embeds contains NaN or inf"),
    ("speech-ids-numpy", lambda m, s, t: m.get_speech_features(speech_ids=np.array([[1, 2]])), TypeError, "speech_ids must be a torch.Tensor"),
    ("speech-ids-outside", lambda m, s, t: m.get_speech_features(speech_ids=torch.tensor([[1, 9000]])), ValueError,
     "speech_ids contains id 9000"),
    ("speech-features-nan-cond", lambda m, s, t: m.get_speech_features(
        conditioning_encoder_inputs_embeds=torch.full((1, 3, 64), math.nan), input_features=FEATS, **SHORT),
     ValueError, "conditioning_encoder_inputs_embeds contains NaN"),
    # ---- composite generate
    ("generate-1d-ids", lambda m, s, t: m.generate(input_ids=torch.tensor([5, 6]), input_features=FEATS, **SHORT), ValueError,
     "input_ids must be (batch, seq_len), got shape (2,)"),
    ("generate-empty-ids", lambda m, s, t: m.generate(input_ids=torch.zeros(1, 0, dtype=torch.long), input_features=FEATS, **SHORT),
     ValueError, "input_ids is empty"),
    ("generate-numpy-ids", lambda m, s, t: m.generate(input_ids=np.array([[5, 6]]), input_features=FEATS, **SHORT), TypeError,
     "input_ids must be a torch.Tensor"),
    ("generate-numpy-features", lambda m, s, t: m.generate(input_ids=IDS, input_features=np.zeros((1, 80, 5), np.float32), **SHORT),
     TypeError, "input_features must be a torch.Tensor"),
    ("generate-int-features", lambda m, s, t: m.generate(input_ids=IDS, input_features=torch.zeros(1, 80, 5, dtype=torch.long), **SHORT),
     TypeError, "input_features must be a float tensor"),
    ("generate-mask-shape", lambda m, s, t: m.generate(input_ids=IDS, input_features=FEATS, attention_mask=torch.ones(2, 3), **SHORT),
     ValueError, "attention_mask has shape (2, 3)"),
    ("generate-temperature-inf", lambda m, s, t: m.generate(input_ids=IDS, input_features=FEATS, do_sample=True, temperature=math.inf, **SHORT),
     ValueError, "temperature must be a finite number"),
    ("generate-temperature-nan", lambda m, s, t: m.generate(input_ids=IDS, input_features=FEATS, do_sample=True, temperature=math.nan, **SHORT),
     ValueError, "temperature must be a finite number"),
    ("generate-do-sample-str", lambda m, s, t: m.generate(input_ids=IDS, input_features=FEATS, do_sample="yes", **SHORT),
     TypeError, "do_sample must be True or False"),
    ("generate-eos-outside", lambda m, s, t: m.generate(input_ids=IDS, input_features=FEATS, eos_token_id=99999, **SHORT),
     ValueError, "eos_token_id=99999 is outside the decoder's vocabulary"),
    ("generate-suppress-outside", lambda m, s, t: m.generate(input_ids=IDS, input_features=FEATS, suppress_tokens=[10**6], **SHORT),
     ValueError, "suppress_tokens holds code 1000000"),
    ("generate-max-new-huge", lambda m, s, t: m.generate(input_ids=IDS, input_features=FEATS, max_new_tokens=10**9), ValueError,
     "at most 607 new codes fit"),
    ("generate-pad-huge", lambda m, s, t: m.generate(input_ids=IDS, input_features=FEATS, pad_to_max_mel_tokens=10**7, **SHORT),
     ValueError, "pad_to_max_mel_tokens must be in 2..608"),
    ("generate-pad-float", lambda m, s, t: m.generate(input_ids=IDS, input_features=FEATS, pad_to_max_mel_tokens=15.0, **SHORT),
     TypeError, "pad_to_max_mel_tokens must be an integer"),
    ("generate-no-features", lambda m, s, t: m.generate(input_ids=IDS, **SHORT), ValueError, "input_features"),
    # ---- candidates
    ("candidates-uint8-ids", lambda m, s, t: m.generate_candidates(IDS.to(torch.uint8), FEATS, num_candidates=2, progress=False, **SHORT),
     TypeError, "input_ids must be an integer tensor of dtype torch.long or torch.int32"),
    ("candidates-zero-frames", lambda m, s, t: m.generate_candidates(IDS, torch.randn(2, 80, 0), num_candidates=2, progress=False, **SHORT),
     ValueError, "at least one frame"),
    ("candidates-count-bool", lambda m, s, t: m.generate_candidates(IDS, FEATS, num_candidates=True, progress=False, **SHORT),
     ValueError, "num_candidates must be a positive integer"),
    ("candidates-temperature-inf", lambda m, s, t: m.generate_candidates(IDS, FEATS, num_candidates=2, temperature=math.inf,
                                                                          progress=False, **SHORT),
     ValueError, "temperature must be a finite number"),
    ("candidates-seed-huge", lambda m, s, t: m.generate_candidates(IDS, FEATS, num_candidates=2, seed=2**70, progress=False, **SHORT),
     ValueError, "seed must be an integer in 0..2**63-1"),
    # ---- ClvpForCausalLM.generate
    ("lm-1d-ids", lambda m, s, t: m.speech_decoder_model.generate(input_ids=torch.tensor([1, 2]), **SHORT), ValueError,
     "input_ids must be (batch, seq_len)"),
    ("lm-numpy-ids", lambda m, s, t: m.speech_decoder_model.generate(input_ids=np.array([[1, 2]]), **SHORT), TypeError,
     "input_ids must be a torch.Tensor"),
    ("lm-nan-embeds", lambda m, s, t: m.speech_decoder_model.generate(conditioning_embeds=torch.full((1, 4, 64), math.nan), **SHORT),
     ValueError, "conditioning_embeds contains NaN or inf"),
    ("lm-mask-numpy", lambda m, s, t: m.speech_decoder_model(input_ids=torch.tensor([[1, 2]]), attention_mask=np.ones((1, 2))),
     TypeError, "attention_mask must be a torch.Tensor"),
    ("lm-max-new-huge", lambda m, s, t: m.speech_decoder_model.generate(input_ids=torch.tensor([[1, 2]]), max_new_tokens=10**9),
     ValueError, "at most 607 new codes fit"),
    ("lm-padded-mask", lambda m, s, t: m.speech_decoder_model.generate(input_ids=torch.tensor([[1, 2]]),
                                                                        attention_mask=torch.tensor([[0, 1]]), **SHORT),
     ValueError, "attention_mask masks some positions"),
    ("lm-mask-without-ids", lambda m, s, t: m.speech_decoder_model.generate(attention_mask=torch.ones(1, 2), **SHORT),
     ValueError, "attention_mask was given without input_ids"),
    ("lm-output-scores-str", lambda m, s, t: m.speech_decoder_model.generate(input_ids=torch.tensor([[1, 2]]),
                                                                              output_scores="yes", **SHORT),
     TypeError, "output_scores must be True or False"),
    ("composite-output-attentions", lambda m, s, t: m.generate(input_ids=IDS, input_features=FEATS,
                                                               output_attentions=True, **SHORT),
     ValueError, "output_attentions=True is not supported by the composite model's generate"),
    ("lm-top-p-nan", lambda m, s, t: m.speech_decoder_model.generate(input_ids=torch.tensor([[1, 2]]), do_sample=True,
                                                                      top_p=math.nan, **SHORT), ValueError, "top_p must be a finite number"),
]


@pytest.mark.parametrize("name,call,error,fragment", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_naming_it(model, saved, tmp_path, name, call, error, fragment):
    with pytest.raises(error) as info:
        call(model, saved, tmp_path)
    assert fragment in str(info.value), f"{name}: {info.type.__name__}: {info.value}"


def test_table_is_large_enough():
    assert len(CASES) >= 30


def test_validation_leaves_valid_inputs_alone(model, saved):
    out = model.generate(input_ids=IDS, input_features=FEATS, max_new_tokens=3, pad_to_max_mel_tokens=8)
    assert out.speech_ids.shape == (1, 7) and torch.isfinite(out.logits_per_text).all()
    assert ClvpModelForConditionalGeneration.from_pretrained(saved, projection_dim=32).config.projection_dim == 32
    assert GenerationConfig(temperature=0.5).temperature == 0.5


def _nan_model(part: str) -> ClvpModelForConditionalGeneration:
    torch.manual_seed(0)
    m = ClvpModelForConditionalGeneration(tiny_config()).eval()
    with torch.no_grad():
        {
            "conditioning": lambda: m.conditioning_encoder.mel_conv.weight.fill_(math.nan),
            "decoder": lambda: m.speech_decoder_model.lm_head.weight.fill_(math.nan),
            "speech_encoder": lambda: m.speech_encoder_model.projection.weight.fill_(math.nan),
        }[part]()
    return m


@pytest.mark.parametrize("part,stage", [
    ("conditioning", "conditioning prompt"),
    ("decoder", "decoder logits at step 1"),
    ("speech_encoder", "speech encoder embeddings"),
])
@pytest.mark.parametrize("how", ["greedy", "sample", "beam", "candidates"])
def test_nan_weights_stop_generation_naming_the_stage(part, stage, how):
    m = _nan_model(part)
    with pytest.raises(NonFiniteError, match=stage):
        if how == "candidates":
            m.generate_candidates(IDS, FEATS, num_candidates=2, batch_size=2, progress=False, max_new_tokens=4)
        else:
            kw = dict(greedy={}, sample=dict(do_sample=True, seed=0), beam=dict(num_beams=2))[how]
            m.generate(input_ids=IDS, input_features=FEATS, max_new_tokens=4, **kw)


def test_nan_decoder_weights_stop_causal_lm_generate():
    m = _nan_model("decoder")
    with pytest.raises(NonFiniteError, match="decoder logits at step 1"):
        m.speech_decoder_model.generate(input_ids=torch.tensor([[1, 2]]), max_new_tokens=3)


def test_huge_max_new_tokens_is_refused_without_a_loop():
    """max_new_tokens=10**9 once took minutes before its ValueError; the timeout is a hang guard only."""
    code = textwrap.dedent(
        """
        import torch
        from clvp.configuration import tiny_config
        from clvp.modeling import ClvpModelForConditionalGeneration
        m = ClvpModelForConditionalGeneration(tiny_config()).eval()
        for call in (
            lambda: m.generate(input_ids=torch.tensor([[5, 6]]), input_features=torch.randn(1, 80, 8), max_new_tokens=10**9),
            lambda: m.speech_decoder_model.generate(input_ids=torch.tensor([[1]]), max_new_tokens=10**9),
            lambda: m.speech_decoder_model.generate(conditioning_embeds=torch.zeros(1, 3, 64), max_length=10**9),
        ):
            try:
                call()
            except ValueError as err:
                assert "new codes fit" in str(err), err
            else:
                raise SystemExit("no ValueError")
        print("ok")
        """
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert res.returncode == 0 and "ok" in res.stdout, res.stderr
