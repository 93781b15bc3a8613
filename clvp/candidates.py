"""Tortoise's autoregressive loop: many candidate code sequences for one text in one voice, sampled
in bounded batches and all ranked together by CLVP score (docs/model.md §3.6)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import generation
from .model import check_ids

# Tortoise's presets: candidates per preset, and the sampling settings they all share.
TORTOISE_SAMPLING = dict(do_sample=True, temperature=0.8, top_p=0.8, top_k=50, repetition_penalty=2.0,
                         length_penalty=1.0, max_new_tokens=500)
PRESETS = {
    "ultra_fast": dict(num_candidates=16, **TORTOISE_SAMPLING),
    "fast": dict(num_candidates=96, **TORTOISE_SAMPLING),
    "standard": dict(num_candidates=256, **TORTOISE_SAMPLING),
    "high_quality": dict(num_candidates=256, **TORTOISE_SAMPLING),
}


@dataclass
class RankedCandidates:
    codes: torch.Tensor  # (N, T) fixed speech codes, best first
    scores: torch.Tensor  # (N,) CLVP logits (scaled cosine similarity), best first
    order: torch.Tensor  # (N,) generation index of each ranked candidate
    timings: dict = field(default_factory=dict)  # seconds per stage


def _settings(preset, num_candidates, generation_kwargs) -> tuple[int, dict]:
    settings = {}
    if preset is not None:
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
        settings.update(PRESETS[preset])
    settings.update({k: v for k, v in generation_kwargs.items() if v is not None})
    n = num_candidates if num_candidates is not None else settings.pop("num_candidates", 16)
    settings.pop("num_candidates", None)
    settings.setdefault("do_sample", True)
    settings.setdefault("max_new_tokens", 500)
    return n, settings


@torch.no_grad()
def generate_candidates(model, input_ids, input_features, *, num_candidates=None, batch_size=16, preset=None,
                        seed=None, attention_mask=None, progress=True, **generation_kwargs) -> RankedCandidates:
    """Sample ``num_candidates`` code sequences for one text in one voice and rank them by CLVP score.

    input_ids (1, T) one text; input_features (K, 80, frames) one or several reference clips of the
    same voice, whose conditioning latents are averaged (as Tortoise does). Candidates are generated
    in batches of ``batch_size`` (memory stays bounded) and all of them are ranked together; every
    candidate is padded with the stop code to ``max_new_tokens`` before fixing, as Tortoise pads to
    500, so scores are comparable across batches.
    """
    n, settings = _settings(preset, num_candidates, generation_kwargs)
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"num_candidates must be a positive integer, got {n!r}")
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    generation.check_ids_input(input_ids, "input_ids")
    if input_ids.dim() != 2 or input_ids.shape[0] != 1:
        raise ValueError(f"input_ids must hold one text, shape (1, T); got {tuple(input_ids.shape)}")
    cfg = generation.composite_config(model, None, settings)
    if not cfg.do_sample:
        raise ValueError("candidate generation samples; do_sample=False would give identical candidates")
    if seed is not None:
        if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**63:
            raise ValueError(f"seed must be an integer in 0..2**63-1 or None, got {seed!r}")
        cfg.seed = seed
    generation.validate_request(model, cfg, input_ids, input_features=input_features, attention_mask=attention_mask)
    timings = {}

    t0 = time.perf_counter()
    prompt, ids, mask = model.build_prompt(input_ids, input_features, attention_mask, average_voices=True)  # (1, L, C)
    generation.check_stage(prompt, "the conditioning prompt (conditioning encoder output)")
    timings["conditioning"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    batches = [min(batch_size, n - i) for i in range(0, n, batch_size)]
    codes = []
    bar = tqdm(total=n, desc="generating candidates", unit="cand", disable=not progress)
    for size in batches:
        cfg_b = cfg.copy()
        cfg_b.num_return_sequences = size
        seqs = generation.decoder_generate(model.speech_decoder_model, conditioning_embeds=prompt, cfg=cfg_b).sequences
        seqs = F.pad(seqs, (0, cfg.max_new_tokens + 1 - seqs.shape[1]), value=cfg.eos_token_id)  # (size, 1 + max_new)
        codes.append(model.fix_speech_decoder_output(seqs))
        bar.update(size)
    bar.close()
    codes = torch.cat(codes)  # (N, max_new_tokens)
    check_ids(codes, model.config.speech_config.vocab_size, "generated speech codes")
    timings["generation"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    text_emb = model.text_encoder_model.embeds(ids, mask)  # (1, P)
    speech_emb = torch.cat([model.speech_encoder_model.embeds(codes[i : i + batch_size])
                            for i in range(0, n, batch_size)])  # (N, P)
    generation.check_stage(text_emb, "the text encoder embeddings (CLVP scores)")
    generation.check_stage(speech_emb, "the speech encoder embeddings (CLVP scores)")
    logits_per_text, _, _, _ = model.similarity(text_emb, speech_emb)
    scores = logits_per_text[0]
    order = torch.argsort(scores, descending=True, stable=True)
    timings["ranking"] = time.perf_counter() - t0
    return RankedCandidates(codes=codes[order], scores=scores[order], order=order, timings=timings)
