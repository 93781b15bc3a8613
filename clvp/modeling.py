"""CLVP in PyTorch: text/speech encoders, conditioning encoder, GPT-2-style decoder, composite model.

State-dict keys and shapes are exactly transformers' (docs/model.md §1.2-1.3), so Hugging Face
checkpoints load unchanged. The attention goes through ``kernels`` (Triton on CUDA, eager torch
otherwise). CLVP quirks kept on purpose, each marked "quirk" below: rotary on q, k *and* v with a
partial width derived from ``projection_dim``; mean pooling over padded positions; two LayerNorms
before the LM head; GPT-2 Conv1D weights stored (in, out). Section numbers (§) in this file refer
to docs/model.md.

Precision: rotary angles, softmax and norm statistics run in float32 whatever the weights' dtype.
"""
from __future__ import annotations

import functools
import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from . import kernels

from .configuration import ClvpConfig, ClvpDecoderConfig, ClvpEncoderConfig
from .loading import PreTrainedMixin
from .outputs import (
    BaseModelOutputWithPastAndCrossAttentions,
    CausalLMOutputWithCrossAttentions,
    ClvpEncoderOutput,
    ClvpOutput,
)

_ACT = {
    "gelu": lambda x: F.gelu(x),
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
    "tanh": torch.tanh,
    "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),
}


def check_ids(ids: torch.Tensor, vocab_size: int, what: str) -> None:
    """Raise a ValueError (not an IndexError from inside torch) for ids outside ``[0, vocab_size)``."""
    if ids.dtype.is_floating_point or ids.dtype == torch.bool:
        raise TypeError(f"{what} must be an integer tensor, got dtype {ids.dtype}")
    if ids.numel() == 0:
        raise ValueError(f"{what} is empty")
    lo, hi = int(ids.min()), int(ids.max())
    if lo < 0 or hi >= vocab_size:
        bad = lo if lo < 0 else hi
        raise ValueError(f"{what} contains id {bad}, outside the vocabulary of size {vocab_size} (allowed 0..{vocab_size - 1})")


def _key_padding_mask(attention_mask: Optional[torch.Tensor], batch: int, length: int) -> Optional[torch.Tensor]:
    """Validate a (B, T) 0/1 mask; None when it masks nothing (the fast path)."""
    if attention_mask is None:
        return None
    if attention_mask.shape != (batch, length):
        raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)}, expected (batch, seq_len) = {(batch, length)}")
    keep = attention_mask.bool()
    if bool(keep.all()):
        return None
    if not bool(keep.any(dim=-1).all()):
        raise ValueError("every row of attention_mask needs at least one 1 (a row that masks all tokens has no output)")
    return keep


# ----------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------


class ClvpRMSNorm(nn.Module):
    """``w * x * rsqrt(mean(x^2) + eps)`` with float32 statistics (transformers' formula, §2.3)."""

    def __init__(self, hidden_size: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.square().mean(-1, keepdim=True) + self.variance_epsilon)
        return self.weight * xf.to(x.dtype)


class ClvpRotaryPositionalEmbedding(nn.Module):
    """Rotary angles. ``inv_freq`` is a persistent buffer (it is in the checkpoint) kept in float32
    even after ``model.to(bfloat16)``: rounded frequencies give angle errors of ~0.25 rad at t≈500."""

    def __init__(self, config: ClvpEncoderConfig):
        super().__init__()
        dim = config.rotary_dim  # quirk: from projection_dim, not head_dim (§2.1)
        inv_freq = 1.0 / (10000 ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
        self.register_buffer("inv_freq", inv_freq)  # (dim / 2,)

    def _exact(self, device) -> torch.Tensor:
        dim = 2 * self.inv_freq.numel()
        return (1.0 / (10000 ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))).to(device)

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        if self.inv_freq.dtype != torch.float32 and not self.inv_freq.is_meta:
            self.inv_freq = self._exact(self.inv_freq.device)  # recompute rather than upcast rounded values
        return self

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if self.inv_freq.dtype != torch.float32 and not self.inv_freq.is_meta:
            # a checkpoint saved in bfloat16 / float16 carries rounded frequencies
            self.inv_freq = self._exact(self.inv_freq.device)

    def forward(self, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """position_ids (..., T) -> cos, sin (..., T, rotary_dim) float32."""
        freqs = position_ids.to(torch.float32)[..., None] * self.inv_freq.float()  # (..., T, dim/2)
        emb = torch.cat((freqs, freqs), dim=-1)  # (..., T, dim)
        return emb.cos(), emb.sin()


@functools.lru_cache(maxsize=None)
def _emulated_half(dtype: torch.dtype) -> bool:
    """True when this CPU has no native matrix instructions for ``dtype`` (bf16 / fp16)."""
    from .loading import cpu_has_fast_half

    return dtype in (torch.bfloat16, torch.float16) and not cpu_has_fast_half(dtype)


# Below this many rows a product is a weight stream (decode steps): torch's half-precision path then
# wins even when emulated (it reads half the bytes), while an upcast copies every weight to float32.
_UPCAST_MIN_ROWS = 32

# Up to this many rows a float32 CPU product runs as ``W @ x.T`` (the weight as the left operand):
# MKL then takes a faster path (apparently no per-call packing of the weight), 1.5-3.5x faster than
# ``x @ W.T`` for 2 to 64 rows on the development CPU (2-core AMD EPYC, torch 2.13: 4.9 -> 12.8 GB/s of weights at
# 4 rows), and no slower at 1; above ~96 rows the usual order wins. Decode steps are such products.
_WEIGHT_LEFT_MAX_ROWS = 64


def _upcast_product(rows: int, x: torch.Tensor, weight: torch.Tensor) -> bool:
    # On such CPUs torch emulates half-precision products ~100x slower than float32: keep the
    # half-precision storage but multiply in float32 (a copy of the weight per call, still far faster).
    return (x.device.type == "cpu" and weight.dtype == x.dtype and _emulated_half(x.dtype)
            and rows >= _UPCAST_MIN_ROWS)


def _affine(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """``x @ weight.T + bias`` for x (..., in), weight (out, in) (any strides), bias (out,) or None.

    Returns (..., out) contiguous, in x's dtype. Picks the fastest CPU formulation (see above);
    on other devices it is ``F.linear``.
    """
    x2 = x.reshape(-1, x.shape[-1])  # (rows, in)
    rows = x2.shape[0]
    if _upcast_product(rows, x, weight):
        out = F.linear(x2.float(), weight.float(), None if bias is None else bias.float()).to(x.dtype)
    elif x.device.type == "cpu" and x.dtype == torch.float32 and 0 < rows <= _WEIGHT_LEFT_MAX_ROWS:
        x2 = x2.contiguous()  # x2.t() must be a transposed view: a column-major copy is 3x slower
        out_t = torch.mm(weight, x2.t()) if bias is None else torch.addmm(bias[:, None], weight, x2.t())  # (out, rows)
        out = out_t.t().contiguous()  # (rows, out); the next product needs it row-major to take this path
    else:
        out = F.linear(x2, weight, bias)
    return out.view(*x.shape[:-1], weight.shape[0])


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters and state-dict keys) with the CPU choices of ``_affine``:
    float32 products when the CPU would emulate half precision, and small-batch operand order."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _affine(x, self.weight, self.bias)


def _contiguous_weight(module, state_dict, prefix, local_metadata):
    key = prefix + "weight"
    if key in state_dict:
        state_dict[key] = state_dict[key].contiguous()


class Conv1D(nn.Module):
    """GPT-2's Conv1D: a linear layer whose weight is stored (in, out); ``y = x @ W + b``."""

    def __init__(self, nf: int, nx: int):
        super().__init__()
        self.nf = nf
        # (in, out) as in the checkpoint, but column-major (memory (out, in), nn.Linear's): oneDNN's
        # half-precision CPU product is ~45x slower with a row-major (K, N) operand (4 rows, AVX2), and the
        # small-batch float32 order of ``_affine`` wants the (out, in) rows contiguous
        self.weight = nn.Parameter(torch.empty(nf, nx).t())
        self.bias = nn.Parameter(torch.zeros(nf))
        self._register_state_dict_hook(_contiguous_weight)  # state_dict() stays saveable as-is (safetensors)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "weight"
        if key in state_dict and state_dict[key].dim() == 2:  # keep the column-major layout, assign=True too
            state_dict[key] = state_dict[key].t().contiguous().t()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _affine(x, self.weight.t(), self.bias)


class ClvpSelfAttention(nn.Module):
    """Multi-head attention shared by the encoders (rotary, padding mask), the conditioning encoder
    (no rotary, no mask) and the decoder (causal, KV cache). State-dict keys: q/k/v/out_proj."""

    def __init__(self, config):
        super().__init__()
        self.embed_dim = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.head_dim = self.embed_dim // self.num_heads
        self.scale = self.head_dim**-0.5
        self.dropout = config.attention_dropout
        bias = config.use_attention_bias
        self.k_proj = Linear(self.embed_dim, self.embed_dim, bias=bias)
        self.v_proj = Linear(self.embed_dim, self.embed_dim, bias=bias)
        self.q_proj = Linear(self.embed_dim, self.embed_dim, bias=bias)
        self.out_proj = Linear(self.embed_dim, self.embed_dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, T, D), a view

    def _merge(self, x: torch.Tensor) -> torch.Tensor:
        b, _, t, _ = x.shape
        return self.out_proj(x.transpose(1, 2).reshape(b, t, self.embed_dim))

    def qkv(self, x: torch.Tensor):
        return self._heads(self.q_proj(x)), self._heads(self.k_proj(x)), self._heads(self.v_proj(x))

    def forward_bidirectional(self, x, cos=None, sin=None, key_padding_mask=None):
        """Encoder / conditioning attention through ``kernels.rotary_attention``. x (B, T, C)."""
        q, k, v = self.qkv(x)
        out = kernels.rotary_attention(q, k, v, cos, sin, key_padding_mask, scale=self.scale)  # (B, H, T, D)
        return self._merge(out)

    def forward_explicit(self, x, cos=None, sin=None, additive_mask=None, past_key_value=None, head_mask=None):
        """The slow path that materialises the probabilities (``output_attentions`` / ``head_mask``),
        and the decoder's HF-style tuple cache. Returns (out, probs, (k, v))."""
        q, k, v = self.qkv(x)
        if past_key_value is not None:
            k = torch.cat((past_key_value[0], k), dim=-2)
            v = torch.cat((past_key_value[1], v), dim=-2)
        present = (k, v)
        if cos is not None:
            q, k, v = (kernels.apply_rotary_ref(t, cos, sin) for t in (q, k, v))
        scores = torch.matmul(q.float(), k.float().transpose(-1, -2)) * self.scale  # (B, H, Tq, Tk)
        if additive_mask is not None:
            scores = scores + additive_mask
        probs = scores.softmax(-1)
        if head_mask is not None:
            probs = probs * head_mask
        probs = F.dropout(probs, p=self.dropout, training=self.training)
        out = torch.matmul(probs.to(v.dtype), v)
        return self._merge(out), probs.to(x.dtype), present


class ClvpEncoderMLP(nn.Module):
    """GLU feed-forward: ``fc2(a * gelu(g))`` with ``[a | g] = fc1.proj(x)`` (first half value, second gate)."""

    def __init__(self, config: ClvpEncoderConfig):
        super().__init__()
        self.fc1 = nn.Module()
        self.fc1.proj = Linear(config.hidden_size, config.intermediate_size * 2)
        self.fc2 = Linear(config.intermediate_size, config.hidden_size)
        self.act = _ACT[config.hidden_act]
        self.dropout = config.dropout

    def forward(self, x):
        a, g = self.fc1.proj(x).chunk(2, dim=-1)
        h = a * self.act(g)
        if self.training:
            h = F.dropout(h, p=self.dropout)
        return self.fc2(h)


class ClvpEncoderLayer(nn.Module):
    def __init__(self, config: ClvpEncoderConfig):
        super().__init__()
        self.self_attn = ClvpSelfAttention(config)
        self.mlp = ClvpEncoderMLP(config)
        self.input_rmsnorm = ClvpRMSNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_attention_rmsnorm = ClvpRMSNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x, cos, sin, key_padding_mask=None, additive_mask=None, output_attentions=False):
        h = self.input_rmsnorm(x)
        probs = None
        if output_attentions:
            attn, probs, _ = self.self_attn.forward_explicit(h, cos, sin, additive_mask)
        else:
            attn = self.self_attn.forward_bidirectional(h, cos, sin, key_padding_mask)
        x = x + attn
        x = x + self.mlp(self.post_attention_rmsnorm(x))
        return x, probs


class ClvpDecoderMLP(nn.Module):
    def __init__(self, inner_dim: int, config: ClvpDecoderConfig):
        super().__init__()
        self.c_fc = Conv1D(inner_dim, config.hidden_size)
        self.c_proj = Conv1D(config.hidden_size, inner_dim)
        self.act = _ACT[config.activation_function]
        self.dropout = config.resid_pdrop

    def forward(self, x):
        h = self.c_proj(self.act(self.c_fc(x)))
        return F.dropout(h, p=self.dropout) if self.training else h


class ClvpDecoderLayer(nn.Module):
    def __init__(self, config: ClvpDecoderConfig):
        super().__init__()
        self.input_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_epsilon)
        self.attn = ClvpSelfAttention(config)
        self.post_attention_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_epsilon)
        self.mlp = ClvpDecoderMLP(config.inner_dim, config)

    def _mlp_block(self, x):
        return x + self.mlp(self.post_attention_layernorm(x))

    def forward(self, x, past_key_value=None, additive_mask=None, head_mask=None, output_attentions=False):
        """HF-style forward. ``additive_mask`` (B, 1, Tq, Tk) float or None for plain causal."""
        h = self.input_layernorm(x)
        probs = None
        if output_attentions or head_mask is not None or additive_mask is not None or past_key_value is not None:
            if additive_mask is None:
                additive_mask = _causal_additive_mask(x.shape[1], past_key_value, x.device)
            attn, probs, present = self.attn.forward_explicit(
                h, additive_mask=additive_mask, past_key_value=past_key_value, head_mask=head_mask
            )
        else:  # fast path: plain causal attention without a past
            q, k, v = self.attn.qkv(h)
            present = (k, v)
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.attn.scale)
            attn = self.attn._merge(out)
        return self._mlp_block(x + attn), present, (probs if output_attentions else None)

    def forward_cached(self, x, k_cache, v_cache, start: int, lengths: Optional[torch.Tensor]):
        """Prefill into a static cache: x (B, T, C), causal attention over the T prompt tokens, whose
        keys/values are written into ``k_cache``/``v_cache`` (B, H, T_max, D) at ``[0, T)``."""
        if start != 0:
            raise ValueError("forward_cached is the prefill (start 0); decode steps use forward_step")
        h = self.input_layernorm(x)
        q, k, v = self.attn.qkv(h)  # (B, H, T, D)
        t = x.shape[1]
        k_cache[:, :, :t].copy_(k)
        v_cache[:, :, :t].copy_(v)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.attn.scale)
        return self._mlp_block(x + self.attn._merge(out))


    def forward_step(self, x, k_cache, v_cache, slot: torch.Tensor, lengths: torch.Tensor):
        """One decode step, graph-capturable: x (B, 1, C); the new key and value go to cache index
        ``slot`` (a (1,) device tensor), and attention reads each row's ``lengths`` valid entries."""
        h = self.input_layernorm(x)
        q, k, v = self.attn.qkv(h)  # (B, H, 1, D)
        k_cache.index_copy_(2, slot, k)
        v_cache.index_copy_(2, slot, v)
        out = kernels.decode_attention(q[:, :, 0], k_cache, v_cache, lengths, scale=self.attn.scale)  # (B, H, D)
        return self._mlp_block(x + self.attn._merge(out[:, :, None]))


def _causal_additive_mask(t: int, past_key_value, device, attention_mask=None, dtype=torch.float32):
    """(B|1, 1, T, past + T) additive mask: causal, plus padded keys from a (B, past + T) 0/1 mask."""
    past = 0 if past_key_value is None else past_key_value[0].shape[-2]
    total = past + t
    neg = torch.finfo(dtype).min
    i = torch.arange(t, device=device)[:, None] + past
    j = torch.arange(total, device=device)[None, :]
    mask = torch.zeros(t, total, device=device, dtype=dtype).masked_fill(j > i, neg)[None, None]
    if attention_mask is not None:
        pad = (attention_mask[:, None, None, :].to(device) == 0)
        mask = mask.masked_fill(pad, neg)
    return mask


# ----------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------


class ClvpPreTrainedModel(PreTrainedMixin, nn.Module):
    config_class = ClvpConfig

    def _init_weights(self, module):
        """transformers' initialisation (§2.8); only matters for training from scratch and demos."""
        factor = getattr(self.config, "initializer_factor", 1.0)
        if isinstance(module, (nn.Embedding,)):
            module.weight.data.normal_(mean=0.0, std=factor * 0.02)
        elif isinstance(module, (nn.Linear, Conv1D)):
            module.weight.data.normal_(mean=0.0, std=factor * 0.02)
            if module.bias is not None:
                module.bias.data.zero_()
        elif isinstance(module, ClvpEncoderMLP):
            cfg = self._encoder_config_of(module)
            in_std = (cfg.hidden_size**-0.5) * ((2 * cfg.num_hidden_layers) ** -0.5) * factor
            fc_std = (2 * cfg.hidden_size) ** -0.5 * factor
            nn.init.normal_(module.fc1.proj.weight, std=fc_std)
            nn.init.normal_(module.fc2.weight, std=in_std)
        elif isinstance(module, ClvpEncoder):
            cfg = module.config
            nn.init.normal_(module.projection.weight, std=cfg.hidden_size**-0.5 * factor)
        elif isinstance(module, ClvpConditioningEncoder):
            nn.init.normal_(module.mel_conv.weight, mean=0.0, std=factor)
            module.mel_conv.bias.data.zero_()
        elif isinstance(module, ClvpForCausalLM):
            cfg = module.config
            for name, p in module.named_parameters():
                if name.endswith("c_proj.weight"):
                    p.data.normal_(mean=0.0, std=cfg.initializer_range / math.sqrt(2 * cfg.num_hidden_layers))
        if isinstance(module, (nn.LayerNorm, nn.GroupNorm)):
            module.bias.data.zero_()
            module.weight.data.fill_(1.0)

    def _encoder_config_of(self, mlp):
        for enc in self.modules():
            if isinstance(enc, ClvpEncoder) and any(m is mlp for m in enc.modules()):
                return enc.config
        raise RuntimeError("encoder MLP outside an encoder")

    def post_init(self):
        # children first, so a parent's rule (e.g. c_proj's smaller std) wins, as in transformers
        for module in reversed(list(self.modules())):
            self._init_weights(module)

    @property
    def dtype(self) -> torch.dtype:
        return next(p.dtype for p in self.parameters() if p.is_floating_point())

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device


class ClvpEncoder(ClvpPreTrainedModel):
    """The CLVP text or speech encoder: embeddings, 20 pre-norm rotary layers, LayerNorm, mean pool,
    projection. ``forward(...)[0]`` is the unnormalised embedding (B, projection_dim)."""

    config_class = ClvpEncoderConfig

    def __init__(self, config: ClvpEncoderConfig, *, init_weights: bool = True):
        super().__init__()
        self.config = config
        self.token_embedding = nn.Embedding(config.vocab_size, config.hidden_size)
        self.rotary_pos_emb = ClvpRotaryPositionalEmbedding(config) if config.use_rotary_embedding else None
        self.layers = nn.ModuleList([ClvpEncoderLayer(config) for _ in range(config.num_hidden_layers)])
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.projection = Linear(config.hidden_size, config.projection_dim, bias=False)
        if init_weights:
            self.post_init()

    def get_input_embeddings(self):
        return self.token_embedding

    def set_input_embeddings(self, value):
        self.token_embedding = value

    def forward(
        self,
        input_ids: Optional[torch.LongTensor] = None,
        inputs_embeds: Optional[torch.FloatTensor] = None,
        attention_mask: Optional[torch.LongTensor] = None,
        position_ids: Optional[torch.LongTensor] = None,
        output_attentions: Optional[bool] = None,
        output_hidden_states: Optional[bool] = None,
        return_dict: Optional[bool] = None,
    ):
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        if input_ids is not None:
            if input_ids.dim() != 2:
                raise ValueError(f"input_ids must be (batch, seq_len), got shape {tuple(input_ids.shape)}")
            check_ids(input_ids, self.config.vocab_size, "input_ids")
            x = self.token_embedding(input_ids)  # (B, T, C)
        else:
            if inputs_embeds.dim() != 3 or inputs_embeds.shape[-1] != self.config.hidden_size:
                raise ValueError(
                    f"inputs_embeds must be (batch, seq_len, {self.config.hidden_size}), got {tuple(inputs_embeds.shape)}"
                )
            x = inputs_embeds
        b, t, _ = x.shape
        keep = _key_padding_mask(attention_mask, b, t)

        cos = sin = None
        if self.rotary_pos_emb is not None:
            if position_ids is None:
                cos, sin = self.rotary_pos_emb(torch.arange(t, device=x.device))  # (T, R)
            else:
                position_ids = position_ids.reshape(-1, t)
                if position_ids.shape[0] == 1 or bool((position_ids == position_ids[:1]).all()):
                    cos, sin = self.rotary_pos_emb(position_ids[0])
                else:  # per-row positions: the (B, 1, T, R) tables broadcast in the eager path
                    cos, sin = self.rotary_pos_emb(position_ids[:, None, :])
        additive = None
        if output_attentions and keep is not None:
            additive = torch.zeros(b, 1, 1, t, device=x.device).masked_fill(~keep[:, None, None, :], torch.finfo(torch.float32).min)

        all_hidden = [] if output_hidden_states else None
        all_attn = [] if output_attentions else None
        per_row = cos is not None and cos.dim() == 4
        for layer in self.layers:
            if all_hidden is not None:
                all_hidden.append(x)
            if per_row and not output_attentions:
                h = layer.input_rmsnorm(x)
                q, k, v = (kernels.apply_rotary_ref(z, cos, sin) for z in layer.self_attn.qkv(h))
                out = kernels.rotary_attention(q, k, v, None, None, keep, scale=layer.self_attn.scale)
                x = x + layer.self_attn._merge(out)
                x = x + layer.mlp(layer.post_attention_rmsnorm(x))
                probs = None
            else:
                x, probs = layer(x, cos, sin, keep, additive, bool(output_attentions))
            if all_attn is not None:
                all_attn.append(probs)
        if all_hidden is not None:
            all_hidden.append(x)
        last = self.final_layer_norm(x)
        pooled = last.mean(dim=1)  # quirk: over all positions, padded ones included (§2.4)
        embeds = self.projection(pooled)
        hidden = tuple(all_hidden) if all_hidden is not None else None
        attns = tuple(all_attn) if all_attn is not None else None
        if return_dict is False:
            return tuple(v for v in (embeds, last, pooled, hidden, attns) if v is not None)
        return ClvpEncoderOutput(embeds=embeds, last_hidden_state=last, pooler_output=pooled, hidden_states=hidden, attentions=attns)


class ClvpConditioningEncoder(nn.Module):
    """Turns (text ids, log-mel of a reference clip) into the decoder's prompt embeddings (§2.5):
    ``[cond, temb(255)+tpos(0), temb(t1)+tpos(1), ..., temb(0)+tpos]`` with ``cond`` the first frame
    of 6 GroupNorm + attention blocks over the mel frames."""

    def __init__(self, config: ClvpConfig):
        super().__init__()
        self.text_config = config.text_config
        self.decoder_config = dc = config.decoder_config
        self.text_token_embedding = nn.Embedding(self.text_config.vocab_size, dc.hidden_size)
        self.text_position_embedding = nn.Embedding(dc.max_text_tokens, dc.hidden_size)
        self.mel_conv = nn.Conv1d(dc.feature_size, dc.hidden_size, kernel_size=1)
        groups = self.compute_groupnorm_groups(dc.hidden_size)
        self.group_norms = nn.ModuleList(
            [nn.GroupNorm(groups, dc.hidden_size, eps=1e-5, affine=True) for _ in range(dc.num_mel_attn_blocks)]
        )
        self.mel_attn_blocks = nn.ModuleList([ClvpSelfAttention(dc) for _ in range(dc.num_mel_attn_blocks)])

    @staticmethod
    def compute_groupnorm_groups(channels: int, groups: int = 32) -> int:
        """Tortoise's rule: <=16 channels -> 8 groups, <=64 -> 16, else 32; halve until it divides."""
        if channels <= 16:
            groups = 8
        elif channels <= 64:
            groups = 16
        while channels % groups != 0:
            groups = int(groups / 2)
        if groups <= 2:
            raise ValueError(f"hidden_size {channels} gives {groups} GroupNorm groups; CLVP needs more than 2")
        return groups

    def mel_latent(self, input_features: torch.Tensor) -> torch.Tensor:
        """input_features (B, feature_size, T_mel) -> (B, hidden): the first frame after the blocks."""
        dc = self.decoder_config
        if input_features.dim() != 3 or input_features.shape[1] != dc.feature_size:
            raise ValueError(
                f"input_features must be (batch, {dc.feature_size}, frames), got {tuple(input_features.shape)}"
            )
        if not input_features.is_floating_point():
            raise TypeError(f"input_features must be a float tensor, got {input_features.dtype}")
        dtype = self.mel_conv.weight.dtype
        h = self.mel_conv(input_features.to(dtype))  # (B, C, T)
        for norm, attn in zip(self.group_norms, self.mel_attn_blocks):
            # GroupNorm in float32 (Tortoise's GroupNorm32)
            n = F.group_norm(h.float(), norm.num_groups, norm.weight.float(), norm.bias.float(), norm.eps).to(dtype)
            h = h + attn.forward_bidirectional(n.transpose(1, 2)).transpose(1, 2)
        return h[:, :, 0]

    def text_embeds(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor]) -> torch.Tensor:
        check_ids(input_ids, self.text_config.vocab_size, "input_ids")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        ids, mask = pad_extra_bos_eos_tokens(
            input_ids, attention_mask, bos_token_id=self.text_config.bos_token_id, eos_token_id=self.text_config.eos_token_id
        )
        positions = mask.long().cumsum(-1) - 1
        if int(positions.max()) >= self.decoder_config.max_text_tokens:
            raise ValueError(
                f"text of {ids.shape[1]} tokens (with the added bos/eos) exceeds the conditioning encoder's "
                f"{self.decoder_config.max_text_tokens} text positions"
            )
        return self.text_token_embedding(ids) + self.text_position_embedding(positions)

    def forward(self, input_features, input_ids=None, inputs_embeds=None, attention_mask=None):
        if input_ids is not None and inputs_embeds is not None:
            raise ValueError("pass input_ids or inputs_embeds, not both")
        if input_ids is not None:
            if input_ids.dim() != 2:
                raise ValueError(f"input_ids must be (batch, seq_len), got shape {tuple(input_ids.shape)}")
            text = self.text_embeds(input_ids, attention_mask)
        elif inputs_embeds is not None:
            text = inputs_embeds  # already embedded (positions included); fixes transformers' crash (§6.1.8)
        else:
            raise ValueError("pass input_ids or inputs_embeds")
        mel = self.mel_latent(input_features)[:, None, :]  # (B, 1, C)
        text = text.to(mel.dtype)
        if text.shape[0] == 1 and mel.shape[0] != 1:
            text = text.expand(mel.shape[0], -1, -1)
        elif text.shape[0] != 1 and mel.shape[0] == 1:
            mel = mel.expand(text.shape[0], -1, -1)
        elif text.shape[0] != mel.shape[0]:
            raise ValueError(
                f"the number of texts and of audios must match (or one of them be 1); got {text.shape[0]} texts and {mel.shape[0]} audios"
            )
        return torch.cat([mel, text], dim=1)  # (B, 1 + T_text + 2, C)


def pad_extra_bos_eos_tokens(input_ids, attention_mask=None, pad_token_id=0, bos_token_id=255, eos_token_id=0,
                             add_bos_token=True, add_eos_token=True):
    """transformers' ``_pad_extra_bos_eos_tokens`` (§2.5), vectorised: prepend bos; insert eos at the
    first pad position (or append it); the mask gets one leading 1 per added token."""
    if add_bos_token:
        input_ids = F.pad(input_ids, (1, 0), value=bos_token_id)
        attention_mask = F.pad(attention_mask, (1, 0), value=1) if attention_mask is not None else None
    if add_eos_token:
        b, t = input_ids.shape
        is_pad = input_ids == pad_token_id
        first_pad = torch.where(is_pad.any(-1), is_pad.int().argmax(-1), torch.full((b,), t, device=input_ids.device))
        cols = torch.arange(t + 1, device=input_ids.device)[None, :]
        src = cols - (cols > first_pad[:, None]).long()  # shift right after the insertion point
        out = torch.gather(F.pad(input_ids, (0, 1)), 1, src.clamp(max=t))
        input_ids = torch.where(cols == first_pad[:, None], torch.full_like(out, eos_token_id), out)
        attention_mask = F.pad(attention_mask, (1, 0), value=1) if attention_mask is not None else None
    return input_ids, attention_mask


class ClvpDecoder(ClvpPreTrainedModel):
    """GPT-2-style transformer over mel codes (Tortoise's ``gpt``): token + position embeddings, 30 layers, ``layer_norm``."""

    config_class = ClvpDecoderConfig

    def __init__(self, config: ClvpDecoderConfig, *, init_weights: bool = True):
        super().__init__()
        self.config = config
        self.input_embeds_layer = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position_embeds_layer = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.layers = nn.ModuleList([ClvpDecoderLayer(config) for _ in range(config.num_hidden_layers)])
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_epsilon)
        if init_weights:
            self.post_init()

    def get_input_embeddings(self):
        return self.input_embeds_layer

    def set_input_embeddings(self, value):
        self.input_embeds_layer = value

    def embed(self, input_ids=None, inputs_embeds=None, position_ids=None, past_length: int = 0, token_type_ids=None):
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        if input_ids is not None:
            if input_ids.dim() != 2:
                raise ValueError(f"input_ids must be (batch, seq_len), got shape {tuple(input_ids.shape)}")
            check_ids(input_ids, self.config.vocab_size, "input_ids")
            x = self.input_embeds_layer(input_ids)
        else:
            x = inputs_embeds
        t = x.shape[1]
        if position_ids is None:
            position_ids = torch.arange(past_length, past_length + t, device=x.device)[None]
        if int(position_ids.max()) >= self.config.max_position_embeddings or int(position_ids.min()) < 0:
            raise ValueError(
                f"position ids up to {int(position_ids.max())} exceed the decoder's {self.config.max_position_embeddings} positions"
            )
        x = x + self.position_embeds_layer(position_ids)
        if token_type_ids is not None:
            x = x + self.input_embeds_layer(token_type_ids)
        if self.training:
            x = F.dropout(x, p=self.config.embd_pdrop)
        return x

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        head_mask=None,
        past_key_values=None,
        inputs_embeds=None,
        use_cache=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
    ):
        use_cache = self.config.use_cache if use_cache is None else use_cache
        past_length = 0 if past_key_values is None else past_key_values[0][0].shape[-2]
        x = self.embed(input_ids, inputs_embeds, position_ids, past_length, token_type_ids)
        b, t, _ = x.shape
        additive = None
        if attention_mask is not None:
            if attention_mask.shape != (b, past_length + t):
                raise ValueError(
                    f"attention_mask has shape {tuple(attention_mask.shape)}, expected (batch, past + seq_len) = {(b, past_length + t)}"
                )
            if not bool(attention_mask.bool().all()):
                additive = _causal_additive_mask(t, past_key_values[0] if past_key_values else None, x.device, attention_mask)
        if head_mask is not None:
            head_mask = _expand_head_mask(head_mask, self.config.num_hidden_layers)
        presents = [] if use_cache else None
        all_hidden = [] if output_hidden_states else None
        all_attn = [] if output_attentions else None
        for i, layer in enumerate(self.layers):
            if all_hidden is not None:
                all_hidden.append(x)
            past = past_key_values[i] if past_key_values is not None else None
            x, present, probs = layer(x, past, additive, None if head_mask is None else head_mask[i], bool(output_attentions))
            if presents is not None:
                presents.append(present)
            if all_attn is not None:
                all_attn.append(probs)
        x = self.layer_norm(x)
        if all_hidden is not None:
            all_hidden.append(x)
        out = BaseModelOutputWithPastAndCrossAttentions(
            last_hidden_state=x,
            past_key_values=tuple(presents) if presents is not None else None,
            hidden_states=tuple(all_hidden) if all_hidden is not None else None,
            attentions=tuple(all_attn) if all_attn is not None else None,
        )
        return out.to_tuple() if return_dict is False else out


def _expand_head_mask(head_mask: torch.Tensor, num_layers: int) -> torch.Tensor:
    """(H,) or (L, H) 1/0 head mask -> (L, 1, H, 1, 1) (transformers' convention)."""
    if head_mask.dim() == 1:
        head_mask = head_mask[None, None, :, None, None].expand(num_layers, -1, -1, -1, -1)
    elif head_mask.dim() == 2:
        head_mask = head_mask[:, None, :, None, None]
    else:
        raise ValueError(f"head_mask must be (heads,) or (layers, heads), got shape {tuple(head_mask.shape)}")
    return head_mask.float()


class ClvpModel(ClvpPreTrainedModel):
    """The bare decoder (``self.decoder``), as transformers names it."""

    config_class = ClvpDecoderConfig

    def __init__(self, config: ClvpDecoderConfig, *, init_weights: bool = True):
        super().__init__()
        self.config = config
        self.decoder = ClvpDecoder(config, init_weights=False)
        if init_weights:
            self.post_init()

    def get_input_embeddings(self):
        return self.decoder.input_embeds_layer

    def set_input_embeddings(self, value):
        self.decoder.input_embeds_layer = value

    def get_decoder(self):
        return self.decoder

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None, head_mask=None,
                past_key_values=None, inputs_embeds=None, use_cache=None, output_attentions=None,
                output_hidden_states=None, return_dict=None):
        return self.decoder(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                            position_ids=position_ids, head_mask=head_mask, past_key_values=past_key_values,
                            inputs_embeds=inputs_embeds, use_cache=use_cache, output_attentions=output_attentions,
                            output_hidden_states=output_hidden_states, return_dict=return_dict)


class ClvpForCausalLM(ClvpPreTrainedModel):
    """Decoder + ``final_norm`` + ``lm_head`` (quirk: two LayerNorms in a row before the head, §2.6)."""

    config_class = ClvpDecoderConfig

    def __init__(self, config: ClvpDecoderConfig, *, init_weights: bool = True):
        super().__init__()
        self.config = config
        self.model = ClvpModel(config, init_weights=False)
        self.final_norm = nn.LayerNorm(config.hidden_size)
        self.lm_head = Linear(config.hidden_size, config.vocab_size, bias=True)
        if init_weights:
            self.post_init()

    def get_input_embeddings(self):
        return self.model.decoder.input_embeds_layer

    def set_input_embeddings(self, value):
        self.model.decoder.input_embeds_layer = value

    def get_output_embeddings(self):
        return None  # not tied to the input embeddings, as in transformers

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.final_norm(hidden))

    def forward(self, input_ids=None, past_key_values=None, attention_mask=None, token_type_ids=None,
                position_ids=None, head_mask=None, inputs_embeds=None, labels=None, use_cache=None,
                output_attentions=None, output_hidden_states=None, return_dict=None):
        out = self.model.decoder(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                                 position_ids=position_ids, head_mask=head_mask, past_key_values=past_key_values,
                                 inputs_embeds=inputs_embeds, use_cache=use_cache, output_attentions=output_attentions,
                                 output_hidden_states=output_hidden_states, return_dict=True)
        logits = self.logits(out.last_hidden_state)
        loss = None
        if labels is not None:
            shift_logits = logits[..., :-1, :].float()
            shift_labels = labels[..., 1:].to(logits.device)
            loss = F.cross_entropy(shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1))
        result = CausalLMOutputWithCrossAttentions(loss=loss, logits=logits, past_key_values=out.past_key_values,
                                                   hidden_states=out.hidden_states, attentions=out.attentions)
        return result.to_tuple() if return_dict is False else result

    def generate(self, input_ids=None, generation_config=None, conditioning_embeds=None, **kwargs):
        """Generate codes from ``input_ids`` or from ``conditioning_embeds`` (the CLVP prompt).

        Returns the sequences (B * num_return_sequences, T) — the start code (or the prompt ids)
        first — or, with ``return_dict_in_generate=True``, an output with ``sequences`` and
        ``hidden_states``. Arguments as ``GenerationConfig`` (see clvp/generation.py)."""
        from .generation import decoder_generate, resolve_config

        cfg = resolve_config(self.config, generation_config, kwargs)
        with torch.no_grad():
            out = decoder_generate(self, input_ids=input_ids, conditioning_embeds=conditioning_embeds, cfg=cfg)
        return out if cfg.return_dict_in_generate else out.sequences


def clvp_loss(similarity: torch.Tensor) -> torch.Tensor:
    labels = torch.arange(len(similarity), device=similarity.device)
    return (F.cross_entropy(similarity, labels) + F.cross_entropy(similarity.t(), labels)) / 2.0


class ClvpModelForConditionalGeneration(ClvpPreTrainedModel):
    """The composite model: conditioning encoder, speech decoder, text and speech encoders, ``logit_scale``."""

    config_class = ClvpConfig

    def __init__(self, config: ClvpConfig, *, init_weights: bool = True):
        super().__init__()
        if not isinstance(config, ClvpConfig):
            raise TypeError(f"config must be a ClvpConfig, got {type(config).__name__}")
        self.config = config
        self.conditioning_encoder = ClvpConditioningEncoder(config)
        self.speech_decoder_model = ClvpForCausalLM(config.decoder_config, init_weights=False)
        self.text_encoder_model = ClvpEncoder(config.text_config, init_weights=False)
        self.speech_encoder_model = ClvpEncoder(config.speech_config, init_weights=False)
        self.logit_scale = nn.Parameter(torch.tensor(float(config.logit_scale_init_value)))
        if init_weights:
            self.post_init()
            self.logit_scale.data.fill_(float(config.logit_scale_init_value))

    def fix_speech_decoder_output(self, speech_ids: torch.LongTensor) -> torch.LongTensor:
        """Tortoise's ``fix_autoregressive_output`` (§3.3): drop the start column, replace the stop
        code and everything after it by the filler code, and end stopped rows with the fixing codes."""
        if not isinstance(speech_ids, torch.Tensor) or speech_ids.dim() != 2:
            raise TypeError("speech_ids must be a (batch, seq_len) integer tensor")
        fix = self.config.decoder_config.decoder_fixing_codes
        stop = self.speech_decoder_model.config.eos_token_id
        ids = speech_ids[:, 1:].clone()
        if ids.shape[1] == 0:
            return ids
        is_stop = ids == stop
        has_stop = is_stop.any(-1)  # (B,)
        first = torch.where(has_stop, is_stop.int().argmax(-1), torch.full_like(has_stop, ids.shape[1], dtype=torch.long))
        cols = torch.arange(ids.shape[1], device=ids.device)[None, :]
        ids = ids.masked_fill(cols >= first[:, None], fix[0])
        tail = torch.tensor(fix[1:], device=ids.device, dtype=ids.dtype)[-min(3, ids.shape[1]):]
        ids[:, -tail.numel():] = torch.where(has_stop[:, None], tail[None, :], ids[:, -tail.numel():])
        return ids

    def _check_speech_ids(self, speech_ids):
        check_ids(speech_ids, self.config.speech_config.vocab_size, "speech_ids")

    def get_text_features(self, input_ids=None, text_encoder_inputs_embeds=None, attention_mask=None):
        """Unnormalised text embeddings (B, projection_dim)."""
        return self.text_encoder_model(input_ids=input_ids, inputs_embeds=text_encoder_inputs_embeds,
                                       attention_mask=attention_mask).embeds

    def get_speech_features(self, speech_ids=None, input_ids=None, input_features=None,
                            conditioning_encoder_inputs_embeds=None, attention_mask=None, generation_config=None,
                            **kwargs):
        """Unnormalised speech embeddings (B, projection_dim) of ``speech_ids``; without them the
        speech ids are generated first from ``input_ids``/``input_features`` (see ``generate``)."""
        if speech_ids is None:
            if (input_ids is None and conditioning_encoder_inputs_embeds is None) or input_features is None:
                raise ValueError("pass speech_ids, or input_ids (or conditioning_encoder_inputs_embeds) and input_features")
            from .generation import generate_speech_ids

            speech_ids = generate_speech_ids(self, input_ids=input_ids, input_features=input_features,
                                             conditioning_encoder_inputs_embeds=conditioning_encoder_inputs_embeds,
                                             attention_mask=attention_mask, generation_config=generation_config, **kwargs)
            speech_ids = self.fix_speech_decoder_output(speech_ids)
            attention_mask = None  # the text mask does not apply to the codes
        self._check_speech_ids(speech_ids)
        return self.speech_encoder_model(input_ids=speech_ids, attention_mask=attention_mask).embeds

    def similarity(self, text_embeds: torch.Tensor, speech_embeds: torch.Tensor):
        """Normalise both and return (logits_per_text, logits_per_speech, text_hat, speech_hat), float32."""
        t = text_embeds.float()
        s = speech_embeds.float()
        t = t / t.norm(p=2, dim=-1, keepdim=True)
        s = s / s.norm(p=2, dim=-1, keepdim=True)
        logits_per_text = torch.matmul(t, s.t()) * self.logit_scale.float().exp()
        return logits_per_text, logits_per_text.t(), t, s

    def forward(self, input_ids=None, input_features=None, conditioning_encoder_inputs_embeds=None,
                text_encoder_inputs_embeds=None, attention_mask=None, return_loss=None, output_hidden_states=None,
                output_attentions=False, return_dict=None):
        """One non-autoregressive decoder pass, argmax codes, and the contrastive similarities (§2.7)."""
        if input_features is None:
            raise ValueError("input_features (the log-mel of the reference audio) is required")
        cond = self.conditioning_encoder(input_features=input_features, input_ids=input_ids,
                                         inputs_embeds=conditioning_encoder_inputs_embeds, attention_mask=attention_mask)
        dec = self.speech_decoder_model(inputs_embeds=cond, output_hidden_states=output_hidden_states, use_cache=False)
        speech_ids = self.fix_speech_decoder_output(dec.logits.argmax(-1))
        self._check_speech_ids(speech_ids)
        speech_out = self.speech_encoder_model(input_ids=speech_ids, output_hidden_states=output_hidden_states)
        text_out = self.text_encoder_model(input_ids=input_ids, inputs_embeds=text_encoder_inputs_embeds,
                                           attention_mask=attention_mask, output_hidden_states=output_hidden_states)
        logits_per_text, logits_per_speech, t, s = self.similarity(text_out.embeds, speech_out.embeds)
        loss = clvp_loss(logits_per_text) if return_loss else None
        out = ClvpOutput(
            loss=loss, logits_per_speech=logits_per_speech, logits_per_text=logits_per_text,
            text_embeds=t, speech_embeds=s, text_model_output=text_out.pooler_output,
            speech_model_output=speech_out.pooler_output,
            decoder_hidden_states=dec.hidden_states, text_encoder_hidden_states=text_out.hidden_states,
            speech_encoder_hidden_states=speech_out.hidden_states,
        )
        return out.to_tuple() if return_dict is False else out

    def generate(self, input_ids=None, input_features=None, attention_mask=None, generation_config=None,
                 pad_to_max_mel_tokens=None, output_hidden_states=None, **kwargs) -> ClvpOutput:
        """Generate speech codes for the text in the voice of ``input_features`` and score them with
        CLVP (docs/model.md §3.1). Always returns a ClvpOutput with ``speech_ids`` (fixed codes),
        ``logits_per_text``, ``logits_per_speech``, ``text_embeds``, ``speech_embeds``.

        Generation arguments (``do_sample``, ``temperature``, ``top_k``, ``top_p``, ``typical_p``,
        ``repetition_penalty``, ``max_new_tokens``, ``min_new_tokens``, ``num_return_sequences``,
        ``num_beams``, ``positions``, ``seed`` / ``generator``) go in ``generation_config`` or as
        keywords. Start/stop codes default to the decoder config's (8192/8193)."""
        from .generation import composite_generate

        return composite_generate(self, input_ids=input_ids, input_features=input_features,
                                  attention_mask=attention_mask, generation_config=generation_config,
                                  pad_to_max_mel_tokens=pad_to_max_mel_tokens,
                                  output_hidden_states=output_hidden_states, **kwargs)

    def generate_candidates(self, input_ids, input_features, **kwargs):
        """Tortoise's candidate loop: sample many codes in batches and rank them all by CLVP score.
        See ``clvp.generation.generate_candidates``."""
        from .generation import generate_candidates

        return generate_candidates(self, input_ids, input_features, **kwargs)
