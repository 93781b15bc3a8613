"""Tortoise checkpoint conversion (docs/model.md §1.4) on small synthetic Tortoise-shaped state dicts.

Expected placements come from the mapping itself (every synthetic tensor holds distinct values, so
each converted tensor can be traced to its source), and, when the oracle folder exists, from
transformers' own ``convert_clvp_to_hf`` functions run in a subprocess.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from clvp import ClvpModelForConditionalGeneration
from clvp.cli import main as cli_main
from clvp.convert import convert_autoregressive, convert_clvp, convert_tortoise, infer_config

from conftest import ORACLE_DIR, ROOT


def tortoise_autoregressive(dim=128, layers=2, blocks=2, n_inner=96, text_vocab=256, mel_vocab=302, mel_pos=40,
                            text_pos=30, feat=80):
    """A state dict with the keys and shapes of Tortoise's UnifiedVoice (autoregressive.pth)."""
    g = torch.Generator().manual_seed(1)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    sd = {
        "conditioning_encoder.init.weight": r(dim, feat, 1), "conditioning_encoder.init.bias": r(dim),
        "text_embedding.weight": r(text_vocab, dim), "text_pos_embedding.emb.weight": r(text_pos, dim),
        "mel_embedding.weight": r(mel_vocab, dim), "mel_pos_embedding.emb.weight": r(mel_pos, dim),
        "gpt.ln_f.weight": r(dim), "gpt.ln_f.bias": r(dim),
        "final_norm.weight": r(dim), "final_norm.bias": r(dim),
        "mel_head.weight": r(mel_vocab, dim), "mel_head.bias": r(mel_vocab),
        "text_head.weight": r(text_vocab, dim), "text_head.bias": r(text_vocab),
    }
    for i in range(blocks):
        p = f"conditioning_encoder.attn.{i}"
        sd.update({f"{p}.norm.weight": r(dim), f"{p}.norm.bias": r(dim), f"{p}.qkv.weight": r(3 * dim, dim, 1),
                   f"{p}.qkv.bias": r(3 * dim), f"{p}.proj_out.weight": r(dim, dim, 1), f"{p}.proj_out.bias": r(dim)})
    for i in range(layers):
        p = f"gpt.h.{i}"
        sd.update({
            f"{p}.ln_1.weight": r(dim), f"{p}.ln_1.bias": r(dim), f"{p}.ln_2.weight": r(dim), f"{p}.ln_2.bias": r(dim),
            f"{p}.attn.c_attn.weight": r(dim, 3 * dim), f"{p}.attn.c_attn.bias": r(3 * dim),
            f"{p}.attn.c_proj.weight": r(dim, dim), f"{p}.attn.c_proj.bias": r(dim),
            f"{p}.attn.bias": torch.ones(1, 1, mel_pos, mel_pos), f"{p}.attn.masked_bias": torch.tensor(-1e4),
            f"{p}.mlp.c_fc.weight": r(dim, n_inner), f"{p}.mlp.c_fc.bias": r(n_inner),
            f"{p}.mlp.c_proj.weight": r(n_inner, dim), f"{p}.mlp.c_proj.bias": r(dim),
        })
    return sd


def tortoise_clvp(dim=128, layers=2, proj=64, inner=96, text_vocab=256, speech_vocab=302):
    """A state dict with the keys and shapes of Tortoise's CLVP (clvp2.pth, x-transformers layers)."""
    g = torch.Generator().manual_seed(2)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    sd = {"temperature": torch.tensor(2.5)}
    for kind, vocab in (("text", text_vocab), ("speech", speech_vocab)):
        p = f"{kind}_transformer.transformer"
        rot = max(proj // ((dim // 64) * 2), 32)
        sd.update({
            f"{kind}_emb.weight": r(vocab, dim), f"to_{kind}_latent.weight": r(proj, dim),
            f"{p}.norm.weight": r(dim), f"{p}.norm.bias": r(dim),
            f"{p}.attn_layers.rotary_pos_emb.inv_freq": 1.0 / (10000 ** (torch.arange(0, rot, 2).float() / rot)),
        })
        for j in range(2 * layers):
            q = f"{p}.attn_layers.layers.{j}"
            sd[f"{q}.0.0.g"] = r(dim)
            if j % 2 == 0:
                for name in ("to_q", "to_k", "to_v"):
                    sd[f"{q}.1.wrap.{name}.weight"] = r(dim, dim)
                sd[f"{q}.1.wrap.to_out.weight"] = r(dim, dim)
                sd[f"{q}.1.wrap.to_out.bias"] = r(dim)
            else:
                sd[f"{q}.1.wrap.net.0.proj.weight"] = r(2 * inner, dim)
                sd[f"{q}.1.wrap.net.0.proj.bias"] = r(2 * inner)
                sd[f"{q}.1.wrap.net.3.weight"] = r(dim, inner)
                sd[f"{q}.1.wrap.net.3.bias"] = r(dim)
    return sd


def test_decoder_attention_split_follows_gpt2_layout():
    ar = tortoise_autoregressive()
    out = convert_autoregressive(ar, heads=2)
    w = ar["gpt.h.1.attn.c_attn.weight"]  # Conv1D (in, 3C): columns [q | k | v]
    dim = w.shape[0]
    pre = "speech_decoder_model.model.decoder.layers.1.attn"
    assert torch.equal(out[f"{pre}.q_proj.weight"], w[:, :dim].T)
    assert torch.equal(out[f"{pre}.k_proj.weight"], w[:, dim : 2 * dim].T)
    assert torch.equal(out[f"{pre}.v_proj.weight"], w[:, 2 * dim :].T)
    assert torch.equal(out[f"{pre}.v_proj.bias"], ar["gpt.h.1.attn.c_attn.bias"][2 * dim :])
    assert torch.equal(out[f"{pre}.out_proj.weight"], ar["gpt.h.1.attn.c_proj.weight"].T)
    # GPT-2 Conv1D MLP weights keep their (in, out) layout
    assert torch.equal(out["speech_decoder_model.model.decoder.layers.1.mlp.c_fc.weight"], ar["gpt.h.1.mlp.c_fc.weight"])
    assert not any("text_head" in k or k.endswith((".attn.bias", ".attn.masked_bias")) for k in out)


def test_conditioning_qkv_is_split_per_head():
    """docs/model.md §1.4: for head h, q rows 192h..192h+64, k 192h+64.., v 192h+128.. (64-channel heads)."""
    ar = tortoise_autoregressive(dim=128)
    out = convert_autoregressive(ar, heads=2)
    qkv = ar["conditioning_encoder.attn.0.qkv.weight"][:, :, 0]  # (384, 128)
    q = out["conditioning_encoder.mel_attn_blocks.0.q_proj.weight"]
    k = out["conditioning_encoder.mel_attn_blocks.0.k_proj.weight"]
    v = out["conditioning_encoder.mel_attn_blocks.0.v_proj.weight"]
    for h in range(2):
        assert torch.equal(q[64 * h : 64 * h + 64], qkv[192 * h : 192 * h + 64])
        assert torch.equal(k[64 * h : 64 * h + 64], qkv[192 * h + 64 : 192 * h + 128])
        assert torch.equal(v[64 * h : 64 * h + 64], qkv[192 * h + 128 : 192 * h + 192])


def test_clvp_layers_interleave_attention_and_feed_forward():
    cl = tortoise_clvp()
    out = convert_clvp(cl)
    p = "speech_transformer.transformer.attn_layers.layers"
    assert torch.equal(out["speech_encoder_model.layers.1.input_rmsnorm.weight"], cl[f"{p}.2.0.0.g"])
    assert torch.equal(out["speech_encoder_model.layers.1.post_attention_rmsnorm.weight"], cl[f"{p}.3.0.0.g"])
    assert torch.equal(out["speech_encoder_model.layers.1.self_attn.q_proj.weight"], cl[f"{p}.2.1.wrap.to_q.weight"])
    assert torch.equal(out["speech_encoder_model.layers.1.mlp.fc1.proj.weight"], cl[f"{p}.3.1.wrap.net.0.proj.weight"])
    assert torch.equal(out["speech_encoder_model.layers.1.mlp.fc2.bias"], cl[f"{p}.3.1.wrap.net.3.bias"])
    assert torch.equal(out["text_encoder_model.projection.weight"], cl["to_text_latent.weight"])
    assert out["logit_scale"].shape == () and float(out["logit_scale"]) == 2.5


def test_convert_tortoise_writes_a_loadable_checkpoint(tmp_path):
    torch.save(tortoise_autoregressive(), tmp_path / "autoregressive.pth")
    torch.save(tortoise_clvp(), tmp_path / "clvp2.pth")
    rc = cli_main(["convert-tortoise", "--autoregressive", str(tmp_path / "autoregressive.pth"),
                   "--clvp", str(tmp_path / "clvp2.pth"), "--out", str(tmp_path / "hf")])
    assert rc == 0
    assert (tmp_path / "hf" / "config.json").is_file() and (tmp_path / "hf" / "model.safetensors").is_file()
    model = ClvpModelForConditionalGeneration.from_pretrained(tmp_path / "hf")
    cfg = model.config
    assert (cfg.decoder_config.hidden_size, cfg.decoder_config.num_hidden_layers, cfg.decoder_config.num_attention_heads) == (128, 2, 2)
    assert (cfg.decoder_config.bos_token_id, cfg.decoder_config.eos_token_id) == (300, 301)
    assert cfg.speech_config.vocab_size == 302 and cfg.text_config.projection_dim == 64
    ar = tortoise_autoregressive()
    assert torch.equal(model.speech_decoder_model.lm_head.weight, ar["mel_head.weight"])


class _Payload:
    """Stands for arbitrary pickled code: a class instance, which weights-only loading refuses."""


def test_convert_refuses_pickled_code(tmp_path):
    torch.save({"x": _Payload()}, tmp_path / "autoregressive.pth")
    torch.save(tortoise_clvp(), tmp_path / "clvp2.pth")
    with pytest.raises(ValueError, match="weights-only"):
        convert_tortoise(tmp_path / "autoregressive.pth", tmp_path / "clvp2.pth", tmp_path / "hf")


def test_convert_names_a_missing_tensor(tmp_path):
    ar = tortoise_autoregressive()
    del ar["gpt.h.1.ln_2.bias"]
    torch.save(ar, tmp_path / "autoregressive.pth")
    torch.save(tortoise_clvp(), tmp_path / "clvp2.pth")
    with pytest.raises(ValueError, match=r"missing.*layers\.1\.post_attention_layernorm\.bias"):
        convert_tortoise(tmp_path / "autoregressive.pth", tmp_path / "clvp2.pth", tmp_path / "hf")


def test_convert_cli_missing_file_is_one_line_exit_2(tmp_path, capsys):
    rc = cli_main(["convert-tortoise", "--autoregressive", str(tmp_path / "nope.pth"), "--clvp", str(tmp_path / "x.pth"),
                   "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "does not exist" in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


_ORACLE_SCRIPT = r"""
import sys, torch
from transformers.models.clvp.convert_clvp_to_hf import convert_decoder_weights, convert_encoder_weights
ar, cl, out = sys.argv[1], sys.argv[2], sys.argv[3]
res = {}
res.update(convert_encoder_weights(torch.load(cl)))
res.update(convert_decoder_weights(torch.load(ar)))
torch.save(res, out)
"""


@pytest.mark.oracle
@pytest.mark.skipif(not ORACLE_DIR.is_dir(), reason="transformers 4.46.3 oracle not installed in .oracle/")
def test_conversion_matches_transformers_script(tmp_path):
    """transformers' script hard-codes 1024 channels and 64-channel heads: use those sizes (1 layer, 1 block)."""
    ar = tortoise_autoregressive(dim=1024, layers=1, blocks=1, n_inner=64, mel_vocab=40, mel_pos=16, text_pos=8, text_vocab=16)
    cl = tortoise_clvp()
    torch.save(ar, tmp_path / "ar.pth")
    torch.save(cl, tmp_path / "cl.pth")
    env = dict(os.environ, PYTHONPATH=str(ORACLE_DIR))
    subprocess.run([sys.executable, "-c", _ORACLE_SCRIPT, str(tmp_path / "ar.pth"), str(tmp_path / "cl.pth"),
                    str(tmp_path / "ref.pt")], check=True, env=env, cwd=tmp_path, capture_output=True)
    ref = torch.load(tmp_path / "ref.pt")
    ours = {}
    ours.update(convert_clvp(cl))
    ours.update(convert_autoregressive(ar, heads=16))
    assert sorted(ours) == sorted(ref)
    for key in ref:
        assert torch.equal(ours[key].reshape(ref[key].shape), ref[key]), key
