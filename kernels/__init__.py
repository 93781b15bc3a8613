"""The ops the CLVP model calls, and the one place that decides how they run.

Each op lives in its own file with the same stem in ``tests/`` and ``bench/``:

* ``rotary_attention`` — bidirectional attention with CLVP's partial rotary on q, k *and* v,
  an optional key-padding mask (text/speech encoders; the conditioning encoder without rotary).
* ``decode_attention`` — one query token per sequence against a static KV cache with per-row
  valid lengths (the decoder's cached step).
* ``log_mel`` — waveform to normalised log-mel (the feature extractor's front end).

Every file holds the eager-torch reference (``*_ref``: the CPU fallback *and* the test oracle),
then the Triton kernel, then its launcher; ``_triton.py`` holds what they share (the optional triton
import, ``triton_interpreter()``, ``LOG2E``, ``launch``) and ``_checks.py`` the launchers' argument checks.
The choice between reference and kernel is made here only:

* ``CLVP_KERNELS`` unset or ``auto``: Triton when the tensor is on CUDA and triton imports,
  the eager reference otherwise;
* ``CLVP_KERNELS=eager``: always the reference;
* ``CLVP_KERNELS=triton``: always Triton (on CPU tensors this needs ``TRITON_INTERPRET=1``,
  Triton's interpreter, which is how the CPU test suite exercises every kernel);
* anything else raises a ValueError listing the allowed values.

float32 on CUDA (``use_triton(x, float32_dots=True)``, the ops whose kernels multiply the inputs with
``tl.dot``: ``rotary_attention``): with ``auto``, float32 tensors take the kernel only when torch
allows TF32 for float32 matrix products (``torch.backends.cuda.matmul.allow_tf32``, which
``torch.set_float32_matmul_precision("high")`` or ``"medium"`` also sets), and then its dots run as
TF32 on tensor cores (``allow_tf32=True``, the rounding torch's own float32 matmuls then use);
otherwise, torch's default, they run on the eager reference. Exact float32 dots in Triton compile to
FMA loops without tensor cores that hold whole tiles in registers (only small tiles avoid spilling),
so the dispatch never picks them; ``CLVP_KERNELS=triton`` still runs them, correctly, with IEEE dots
(bench/results/compile_sm90.md lists their configs). float16 and bfloat16 always take
the kernel on CUDA; ``decode_attention`` (a broadcast product, no ``tl.dot``) and ``log_mel`` (IEEE
float32 dots by design, its DFT needs them) are not affected. Every config the launchers can pick is
compiled for sm_90 in CI (tests/test_compile_sm90.py): within 227 KiB of shared memory, and no
register spills for 16-bit and TF32 inputs. See docs/speed.md.

Registration: each launcher is also a ``torch.library`` op (``torch.library.triton_op``, namespace
``clvp``): ``torch.ops.clvp.rotary_attention``, ``rotary_attention_lse`` (output and log-sum-exp,
with the fused backward registered by ``register_autograd``), ``rotary_attention_backward``,
``decode_attention`` and ``log_mel``, each with a fake implementation (shapes, dtypes and strides
of the launcher's output). The Triton path of the dispatch functions calls these ops, so
torch.compile traces a kernel call as one node (no graph break) and, in its AOT pass, sees the
kernels themselves: the launchers launch through ``_triton.launch``, ``torch.library.wrap_triton``
while torch traces and the plain kernel in eager. Run eagerly, an op is its launcher (the
interpreter included); under the interpreter ``wrap_triton`` cannot look into a kernel, so there a
compiled model calls the ops as opaque nodes (backend "eager").

Gradients: a Triton path never returns a result without its gradient. When autograd wants one
(``torch.is_grad_enabled()`` and an input requires grad), ``rotary_attention`` runs its fused
backward through the op ``clvp::rotary_attention_lse`` and its registered autograd, and
``decode_attention`` and ``log_mel``, which have no Triton backward, run their differentiable
references.

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


def tf32_allowed() -> bool:
    """Whether torch lets float32 matrix products round to TF32: ``torch.backends.cuda.matmul.allow_tf32``
    (also set by ``torch.set_float32_matmul_precision("high")`` or ``"medium"``; read on every call, and
    traceable by torch.compile, unlike ``torch.get_float32_matmul_precision()``)."""
    return bool(torch.backends.cuda.matmul.allow_tf32)


def use_triton(x: torch.Tensor, *, float32_dots: bool = False) -> bool:
    """The single dispatch decision: run the Triton kernel for a tensor like ``x``?

    ``float32_dots``: the op's kernel multiplies ``x``'s values with ``tl.dot``. Then, with
    ``CLVP_KERNELS=auto``, a float32 ``x`` on CUDA takes the kernel only when :func:`tf32_allowed`
    (and the caller passes ``allow_tf32=tf32_allowed()`` to it); otherwise the eager reference.
    """
    mode = backend()
    if mode == "eager":
        return False
    if mode == "auto":
        if not (HAS_TRITON and x.is_cuda):
            return False
        return not (float32_dots and x.dtype == torch.float32 and not tf32_allowed())
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


# the references, and the Triton paths under names that do not shadow the dispatch functions:
# the launchers as the torch.library ops their modules register (torch.ops.clvp.*)
from .rotary_attention import apply_rotary_ref, rotary_attention_ref, rotary_tables  # noqa: E402
from .rotary_attention import rotary_attention_autograd as _rotary_attention_triton_autograd  # noqa: E402
from .decode_attention import decode_attention_ref  # noqa: E402
from .log_mel import log_mel_ref  # noqa: E402

_rotary_attention_triton = torch.ops.clvp.rotary_attention
_decode_attention_triton = torch.ops.clvp.decode_attention
_log_mel_triton = torch.ops.clvp.log_mel


def _wants_grad(*tensors) -> bool:
    """Whether autograd will ask for gradients through a call on these tensors."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def rotary_attention(q, k, v, cos=None, sin=None, key_padding_mask=None, *, scale=None, in_place=False):
    """Bidirectional attention with partial rotary on q, k and v; see ``kernels/rotary_attention.py``.

    ``cos``/``sin``: (T, R) tables shared by every row, None for no rotary, or per-row tables
    (B, 1, T, R) (rows at different positions, see ``rotary_tables``). Per-row tables are applied
    here, with the reference rotation broadcast over the heads, and the chosen path then runs
    without tables, so callers need no special case (the eager path gives exactly what
    ``rotary_attention_ref`` gives with the per-row tables, which it broadcasts).

    ``in_place=True``: q, k and v are the caller's scratch, which the eager path may rotate where
    they lie (``rotary_attention_ref``); the Triton kernel never writes its inputs.
    """
    if cos is not None and sin is not None and cos.dim() == 4:
        q, k, v = (apply_rotary_ref(t, cos, sin) for t in (q, k, v))
        cos = sin = None
    if use_triton(q, float32_dots=True):
        allow_tf32 = tf32_allowed()  # float32: TF32 dots when torch allows them, else IEEE (CLVP_KERNELS=triton)
        if _wants_grad(cos, sin):  # the kernel's backward gives no gradient for the tables
            return rotary_attention_ref(q, k, v, cos, sin, key_padding_mask, scale=scale)
        if _wants_grad(q, k, v):  # the fused backward, through the op with a registered autograd
            return _rotary_attention_triton_autograd(q, k, v, cos, sin, key_padding_mask, scale=scale,
                                                     allow_tf32=allow_tf32)
        return _rotary_attention_triton(q, k, v, cos, sin, key_padding_mask, scale=scale, allow_tf32=allow_tf32)
    return rotary_attention_ref(q, k, v, cos, sin, key_padding_mask, scale=scale, in_place=in_place)


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
    "tf32_allowed",
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
