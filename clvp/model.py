"""CLVP's model core: text and speech encoders, the conditioning encoder, the GPT-2-style decoder.

Plain modules with Hugging Face's attribute names (so the state dict is transformers' layout,
docs/model.md §1.2-1.3) and minimal forwards; ``clvp.modeling`` wraps them in transformers' API
(signatures, optional outputs, tuples). Attention runs through ``clvp.kernels`` (Triton on CUDA,
the eager reference elsewhere). CLVP's quirks are kept on purpose, each marked "quirk": rotary on
q, k *and* v with a partial width derived from ``projection_dim``; mean pooling over padded
positions; two LayerNorms before the LM head; GPT-2 Conv1D weights stored (in, out). Section
numbers (§) refer to docs/model.md.

Shapes: B batch, T sequence, C hidden, H heads, D head dim, R rotary width, P projection dim.
Precision: rotary angles, softmax and norm statistics run in float32 whatever the weights' dtype.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from . import kernels
from .configuration import ClvpConfig, ClvpDecoderConfig, ClvpEncoderConfig
from .kernels.rotary_attention import rotary_inv_freq
from .products import Conv1D, Linear

ACT = {
    "gelu": lambda x: F.gelu(x),
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
    "tanh": torch.tanh,
    "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),
}


# ----------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------


class ClvpRMSNorm(nn.Module):
    """``w * x * rsqrt(mean(x^2) + eps)`` with float32 statistics (transformers' formula, §2.3).

    float32 inputs go through torch's ``rms_norm`` (a fused kernel where torch has one): the same bits
    as transformers' four-pass formula. bfloat16 / float16 on the CPU: a float32-accumulating norm,
    then transformers' two roundings (the normalised value, then its product with ``w``); the mean
    square comes from the norm squared, so it can differ in its last bit (docs/speed.md §9). Other
    16-bit devices: torch's ``rms_norm``, whose product with ``w`` is rounded once instead of twice
    (at most one unit in the last place apart)."""

    def __init__(self, hidden_size: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == self.weight.dtype and x.dtype in (torch.bfloat16, torch.float16) and x.device.type == "cpu":
            return self._cpu_half(x)
        if x.dtype == self.weight.dtype:
            return F.rms_norm(x, self.weight.shape, self.weight, self.variance_epsilon)
        # mixed dtypes (e.g. float32 weights, bfloat16 activations) have no fused kernel, and
        # transformers' product then promotes to the wider dtype
        return self.weight * F.rms_norm(x.float(), self.weight.shape, eps=self.variance_epsilon).to(x.dtype)


    # Rows per block of the 16-bit CPU path: a block's float32 copy (256 x 768 x 4 B = 768 KiB at the
    # encoders' width) stays in the core's cache between its passes.
    CPU_BLOCK_ROWS = 256

    def _cpu_half(self, x: torch.Tensor) -> torch.Tensor:
        """16-bit on the CPU, where torch's ``rms_norm`` is a composite of five passes over the whole
        tensor and mixed-dtype products are not vectorised: transformers' formula on float32 copies
        of blocks of rows (a float32 norm, the scaling, one rounding into the output), then the weight
        in place. About 5% of a bfloat16 encoder pass faster than ``rms_norm`` (docs/speed.md §9)."""
        eps, c = self.variance_epsilon, x.shape[-1]
        if torch.is_grad_enabled():  # the same numbers, out of place, for autograd
            xf = x.float()
            inv = torch.rsqrt(torch.linalg.vector_norm(xf, dim=-1, keepdim=True).square() / c + eps)
            return (xf * inv).to(x.dtype) * self.weight
        x2 = x.reshape(-1, c)  # (N, C)
        y = torch.empty_like(x2)  # (N, C) in x's dtype
        for i in range(0, x2.shape[0], self.CPU_BLOCK_ROWS):
            xf = x2[i:i + self.CPU_BLOCK_ROWS].float()  # (n, C) float32
            inv = torch.linalg.vector_norm(xf, dim=-1, keepdim=True).square_().div_(c).add_(eps).rsqrt_()  # (n, 1)
            y[i:i + self.CPU_BLOCK_ROWS] = xf.mul_(inv)  # rounded once, as transformers rounds before the weight
        return y.view(x.shape).mul_(self.weight)


class ClvpRotaryPositionalEmbedding(nn.Module):
    """Rotary angles. ``inv_freq`` is a persistent buffer (it is in the checkpoint) kept in float32
    even after ``model.to(bfloat16)``: rounded frequencies give angle errors of ~0.25 rad at t≈500."""

    def __init__(self, config: ClvpEncoderConfig):
        super().__init__()
        self.register_buffer("inv_freq", rotary_inv_freq(config.rotary_dim))  # (R/2,); quirk: R from projection_dim (§2.1)

    def _exact(self):
        return rotary_inv_freq(2 * self.inv_freq.numel(), self.inv_freq.device)

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        if self.inv_freq.dtype != torch.float32 and not self.inv_freq.is_meta:
            self.inv_freq = self._exact()  # recompute rather than upcast rounded values
        return self

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if self.inv_freq.dtype != torch.float32 and not self.inv_freq.is_meta:
            self.inv_freq = self._exact()  # a bfloat16 / float16 checkpoint carries rounded frequencies

    def forward(self, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """position_ids (..., T) -> cos, sin (..., T, R) float32."""
        freqs = position_ids.to(torch.float32)[..., None] * self.inv_freq.float()  # (..., T, R/2)
        emb = torch.cat((freqs, freqs), dim=-1)  # (..., T, R)
        return emb.cos(), emb.sin()


class KVCache:
    """One decoder layer's keys and values, preallocated: k, v (B, H, T_max, D).

    The model makes it (``Decoder.new_kv_cache``) and the caller holds it, so that two generations
    running on one model never share a cache. ``update`` writes in place at fixed addresses, so a
    decode step that uses it can be captured in a CUDA graph.
    """

    def __init__(self, batch: int, heads: int, max_len: int, head_dim: int, dtype, device):
        self.k = torch.zeros(batch, heads, max_len, head_dim, dtype=dtype, device=device)
        self.v = torch.zeros_like(self.k)
        # Entries in use, when the caller knows it on the host (the CPU generation loop): ``update``
        # then returns only that prefix, so a decode step reads its context and not the whole
        # preallocated cache. None (CUDA graphs, torch.compile): the whole cache, a fixed shape.
        self.limit: Optional[int] = None

    def update(self, input_pos: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
        """Write k, v (B, H, T, D) at cache positions ``input_pos`` (T,); return the cache (B, H, T', D):
        the whole cache (T' = T_max), or its first ``limit`` entries when ``limit`` is set."""
        self.k.index_copy_(2, input_pos, k)
        self.v.index_copy_(2, input_pos, v)
        if self.limit is None:
            return self.k, self.v
        return self.k[:, :, : self.limit], self.v[:, :, : self.limit]

    def reorder(self, index: torch.Tensor) -> None:
        """Beam search: row b takes the cache of row ``index[b]`` (in place, shapes unchanged)."""
        self.k.copy_(self.k.index_select(0, index))
        self.v.copy_(self.v.index_select(0, index))


class ClvpSelfAttention(nn.Module):
    """Multi-head attention of every CLVP block; state-dict keys q/k/v/out_proj.

    One forward serves all uses. Bidirectional (``causal=False``: encoders with rotary tables and a
    key-padding mask, the conditioning encoder with neither): the fused rotary attention op.
    Causal (the decoder): without a cache over ``x`` alone (training, scoring); with a cache, k and v
    are written into it at ``input_pos`` first, then a prefill (T > 1, ``input_pos`` = 0..T-1)
    attends causally over ``x`` itself and a decode step (T = 1) over the cache's first
    ``input_pos + 1`` entries through the decode-attention op.
    """

    def __init__(self, config, causal: bool = False):
        super().__init__()
        self.embed_dim = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.head_dim = self.embed_dim // self.num_heads
        self.scale = self.head_dim**-0.5
        self.dropout = config.attention_dropout
        self.causal = causal
        bias = config.use_attention_bias
        self.k_proj = Linear(self.embed_dim, self.embed_dim, bias=bias)
        self.v_proj = Linear(self.embed_dim, self.embed_dim, bias=bias)
        self.q_proj = Linear(self.embed_dim, self.embed_dim, bias=bias)
        self.out_proj = Linear(self.embed_dim, self.embed_dim)

    def heads(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, T, D), a view

    def qkv(self, x: torch.Tensor):
        """x (B, T, C) -> q, k, v (B, H, T, D) each."""
        return self.heads(self.q_proj(x)), self.heads(self.k_proj(x)), self.heads(self.v_proj(x))

    def merge(self, y: torch.Tensor) -> torch.Tensor:
        """y (B, H, T, D) -> out_proj of the heads side by side (B, T, C)."""
        b, _, t, _ = y.shape
        return self.out_proj(y.transpose(1, 2).reshape(b, t, self.embed_dim))

    def forward(self, x, rope=None, key_padding_mask=None, cache: Optional[KVCache] = None, input_pos=None):
        """x (B, T, C) -> (B, T, C). rope: (cos, sin) (T, R) or (B, 1, T, R), or None;
        key_padding_mask (B, T) bool, True = attend, or None; cache and input_pos (T,) long: causal only."""
        q, k, v = self.qkv(x)  # (B, H, T, D) each
        if not self.causal:
            cos, sin = rope if rope is not None else (None, None)
            # q, k, v are this call's own fresh projections: the eager path rotates them in place
            # (no copies); SDPA then returns the (B, T, H, D) layout, so ``merge`` is a view
            y = kernels.rotary_attention(q, k, v, cos, sin, key_padding_mask, scale=self.scale, in_place=True)
        elif cache is not None and x.shape[1] == 1:  # decode step
            k_all, v_all = cache.update(input_pos, k, v)  # (B, H, T_max, D)
            lengths = (input_pos + 1).to(torch.int32).expand(x.shape[0]).contiguous()  # (B,) valid entries per row
            y = kernels.decode_attention(q[:, :, 0], k_all, v_all, lengths, scale=self.scale)[:, :, None]
        else:  # causal over x: no cache, or a prefill that fills it from position 0
            if cache is not None:
                cache.update(input_pos, k, v)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale)
        return self.merge(y)


class ClvpEncoderMLP(nn.Module):
    """GLU feed-forward: ``fc2(a * gelu(g))`` with ``[a | g] = fc1.proj(x)`` (first half value, second gate)."""

    def __init__(self, config: ClvpEncoderConfig):
        super().__init__()
        self.fc1 = nn.Module()
        self.fc1.proj = Linear(config.hidden_size, config.intermediate_size * 2)
        self.fc2 = Linear(config.intermediate_size, config.hidden_size)
        self.act = ACT[config.hidden_act]
        self.dropout = config.dropout

    def forward(self, x):
        a, g = self.fc1.proj(x).chunk(2, dim=-1)  # (B, T, I) views of one (B, T, 2I) product
        h = self.act(g)  # (B, T, I), fresh
        # without autograd the activation's fresh output takes the product (one (B, T, I) buffer, not
        # two); with it, relu's and tanh's backward read that output, so it must stay unchanged
        h = h * a if torch.is_grad_enabled() else h.mul_(a)
        if self.training:
            h = F.dropout(h, p=self.dropout)
        return self.fc2(h)


class ClvpEncoderLayer(nn.Module):
    """Pre-norm block with RMSNorm (§2.3)."""

    def __init__(self, config: ClvpEncoderConfig):
        super().__init__()
        self.self_attn = ClvpSelfAttention(config)
        self.mlp = ClvpEncoderMLP(config)
        self.input_rmsnorm = ClvpRMSNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_attention_rmsnorm = ClvpRMSNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x, rope=None, key_padding_mask=None):
        x = x + self.self_attn(self.input_rmsnorm(x), rope, key_padding_mask)
        return x + self.mlp(self.post_attention_rmsnorm(x))


class ClvpDecoderMLP(nn.Module):
    def __init__(self, inner_dim: int, config: ClvpDecoderConfig):
        super().__init__()
        self.c_fc = Conv1D(inner_dim, config.hidden_size)
        self.c_proj = Conv1D(config.hidden_size, inner_dim)
        self.act = ACT[config.activation_function]
        self.dropout = config.resid_pdrop

    def forward(self, x):
        h = self.c_proj(self.act(self.c_fc(x)))
        return F.dropout(h, p=self.dropout) if self.training else h


class ClvpDecoderLayer(nn.Module):
    """GPT-2 block (§2.6)."""

    def __init__(self, config: ClvpDecoderConfig):
        super().__init__()
        self.input_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_epsilon)
        self.attn = ClvpSelfAttention(config, causal=True)
        self.post_attention_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_epsilon)
        self.mlp = ClvpDecoderMLP(config.inner_dim, config)

    def forward(self, x, cache: Optional[KVCache] = None, input_pos=None):
        x = x + self.attn(self.input_layernorm(x), cache=cache, input_pos=input_pos)
        return x + self.mlp(self.post_attention_layernorm(x))


# ----------------------------------------------------------------------------------------------
# Encoders
# ----------------------------------------------------------------------------------------------


class Encoder(nn.Module):
    """The CLVP text or speech encoder (§2.3-2.4): token embeddings, pre-norm rotary layers,
    LayerNorm, mean pool, projection."""

    def __init__(self, config: ClvpEncoderConfig):
        super().__init__()
        self.config = config
        self.token_embedding = nn.Embedding(config.vocab_size, config.hidden_size)
        self.rotary_pos_emb = ClvpRotaryPositionalEmbedding(config) if config.use_rotary_embedding else None
        self.layers = nn.ModuleList([ClvpEncoderLayer(config) for _ in range(config.num_hidden_layers)])
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.projection = Linear(config.hidden_size, config.projection_dim, bias=False)

    def rope(self, length: int, device, position_ids: Optional[torch.Tensor] = None):
        """(cos, sin) for positions 0..length-1, or for ``position_ids`` (B|1, T); None without rotary.

        The choice between shared and per-row tables is made from the shape alone: B > 1 rows of
        ``position_ids`` always get per-row tables, even when the rows are equal, because finding
        that out would read the tensor on the host (a device sync, a graph break under
        torch.compile). The numbers are the same either way (the same rotation, broadcast)."""
        if self.rotary_pos_emb is None:
            return None
        if position_ids is None:
            return self.rotary_pos_emb(torch.arange(length, device=device))  # (T, R) each
        position_ids = position_ids.reshape(-1, length)
        if position_ids.shape[0] == 1:
            return self.rotary_pos_emb(position_ids[0])  # (T, R) each
        return self.rotary_pos_emb(position_ids[:, None, :])  # (B, 1, T, R) each: per-row positions

    def encode(self, x, rope=None, key_padding_mask=None, hidden_states: Optional[list] = None):
        """x (B, T, C) embeddings -> last (B, T, C) after the final norm, pooled (B, C), embeds (B, P).
        ``hidden_states``, when a list, receives each layer's input and the last layer's output."""
        for layer in self.layers:
            if hidden_states is not None:
                hidden_states.append(x)
            x = layer(x, rope, key_padding_mask)
        if hidden_states is not None:
            hidden_states.append(x)
        return self.pool(x)

    def pool(self, x):
        """The last layer's output x (B, T, C) -> last (B, T, C), pooled (B, C), embeds (B, P)."""
        last = self.final_layer_norm(x)
        pooled = last.mean(dim=1)  # quirk: over all positions, padded ones included (§2.4)
        return last, pooled, self.projection(pooled)

    def embeds(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """input_ids (B, T) -> the unnormalised embedding (B, P) that CLVP scores. attention_mask
        (B, T) 0/1 (or None) with a 1 in every row: its values are the caller's to check
        (``check_key_padding_mask``), so that this makes no host read."""
        x = self.token_embedding(input_ids)  # (B, T, C)
        mask = key_padding_mask(attention_mask, *input_ids.shape)
        return self.encode(x, self.rope(input_ids.shape[1], x.device), mask)[2]


def value_checks() -> bool:
    """Whether the checks that read tensor values on the host run: always, except while
    torch.compile traces. Such a check is a device sync and a graph break; the boundary functions
    below are the only ones that make them (the core's forwards make none, docs/architecture.md §4),
    and a caller who compiles a boundary function (e.g. ``ClvpEncoder.forward``) takes on its checks."""
    return not torch.compiler.is_compiling()


def key_padding_mask(attention_mask: Optional[torch.Tensor], batch: int, length: int) -> Optional[torch.Tensor]:
    """The core's view of a (B, T) 0/1 mask: (B, T) bool, True = attend; None for None. Shape
    checked, values not read (no host sync): ``check_key_padding_mask`` validates them at the boundary."""
    if attention_mask is None:
        return None
    if attention_mask.shape != (batch, length):
        raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)}, expected (batch, seq_len) = {(batch, length)}")
    return attention_mask.bool()  # (B, T)


def check_key_padding_mask(attention_mask: Optional[torch.Tensor], batch: int, length: int) -> Optional[torch.Tensor]:
    """The boundary's check of a (B, T) 0/1 mask (one host read): every row keeps a token. Returns
    None when it masks nothing (the fast path: no mask operand at all), else the (B, T) bool mask.
    While torch.compile traces (``value_checks``) nothing is read and the mask is passed on as is:
    the same numbers, the masked path (attention with an all-True mask equals attention without one)."""
    keep = key_padding_mask(attention_mask, batch, length)
    if keep is None or not value_checks():
        return keep
    masks_nothing, every_row_kept = torch.stack((keep.all(), keep.any(dim=-1).all())).tolist()  # one host read
    if not every_row_kept:
        raise ValueError("every row of attention_mask needs at least one 1 (a row that masks all tokens has no output)")
    return None if masks_nothing else keep


def pad_extra_bos_eos_tokens(input_ids, attention_mask=None, pad_token_id=0, bos_token_id=255, eos_token_id=0,
                             add_bos_token=True, add_eos_token=True):
    """transformers' ``_pad_extra_bos_eos_tokens`` (§2.5), vectorised: prepend bos; insert eos at the
    first pad position (or append it); the mask gets one leading 1 per added token.
    input_ids (B, T) -> (B, T + added), attention_mask likewise (or None)."""
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


def check_ids(ids: torch.Tensor, vocab_size: Optional[int], what: str) -> None:
    """Raise a TypeError for anything but a torch.long / torch.int32 tensor, and a ValueError (not an
    IndexError from inside torch) for no ids or ids outside ``[0, vocab_size)`` (unchecked for None).
    A boundary check: the vocabulary costs one host read (skipped while torch.compile traces,
    see ``value_checks``); the core's forwards do not call it."""
    if not isinstance(ids, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor of integer ids, got {type(ids).__name__}; "
                        "convert it with torch.as_tensor")
    if ids.dtype not in (torch.long, torch.int32):
        raise TypeError(f"{what} must be an integer tensor of dtype torch.long or torch.int32, got dtype {ids.dtype}")
    if ids.numel() == 0:
        raise ValueError(f"{what} is empty (shape {tuple(ids.shape)}; did the text tokenize to nothing?): "
                         "pass at least one token per row")
    if vocab_size is None or not value_checks():
        return
    lo, hi = torch.stack((ids.min(), ids.max())).tolist()  # one host read
    if lo < 0 or hi >= vocab_size:
        bad = lo if lo < 0 else hi
        raise ValueError(f"{what} contains id {bad}, outside the vocabulary of size {vocab_size} (allowed 0..{vocab_size - 1})")


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
        """input_features (B, feature_size, T_mel) -> (B, C): the first frame after the blocks."""
        dc = self.decoder_config
        if input_features.dim() != 3 or input_features.shape[1] != dc.feature_size:
            raise ValueError(
                f"input_features must be (batch, {dc.feature_size}, frames), got {tuple(input_features.shape)}"
            )
        if not input_features.is_floating_point():
            raise TypeError(f"input_features must be a float tensor, got {input_features.dtype}")
        dtype = self.mel_conv.weight.dtype
        h = self.mel_conv(input_features.to(dtype))  # (B, C, T_mel)
        for norm, attn in zip(self.group_norms, self.mel_attn_blocks):
            # GroupNorm in float32 (Tortoise's GroupNorm32)
            n = F.group_norm(h.float(), norm.num_groups, norm.weight.float(), norm.bias.float(), norm.eps).to(dtype)
            h = h + attn(n.transpose(1, 2)).transpose(1, 2)
        return h[:, :, 0]

    def check_text(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None) -> None:
        """The length check of ``text_embeds``' inputs, made at the API boundary with ``check_ids``
        (one host read, skipped while torch.compile traces): the text's position ids (those of its
        unmasked tokens, plus the added bos and eos) inside the position table."""
        if not value_checks():
            return
        tokens = input_ids.shape[1] if attention_mask is None else int(attention_mask.long().sum(-1).max())
        if tokens + 2 > self.decoder_config.max_text_tokens:  # the last position id is tokens + 1
            raise ValueError(
                f"text of {input_ids.shape[1] + 2} tokens (with the added bos/eos) exceeds the conditioning encoder's "
                f"{self.decoder_config.max_text_tokens} text positions"
            )

    def text_embeds(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor]) -> torch.Tensor:
        """input_ids (B, T) -> (B, T + 2, C): bos and eos added, token + position embeddings.
        No host read: the callers check the values first (``check_text``)."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        ids, mask = pad_extra_bos_eos_tokens(
            input_ids, attention_mask, bos_token_id=self.text_config.bos_token_id, eos_token_id=self.text_config.eos_token_id
        )
        positions = mask.long().cumsum(-1) - 1  # (B, T + 2)
        return self.text_token_embedding(ids) + self.text_position_embedding(positions)

    def forward(self, input_features, input_ids=None, inputs_embeds=None, attention_mask=None):
        """-> (B, 1 + T + 2, C); B texts and B clips, or one of either broadcast over the other."""
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
        return torch.cat([mel, text], dim=1)


# ----------------------------------------------------------------------------------------------
# Decoder
# ----------------------------------------------------------------------------------------------


class Decoder(nn.Module):
    """GPT-2-style transformer over mel codes (Tortoise's ``gpt``): token + position embeddings,
    decoder layers, ``layer_norm``."""

    def __init__(self, config: ClvpDecoderConfig):
        super().__init__()
        self.config = config
        self.input_embeds_layer = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position_embeds_layer = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.layers = nn.ModuleList([ClvpDecoderLayer(config) for _ in range(config.num_hidden_layers)])
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_epsilon)

    def check_inputs(self, input_ids=None, position_ids=None) -> None:
        """The value checks of ``embed``'s inputs, made at the API boundary (host reads, skipped while
        torch.compile traces): ids inside the vocabulary, given position ids inside the position table."""
        if input_ids is not None:
            check_ids(input_ids, self.config.vocab_size, "input_ids")
        if position_ids is None or not isinstance(position_ids, torch.Tensor) or not value_checks():
            return
        lo, hi = torch.stack((position_ids.min(), position_ids.max())).tolist()  # one host read
        if hi >= self.config.max_position_embeddings or lo < 0:
            raise ValueError(
                f"position ids up to {hi} exceed the decoder's {self.config.max_position_embeddings} positions"
            )

    def embed(self, input_ids=None, inputs_embeds=None, position_ids=None, past_length: int = 0, token_type_ids=None):
        """Token (or given) embeddings plus position embeddings: (B, T, C). Shapes checked here;
        values by the callers (``check_inputs``), so that this makes no host read."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        if input_ids is not None:
            if input_ids.dim() != 2:
                raise ValueError(f"input_ids must be (batch, seq_len), got shape {tuple(input_ids.shape)}")
            x = self.input_embeds_layer(input_ids)  # (B, T, C)
        else:
            x = inputs_embeds
        t = x.shape[1]
        if position_ids is None:
            if past_length + t > self.config.max_position_embeddings:  # host integers: no sync
                raise ValueError(f"position ids up to {past_length + t - 1} exceed the decoder's "
                                 f"{self.config.max_position_embeddings} positions")
            position_ids = torch.arange(past_length, past_length + t, device=x.device)[None]  # (1, T)
        x = x + self.position_embeds_layer(position_ids)
        if token_type_ids is not None:
            x = x + self.input_embeds_layer(token_type_ids)
        if self.training:
            x = F.dropout(x, p=self.config.embd_pdrop)
        return x

    def embed_step(self, tokens: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        """A decode step's input from device tensors (no host read): tokens (B,), position (1,) -> (B, 1, C)."""
        return self.input_embeds_layer(tokens[:, None]) + self.position_embeds_layer(position)[None]

    def new_kv_cache(self, batch: int, max_len: int) -> list[KVCache]:
        """Empty caches for ``decode``, one per layer, in the model's dtype and device."""
        cfg, w = self.config, self.layer_norm.weight
        return [KVCache(batch, cfg.num_attention_heads, max_len, cfg.head_dim, w.dtype, w.device) for _ in self.layers]

    def decode(self, x, caches: Optional[list] = None, input_pos=None, hidden_states: Optional[list] = None):
        """x (B, T, C) embeddings -> (B, T, C) after ``layer_norm``. With ``caches`` (one per layer),
        keys and values go into them at ``input_pos`` (T,). ``hidden_states``, when a list, receives
        each layer's input and the normalised output."""
        for i, layer in enumerate(self.layers):
            if hidden_states is not None:
                hidden_states.append(x)
            x = layer(x, None if caches is None else caches[i], input_pos)
        x = self.layer_norm(x)
        if hidden_states is not None:
            hidden_states.append(x)
        return x


class DecoderModel(nn.Module):
    """The bare decoder under transformers' name ``model.decoder``."""

    decoder_class = Decoder

    def __init__(self, config: ClvpDecoderConfig):
        super().__init__()
        self.config = config
        self.decoder = self.decoder_class(config)


class CausalLM(nn.Module):
    """Decoder + ``final_norm`` + ``lm_head`` (quirk: two LayerNorms in a row before the head, §2.6)."""

    model_class = DecoderModel

    def __init__(self, config: ClvpDecoderConfig):
        super().__init__()
        self.config = config
        self.model = self.model_class(config)
        self.final_norm = nn.LayerNorm(config.hidden_size)
        self.lm_head = Linear(config.hidden_size, config.vocab_size, bias=True)

    @property
    def decoder(self) -> Decoder:
        return self.model.decoder

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden (..., C) from ``Decoder.decode`` -> logits (..., vocab)."""
        return self.lm_head(self.final_norm(hidden))

    def product_slots(self) -> list:
        """(parent module, attribute name) of every weight product of a decode step, in order: per
        layer q, k, v, out_proj, c_fc, c_proj, then the LM head (what int8 and packed weights replace)."""
        slots = []
        for layer in self.model.decoder.layers:
            slots += [(layer.attn, n) for n in ("q_proj", "k_proj", "v_proj", "out_proj")]
            slots += [(layer.mlp, n) for n in ("c_fc", "c_proj")]
        return slots + [(self, "lm_head")]


def speech_decoder_lm(model) -> CausalLM:
    """The speech decoder of a ClvpModelForConditionalGeneration, or a ClvpForCausalLM itself; a
    TypeError naming the argument for anything else (the decoder-level tools' first check)."""
    lm = getattr(model, "speech_decoder_model", model)  # the composite model, or the decoder LM itself
    if not isinstance(lm, CausalLM):
        raise TypeError(
            "model must be a ClvpModelForConditionalGeneration or a ClvpForCausalLM (a CLVP speech decoder), "
            f"got {type(model).__name__}"
        )
    return lm


# ----------------------------------------------------------------------------------------------
# The composite model
# ----------------------------------------------------------------------------------------------


def clvp_loss(similarity: torch.Tensor) -> torch.Tensor:
    """Symmetric contrastive loss over a (N, N) similarity matrix, the diagonal being the pairs."""
    labels = torch.arange(len(similarity), device=similarity.device)
    return (F.cross_entropy(similarity, labels) + F.cross_entropy(similarity.t(), labels)) / 2.0


class Clvp(nn.Module):
    """Conditioning encoder, speech decoder, text and speech encoders, ``logit_scale``."""

    encoder_class = Encoder
    lm_class = CausalLM

    def __init__(self, config: ClvpConfig):
        super().__init__()
        self.config = config
        self.conditioning_encoder = ClvpConditioningEncoder(config)
        self.speech_decoder_model = self.lm_class(config.decoder_config)
        self.text_encoder_model = self.encoder_class(config.text_config)
        self.speech_encoder_model = self.encoder_class(config.speech_config)
        self.logit_scale = nn.Parameter(torch.tensor(float(config.logit_scale_init_value)))

    def pad_text(self, input_ids, attention_mask=None):
        """Tortoise's text padding before generation and scoring: one eos appended (B, T) -> (B, T + 1)."""
        tc = self.config.text_config
        return pad_extra_bos_eos_tokens(input_ids, attention_mask, add_bos_token=False, bos_token_id=tc.bos_token_id,
                                        eos_token_id=tc.eos_token_id)

    def build_prompt(self, input_ids=None, input_features=None, attention_mask=None, inputs_embeds=None,
                     average_voices: bool = False):
        """The decoder's conditioning prompt (§3.2), the one place it is built.

        input_ids (B, T) text, padded by ``pad_text`` first; or ``inputs_embeds`` (B, T', C) as the
        conditioning encoder's text part. input_features (K, 80, frames): K clips; with
        ``average_voices`` (one text) their latents are averaged into one voice, as Tortoise does.
        Returns (prompt (B, 1 + T + 3, C), text ids (B, T + 1), text mask) (ids and mask None for
        ``inputs_embeds``).
        """
        if input_features is None:
            raise ValueError("input_features (log-mel of the reference voice) are required to generate speech")
        ids = mask = None
        if input_ids is not None:
            ids, mask = self.pad_text(input_ids, attention_mask)
        enc = self.conditioning_encoder
        if average_voices:
            latent = enc.mel_latent(input_features).mean(0, keepdim=True)  # (1, C): the voice's clips averaged
            text = enc.text_embeds(ids, mask).to(latent.dtype)  # (1, T + 3, C)
            return torch.cat([latent[:, None, :], text], dim=1), ids, mask
        prompt = enc(input_features=input_features, input_ids=ids, inputs_embeds=inputs_embeds, attention_mask=mask)
        return prompt, ids, mask

    def fix_speech_decoder_output(self, speech_ids: torch.LongTensor) -> torch.LongTensor:
        """Tortoise's ``fix_autoregressive_output`` (§3.3): drop the start column, replace the stop
        code and everything after it by the filler code, and end stopped rows with the fixing codes.
        speech_ids (B, T) -> (B, T - 1)."""
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

    def similarity(self, text_embeds: torch.Tensor, speech_embeds: torch.Tensor):
        """Normalise both and return (logits_per_text (N_t, N_s), logits_per_speech, text_hat, speech_hat), float32."""
        t = text_embeds.float()
        s = speech_embeds.float()
        t = t / t.norm(p=2, dim=-1, keepdim=True)
        s = s / s.norm(p=2, dim=-1, keepdim=True)
        logits_per_text = torch.matmul(t, s.t()) * self.logit_scale.float().exp()
        return logits_per_text, logits_per_text.t(), t, s
