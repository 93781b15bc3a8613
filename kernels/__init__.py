"""The ops the CLVP model calls, and the one place that decides how they run.

Each op lives in its own file with the same stem in ``tests/`` and ``bench/``:

* ``rotary_attention`` — bidirectional attention with CLVP's partial rotary on q, k *and* v,
  an optional key-padding mask (text/speech encoders; the conditioning encoder without rotary).
* ``decode_attention`` — one query token per sequence against a static KV cache with per-row
  valid lengths (the decoder's cached step).
* ``log_mel`` — waveform to normalised log-mel (the feature extractor's front end).

Every file holds the eager-torch reference (``*_ref``: the CPU fallback *and* the test oracle),
then the Triton kernel, then its launcher; ``_triton.py`` holds what they share (the optional triton
import, ``triton_interpreter()``, ``LOG2E``) and ``_checks.py`` the launchers' argument checks.
The choice between reference and kernel is made here only:

* ``CLVP_KERNELS`` unset or ``auto``: Triton when the tensor is on CUDA and triton imports,
  the eager reference otherwise;
* ``CLVP_KERNELS=eager``: always the reference;
* ``CLVP_KERNELS=triton``: always Triton (on CPU tensors this needs ``TRITON_INTERPRET=1``,
  Triton's interpreter, which is how the CPU test suite exercises every kernel);
* anything else raises a ValueError listing the allowed values.

Gradients: a Triton path never returns a result without its gradient. When autograd wants one
(``torch.is_grad_enabled()`` and an input requires grad), ``rotary_attention`` runs its fused
backward through an ``autograd.Function``, and ``decode_attention`` and ``log_mel``, which have no
Triton backward, run their differentiable references.

The dispatch functions below share their names with the op files, so ``clvp.kernels.decode_attention``
is the function; reach a module with ``from clvp.kernels.decode_attention import ...`` or
``importlib.import_module("clvp.kernels.decode_attention")``.
"""
from __future__ import annotations

import os

import torch

# triton is optional: without it everything runs on the eager references
from ._triton import HAS_TRITON, triton_interpreter

ALLOWED_BACKENDS = ("auto", "eager", "triton")


def backend() -> str:
    """The backend asked for by ``CLVP_KERNELS`` (read on every call so tests can flip it)."""
    value = os.environ.get("CLVP_KERNELS", "auto").strip().lower() or "auto"
    if value not in ALLOWED_BACKENDS:
        raise ValueError(
            f"CLVP_KERNELS={os.environ.get('CLVP_KERNELS')!r} is not a backend; "
            f"allowed values are {', '.join(ALLOWED_BACKENDS)}"
        )
    return value


def use_triton(x: torch.Tensor) -> bool:
    """The single dispatch decision: run the Triton kernel for a tensor like ``x``?"""
    mode = backend()
    if mode == "eager":
        return False
    if mode == "auto":
        return HAS_TRITON and x.is_cuda
    # mode == "triton": asked for explicitly, so refuse loudly rather than fall back silently
    if not HAS_TRITON:
        raise RuntimeError("CLVP_KERNELS=triton but triton is not importable; install triton or use CLVP_KERNELS=eager")
    if not x.is_cuda and not triton_interpreter():
        raise RuntimeError(
            "CLVP_KERNELS=triton on a CPU tensor needs Triton's interpreter: set TRITON_INTERPRET=1 "
            "before triton is imported, or use CLVP_KERNELS=eager"
        )
    return True


def describe(x: torch.Tensor | None = None) -> str:
    """A one-line description of the path the kernels take for tensors like ``x`` (for logs)."""
    x = x if x is not None else torch.empty(0)
    if use_triton(x):
        return "triton (interpreter)" if not x.is_cuda else "triton"
    return "eager torch"


# the references, and the Triton launchers under names that do not shadow the dispatch functions
from .rotary_attention import apply_rotary_ref, rotary_attention_ref, rotary_tables  # noqa: E402
from .rotary_attention import rotary_attention as _rotary_attention_triton  # noqa: E402
from .rotary_attention import rotary_attention_autograd as _rotary_attention_triton_autograd  # noqa: E402
from .decode_attention import decode_attention_ref  # noqa: E402
from .decode_attention import decode_attention as _decode_attention_triton  # noqa: E402
from .log_mel import log_mel_ref  # noqa: E402
from .log_mel import log_mel as _log_mel_triton  # noqa: E402


def _wants_grad(*tensors) -> bool:
    """Whether autograd will ask for gradients through a call on these tensors."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def rotary_attention(q, k, v, cos=None, sin=None, key_padding_mask=None, *, scale=None):
    """Bidirectional attention with partial rotary on q, k and v; see ``kernels/rotary_attention.py``.

    ``cos``/``sin``: (T, R) tables shared by every row, None for no rotary, or per-row tables
    (B, 1, T, R) (rows at different positions, see ``rotary_tables``). Per-row tables are applied
    here, with the reference rotation broadcast over the heads, and the chosen path then runs
    without tables, so callers need no special case (the eager path gives exactly what
    ``rotary_attention_ref`` gives with the per-row tables, which it broadcasts).
    """
    if cos is not None and sin is not None and cos.dim() == 4:
        q, k, v = (apply_rotary_ref(t, cos, sin) for t in (q, k, v))
        cos = sin = None
    if use_triton(q):
        if _wants_grad(cos, sin):  # the kernel's backward gives no gradient for the tables
            return rotary_attention_ref(q, k, v, cos, sin, key_padding_mask, scale=scale)
        if _wants_grad(q, k, v):  # the fused backward, through an autograd Function
            return _rotary_attention_triton_autograd(q, k, v, cos, sin, key_padding_mask, scale=scale)
        return _rotary_attention_triton(q, k, v, cos, sin, key_padding_mask, scale=scale)
    return rotary_attention_ref(q, k, v, cos, sin, key_padding_mask, scale=scale)


def decode_attention(q, k_cache, v_cache, lengths, *, scale=None):
    """One query token per row against a static KV cache; see ``kernels/decode_attention.py``."""
    if use_triton(q) and not _wants_grad(q, k_cache, v_cache):  # no Triton backward: the reference's autograd
        return _decode_attention_triton(q, k_cache, v_cache, lengths, scale=scale)
    return decode_attention_ref(q, k_cache, v_cache, lengths, scale=scale)


def log_mel(waveforms, window, mel_filters, mel_norms=None, *, n_fft, hop_length):
    """Waveforms to normalised log-mel; see ``kernels/log_mel.py``."""
    if use_triton(waveforms) and not _wants_grad(waveforms, window, mel_filters, mel_norms):  # likewise
        return _log_mel_triton(waveforms, window, mel_filters, mel_norms, n_fft=n_fft, hop_length=hop_length)
    return log_mel_ref(waveforms, window, mel_filters, mel_norms, n_fft=n_fft, hop_length=hop_length)


__all__ = [
    "ALLOWED_BACKENDS",
    "HAS_TRITON",
    "backend",
    "triton_interpreter",
    "use_triton",
    "describe",
    "rotary_attention",
    "rotary_attention_ref",
    "apply_rotary_ref",
    "rotary_tables",
    "decode_attention",
    "decode_attention_ref",
    "log_mel",
    "log_mel_ref",
]
