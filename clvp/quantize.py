"""Int8 weight-only decoding on the CPU: the decoder's matrix products read int8 weights.

A decode step reads every decoder weight once for a handful of rows (docs/speed.md), so on a CPU its
time is set by how fast the weights stream; int8 weights are a quarter of float32's bytes.
``int8_weight_only(model)`` replaces, in the speech decoder only, the products of every layer (q, k,
v, out_proj, c_fc, c_proj) and the LM head by ``Int8Linear``: per-output-channel symmetric int8
weights (scale = max |w| / 127 per row, round to nearest) with bfloat16 scales. Everything else
(embeddings, norms, attention over the cache, the encoders, the conditioning encoder) keeps the
model's dtype. Off unless called (the CLI's ``--int8``); inference only (no gradients through the
int8 weights); the checkpoint stays float (quantize after loading, not before saving).

The product is torch's own ``aten._weight_int8pack_mm`` (the kernel behind torch's int8
weight-only quantization). On the CPU in torch 2.13 it wants bfloat16 (or float16) activations:
with float32 ones it falls back to a path ~30x slower than a float32 product (measured on a
2-core AMD EPYC VM with AVX-512-BF16, torch 2.13: 14 ms against 0.4 ms for a 4096x1024 weight at 4 rows). So the input rows are rounded to bfloat16, the kernel
accumulates and returns bfloat16, and the result goes back to the model's dtype before the bias is
added: not only the weights are approximated, the product's inputs and outputs are rounded to
bfloat16 too. The kernel also needs the input width to be a multiple of 16 (others crash the
process), which ``int8_weight_only`` checks before changing anything.

Its cost grows with the rows (it streams the weights once per few rows): above
``INT8_MAX_ROWS`` rows (a prefill) the weight is dequantized to float32 for one ``F.linear``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .model import CausalLM, speech_decoder_lm
from .products import Conv1D, Linear

SCALE_DTYPE = torch.bfloat16  # the kernel's scales share the activations' dtype
MODEL_DTYPES = (torch.float32, torch.bfloat16)  # dtypes a model may hold to be quantized
K_MULTIPLE = 16  # _weight_int8pack_mm's input width must be a multiple of this on the CPU

# Up to this many rows the int8 kernel runs; above, a dequantized float32 copy is faster or as fast
# (4096x1024 weight, 1 thread: 0.43 ms int8 vs 2.1 ms float32 at 4 rows, 1.8 vs 2.2 at 16, 7.1 vs
# 7.3 at 64, 17 vs 14 at 152 rows).
INT8_MAX_ROWS = 64


class Int8Linear(nn.Module):
    """``y = x @ W.T + b`` with W (out, in) held as int8 plus one bfloat16 scale per output row.

    Buffers: ``weight_int8`` (out, in) int8, ``weight_scale`` (out,) bfloat16, ``bias`` (out,) in the
    model's dtype or None. ``forward`` takes x (..., in) in the model's dtype, returns (..., out) in it.
    """

    def __init__(self, weight_int8: torch.Tensor, weight_scale: torch.Tensor, bias):
        super().__init__()
        self.in_features, self.out_features = weight_int8.shape[1], weight_int8.shape[0]
        self.register_buffer("weight_int8", weight_int8)  # (out, in) int8, contiguous
        self.register_buffer("weight_scale", weight_scale)  # (out,) bfloat16
        self.register_buffer("bias", bias)  # (out,) or None

    @classmethod
    def from_float(cls, weight: torch.Tensor, bias) -> "Int8Linear":
        """weight (out, in) any float dtype and strides, bias (out,) or None -> Int8Linear."""
        w = weight.detach().float()  # (out, in)
        scale = w.abs().amax(dim=1).clamp(min=torch.finfo(torch.float32).tiny) / 127  # (out,)
        scale = scale.to(SCALE_DTYPE)  # round the scale first, so the int8 values are for the scale used
        q = torch.round(w / scale.float()[:, None]).clamp(-127, 127).to(torch.int8).contiguous()  # (out, in)
        return cls(q, scale, None if bias is None else bias.detach().clone())

    def dequantized(self) -> torch.Tensor:
        """The float32 weight (out, in) these int8 values and scales stand for."""
        return self.weight_int8.float() * self.weight_scale.float()[:, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x2 = x.reshape(-1, x.shape[-1])  # (rows, in)
        if x2.shape[0] <= INT8_MAX_ROWS:
            out = torch.ops.aten._weight_int8pack_mm(x2.to(SCALE_DTYPE).contiguous(), self.weight_int8,
                                                     self.weight_scale).to(x.dtype)  # (rows, out)
        else:
            out = F.linear(x2.float(), self.dequantized()).to(x.dtype)  # (rows, out)
        if self.bias is not None:
            out = out + self.bias
        return out.view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 weight-only"


def _targets(lm: CausalLM) -> list:
    """(parent module, attribute name, weight (out, in), bias) of every product int8 replaces."""
    found = []
    for parent, name in lm.product_slots():
        mod = getattr(parent, name)
        if isinstance(mod, Int8Linear):
            continue
        weight = mod.weight.t() if isinstance(mod, Conv1D) else mod.weight  # Conv1D stores (in, out)
        found.append((parent, name, weight, mod.bias))
    return found


def is_int8(model) -> bool:
    """Whether ``model``'s speech decoder runs on int8 weights."""
    return isinstance(speech_decoder_lm(model).lm_head, Int8Linear)


@torch.no_grad()
def int8_weight_only(model):
    """Make ``model``'s speech decoder multiply with int8 weights (in place; returns ``model``).

    ``model``: a ClvpModelForConditionalGeneration or ClvpForCausalLM on the CPU, in float32 or
    bfloat16. Only the decoder's products change (see the module docstring); calling it twice
    changes nothing more. Raises TypeError for another kind of model, ValueError for a model on
    another device, in another dtype, or whose product widths the int8 kernel cannot take, before
    changing anything.
    """
    lm = speech_decoder_lm(model)
    weight = lm.lm_head.weight_int8 if isinstance(lm.lm_head, Int8Linear) else lm.lm_head.weight
    if weight.device.type != "cpu":
        raise ValueError(f"model: int8 weight-only decoding runs on the CPU only; the decoder is on {weight.device} "
                         "(move it with model.to('cpu') first)")
    dtype = lm.final_norm.weight.dtype
    if dtype not in MODEL_DTYPES:
        raise ValueError(f"model: int8 weight-only decoding needs a float32 or bfloat16 model, got {dtype}")
    targets = _targets(lm)
    for parent, name, w, _ in targets:
        if not isinstance(getattr(parent, name), (Linear, Conv1D, nn.Linear)):
            raise TypeError(f"model: {name} is a {type(getattr(parent, name)).__name__}, not a linear layer")
        if w.shape[1] % K_MULTIPLE:
            raise ValueError(f"model: {name} takes {w.shape[1]} inputs; the int8 kernel needs a multiple of {K_MULTIPLE}")
    for parent, name, w, b in targets:
        setattr(parent, name, Int8Linear.from_float(w, b))
    return model
