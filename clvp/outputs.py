"""Output containers with Hugging Face's field names.

Like transformers' ``ModelOutput``: attribute access, ``out["field"]``, and ``out[i]`` / ``to_tuple()``
over the fields that are not None, in declaration order.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Optional, Tuple

import torch


class ModelOutput:
    def to_tuple(self) -> tuple:
        return tuple(getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None)

    def keys(self):
        return [f.name for f in fields(self) if getattr(self, f.name) is not None]

    def items(self):
        return [(k, getattr(self, k)) for k in self.keys()]

    def __getitem__(self, key):
        if isinstance(key, str):
            if key not in self.keys():
                raise KeyError(f"{key!r} is not set in this {type(self).__name__}; set fields: {self.keys()}")
            return getattr(self, key)
        return self.to_tuple()[key]

    def __contains__(self, key):
        return key in self.keys()

    def __iter__(self):
        return iter(self.keys())

    def __len__(self):
        return len(self.keys())


@dataclass
class BaseModelOutput(ModelOutput):
    last_hidden_state: torch.Tensor = None
    hidden_states: Optional[Tuple[torch.Tensor, ...]] = None
    attentions: Optional[Tuple[torch.Tensor, ...]] = None


@dataclass
class ClvpEncoderOutput(ModelOutput):
    embeds: Optional[torch.Tensor] = None  # (B, projection_dim), unnormalised
    last_hidden_state: torch.Tensor = None  # (B, T, hidden)
    pooler_output: Optional[torch.Tensor] = None  # (B, hidden): mean over all positions
    hidden_states: Optional[Tuple[torch.Tensor, ...]] = None
    attentions: Optional[Tuple[torch.Tensor, ...]] = None


@dataclass
class BaseModelOutputWithPastAndCrossAttentions(ModelOutput):
    last_hidden_state: torch.Tensor = None
    past_key_values: Optional[Tuple[Tuple[torch.Tensor, torch.Tensor], ...]] = None
    hidden_states: Optional[Tuple[torch.Tensor, ...]] = None
    attentions: Optional[Tuple[torch.Tensor, ...]] = None
    cross_attentions: Optional[Tuple[torch.Tensor, ...]] = None


@dataclass
class CausalLMOutputWithCrossAttentions(ModelOutput):
    loss: Optional[torch.Tensor] = None
    logits: torch.Tensor = None
    past_key_values: Optional[Tuple[Tuple[torch.Tensor, torch.Tensor], ...]] = None
    hidden_states: Optional[Tuple[torch.Tensor, ...]] = None
    attentions: Optional[Tuple[torch.Tensor, ...]] = None
    cross_attentions: Optional[Tuple[torch.Tensor, ...]] = None


@dataclass
class ClvpOutput(ModelOutput):
    loss: Optional[torch.Tensor] = None
    speech_ids: Optional[torch.Tensor] = None
    logits_per_speech: torch.Tensor = None  # (N_speech, N_text)
    logits_per_text: torch.Tensor = None  # (N_text, N_speech)
    text_embeds: torch.Tensor = None  # (N_text, projection_dim), L2-normalised
    speech_embeds: torch.Tensor = None  # (N_speech, projection_dim), L2-normalised
    text_model_output: Any = None  # pooled text encoder output
    speech_model_output: Any = None  # pooled speech encoder output
    decoder_hidden_states: Optional[Tuple[torch.Tensor, ...]] = None
    text_encoder_hidden_states: Optional[Tuple[torch.Tensor, ...]] = None
    speech_encoder_hidden_states: Optional[Tuple[torch.Tensor, ...]] = None


@dataclass
class GenerateDecoderOnlyOutput(ModelOutput):
    """Greedy search or sampling with ``return_dict_in_generate=True`` (transformers' field order)."""

    sequences: torch.Tensor = None  # (B * num_return_sequences, T): the prompt ids / start code first
    scores: Optional[Tuple[torch.Tensor, ...]] = None  # per new code (B, V): processed scores (output_scores)
    logits: Optional[Tuple[torch.Tensor, ...]] = None  # per new code (B, V): raw logits (output_logits)
    attentions: Optional[Tuple[Tuple[torch.Tensor, ...], ...]] = None  # per step, per layer (B, H, T_step, T_seen)
    hidden_states: Optional[Tuple[Tuple[torch.Tensor, ...], ...]] = None  # per step, per layer (B, T_step, C)
    past_key_values: Optional[Tuple[Tuple[torch.Tensor, torch.Tensor], ...]] = None  # per layer (B, H, T - 1, D)


@dataclass
class GenerateBeamDecoderOnlyOutput(ModelOutput):
    """Beam search with ``return_dict_in_generate=True`` (transformers' field order)."""

    sequences: torch.Tensor = None  # (B * num_return_sequences, T)
    sequences_scores: Optional[torch.Tensor] = None  # (B * num_return_sequences,) length-penalised log-probs
    scores: Optional[Tuple[torch.Tensor, ...]] = None  # per step (B * num_beams, V): processed log-probs
    logits: Optional[Tuple[torch.Tensor, ...]] = None  # per step (B * num_beams, V): raw logits
    beam_indices: Optional[torch.Tensor] = None  # (B * num_return_sequences, T): beam of each step, -1 past the end
    attentions: Optional[Tuple[Tuple[torch.Tensor, ...], ...]] = None
    hidden_states: Optional[Tuple[Tuple[torch.Tensor, ...], ...]] = None
    past_key_values: Optional[Tuple[Tuple[torch.Tensor, torch.Tensor], ...]] = None
