"""Golden fixtures for the CLVP model, made by the oracle (transformers 4.46.3).

Run from the repository root with the oracle on the path (never in the library's own environment):

    PYTHONPATH=.oracle python tests/golden/make_model.py            # rewrites tests/fixtures/model_*
    PYTHONPATH=.oracle python tests/golden/make_model.py --out DIR --random-seed 7 12345  # random cases only

For each small random config it writes ``<out>/model_<name>/``:

* ``config.json`` + ``model.safetensors``: the oracle model, written by its own ``save_pretrained``
  (so loading them tests Hugging Face's checkpoint layout);
* ``golden.safetensors``: fixed inputs (``in.*``) and the oracle's outputs (``out.*``), float32;
* ``golden.json``: versions, config summary, and the ``return_dict=False`` tuple layouts.

and, once, ``model_default_state_dict.json`` (key -> shape of the default-size model, speech vocab
8192, built on the meta device) plus ``model_default_configs.json`` (the oracle's default config dicts).
This script imports only transformers and torch, never ``clvp``.
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
from pathlib import Path

import torch

import transformers
from transformers import (
    ClvpConfig,
    ClvpDecoderConfig,
    ClvpEncoderConfig,
    ClvpForCausalLM,
    ClvpModelForConditionalGeneration,
)
from transformers.models.clvp.modeling_clvp import ClvpEncoder
from safetensors.torch import save_file

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
BATCH = 2
TEXT_LEN, SPEECH_LEN, MEL_FRAMES, DEC_LEN, DEC_STEP = 9, 11, 23, 5, 2

# The fixed configs. Encoder rotary width is max(projection_dim // (2 * heads), 32) (docs/model.md §2.1).
CASES = {
    # rotary 32 < head_dim 64 (partial); no q/k/v bias in the encoders; decoder with biases
    "partial": dict(
        enc=dict(hidden_size=64, num_attention_heads=1, projection_dim=16, intermediate_size=64),
        text_layers=2, speech_layers=1, enc_bias=False,
        dec=dict(hidden_size=32, num_attention_heads=2, num_hidden_layers=2, num_mel_attn_blocks=2),
        dec_bias=True, save_submodels=False,
    ),
    # rotary 32 == head_dim 32 (the floor of 32); biases on in the encoders, off in the decoder
    "full_bias": dict(
        enc=dict(hidden_size=64, num_attention_heads=2, projection_dim=32, intermediate_size=48),
        text_layers=1, speech_layers=1, enc_bias=True,
        dec=dict(hidden_size=32, num_attention_heads=2, num_hidden_layers=1, num_mel_attn_blocks=1),
        dec_bias=False, save_submodels=True,
    ),
    # rotary 64 == head_dim 64 *derived from projection_dim* (128 // 2); biases everywhere
    "wide_proj": dict(
        enc=dict(hidden_size=64, num_attention_heads=1, projection_dim=128, intermediate_size=32),
        text_layers=1, speech_layers=2, enc_bias=True,
        dec=dict(hidden_size=32, num_attention_heads=4, num_hidden_layers=1, num_mel_attn_blocks=2),
        dec_bias=True, save_submodels=False,
    ),
}
TEXT_VOCAB, SPEECH_VOCAB = 256, 300


def build_config(case: dict) -> ClvpConfig:
    enc = case["enc"]
    text = ClvpEncoderConfig(vocab_size=TEXT_VOCAB, num_hidden_layers=case["text_layers"],
                             use_attention_bias=case["enc_bias"], **enc)
    speech = ClvpEncoderConfig(vocab_size=SPEECH_VOCAB, num_hidden_layers=case["speech_layers"],
                               use_attention_bias=case["enc_bias"], **enc)
    # decoder vocab = speech vocab, start/stop inside it: forward() feeds the decoder's argmax codes
    # to the speech encoder, so they must be valid speech ids
    decoder = ClvpDecoderConfig(vocab_size=SPEECH_VOCAB, bos_token_id=SPEECH_VOCAB - 2, eos_token_id=SPEECH_VOCAB - 1,
                                max_position_embeddings=64, max_text_tokens=64,
                                use_attention_bias=case["dec_bias"], **case["dec"])
    return ClvpConfig.from_sub_model_configs(text, speech, decoder, projection_dim=enc["projection_dim"])


def randomize(model: torch.nn.Module, gen: torch.Generator) -> None:
    """Move norms off 1/0 and biases off 0, so a swapped or missing one shows in the outputs."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name == "logit_scale":
                continue
            if p.dim() == 1 and ("norm" in name):
                if name.endswith("weight"):
                    p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
                else:
                    p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            elif name.endswith("bias"):
                p.copy_(0.05 * torch.randn(p.shape, generator=gen))


def signature(x):
    """Layout of a return_dict=False tuple: shapes for tensors, ["tuple", len, first] for nested tuples."""
    if isinstance(x, torch.Tensor):
        return list(x.shape)
    if isinstance(x, (tuple, list)):
        return ["tuple", len(x), signature(x[0]) if len(x) else None]
    return type(x).__name__


def make_inputs(gen: torch.Generator) -> dict[str, torch.Tensor]:
    ins = {}
    text = torch.randint(1, 255, (BATCH, TEXT_LEN), generator=gen)  # no 0: that is the pad / eos id
    text_mask = torch.ones(BATCH, TEXT_LEN, dtype=torch.long)
    text_mask[1, 6:] = 0
    text[1, 6:] = 0  # right padding with 0, as the tokenizer pads
    ins["text_ids"], ins["text_mask"] = text, text_mask
    speech = torch.randint(0, SPEECH_VOCAB, (BATCH, SPEECH_LEN), generator=gen)
    speech_mask = torch.ones(BATCH, SPEECH_LEN, dtype=torch.long)
    speech_mask[1, 7:] = 0
    ins["speech_ids"], ins["speech_mask"] = speech, speech_mask
    ins["features"] = torch.randn(BATCH, 80, MEL_FRAMES, generator=gen)
    ins["position_ids"] = torch.arange(TEXT_LEN - 1, -1, -1)[None]  # reversed positions (1, T)
    ins["dec_ids"] = torch.randint(0, SPEECH_VOCAB, (BATCH, DEC_LEN), generator=gen)
    dec_mask = torch.ones(BATCH, DEC_LEN, dtype=torch.long)
    dec_mask[1, :2] = 0  # left padding in the second row
    ins["dec_mask"] = dec_mask
    ins["dec_ids_step"] = torch.randint(0, SPEECH_VOCAB, (BATCH, DEC_STEP), generator=gen)
    ins["dec_mask_step"] = torch.cat([dec_mask, torch.ones(BATCH, DEC_STEP, dtype=torch.long)], dim=1)
    ins["dec_token_types"] = torch.randint(0, SPEECH_VOCAB, (BATCH, DEC_LEN), generator=gen)
    return ins


@torch.no_grad()
def oracle_outputs(model: ClvpModelForConditionalGeneration, ins: dict) -> tuple[dict, dict]:
    """Every output the tests compare (out.*) and the tuple layouts (json)."""
    out, layouts = {}, {}
    cfg = model.config
    text_ids, text_mask = ins["text_ids"], ins["text_mask"]
    speech_ids, speech_mask = ins["speech_ids"], ins["speech_mask"]
    feats = ins["features"]

    # text / speech embeddings
    out["text_embeds"] = model.get_text_features(input_ids=text_ids, attention_mask=text_mask)
    out["text_embeds_nomask"] = model.get_text_features(input_ids=text_ids[:1])
    out["speech_embeds"] = model.get_speech_features(speech_ids=speech_ids, attention_mask=speech_mask)
    out["speech_embeds_nomask"] = model.get_speech_features(speech_ids=speech_ids)

    # encoders with every optional output
    for which, enc, ids, mask in (("text", model.text_encoder_model, text_ids, text_mask),
                                  ("speech", model.speech_encoder_model, speech_ids, speech_mask)):
        o = enc(input_ids=ids, attention_mask=mask, output_attentions=True, output_hidden_states=True)
        out[f"{which}_enc.embeds"] = o.embeds
        out[f"{which}_enc.last_hidden_state"] = o.last_hidden_state
        out[f"{which}_enc.pooler_output"] = o.pooler_output
        for i, h in enumerate(o.hidden_states):
            out[f"{which}_enc.hidden_states.{i}"] = h
        for i, a in enumerate(o.attentions):
            out[f"{which}_enc.attentions.{i}"] = a
        layouts[f"{which}_enc.full"] = [signature(v) for v in enc(
            input_ids=ids, attention_mask=mask, output_attentions=True, output_hidden_states=True, return_dict=False)]
        layouts[f"{which}_enc.plain"] = [signature(v) for v in enc(input_ids=ids, return_dict=False)]
    emb = model.text_encoder_model.token_embedding(text_ids)
    out["text_enc.from_embeds"] = model.text_encoder_model(inputs_embeds=emb, attention_mask=text_mask).embeds
    out["text_enc.position_ids"] = model.text_encoder_model(input_ids=text_ids, position_ids=ins["position_ids"]).embeds

    # conditioning encoder: padded batch, 1 text x N audios, N texts x 1 audio
    out["cond"] = model.conditioning_encoder(input_features=feats, input_ids=text_ids, attention_mask=text_mask)
    out["cond_nomask"] = model.conditioning_encoder(input_features=feats, input_ids=text_ids)
    out["cond_1text"] = model.conditioning_encoder(input_features=feats, input_ids=text_ids[:1])
    out["cond_1audio"] = model.conditioning_encoder(input_features=feats[:1], input_ids=text_ids, attention_mask=text_mask)

    # decoder: from the prompt embeddings, from ids + mask, then one cached step
    lm = model.speech_decoder_model
    o = lm(inputs_embeds=out["cond"], output_hidden_states=True, output_attentions=True)
    out["dec.embeds_logits"] = o.logits
    for i, h in enumerate(o.hidden_states):
        out[f"dec.embeds_hidden_states.{i}"] = h
    for i, a in enumerate(o.attentions):
        out[f"dec.embeds_attentions.{i}"] = a
    o = lm(input_ids=ins["dec_ids"], attention_mask=ins["dec_mask"], use_cache=True, labels=ins["dec_ids"])
    out["dec.ids_logits"] = o.logits
    out["dec.ids_loss"] = o.loss
    for i, (k, v) in enumerate(o.past_key_values):
        out[f"dec.past.{i}.key"], out[f"dec.past.{i}.value"] = k, v
    o2 = lm(input_ids=ins["dec_ids_step"], attention_mask=ins["dec_mask_step"], past_key_values=o.past_key_values,
            use_cache=True)
    out["dec.step_logits"] = o2.logits
    # the step without a mask, and the full sequence at once (must equal prefill + step)
    o3 = lm(input_ids=ins["dec_ids_step"], past_key_values=o.past_key_values)
    out["dec.step_logits_nomask"] = o3.logits
    heads = cfg.decoder_config.num_attention_heads
    head_mask = torch.ones(cfg.decoder_config.num_hidden_layers, heads)
    head_mask[0, 0] = 0.0
    out["in.head_mask"] = head_mask
    out["dec.head_mask_logits"] = lm(input_ids=ins["dec_ids"], head_mask=head_mask).logits
    out["dec.token_type_logits"] = lm(input_ids=ins["dec_ids"], token_type_ids=ins["dec_token_types"]).logits
    out["dec.bare_last_hidden_state"] = lm.model(input_ids=ins["dec_ids"], attention_mask=ins["dec_mask"]).last_hidden_state
    layouts["causal_lm.labels_cache_hidden_attn"] = [signature(v) for v in lm(
        input_ids=ins["dec_ids"], labels=ins["dec_ids"], use_cache=True, output_hidden_states=True,
        output_attentions=True, return_dict=False)]
    layouts["causal_lm.nocache"] = [signature(v) for v in lm(input_ids=ins["dec_ids"], use_cache=False, return_dict=False)]
    layouts["bare_decoder.cache_hidden"] = [signature(v) for v in lm.model(
        input_ids=ins["dec_ids"], use_cache=True, output_hidden_states=True, return_dict=False)]
    layouts["bare_decoder.attn_nocache"] = [signature(v) for v in lm.model.decoder(
        input_ids=ins["dec_ids"], use_cache=False, output_attentions=True, return_dict=False)]

    # composite forward: similarities and loss
    o = model(input_ids=text_ids, input_features=feats, attention_mask=text_mask, return_loss=True)
    for name in ("loss", "logits_per_text", "logits_per_speech", "text_embeds", "speech_embeds",
                 "text_model_output", "speech_model_output"):
        out[f"fwd.{name}"] = getattr(o, name)
    o = model(input_ids=text_ids, input_features=feats, output_hidden_states=True)
    out["fwd_hidden.logits_per_text"] = o.logits_per_text
    for group in ("decoder_hidden_states", "text_encoder_hidden_states", "speech_encoder_hidden_states"):
        for i, h in enumerate(getattr(o, group)):
            out[f"fwd_hidden.{group}.{i}"] = h
    for loss in (False, True):
        for hidden in (False, True):
            t = model(input_ids=text_ids, input_features=feats, attention_mask=text_mask, return_loss=loss,
                      output_hidden_states=hidden, return_dict=False)
            layouts[f"forward.loss={int(loss)}.hidden={int(hidden)}"] = [signature(v) for v in t]
    out = {("" if k.startswith("in.") else "out.") + k: v.detach().float().contiguous() for k, v in out.items()}
    return out, layouts


def write_case(name: str, case: dict, out_dir: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    config = build_config(case)
    model = ClvpModelForConditionalGeneration(config).eval()
    randomize(model, gen)
    folder = out_dir / f"model_{name}"
    if folder.exists():
        shutil.rmtree(folder)
    model.save_pretrained(folder, safe_serialization=True)
    ins = make_inputs(gen)
    outs, layouts = oracle_outputs(model, ins)
    tensors = {f"in.{k}": v.contiguous() for k, v in ins.items()}
    tensors.update(outs)
    save_file(tensors, str(folder / "golden.safetensors"), metadata={"oracle": f"transformers {transformers.__version__}"})
    meta = {
        "oracle": {"transformers": transformers.__version__, "torch": torch.__version__.split("+")[0]},
        "made_by": "PYTHONPATH=.oracle python tests/golden/make_model.py",
        "case": name,
        "seed": seed,
        "text_layers": config.text_config.num_hidden_layers,
        "speech_layers": config.speech_config.num_hidden_layers,
        "decoder_layers": config.decoder_config.num_hidden_layers,
        "rotary_dim": max(config.text_config.projection_dim // (config.text_config.num_attention_heads * 2), 32),
        "head_dim": config.text_config.hidden_size // config.text_config.num_attention_heads,
        "layouts": layouts,
    }
    (folder / "golden.json").write_text(json.dumps(meta, indent=1) + "\n")
    if case.get("save_submodels"):
        # the sub-models on their own: ClvpEncoder (clvp_encoder config.json) and ClvpForCausalLM
        model.text_encoder_model.save_pretrained(out_dir / f"model_{name}_text_encoder")
        model.speech_decoder_model.save_pretrained(out_dir / f"model_{name}_causal_lm")
    return folder


def random_case(seed: int) -> dict:
    """A fresh random small config for the live oracle test."""
    rng = random.Random(seed)
    heads = rng.choice([1, 2])
    head_dim = rng.choice([32, 64])
    return dict(
        enc=dict(hidden_size=heads * head_dim, num_attention_heads=heads,
                 projection_dim=rng.choice([8, 16, 32, 2 * heads * head_dim]), intermediate_size=rng.choice([24, 40])),
        text_layers=rng.choice([1, 2]), speech_layers=rng.choice([1, 2]), enc_bias=rng.random() < 0.5,
        dec=dict(hidden_size=rng.choice([32, 64]), num_attention_heads=rng.choice([2, 4]),
                 num_hidden_layers=rng.choice([1, 2]), num_mel_attn_blocks=rng.choice([1, 2])),
        dec_bias=rng.random() < 0.5, save_submodels=False,
    )


def write_default_facts(out_dir: Path) -> None:
    speech = ClvpEncoderConfig(vocab_size=8192)
    config = ClvpConfig(speech_config=speech.to_dict())
    with torch.device("meta"):
        model = ClvpModelForConditionalGeneration(config)
    state = model.state_dict()
    keys = [[k, list(v.shape), str(v.dtype).replace("torch.", "")] for k, v in state.items()]
    facts = {
        "oracle": {"transformers": transformers.__version__, "torch": torch.__version__.split("+")[0]},
        "made_by": "PYTHONPATH=.oracle python tests/golden/make_model.py",
        "config": "ClvpConfig(speech_config=ClvpEncoderConfig(vocab_size=8192)), everything else default",
        "n_tensors": len(keys),
        "n_elements": sum(v.numel() for v in state.values()),
        "keys": keys,
    }
    (out_dir / "model_default_state_dict.json").write_text(json.dumps(facts, indent=0) + "\n")
    configs = {
        "oracle": facts["oracle"],
        "ClvpEncoderConfig": ClvpEncoderConfig().to_dict(),
        "ClvpDecoderConfig": ClvpDecoderConfig().to_dict(),
        "ClvpConfig": ClvpConfig().to_dict(),
    }
    (out_dir / "model_default_configs.json").write_text(json.dumps(configs, indent=1, sort_keys=True) + "\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=FIXTURES)
    parser.add_argument("--random-seed", type=int, nargs="+", default=None,
                        help="write only fresh random cases model_random_<seed> (for the live oracle test)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.random_seed is not None:
        for seed in args.random_seed:
            print(write_case(f"random_{seed}", random_case(seed), args.out, seed))
        return
    for i, (name, case) in enumerate(CASES.items()):
        print(write_case(name, case, args.out, seed=1000 + i))
    write_default_facts(args.out)


if __name__ == "__main__":
    main()
