"""Per-dtype absolute floors for kernel-vs-reference comparisons.

The rule (flash-attention's): with ``out`` the kernel's output, ``out_ref`` the reference in
float32 and ``out_pt`` the reference in the tested dtype, require
``max|out - out_ref| <= 2 * max|out_pt - out_ref| + ATOL_FLOOR[dtype]``:
the kernel may be at most about as wrong as the reference's own rounding in that dtype.
"""
import torch

ATOL_FLOOR = {
    torch.float32: 1e-5,
    torch.float16: 1e-3,
    torch.bfloat16: 8e-3,
}


def allowed_error(out_pt: torch.Tensor, out_ref: torch.Tensor, dtype: torch.dtype) -> float:
    return 2 * (out_pt.float() - out_ref.float()).abs().max().item() + ATOL_FLOOR[dtype]
