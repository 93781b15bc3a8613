"""The CLVP model (clvp/modeling.py, configuration.py, loading.py) against transformers 4.46.3.

Expected values come from the oracle only: ``tests/golden/make_model.py`` (run with
``PYTHONPATH=.oracle``) wrote small random transformers models with its own ``save_pretrained``
into ``tests/fixtures/model_<case>/`` together with the oracle's outputs on fixed inputs
(``golden.safetensors``) and its ``return_dict=False`` tuple layouts (``golden.json``). The cases:

* ``partial``   — encoder rotary width 32 < head_dim 64 (partial rotary), no q/k/v biases;
* ``full_bias`` — rotary 32 == head_dim 32 (the width's floor), q/k/v biases on; decoder without;
* ``wide_proj`` — rotary 64 == head_dim 64 derived from projection_dim 128; biases everywhere;

all with right-padded text, padded speech ids, a left-padded decoder batch and a cached decode step.
Everything is compared in float32 to ``ATOL`` = 1e-4 (the project's bound, docs/parity.md §5; the
measured differences are ~1e-6, float32 reassociation). Precision tests (bf16/fp16) compare against
the same fp32 golden.
"""
from __future__ import annotations

import json
import math
import pickle
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import clvp
from clvp import (
    ClvpConfig,
    ClvpDecoderConfig,
    ClvpEncoder,
    ClvpEncoderConfig,
    ClvpForCausalLM,
    ClvpModelForConditionalGeneration,
)
from _asserts import assert_close_verbose
from conftest import FIXTURES

# half precision on a CPU without native bf16/fp16 matrix instructions warns (on purpose); the
# precision tests here ask for it deliberately
pytestmark = pytest.mark.filterwarnings("ignore:this CPU has no native:RuntimeWarning")
ATOL = 1e-4
CASE_DIRS = sorted(p.parent for p in FIXTURES.glob("model_*/golden.json"))
CASE_IDS = [p.name.removeprefix("model_") for p in CASE_DIRS]
DEFAULT_STATE = FIXTURES / "model_default_state_dict.json"
DEFAULT_CONFIGS = FIXTURES / "model_default_configs.json"


# ----------------------------------------------------------------------------------------------
# Golden comparison, one function per group of outputs (also used by tests/test_model_oracle.py)
# ----------------------------------------------------------------------------------------------


class Golden:
    """A fixture folder: the oracle's checkpoint, inputs (``g.i(name)``) and outputs (``g.o(name)``)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.tensors = load_file(str(self.folder / "golden.safetensors"))
        self.meta = json.loads((self.folder / "golden.json").read_text())

    def i(self, name: str) -> torch.Tensor:
        return self.tensors[f"in.{name}"]  # ids and masks are stored as int64

    def o(self, name: str) -> torch.Tensor:
        return self.tensors[f"out.{name}"]

    def count(self, prefix: str) -> int:
        return sum(1 for k in self.tensors if re.fullmatch(re.escape(f"out.{prefix}.") + r"\d+", k))

    def model(self, **kw) -> ClvpModelForConditionalGeneration:
        return ClvpModelForConditionalGeneration.from_pretrained(self.folder, **kw)


def close(actual, g: Golden, name: str, atol: float = ATOL):
    assert_close_verbose(actual, g.o(name), atol=atol, what=f"{g.folder.name}: {name}")


def check_embeds(g: Golden, model):
    close(model.get_text_features(input_ids=g.i("text_ids"), attention_mask=g.i("text_mask")), g, "text_embeds")
    close(model.get_text_features(input_ids=g.i("text_ids")[:1]), g, "text_embeds_nomask")
    close(model.get_speech_features(speech_ids=g.i("speech_ids"), attention_mask=g.i("speech_mask")), g, "speech_embeds")
    close(model.get_speech_features(speech_ids=g.i("speech_ids")), g, "speech_embeds_nomask")


def check_encoders(g: Golden, model):
    for which, enc, ids, mask in (("text", model.text_encoder_model, g.i("text_ids"), g.i("text_mask")),
                                  ("speech", model.speech_encoder_model, g.i("speech_ids"), g.i("speech_mask"))):
        o = enc(input_ids=ids, attention_mask=mask, output_attentions=True, output_hidden_states=True)
        for field in ("embeds", "last_hidden_state", "pooler_output"):
            close(getattr(o, field), g, f"{which}_enc.{field}")
        n_layers = g.meta[f"{which}_layers"]
        assert len(o.hidden_states) == n_layers + 1 == g.count(f"{which}_enc.hidden_states")
        assert len(o.attentions) == n_layers == g.count(f"{which}_enc.attentions")
        for i, h in enumerate(o.hidden_states):
            close(h, g, f"{which}_enc.hidden_states.{i}")
        for i, a in enumerate(o.attentions):
            close(a, g, f"{which}_enc.attentions.{i}")
        # the fast path (no probabilities) gives the same embedding as the explicit one
        close(enc(input_ids=ids, attention_mask=mask).embeds, g, f"{which}_enc.embeds")
    text = model.text_encoder_model
    close(text(inputs_embeds=text.token_embedding(g.i("text_ids")), attention_mask=g.i("text_mask")).embeds,
          g, "text_enc.from_embeds")
    close(text(input_ids=g.i("text_ids"), position_ids=g.i("position_ids")).embeds, g, "text_enc.position_ids")


def check_conditioning(g: Golden, model):
    cond = model.conditioning_encoder
    feats, ids, mask = g.i("features"), g.i("text_ids"), g.i("text_mask")
    close(cond(input_features=feats, input_ids=ids, attention_mask=mask), g, "cond")
    close(cond(input_features=feats, input_ids=ids), g, "cond_nomask")
    close(cond(input_features=feats, input_ids=ids[:1]), g, "cond_1text")
    close(cond(input_features=feats[:1], input_ids=ids, attention_mask=mask), g, "cond_1audio")


def check_decoder(g: Golden, model):
    lm = model.speech_decoder_model
    n_layers = g.meta["decoder_layers"]
    o = lm(inputs_embeds=g.o("cond"), output_hidden_states=True, output_attentions=True)
    close(o.logits, g, "dec.embeds_logits")
    assert len(o.hidden_states) == n_layers + 1 == g.count("dec.embeds_hidden_states")
    for i, h in enumerate(o.hidden_states):
        close(h, g, f"dec.embeds_hidden_states.{i}")
    assert len(o.attentions) == n_layers
    for i, a in enumerate(o.attentions):
        close(a, g, f"dec.embeds_attentions.{i}")
    close(lm(inputs_embeds=g.o("cond")).logits, g, "dec.embeds_logits")  # fast path, no extras

    o = lm(input_ids=g.i("dec_ids"), attention_mask=g.i("dec_mask"), use_cache=True, labels=g.i("dec_ids"))
    close(o.logits, g, "dec.ids_logits")
    close(o.loss, g, "dec.ids_loss")
    assert len(o.past_key_values) == n_layers
    for i, (k, v) in enumerate(o.past_key_values):
        close(k, g, f"dec.past.{i}.key")
        close(v, g, f"dec.past.{i}.value")
    step = lm(input_ids=g.i("dec_ids_step"), attention_mask=g.i("dec_mask_step"), past_key_values=o.past_key_values,
              use_cache=True)
    close(step.logits, g, "dec.step_logits")
    close(lm(input_ids=g.i("dec_ids_step"), past_key_values=o.past_key_values).logits, g, "dec.step_logits_nomask")
    close(lm(input_ids=g.i("dec_ids"), head_mask=g.tensors["in.head_mask"]).logits, g, "dec.head_mask_logits")
    close(lm(input_ids=g.i("dec_ids"), token_type_ids=g.i("dec_token_types")).logits, g, "dec.token_type_logits")
    close(lm.model(input_ids=g.i("dec_ids"), attention_mask=g.i("dec_mask")).last_hidden_state, g,
          "dec.bare_last_hidden_state")


def check_forward(g: Golden, model):
    o = model(input_ids=g.i("text_ids"), input_features=g.i("features"), attention_mask=g.i("text_mask"),
              return_loss=True)
    for name in ("loss", "logits_per_text", "logits_per_speech", "text_embeds", "speech_embeds",
                 "text_model_output", "speech_model_output"):
        close(getattr(o, name), g, f"fwd.{name}")
    o = model(input_ids=g.i("text_ids"), input_features=g.i("features"), output_hidden_states=True)
    close(o.logits_per_text, g, "fwd_hidden.logits_per_text")
    for group in ("decoder_hidden_states", "text_encoder_hidden_states", "speech_encoder_hidden_states"):
        hs = getattr(o, group)
        assert len(hs) == g.count(f"fwd_hidden.{group}"), group
        for i, h in enumerate(hs):
            close(h, g, f"fwd_hidden.{group}.{i}")


def signature(x):
    """Same as tests/golden/make_model.py: shapes, or ["tuple", len, first element] for tuples."""
    if isinstance(x, torch.Tensor):
        return list(x.shape)
    if isinstance(x, (tuple, list)):
        return ["tuple", len(x), signature(x[0]) if len(x) else None]
    return type(x).__name__


def check_layouts(g: Golden, model):
    """``return_dict=False`` tuples: same elements in the same order as transformers."""
    ids, mask, sids, smask = g.i("text_ids"), g.i("text_mask"), g.i("speech_ids"), g.i("speech_mask")
    lm, dec = model.speech_decoder_model, g.i("dec_ids")
    ours = {
        "text_enc.full": model.text_encoder_model(input_ids=ids, attention_mask=mask, output_attentions=True,
                                                  output_hidden_states=True, return_dict=False),
        "text_enc.plain": model.text_encoder_model(input_ids=ids, return_dict=False),
        "speech_enc.full": model.speech_encoder_model(input_ids=sids, attention_mask=smask, output_attentions=True,
                                                      output_hidden_states=True, return_dict=False),
        "speech_enc.plain": model.speech_encoder_model(input_ids=sids, return_dict=False),
        "causal_lm.labels_cache_hidden_attn": lm(input_ids=dec, labels=dec, use_cache=True, output_hidden_states=True,
                                                 output_attentions=True, return_dict=False),
        "causal_lm.nocache": lm(input_ids=dec, use_cache=False, return_dict=False),
        "bare_decoder.cache_hidden": lm.model(input_ids=dec, use_cache=True, output_hidden_states=True,
                                              return_dict=False),
        "bare_decoder.attn_nocache": lm.model.decoder(input_ids=dec, use_cache=False, output_attentions=True,
                                                      return_dict=False),
    }
    for loss in (0, 1):
        for hidden in (0, 1):
            ours[f"forward.loss={loss}.hidden={hidden}"] = model(
                input_ids=ids, input_features=g.i("features"), attention_mask=mask, return_loss=bool(loss),
                output_hidden_states=bool(hidden), return_dict=False)
    assert set(ours) == set(g.meta["layouts"])
    for name, tup in ours.items():
        assert isinstance(tup, tuple), f"{name}: return_dict=False gave {type(tup).__name__}, not a tuple"
        assert [signature(v) for v in tup] == g.meta["layouts"][name], name


CHECKS = {
    "embeds": check_embeds,
    "encoders": check_encoders,
    "conditioning": check_conditioning,
    "decoder": check_decoder,
    "forward": check_forward,
    "layouts": check_layouts,
}


def run_all_checks(folder: Path) -> None:
    g = Golden(folder)
    model = g.model()
    with torch.no_grad():
        for check in CHECKS.values():
            check(g, model)


def test_fixtures_record_the_oracle():
    assert CASE_DIRS, f"no golden fixtures under {FIXTURES}; run PYTHONPATH=.oracle python tests/golden/make_model.py"
    for folder in CASE_DIRS:
        meta = json.loads((folder / "golden.json").read_text())
        assert meta["oracle"]["transformers"] == "4.46.3"
    cases = {p.name: json.loads((p / "golden.json").read_text()) for p in CASE_DIRS}
    # the cases cover partial rotary and rotary == head_dim (both via the floor and via projection_dim)
    assert any(m["rotary_dim"] < m["head_dim"] for m in cases.values())
    assert sum(m["rotary_dim"] == m["head_dim"] for m in cases.values()) >= 2


@pytest.mark.parametrize("check", list(CHECKS))
@pytest.mark.parametrize("folder", CASE_DIRS, ids=CASE_IDS)
@torch.no_grad()
def test_matches_oracle(folder, check):
    g = Golden(folder)
    CHECKS[check](g, g.model())


@torch.no_grad()
def test_sub_models_load_alone():
    """ClvpEncoder / ClvpForCausalLM checkpoints written by transformers' save_pretrained load alone."""
    g = Golden(FIXTURES / "model_full_bias")
    enc = ClvpEncoder.from_pretrained(FIXTURES / "model_full_bias_text_encoder")
    assert isinstance(enc.config, ClvpEncoderConfig)
    close(enc(input_ids=g.i("text_ids"), attention_mask=g.i("text_mask")).embeds, g, "text_enc.embeds")
    lm = ClvpForCausalLM.from_pretrained(FIXTURES / "model_full_bias_causal_lm")
    assert isinstance(lm.config, ClvpDecoderConfig) and lm.config.vocab_size == 300
    close(lm(input_ids=g.i("dec_ids"), attention_mask=g.i("dec_mask")).logits, g, "dec.ids_logits")


# ----------------------------------------------------------------------------------------------
# Configs
# ----------------------------------------------------------------------------------------------


def test_config_defaults_reference_1_1():
    e = ClvpEncoderConfig()
    assert (e.vocab_size, e.hidden_size, e.intermediate_size, e.projection_dim, e.num_hidden_layers,
            e.num_attention_heads) == (256, 768, 1536, 768, 20, 12)
    assert (e.hidden_act, e.layer_norm_eps, e.attention_dropout, e.dropout) == ("gelu", 1e-5, 0.1, 0.1)
    assert (e.use_rotary_embedding, e.use_attention_bias, e.summary_type, e.initializer_factor) == (True, False, "mean", 1.0)
    assert (e.bos_token_id, e.eos_token_id, e.pad_token_id) == (255, 0, None)
    assert e.head_dim == 64 and e.rotary_dim == 32
    d = ClvpDecoderConfig()
    assert (d.vocab_size, d.max_position_embeddings, d.max_text_tokens, d.hidden_size, d.num_hidden_layers,
            d.num_attention_heads, d.n_inner, d.num_mel_attn_blocks) == (8194, 608, 404, 1024, 30, 16, None, 6)
    assert d.inner_dim == 4096
    assert (d.activation_function, d.resid_pdrop, d.embd_pdrop, d.attention_dropout) == ("gelu_new", 0.1, 0.1, 0.1)
    assert (d.layer_norm_epsilon, d.initializer_range, d.use_cache) == (1e-5, 0.02, True)
    assert (d.bos_token_id, d.eos_token_id, d.pad_token_id, d.feature_size) == (8192, 8193, None, 80)
    assert d.use_attention_bias is True and list(d.decoder_fixing_codes) == [83, 45, 45, 248]
    c = ClvpConfig()
    assert (c.projection_dim, c.logit_scale_init_value, c.initializer_factor) == (768, 2.6592, 1.0)
    assert abs(c.logit_scale_init_value - math.log(1 / 0.07)) < 1e-4
    assert isinstance(c.text_config, ClvpEncoderConfig) and isinstance(c.decoder_config, ClvpDecoderConfig)
    assert c.text_config.vocab_size == 256
    # ours differs from transformers here on purpose: the real checkpoint's speech vocabulary
    assert c.speech_config.vocab_size == 8192
    assert "8192" in ClvpConfig.__doc__
    # an explicit speech config is taken as given
    assert ClvpConfig(speech_config=ClvpEncoderConfig()).speech_config.vocab_size == 256


def test_config_defaults_equal_oracle_defaults():
    """Every field we define has transformers' default value (the oracle's own default dicts)."""
    oracle = json.loads(DEFAULT_CONFIGS.read_text())
    assert oracle["oracle"]["transformers"] == "4.46.3"
    for cls in (ClvpEncoderConfig, ClvpDecoderConfig):
        ours = json.loads(cls().to_json_string(use_diff=False))  # JSON form: id2label's keys are strings there too
        theirs = oracle[cls.__name__]
        for key, value in ours.items():
            assert key in theirs, f"{cls.__name__}.{key} is not a transformers config key"
            want = theirs[key]
            assert value == want, f"{cls.__name__}.{key}: {value!r} != {want!r}"
        # and every attribute of transformers' config exists here (the version and attention-backend flags aside)
        missing = set(theirs) - set(ours) - {"transformers_version", "_attn_implementation_autoset"}
        assert not missing, f"{cls.__name__} lacks transformers' attributes {sorted(missing)}"
    ours = ClvpConfig().to_dict()
    theirs = oracle["ClvpConfig"]
    for key in ("projection_dim", "logit_scale_init_value", "initializer_factor", "model_type"):
        assert ours[key] == theirs[key], key
    # the oracle's own defaults (speech vocab 256) load as such: only a missing speech_config means 8192
    loaded = ClvpConfig.from_dict(theirs)
    assert loaded.speech_config.vocab_size == 256 and loaded.text_config == ClvpEncoderConfig.from_dict(theirs["text_config"])


def test_from_sub_model_configs():
    t = ClvpEncoderConfig(hidden_size=64, num_attention_heads=2, projection_dim=16)
    s = ClvpEncoderConfig(vocab_size=300, hidden_size=32, num_attention_heads=1, projection_dim=16)
    d = ClvpDecoderConfig(hidden_size=32, num_attention_heads=2)
    c = ClvpConfig.from_sub_model_configs(t, s, d, projection_dim=16)
    assert (c.text_config, c.speech_config, c.decoder_config, c.projection_dim) == (t, s, d, 16)


@pytest.mark.parametrize("folder", CASE_DIRS, ids=CASE_IDS)
def test_config_json_written_by_oracle_loads(folder, tmp_path):
    raw = json.loads((folder / "config.json").read_text())
    c = ClvpConfig.from_pretrained(folder)
    for sub in ("text_config", "speech_config", "decoder_config"):
        for key, value in raw[sub].items():
            if key in getattr(c, sub)._field_names():
                got = getattr(getattr(c, sub), key)
                assert (list(got) if isinstance(got, tuple) else got) == value, f"{sub}.{key}"
    assert c.projection_dim == raw["projection_dim"] and c.speech_config.vocab_size == 300
    # ours-saved loads back equal, and keeps transformers' keys it does not use
    c.save_pretrained(tmp_path)
    again = ClvpConfig.from_pretrained(tmp_path)
    assert again == c
    written = json.loads((tmp_path / "config.json").read_text())
    assert set(raw) <= set(written) and set(raw["text_config"]) <= set(written["text_config"])
    assert written["model_type"] == "clvp" and written["speech_config"]["model_type"] == "clvp_encoder"
    assert written["decoder_config"]["model_type"] == "clvp_decoder"
    # sub-configs out of a saved ClvpConfig (transformers' config_type argument)
    assert ClvpEncoderConfig.from_pretrained(folder, config_type="speech_config") == c.speech_config
    assert ClvpEncoderConfig.from_pretrained(folder, config_type="text_config") == c.text_config
    assert ClvpEncoderConfig.from_pretrained(tmp_path, config_type="speech_config").vocab_size == 300
    assert ClvpDecoderConfig.from_pretrained(folder) == c.decoder_config
    with pytest.raises(ValueError, match="config_type"):
        ClvpEncoderConfig.from_pretrained(folder, config_type="decoder_config")


def test_sub_config_json_written_by_oracle_loads():
    raw = json.loads((FIXTURES / "model_full_bias_text_encoder" / "config.json").read_text())
    c = ClvpEncoderConfig.from_pretrained(FIXTURES / "model_full_bias_text_encoder")
    assert raw["model_type"] == "clvp_encoder"
    assert (c.hidden_size, c.num_attention_heads, c.use_attention_bias) == (
        raw["hidden_size"], raw["num_attention_heads"], raw["use_attention_bias"])


def test_config_rejects_wrong_model_type(tmp_path):
    with pytest.raises(ValueError, match="model_type"):
        ClvpDecoderConfig.from_dict(ClvpEncoderConfig().to_dict())
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json"):
        ClvpConfig.from_pretrained(tmp_path)


def test_config_rejects_rotary_wider_than_head():
    """projection_dim // (2 * heads) (at least 32) wider than head_dim breaks the partial rotary:
    transformers crashes inside forward with a shape error; the config should say so up front."""
    with pytest.raises(ValueError, match="rotary"):
        ClvpEncoderConfig(hidden_size=32, num_attention_heads=2, projection_dim=16)  # rotary 32 > head_dim 16


# ----------------------------------------------------------------------------------------------
# State dict, saving and loading
# ----------------------------------------------------------------------------------------------


def test_default_state_dict_matches_oracle():
    facts = json.loads(DEFAULT_STATE.read_text())
    assert facts["oracle"]["transformers"] == "4.46.3"
    assert facts["n_tensors"] == 1003 and facts["n_elements"] == 665_110_563
    with torch.device("meta"):
        model = ClvpModelForConditionalGeneration(ClvpConfig(), init_weights=False)
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    theirs = {k: shape for k, shape, _ in facts["keys"]}
    assert sorted(set(theirs) - set(ours)) == [], "keys missing from ours"
    assert sorted(set(ours) - set(theirs)) == [], "keys transformers does not have"
    assert {k: v for k, v in ours.items() if v != theirs[k]} == {}
    assert sum(math.prod(s) for s in ours.values()) == 665_110_563
    parts = {"conditioning_encoder.": 25_961_472, "speech_decoder_model.": 395_302_914,
             "text_encoder_model.": 118_875_664, "speech_encoder_model.": 124_970_512}
    for prefix, n in parts.items():
        assert sum(math.prod(s) for k, s in ours.items() if k.startswith(prefix)) == n, prefix
    assert sum(k.endswith("rotary_pos_emb.inv_freq") for k in ours) == 2  # persistent, in the checkpoint


@torch.no_grad()
def test_save_load_round_trip(tmp_path):
    g = Golden(CASE_DIRS[0])
    model = g.model()
    model.save_pretrained(tmp_path / "safe")
    assert (tmp_path / "safe" / "model.safetensors").is_file() and (tmp_path / "safe" / "config.json").is_file()
    saved = load_file(str(tmp_path / "safe" / "model.safetensors"))
    oracle = load_file(str(g.folder / "model.safetensors"))
    assert set(saved) == set(oracle)
    for k in oracle:
        assert torch.equal(saved[k], oracle[k]), k
    again = ClvpModelForConditionalGeneration.from_pretrained(tmp_path / "safe")
    assert again.config == model.config
    a = again.get_text_features(input_ids=g.i("text_ids"), attention_mask=g.i("text_mask"))
    b = model.get_text_features(input_ids=g.i("text_ids"), attention_mask=g.i("text_mask"))
    assert torch.equal(a, b)
    # the pickle-free .bin variant loads too
    model.save_pretrained(tmp_path / "bin", safe_serialization=False)
    assert (tmp_path / "bin" / "pytorch_model.bin").is_file()
    from_bin = ClvpModelForConditionalGeneration.from_pretrained(tmp_path / "bin")
    assert torch.equal(from_bin.get_text_features(input_ids=g.i("text_ids"), attention_mask=g.i("text_mask")), b)


def _copy_with_state(src: Path, dst: Path, state: dict) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    (dst / "config.json").write_text((src / "config.json").read_text())
    save_file(state, str(dst / "model.safetensors"))
    return dst


def test_loading_names_missing_unexpected_and_misshaped(tmp_path):
    src = CASE_DIRS[0]
    state = load_file(str(src / "model.safetensors"))
    missing = "text_encoder_model.layers.0.self_attn.q_proj.weight"
    bad = dict(state)
    del bad[missing]
    with pytest.raises(ValueError, match=re.escape(missing)):
        ClvpModelForConditionalGeneration.from_pretrained(_copy_with_state(src, tmp_path / "m", bad))
    bad = dict(state, **{"speech_encoder_model.extra_head.weight": torch.zeros(3)})
    with pytest.raises(ValueError, match=re.escape("speech_encoder_model.extra_head.weight")):
        ClvpModelForConditionalGeneration.from_pretrained(_copy_with_state(src, tmp_path / "u", bad))
    key = "speech_decoder_model.lm_head.weight"
    bad = dict(state, **{key: torch.zeros(7, state[key].shape[1])})
    with pytest.raises(ValueError, match=re.escape(key)) as err:
        ClvpModelForConditionalGeneration.from_pretrained(_copy_with_state(src, tmp_path / "s", bad))
    assert "(7, " in str(err.value) and str(tuple(state[key].shape)) in str(err.value)


def test_loading_truncated_or_corrupt_file_names_it(tmp_path):
    src = CASE_DIRS[0]
    data = (src / "model.safetensors").read_bytes()
    for name, payload in (("truncated", data[: len(data) // 2]), ("corrupt", b"\x07garbage" * 100),
                          ("header_only", data[:8])):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "config.json").write_text((src / "config.json").read_text())
        (folder / "model.safetensors").write_bytes(payload)
        with pytest.raises(ValueError, match=re.escape(str(folder / "model.safetensors"))):
            ClvpModelForConditionalGeneration.from_pretrained(folder)


class _Payload:
    """A pickled object whose unpickling would run code (opens a marker file for writing)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


class _Custom:
    def __init__(self):
        self.value = 3


def test_bin_is_read_weights_only(tmp_path):
    src = CASE_DIRS[0]
    state = load_file(str(src / "model.safetensors"))
    marker = tmp_path / "code_ran"
    for name, extra in (("code", _Payload(marker)), ("custom", _Custom())):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "config.json").write_text((src / "config.json").read_text())
        torch.save(dict(state, evil=extra), folder / "pytorch_model.bin")
        with pytest.raises(ValueError, match="pytorch_model.bin"):
            ClvpModelForConditionalGeneration.from_pretrained(folder)
        assert not marker.exists(), "loading a .bin executed pickled code"
    # a truncated .bin is named too
    folder = tmp_path / "truncated"
    folder.mkdir()
    (folder / "config.json").write_text((src / "config.json").read_text())
    torch.save(state, folder / "pytorch_model.bin")
    data = (folder / "pytorch_model.bin").read_bytes()
    (folder / "pytorch_model.bin").write_bytes(data[: len(data) // 3])
    with pytest.raises(ValueError, match=re.escape(str(folder / "pytorch_model.bin"))):
        ClvpModelForConditionalGeneration.from_pretrained(folder)


def test_loading_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        ClvpModelForConditionalGeneration.from_pretrained(tmp_path / "nowhere")
    (tmp_path / "noconfig").mkdir()
    (tmp_path / "noconfig" / "model.safetensors").write_bytes((CASE_DIRS[0] / "model.safetensors").read_bytes())
    with pytest.raises(FileNotFoundError, match="config.json"):
        ClvpModelForConditionalGeneration.from_pretrained(tmp_path / "noconfig")
    (tmp_path / "noweights").mkdir()
    (tmp_path / "noweights" / "config.json").write_text((CASE_DIRS[0] / "config.json").read_text())
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        ClvpModelForConditionalGeneration.from_pretrained(tmp_path / "noweights")


def test_from_pretrained_dtype_argument():
    g = Golden(CASE_DIRS[0])
    model = g.model(dtype=torch.bfloat16)
    assert not model.training  # loaded for inference: dropout off
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert model.text_encoder_model.rotary_pos_emb.inv_freq.dtype == torch.float32
    with pytest.raises(ValueError, match="dtype"):
        g.model(dtype="float8")
    with pytest.raises(ValueError, match="dtype"):
        g.model(dtype=torch.int32)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            g.model(device="cuda")


# ----------------------------------------------------------------------------------------------
# Bad inputs
# ----------------------------------------------------------------------------------------------


@torch.no_grad()
def test_ids_outside_the_vocabulary_raise_value_error():
    g = Golden(CASE_DIRS[0])
    model = g.model()
    for bad in (300, 8192, -1):
        ids = g.i("speech_ids").clone()
        ids[0, 3] = bad
        with pytest.raises(ValueError, match=r"\b300\b"):
            model.get_speech_features(speech_ids=ids)
    ids = g.i("text_ids").clone()
    ids[1, 0] = 256
    with pytest.raises(ValueError, match=r"\b256\b"):
        model.get_text_features(input_ids=ids)
    dec = g.i("dec_ids").clone()
    dec[0, 0] = 300
    with pytest.raises(ValueError, match=r"\b300\b"):
        model.speech_decoder_model(input_ids=dec)
    with pytest.raises(TypeError):
        model.get_speech_features(speech_ids=g.i("speech_ids").float())


@torch.no_grad()
def test_attention_mask_row_of_zeros_raises():
    g = Golden(CASE_DIRS[0])
    model = g.model()
    mask = g.i("text_mask").clone()
    mask[1] = 0
    with pytest.raises(ValueError, match="attention_mask"):
        model.get_text_features(input_ids=g.i("text_ids"), attention_mask=mask)
    with pytest.raises(ValueError, match="attention_mask"):
        model.get_speech_features(speech_ids=g.i("speech_ids"), attention_mask=torch.zeros_like(g.i("speech_mask")))
    with pytest.raises(ValueError, match="attention_mask"):  # wrong shape
        model.get_text_features(input_ids=g.i("text_ids"), attention_mask=mask[:, :3])


# ----------------------------------------------------------------------------------------------
# Precision
# ----------------------------------------------------------------------------------------------


def _cosine(a, b):
    return torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=-1)


# Measured (tests/fixtures, torch 2.13 CPU), worst case over the three fixtures: cosine similarity
# of text / speech embeddings and conditioning output to the fp32 oracle >= 0.99998 in bf16 and
# >= 0.999999 in fp16; decoder logits within 0.33% (bf16) / 0.05% (fp16) of their range. That is
# what 8 (bf16) / 11 (fp16) mantissa bits give over a few matmuls (unit roundoff 2^-9 / 2^-12).
# The bounds leave ~20x headroom on 1 - cosine and ~6x on the logits, so they hold for other seeds
# yet fail on a real precision bug: a norm or softmax run in 16 bits, or weights left in fp32.
# The float32-only parts (rotary angles) are pinned exactly by the tests below.
COSINE_MIN = {torch.bfloat16: 0.9995, torch.float16: 0.99995}
LOGITS_REL = {torch.bfloat16: 0.02, torch.float16: 0.004}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("folder", CASE_DIRS, ids=CASE_IDS)
@torch.no_grad()
def test_half_precision_close_to_fp32(folder, dtype):
    g = Golden(folder)
    model = g.model().to(dtype)
    assert {p.dtype for p in model.parameters()} == {dtype}
    text = model.get_text_features(input_ids=g.i("text_ids"), attention_mask=g.i("text_mask"))
    speech = model.get_speech_features(speech_ids=g.i("speech_ids"), attention_mask=g.i("speech_mask"))
    assert text.dtype == dtype and speech.dtype == dtype
    assert _cosine(text, g.o("text_embeds")).min() > COSINE_MIN[dtype]
    assert _cosine(speech, g.o("speech_embeds")).min() > COSINE_MIN[dtype]
    cond = model.conditioning_encoder(input_features=g.i("features"), input_ids=g.i("text_ids"),
                                      attention_mask=g.i("text_mask"))
    assert _cosine(cond.flatten(1), g.o("cond").flatten(1)).min() > COSINE_MIN[dtype]
    logits = model.speech_decoder_model(input_ids=g.i("dec_ids"), attention_mask=g.i("dec_mask")).logits
    want = g.o("dec.ids_logits")
    assert torch.isfinite(logits).all()
    assert (logits.float() - want).abs().max() <= LOGITS_REL[dtype] * (want.max() - want.min())
    o = model(input_ids=g.i("text_ids"), input_features=g.i("features"), attention_mask=g.i("text_mask"))
    assert torch.isfinite(o.logits_per_text).all()


def _exact_inv_freq(model):
    rot = model.text_encoder_model.rotary_pos_emb.inv_freq
    dim = 2 * rot.numel()
    return 1.0 / (10000 ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))


ORDERS = {
    "to_bf16": lambda m: m.to(torch.bfloat16),
    "half": lambda m: m.half(),
    "bf16_then_fp32": lambda m: m.to(torch.bfloat16).to(torch.float32),
    "fp16_bf16_float": lambda m: m.half().to(dtype=torch.bfloat16).float(),
    "bfloat16_method_then_to_cpu": lambda m: m.bfloat16().to("cpu"),
    "double_then_bf16": lambda m: m.double().to(torch.bfloat16),
}


@pytest.mark.parametrize("order", list(ORDERS))
def test_inv_freq_stays_exact_float32(order):
    model = ORDERS[order](Golden(CASE_DIRS[0]).model())
    exact = _exact_inv_freq(model)
    for enc in (model.text_encoder_model, model.speech_encoder_model):
        inv = enc.rotary_pos_emb.inv_freq
        assert inv.dtype == torch.float32, order
        assert torch.equal(inv, exact), order
        # the angle tables at the real model's lengths (up to ~600) are float32 too
        pos = torch.arange(600)
        cos, sin = enc.rotary_pos_emb(pos)
        angles = pos[:, None].double() * exact.double()
        want = torch.cat((angles, angles), dim=-1)
        assert cos.dtype == sin.dtype == torch.float32, order
        assert (cos.double() - want.cos()).abs().max() < 1e-4 and (sin.double() - want.sin()).abs().max() < 1e-4


@torch.no_grad()
def test_dtype_changes_leave_no_stale_state():
    """Running before and after dtype changes gives what a model converted once gives (no cached angles)."""
    g = Golden(CASE_DIRS[0])
    ids, mask = g.i("speech_ids"), g.i("speech_mask")
    a = g.model()
    a.get_speech_features(speech_ids=ids, attention_mask=mask)  # fp32 first (transformers would cache here)
    a.get_speech_features(speech_ids=ids[:, :5])  # and a different length
    a.to(torch.bfloat16)
    b = g.model().to(torch.bfloat16)
    assert torch.equal(a.get_speech_features(speech_ids=ids, attention_mask=mask),
                       b.get_speech_features(speech_ids=ids, attention_mask=mask))
    a.to(torch.float32)
    c = g.model().to(torch.bfloat16).to(torch.float32)
    out_a = a.get_speech_features(speech_ids=ids, attention_mask=mask)
    assert out_a.dtype == torch.float32
    assert torch.equal(out_a, c.get_speech_features(speech_ids=ids, attention_mask=mask))


def test_bf16_checkpoint_loads_with_exact_rotary(tmp_path):
    """A checkpoint saved from a bfloat16 model (its inv_freq rounded to bf16, as transformers saves
    it) still gets exact float32 rotary frequencies, and one dtype for all parameters."""
    model = Golden(CASE_DIRS[0]).model()
    state = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in model.state_dict().items()}
    folder = _copy_with_state(CASE_DIRS[0], tmp_path / "bf16", state)
    for dtype in (None, torch.float32, torch.bfloat16):
        loaded = ClvpModelForConditionalGeneration.from_pretrained(folder, dtype=dtype)
        assert len({p.dtype for p in loaded.parameters()}) == 1, dtype
        inv = loaded.text_encoder_model.rotary_pos_emb.inv_freq
        assert inv.dtype == torch.float32 and torch.equal(inv, _exact_inv_freq(loaded)), dtype


# ----------------------------------------------------------------------------------------------
# API surface
# ----------------------------------------------------------------------------------------------


def test_everything_is_exported():
    for name in ("ClvpConfig", "ClvpEncoderConfig", "ClvpDecoderConfig", "ClvpEncoder", "ClvpConditioningEncoder",
                 "ClvpDecoder", "ClvpModel", "ClvpForCausalLM", "ClvpModelForConditionalGeneration"):
        assert hasattr(clvp, name) and name in clvp.__all__, name


def test_library_does_not_import_transformers():
    import os
    import subprocess
    import sys

    code = "import sys, clvp, clvp.modeling, clvp.loading; print('transformers' in sys.modules)"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=FIXTURES.parent.parent, env=env)
    assert out.stdout.strip() == "False"


@torch.no_grad()
def test_output_hidden_states_counts():
    g = Golden(CASE_DIRS[0])
    model = g.model()
    cfg = model.config
    t = model.text_encoder_model(input_ids=g.i("text_ids"), output_hidden_states=True)
    assert len(t.hidden_states) == cfg.text_config.num_hidden_layers + 1
    d = model.speech_decoder_model(input_ids=g.i("dec_ids"), output_hidden_states=True)
    assert len(d.hidden_states) == cfg.decoder_config.num_hidden_layers + 1
    o = model(input_ids=g.i("text_ids"), input_features=g.i("features"), output_hidden_states=True)
    assert len(o.speech_encoder_hidden_states) == cfg.speech_config.num_hidden_layers + 1
    plain = model(input_ids=g.i("text_ids"), input_features=g.i("features"))
    assert plain.decoder_hidden_states is None and plain.loss is None


@pytest.mark.parametrize("rows", [1, 3, 4, 64, 65, 200])
@pytest.mark.parametrize("with_bias", [True, False])
def test_affine_matches_float64_linear(rows, with_bias):
    # the small-batch CPU path (W @ x.T, rows <= 64) and the usual one must both be F.linear up to
    # float32 rounding: at most twice F.linear's own float32 error against float64, plus a floor
    from clvp.products import affine

    g = torch.Generator().manual_seed(rows)
    x = torch.randn(rows, 3, 96, generator=g)[:, 1]  # (rows, 96), a strided view on purpose
    w = torch.randn(160, 96, generator=g)
    b = torch.randn(160, generator=g) if with_bias else None
    exact = torch.nn.functional.linear(x.double(), w.double(), None if b is None else b.double())
    ours = affine(x, w, b)
    assert ours.shape == (rows, 160) and ours.dtype == torch.float32 and ours.is_contiguous()
    own = (torch.nn.functional.linear(x, w, b).double() - exact).abs().max().item()
    assert (ours.double() - exact).abs().max().item() <= 2 * own + 1e-5
    assert affine(x[None], w, b).shape == (1, rows, 160)  # leading dims kept


def test_conv1d_weight_layout_survives_loading_and_saving():
    # stored (in, out) as in GPT-2 checkpoints but column-major in memory; state_dict() hands out
    # contiguous (in, out) tensors, so safetensors can save it
    from clvp.products import Conv1D

    layer = Conv1D(6, 4)  # nf=6 out, nx=4 in
    w = torch.arange(24, dtype=torch.float32).reshape(4, 6)  # (in, out) row-major, as a checkpoint holds it
    layer.load_state_dict({"weight": w, "bias": torch.zeros(6)})
    assert layer.weight.shape == (4, 6) and layer.weight.t().is_contiguous()
    assert torch.equal(layer.weight, w)
    saved = layer.state_dict()["weight"]
    assert saved.is_contiguous() and torch.equal(saved, w)
    x = torch.randn(2, 5, 4)
    assert torch.allclose(layer(x), x @ w, atol=1e-5)


def test_loading_realigns_tensors():
    # safetensors hands out tensors at file offsets; products on them could round differently
    from clvp.loading import aligned

    base = torch.arange(40, dtype=torch.float32)
    odd, even = base[5:37].view(4, 8), torch.ones(3)
    assert odd.data_ptr() % 64 != 0
    out = aligned({"odd": odd, "even": even})
    assert out["odd"].data_ptr() % 64 == 0 and torch.equal(out["odd"], odd)
    assert out["even"] is even  # already aligned: no copy
