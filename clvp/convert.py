"""Convert the original Tortoise checkpoints (autoregressive.pth + clvp2.pth) to Hugging Face's layout.

Key mapping: docs/model.md §1.4 (transformers' ``convert_clvp_to_hf.py``). Both files are read with
``torch.load(..., weights_only=True)``: a checkpoint never runs code. Sizes are read off the tensors;
attention heads are not stored in a checkpoint, so they follow Tortoise's 64 channels per head
unless a config is given.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch

from .atomic import check_target
from .configuration import ClvpConfig, ClvpDecoderConfig, ClvpEncoderConfig
from .loading import check_state_dict
from .modeling import ClvpModelForConditionalGeneration

HEAD_DIM = 64  # Tortoise: 1024 / 16 heads in the autoregressive model, 768 / 12 in CLVP


def load_tortoise_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"cannot read {path} as a weights-only PyTorch checkpoint: {type(err).__name__}: {err}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} does not hold a flat dict of tensors")
    return dict(state)


def _require(state: dict, key: str, source: str) -> torch.Tensor:
    if key not in state:
        raise ValueError(f"{source} has no tensor {key!r}; is it the right Tortoise checkpoint?")
    return state[key]


def _encoder_prefix(kind: str) -> str:
    return f"{kind}_transformer.transformer"


def convert_clvp(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """clvp2.pth -> the text/speech encoder and ``logit_scale`` keys."""
    out = {}
    rename_block = {"0.0.g": None, "1.wrap.to_q": "self_attn.q_proj", "1.wrap.to_k": "self_attn.k_proj",
                    "1.wrap.to_v": "self_attn.v_proj", "1.wrap.to_out": "self_attn.out_proj",
                    "1.wrap.net.0.proj": "mlp.fc1.proj", "1.wrap.net.3": "mlp.fc2"}
    layer_re = re.compile(r"^(text|speech)_transformer\.transformer\.attn_layers\.layers\.(\d+)\.(.+)\.(weight|bias|g)$")
    for key, value in state.items():
        m = layer_re.match(key)
        if m:
            kind, j, inner, attr = m.group(1), int(m.group(2)), m.group(3), m.group(4)
            layer = f"{kind}_encoder_model.layers.{j // 2}"
            if inner == "0.0" and attr == "g":
                norm = "input_rmsnorm" if j % 2 == 0 else "post_attention_rmsnorm"
                out[f"{layer}.{norm}.weight"] = value
                continue
            target = rename_block.get(inner)
            if target is None:
                raise ValueError(f"unexpected CLVP tensor {key!r}")
            out[f"{layer}.{target}.{attr}"] = value
            continue
        for kind in ("text", "speech"):
            prefix = _encoder_prefix(kind)
            if key == f"{prefix}.attn_layers.rotary_pos_emb.inv_freq":
                out[f"{kind}_encoder_model.rotary_pos_emb.inv_freq"] = value
                break
            if key.startswith(f"{prefix}.norm."):
                out[f"{kind}_encoder_model.final_layer_norm.{key.rsplit('.', 1)[1]}"] = value
                break
            if key == f"to_{kind}_latent.weight":
                out[f"{kind}_encoder_model.projection.weight"] = value
                break
            if key == f"{kind}_emb.weight":
                out[f"{kind}_encoder_model.token_embedding.weight"] = value
                break
        else:
            if key == "temperature":
                out["logit_scale"] = value.reshape(())
            else:
                raise ValueError(f"unexpected CLVP tensor {key!r}")
    return out


def _split_conditioning_qkv(w: torch.Tensor, heads: int):
    """Tortoise's legacy QKV layout is per head ``[q_h, k_h, v_h]`` (each head_dim rows)."""
    hd = w.shape[0] // (3 * heads)
    per_head = w.reshape(heads, 3, hd, *w.shape[1:])
    return tuple(per_head[:, i].reshape(heads * hd, *w.shape[1:]) for i in range(3))


def convert_autoregressive(state: dict[str, torch.Tensor], heads: int) -> dict[str, torch.Tensor]:
    """autoregressive.pth -> the conditioning encoder and decoder keys."""
    out = {}
    dec = "speech_decoder_model.model.decoder"
    renames = {
        "conditioning_encoder.init": "conditioning_encoder.mel_conv",
        "text_embedding": "conditioning_encoder.text_token_embedding",
        "text_pos_embedding.emb": "conditioning_encoder.text_position_embedding",
        "final_norm": "speech_decoder_model.final_norm",
        "mel_head": "speech_decoder_model.lm_head",
        "gpt.ln_f": f"{dec}.layer_norm",
        "mel_embedding": f"{dec}.input_embeds_layer",
        "mel_pos_embedding.emb": f"{dec}.position_embeds_layer",
    }
    gpt_re = re.compile(r"^gpt\.h\.(\d+)\.(.+)\.(weight|bias)$")
    attn_re = re.compile(r"^conditioning_encoder\.attn\.(\d+)\.(norm|qkv|proj_out)\.(weight|bias)$")
    for key, value in state.items():
        if key.startswith("text_head.") or re.match(r"^gpt\.h\.\d+\.attn\.(bias|masked_bias)$", key):
            continue  # unused by CLVP: the text head and GPT-2's causal-mask buffers
        m = gpt_re.match(key)
        if m:
            i, inner, attr = m.groups()
            layer = f"{dec}.layers.{i}"
            if inner == "attn.c_attn":
                w = value.T if attr == "weight" else value  # Conv1D (in, 3C) -> (3C, in)
                for name, part in zip(("q_proj", "k_proj", "v_proj"), w.chunk(3, dim=0)):
                    out[f"{layer}.attn.{name}.{attr}"] = part.contiguous()
            elif inner == "attn.c_proj":
                out[f"{layer}.attn.out_proj.{attr}"] = (value.T if attr == "weight" else value).contiguous()
            elif inner in ("ln_1", "ln_2"):
                name = "input_layernorm" if inner == "ln_1" else "post_attention_layernorm"
                out[f"{layer}.{name}.{attr}"] = value
            elif inner in ("mlp.c_fc", "mlp.c_proj"):
                out[f"{layer}.{inner}.{attr}"] = value  # Conv1D weights keep their (in, out) layout
            else:
                raise ValueError(f"unexpected autoregressive tensor {key!r}")
            continue
        m = attn_re.match(key)
        if m:
            i, part, attr = m.groups()
            if part == "norm":
                out[f"conditioning_encoder.group_norms.{i}.{attr}"] = value
            elif part == "qkv":
                v = value.squeeze(-1) if attr == "weight" else value
                for name, piece in zip(("q_proj", "k_proj", "v_proj"), _split_conditioning_qkv(v, heads)):
                    out[f"conditioning_encoder.mel_attn_blocks.{i}.{name}.{attr}"] = piece.contiguous()
            else:
                out[f"conditioning_encoder.mel_attn_blocks.{i}.out_proj.{attr}"] = value.squeeze(-1) if attr == "weight" else value
            continue
        prefix, _, attr = key.rpartition(".")
        if prefix in renames:
            out[f"{renames[prefix]}.{attr}"] = value
            continue
        raise ValueError(f"unexpected autoregressive tensor {key!r}")
    return out


def infer_config(ar: dict[str, torch.Tensor], clvp: dict[str, torch.Tensor]) -> ClvpConfig:
    """Sizes from the tensors; heads from Tortoise's 64 channels per head."""
    def count(prefix_re: str, state) -> int:
        idx = {int(m.group(1)) for k in state if (m := re.match(prefix_re, k))}
        return max(idx) + 1 if idx else 0

    emb = _require(ar, "mel_embedding.weight", "autoregressive checkpoint")
    hidden = emb.shape[1]
    decoder = ClvpDecoderConfig(
        vocab_size=emb.shape[0],
        max_position_embeddings=_require(ar, "mel_pos_embedding.emb.weight", "autoregressive checkpoint").shape[0],
        max_text_tokens=_require(ar, "text_pos_embedding.emb.weight", "autoregressive checkpoint").shape[0],
        hidden_size=hidden,
        num_hidden_layers=count(r"^gpt\.h\.(\d+)\.", ar),
        num_attention_heads=max(1, hidden // HEAD_DIM),
        n_inner=_require(ar, "gpt.h.0.mlp.c_fc.weight", "autoregressive checkpoint").shape[1],
        num_mel_attn_blocks=count(r"^conditioning_encoder\.attn\.(\d+)\.", ar),
        feature_size=_require(ar, "conditioning_encoder.init.weight", "autoregressive checkpoint").shape[1],
        bos_token_id=emb.shape[0] - 2,
        eos_token_id=emb.shape[0] - 1,
    )
    encoders = {}
    for kind in ("text", "speech"):
        tok = _require(clvp, f"{kind}_emb.weight", "CLVP checkpoint")
        proj = _require(clvp, f"to_{kind}_latent.weight", "CLVP checkpoint")
        prefix = _encoder_prefix(kind)
        fc1 = _require(clvp, f"{prefix}.attn_layers.layers.1.1.wrap.net.0.proj.weight", "CLVP checkpoint")
        dim = tok.shape[1]
        encoders[kind] = ClvpEncoderConfig(
            vocab_size=tok.shape[0], hidden_size=dim, intermediate_size=fc1.shape[0] // 2, projection_dim=proj.shape[0],
            num_hidden_layers=count(rf"^{prefix}\.attn_layers\.layers\.(\d+)\.", clvp) // 2,
            num_attention_heads=max(1, dim // HEAD_DIM),
            use_attention_bias=f"{prefix}.attn_layers.layers.0.1.wrap.to_q.bias" in clvp,
        )
    projection = encoders["text"].projection_dim
    return ClvpConfig(text_config=encoders["text"], speech_config=encoders["speech"], decoder_config=decoder,
                      projection_dim=projection)


def convert_tortoise(autoregressive_path, clvp_path, out_dir, config: ClvpConfig | None = None):
    """Read both Tortoise checkpoints, convert, check every tensor against the model, save safetensors.
    ``out_dir`` is written all or nothing (clvp/atomic.py): an earlier conversion there stays whole
    until the new one is complete; an unusable ``out_dir`` is refused before the checkpoints are read."""
    check_target(out_dir)
    ar = load_tortoise_checkpoint(autoregressive_path)
    cl = load_tortoise_checkpoint(clvp_path)
    config = config or infer_config(ar, cl)
    state = {}
    state.update(convert_clvp(cl))
    state.update(convert_autoregressive(ar, config.decoder_config.num_attention_heads))
    with torch.device("meta"):
        model = ClvpModelForConditionalGeneration(config, init_weights=False)
    check_state_dict(model, state, f"converted from {autoregressive_path} + {clvp_path}")
    model.load_state_dict(state, strict=True, assign=True)
    model.save_pretrained(out_dir)  # atomic: config.json + model.safetensors in place together
    return model
