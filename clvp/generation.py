"""Speech-code generation with a static KV cache: transformers' greedy search, sampling and beam search.

Semantics are transformers 4.46.3's (docs/model.md §3), not 5.x's: the prefill sees the prompt at
positions 0..L-1 and the fed-back code k (k >= 1) takes mel position k + 1 (``positions="hf"``), or
k as Tortoise computes it without a cache (``positions="contiguous"``). Start and stop codes come
from the decoder config (8192 / 8193), never from the text config.

The cache is preallocated once per call (``Decoder.new_kv_cache``: per layer (B, H, T_max, D) for
keys and values), and every decode step has the same shapes: new keys are written in place and
attention reads the valid prefix through ``kernels.decode_attention``; on CUDA the step is captured
in a CUDA graph. This module drives the model core (clvp/model.py) and is driven by the Hugging Face
layer (clvp/modeling.py) and the candidate loop (clvp/candidates.py).
"""
from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass, fields
from typing import Optional

import torch
import torch.nn.functional as F

from . import kernels
from .model import check_ids, value_checks
from .outputs import GenerateBeamDecoderOnlyOutput, GenerateDecoderOnlyOutput

# ----------------------------------------------------------------------------------------------
# Generation config
# ----------------------------------------------------------------------------------------------


@dataclass
class GenerationConfig:
    """The generation arguments of transformers' ``GenerationConfig`` that CLVP uses, same defaults."""

    max_length: int = 20  # total length of the returned ids (start code included) when max_new_tokens is None
    max_new_tokens: Optional[int] = None
    min_length: int = 0
    min_new_tokens: Optional[int] = None
    do_sample: bool = False
    num_beams: int = 1
    temperature: float = 1.0
    top_k: Optional[int] = 50  # only used when sampling
    top_p: float = 1.0
    typical_p: float = 1.0
    repetition_penalty: float = 1.0
    suppress_tokens: Optional[list] = None  # codes never generated
    length_penalty: float = 1.0  # beam search only
    early_stopping: bool | str = False  # beam search only: True, False or "never"
    num_return_sequences: int = 1
    bos_token_id: Optional[int] = None  # start code; None means the decoder config's (8192)
    eos_token_id: Optional[int] = None  # stop code; None means the decoder config's (8193)
    pad_token_id: Optional[int] = None  # what finished rows emit; None means eos
    return_dict_in_generate: bool = False  # ClvpForCausalLM only; the composite always returns a ClvpOutput
    output_hidden_states: bool = False
    output_scores: bool = False  # with return_dict_in_generate: the processed scores of every step
    output_logits: bool = False  # with return_dict_in_generate: the raw logits of every step
    output_attentions: bool = False  # ClvpForCausalLM, greedy or sampling from input_ids only (docs/parity.md)
    use_cache: bool = True  # accepted for transformers' signature; generation always uses its static cache
    positions: str = "hf"  # "hf": fed-back code k at position k + 1 (transformers); "contiguous": k (Tortoise, no cache)
    use_cuda_graph: Optional[bool] = None  # decode step in a CUDA graph; None means on for CUDA with the Triton kernels
    seed: Optional[int] = None  # seeds a torch.Generator for reproducible sampling
    generator: Optional[torch.Generator] = None

    def update(self, **kwargs) -> dict:
        """Set the known fields; return the unknown ones (transformers' contract)."""
        names = {f.name for f in fields(self)}
        unused = {}
        for key, value in kwargs.items():
            if key in names:
                setattr(self, key, value)
            else:
                unused[key] = value
        return unused

    def validate(self) -> None:
        def positive_int(name, value, minimum=1):
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")

        positive_int("num_beams", self.num_beams)
        positive_int("num_return_sequences", self.num_return_sequences)
        if self.max_new_tokens is not None:
            positive_int("max_new_tokens", self.max_new_tokens)
        else:
            positive_int("max_length", self.max_length)
        if self.min_new_tokens is not None:
            positive_int("min_new_tokens", self.min_new_tokens, 0)
        if self.num_beams > 1:
            if self.num_return_sequences > self.num_beams:
                raise ValueError(
                    f"num_return_sequences ({self.num_return_sequences}) must be <= num_beams ({self.num_beams}) in beam search"
                )
            if self.do_sample:
                raise ValueError("beam sampling (do_sample=True with num_beams > 1) is not supported; use one of them")
        elif self.num_return_sequences > 1 and not self.do_sample:
            raise ValueError(
                "greedy search (do_sample=False, num_beams=1) returns the same sequence every time; "
                "use do_sample=True or num_beams >= num_return_sequences for several sequences"
            )
        if self.min_length is not None:
            positive_int("min_length", self.min_length, 0)
        for name in ("do_sample", "return_dict_in_generate", "output_hidden_states", "output_scores", "output_logits",
                     "output_attentions", "use_cache"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.use_cuda_graph is not None and not isinstance(self.use_cuda_graph, bool):
            raise TypeError(f"use_cuda_graph must be True, False or None, got {self.use_cuda_graph!r}")
        for name in ("temperature", "top_p", "typical_p", "repetition_penalty", "length_penalty"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise TypeError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
            if not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value}")
        if self.seed is not None and (not isinstance(self.seed, int) or isinstance(self.seed, bool)
                                      or not 0 <= self.seed < 2**63):
            raise ValueError(f"seed must be an integer in 0..2**63-1 or None, got {self.seed!r}")
        for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                raise ValueError(f"{name} must be a non-negative integer or None, got {value!r}")
        if self.suppress_tokens is not None and (
                not isinstance(self.suppress_tokens, (list, tuple))
                or not all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in self.suppress_tokens)):
            raise ValueError(f"suppress_tokens must be a list of non-negative integer codes or None, got {self.suppress_tokens!r}")
        if self.early_stopping not in (True, False, "never"):
            raise ValueError(f"early_stopping must be True, False or 'never', got {self.early_stopping!r}")
        if not (self.temperature > 0):
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not (0 < self.top_p <= 1):
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if not (0 < self.typical_p <= 1):
            raise ValueError(f"typical_p must be in (0, 1], got {self.typical_p}")
        if self.top_k is not None and (not isinstance(self.top_k, int) or isinstance(self.top_k, bool) or self.top_k < 0):
            raise ValueError(f"top_k must be a non-negative integer or None, got {self.top_k!r}")
        if not (self.repetition_penalty > 0):
            raise ValueError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")
        if self.positions not in ("hf", "contiguous"):
            raise ValueError(f"positions must be 'hf' or 'contiguous', got {self.positions!r}")

    def to_diff_dict(self) -> dict:
        """The fields that differ from the defaults (what generation_config.json holds)."""
        default = GenerationConfig()
        return {f.name: getattr(self, f.name) for f in fields(self)
                if f.name != "generator" and getattr(self, f.name) != getattr(default, f.name)}

    @classmethod
    def from_file_dict(cls, data: dict, source: str) -> "GenerationConfig":
        """A config from a generation_config.json's dict: the fields CLVP uses, validated; transformers'
        other keys (``transformers_version``, strategies CLVP does not have) are ignored."""
        if not isinstance(data, dict):
            raise ValueError(f"{source} must hold a JSON object, got {type(data).__name__}")
        names = {f.name for f in fields(cls)} - {"generator"}
        out = cls(**{k: v for k, v in data.items() if k in names})
        try:
            out.validate()
        except (TypeError, ValueError) as err:
            raise type(err)(f"{source}: {err}") from None
        return out

    def copy(self) -> "GenerationConfig":
        gen = self.generator
        self.generator = None
        try:
            out = copy.deepcopy(self)
        finally:
            self.generator = gen
        out.generator = gen
        return out


# ----------------------------------------------------------------------------------------------
# Input checks at the entry points (the core trusts its inputs)
# ----------------------------------------------------------------------------------------------
# Type and shape checks cost nothing; a check of values is one host read (a device sync), made here
# at the boundary and never inside the core's forwards (docs/architecture.md §4). While torch.compile
# traces a boundary function, the value checks are skipped (``value_checks``): a host read would
# break the graph, and whoever compiles it takes on the checks.


class NonFiniteError(ValueError):
    """NaN or inf appeared inside a run (a stage named in the message); nothing is returned."""


_NONFINITE_HINT = "the model's weights (or its inputs) hold NaN/inf values; nothing was generated"
FEATURE_LIMIT = 1e4  # |log-mel| values are O(10); anything past this is not a log-mel


def check_stage(x: torch.Tensor, stage: str) -> None:
    """Raise NonFiniteError naming ``stage`` when ``x`` holds NaN or inf (one host read)."""
    if not bool(torch.isfinite(x).all()):
        raise NonFiniteError(f"{stage} is not finite (NaN or inf): {_NONFINITE_HINT}")


def _tensor(x, name: str, what: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor ({what}), got {type(x).__name__}; convert it with torch.as_tensor")
    return x


def check_ids_input(ids, name: str = "input_ids", vocab_size: Optional[int] = None) -> None:
    """ids: a non-empty (batch, seq_len) torch.long / torch.int32 tensor (within the vocabulary when given)."""
    if ids is None:
        return
    if isinstance(ids, torch.Tensor) and ids.dtype in (torch.long, torch.int32) and ids.dim() != 2:
        raise ValueError(f"{name} must be (batch, seq_len), got shape {tuple(ids.shape)}")
    check_ids(ids, vocab_size, name)  # type, dtype, empty, vocabulary: the core's one check


def check_embeds_input(x, name: str, hidden_size: int) -> None:
    """x: a non-empty, finite (batch, seq_len, hidden_size) float tensor."""
    if x is None:
        return
    _tensor(x, name, f"float embeddings of shape (batch, seq_len, {hidden_size})")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a float tensor, got dtype {x.dtype}")
    if x.dim() != 3 or x.shape[-1] != hidden_size or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty (batch, seq_len, {hidden_size}) tensor, got {tuple(x.shape)}")
    if value_checks() and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or inf values; embeddings must be finite")


def check_features_input(x, feature_size: int, name: str = "input_features") -> None:
    """x: a finite (clips, feature_size, frames >= 1) float log-mel with |values| <= FEATURE_LIMIT."""
    if x is None:
        return
    _tensor(x, name, f"a float log-mel of shape (batch, {feature_size}, frames)")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a float tensor, got dtype {x.dtype}")
    if x.dim() != 3 or x.shape[1] != feature_size:
        raise ValueError(f"{name} must be (batch, {feature_size}, frames), got {tuple(x.shape)}")
    if x.shape[0] == 0 or x.shape[2] == 0:
        raise ValueError(f"{name} must hold at least one clip of at least one frame, got shape {tuple(x.shape)}")
    if not value_checks():
        return
    peak = float(x.abs().amax())  # one host read: NaN or inf anywhere makes the peak NaN or inf
    if not math.isfinite(peak):
        raise ValueError(f"{name} contains NaN or inf values; a log-mel must be finite")
    if peak > FEATURE_LIMIT:
        raise ValueError(f"{name} has values up to {peak:.3g} in magnitude; a log-mel's values are O(10) "
                         f"(allowed |x| <= {FEATURE_LIMIT:g}): is this a log-mel from the feature extractor?")


def check_generate_mask(mask, input_ids, name: str = "attention_mask") -> None:
    """``ClvpForCausalLM.generate``'s attention_mask: accepted when it masks nothing (the static
    cache has no padding support; a padded batch would silently attend to its padding)."""
    if mask is None:
        return
    if input_ids is None:
        raise ValueError(f"{name} was given without input_ids; pass both, or neither")
    check_mask_input(mask, input_ids.shape, name)
    if value_checks() and not bool((mask != 0).all()):
        raise ValueError(
            f"{name} masks some positions; generate does not support padded prompts: generate each row on its own "
            "(or pass an all-ones mask)"
        )


def check_mask_input(mask, shape, name: str = "attention_mask") -> None:
    """mask: a 0/1 tensor of exactly ``shape`` (that of the ids it masks)."""
    if mask is None:
        return
    _tensor(mask, name, "0/1 values of the ids' shape (batch, seq_len)")
    if tuple(mask.shape) != tuple(shape):
        raise ValueError(f"{name} has shape {tuple(mask.shape)}, expected (batch, seq_len) = {tuple(shape)}")
    if mask.is_complex() or (value_checks() and not bool(((mask == 0) | (mask == 1)).all())):
        raise ValueError(f"{name} must hold only 0 (padding) and 1 (token)")


# ----------------------------------------------------------------------------------------------
# Logits processors (transformers 4.46.3's, same order and arithmetic)
# ----------------------------------------------------------------------------------------------


class RepetitionPenalty:
    def __init__(self, penalty: float):
        self.penalty = penalty

    def __call__(self, input_ids, scores):
        score = torch.gather(scores, 1, input_ids)
        score = torch.where(score < 0, score * self.penalty, score / self.penalty)
        return scores.scatter(1, input_ids, score)


class MinLength:
    """Forbid the stop code while ``input_ids`` is shorter than ``min_length`` (``prompt_len`` skipped for min_new_tokens)."""

    def __init__(self, min_length: int, eos_token_id: int, prompt_len: int = 0):
        self.min_length, self.eos, self.prompt_len = min_length, eos_token_id, prompt_len

    def __call__(self, input_ids, scores):
        if input_ids.shape[-1] - self.prompt_len < self.min_length:
            scores = scores.clone()
            scores[:, self.eos] = -math.inf
        return scores


class SuppressTokens:
    def __init__(self, tokens):
        self.tokens = list(tokens)

    def __call__(self, input_ids, scores):
        scores = scores.clone()
        scores[:, self.tokens] = -math.inf
        return scores


class Temperature:
    def __init__(self, temperature: float):
        self.temperature = temperature

    def __call__(self, input_ids, scores):
        return scores / self.temperature


class TopK:
    def __init__(self, top_k: int, min_tokens_to_keep: int = 1):
        self.top_k = max(top_k, min_tokens_to_keep)

    def __call__(self, input_ids, scores):
        k = min(self.top_k, scores.shape[-1])
        kth = torch.topk(scores, k)[0][..., -1, None]
        return scores.masked_fill(scores < kth, -math.inf)


class TopP:
    def __init__(self, top_p: float, min_tokens_to_keep: int = 1):
        self.top_p, self.min_keep = top_p, min_tokens_to_keep

    def __call__(self, input_ids, scores):
        sorted_logits, sorted_indices = torch.sort(scores, descending=False)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        remove = cumulative <= (1 - self.top_p)
        remove[..., -self.min_keep:] = False
        remove = remove.scatter(1, sorted_indices, remove)
        return scores.masked_fill(remove, -math.inf)


class Typical:
    def __init__(self, mass: float, min_tokens_to_keep: int = 1):
        self.mass, self.min_keep = mass, min_tokens_to_keep

    def __call__(self, input_ids, scores):
        normalized = F.log_softmax(scores, dim=-1)
        p = torch.exp(normalized)
        ent = -(normalized * p).nansum(-1, keepdim=True)
        shifted = torch.abs((-normalized) - ent)
        sorted_scores, sorted_indices = torch.sort(shifted, descending=False)
        sorted_logits = scores.gather(-1, sorted_indices)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        last_ind = (cumulative < self.mass).sum(dim=1)
        last_ind.clamp_(max=sorted_scores.shape[-1] - 1)
        remove = sorted_scores > sorted_scores.gather(1, last_ind.view(-1, 1))
        remove[..., : self.min_keep] = False
        remove = remove.scatter(1, sorted_indices, remove)
        return scores.masked_fill(remove, -math.inf)


def build_processors(cfg: GenerationConfig, prompt_ids_len: int) -> list:
    """The processors transformers 4.46.3 builds for these settings, in its order."""
    procs = []
    if cfg.repetition_penalty is not None and cfg.repetition_penalty != 1.0:
        procs.append(RepetitionPenalty(cfg.repetition_penalty))
    if cfg.min_length is not None and cfg.min_length > 0:
        procs.append(MinLength(cfg.min_length, cfg.eos_token_id))
    if cfg.min_new_tokens is not None and cfg.min_new_tokens > 0:
        procs.append(MinLength(cfg.min_new_tokens, cfg.eos_token_id, prompt_len=prompt_ids_len))
    if cfg.suppress_tokens:
        procs.append(SuppressTokens(cfg.suppress_tokens))
    if cfg.do_sample:
        keep = 2 if cfg.num_beams > 1 else 1
        if cfg.temperature is not None and cfg.temperature != 1.0:
            procs.append(Temperature(cfg.temperature))
        if cfg.top_k is not None and cfg.top_k != 0:
            procs.append(TopK(cfg.top_k, keep))
        if cfg.top_p is not None and cfg.top_p < 1.0:
            procs.append(TopP(cfg.top_p, keep))
        if cfg.typical_p is not None and cfg.typical_p < 1.0:
            procs.append(Typical(cfg.typical_p, keep))
    return procs


def apply_processors(procs, input_ids, scores):
    for proc in procs:
        scores = proc(input_ids, scores)
    return scores


# ----------------------------------------------------------------------------------------------
# Static KV cache and the decoder's prefill / step
# ----------------------------------------------------------------------------------------------


class _Decoder:
    """Runs a ``CausalLM`` against static KV caches: a prefill over the prompt, then one-token steps.

    The step reads everything that changes from one step to the next from device buffers (the
    tokens, the mel position, the cache slot) and writes the new keys and values in place, so its
    shapes and addresses never change: on CUDA it is captured once in a CUDA graph and replayed
    (``use_cuda_graph``), cutting the ~800 kernel launches of an eager step to one. Run eagerly
    (the CPU), a step attends over the cache entries in use only (``KVCache.limit``), not the
    whole preallocated cache.
    """

    def __init__(self, lm, batch: int, max_len: int, use_cuda_graph: bool = False):
        self.lm = lm
        self.decoder = lm.model.decoder
        device = lm.final_norm.weight.device
        self.caches = self.decoder.new_kv_cache(batch, max_len)  # one KVCache per layer
        self.tokens = torch.zeros(batch, dtype=torch.long, device=device)  # (B,) codes fed back
        self.position = torch.zeros(1, dtype=torch.long, device=device)  # mel position of those codes
        self.slot = torch.zeros(1, dtype=torch.long, device=device)  # cache index they are written at
        self.pos = 0  # tokens written so far (same for every row)
        self.use_cuda_graph = use_cuda_graph and device.type == "cuda"
        self.graph = None
        self.graph_logits = None

    def reorder(self, index: torch.Tensor) -> None:
        """Beam search: row b continues from the cache of row ``index[b]``."""
        for cache in self.caches:
            cache.reorder(index)

    def prefill(self, x, collect_hidden=False):
        """x (B, L, C): embeddings with positions already added. Returns logits (B, V) of the next code."""
        hidden = [] if collect_hidden else None
        t = x.shape[1]
        x = self.decoder.decode(x, self.caches, torch.arange(t, device=x.device), hidden)  # (B, L, C)
        self.pos = t
        return self.lm.logits(x[:, -1]), (tuple(hidden) if hidden is not None else None)

    def _step_body(self, hidden=None):
        """One decode step from the device buffers; fixed shapes, no host synchronisation."""
        x = self.decoder.embed_step(self.tokens, self.position)  # (B, 1, C)
        x = self.decoder.decode(x, self.caches, self.slot, hidden)
        return self.lm.logits(x[:, 0])  # (B, V)

    def _capture(self):
        torch.cuda.synchronize()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up: compiles the kernels; rewrites the same slot, so it is harmless
            for _ in range(2):
                self._step_body()
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.graph_logits = self._step_body()

    def step(self, tokens, position: int, collect_hidden=False):
        """tokens (B,) -> logits (B, V) of the next code; ``position`` is the mel position of ``tokens``."""
        self.tokens.copy_(tokens)
        self.position.fill_(position)
        self.slot.fill_(self.pos)
        self.pos += 1
        eager = collect_hidden or not self.use_cuda_graph
        for cache in self.caches:  # eager: attend over the entries in use only; a graph keeps the whole cache
            cache.limit = self.pos if eager else None
        if eager:
            hidden = [] if collect_hidden else None
            logits = self._step_body(hidden)
            return logits, (tuple(hidden) if hidden is not None else None)
        if self.graph is None:
            self._capture()
        self.graph.replay()
        return self.graph_logits.clone(), None


# ----------------------------------------------------------------------------------------------
# Search loops
# ----------------------------------------------------------------------------------------------


def _cache_tuples(dec: "_Decoder", cfg: GenerationConfig):
    """The static caches' valid prefix as transformers' per-layer (key, value) tuples (B, H, T, D),
    returned with ``return_dict_in_generate`` when ``use_cache``."""
    if not (cfg.return_dict_in_generate and cfg.use_cache):
        return None
    return tuple((c.k[:, :, : dec.pos], c.v[:, :, : dec.pos]) for c in dec.caches)


def _graphs_enabled(cfg: GenerationConfig, x: torch.Tensor) -> bool:
    """CUDA graphs need a capturable step on CUDA tensors. They are used with the Triton decode
    kernel, the path the CUDA tests cover; the eager reference no longer reads the valid length on
    the host, so it could be captured too, but that is not yet checked on a GPU."""
    if cfg.use_cuda_graph is False or not x.is_cuda:
        return False
    capturable = kernels.use_triton(x)
    if cfg.use_cuda_graph and not capturable:
        raise ValueError("use_cuda_graph=True needs the Triton decode kernel (CLVP_KERNELS=auto or triton with triton installed)")
    return capturable


def _positions_for(cfg: GenerationConfig, k: int) -> int:
    """Mel position of the k-th fed-back code (k >= 1); the start code sits at position 0."""
    return k + 1 if cfg.positions == "hf" else k


def _sample_or_greedy(lm, prefill_x, start_ids, cfg, new_tokens, fed_positions, collect_hidden):
    """Greedy search or multinomial sampling (transformers' ``_sample``) with a static cache.

    prefill_x (B, L, C) embeddings; start_ids (B, S) the ids generation continues from (they are
    what the repetition penalty sees); ``fed_positions(k)`` the position of the k-th fed-back code.
    """
    b = prefill_x.shape[0]
    dec = _Decoder(lm, b, prefill_x.shape[1] + new_tokens, _graphs_enabled(cfg, prefill_x))
    procs = build_processors(cfg, start_ids.shape[1])
    eos = cfg.eos_token_id
    pad = cfg.pad_token_id if cfg.pad_token_id is not None else eos
    ids = torch.empty(b, start_ids.shape[1] + new_tokens, dtype=torch.long, device=start_ids.device)
    ids[:, : start_ids.shape[1]] = start_ids
    cur = start_ids.shape[1]
    unfinished = torch.ones(b, dtype=torch.bool, device=ids.device)
    hidden_steps = [] if collect_hidden else None
    keep_scores = [] if cfg.return_dict_in_generate and cfg.output_scores else None
    keep_logits = [] if cfg.return_dict_in_generate and cfg.output_logits else None
    logits, hid = dec.prefill(prefill_x, collect_hidden)
    for k in range(1, new_tokens + 1):
        if hidden_steps is not None:
            hidden_steps.append(hid)
        scores = apply_processors(procs, ids[:, :cur], logits.float())
        if keep_scores is not None:
            keep_scores.append(scores)
        if keep_logits is not None:
            keep_logits.append(logits.float())
        finite = torch.isfinite(logits).all()  # read on the host with `unfinished` below: no extra sync
        if cfg.do_sample:
            probs = scores.softmax(-1)
            probs = probs.masked_fill(~finite, 1.0)  # NaN logits: keep multinomial from failing before the check
            nxt = torch.multinomial(probs, 1, generator=cfg.generator)[:, 0]
        else:
            nxt = scores.argmax(-1)
        nxt = torch.where(unfinished, nxt, torch.full_like(nxt, pad))
        ids[:, cur] = nxt
        cur += 1
        if eos is not None:
            unfinished &= nxt != eos
        going, ok = torch.stack((unfinished.any(), finite)).tolist()  # the step's one host read
        if not ok:
            raise NonFiniteError(f"the decoder logits at step {k} are not finite (NaN or inf): {_NONFINITE_HINT}")
        if k == new_tokens or not going:
            break
        logits, hid = dec.step(nxt, fed_positions(k), collect_hidden)
    return GenerateDecoderOnlyOutput(
        sequences=ids[:, :cur], scores=tuple(keep_scores) if keep_scores is not None else None,
        logits=tuple(keep_logits) if keep_logits is not None else None,
        hidden_states=tuple(hidden_steps) if hidden_steps is not None else None, past_key_values=_cache_tuples(dec, cfg))


class _BeamHypotheses:
    def __init__(self, num_beams, length_penalty, early_stopping):
        self.num_beams, self.length_penalty, self.early_stopping = num_beams, length_penalty, early_stopping
        self.beams = []
        self.worst_score = 1e9

    def add(self, hyp, sum_logprobs, generated_len, beam_index=None):
        score = sum_logprobs / (generated_len**self.length_penalty)
        if len(self.beams) < self.num_beams or score > self.worst_score:
            self.beams.append((score, hyp, beam_index))
            if len(self.beams) > self.num_beams:
                ranked = sorted((s, i) for i, (s, _, _) in enumerate(self.beams))
                del self.beams[ranked[0][1]]
                self.worst_score = ranked[1][0]
            else:
                self.worst_score = min(score, self.worst_score)

    def is_done(self, best_sum_logprobs, cur_len, prompt_len, max_length):
        if len(self.beams) < self.num_beams:
            return False
        if self.early_stopping is True:
            return True
        if self.early_stopping == "never" and self.length_penalty > 0.0:
            # the best a running beam could still reach is at the maximum length
            return self.worst_score >= best_sum_logprobs / (max_length - prompt_len) ** self.length_penalty
        return self.worst_score >= best_sum_logprobs / (cur_len - prompt_len) ** self.length_penalty


def _beam_search(lm, prefill_x, start_ids, cfg, new_tokens, fed_positions, collect_hidden=False):
    """transformers 4.46.3's beam search (``BeamSearchScorer`` semantics) over a static cache.

    prefill_x (B * num_beams, L, C), start_ids (B * num_beams, S): inputs already repeated per beam.
    """
    nb = cfg.num_beams
    bb = prefill_x.shape[0]
    batch = bb // nb
    device = start_ids.device
    eos = cfg.eos_token_id
    pad = cfg.pad_token_id if cfg.pad_token_id is not None else eos
    prompt_len = start_ids.shape[1]
    max_length = prompt_len + new_tokens
    dec = _Decoder(lm, bb, prefill_x.shape[1] + new_tokens, _graphs_enabled(cfg, prefill_x))
    procs = build_processors(cfg, prompt_len)
    hyps = [_BeamHypotheses(nb, cfg.length_penalty, cfg.early_stopping) for _ in range(batch)]
    done = [False] * batch
    beam_scores = torch.zeros(batch, nb, dtype=torch.float, device=device)
    beam_scores[:, 1:] = -1e9
    beam_scores = beam_scores.view(-1)
    ids = start_ids
    want_scores = cfg.return_dict_in_generate and cfg.output_scores
    keep_scores = [] if want_scores else None
    keep_logits = [] if cfg.return_dict_in_generate and cfg.output_logits else None
    history = [()] * bb if want_scores else None  # per row: the row it came from at every step
    hidden_steps = [] if collect_hidden else None
    logits, hid = dec.prefill(prefill_x, collect_hidden)
    k = 0
    while True:
        k += 1
        if hidden_steps is not None:
            hidden_steps.append(hid)
        if keep_logits is not None:
            keep_logits.append(logits.float())
        scores = F.log_softmax(logits.float(), dim=-1)
        scores = apply_processors(procs, ids, scores)
        if keep_scores is not None:
            keep_scores.append(scores)
        scores = scores + beam_scores[:, None]
        vocab = scores.shape[-1]
        scores = scores.view(batch, nb * vocab)
        n_keep = max(2, 1 + (1 if eos is not None else 0)) * nb
        top_scores, top_tokens = torch.topk(scores, n_keep, dim=1, largest=True, sorted=True)
        top_beams = torch.div(top_tokens, vocab, rounding_mode="floor")
        top_tokens = top_tokens % vocab
        cur_len = ids.shape[-1] + 1
        next_scores = torch.zeros(batch, nb, dtype=top_scores.dtype, device=device)
        next_tokens = torch.zeros(batch, nb, dtype=torch.long, device=device)
        next_index = torch.zeros(batch, nb, dtype=torch.long, device=device)
        ts, tt, tb = top_scores.tolist(), top_tokens.tolist(), top_beams.tolist()
        if any(math.isnan(x) for row in ts for x in row):  # NaN/inf logits make NaN log-probabilities
            raise NonFiniteError(f"the decoder logits at step {k} are not finite (NaN or inf): {_NONFINITE_HINT}")
        for bi in range(batch):
            if done[bi]:
                next_tokens[bi, :] = pad
                continue
            j = 0
            for rank, (tok, sc, beam) in enumerate(zip(tt[bi], ts[bi], tb[bi])):
                row = bi * nb + beam
                if eos is not None and tok == eos:
                    if rank >= nb:
                        continue
                    hyps[bi].add(ids[row].clone(), sc, cur_len - prompt_len,
                                 history[row] + (row,) if history is not None else None)
                else:
                    next_scores[bi, j] = sc
                    next_tokens[bi, j] = tok
                    next_index[bi, j] = row
                    j += 1
                if j == nb:
                    break
            done[bi] = done[bi] or hyps[bi].is_done(max(ts[bi]), cur_len, prompt_len, max_length)
        beam_scores = next_scores.view(-1)
        index = next_index.view(-1)
        ids = torch.cat([ids[index], next_tokens.view(-1, 1)], dim=-1)
        dec.reorder(index)
        if history is not None:
            rows = index.tolist()
            history = [history[r] + (r,) for r in rows]
        if all(done) or ids.shape[-1] >= max_length:
            break
        logits, hid = dec.step(next_tokens.view(-1), fed_positions(k), collect_hidden)
    # finalize
    for bi in range(batch):
        if done[bi]:
            continue
        for j in range(nb):
            row = bi * nb + j
            hyps[bi].add(ids[row], beam_scores[row].item(), ids.shape[-1] - prompt_len,
                         history[row] if history is not None else None)
    keep = cfg.num_return_sequences
    best, best_scores, best_history = [], [], []
    for bi in range(batch):
        ranked = sorted(hyps[bi].beams, key=lambda x: x[0])
        for _ in range(keep):
            score, hyp, hist = ranked.pop()
            best.append(hyp)
            best_scores.append(score)
            best_history.append(hist)
    lengths = [len(h) for h in best]
    out_len = min(max(lengths) + 1, max_length)
    out = torch.full((len(best), out_len), pad if min(lengths) != max(lengths) else 0, dtype=torch.long, device=device)
    for i, h in enumerate(best):
        out[i, : len(h)] = h
        if len(h) < out_len:
            out[i, len(h)] = eos
    beam_indices = None
    if want_scores:  # transformers' layout: the beam row of every step, -1 past it
        beam_indices = torch.full((len(best), out_len), -1, dtype=torch.long, device=device)
        for i, hist in enumerate(best_history):
            beam_indices[i, : len(hist)] = torch.tensor(hist, dtype=torch.long)
    return GenerateBeamDecoderOnlyOutput(
        sequences=out,
        sequences_scores=torch.tensor(best_scores, dtype=torch.float32, device=device) if want_scores else None,
        scores=tuple(keep_scores) if keep_scores is not None else None,
        logits=tuple(keep_logits) if keep_logits is not None else None, beam_indices=beam_indices,
        hidden_states=tuple(hidden_steps) if hidden_steps is not None else None, past_key_values=_cache_tuples(dec, cfg))


# ----------------------------------------------------------------------------------------------
# Public entry points
# ----------------------------------------------------------------------------------------------


def resolve_config(model_cfg_source, generation_config, kwargs) -> GenerationConfig:
    """Copy the given (or default) config, apply keyword overrides, fill CLVP's start/stop codes."""
    if generation_config is None:
        generation_config = GenerationConfig()
    elif isinstance(generation_config, dict):
        generation_config = GenerationConfig(**generation_config)
    elif not isinstance(generation_config, GenerationConfig):
        raise TypeError(f"generation_config must be a clvp GenerationConfig or a dict, got {type(generation_config).__name__}")
    cfg = generation_config.copy()
    unused = cfg.update(**kwargs)
    if unused:
        raise TypeError(f"unknown generation arguments: {', '.join(sorted(unused))}")
    dc = model_cfg_source
    if cfg.bos_token_id is None:
        cfg.bos_token_id = dc.bos_token_id
    if cfg.eos_token_id is None:
        cfg.eos_token_id = dc.eos_token_id
    cfg.validate()
    for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
        value = getattr(cfg, name)
        if value is not None and value >= dc.vocab_size:
            raise ValueError(f"{name}={value} is outside the decoder's vocabulary (allowed 0..{dc.vocab_size - 1})")
    bad = [t for t in cfg.suppress_tokens or [] if t >= dc.vocab_size]
    if bad:
        raise ValueError(f"suppress_tokens holds code {bad[0]}, outside the decoder's vocabulary (allowed 0..{dc.vocab_size - 1})")
    return cfg


def composite_config(model, generation_config, kwargs) -> GenerationConfig:
    """``resolve_config`` for the composite model's decoder, never sampling the start code: the
    speech encoder has no row for it (8192), so a sampled start code would make the CLVP scoring
    fail (transformers crashes there instead)."""
    cfg = resolve_config(model.config.decoder_config, generation_config, kwargs)
    if cfg.output_attentions:
        raise ValueError("output_attentions=True is not supported by the composite model's generate (it returns a "
                         "ClvpOutput); call speech_decoder_model.generate or forward(output_attentions=True)")
    if cfg.bos_token_id is not None and cfg.bos_token_id >= model.config.speech_config.vocab_size:
        cfg.suppress_tokens = sorted(set(cfg.suppress_tokens or []) | {cfg.bos_token_id})
    return cfg


def _check_generator(cfg: GenerationConfig, device: torch.device) -> None:
    if cfg.generator is not None:
        if not isinstance(cfg.generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(cfg.generator).__name__}")
        if torch.device(cfg.generator.device).type != device.type:
            raise ValueError(
                f"the generator is on {cfg.generator.device} but the model is on {device}; "
                f"create it with torch.Generator(device={str(device)!r})"
            )
    elif cfg.seed is not None:
        cfg.generator = torch.Generator(device=device).manual_seed(int(cfg.seed))


def _new_tokens(cfg: GenerationConfig, ids_len: int) -> int:
    if cfg.max_new_tokens is not None:
        return cfg.max_new_tokens
    if ids_len >= cfg.max_length:
        raise ValueError(f"the input is {ids_len} ids long but max_length is {cfg.max_length}; set max_new_tokens instead")
    return cfg.max_length - ids_len


def plan_generation(lm_config, cfg: GenerationConfig, prompt_len: int, from_embeds: bool):
    """Check a request against the position tables before any work; return (new codes, position
    of the k-th fed-back code). ``prompt_len``: the prompt embeddings (start code included) when
    ``from_embeds``, else the number of input ids."""
    dc = lm_config
    if prompt_len > dc.max_position_embeddings:
        raise ValueError(f"the prompt ({prompt_len} positions) exceeds the decoder's {dc.max_position_embeddings} positions")
    if from_embeds:
        if cfg.max_new_tokens is not None:
            new = cfg.max_new_tokens
        else:  # transformers counts the prompt embeddings against max_length, and the start code too
            new = cfg.max_length - prompt_len - 1
            if new < 1:
                raise ValueError(
                    f"max_length={cfg.max_length} leaves no room for new codes after the {prompt_len} prompt embeddings "
                    f"and the start code; set max_new_tokens instead"
                )
        fed = lambda k: _positions_for(cfg, k)  # noqa: E731
    else:
        new = _new_tokens(cfg, prompt_len)
        fed = lambda k: prompt_len + k - 1  # noqa: E731  plain GPT-2 continuation
    last_pos = fed(new - 1) if new > 1 else 0
    if last_pos >= dc.max_position_embeddings:
        # fed(k) = fed(0) + k, so fed(k - 1) < P holds up to k = P - fed(0): closed form, constant time
        limit = max(1, min(new, dc.max_position_embeddings - fed(0)))
        raise ValueError(
            f"max_new_tokens={new} would need mel position {last_pos}, past the decoder's "
            f"{dc.max_position_embeddings} positions; at most {limit} new codes fit"
        )
    return new, fed


def _effective(cfg: GenerationConfig, prompt_len: int, from_embeds: bool) -> GenerationConfig:
    """transformers also counts prompt embeddings against ``min_length`` (when min_new_tokens is unset)."""
    if from_embeds and cfg.min_new_tokens is None and cfg.min_length:
        cfg = cfg.copy()
        cfg.min_length = max(cfg.min_length - prompt_len, 0)
    return cfg


def decoder_generate(lm, *, input_ids=None, conditioning_embeds=None, cfg: GenerationConfig):
    """``ClvpForCausalLM.generate``: from text/code ids, or from conditioning embeddings (the CLVP prompt)."""
    dc = lm.config
    device = lm.final_norm.weight.device
    _check_generator(cfg, device)
    dec = lm.model.decoder
    if conditioning_embeds is not None and input_ids is not None:
        raise ValueError("pass input_ids or conditioning_embeds, not both")
    if conditioning_embeds is not None:
        if conditioning_embeds.dim() != 3 or conditioning_embeds.shape[-1] != dc.hidden_size:
            raise ValueError(f"conditioning_embeds must be (batch, len, {dc.hidden_size}), got {tuple(conditioning_embeds.shape)}")
        length = conditioning_embeds.shape[1] + 1
        new, fed = plan_generation(dc, cfg, length, from_embeds=True)
        b = conditioning_embeds.shape[0]
        start = torch.full((b, 1), cfg.bos_token_id, dtype=torch.long, device=device)
        # the prompt E = [conditioning, emb(start) + pos(0)], entered as (E - pos) + pos as transformers does
        e_start = dec.input_embeds_layer(start) + dec.position_embeds_layer(torch.zeros_like(start))
        e = torch.cat([conditioning_embeds.to(e_start.dtype), e_start], dim=1)  # (B, L, C)
        p = dec.position_embeds_layer(torch.arange(length, device=device))[None]
        x = (e - p) + p
        cfg = _effective(cfg, length, from_embeds=True)
    else:
        if input_ids is None:  # transformers starts from the start code alone: (batch=1, 1)
            input_ids = torch.full((1, 1), cfg.bos_token_id, dtype=torch.long, device=device)
        check_ids_input(input_ids, "input_ids", dc.vocab_size)  # the core's embed reads no values
        b, length = input_ids.shape
        new, fed = plan_generation(dc, cfg, length, from_embeds=False)
        start = input_ids.to(device)
        x = dec.embed(input_ids=start)
    n_ret = cfg.num_return_sequences
    if cfg.num_beams > 1:
        x = x.repeat_interleave(cfg.num_beams, dim=0)
        start = start.repeat_interleave(cfg.num_beams, dim=0)
        return _beam_search(lm, x, start, cfg, new, fed, cfg.output_hidden_states)
    if n_ret > 1:
        x = x.repeat_interleave(n_ret, dim=0)
        start = start.repeat_interleave(n_ret, dim=0)
    return _sample_or_greedy(lm, x, start, cfg, new, fed, cfg.output_hidden_states)


@torch.no_grad()
def generate_speech_ids(model, *, input_ids=None, input_features=None, conditioning_encoder_inputs_embeds=None,
                        attention_mask=None, generation_config=None, **kwargs) -> torch.Tensor:
    """Conditioning + decoder generation for a composite ``model``; returns raw ids (start code first), unfixed."""
    cfg = composite_config(model, generation_config, kwargs)
    validate_request(model, cfg, input_ids, conditioning_encoder_inputs_embeds, input_features=input_features,
                     attention_mask=attention_mask)
    prompt, _, _ = model.build_prompt(input_ids, input_features, attention_mask,
                                      inputs_embeds=conditioning_encoder_inputs_embeds)
    check_stage(prompt, "the conditioning prompt (conditioning encoder output)")
    return decoder_generate(model.speech_decoder_model, conditioning_embeds=prompt, cfg=cfg).sequences


def validate_request(model, cfg, input_ids=None, inputs_embeds=None, *, input_features=None, attention_mask=None):
    """Every check of a composite generation request that needs no model output, before any work."""
    device = model.speech_decoder_model.final_norm.weight.device
    _check_generator(cfg, device)
    config = model.config
    if input_ids is not None and inputs_embeds is not None:
        raise ValueError("pass input_ids or conditioning_encoder_inputs_embeds, not both")
    if input_ids is None and inputs_embeds is None:
        raise ValueError("input_ids (the tokenized text) are required")
    check_ids_input(input_ids, "input_ids", config.text_config.vocab_size)
    if input_ids is not None:
        check_mask_input(attention_mask, input_ids.shape)
    check_embeds_input(inputs_embeds, "conditioning_encoder_inputs_embeds", config.decoder_config.hidden_size)
    if input_features is None:
        raise ValueError("input_features (the log-mel of the reference voice) are required to generate speech")
    check_features_input(input_features, config.decoder_config.feature_size)
    if input_ids is not None:
        limit = model.config.decoder_config.max_text_tokens - 3
        if input_ids.shape[-1] > limit:
            raise ValueError(
                f"the text is {input_ids.shape[-1]} tokens long; the decoder allows at most {limit} "
                f"(max_text_tokens {model.config.decoder_config.max_text_tokens} minus 3 for the added bos/eos): split the text"
            )
        # prompt: conditioning latent, bos, T text ids, 2 eos, start code
        plan_generation(model.config.decoder_config, cfg, input_ids.shape[-1] + 5, from_embeds=True)
    elif inputs_embeds is not None:
        plan_generation(model.config.decoder_config, cfg, inputs_embeds.shape[1] + 2, from_embeds=True)


def replay_attentions(lm, sequences: torch.Tensor, prompt_len: int) -> tuple:
    """transformers' per-step attentions of a greedy or sampled ``ClvpForCausalLM`` run, recomputed
    with its eager forward (the decode kernels never materialise them): step 0 is the prompt, per
    layer (B, H, L, L); step k the k-th fed-back code, (B, H, 1, L + k)."""
    out = lm(input_ids=sequences[:, :prompt_len], use_cache=True, output_attentions=True, return_dict=True)
    steps, past = [out.attentions], out.past_key_values
    for k in range(1, sequences.shape[1] - prompt_len):
        out = lm(input_ids=sequences[:, prompt_len + k - 1: prompt_len + k], past_key_values=past, use_cache=True,
                 output_attentions=True, return_dict=True)
        steps.append(out.attentions)
        past = out.past_key_values
    return tuple(steps)


def generation_config_text(cfg: GenerationConfig, codes_config, derived_from) -> str:
    """generation_config.json as transformers writes it: derived from the model config
    (``_from_model_config``, with ``derived_from``'s codes: transformers takes the composite's from
    its text config) while ``cfg`` holds just ``codes_config``'s start/stop codes; else the fields
    that differ from the defaults."""
    if cfg == GenerationConfig(bos_token_id=codes_config.bos_token_id, eos_token_id=codes_config.eos_token_id):
        data = {"_from_model_config": True, "bos_token_id": derived_from.bos_token_id,
                "eos_token_id": derived_from.eos_token_id}
    else:
        data = cfg.to_diff_dict()
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def read_generation_config(path) -> Optional[GenerationConfig]:
    """A generation_config.json changed by its author, as a GenerationConfig; None for one derived
    from the model config (``_from_model_config``): then the decoder config's codes apply."""
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None
    if isinstance(data, dict) and data.get("_from_model_config"):
        return None
    return GenerationConfig.from_file_dict(data, str(path))
