"""Packed decoder weights on the CPU: the speech decoder's products read oneDNN's blocked layout.

A decode step reads every decoder weight once for a handful of rows, so on a CPU its time is set by
how fast the products stream the weights (docs/speed.md §11). torch's dense products stream them at
a fraction of the machine's read bandwidth for 4-16 rows; oneDNN's linear op over a weight
reordered once into its own blocked layout (``torch.ops.mkldnn._reorder_linear_weight``, the layout
torch.compile's CPU backend freezes weights into) streams them about 2x faster in float32 and 1.4x
in bfloat16 at 4 rows, and is no slower for the prefill's hundreds of rows.

``pack_decoder_weights(model)`` replaces, in the speech decoder only, the products of every layer
(q, k, v, out_proj, c_fc, c_proj) and the LM head by ``PackedLinear``, which holds the reordered
weight *instead of* the dense one (no second copy in memory). The numbers are those of a float
product in the model's dtype (only the order of the sums differs). Off unless called; the CLI calls
it for generation on the CPU (``--no-pack`` keeps the dense weights). Inference only (the packed
op has no gradient: a forward with autograd on raises ValueError rather than cut the graph), CPU
only, float32 or bfloat16. ``state_dict()`` still gives transformers' dense tensors under the usual
keys (``save_pretrained`` writes the normal checkpoint), and ``load_state_dict`` repacks what it
loads; ``unpack_decoder_weights`` puts dense layers back.
"""
from __future__ import annotations

import torch
from torch import nn

from .model import speech_decoder_lm
from .products import Conv1D, Linear, affine, onednn_linear_available

MODEL_DTYPES = (torch.float32, torch.bfloat16)  # dtypes a model may hold to be packed
PACK_ROWS = 4  # the row count oneDNN is told to expect: a decode step's batch (16 rows run as fast)


class PackedLinear(nn.Module):
    """``y = x @ W.T + b`` with W (out, in) held in oneDNN's blocked layout.

    ``forward`` takes x (..., in) in the weight's dtype and returns (..., out). ``conv1d``: the layer
    it replaced was a GPT-2 Conv1D, whose checkpoint tensor is stored (in, out); ``state_dict()``
    gives that layout back. Moved to another device or dtype (``model.to(...)``), the layer holds
    its weight dense there (``clvp.products.affine``), and packs it again back on the CPU in float32
    or bfloat16.
    """

    def __init__(self, weight: torch.Tensor, bias, conv1d: bool):
        super().__init__()
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]
        self.conv1d = conv1d
        self.register_buffer("bias", None if bias is None else bias.detach().contiguous())  # (out,)
        self._hold(weight.detach())
        self._register_state_dict_hook(_dense_state)

    def _hold(self, weight: torch.Tensor) -> None:
        """Keep weight (out, in): packed where it can be, dense otherwise (a plain attribute either
        way, so torch's module machinery never sees the opaque tensor)."""
        self.weight_dtype = weight.dtype
        if weight.device.type == "cpu" and weight.dtype in MODEL_DTYPES:
            self.packed, self.dense = torch.ops.mkldnn._reorder_linear_weight(weight.contiguous(), PACK_ROWS), None
        else:
            self.packed, self.dense = None, weight.contiguous()

    def dense_weight(self) -> torch.Tensor:
        """The dense (out, in) weight this layer holds (a copy when packed)."""
        return self.packed.to_dense() if self.packed is not None else self.dense

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.packed is None:
            return affine(x, self.dense, self.bias)
        if x.dtype != self.weight_dtype:
            raise TypeError(f"x: a packed {str(self.weight_dtype).replace('torch.', '')} layer got "
                            f"{str(x.dtype).replace('torch.', '')} input")
        if torch.is_grad_enabled() and x.requires_grad:  # the packed op would silently cut the graph
            raise ValueError("x requires grad, but the decoder's packed weights give no gradient: run under "
                             "torch.no_grad() / torch.inference_mode(), or call "
                             "clvp.packing.unpack_decoder_weights(model) to train")
        x2 = x.reshape(-1, x.shape[-1]).contiguous()  # (rows, in)
        out = torch.ops.mkldnn._linear_pointwise(x2, self.packed, self.bias, "none", [], "")  # (rows, out)
        return out.view(*x.shape[:-1], self.out_features)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        key = prefix + "weight"
        if key in state_dict:
            w = state_dict[key]
            w = w.t() if self.conv1d else w  # (out, in)
            if tuple(w.shape) != (self.out_features, self.in_features):
                error_msgs.append(f"size mismatch for {key}: the packed layer holds "
                                  f"{(self.out_features, self.in_features)} (out, in), the state dict {tuple(w.shape)}")
            else:
                device = self.dense.device if self.dense is not None else torch.device("cpu")
                self._hold(w.detach().to(device=device, dtype=self.weight_dtype))
        elif strict:
            missing_keys.append(key)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        if key in unexpected_keys:  # torch's loader knows only the registered tensors (the bias)
            unexpected_keys.remove(key)

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)  # the bias
        moved = fn(self.dense_weight())
        if self.packed is None or moved.dtype != self.weight_dtype or moved.device.type != "cpu":
            self._hold(moved)
        return self

    def extra_repr(self) -> str:
        where = "packed for oneDNN" if self.packed is not None else f"dense on {self.dense.device}"
        return f"in_features={self.in_features}, out_features={self.out_features}, {where}"


def _dense_state(module, state_dict, prefix, local_metadata):
    w = module.dense_weight()  # (out, in)
    state_dict[prefix + "weight"] = w.t().contiguous() if module.conv1d else w
    if module.bias is not None:  # keep transformers' key order: weight, then bias
        state_dict[prefix + "bias"] = state_dict.pop(prefix + "bias")


def is_packed(model) -> bool:
    """Whether ``model``'s speech decoder runs on packed weights."""
    return isinstance(speech_decoder_lm(model).lm_head, PackedLinear)


def _refusal(lm):
    """Why ``lm``'s weights cannot be packed, as the exception to raise, or None."""
    for parent, name in lm.product_slots():
        mod = getattr(parent, name)
        if not isinstance(mod, (Linear, Conv1D, nn.Linear)):
            return TypeError(f"model: {name} is a {type(mod).__name__}, not a dense linear layer "
                             "(int8 and packed weights do not combine)")
    weight = lm.lm_head.weight
    if weight.device.type != "cpu":
        return ValueError(f"model: packed weights are for the CPU; the decoder is on {weight.device}")
    dtype = lm.final_norm.weight.dtype
    if dtype not in MODEL_DTYPES:
        return ValueError(f"model: packed weights need a float32 or bfloat16 model, got {dtype}")
    if lm.training:
        return ValueError("model: packed weights are for inference (the packed product has no gradient); "
                          "call model.eval() first")
    if not onednn_linear_available():
        return ValueError("model: this torch build has no oneDNN linear op (torch.ops.mkldnn._linear_pointwise)")
    return None


def can_pack(model) -> bool:
    """Whether ``pack_decoder_weights(model)`` would pack (or already has): what the CLI asks before
    packing where it can."""
    return is_packed(model) or _refusal(speech_decoder_lm(model)) is None


@torch.no_grad()
def pack_decoder_weights(model):
    """Pack ``model``'s speech decoder weights for the CPU (in place; returns ``model``).

    ``model``: a ClvpModelForConditionalGeneration or ClvpForCausalLM on the CPU, in float32 or
    bfloat16, not int8-quantized. Calling it twice changes nothing more. Raises TypeError for another
    kind of model or layer, ValueError for another device or dtype, a model in training mode or a
    torch without oneDNN, before changing anything.
    """
    lm = speech_decoder_lm(model)
    if is_packed(model):
        return model
    refusal = _refusal(lm)
    if refusal is not None:
        raise refusal
    for parent, name in lm.product_slots():
        mod = getattr(parent, name)
        conv1d = isinstance(mod, Conv1D)
        w = mod.weight.t() if conv1d else mod.weight  # (out, in)
        packed = PackedLinear(w, mod.bias, conv1d)
        setattr(parent, name, packed)  # the dense module goes, and with it the dense weight
    return model


@torch.no_grad()
def unpack_decoder_weights(model):
    """Undo ``pack_decoder_weights`` (in place; returns ``model``): dense layers, the same values."""
    lm = speech_decoder_lm(model)
    for parent, name in lm.product_slots():
        mod = getattr(parent, name)
        if not isinstance(mod, PackedLinear):
            continue
        w = mod.dense_weight()  # (out, in)
        with torch.device("meta"):  # no throw-away initialisation
            dense = Conv1D(mod.out_features, mod.in_features) if mod.conv1d else Linear(
                mod.in_features, mod.out_features, bias=mod.bias is not None)
        dense.weight = nn.Parameter(w.t() if mod.conv1d else w)  # Conv1D: (in, out) view of (out, in) memory
        if mod.bias is not None:
            dense.bias = nn.Parameter(mod.bias)
        setattr(parent, name, dense.train(lm.training))
    return model
