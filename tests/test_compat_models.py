"""Drop-in compatibility with transformers 4.46.3's CLVP classes: configs, forwards, generate, loading.

The expected values come from the oracle, run live in a subprocess (``tests/golden/compat_oracle.py``
with ``PYTHONPATH=.oracle``; those tests are skipped when .oracle is missing, CI installs it), or
from transformers' documented behaviour. The choices where we differ on purpose (strict loading,
validated configs, no attentions from generate, no padded prompts in ClvpForCausalLM.generate)
are in docs/parity.md; they are tested here too.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import FIXTURES, ORACLE_DIR, ROOT
from _asserts import assert_close_verbose
from clvp import ClvpConfig, ClvpDecoderConfig, ClvpEncoderConfig
from clvp.generation import GenerationConfig
from clvp.modeling import ClvpEncoder, ClvpForCausalLM, ClvpModelForConditionalGeneration
from clvp.outputs import GenerateBeamDecoderOnlyOutput, GenerateDecoderOnlyOutput

MODEL = FIXTURES / "generation_base"
PROMPT = torch.tensor([[5, 9, 11, 40]])  # as in tests/golden/compat_oracle.py
ATOL = 1e-4
needs_oracle = pytest.mark.skipif(not ORACLE_DIR.is_dir(),
                                  reason=f"oracle (transformers 4.46.3) not installed in {ORACLE_DIR}")


@pytest.fixture(scope="module")
def oracle(tmp_path_factory):
    out = tmp_path_factory.mktemp("compat_oracle")
    env = dict(os.environ, PYTHONPATH=str(ORACLE_DIR))
    proc = subprocess.run([sys.executable, "tests/golden/compat_oracle.py", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"oracle subprocess failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return json.loads((out / "oracle.json").read_text()), load_file(str(out / "oracle.safetensors"))


@pytest.fixture(scope="module")
def model():
    return ClvpModelForConditionalGeneration.from_pretrained(MODEL)


def _steps(tensors, prefix):
    n = sum(1 for k in tensors if k.startswith(prefix + "."))
    return [tensors[f"{prefix}.{i}"] for i in range(n)]


# ----------------------------------------------------------------------------------------------
# Configs: any keyword accepted and stored, the common attributes, the CLVP fields still validated
# ----------------------------------------------------------------------------------------------

CONFIG_KWARGS = dict(initializer_range=0.05, relative_attention_num_buckets=32, output_hidden_states=True,
                     return_dict=False, output_attentions=True, torchscript=False, torch_dtype="float16",
                     pruned_heads={1: [0]}, tie_word_embeddings=False, chunk_size_feed_forward=3, is_decoder=True,
                     add_cross_attention=False, architectures=["X"], num_labels=3, problem_type="regression",
                     pad_token_id=2, task_specific_params={"a": 1}, max_length=7, do_sample=True, top_k=5)


@needs_oracle
@pytest.mark.parametrize("cls", [ClvpEncoderConfig, ClvpDecoderConfig], ids=lambda c: c.__name__)
def test_config_keywords_stored_as_transformers_does(cls, oracle):
    meta, _ = oracle
    want = meta["config"][cls.__name__]
    config = cls(**CONFIG_KWARGS)
    ours = json.loads(config.to_json_string(use_diff=False))
    theirs = {k: v for k, v in want["dict"].items() if k not in ("transformers_version", "_attn_implementation_autoset")}
    assert ours == theirs
    assert config.use_return_dict is want["use_return_dict"] is False
    assert config.num_labels == want["num_labels"] == 3
    assert config.initializer_range == 0.05 and config.relative_attention_num_buckets == 32
    assert config.torch_dtype is torch.float16 and config.pruned_heads == {1: [0]}


def test_config_common_attributes_and_methods(tmp_path):
    c = ClvpEncoderConfig(hidden_size=64, num_attention_heads=2, projection_dim=32, foo="bar")
    # transformers' PretrainedConfig defaults
    assert (c.output_hidden_states, c.output_attentions, c.return_dict, c.torchscript) == (False, False, True, False)
    assert c.use_return_dict and c.num_labels == 2 and c.id2label == {0: "LABEL_0", 1: "LABEL_1"}
    assert (c.is_encoder_decoder, c.is_decoder, c.tie_word_embeddings, c.chunk_size_feed_forward) == (False, False, True, 0)
    assert c.name_or_path == "" and c.pruned_heads == {} and c.foo == "bar"
    with pytest.raises(AttributeError):
        c.not_an_attribute  # noqa: B018
    c.pruned_heads[0] = [1]  # changed in place, it is kept
    c.torchscript = True
    assert not c.use_return_dict
    c.num_labels = 4
    assert len(c.id2label) == 4 and len(c.label2id) == 4
    c.update({"hidden_size": 128, "bar": 1})
    assert c.hidden_size == 128 and c.bar == 1
    # JSON round trips: the file holds the given and changed attributes, transformers' diff layout
    c.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["foo"] == "bar" and saved["pruned_heads"] == {"0": [1]} and saved["torchscript"] is True
    assert "output_attentions" not in saved  # defaults are not written (to_diff_dict)
    again, unused = ClvpEncoderConfig.from_pretrained(pretrained_model_name_or_path=tmp_path, return_unused_kwargs=True,
                                                      output_attentions=True, not_a_field=1)
    assert unused == {"not_a_field": 1} and again.output_attentions is True and again.pruned_heads == {0: [1]}
    again.output_attentions = False
    assert again == c and again.to_dict() == c.to_dict()
    assert ClvpEncoderConfig.from_json_file(tmp_path / "config.json") == c
    data, rest = ClvpEncoderConfig.get_config_dict(tmp_path, x=1)
    assert data == saved and rest == {"x": 1}
    sub = tmp_path / "outer"
    c.save_pretrained(sub / "inner")
    assert ClvpEncoderConfig.from_pretrained(sub, subfolder="inner") == c
    with pytest.raises(OSError):  # transformers' ConfigTester: a missing folder is an OSError
        ClvpEncoderConfig.from_pretrained(tmp_path / "missing")
    assert ClvpConfig.is_composition and not ClvpEncoderConfig.is_composition


def test_config_from_dict_return_unused_and_typos():
    config, unused = ClvpDecoderConfig.from_dict({"hidden_size": 64}, return_unused_kwargs=True, num_beams=2, typo=3)
    assert config.hidden_size == 64 and config.num_beams == 2 and unused == {"typo": 3}
    with pytest.raises(TypeError, match="'typo'"):  # without return_unused_kwargs an unknown override is refused
        ClvpDecoderConfig.from_dict({"hidden_size": 64}, typo=3)


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(output_hidden_states="yes"), TypeError, "output_hidden_states must be true or false"),
    (dict(return_dict=1), TypeError, "return_dict must be true or false"),
    (dict(torch_dtype="float8"), ValueError, "torch_dtype='float8' is not supported"),
    (dict(num_labels=-1), ValueError, "num_labels must be an integer >= 0"),
    (dict(problem_type="ranking"), ValueError, "problem_type='ranking' is not supported"),
    (dict(hidden_size="64", initializer_range=0.02), TypeError, "hidden_size must be an integer"),
    (dict(layer_norm_eps=0.0, foo=1), ValueError, "layer_norm_eps must be > 0"),
])
def test_config_still_validates_what_it_knows(kwargs, error, match):
    with pytest.raises(error, match=match):
        ClvpEncoderConfig(**kwargs)


def test_config_attribute_set_later_is_validated_too():
    c = ClvpDecoderConfig()
    with pytest.raises(TypeError, match="return_dict must be true or false"):
        c.return_dict = "no"


# ----------------------------------------------------------------------------------------------
# Forwards: the switches fall back to the config's
# ----------------------------------------------------------------------------------------------


@needs_oracle
@torch.no_grad()
def test_forward_switches_from_config_match_oracle(oracle):
    meta, want = oracle
    m = ClvpModelForConditionalGeneration.from_pretrained(MODEL)
    lm = m.speech_decoder_model
    lm.config.return_dict = False
    lm.config.output_hidden_states = True
    res = lm(input_ids=PROMPT)
    assert isinstance(res, tuple) and len(res) == meta["forward"]["lm_tuple_len"]
    assert len(res[2]) == meta["forward"]["lm_hidden_len"]
    assert_close_verbose(res[0], want["lm_tuple.logits"], atol=ATOL, what="lm logits (tuple)")
    assert not isinstance(lm(input_ids=PROMPT, return_dict=True), tuple)  # the call's argument wins
    enc = m.text_encoder_model
    enc.config.return_dict = False
    enc.config.output_attentions = True
    res = enc(input_ids=torch.tensor([[7, 8, 9]]))
    assert isinstance(res, tuple) and len(res) == meta["forward"]["enc_tuple_len"]
    assert len(res[-1]) == meta["forward"]["enc_attn_len"]
    assert_close_verbose(res[0], want["enc_tuple.embeds"], atol=ATOL, what="encoder embeds (tuple)")


@torch.no_grad()
def test_composite_forward_follows_its_config(model):
    g = load_file(str(MODEL / "golden.safetensors"))
    ids, feats = g["in.text_ids"][:1], g["in.features"][:1]
    m = ClvpModelForConditionalGeneration.from_pretrained(MODEL)
    m.config.output_hidden_states = True
    m.config.return_dict = False
    m.config.speech_config.return_dict = False  # the sub-models' own switches must not break the composite
    res = m(input_ids=ids, input_features=feats)
    # transformers' order: logits_per_speech, logits_per_text, text_embeds, speech_embeds, the two pooled
    # outputs, then (output_hidden_states) decoder, text encoder and speech encoder hidden states
    assert isinstance(res, tuple) and len(res) == 9
    ref = model(input_ids=ids, input_features=feats, return_dict=True, output_hidden_states=False)
    assert torch.equal(res[1], ref.logits_per_text) and torch.equal(res[2], ref.text_embeds)
    assert len(res[7]) == m.config.text_config.num_hidden_layers + 1


# ----------------------------------------------------------------------------------------------
# generate: transformers' outputs, arguments and defaults
# ----------------------------------------------------------------------------------------------


def _check_generate_case(lm, meta, want, name, **kwargs):
    res = lm.generate(**kwargs, return_dict_in_generate=True, output_scores=True, output_logits=True)
    assert type(res).__name__ == meta["generate"][name]["type"]
    assert list(res.keys()) == meta["generate"][name]["keys"]
    assert res.sequences.tolist() == want[f"{name}.sequences"].tolist()
    for field in ("scores", "logits"):
        steps = _steps(want, f"{name}.{field}")
        assert len(getattr(res, field)) == len(steps)
        for i, (got, exp) in enumerate(zip(getattr(res, field), steps)):
            # -inf where a processor removed a code: compare those positions exactly, the rest closely
            assert torch.equal(torch.isinf(got), torch.isinf(exp)), f"{name}.{field}.{i} inf pattern"
            fin = torch.isfinite(exp)
            assert_close_verbose(got[fin], exp[fin], atol=ATOL, what=f"{name}.{field}.{i}")
    for field in ("sequences_scores", "beam_indices"):
        if f"{name}.{field}" in want:
            exp = want[f"{name}.{field}"]
            got = getattr(res, field)
            if field == "beam_indices":
                assert got.tolist() == exp.tolist()
            else:
                assert_close_verbose(got, exp, atol=ATOL, what=f"{name}.{field}")
    return res


@needs_oracle
@torch.no_grad()
def test_generate_greedy_outputs_match_oracle(model, oracle):
    meta, want = oracle
    lm = model.speech_decoder_model
    res = _check_generate_case(lm, meta, want, "greedy", input_ids=PROMPT, max_new_tokens=5)
    assert isinstance(res, GenerateDecoderOnlyOutput)
    assert len(res.past_key_values) == lm.config.num_hidden_layers
    for layer, (k, v) in enumerate(res.past_key_values):
        assert_close_verbose(k, want[f"greedy.past.{layer}.k"], atol=ATOL, what=f"past key {layer}")
        assert_close_verbose(v, want[f"greedy.past.{layer}.v"], atol=ATOL, what=f"past value {layer}")
    # an all-ones mask and use_cache=False change nothing (transformers' result too)
    seqs = lm.generate(input_ids=PROMPT, max_new_tokens=5, attention_mask=torch.ones_like(PROMPT), use_cache=False)
    assert seqs.tolist() == want["greedy_mask_no_cache.sequences"].tolist() == res.sequences.tolist()
    assert lm.generate(inputs=PROMPT, max_new_tokens=5).tolist() == res.sequences.tolist()


@needs_oracle
@pytest.mark.parametrize("name,kwargs", [
    ("beam", dict(max_new_tokens=5, num_beams=3, num_return_sequences=2)),
    ("beam_lp", dict(max_new_tokens=6, num_beams=4, num_return_sequences=4, length_penalty=0.5)),
])
@torch.no_grad()
def test_generate_beam_outputs_match_oracle(model, oracle, name, kwargs):
    meta, want = oracle
    res = _check_generate_case(model.speech_decoder_model, meta, want, name, input_ids=PROMPT, **kwargs)
    assert isinstance(res, GenerateBeamDecoderOnlyOutput)


@needs_oracle
@torch.no_grad()
def test_generate_without_inputs_starts_from_bos_like_oracle(model, oracle):
    meta, want = oracle
    lm = model.speech_decoder_model
    res = _check_generate_case(lm, meta, want, "no_input", max_new_tokens=4)
    assert res.sequences[0, 0].item() == lm.config.bos_token_id and res.sequences.shape[0] == 1


@needs_oracle
@torch.no_grad()
def test_generate_attentions_match_oracle(model, oracle):
    _, want = oracle
    res = model.speech_decoder_model.generate(input_ids=PROMPT, max_new_tokens=4, output_attentions=True,
                                              return_dict_in_generate=True)
    steps = sorted({int(k.split(".")[1]) for k in want if k.startswith("greedy_attn.")})
    assert len(res.attentions) == len(steps) == 4
    for s, layers in enumerate(res.attentions):
        assert len(layers) == sum(1 for k in want if k.startswith(f"greedy_attn.{s}."))
        for i, a in enumerate(layers):
            assert_close_verbose(a, want[f"greedy_attn.{s}.{i}"], atol=ATOL, what=f"attentions step {s} layer {i}")


@torch.no_grad()
def test_generate_optional_outputs_off_by_default(model):
    lm = model.speech_decoder_model
    res = lm.generate(input_ids=PROMPT, max_new_tokens=3, return_dict_in_generate=True, use_cache=False)
    assert list(res.keys()) == ["sequences"]  # no scores, logits, nor cache unless asked for
    assert torch.is_tensor(lm.generate(input_ids=PROMPT, max_new_tokens=3, output_scores=True))


@torch.no_grad()
def test_generate_refuses_what_it_cannot_do_before_work(model):
    lm = model.speech_decoder_model
    mask = torch.tensor([[0, 1, 1, 1]])
    with pytest.raises(ValueError, match="attention_mask masks some positions"):
        lm.generate(input_ids=PROMPT, attention_mask=mask, max_new_tokens=2)
    with pytest.raises(ValueError, match="attention_mask has shape|attention_mask must"):
        lm.generate(input_ids=PROMPT, attention_mask=torch.ones(1, 3, dtype=torch.long), max_new_tokens=2)
    with pytest.raises(ValueError, match="output_attentions=True is supported for greedy search and sampling"):
        lm.generate(input_ids=PROMPT, output_attentions=True, return_dict_in_generate=True, max_new_tokens=2,
                    num_beams=2)
    with pytest.raises(TypeError, match="use_cache must be True or False"):
        lm.generate(input_ids=PROMPT, use_cache="yes", max_new_tokens=2)
    with pytest.raises(ValueError, match="inputs or as input_ids, not both"):
        lm.generate(PROMPT, inputs=PROMPT, max_new_tokens=2)


@torch.no_grad()
def test_composite_generate_passes_generation_keywords(model):
    g = load_file(str(MODEL / "golden.safetensors"))
    ids, feats = g["in.text_ids"][:1], g["in.features"][:1]
    plain = model.generate(input_ids=ids, input_features=feats, max_new_tokens=4)
    more = model.generate(input_ids=ids, input_features=feats, max_new_tokens=4, use_cache=True, output_scores=True,
                          output_logits=True, return_dict_in_generate=True)
    assert torch.equal(plain.speech_ids, more.speech_ids)


def test_generation_config_defaults(model):
    lm = model.speech_decoder_model
    gc = lm.generation_config
    assert isinstance(gc, GenerationConfig) and (gc.bos_token_id, gc.eos_token_id) == (300, 301)
    # the composite's start/stop codes are the decoder's (transformers' composite takes the text config's)
    assert (model.generation_config.bos_token_id, model.generation_config.eos_token_id) == (300, 301)
    assert model.text_encoder_model.generation_config is None
    lm.generation_config = GenerationConfig(bos_token_id=300, eos_token_id=301, max_new_tokens=2)
    try:
        assert lm.generate(input_ids=PROMPT).shape == (1, PROMPT.shape[1] + 2)  # the model's defaults are used
    finally:
        lm.generation_config = None
        del lm.__dict__["_generation_config"]
    with pytest.raises(TypeError, match="generation_config must be a clvp GenerationConfig"):
        lm.generation_config = {"max_new_tokens": 2}


# ----------------------------------------------------------------------------------------------
# The PreTrainedModel surface and loading
# ----------------------------------------------------------------------------------------------


@needs_oracle
def test_pretrained_model_surface_matches_oracle(model, oracle):
    meta, _ = oracle
    want = meta["model"]
    lm = model.speech_decoder_model
    assert {"lm": lm.num_parameters(), "composite": model.num_parameters()} == want["num_parameters"]
    assert {"lm": lm.num_parameters(exclude_embeddings=True),
            "composite": model.num_parameters(exclude_embeddings=True)} == want["num_parameters_no_embeddings"]
    assert {"lm": lm.can_generate(), "composite": model.can_generate(),
            "encoder": model.text_encoder_model.can_generate()} == want["can_generate"]
    assert (lm.main_input_name, lm.base_model_prefix) == (want["main_input_name"], want["base_model_prefix"])
    assert lm.supports_gradient_checkpointing is want["supports_gradient_checkpointing"]
    assert {k: getattr(lm.generation_config, k) for k in ("bos_token_id", "eos_token_id")} == want["lm_generation_config"]
    assert (lm.get_output_embeddings() is None) is want["output_embeddings_is_none"]
    loaded, info = ClvpModelForConditionalGeneration.from_pretrained(pretrained_model_name_or_path=MODEL,
                                                                     output_loading_info=True)
    assert info == want["loading_info"]
    assert ClvpModelForConditionalGeneration.config_class is ClvpConfig and ClvpForCausalLM.config_class is ClvpDecoderConfig


def test_num_parameters_only_trainable(model):
    lm = ClvpForCausalLM(ClvpDecoderConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, vocab_size=50,
                                          bos_token_id=48, eos_token_id=49))
    total = lm.num_parameters()
    lm.lm_head.weight.requires_grad_(False)
    assert lm.num_parameters(only_trainable=True) == total - lm.lm_head.weight.numel()


def test_from_pretrained_torch_dtype_and_keywords(tmp_path):
    m = ClvpModelForConditionalGeneration.from_pretrained(MODEL, torch_dtype=torch.bfloat16)
    assert m.dtype == torch.bfloat16 and m.device == torch.device("cpu")
    assert ClvpModelForConditionalGeneration.from_pretrained(MODEL, torch_dtype="auto").dtype == torch.float32
    with pytest.raises(ValueError, match="disagree"):
        ClvpModelForConditionalGeneration.from_pretrained(MODEL, dtype="float32", torch_dtype=torch.float16)
    m = ClvpModelForConditionalGeneration.from_pretrained(MODEL, output_hidden_states=True)  # a common attribute
    assert m.config.output_hidden_states is True
    config = ClvpConfig.from_pretrained(MODEL)
    assert ClvpModelForConditionalGeneration.from_pretrained(MODEL, config=config).config is config
    with pytest.raises(TypeError, match="config must be a ClvpConfig"):
        ClvpModelForConditionalGeneration.from_pretrained(MODEL, config=config.decoder_config)
    with pytest.raises(TypeError, match="unknown ClvpConfig field"):
        ClvpModelForConditionalGeneration.from_pretrained(MODEL, not_a_field=1)
    m.save_pretrained(save_directory=tmp_path / "out")
    assert ClvpModelForConditionalGeneration.from_pretrained(tmp_path / "out").config == m.config


def _drop_tensor(tmp_path, drop: str, reshape: str | None = None):
    folder = tmp_path / "partial"
    folder.mkdir()
    (folder / "config.json").write_text((MODEL / "config.json").read_text())
    state = load_file(str(MODEL / "model.safetensors"))
    del state[drop]
    if reshape:
        state[reshape] = torch.zeros(3)
    state["not.in.the.model"] = torch.zeros(2)
    save_file(state, str(folder / "model.safetensors"))
    return folder


def test_strict_loading_by_default_and_opt_in_lenient(tmp_path):
    drop, reshape = "speech_decoder_model.lm_head.weight", "text_encoder_model.projection.weight"
    folder = _drop_tensor(tmp_path, drop, reshape)
    with pytest.raises(ValueError, match=drop.replace(".", r"\.")):  # strict: never random weights silently
        ClvpModelForConditionalGeneration.from_pretrained(folder)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m, info = ClvpModelForConditionalGeneration.from_pretrained(folder, strict=False, output_loading_info=True)
    text = " ".join(str(w.message) for w in caught)
    assert drop in text and reshape in text and "not.in.the.model" in text
    assert info["missing_keys"] == [drop] and info["unexpected_keys"] == ["not.in.the.model"]
    assert info["mismatched_keys"] == [(reshape, (3,), tuple(m.text_encoder_model.projection.weight.shape))]
    full = load_file(str(MODEL / "model.safetensors"))
    state = m.state_dict()
    assert torch.equal(state["speech_decoder_model.model.decoder.layer_norm.weight"],
                       full["speech_decoder_model.model.decoder.layer_norm.weight"])  # the rest is the checkpoint's
    assert torch.isfinite(state[drop]).all() and not torch.equal(state[drop], full[drop])  # freshly initialised
    with pytest.raises(TypeError, match="strict must be True or False"):
        ClvpModelForConditionalGeneration.from_pretrained(folder, strict="no")


# ----------------------------------------------------------------------------------------------
# Gradient checkpointing
# ----------------------------------------------------------------------------------------------


def _grads(model, ids, feats):
    model.zero_grad()
    torch.manual_seed(1)  # the same dropout masks in both runs (the checkpoint replays the RNG state)
    out = model(input_ids=ids, input_features=feats, return_loss=True)
    loss = out.loss + out.text_embeds.square().sum() + out.speech_embeds.square().sum()
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_gradient_checkpointing_same_gradients_and_recomputes(monkeypatch):
    g = load_file(str(MODEL / "golden.safetensors"))
    ids, feats = g["in.text_ids"][:2], g["in.features"][:2]
    m = ClvpModelForConditionalGeneration.from_pretrained(MODEL)
    m.train()
    assert not m.is_gradient_checkpointing
    plain = _grads(m, ids, feats)
    m.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    assert m.is_gradient_checkpointing and m.text_encoder_model.gradient_checkpointing
    calls = []
    real = torch.utils.checkpoint.checkpoint
    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint", lambda *a, **k: calls.append(k) or real(*a, **k))
    ckpt = _grads(m, ids, feats)
    # every encoder layer and every decoder layer went through the checkpoint
    cfg = m.config
    assert len(calls) == cfg.text_config.num_hidden_layers + cfg.speech_config.num_hidden_layers \
        + cfg.decoder_config.num_hidden_layers
    assert all(k == {"use_reentrant": False} for k in calls)
    assert plain.keys() == ckpt.keys()
    for name in plain:
        assert_close_verbose(ckpt[name], plain[name], atol=1e-5, what=f"grad {name}")
    m.gradient_checkpointing_disable()
    assert not m.is_gradient_checkpointing
    with pytest.raises(TypeError, match="gradient_checkpointing_kwargs must be a dict"):
        m.gradient_checkpointing_enable(gradient_checkpointing_kwargs=["use_reentrant"])


def test_tie_weights_and_output_embeddings():
    lm = ClvpForCausalLM(ClvpDecoderConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, vocab_size=50,
                                          bos_token_id=48, eos_token_id=49))
    before = {k: v.clone() for k, v in lm.state_dict().items()}
    lm.tie_weights()  # nothing is tied in CLVP
    assert all(torch.equal(before[k], v) for k, v in lm.state_dict().items())
    head = torch.nn.Linear(32, 50, bias=False)
    lm.set_output_embeddings(head)
    assert lm.lm_head is head and lm.get_output_embeddings() is None
    with pytest.raises(TypeError, match="in_features=32"):
        lm.set_output_embeddings(torch.nn.Linear(16, 50))
    enc = ClvpEncoder(ClvpEncoderConfig(hidden_size=64, num_attention_heads=2, projection_dim=32, num_hidden_layers=1))
    emb = torch.nn.Embedding(256, 64)
    enc.set_input_embeddings(emb)
    assert enc.get_input_embeddings() is emb


def test_generation_config_saved_and_loaded(tmp_path):
    m = ClvpModelForConditionalGeneration.from_pretrained(MODEL)
    lm = m.speech_decoder_model
    # untouched: written as transformers writes it (derived from the model config; its composite takes the
    # text config's codes, docs/parity.md §8), and such a file never overrides the decoder's codes
    m.save_pretrained(tmp_path / "composite")
    written = json.loads((tmp_path / "composite" / "generation_config.json").read_text())
    by_oracle = json.loads((MODEL / "generation_config.json").read_text())  # written by transformers' save_pretrained
    assert written == {k: v for k, v in by_oracle.items() if k != "transformers_version"}
    again = ClvpModelForConditionalGeneration.from_pretrained(tmp_path / "composite")
    assert (again.generation_config.bos_token_id, again.generation_config.eos_token_id) == (300, 301)
    # changed by the user: the changed fields are written and read back
    lm.generation_config = GenerationConfig(bos_token_id=300, eos_token_id=301, max_new_tokens=3, num_beams=2)
    lm.save_pretrained(tmp_path / "lm")
    written = json.loads((tmp_path / "lm" / "generation_config.json").read_text())
    assert written == {"bos_token_id": 300, "eos_token_id": 301, "max_new_tokens": 3, "num_beams": 2}
    loaded = ClvpForCausalLM.from_pretrained(tmp_path / "lm")
    assert loaded.generation_config == lm.generation_config
    assert loaded.generate(input_ids=PROMPT).shape == (1, PROMPT.shape[1] + 3)  # its defaults are used
    (tmp_path / "lm" / "generation_config.json").write_text(json.dumps({"num_beams": 0}))
    with pytest.raises(ValueError, match="generation_config.json: num_beams must be an integer >= 1"):
        ClvpForCausalLM.from_pretrained(tmp_path / "lm")
    assert m.text_encoder_model._extra_files() == {}  # encoders cannot generate: no generation config


def test_from_pretrained_from_config_and_state_dict():
    m = ClvpModelForConditionalGeneration.from_pretrained(MODEL)
    again = ClvpModelForConditionalGeneration.from_pretrained(pretrained_model_name_or_path=None, config=m.config,
                                                              state_dict=m.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), m.state_dict().values()))
    with pytest.raises(TypeError, match="or both config= and state_dict="):
        ClvpModelForConditionalGeneration.from_pretrained(pretrained_model_name_or_path=None, config=m.config)


def test_legacy_gradient_checkpointing_config_switch_and_text_config():
    config = ClvpDecoderConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, vocab_size=50,
                               bos_token_id=48, eos_token_id=49)
    config.gradient_checkpointing = True  # transformers' old way: turned on at construction, then removed
    lm = ClvpForCausalLM(config)
    assert lm.is_gradient_checkpointing and not hasattr(config, "gradient_checkpointing")
    assert config.get_text_config() is config
    composite = ClvpConfig()
    assert composite.get_text_config() is composite.text_config
    assert lm.get_output_embeddings() is None and lm._tied_weights_keys is None


def test_resize_token_embeddings():
    lm = ClvpForCausalLM(ClvpDecoderConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, vocab_size=50,
                                           bos_token_id=48, eos_token_id=49))
    old = lm.get_input_embeddings().weight.detach().clone()
    new = lm.resize_token_embeddings(60)
    assert new is lm.get_input_embeddings() and new.weight.shape == (60, 32) and lm.config.vocab_size == lm.vocab_size == 60
    assert torch.equal(new.weight[:50], old)
    assert torch.allclose(new.weight[50:], old.mean(0).expand(10, -1))  # mean resizing (transformers' default)
    assert lm(input_ids=torch.tensor([[55, 3]])).logits.shape == (1, 2, 50)  # the head is not resized, as transformers
    assert lm.resize_token_embeddings(40).weight.shape == (40, 32) and lm.config.vocab_size == 40
    assert lm.resize_token_embeddings(41, pad_to_multiple_of=8).weight.shape == (48, 32)
    assert lm.resize_token_embeddings() is lm.get_input_embeddings()
    with pytest.raises(ValueError, match="pad_to_multiple_of must be a positive integer"):
        lm.resize_token_embeddings(41, pad_to_multiple_of=1.3)
    with pytest.raises(ValueError, match="Asking to pad the embedding matrix to a multiple of `1.3`"):  # transformers' text
        lm.resize_token_embeddings(41, pad_to_multiple_of=1.3)
