"""What transformers 4.46.3 does for the drop-in checks of tests/test_compat_models.py (run live).

    PYTHONPATH=.oracle python tests/golden/compat_oracle.py OUT_DIR

Loads tests/fixtures/generation_base (a small random CLVP model the oracle wrote) and writes to
OUT_DIR:

* ``oracle.safetensors``: tensors, named ``<case>.<field>[.<step>]``: ``ClvpForCausalLM.generate``
  with ``return_dict_in_generate=True, output_scores=True, output_logits=True`` (greedy, beam
  search, and with no input at all), and forwards whose switches come from the config;
* ``oracle.json``: the rest (types, field names, tuple lengths, parameter counts, config dicts).

This script imports only transformers and torch.
"""
from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import torch
from safetensors.torch import save_file

import transformers
from transformers import ClvpDecoderConfig, ClvpEncoderConfig, ClvpModelForConditionalGeneration

MODEL = Path(__file__).resolve().parent.parent / "fixtures" / "generation_base"
PROMPT = [[5, 9, 11, 40]]  # codes of the base model's vocabulary (302), not its start/stop codes (300/301)
# keywords a transformers user passes to any config: common attributes and unknown ones
CONFIG_KWARGS = dict(initializer_range=0.05, relative_attention_num_buckets=32, output_hidden_states=True,
                     return_dict=False, output_attentions=True, torchscript=False, torch_dtype="float16",
                     pruned_heads={1: [0]}, tie_word_embeddings=False, chunk_size_feed_forward=3, is_decoder=True,
                     add_cross_attention=False, architectures=["X"], num_labels=3, problem_type="regression",
                     pad_token_id=2, task_specific_params={"a": 1}, max_length=7, do_sample=True, top_k=5)


def main(out: Path) -> None:
    warnings.filterwarnings("ignore")
    out.mkdir(parents=True, exist_ok=True)
    tensors, meta = {}, {"transformers": transformers.__version__}
    model = ClvpModelForConditionalGeneration.from_pretrained(MODEL).eval()
    lm = model.speech_decoder_model
    ids = torch.tensor(PROMPT)

    # generate with every optional output
    cases = {
        "greedy": dict(input_ids=ids, max_new_tokens=5),
        "beam": dict(input_ids=ids, max_new_tokens=5, num_beams=3, num_return_sequences=2),
        "beam_lp": dict(input_ids=ids, max_new_tokens=6, num_beams=4, num_return_sequences=4, length_penalty=0.5),
        "no_input": dict(max_new_tokens=4),
    }
    meta["generate"] = {}
    for name, kwargs in cases.items():
        res = lm.generate(**kwargs, return_dict_in_generate=True, output_scores=True, output_logits=True)
        meta["generate"][name] = {"type": type(res).__name__, "keys": list(res.keys())}
        tensors[f"{name}.sequences"] = res.sequences
        for field in ("sequences_scores", "beam_indices"):
            if getattr(res, field, None) is not None:
                tensors[f"{name}.{field}"] = getattr(res, field)
        for field in ("scores", "logits"):
            for step, t in enumerate(getattr(res, field)):
                tensors[f"{name}.{field}.{step}"] = t
        if name == "greedy":
            for layer, (k, v) in enumerate(res.past_key_values):
                tensors[f"{name}.past.{layer}.k"], tensors[f"{name}.past.{layer}.v"] = k, v
    res = lm.generate(input_ids=ids, max_new_tokens=4, output_attentions=True, return_dict_in_generate=True)
    for step, layers in enumerate(res.attentions):
        for layer, a in enumerate(layers):
            tensors[f"greedy_attn.{step}.{layer}"] = a
    plain = lm.generate(input_ids=ids, max_new_tokens=5, attention_mask=torch.ones_like(ids), use_cache=False)
    tensors["greedy_mask_no_cache.sequences"] = plain

    # forwards whose switches come from the config
    meta["forward"] = {}
    lm.config.return_dict = False
    lm.config.output_hidden_states = True
    with torch.no_grad():
        res = lm(input_ids=ids)
    meta["forward"]["lm_tuple_len"] = len(res)
    tensors["lm_tuple.logits"] = res[0]
    meta["forward"]["lm_hidden_len"] = len(res[2])
    lm.config.return_dict = True
    lm.config.output_hidden_states = False
    enc = model.text_encoder_model
    enc.config.return_dict = False
    enc.config.output_attentions = True
    with torch.no_grad():
        res = enc(input_ids=torch.tensor([[7, 8, 9]]))
    meta["forward"]["enc_tuple_len"] = len(res)
    meta["forward"]["enc_attn_len"] = len(res[-1])
    tensors["enc_tuple.embeds"] = res[0]
    enc.config.return_dict = True
    enc.config.output_attentions = False

    # PreTrainedModel surface
    meta["model"] = {
        "num_parameters": {k: m.num_parameters() for k, m in (("lm", lm), ("composite", model))},
        "num_parameters_no_embeddings": {k: m.num_parameters(exclude_embeddings=True)
                                         for k, m in (("lm", lm), ("composite", model))},
        "can_generate": {"lm": lm.can_generate(), "composite": model.can_generate(),
                         "encoder": model.text_encoder_model.can_generate()},
        "main_input_name": lm.main_input_name, "base_model_prefix": lm.base_model_prefix,
        "supports_gradient_checkpointing": lm.supports_gradient_checkpointing,
        "lm_generation_config": {k: getattr(lm.generation_config, k) for k in ("bos_token_id", "eos_token_id")},
        "output_embeddings_is_none": lm.get_output_embeddings() is None,
    }
    _, info = ClvpModelForConditionalGeneration.from_pretrained(
        pretrained_model_name_or_path=MODEL, output_loading_info=True)
    meta["model"]["loading_info"] = {k: list(v) for k, v in info.items()}

    # configs made with the keywords above
    meta["config"] = {}
    for cls in (ClvpEncoderConfig, ClvpDecoderConfig):
        c = cls(**CONFIG_KWARGS)
        meta["config"][cls.__name__] = {"dict": json.loads(c.to_json_string(use_diff=False)),
                                        "use_return_dict": c.use_return_dict, "num_labels": c.num_labels}
    save_file({k: v.clone().contiguous() for k, v in tensors.items()}, str(out / "oracle.safetensors"))
    (out / "oracle.json").write_text(json.dumps(meta, indent=1, sort_keys=True, default=str))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
