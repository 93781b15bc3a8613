"""Golden fixtures for speech-code generation, made by the oracle (transformers 4.46.3).

Run from the repository root with the oracle on the path (never in the library's own environment):

    PYTHONPATH=.oracle python tests/golden/make_generation.py                 # rewrites tests/fixtures/generation_*
    PYTHONPATH=.oracle python tests/golden/make_generation.py --out DIR --random-seed 7   # one fresh random model

For each small random model it writes ``<out>/generation_<name>/``:

* ``config.json`` + ``model.safetensors``: the oracle model (weights moved off transformers' tiny
  initialisation so that logits have clear margins; the ``early_stop`` model's position embeddings
  push toward the stop code more at every position, so rows stop at different steps), written by its own ``save_pretrained``;
* ``golden.safetensors``: the inputs (``in.*``) and for every case the oracle's outputs
  (``<case>.speech_ids`` fixed codes, ``<case>.raw`` the decoder's sequences before fixing,
  ``<case>.logits_per_text`` ...), or ``<case>.sequences`` for ``ClvpForCausalLM.generate``;
* ``golden.json``: versions and, per case, the call, the inputs it uses and its generation arguments.

and ``<out>/generation_processors.safetensors`` + ``.json``: random logits and ids through the
oracle's logits processors (each alone, and the full lists ``_get_logits_processor`` builds).

Every composite call passes the oracle an explicit ``GenerationConfig(bos=<decoder start>, eos=<decoder
stop>, pad=<stop>, return_dict_in_generate=True)`` because its default stops on the text eos (0)
(docs/model.md §3.5); the tests call ours *without* start/stop codes, so they check that ours takes
them from the decoder config. Sampling cases seed the oracle's global RNG with ``torch.manual_seed``
(its ``torch.multinomial`` draws from it) and ours with ``seed=``: the draws coincide because both
sample once per step from the same distribution. This script imports only transformers and torch.
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
from pathlib import Path

import torch

import transformers
from safetensors.torch import save_file
from transformers import (
    ClvpConfig,
    ClvpDecoderConfig,
    ClvpEncoderConfig,
    ClvpModelForConditionalGeneration,
    GenerationConfig,
)
from transformers.generation import logits_process as lp

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
TEXT_VOCAB = 256
TEXT_LEN, MEL_FRAMES, N_AUDIO, DEC_PROMPT = 7, 20, 3, 6
MADE_BY = "PYTHONPATH=.oracle python tests/golden/make_generation.py"

# Small models; decoder vocab = speech vocab so every generated code is a valid speech-encoder id.
MODELS = {
    # 2 decoder layers, biases everywhere, partial encoder rotary (32 of head_dim 64)
    "base": dict(
        enc=dict(hidden_size=64, num_attention_heads=1, projection_dim=32, intermediate_size=32),
        enc_layers=1, enc_bias=True,
        dec=dict(vocab_size=302, hidden_size=64, num_attention_heads=4, num_hidden_layers=2, n_inner=96,
                 num_mel_attn_blocks=1, max_position_embeddings=64, max_text_tokens=40, use_attention_bias=True),
        eos_drift=None,
    ),
    # 1 decoder layer, no q/k/v biases, the stop code likelier at later positions (searched below)
    "early_stop": dict(
        enc=dict(hidden_size=32, num_attention_heads=1, projection_dim=32, intermediate_size=24),
        enc_layers=1, enc_bias=False,
        dec=dict(vocab_size=260, hidden_size=48, num_attention_heads=2, num_hidden_layers=1, n_inner=64,
                 num_mel_attn_blocks=1, max_position_embeddings=48, max_text_tokens=32, use_attention_bias=False),
        eos_drift="search",
    ),
}


def build_config(spec: dict) -> ClvpConfig:
    dec = dict(spec["dec"])
    vocab = dec["vocab_size"]
    enc = spec["enc"]
    text = ClvpEncoderConfig(vocab_size=TEXT_VOCAB, num_hidden_layers=spec["enc_layers"],
                             use_attention_bias=spec["enc_bias"], **enc)
    speech = ClvpEncoderConfig(vocab_size=vocab, num_hidden_layers=spec["enc_layers"],
                               use_attention_bias=spec["enc_bias"], **enc)
    decoder = ClvpDecoderConfig(bos_token_id=vocab - 2, eos_token_id=vocab - 1, **dec)
    return ClvpConfig.from_sub_model_configs(text, speech, decoder, projection_dim=enc["projection_dim"])


def randomize(model: torch.nn.Module, gen: torch.Generator) -> None:
    """Weights of unit-scale activations: embeddings N(0, 1), linear N(0, 1/fan_in), an lm_head giving
    logits of std ~2 (clear argmax margins), norms off 1/0 and biases off 0."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name == "logit_scale":
                continue
            if p.dim() == 1:
                if "norm" in name and name.endswith("weight"):
                    p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
                else:
                    p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            elif "embedding" in name or "embeds_layer" in name:
                p.copy_(torch.randn(p.shape, generator=gen))
            elif name.endswith("lm_head.weight"):
                p.copy_(2.0 * torch.randn(p.shape, generator=gen) / p.shape[1] ** 0.5)
            elif "mlp.c_" in name:  # GPT-2 Conv1D: (in, out)
                p.copy_(torch.randn(p.shape, generator=gen) / p.shape[0] ** 0.5)
            else:  # nn.Linear (out, in) and Conv1d (out, in, 1)
                p.copy_(torch.randn(p.shape, generator=gen) / (p[0].numel()) ** 0.5)


def make_inputs(gen: torch.Generator, dec_vocab: int) -> dict[str, torch.Tensor]:
    ins = {}
    ins["text_ids"] = torch.randint(1, 255, (2, TEXT_LEN), generator=gen)  # no 0 (pad/eos) nor 255 (bos)
    scale = torch.tensor([0.5, 1.0, 2.0])[:, None, None]
    ins["features"] = torch.randn(N_AUDIO, 80, MEL_FRAMES, generator=gen) * scale + torch.randn(N_AUDIO, 1, 1, generator=gen)
    # decoder prompts for ClvpForCausalLM.generate: codes only, never the start/stop codes
    ins["dec_ids"] = torch.randint(0, dec_vocab - 2, (2, DEC_PROMPT), generator=gen)
    ins["dec_ids_long"] = torch.randint(0, dec_vocab - 2, (1, 22), generator=gen)  # longer than max_length 20
    ins["text_ids_long"] = torch.randint(1, 255, (1, 16), generator=gen)  # prompt of 20 embeddings >= max_length 20
    return ins


# (case name, call, inputs, generation arguments). "text": rows of in.text_ids; "audio": rows of in.features.
COMPOSITE_CASES = [
    ("greedy_new1", dict(text=[0], audio=[0]), dict(max_new_tokens=1)),
    ("greedy_new5", dict(text=[0], audio=[0]), dict(max_new_tokens=5)),
    ("greedy_new12", dict(text=[0], audio=[1]), dict(max_new_tokens=12)),
    ("greedy_default_length", dict(text=[0], audio=[0]), dict()),  # max_length 20 counts the prompt embeddings
    ("greedy_batch_texts", dict(text=[0, 1], audio=[0, 1]), dict(max_new_tokens=10)),
    ("greedy_one_text_n_audios", dict(text=[0], audio=[0, 1, 2]), dict(max_new_tokens=12)),
    ("greedy_rep_min_new", dict(text=[0], audio=[2]), dict(max_new_tokens=12, repetition_penalty=2.0, min_new_tokens=5)),
    ("greedy_rep_soft", dict(text=[1], audio=[1]), dict(max_new_tokens=10, repetition_penalty=0.8)),
    ("greedy_min_length", dict(text=[0], audio=[0, 1, 2]), dict(max_new_tokens=12, min_length=19)),  # 19 - 12 prompt embeddings
    ("greedy_pad_to_max", dict(text=[0], audio=[0, 1, 2]), dict(max_new_tokens=6), 15),
    ("greedy_default_length_long_text", dict(text=[0], audio=[0], text_key="text_ids_long"), dict()),  # oracle raises
    ("greedy_hidden", dict(text=[0], audio=[0]), dict(max_new_tokens=3, output_hidden_states=True)),
    ("beam2", dict(text=[0], audio=[0]), dict(num_beams=2, max_new_tokens=10)),
    ("beam3_ret2_lp05", dict(text=[0], audio=[1]), dict(num_beams=3, num_return_sequences=2, length_penalty=0.5,
                                                         max_new_tokens=10)),
    ("beam4_ret3", dict(text=[0], audio=[0]), dict(num_beams=4, num_return_sequences=3, max_new_tokens=12)),
    ("beam4_ret4_lp2_early", dict(text=[1], audio=[2]), dict(num_beams=4, num_return_sequences=4, length_penalty=2.0,
                                                            early_stopping=True, max_new_tokens=12)),
    ("beam3_lpneg", dict(text=[0], audio=[2]), dict(num_beams=3, num_return_sequences=3, length_penalty=-1.0,
                                                    max_new_tokens=12)),
    # "never": done only when no running beam can still beat the kept ones at max_length (on the
    # early_stop model this runs to 14 codes where early_stopping=False stops after 6)
    ("beam2_never", dict(text=[0], audio=[0]), dict(num_beams=2, num_return_sequences=2, early_stopping="never",
                                                    max_new_tokens=14)),
    ("beam2_batch_rep", dict(text=[0, 1], audio=[1, 2]), dict(num_beams=2, num_return_sequences=2,
                                                              repetition_penalty=1.5, max_new_tokens=8)),
    ("beam3_default_length", dict(text=[1], audio=[0]), dict(num_beams=3)),
    ("sample_tortoise", dict(text=[0], audio=[0]), dict(do_sample=True, temperature=0.8, top_p=0.8, top_k=50,
                                                        repetition_penalty=2.0, num_return_sequences=4,
                                                        max_new_tokens=10), None, 1234),
    ("sample_typical", dict(text=[1], audio=[1]), dict(do_sample=True, typical_p=0.9, top_k=0, num_return_sequences=3,
                                                       max_new_tokens=10), None, 99),
]
DECODER_CASES = [
    ("dec_default", dict(ids="dec_ids", rows=[0]), dict()),  # the model's own config: greedy, max_length 20
    ("dec_batch", dict(ids="dec_ids", rows=[0, 1]), dict(max_new_tokens=8)),
    ("dec_beam", dict(ids="dec_ids", rows=[1]), dict(num_beams=3, num_return_sequences=2, max_new_tokens=8)),
    ("dec_rep", dict(ids="dec_ids", rows=[0, 1]), dict(repetition_penalty=1.5, min_new_tokens=3, max_new_tokens=8)),
    ("dec_min_length", dict(ids="dec_ids", rows=[0, 1]), dict(min_length=12, max_new_tokens=8)),  # prompt counts
    ("dec_long_prompt", dict(ids="dec_ids_long", rows=[0]), dict()),  # prompt >= max_length: the oracle raises
]


def _capture_fix(model):
    """Wrap the oracle's fix_speech_decoder_output to keep its input (the raw, padded sequences)."""
    seen = {}

    def fix(ids):
        seen["raw"] = ids.clone()
        return type(model).fix_speech_decoder_output(model, ids)

    model.fix_speech_decoder_output = fix
    return seen


@torch.no_grad()
def run_composite(model, ins, inputs, kwargs, pad_to=None, seed=None) -> dict[str, torch.Tensor]:
    dc = model.config.decoder_config
    gc = GenerationConfig(bos_token_id=dc.bos_token_id, eos_token_id=dc.eos_token_id, pad_token_id=dc.eos_token_id,
                          return_dict_in_generate=True, **{k: v for k, v in kwargs.items() if k != "output_hidden_states"})
    # the oracle pads with *its stored* config's eos (0 by default, docs/model.md §3.4): give it the stop code
    model.generation_config.eos_token_id = dc.eos_token_id
    seen = _capture_fix(model)
    if seed is not None:
        torch.manual_seed(seed)
    try:
        out = model.generate(input_ids=ins[inputs.get("text_key", "text_ids")][inputs["text"]],
                             input_features=ins["features"][inputs["audio"]], generation_config=gc,
                             pad_to_max_mel_tokens=pad_to, output_hidden_states=kwargs.get("output_hidden_states"))
    except RuntimeError as err:  # 4.46.3's fix_speech_decoder_output fails on rows shorter than 3 codes
        if "raw" not in seen:
            raise
        return {"raw": seen["raw"], "oracle_crash": str(err).splitlines()[0]}
    res = {"speech_ids": out.speech_ids, "raw": seen["raw"], "logits_per_text": out.logits_per_text,
           "logits_per_speech": out.logits_per_speech, "text_embeds": out.text_embeds,
           "speech_embeds": out.speech_embeds}
    if kwargs.get("output_hidden_states"):
        for step, layers in enumerate(out.decoder_hidden_states):
            for i, h in enumerate(layers):
                res[f"decoder_hidden_states.{step}.{i}"] = h
    return res


@torch.no_grad()
def run_decoder(model, ins, inputs, kwargs) -> dict[str, torch.Tensor]:
    lm = model.speech_decoder_model
    ids = ins[inputs["ids"]][inputs["rows"]]
    # the decoder's own generation config (from its config: start/stop codes, greedy, max_length 20)
    seqs = lm.generate(input_ids=ids, **kwargs)
    return {"sequences": seqs}


@torch.no_grad()
def greedy_margin(model, ins, inputs, kwargs) -> float:
    """Smallest top-1 minus top-2 processed score over the greedy steps of unfinished rows (tie check)."""
    dc = model.config.decoder_config
    gc = GenerationConfig(bos_token_id=dc.bos_token_id, eos_token_id=dc.eos_token_id, pad_token_id=dc.eos_token_id,
                          return_dict_in_generate=True, output_scores=True,
                          **{k: v for k, v in kwargs.items() if k != "output_hidden_states"})
    ids = ins[inputs.get("text_key", "text_ids")][inputs["text"]]
    from transformers.models.clvp.modeling_clvp import _pad_extra_bos_eos_tokens

    ids, mask = _pad_extra_bos_eos_tokens(ids, torch.ones_like(ids), add_bos_token=False,
                                          bos_token_id=model.config.text_config.bos_token_id,
                                          eos_token_id=model.config.text_config.eos_token_id)
    cond = model.conditioning_encoder(input_features=ins["features"][inputs["audio"]], input_ids=ids, attention_mask=mask)
    out = model.speech_decoder_model.generate(conditioning_embeds=cond, generation_config=gc)
    margin = float("inf")
    finished = torch.zeros(out.sequences.shape[0], dtype=torch.bool)
    for step, s in enumerate(out.scores):
        top = s.topk(2, dim=-1).values
        gap = (top[:, 0] - top[:, 1])[~finished]
        if gap.numel():
            margin = min(margin, float(gap.min()))
        finished |= out.sequences[:, 1 + step] == dc.eos_token_id
    return margin


def stop_steps(raw: torch.Tensor, eos: int) -> list[int]:
    """Index (1-based, among generated codes) of each row's first stop code; 0 when it never stops."""
    steps = []
    for row in raw[:, 1:]:
        hit = (row == eos).nonzero()
        steps.append(int(hit[0]) + 1 if len(hit) else 0)
    return steps


def search_eos_drift(model, ins) -> float:
    """Make the stop code likelier with every mel position, so rows stop at different steps.

    Adds ``gain * p / P`` times the stop code's lm_head row to position embedding ``p`` (the residual
    stream carries it to the head), with the gain that makes the 3 audios of the greedy 12-code case
    stop at 3 different steps, none at the first one. Returns the gain.
    """
    dec = model.speech_decoder_model.model.decoder
    eos = model.config.decoder_config.eos_token_id
    row = model.speech_decoder_model.lm_head.weight[eos].detach().clone()
    direction = row / row.norm() * row.numel() ** 0.5  # unit-rms vector, like an embedding
    table = dec.position_embeds_layer.weight.detach().clone()
    ramp = torch.arange(table.shape[0], dtype=table.dtype)[:, None] / table.shape[0]
    best, best_key = None, None
    for gain in [x * 0.5 for x in range(1, 41)]:
        with torch.no_grad():
            dec.position_embeds_layer.weight.copy_(table + gain * ramp * direction)
        res = run_composite(model, ins, dict(text=[0], audio=[0, 1, 2]), dict(max_new_tokens=12))
        steps = stop_steps(res["raw"], eos)
        # distinct stop steps, none of them at once, the oracle not crashing, few rows never stopping
        key = (len(set(steps)), all(s > 1 for s in steps), "oracle_crash" not in res, -sum(s == 0 for s in steps))
        if best_key is None or key > best_key:
            best, best_key = gain, key
    with torch.no_grad():
        dec.position_embeds_layer.weight.copy_(table + best * ramp * direction)
    return best


def write_model(name: str, spec: dict, out_dir: Path, seed: int, cases=None) -> Path:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    config = build_config(spec)
    model = ClvpModelForConditionalGeneration(config).eval()
    randomize(model, gen)
    ins = make_inputs(gen, config.decoder_config.vocab_size)
    meta = {
        "oracle": {"transformers": transformers.__version__, "torch": torch.__version__.split("+")[0]},
        "made_by": MADE_BY,
        "model": name,
        "seed": seed,
        "start_code": config.decoder_config.bos_token_id,
        "stop_code": config.decoder_config.eos_token_id,
        "cases": {},
    }
    if spec.get("eos_drift") == "search":
        meta["eos_drift_gain"] = search_eos_drift(model, ins)
    folder = out_dir / f"generation_{name}"
    if folder.exists():
        shutil.rmtree(folder)
    model.save_pretrained(folder, safe_serialization=True)

    tensors = {f"in.{k}": v.contiguous() for k, v in ins.items()}
    for case in (COMPOSITE_CASES if cases is None else cases[0]):
        cname, inputs, kwargs = case[:3]
        pad_to = case[3] if len(case) > 3 else None
        seed_ = case[4] if len(case) > 4 else None
        entry = dict(call="composite", inputs=inputs, kwargs=kwargs, pad_to_max_mel_tokens=pad_to, seed=seed_)
        try:
            res = run_composite(model, ins, inputs, kwargs, pad_to, seed_)
        except ValueError as err:  # the oracle refuses: ours must raise a ValueError too
            meta["cases"][cname] = dict(entry, error=str(err))
            continue
        entry["stop_steps"] = stop_steps(res["raw"], config.decoder_config.eos_token_id)
        if "oracle_crash" in res:
            entry["oracle_crash"] = res.pop("oracle_crash")
        if kwargs.get("num_beams", 1) == 1 and not kwargs.get("do_sample"):
            entry["min_greedy_margin"] = greedy_margin(model, ins, inputs, kwargs)
        meta["cases"][cname] = entry
        tensors.update({f"{cname}.{k}": v for k, v in res.items()})
    for cname, inputs, kwargs in (DECODER_CASES if cases is None else cases[1]):
        meta["cases"][cname] = dict(call="decoder", inputs=inputs, kwargs=kwargs)
        try:
            res = run_decoder(model, ins, inputs, kwargs)
        except ValueError as err:
            meta["cases"][cname]["error"] = str(err)
            continue
        tensors.update({f"{cname}.{k}": v for k, v in res.items()})
    tensors = {k: (v.float() if v.is_floating_point() else v).contiguous().clone() for k, v in tensors.items()}
    save_file(tensors, str(folder / "golden.safetensors"), metadata={"oracle": f"transformers {transformers.__version__}"})
    (folder / "golden.json").write_text(json.dumps(meta, indent=1) + "\n")
    return folder


# ----------------------------------------------------------------------------------------------
# Logits processors
# ----------------------------------------------------------------------------------------------

PROC_BATCH, PROC_VOCAB, PROC_IDS = 6, 300, 12
PROC_EOS = 7
# (name, oracle class, constructor kwargs); our counterparts are mapped in tests/test_generation.py
PROCESSORS = [
    ("temperature_0.5", "TemperatureLogitsWarper", dict(temperature=0.5)),
    ("temperature_0.8", "TemperatureLogitsWarper", dict(temperature=0.8)),
    ("temperature_1.7", "TemperatureLogitsWarper", dict(temperature=1.7)),
    ("top_k_1", "TopKLogitsWarper", dict(top_k=1)),
    ("top_k_5", "TopKLogitsWarper", dict(top_k=5)),
    ("top_k_50", "TopKLogitsWarper", dict(top_k=50)),
    ("top_k_1_keep2", "TopKLogitsWarper", dict(top_k=1, min_tokens_to_keep=2)),
    ("top_k_400", "TopKLogitsWarper", dict(top_k=400)),  # more than the vocabulary
    ("top_p_0.1", "TopPLogitsWarper", dict(top_p=0.1)),
    ("top_p_0.8", "TopPLogitsWarper", dict(top_p=0.8)),
    ("top_p_0.95", "TopPLogitsWarper", dict(top_p=0.95)),
    ("top_p_0.01_keep2", "TopPLogitsWarper", dict(top_p=0.01, min_tokens_to_keep=2)),
    ("typical_0.2", "TypicalLogitsWarper", dict(mass=0.2)),
    ("typical_0.9", "TypicalLogitsWarper", dict(mass=0.9)),
    ("typical_0.99", "TypicalLogitsWarper", dict(mass=0.99)),
    ("typical_0.05_keep2", "TypicalLogitsWarper", dict(mass=0.05, min_tokens_to_keep=2)),
    ("repetition_2.0", "RepetitionPenaltyLogitsProcessor", dict(penalty=2.0)),
    ("repetition_1.3", "RepetitionPenaltyLogitsProcessor", dict(penalty=1.3)),
    ("repetition_0.7", "RepetitionPenaltyLogitsProcessor", dict(penalty=0.7)),
    ("min_length_15", "MinLengthLogitsProcessor", dict(min_length=15, eos_token_id=PROC_EOS)),  # 12 ids < 15: masked
    ("min_length_12", "MinLengthLogitsProcessor", dict(min_length=12, eos_token_id=PROC_EOS)),  # 12 ids: not masked
    ("min_new_5_skip3", "MinNewTokensLengthLogitsProcessor",
     dict(prompt_length_to_skip=3, min_new_tokens=5, eos_token_id=PROC_EOS)),  # 9 new >= 5: not masked
    ("min_new_10_skip3", "MinNewTokensLengthLogitsProcessor",
     dict(prompt_length_to_skip=3, min_new_tokens=10, eos_token_id=PROC_EOS)),  # 9 new < 10: masked
]
# full lists as _get_logits_processor builds them: (name, GenerationConfig kwargs, prompt length)
PROCESSOR_LISTS = [
    ("tortoise", dict(do_sample=True, temperature=0.8, top_p=0.8, top_k=50, repetition_penalty=2.0), 1),
    ("tortoise_beam", dict(do_sample=True, num_beams=2, temperature=0.8, top_p=0.8, top_k=50, repetition_penalty=2.0), 1),
    ("typical_min_new", dict(do_sample=True, typical_p=0.9, temperature=1.3, top_k=0, min_new_tokens=20), 1),
    ("greedy_rep_min", dict(do_sample=False, repetition_penalty=1.5, min_new_tokens=5, min_length=14), 9),
]


def make_logits(gen: torch.Generator) -> torch.Tensor:
    logits = 3.0 * torch.randn(PROC_BATCH, PROC_VOCAB, generator=gen)
    logits[1] = (logits[1] * 2).round() / 2  # many ties
    logits[2] = 0.05 * torch.randn(PROC_VOCAB, generator=gen)  # nearly uniform
    logits[3, 10] = 40.0  # one dominant token
    logits[4, :5] = -float("inf")  # already masked entries
    return logits


@torch.no_grad()
def write_processors(out_dir: Path, seed: int = 4242) -> Path:
    gen = torch.Generator().manual_seed(seed)
    logits = make_logits(gen)
    ids = torch.randint(0, PROC_VOCAB, (PROC_BATCH, PROC_IDS), generator=gen)
    ids[:, 0] = ids[:, 5]  # repeated ids: the penalty must apply once per id
    tensors = {"in.logits": logits, "in.input_ids": ids}
    meta = {"oracle": {"transformers": transformers.__version__, "torch": torch.__version__.split("+")[0]},
            "made_by": MADE_BY, "eos_token_id": PROC_EOS, "processors": {}, "lists": {}}
    for name, cls, kw in PROCESSORS:
        proc = getattr(lp, cls)(**kw)
        tensors[f"out.{name}"] = proc(ids, logits.clone())
        meta["processors"][name] = dict(oracle_class=cls, kwargs=kw)
    decoder_cfg = ClvpDecoderConfig(vocab_size=PROC_VOCAB, hidden_size=32, num_attention_heads=2, num_hidden_layers=1,
                                    bos_token_id=PROC_VOCAB - 2, eos_token_id=PROC_EOS)
    lm = transformers.ClvpForCausalLM(decoder_cfg).eval()
    for name, kw, prompt_len in PROCESSOR_LISTS:
        gc = GenerationConfig(bos_token_id=PROC_VOCAB - 2, eos_token_id=PROC_EOS, pad_token_id=PROC_EOS, **kw)
        gc, _ = lm._prepare_generation_config(gc)
        lm._prepare_special_tokens(gc, kwargs_has_attention_mask=False, device="cpu")
        gc = lm._prepare_generated_length(gc, has_default_max_length=True, has_default_min_length="min_length" not in kw,
                                          model_input_name="input_ids", input_ids_length=prompt_len,
                                          inputs_tensor=ids[:, :prompt_len])
        procs = lm._get_logits_processor(generation_config=gc, input_ids_seq_length=prompt_len,
                                         encoder_input_ids=ids[:, :prompt_len], prefix_allowed_tokens_fn=None,
                                         logits_processor=lp.LogitsProcessorList(), device="cpu")
        scores = logits.clone()
        if kw.get("num_beams", 1) > 1:  # beam search processes log-probabilities
            scores = torch.log_softmax(scores, dim=-1)
            meta_input = "log_softmax"
        else:
            meta_input = "logits"
        tensors[f"list.{name}"] = procs(ids, scores)
        meta["lists"][name] = dict(kwargs=kw, prompt_len=prompt_len, input=meta_input,
                                   oracle_classes=[type(p).__name__ for p in procs])
    path = out_dir / "generation_processors.safetensors"
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path),
              metadata={"oracle": f"transformers {transformers.__version__}"})
    (out_dir / "generation_processors.json").write_text(json.dumps(meta, indent=1) + "\n")
    return path


def random_spec(seed: int) -> dict:
    """A fresh random small model for the live oracle test."""
    rng = random.Random(seed)
    heads = rng.choice([1, 2])
    vocab = rng.choice([258, 300])
    return dict(
        enc=dict(hidden_size=32 * heads, num_attention_heads=heads, projection_dim=rng.choice([16, 32]),
                 intermediate_size=rng.choice([24, 40])),
        enc_layers=1, enc_bias=rng.random() < 0.5,
        dec=dict(vocab_size=vocab, hidden_size=rng.choice([32, 48, 64]), num_attention_heads=rng.choice([2, 4]),
                 num_hidden_layers=rng.choice([1, 2]), n_inner=rng.choice([None, 64]), num_mel_attn_blocks=1,
                 max_position_embeddings=rng.choice([48, 64]), max_text_tokens=32,
                 use_attention_bias=rng.random() < 0.5),
        eos_drift="search" if rng.random() < 0.5 else None,
    )


RANDOM_CASES = (
    [c for c in COMPOSITE_CASES if c[0] in ("greedy_new12", "greedy_one_text_n_audios", "greedy_rep_min_new",
                                            "greedy_min_length", "greedy_default_length", "beam4_ret3",
                                            "beam3_ret2_lp05", "beam2_never", "sample_tortoise")],
    [c for c in DECODER_CASES if c[0] in ("dec_default", "dec_beam", "dec_min_length")],
)


def main():
    torch.set_num_threads(1)  # tiny models: threads only add contention on a shared machine
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=FIXTURES)
    parser.add_argument("--random-seed", type=int, default=None,
                        help="write one fresh random model generation_random (for the live oracle test) and nothing else")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.random_seed is not None:
        print(write_model("random", random_spec(args.random_seed), args.out, args.random_seed, RANDOM_CASES))
        return
    for i, (name, spec) in enumerate(MODELS.items()):
        print(write_model(name, spec, args.out, seed=2000 + i))
    print(write_processors(args.out))


if __name__ == "__main__":
    main()
