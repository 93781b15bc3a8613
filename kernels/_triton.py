"""What every kernel file shares: the optional triton import, the interpreter check, log2(e).

Without triton the kernel modules still import (their eager references work) and their
``@triton.jit`` definitions stay plain functions; the launchers check ``HAS_TRITON`` and refuse.
"""
import os

import torch

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


def launch(kernel):
    """The kernel as a launcher calls it: ``torch.library.wrap_triton(kernel)`` while torch.compile
    traces a registered op (its AOT pass runs the launcher on fake tensors), so that the launch is
    recorded in the graph; the kernel itself otherwise, so that an eager launch skips the
    higher-order-op dispatch. (Under Triton's interpreter ``wrap_triton`` returns the kernel as is.)"""
    return torch.library.wrap_triton(kernel) if torch.compiler.is_compiling() else kernel
