"""Hugging Face's CLVP API (transformers 4.46.3) as a thin layer around the model core.

Each class here is the core module of clvp/model.py (same parameters, same state-dict keys) plus
transformers' surface: ``from_pretrained`` / ``save_pretrained``, ``forward`` signatures with their
optional outputs (``output_hidden_states``, ``output_attentions``, ``head_mask``, tuple
``past_key_values``, ``return_dict``), and ``generate``. The fast paths are the core's; what only
transformers' optional outputs need (attention probabilities, head masks, a cache of tuples) runs
the eager attention below, which materialises the probabilities. Section numbers (§) refer to
docs/model.md.
"""
from __future__ import annotations

import contextvars
import math

import torch
import torch.nn.functional as F
from torch import nn

from . import candidates, generation, kernels
from .configuration import ClvpConfig, ClvpDecoderConfig, ClvpEncoderConfig
from .loading import PreTrainedMixin
from .model import (  # noqa: F401  (the building blocks keep their transformers names here too)
    CausalLM,
    Clvp,
    ClvpConditioningEncoder,
    ClvpDecoderLayer,
    ClvpDecoderMLP,
    ClvpEncoderLayer,
    ClvpEncoderMLP,
    ClvpRMSNorm,
    ClvpRotaryPositionalEmbedding,
    ClvpSelfAttention,
    Decoder,
    DecoderModel,
    Encoder,
    check_ids,
    check_key_padding_mask,
    clvp_loss,
    key_padding_mask,
    pad_extra_bos_eos_tokens,
)
from .outputs import (
    BaseModelOutputWithPastAndCrossAttentions,
    CausalLMOutputWithCrossAttentions,
    ClvpEncoderOutput,
    ClvpOutput,
)
from .products import Conv1D

__all__ = [
    "ClvpPreTrainedModel", "ClvpEncoder", "ClvpDecoder", "ClvpModel", "ClvpForCausalLM",
    "ClvpModelForConditionalGeneration", "ClvpConditioningEncoder", "ClvpSelfAttention", "ClvpEncoderLayer",
    "ClvpEncoderMLP", "ClvpDecoderLayer", "ClvpDecoderMLP", "ClvpRMSNorm", "ClvpRotaryPositionalEmbedding",
    "pad_extra_bos_eos_tokens",
]

# ----------------------------------------------------------------------------------------------
# What transformers' optional outputs need: attention with its probabilities, head masks, tuple caches
# ----------------------------------------------------------------------------------------------


def attention_with_weights(attn: ClvpSelfAttention, x, rope=None, additive_mask=None, past_key_value=None,
                           head_mask=None):
    """Eager attention that materialises the probabilities: x (B, T, C) -> (out (B, T, C),
    probs (B, H, T, T_past + T) in x's dtype, (k, v) with the past prepended)."""
    q, k, v = attn.qkv(x)  # (B, H, T, D) each
    if past_key_value is not None:
        k = torch.cat((past_key_value[0], k), dim=-2)
        v = torch.cat((past_key_value[1], v), dim=-2)
    present = (k, v)
    if rope is not None:
        q, k, v = (kernels.apply_rotary_ref(z, *rope) for z in (q, k, v))  # quirk: v is rotated too (§2.1)
    scores = torch.matmul(q.float(), k.float().transpose(-1, -2)) * attn.scale  # (B, H, T, T_past + T)
    if additive_mask is not None:
        scores = scores + additive_mask
    probs = scores.softmax(-1)
    if head_mask is not None:
        probs = probs * head_mask
    probs = F.dropout(probs, p=attn.dropout, training=attn.training)
    out = torch.matmul(probs.to(v.dtype), v)  # (B, H, T, D)
    return attn.merge(out), probs.to(x.dtype), present


def causal_additive_mask(t: int, past_key_value, device, attention_mask=None, dtype=torch.float32):
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


def expand_head_mask(head_mask: torch.Tensor, num_layers: int) -> torch.Tensor:
    """(H,) or (L, H) 1/0 head mask -> (L, 1, H, 1, 1) (transformers' convention)."""
    if head_mask.dim() == 1:
        head_mask = head_mask[None, None, :, None, None].expand(num_layers, -1, -1, -1, -1)
    elif head_mask.dim() == 2:
        head_mask = head_mask[:, None, :, None, None]
    else:
        raise ValueError(f"head_mask must be (heads,) or (layers, heads), got shape {tuple(head_mask.shape)}")
    return head_mask.float()


class _Present:
    """A cache of one call: ``update`` keeps the keys and values it is given (``use_cache=True``)."""

    k = v = None

    def update(self, input_pos, k, v):
        self.k, self.v = k, v
        return k, v


# ----------------------------------------------------------------------------------------------
# Base class: loading, saving, transformers' initialisation
# ----------------------------------------------------------------------------------------------

_BUILDING = contextvars.ContextVar("clvp_building", default=False)
GENERATION_CONFIG_NAME = "generation_config.json"


class ClvpPreTrainedModel(PreTrainedMixin, nn.Module):
    config_class = ClvpConfig

    def _build(self, core_init, config, init_weights: bool) -> None:
        """Run the core constructor; the outermost model initialises all weights once, children
        built inside it do not (transformers' order, so a seed gives transformers' weights)."""
        outermost = not _BUILDING.get()
        token = _BUILDING.set(True)
        try:
            core_init(self, config)
        finally:
            _BUILDING.reset(token)
        if init_weights and outermost:
            self.post_init()
        if outermost and config.extra.pop("gradient_checkpointing", False):  # transformers' legacy switch
            self.gradient_checkpointing_enable()

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
        elif isinstance(module, Encoder):
            cfg = module.config
            nn.init.normal_(module.projection.weight, std=cfg.hidden_size**-0.5 * factor)
        elif isinstance(module, ClvpConditioningEncoder):
            nn.init.normal_(module.mel_conv.weight, mean=0.0, std=factor)
            module.mel_conv.bias.data.zero_()
        elif isinstance(module, CausalLM):
            cfg = module.config
            for name, p in module.named_parameters():
                if name.endswith("c_proj.weight"):
                    p.data.normal_(mean=0.0, std=cfg.initializer_range / math.sqrt(2 * cfg.num_hidden_layers))
        if isinstance(module, (nn.LayerNorm, nn.GroupNorm)):
            module.bias.data.zero_()
            module.weight.data.fill_(1.0)

    def _encoder_config_of(self, mlp):
        for enc in self.modules():
            if isinstance(enc, Encoder) and any(m is mlp for m in enc.modules()):
                return enc.config
        raise RuntimeError("encoder MLP outside an encoder")

    def post_init(self):
        # children first, so a parent's rule (e.g. c_proj's smaller std) wins, as in transformers
        for module in reversed(list(self.modules())):
            self._init_weights(module)

    @classmethod
    def can_generate(cls) -> bool:
        return hasattr(cls, "generate")

    @property
    def generation_config(self):
        """The generation defaults ``generate`` starts from (a clvp GenerationConfig; None for the
        encoders, which cannot generate). The start/stop codes are the decoder config's, also for the
        composite model (transformers' composite takes the text config's, docs/model.md §3.5)."""
        if "_generation_config" not in self.__dict__:
            config = getattr(self.config, "decoder_config", self.config)
            self.__dict__["_generation_config"] = generation.GenerationConfig(
                bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id) if self.can_generate() else None
        return self.__dict__["_generation_config"]

    def _extra_files(self) -> dict[str, str]:
        """generation_config.json for the models that generate, as transformers writes it: derived
        from the model config (``_from_model_config``; transformers takes the composite's codes from
        its text config) unless changed, then the changed fields."""
        if self.generation_config is None:
            return {}
        text = generation.generation_config_text(self.generation_config, getattr(self.config, "decoder_config", self.config),
                                                 getattr(self.config, "text_config", self.config))
        return {GENERATION_CONFIG_NAME: text}

    def _read_extra_files(self, folder) -> None:
        """A generation_config.json changed by its author sets ``generation_config``; one derived from
        the model config (``_from_model_config``) is ignored: the decoder config's codes apply."""
        path = folder / GENERATION_CONFIG_NAME
        if self.generation_config is not None and path.is_file():
            self.generation_config = generation.read_generation_config(path) or self.generation_config

    @generation_config.setter
    def generation_config(self, value) -> None:
        if value is not None and not isinstance(value, generation.GenerationConfig):
            raise TypeError(f"generation_config must be a clvp GenerationConfig or None, got {type(value).__name__}")
        self.__dict__["_generation_config"] = value

    def _switches(self, output_attentions, output_hidden_states, return_dict):
        """A forward's optional-output switches: the call's, else the config's (transformers' rule)."""
        cfg = self.config
        return (cfg.output_attentions if output_attentions is None else output_attentions,
                cfg.output_hidden_states if output_hidden_states is None else output_hidden_states,
                cfg.use_return_dict if return_dict is None else return_dict)

    @property
    def dtype(self) -> torch.dtype:
        return next(p.dtype for p in self.parameters() if p.is_floating_point())

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device


# ----------------------------------------------------------------------------------------------
# Encoders
# ----------------------------------------------------------------------------------------------


class ClvpEncoder(ClvpPreTrainedModel, Encoder):
    """The CLVP text or speech encoder: embeddings, 20 pre-norm rotary layers, LayerNorm, mean pool,
    projection. ``forward(...)[0]`` is the unnormalised embedding (B, projection_dim)."""

    config_class = ClvpEncoderConfig

    def __init__(self, config: ClvpEncoderConfig, *, init_weights: bool = True):
        self._build(Encoder.__init__, config, init_weights)

    def get_input_embeddings(self):
        return self.token_embedding

    def set_input_embeddings(self, value):
        self.token_embedding = value

    def forward(self, input_ids=None, inputs_embeds=None, attention_mask=None, position_ids=None,
                output_attentions=None, output_hidden_states=None, return_dict=None):
        output_attentions, output_hidden_states, return_dict = self._switches(output_attentions, output_hidden_states,
                                                                              return_dict)
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        if input_ids is not None:
            generation.check_ids_input(input_ids, "input_ids", self.config.vocab_size)
            x = self.token_embedding(input_ids)  # (B, T, C)
        else:
            if isinstance(inputs_embeds, torch.Tensor) and (
                    inputs_embeds.dim() != 3 or inputs_embeds.shape[-1] != self.config.hidden_size):
                raise ValueError(
                    f"inputs_embeds must be (batch, seq_len, {self.config.hidden_size}), got {tuple(inputs_embeds.shape)}"
                )
            generation.check_embeds_input(inputs_embeds, "inputs_embeds", self.config.hidden_size)
            x = inputs_embeds
        b, t, _ = x.shape
        generation.check_mask_input(attention_mask, (b, t))
        keep = check_key_padding_mask(attention_mask, b, t)  # None when nothing is masked
        rope = self.rope(t, x.device, position_ids)
        hidden = [] if output_hidden_states else None
        attns = None
        if output_attentions:
            additive = None
            if keep is not None:
                additive = torch.zeros(b, 1, 1, t, device=x.device).masked_fill(~keep[:, None, None, :],
                                                                                torch.finfo(torch.float32).min)
            attns = []
            for layer in self.layers:
                if hidden is not None:
                    hidden.append(x)
                out, probs, _ = attention_with_weights(layer.self_attn, layer.input_rmsnorm(x), rope, additive)
                x = x + out
                x = x + layer.mlp(layer.post_attention_rmsnorm(x))
                attns.append(probs)
            if hidden is not None:
                hidden.append(x)
            last, pooled, embeds = self.pool(x)
        elif self.gradient_checkpointing and self.training:  # each layer recomputed in the backward pass
            for layer in self.layers:
                if hidden is not None:
                    hidden.append(x)
                x = self.checkpointed(layer, x, rope, keep)
            if hidden is not None:
                hidden.append(x)
            last, pooled, embeds = self.pool(x)
        else:
            last, pooled, embeds = self.encode(x, rope, keep, hidden)
        hidden = tuple(hidden) if hidden is not None else None
        attns = tuple(attns) if attns is not None else None
        if not return_dict:
            return tuple(v for v in (embeds, last, pooled, hidden, attns) if v is not None)
        return ClvpEncoderOutput(embeds=embeds, last_hidden_state=last, pooler_output=pooled, hidden_states=hidden,
                                 attentions=attns)


# ----------------------------------------------------------------------------------------------
# Decoder
# ----------------------------------------------------------------------------------------------


class ClvpDecoder(ClvpPreTrainedModel, Decoder):
    """GPT-2-style transformer over mel codes (Tortoise's ``gpt``): token + position embeddings, 30 layers, ``layer_norm``."""

    config_class = ClvpDecoderConfig

    def __init__(self, config: ClvpDecoderConfig, *, init_weights: bool = True):
        self._build(Decoder.__init__, config, init_weights)

    def get_input_embeddings(self):
        return self.input_embeds_layer

    def set_input_embeddings(self, value):
        self.input_embeds_layer = value

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None, head_mask=None,
                past_key_values=None, inputs_embeds=None, use_cache=None, output_attentions=None,
                output_hidden_states=None, return_dict=None):
        output_attentions, output_hidden_states, return_dict = self._switches(output_attentions, output_hidden_states,
                                                                              return_dict)
        use_cache = self.config.use_cache if use_cache is None else use_cache
        if self.gradient_checkpointing and self.training:
            use_cache = False  # as transformers: a cache is useless while the activations are recomputed
        generation.check_ids_input(input_ids, "input_ids", self.config.vocab_size)
        generation.check_embeds_input(inputs_embeds, "inputs_embeds", self.config.hidden_size)
        self.check_inputs(position_ids=position_ids)  # the core's embed reads no values
        past_length = 0 if past_key_values is None else past_key_values[0][0].shape[-2]
        x = self.embed(input_ids, inputs_embeds, position_ids, past_length, token_type_ids)  # (B, T, C)
        b, t, _ = x.shape
        additive = None
        if attention_mask is not None:
            if not isinstance(attention_mask, torch.Tensor):
                raise TypeError(f"attention_mask must be a torch.Tensor of 0/1 values, got {type(attention_mask).__name__}")
            if attention_mask.shape != (b, past_length + t):
                raise ValueError(
                    f"attention_mask has shape {tuple(attention_mask.shape)}, expected (batch, past + seq_len) = {(b, past_length + t)}"
                )
            if not bool(attention_mask.bool().all()):
                additive = causal_additive_mask(t, past_key_values[0] if past_key_values else None, x.device,
                                                attention_mask)
        if head_mask is not None:
            head_mask = expand_head_mask(head_mask, self.config.num_hidden_layers)
        hidden = [] if output_hidden_states else None
        attns = None
        if output_attentions or head_mask is not None or additive is not None or past_key_values is not None:
            presents, attns = [], []
            for i, layer in enumerate(self.layers):
                if hidden is not None:
                    hidden.append(x)
                past = past_key_values[i] if past_key_values is not None else None
                mask = additive if additive is not None else causal_additive_mask(t, past, x.device)
                out, probs, present = attention_with_weights(
                    layer.attn, layer.input_layernorm(x), additive_mask=mask, past_key_value=past,
                    head_mask=None if head_mask is None else head_mask[i])
                x = x + out
                x = x + layer.mlp(layer.post_attention_layernorm(x))
                presents.append(present)
                attns.append(probs if output_attentions else None)
            x = self.layer_norm(x)
            if hidden is not None:
                hidden.append(x)
            presents = presents if use_cache else None
            attns = attns if output_attentions else None
        elif self.gradient_checkpointing and self.training:
            positions = torch.arange(t, device=x.device)
            for layer in self.layers:
                if hidden is not None:
                    hidden.append(x)
                x = self.checkpointed(layer, x, None, positions)
            x = self.layer_norm(x)
            if hidden is not None:
                hidden.append(x)
            presents = None
        else:  # the core's causal attention; with use_cache the layers' keys and values come back
            caches = [_Present() for _ in self.layers] if use_cache else None
            x = self.decode(x, caches, torch.arange(t, device=x.device), hidden)
            presents = [(c.k, c.v) for c in caches] if caches is not None else None
        out = BaseModelOutputWithPastAndCrossAttentions(
            last_hidden_state=x,
            past_key_values=tuple(presents) if presents is not None else None,
            hidden_states=tuple(hidden) if hidden is not None else None,
            attentions=tuple(attns) if attns is not None else None,
        )
        return out if return_dict else out.to_tuple()


class ClvpModel(ClvpPreTrainedModel, DecoderModel):
    """The bare decoder (``self.decoder``), as transformers names it."""

    config_class = ClvpDecoderConfig
    decoder_class = ClvpDecoder

    def __init__(self, config: ClvpDecoderConfig, *, init_weights: bool = True):
        self._build(DecoderModel.__init__, config, init_weights)

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


class ClvpForCausalLM(ClvpPreTrainedModel, CausalLM):
    """Decoder + ``final_norm`` + ``lm_head`` (quirk: two LayerNorms in a row before the head, §2.6)."""

    config_class = ClvpDecoderConfig
    model_class = ClvpModel

    def __init__(self, config: ClvpDecoderConfig, *, init_weights: bool = True):
        self._build(CausalLM.__init__, config, init_weights)

    def get_input_embeddings(self):
        return self.model.decoder.input_embeds_layer

    def set_input_embeddings(self, value):
        self.model.decoder.input_embeds_layer = value

    def get_output_embeddings(self):
        return None  # not tied to the input embeddings: transformers' ClvpForCausalLM returns None too

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        """Replace ``lm_head`` (a Linear from hidden_size to the vocabulary)."""
        if not isinstance(new_embeddings, nn.Linear) or new_embeddings.in_features != self.config.hidden_size:
            raise TypeError(f"new_embeddings must be an nn.Linear with in_features={self.config.hidden_size}, got "
                            f"{new_embeddings!r}")
        self.lm_head = new_embeddings

    def forward(self, input_ids=None, past_key_values=None, attention_mask=None, token_type_ids=None,
                position_ids=None, head_mask=None, inputs_embeds=None, labels=None, use_cache=None,
                output_attentions=None, output_hidden_states=None, return_dict=None):
        output_attentions, output_hidden_states, return_dict = self._switches(output_attentions, output_hidden_states,
                                                                              return_dict)
        out = self.model.decoder(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                                 position_ids=position_ids, head_mask=head_mask, past_key_values=past_key_values,
                                 inputs_embeds=inputs_embeds, use_cache=use_cache, output_attentions=output_attentions,
                                 output_hidden_states=output_hidden_states, return_dict=True)
        logits = self.logits(out.last_hidden_state)  # (B, T, vocab)
        loss = None
        if labels is not None:
            shift_logits = logits[..., :-1, :].float()
            shift_labels = labels[..., 1:].to(logits.device)
            loss = F.cross_entropy(shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1))
        result = CausalLMOutputWithCrossAttentions(loss=loss, logits=logits, past_key_values=out.past_key_values,
                                                   hidden_states=out.hidden_states, attentions=out.attentions)
        return result if return_dict else result.to_tuple()

    def generate(self, input_ids=None, generation_config=None, conditioning_embeds=None, attention_mask=None,
                 inputs=None, **kwargs):
        """Generate codes from ``input_ids`` (``inputs``), from ``conditioning_embeds`` (the CLVP prompt),
        or from nothing: then from the start code, one row, as transformers does.

        Returns the sequences (B * num_return_sequences, T) — the prompt ids (or the start code)
        first — or, with ``return_dict_in_generate=True``, transformers' ``GenerateDecoderOnlyOutput``
        (``GenerateBeamDecoderOnlyOutput`` for beam search): ``sequences``, ``scores``
        (``output_scores``), ``logits`` (``output_logits``), ``hidden_states``
        (``output_hidden_states``), ``past_key_values`` (``use_cache``). Arguments as
        ``GenerationConfig`` (see clvp/generation.py); defaults from ``self.generation_config``.
        ``attention_mask`` must be all ones (a padded batch is refused: generate its rows one by
        one). ``output_attentions=True`` (greedy search and sampling from ids) recomputes the
        attentions with the eager forward afterwards (docs/parity.md)."""
        if inputs is not None:
            if input_ids is not None:
                raise ValueError("pass the prompt ids as inputs or as input_ids, not both")
            input_ids = inputs
        cfg = generation.resolve_config(self.config, self.generation_config if generation_config is None
                                        else generation_config, kwargs)
        generation.check_ids_input(input_ids, "input_ids")
        generation.check_generate_mask(attention_mask, input_ids)
        generation.check_embeds_input(conditioning_embeds, "conditioning_embeds", self.config.hidden_size)
        replay = cfg.output_attentions and cfg.return_dict_in_generate
        if replay and (conditioning_embeds is not None or cfg.num_beams > 1):
            raise ValueError("output_attentions=True is supported for greedy search and sampling from input_ids; "
                             "for beam search or conditioning_embeds run forward(output_attentions=True) on the sequences")
        with torch.no_grad():
            out = generation.decoder_generate(self, input_ids=input_ids, conditioning_embeds=conditioning_embeds, cfg=cfg)
            if replay:
                prompt_len = 1 if input_ids is None else input_ids.shape[1]
                out.attentions = generation.replay_attentions(self, out.sequences, prompt_len)
        return out if cfg.return_dict_in_generate else out.sequences


# ----------------------------------------------------------------------------------------------
# The composite model
# ----------------------------------------------------------------------------------------------


class ClvpModelForConditionalGeneration(ClvpPreTrainedModel, Clvp):
    """The composite model: conditioning encoder, speech decoder, text and speech encoders, ``logit_scale``."""

    config_class = ClvpConfig
    encoder_class = ClvpEncoder
    lm_class = ClvpForCausalLM

    def __init__(self, config: ClvpConfig, *, init_weights: bool = True):
        if not isinstance(config, ClvpConfig):
            raise TypeError(f"config must be a ClvpConfig, got {type(config).__name__}")
        self._build(Clvp.__init__, config, init_weights)
        if init_weights:
            self.logit_scale.data.fill_(float(config.logit_scale_init_value))

    def _check_speech_ids(self, speech_ids):
        check_ids(speech_ids, self.config.speech_config.vocab_size, "speech_ids")

    def _check_scores(self, text_embeds, speech_embeds) -> None:
        """Stop with the stage named when the encoders produced NaN/inf (never a finite score of garbage)."""
        generation.check_stage(text_embeds, "the text encoder embeddings (CLVP scores)")
        generation.check_stage(speech_embeds, "the speech encoder embeddings (CLVP scores)")

    def get_text_features(self, input_ids=None, text_encoder_inputs_embeds=None, attention_mask=None):
        """Unnormalised text embeddings (B, projection_dim)."""
        return self.text_encoder_model(input_ids=input_ids, inputs_embeds=text_encoder_inputs_embeds,
                                       attention_mask=attention_mask, return_dict=True).embeds

    def get_speech_features(self, speech_ids=None, input_ids=None, input_features=None,
                            conditioning_encoder_inputs_embeds=None, attention_mask=None, generation_config=None,
                            **kwargs):
        """Unnormalised speech embeddings (B, projection_dim) of ``speech_ids``; without them the
        speech ids are generated first from ``input_ids``/``input_features`` (see ``generate``)."""
        if speech_ids is not None:
            generation.check_ids_input(speech_ids, "speech_ids")
        if speech_ids is None:
            if (input_ids is None and conditioning_encoder_inputs_embeds is None) or input_features is None:
                raise ValueError("pass speech_ids, or input_ids (or conditioning_encoder_inputs_embeds) and input_features")
            speech_ids = generation.generate_speech_ids(
                self, input_ids=input_ids, input_features=input_features,
                conditioning_encoder_inputs_embeds=conditioning_encoder_inputs_embeds, attention_mask=attention_mask,
                generation_config=generation_config, **kwargs)
            speech_ids = self.fix_speech_decoder_output(speech_ids)
            attention_mask = None  # the text mask does not apply to the codes
        self._check_speech_ids(speech_ids)
        return self.speech_encoder_model(input_ids=speech_ids, attention_mask=attention_mask, return_dict=True).embeds

    def _output(self, text_out, speech_out, *, loss=None, speech_ids=None, decoder_hidden_states=None) -> ClvpOutput:
        """The similarities of the two encoders' outputs, packed as transformers does."""
        logits_per_text, logits_per_speech, t, s = self.similarity(text_out.embeds, speech_out.embeds)
        return ClvpOutput(
            loss=clvp_loss(logits_per_text) if loss else None, speech_ids=speech_ids,
            logits_per_speech=logits_per_speech, logits_per_text=logits_per_text, text_embeds=t, speech_embeds=s,
            text_model_output=text_out.pooler_output, speech_model_output=speech_out.pooler_output,
            decoder_hidden_states=decoder_hidden_states, text_encoder_hidden_states=text_out.hidden_states,
            speech_encoder_hidden_states=speech_out.hidden_states,
        )

    def forward(self, input_ids=None, input_features=None, conditioning_encoder_inputs_embeds=None,
                text_encoder_inputs_embeds=None, attention_mask=None, return_loss=None, output_hidden_states=None,
                output_attentions=False, return_dict=None):
        """One non-autoregressive decoder pass, argmax codes, and the contrastive similarities (§2.7).
        ``output_hidden_states`` and ``return_dict`` default to the ClvpConfig's (as in transformers)."""
        _, output_hidden_states, return_dict = self._switches(None, output_hidden_states, return_dict)
        if input_features is None:
            raise ValueError("input_features (the log-mel of the reference audio) is required")
        dc = self.config.decoder_config
        generation.check_features_input(input_features, dc.feature_size)
        generation.check_ids_input(input_ids, "input_ids", self.config.text_config.vocab_size)
        if input_ids is not None:
            generation.check_mask_input(attention_mask, input_ids.shape)
            self.conditioning_encoder.check_text(input_ids, attention_mask)
        generation.check_embeds_input(conditioning_encoder_inputs_embeds, "conditioning_encoder_inputs_embeds",
                                      dc.hidden_size)
        generation.check_embeds_input(text_encoder_inputs_embeds, "text_encoder_inputs_embeds",
                                      self.config.text_config.hidden_size)
        cond = self.conditioning_encoder(input_features=input_features, input_ids=input_ids,
                                         inputs_embeds=conditioning_encoder_inputs_embeds, attention_mask=attention_mask)
        generation.check_stage(cond, "the conditioning prompt (conditioning encoder output)")
        dec = self.speech_decoder_model(inputs_embeds=cond, output_hidden_states=output_hidden_states, use_cache=False,
                                        return_dict=True)
        generation.check_stage(dec.logits, "the decoder logits")
        speech_ids = self.fix_speech_decoder_output(dec.logits.argmax(-1))
        self._check_speech_ids(speech_ids)
        speech_out = self.speech_encoder_model(input_ids=speech_ids, output_hidden_states=output_hidden_states,
                                               return_dict=True)
        text_out = self.text_encoder_model(input_ids=input_ids, inputs_embeds=text_encoder_inputs_embeds,
                                           attention_mask=attention_mask, output_hidden_states=output_hidden_states,
                                           return_dict=True)
        self._check_scores(text_out.embeds, speech_out.embeds)
        out = self._output(text_out, speech_out, loss=return_loss, decoder_hidden_states=dec.hidden_states)
        return out if return_dict else out.to_tuple()

    @torch.no_grad()
    def generate(self, input_ids=None, input_features=None, attention_mask=None, generation_config=None,
                 pad_to_max_mel_tokens=None, output_hidden_states=None, **kwargs) -> ClvpOutput:
        """Generate speech codes for the text in the voice of ``input_features`` and score them with
        CLVP (§3.1). Always returns a ClvpOutput with ``speech_ids`` (fixed codes),
        ``logits_per_text``, ``logits_per_speech``, ``text_embeds``, ``speech_embeds``.

        Generation arguments (``do_sample``, ``temperature``, ``top_k``, ``top_p``, ``typical_p``,
        ``repetition_penalty``, ``max_new_tokens``, ``min_new_tokens``, ``num_return_sequences``,
        ``num_beams``, ``positions``, ``seed`` / ``generator``) go in ``generation_config`` or as
        keywords. Start/stop codes default to the decoder config's (8192/8193)."""
        if input_ids is None:
            raise ValueError("input_ids (the tokenized text) are required")
        if output_hidden_states is not None:
            kwargs["output_hidden_states"] = output_hidden_states
        cfg = generation.composite_config(self, self.generation_config if generation_config is None
                                          else generation_config, kwargs)
        generation.validate_request(self, cfg, input_ids, input_features=input_features, attention_mask=attention_mask)
        if pad_to_max_mel_tokens is not None:
            limit = self.config.decoder_config.max_position_embeddings
            if not isinstance(pad_to_max_mel_tokens, int) or isinstance(pad_to_max_mel_tokens, bool):
                raise TypeError(f"pad_to_max_mel_tokens must be an integer or None, got {pad_to_max_mel_tokens!r}")
            if not 2 <= pad_to_max_mel_tokens <= limit:
                raise ValueError(
                    f"pad_to_max_mel_tokens must be in 2..{limit} (the decoder's max_position_embeddings: no longer "
                    f"sequence can be generated), got {pad_to_max_mel_tokens}"
                )
        prompt, ids, mask = self.build_prompt(input_ids, input_features, attention_mask)  # (B, L, C)
        generation.check_stage(prompt, "the conditioning prompt (conditioning encoder output)")
        result = generation.decoder_generate(self.speech_decoder_model, conditioning_embeds=prompt, cfg=cfg)
        speech_ids = result.sequences  # (B * n, 1 + T)
        if pad_to_max_mel_tokens is not None:
            if pad_to_max_mel_tokens < speech_ids.shape[-1]:
                raise ValueError(
                    f"pad_to_max_mel_tokens={pad_to_max_mel_tokens} is shorter than the generated "
                    f"{speech_ids.shape[-1]} ids (start code included)"
                )
            speech_ids = F.pad(speech_ids, (0, pad_to_max_mel_tokens - speech_ids.shape[-1]), value=cfg.eos_token_id)
        speech_ids = self.fix_speech_decoder_output(speech_ids)
        speech_out = self.speech_encoder_model(input_ids=speech_ids, output_hidden_states=cfg.output_hidden_states,
                                               return_dict=True)
        text_out = self.text_encoder_model(input_ids=ids, attention_mask=mask, output_hidden_states=cfg.output_hidden_states,
                                           return_dict=True)
        self._check_scores(text_out.embeds, speech_out.embeds)
        return self._output(text_out, speech_out, speech_ids=speech_ids, decoder_hidden_states=result.hidden_states)

    def generate_candidates(self, input_ids, input_features, **kwargs) -> candidates.RankedCandidates:
        """Tortoise's candidate loop: sample many codes in batches and rank them all by CLVP score.
        See ``clvp.candidates.generate_candidates``."""
        return candidates.generate_candidates(self, input_ids, input_features, **kwargs)
