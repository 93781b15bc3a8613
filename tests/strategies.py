"""Hypothesis strategies shared by the kernel and property tests (one place, capped sizes)."""
import torch
from hypothesis import strategies as st

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
dtypes = st.sampled_from(FLOAT_DTYPES)
