"""What this CPU multiplies natively: shared by the eager references and ``clvp.products``."""
from __future__ import annotations

import torch


def cpu_has_fast_half(dtype: torch.dtype) -> bool:
    """Whether this CPU has native bfloat16 / float16 matrix instructions (AVX-512-BF16, AMX, ...).
    Without them torch emulates the products, which runs about 100x slower than float32."""
    try:
        if dtype == torch.bfloat16:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        if dtype == torch.float16:
            return bool(torch.ops.mkldnn._is_mkldnn_fp16_supported())
    except (AttributeError, RuntimeError):  # older builds without the probe: assume yes
        return True
    return True
