"""The optional triton import every kernel file shares.

Without triton the kernel modules still import (their eager references work) and their
``@triton.jit`` definitions stay plain functions; the launchers check ``HAS_TRITON`` and refuse.
"""
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
