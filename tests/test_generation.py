"""Speech-code generation (clvp/generation.py) against transformers 4.46.3's fixtures, plus the
behaviour the oracle does not cover: position schemes, the static cache, candidate ranking, bad input.

Fixtures come from ``PYTHONPATH=.oracle python tests/golden/make_generation.py``: small random models
(``generation_base``; ``generation_early_stop``, whose rows stop at different steps) with the oracle's
sequences for greedy, beam and sampling cases, and ``generation_processors.*`` (random logits through
the oracle's logits processors). Expected values come from the oracle, from docs/model.md, or from
reference loops written here on top of the model's own no-cache forward.
"""
from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

import clvp.generation as gen
from clvp import ClvpConfig, ClvpDecoderConfig, ClvpEncoderConfig, ClvpModelForConditionalGeneration
from clvp.candidates import PRESETS
from clvp.generation import GenerationConfig

from _asserts import assert_close_verbose
from conftest import FIXTURES

MODELS = ("base", "early_stop")
ATOL = 1e-4  # logits_per_text and embeddings against the oracle (float32, different op order)


# ----------------------------------------------------------------------------------------------
# Fixtures
# ----------------------------------------------------------------------------------------------


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest.one_thread


def _folder(name) -> "Path":
    """A fixture model folder: a name under tests/fixtures/generation_<name>, or a path (the live oracle test)."""
    return name if isinstance(name, Path) else FIXTURES / f"generation_{name}"


def _meta(name) -> dict:
    return json.loads((_folder(name) / "golden.json").read_text())


@functools.lru_cache(maxsize=None)
def _model(name) -> ClvpModelForConditionalGeneration:
    return ClvpModelForConditionalGeneration.from_pretrained(_folder(name))


@functools.lru_cache(maxsize=None)
def _golden(name) -> dict[str, torch.Tensor]:
    return load_file(str(_folder(name) / "golden.safetensors"))


def _cases(call: str) -> list:
    return [pytest.param(m, c, id=f"{m}-{c}") for m in MODELS for c, v in _meta(m)["cases"].items() if v["call"] == call]


def _text_eos(ids: torch.Tensor) -> torch.Tensor:
    """The text as CLVP's text encoder sees it in generate: the ids, then the text eos 0
    (docs/model.md §6.2)."""
    return F.pad(ids, (0, 1), value=0)


def _composite_inputs(name: str, case: dict):
    g = _golden(name)
    inputs = case["inputs"]
    ids = g["in." + inputs.get("text_key", "text_ids")][inputs["text"]]
    feats = g["in.features"][inputs["audio"]]
    return ids, feats


def _our_kwargs(case: dict) -> dict:
    kwargs = dict(case["kwargs"])
    if case.get("seed") is not None:
        kwargs["seed"] = case["seed"]
    return kwargs


def fix_reference(raw: torch.Tensor, stop: int, fix=(83, 45, 45, 248)) -> torch.Tensor:
    """docs/model.md §3.3 written out per row: drop the start column; from b = min(first stop, T-3) on,
    every column is the filler, the last three (or fewer) being 45, 45, 248; rows without a stop unchanged."""
    rows = []
    for row in raw[:, 1:].tolist():
        t = len(row)
        if stop in row:
            b = min(row.index(stop), t - 3)
            row = [c if j < b else fix[0] for j, c in enumerate(row)]
            tail = list(fix[1:])[-min(3, t):] if t else []
            row[t - len(tail):] = tail
        rows.append(row)
    return torch.tensor(rows, dtype=torch.long).reshape(raw.shape[0], raw.shape[1] - 1)


# ----------------------------------------------------------------------------------------------
# Against the oracle's sequences
# ----------------------------------------------------------------------------------------------


def test_fixtures_record_the_oracle():
    for name in MODELS:
        meta = _meta(name)
        assert meta["oracle"]["transformers"] == "4.46.3"
        model = _model(name)
        dc = model.config.decoder_config
        # start/stop codes of the fixtures differ from both the defaults and the text config's
        assert (meta["start_code"], meta["stop_code"]) == (dc.bos_token_id, dc.eos_token_id)
        assert dc.eos_token_id not in (0, 8193) and dc.bos_token_id not in (255, 8192)
        for file in (FIXTURES / f"generation_{name}").iterdir():
            assert file.stat().st_size < 1_000_000, f"{file} is over 1 MB"
    # the early-stop fixture really has rows stopping at different steps (what its tests rely on)
    steps = _meta("early_stop")["cases"]["greedy_one_text_n_audios"]["stop_steps"]
    assert len(set(steps)) > 1 and all(s > 0 for s in steps)


@pytest.mark.parametrize("name,case_name", _cases("composite"))
def test_composite_generate_matches_oracle(name, case_name):
    """ClvpModelForConditionalGeneration.generate: fixed codes token-identical, scores to 1e-4; start and
    stop codes are *not* passed (the oracle needed them explicitly): ours must take the decoder config's."""
    check_composite_case(name, case_name)


def check_composite_case(name, case_name: str) -> None:
    case = _meta(name)["cases"][case_name]
    model, g = _model(name), _golden(name)
    ids, feats = _composite_inputs(name, case)
    kwargs = _our_kwargs(case)
    if "error" in case:  # the oracle refuses this request: so must we, with a ValueError
        with pytest.raises(ValueError):
            model.generate(input_ids=ids, input_features=feats, **kwargs)
        return
    raw = gen.generate_speech_ids(model, input_ids=ids, input_features=feats,
                                  **{k: v for k, v in kwargs.items() if k != "output_hidden_states"})
    want_raw = g[f"{case_name}.raw"]
    if case["pad_to_max_mel_tokens"] is not None:  # the oracle's raw ids are the padded ones
        raw = F.pad(raw, (0, want_raw.shape[1] - raw.shape[1]), value=model.config.decoder_config.eos_token_id)
    assert raw.tolist() == want_raw.tolist(), f"{case_name}: raw sequences differ"

    out = model.generate(input_ids=ids, input_features=feats, pad_to_max_mel_tokens=case["pad_to_max_mel_tokens"],
                         **kwargs)
    if "oracle_crash" in case:
        # 4.46.3's fix_speech_decoder_output crashes on rows shorter than 3 codes (fixed in 5.x,
        # docs/model.md §6.3): ours must not, and must follow docs/model.md §3.3
        assert out.speech_ids.tolist() == fix_reference(want_raw, model.config.decoder_config.eos_token_id).tolist()
        return
    assert out.speech_ids.tolist() == g[f"{case_name}.speech_ids"].tolist(), f"{case_name}: fixed codes differ"
    for field in ("logits_per_text", "logits_per_speech", "text_embeds", "speech_embeds"):
        assert_close_verbose(getattr(out, field), g[f"{case_name}.{field}"], atol=ATOL, what=f"{case_name}.{field}")
    if kwargs.get("output_hidden_states"):
        steps = out.decoder_hidden_states
        keys = sorted({k.split(".")[2] for k in g if k.startswith(f"{case_name}.decoder_hidden_states.")}, key=int)
        assert len(steps) == len(keys)
        for s, layers in enumerate(steps):
            want = [g[f"{case_name}.decoder_hidden_states.{s}.{i}"] for i in range(len(layers))]
            assert f"{case_name}.decoder_hidden_states.{s}.{len(layers)}" not in g, "missing hidden states"
            for i, (h, w) in enumerate(zip(layers, want)):
                assert_close_verbose(h, w, atol=ATOL, what=f"{case_name} hidden step {s} layer {i}")


@pytest.mark.parametrize("name,case_name", _cases("decoder"))
def test_causal_lm_generate_matches_oracle(name, case_name):
    """ClvpForCausalLM.generate from input_ids: plain continuation, the decoder config's codes, max_length 20."""
    check_decoder_case(name, case_name)


def check_decoder_case(name, case_name: str) -> None:
    case = _meta(name)["cases"][case_name]
    model, g = _model(name), _golden(name)
    ids = g["in." + case["inputs"]["ids"]][case["inputs"]["rows"]]
    if "error" in case:
        with pytest.raises(ValueError):
            model.speech_decoder_model.generate(input_ids=ids, **case["kwargs"])
        return
    seqs = model.speech_decoder_model.generate(input_ids=ids, **case["kwargs"])
    assert seqs.tolist() == g[f"{case_name}.sequences"].tolist()


def test_finished_rows_emit_stop_and_loop_ends_when_all_done(monkeypatch):
    """Rows that stopped keep emitting the stop code; the loop ends at the step where the last row stops."""
    name = "early_stop"
    case = _meta(name)["cases"]["greedy_one_text_n_audios"]
    model = _model(name)
    stop = model.config.decoder_config.eos_token_id
    ids, feats = _composite_inputs(name, case)
    steps = []
    real_step = gen._Decoder.step
    monkeypatch.setattr(gen._Decoder, "step", lambda self, *a, **k: steps.append(1) or real_step(self, *a, **k))
    raw = gen.generate_speech_ids(model, input_ids=ids, input_features=feats, **case["kwargs"])
    stops = case["stop_steps"]
    assert max(stops) < case["kwargs"]["max_new_tokens"]  # every row stops early
    assert raw.shape == (3, 1 + max(stops))
    assert len(steps) == max(stops) - 1  # the prefill gives code 1; one step per further code
    for row, s in zip(raw.tolist(), stops):
        assert row[s] == stop and all(c == stop for c in row[s:]), row
        assert stop not in row[1:s]


def test_pad_to_max_mel_tokens_pads_with_the_decoder_stop_code(monkeypatch):
    model = _model("early_stop")
    stop = model.config.decoder_config.eos_token_id
    g = _golden("early_stop")
    seen = {}
    real_fix = model.fix_speech_decoder_output

    def capture(ids):
        seen["raw"] = ids.clone()
        return real_fix(ids)

    monkeypatch.setattr(model, "fix_speech_decoder_output", capture)
    out = model.generate(input_ids=g["in.text_ids"][:1], input_features=g["in.features"][:1], max_new_tokens=3,
                         pad_to_max_mel_tokens=15)
    raw = seen["raw"]
    # docs/model.md §3.4: pad_to_max_mel_tokens - 1 codes
    assert raw.shape == (1, 15) and out.speech_ids.shape == (1, 14)
    assert raw[0, 4:].tolist() == [stop] * 11  # start + 3 codes, then the stop code (not the text eos 0)
    assert out.speech_ids[0, -3:].tolist() == [45, 45, 248]


# ----------------------------------------------------------------------------------------------
# Logits processors against the oracle's
# ----------------------------------------------------------------------------------------------

_PROC = json.loads((FIXTURES / "generation_processors.json").read_text())


def _ours(cls: str, kw: dict):
    if cls == "TemperatureLogitsWarper":
        return gen.Temperature(kw["temperature"])
    if cls == "TopKLogitsWarper":
        return gen.TopK(kw["top_k"], kw.get("min_tokens_to_keep", 1))
    if cls == "TopPLogitsWarper":
        return gen.TopP(kw["top_p"], kw.get("min_tokens_to_keep", 1))
    if cls == "TypicalLogitsWarper":
        return gen.Typical(kw["mass"], kw.get("min_tokens_to_keep", 1))
    if cls == "RepetitionPenaltyLogitsProcessor":
        return gen.RepetitionPenalty(kw["penalty"])
    if cls == "MinLengthLogitsProcessor":
        return gen.MinLength(kw["min_length"], kw["eos_token_id"])
    if cls == "MinNewTokensLengthLogitsProcessor":
        return gen.MinLength(kw["min_new_tokens"], kw["eos_token_id"], prompt_len=kw["prompt_length_to_skip"])
    raise AssertionError(cls)


def _assert_scores_equal(ours: torch.Tensor, want: torch.Tensor, what: str):
    assert torch.equal(torch.isneginf(ours), torch.isneginf(want)), (
        f"{what}: -inf at {int((torch.isneginf(ours) != torch.isneginf(want)).sum())} different positions")
    finite = torch.isfinite(want)
    assert_close_verbose(ours[finite], want[finite], atol=1e-6, rtol=1e-6, what=what)


@pytest.mark.parametrize("name", list(_PROC["processors"]))
def test_logits_processor_matches_oracle(name):
    g = load_file(str(FIXTURES / "generation_processors.safetensors"))
    spec = _PROC["processors"][name]
    logits, ids = g["in.logits"], g["in.input_ids"]
    before = logits.clone()
    out = _ours(spec["oracle_class"], spec["kwargs"])(ids, logits)
    assert torch.equal(logits, before), "the processor modified its input in place"
    _assert_scores_equal(out, g[f"out.{name}"], name)


@pytest.mark.parametrize("name", list(_PROC["lists"]))
def test_processor_list_matches_oracle(name):
    """The list transformers builds for these settings (Tortoise's among them), applied in its order."""
    g = load_file(str(FIXTURES / "generation_processors.safetensors"))
    spec = _PROC["lists"][name]
    cfg = GenerationConfig(**spec["kwargs"], eos_token_id=_PROC["eos_token_id"])
    procs = gen.build_processors(cfg, spec["prompt_len"])
    warpers = {"Temperature": "TemperatureLogitsWarper", "TopK": "TopKLogitsWarper", "TopP": "TopPLogitsWarper",
               "Typical": "TypicalLogitsWarper", "RepetitionPenalty": "RepetitionPenaltyLogitsProcessor"}
    ours_order = [warpers[type(p).__name__] for p in procs if type(p).__name__ in warpers]
    assert ours_order == [c for c in spec["oracle_classes"] if c in warpers.values()]
    scores = g["in.logits"].clone()
    if spec["input"] == "log_softmax":
        scores = torch.log_softmax(scores, dim=-1)
    _assert_scores_equal(gen.apply_processors(procs, g["in.input_ids"], scores), g[f"list.{name}"], name)


# ----------------------------------------------------------------------------------------------
# fix_speech_decoder_output (docs/model.md §3.3) and start/stop codes
# ----------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _default_codes_model() -> ClvpModelForConditionalGeneration:
    """A tiny model with the real start/stop codes 8192/8193 and fixing codes (83, 45, 45, 248)."""
    enc = dict(hidden_size=32, num_attention_heads=1, projection_dim=32, intermediate_size=16, num_hidden_layers=1)
    config = ClvpConfig(text_config=ClvpEncoderConfig(**enc), speech_config=ClvpEncoderConfig(vocab_size=8192, **enc),
                        decoder_config=ClvpDecoderConfig(hidden_size=32, num_attention_heads=2, num_hidden_layers=1,
                                                         num_mel_attn_blocks=1, max_position_embeddings=32,
                                                         max_text_tokens=24),
                        projection_dim=32)
    torch.manual_seed(0)
    return ClvpModelForConditionalGeneration(config).eval()


@pytest.mark.parametrize("raw,want", [
    ([8192, 5, 6, 8193, 7, 8, 9, 10], [5, 6, 83, 83, 45, 45, 248]),  # docs/model.md §3.3 example
    ([8192, 1, 2, 3, 4, 5, 6, 8193], [1, 2, 3, 4, 45, 45, 248]),  # stop in the last column
    ([8192, 1, 2, 3, 4, 5], [1, 2, 3, 4, 5]),  # no stop: unchanged
    ([8192, 8193, 8193, 8193, 8193], [83, 45, 45, 248]),  # stop at once
    ([8192, 7, 8193], [45, 248]),  # shorter than 3 codes (crashed in transformers 4.46.3)
    ([8192, 8193], [248]),
    ([8192], []),
])
def test_fix_speech_decoder_output_examples(raw, want):
    model = _default_codes_model()
    assert model.fix_speech_decoder_output(torch.tensor([raw])).tolist() == [want]
    assert fix_reference(torch.tensor([raw]), 8193).tolist() == [want]  # the test's own reading agrees


def test_fix_speech_decoder_output_batch_rows_independent():
    model = _default_codes_model()
    raw = torch.tensor([[8192, 5, 6, 8193, 7, 8, 9, 10], [8192, 1, 2, 3, 4, 5, 6, 7], [8192, 1, 2, 3, 4, 5, 6, 8193]])
    assert model.fix_speech_decoder_output(raw).tolist() == fix_reference(raw, 8193).tolist()
    assert raw[0, 3] == 8193  # input untouched


def test_start_and_stop_codes_default_to_the_decoder_config():
    cfg = gen.resolve_config(ClvpDecoderConfig(), None, {})
    assert (cfg.bos_token_id, cfg.eos_token_id) == (8192, 8193)  # never the text config's 255 / 0
    cfg = gen.resolve_config(ClvpDecoderConfig(bos_token_id=11, eos_token_id=12), GenerationConfig(max_new_tokens=3), {})
    assert (cfg.bos_token_id, cfg.eos_token_id) == (11, 12)
    cfg = gen.resolve_config(ClvpDecoderConfig(), None, {"eos_token_id": 7})
    assert cfg.eos_token_id == 7  # an explicit one wins
    model = _default_codes_model()
    g = _golden("base")
    raw = gen.generate_speech_ids(model, input_ids=g["in.text_ids"][:1], input_features=g["in.features"][:1],
                                  max_new_tokens=4)
    assert raw[0, 0] == 8192
    with pytest.raises(TypeError, match="unknown generation arguments"):
        model.generate(input_ids=g["in.text_ids"][:1], input_features=g["in.features"][:1], max_new_token=4)


def test_generation_config_is_not_mutated():
    model = _model("base")
    g = _golden("base")
    cfg = GenerationConfig(max_new_tokens=3)
    model.generate(input_ids=g["in.text_ids"][:1], input_features=g["in.features"][:1], generation_config=cfg,
                   repetition_penalty=1.5)
    assert cfg == GenerationConfig(max_new_tokens=3)


# ----------------------------------------------------------------------------------------------
# Sampling reproducibility
# ----------------------------------------------------------------------------------------------


def _sample(model, **kw):
    g = _golden("base")
    return gen.generate_speech_ids(model, input_ids=g["in.text_ids"][:1], input_features=g["in.features"][:1],
                                   do_sample=True, num_return_sequences=3, max_new_tokens=12, **kw)


def test_sampling_reproducible_with_seed_and_generator():
    model = _model("base")
    a = _sample(model, seed=7)
    torch.manual_seed(123)  # the global RNG must not matter
    b = _sample(model, seed=7)
    assert torch.equal(a, b)
    c = _sample(model, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, c)  # seed=s is a torch.Generator seeded with s
    d = _sample(model, seed=8)
    assert not torch.equal(a, d)
    assert not torch.equal(a[0], a[1]) or not torch.equal(a[1], a[2])  # rows are independent samples


def test_generator_is_advanced_not_reset():
    model = _model("base")
    gen_ = torch.Generator().manual_seed(3)
    a = _sample(model, generator=gen_)
    b = _sample(model, generator=gen_)
    assert not torch.equal(a, b)


# ----------------------------------------------------------------------------------------------
# Positions and the static cache against a no-cache reference loop
# ----------------------------------------------------------------------------------------------


def _prompt(model, ids, feats):
    """The decoder prompt E (docs/model.md §3.2): [conditioning, emb(start) + pos(0)], (B, L, C)."""
    lm = model.speech_decoder_model
    dec = lm.model.decoder
    cond = model.conditioning_encoder(input_features=feats, input_ids=_text_eos(ids))  # (B, 1 + T + 3, C)
    start = torch.full((cond.shape[0], 1), lm.config.bos_token_id)
    return torch.cat([cond, dec.input_embeds_layer(start) + dec.position_embeds_layer(torch.zeros_like(start))], dim=1)


@torch.no_grad()
def reference_greedy(model, ids, feats, new_tokens: int, positions: str) -> torch.Tensor:
    """Greedy decoding by full recomputation with the decoder's own forward (no cache): the prompt at
    positions 0..L-1, then the k-th fed-back code at mel position k + 1 ("hf") or k ("contiguous")."""
    lm = model.speech_decoder_model
    dec = lm.model.decoder
    stop = lm.config.eos_token_id
    e = _prompt(model, ids, feats)
    b, length, _ = e.shape
    prompt_pos = torch.arange(length)
    codes = torch.empty(b, 0, dtype=torch.long)
    seqs = torch.full((b, 1), lm.config.bos_token_id)
    done = torch.zeros(b, dtype=torch.bool)
    for k in range(1, new_tokens + 1):
        mel_pos = torch.tensor([j + 1 if positions == "hf" else j for j in range(1, k)], dtype=torch.long)
        x = torch.cat([e - dec.position_embeds_layer(prompt_pos)[None], dec.input_embeds_layer(codes)], dim=1)
        pos = torch.cat([prompt_pos, mel_pos])[None].expand(b, -1)
        logits = lm(inputs_embeds=x, position_ids=pos, use_cache=False).logits[:, -1]
        nxt = torch.where(done, torch.full((b,), stop), logits.argmax(-1))
        done |= nxt == stop
        codes = torch.cat([codes, nxt[:, None]], dim=1)
        seqs = torch.cat([seqs, nxt[:, None]], dim=1)
        if bool(done.all()):
            break
    return seqs


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("positions", ["hf", "contiguous"])
def test_static_cache_equals_no_cache_reference(name, positions):
    model = _model(name)
    g = _golden(name)
    ids, feats = g["in.text_ids"][:1], g["in.features"]
    want = reference_greedy(model, ids, feats, 12, positions)
    got = gen.generate_speech_ids(model, input_ids=ids, input_features=feats, max_new_tokens=12, positions=positions)
    assert got.tolist() == want.tolist()


def test_contiguous_positions_differ_from_hf():
    model = _model("base")
    g = _golden("base")
    ids, feats = g["in.text_ids"][:1], g["in.features"][:1]
    hf = gen.generate_speech_ids(model, input_ids=ids, input_features=feats, max_new_tokens=12)
    contiguous = gen.generate_speech_ids(model, input_ids=ids, input_features=feats, max_new_tokens=12,
                                         positions="contiguous")
    assert hf[0, :2].tolist() == contiguous[0, :2].tolist()  # the first code comes from the prefill alone
    assert hf.tolist() != contiguous.tolist()


def test_position_hf_is_default_and_bad_scheme_rejected():
    assert GenerationConfig().positions == "hf"
    with pytest.raises(ValueError, match="positions"):
        gen.resolve_config(ClvpDecoderConfig(), None, {"positions": "tortoise"})


# ----------------------------------------------------------------------------------------------
# Candidate generation and ranking
# ----------------------------------------------------------------------------------------------


class _Spy:
    """Wraps clvp.generation.decoder_generate: records each call's config and conditioning."""

    def __init__(self, monkeypatch):
        self.calls = []
        real = gen.decoder_generate

        def spy(lm, **kw):
            self.calls.append(dict(cfg=kw["cfg"].copy(), cond=kw.get("conditioning_embeds")))
            return real(lm, **kw)

        monkeypatch.setattr(gen, "decoder_generate", spy)


def test_candidates_in_batches_with_progress_bar(monkeypatch, capfd):
    model = _model("base")
    g = _golden("base")
    spy = _Spy(monkeypatch)
    res = model.generate_candidates(g["in.text_ids"][:1], g["in.features"][:1], num_candidates=5, batch_size=2,
                                    max_new_tokens=6, seed=0)
    assert [c["cfg"].num_return_sequences for c in spy.calls] == [2, 2, 1]
    err = capfd.readouterr().err
    assert "generating candidates" in err and "5/5" in err
    assert res.codes.shape == (5, 6) and res.scores.shape == (5,) and sorted(res.order.tolist()) == list(range(5))

    spy.calls.clear()
    model.generate_candidates(g["in.text_ids"][:1], g["in.features"][:1], num_candidates=3, batch_size=4,
                              max_new_tokens=6, seed=0)
    assert [c["cfg"].num_return_sequences for c in spy.calls] == [3]
    assert "3/3" in capfd.readouterr().err  # one batch still shows its progress

    model.generate_candidates(g["in.text_ids"][:1], g["in.features"][:1], num_candidates=3, batch_size=4,
                              max_new_tokens=6, seed=0, progress=False)
    assert "generating candidates" not in capfd.readouterr().err  # progress=False: no bar


def test_candidates_ranked_by_recomputed_clvp_scores():
    model = _model("early_stop")
    g = _golden("early_stop")
    ids = g["in.text_ids"][:1]
    res = model.generate_candidates(ids, g["in.features"][:1], num_candidates=6, batch_size=4, max_new_tokens=10,
                                    seed=1, progress=False)
    assert torch.all(res.scores[:-1] >= res.scores[1:])  # best first
    # the scores are CLVP's logits for the returned codes: scaled cosine of the text (+ eos 0) and codes
    text = model.get_text_features(input_ids=_text_eos(ids))
    speech = model.get_speech_features(speech_ids=res.codes)
    cos = F.normalize(text, dim=-1) @ F.normalize(speech, dim=-1).T
    assert_close_verbose(res.scores, cos[0] * model.logit_scale.exp(), atol=ATOL, what="candidate scores")
    # every candidate was padded with the stop code to max_new_tokens before fixing (Tortoise pads to 500)
    assert res.codes.shape == (6, 10)
    stop = model.config.decoder_config.eos_token_id
    assert int(res.codes.max()) < stop
    assert all(row[-3:] == [45, 45, 248] or 83 not in row for row in res.codes.tolist())


def test_candidates_average_the_conditioning_of_several_clips(monkeypatch):
    model = _model("base")
    g = _golden("base")
    ids, feats = g["in.text_ids"][:1], g["in.features"]  # 3 clips of one voice
    spy = _Spy(monkeypatch)
    model.generate_candidates(ids, feats, num_candidates=2, batch_size=2, max_new_tokens=4, seed=0, progress=False)
    cond = spy.calls[0]["cond"]
    with torch.no_grad():
        per_clip = torch.stack([model.conditioning_encoder(input_features=feats[i:i + 1], input_ids=_text_eos(ids))
                                for i in range(3)])  # (3, 1, L, C)
    want = per_clip[0].clone()
    want[:, 0] = per_clip[:, :, 0].mean(0)  # the voice latent is the mean; the text part is shared
    assert_close_verbose(cond, want, atol=1e-5, what="conditioning of 3 clips")


def test_candidate_presets(monkeypatch):
    model = _model("base")
    g = _golden("base")
    spy = _Spy(monkeypatch)
    res = model.generate_candidates(g["in.text_ids"][:1], g["in.features"][:1], preset="ultra_fast", batch_size=16,
                                    max_new_tokens=3, seed=0, progress=False)
    assert len(res.scores) == 16
    cfg = spy.calls[0]["cfg"]
    assert (cfg.do_sample, cfg.temperature, cfg.top_p, cfg.top_k, cfg.repetition_penalty) == (True, 0.8, 0.8, 50, 2.0)
    assert PRESETS["fast"]["num_candidates"] == 96 and PRESETS["standard"]["num_candidates"] == 256
    assert PRESETS["ultra_fast"]["max_new_tokens"] == 500
    with pytest.raises(ValueError) as err:
        model.generate_candidates(g["in.text_ids"][:1], g["in.features"][:1], preset="turbo")
    for name in ("ultra_fast", "fast", "standard", "high_quality"):
        assert name in str(err.value)


# ----------------------------------------------------------------------------------------------
# Bad input: clear errors before any work
# ----------------------------------------------------------------------------------------------


@pytest.fixture
def no_work(monkeypatch):
    """Fails the test if the conditioning encoder or the decoder runs."""
    def boom(*a, **k):
        raise AssertionError("work started before the input was rejected")

    model = _model("base")
    monkeypatch.setattr(model.conditioning_encoder, "forward", boom)
    monkeypatch.setattr(model.conditioning_encoder, "mel_latent", boom)
    monkeypatch.setattr(gen._Decoder, "prefill", boom)
    return model


def _inputs(n_text=7):
    g = _golden("base")
    ids = torch.randint(1, 255, (1, n_text))
    return ids, g["in.features"][:1]


def test_text_too_long_gives_the_limit(no_work):
    model = no_work
    limit = model.config.decoder_config.max_text_tokens - 3
    ids, feats = _inputs(limit + 1)
    for call in (lambda: model.generate(input_ids=ids, input_features=feats, max_new_tokens=2),
                 lambda: model.generate_candidates(ids, feats, num_candidates=2, max_new_tokens=2),
                 lambda: model.get_speech_features(input_ids=ids, input_features=feats,
                                                   generation_config=GenerationConfig(max_new_tokens=2))):
        with pytest.raises(ValueError, match=str(limit)):
            call()


@pytest.mark.parametrize("kwargs,match", [
    (dict(num_beams=2, num_return_sequences=3), "num_return_sequences"),
    (dict(num_return_sequences=2), "num_return_sequences"),  # greedy cannot return several sequences
    (dict(num_beams=0), "num_beams"),
    (dict(do_sample=True, num_beams=2), "beam"),
    (dict(max_new_tokens=0), "max_new_tokens"),
    (dict(temperature=0.0, do_sample=True), "temperature"),
    (dict(top_p=1.5, do_sample=True), "top_p"),
])
def test_impossible_settings_rejected_before_work(no_work, kwargs, match):
    ids, feats = _inputs()
    with pytest.raises(ValueError, match=match):
        no_work.generate(input_ids=ids, input_features=feats, **kwargs)


def test_generator_on_another_device_rejected_before_work(no_work):
    class CudaGenerator(torch.Generator):  # what a CUDA generator looks like, on a CPU-only machine
        @property
        def device(self):
            return torch.device("cuda", 0)

    ids, feats = _inputs()
    with pytest.raises(ValueError, match="generator"):
        no_work.generate(input_ids=ids, input_features=feats, do_sample=True, max_new_tokens=2,
                         generator=CudaGenerator())


@pytest.mark.parametrize("positions,limit", [("hf", 63), ("contiguous", 64)])
def test_max_new_tokens_past_the_position_table_gives_the_limit(no_work, positions, limit):
    """64 mel positions: the k-th fed-back code sits at k + 1 ("hf", so 63 codes fit) or k (64 fit)."""
    model = no_work
    ids, feats = _inputs()
    assert model.config.decoder_config.max_position_embeddings == 64
    with pytest.raises(ValueError, match=f"at most {limit}"):
        model.generate(input_ids=ids, input_features=feats, max_new_tokens=limit + 1, positions=positions)


@pytest.mark.parametrize("positions,limit", [("hf", 63), ("contiguous", 64)])
def test_max_new_tokens_at_the_position_limit_runs(positions, limit):
    model = _model("base")
    ids, feats = _inputs()
    raw = gen.generate_speech_ids(model, input_ids=ids, input_features=feats, max_new_tokens=limit,
                                  positions=positions, min_new_tokens=limit)
    assert raw.shape == (1, 1 + limit)


def test_get_speech_features_generates_first():
    """get_speech_features(input_ids=, input_features=, generation_config=) = the speech embedding of the
    codes generate returns (the oracle's greedy 5-code case)."""
    model, g = _model("base"), _golden("base")
    case = _meta("base")["cases"]["greedy_new5"]
    ids, feats = _composite_inputs("base", case)
    emb = model.get_speech_features(input_ids=ids, input_features=feats,
                                    generation_config=GenerationConfig(max_new_tokens=5))
    assert_close_verbose(F.normalize(emb, dim=-1), g["greedy_new5.speech_embeds"], atol=ATOL,
                         what="speech features of generated codes")
    with pytest.raises(ValueError):
        model.get_speech_features(input_ids=ids)


def test_causal_lm_return_dict_and_hidden_states():
    model = _model("base")
    g = _golden("base")
    lm = model.speech_decoder_model
    out = lm.generate(input_ids=g["in.dec_ids"][:1], max_new_tokens=3, return_dict_in_generate=True,
                      output_hidden_states=True)
    assert out.sequences.shape == (1, g["in.dec_ids"].shape[1] + 3)
    assert len(out.hidden_states) == 3 and len(out.hidden_states[0]) == lm.config.num_hidden_layers + 1
    assert math.isfinite(float(out.hidden_states[-1][-1].sum()))
