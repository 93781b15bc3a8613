"""What every kernel file shares: the optional triton import, the interpreter check, log2(e).

Without triton the kernel modules still import (their eager references work) and their
``@triton.jit`` definitions stay plain functions; the launchers check ``HAS_TRITON`` and refuse.
"""
import os

try:
    import triton
    import triton.language as tl

    HAS_TRITON = True
except ImportError:  # pragma: no cover - depends on the machine

    class _NoTriton:
        """Stand-in so ``@triton.jit`` definitions parse where triton is not installed."""

        @staticmethod
        def jit(fn):
            return fn

    triton, tl = _NoTriton(), None
    HAS_TRITON = False

LOG2E = 1.4426950408889634  # log2(e): the softmaxes run in base 2, exp(x) = exp2(x * LOG2E), exp2 is one instruction


def triton_interpreter() -> bool:
    """Is Triton's interpreter on (``TRITON_INTERPRET`` set and not 0)? Read on every call so tests can flip it."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
