"""Shared test set-up: Triton's interpreter on machines without a GPU, hypothesis profiles, seeds.

Without CUDA the Triton kernels run on CPU tensors in Triton's interpreter, which must be switched
on before triton is first imported; that is why this runs before any other import.
"""
import os
import shutil

if "TRITON_INTERPRET" not in os.environ and shutil.which("nvidia-smi") is None:
    os.environ["TRITON_INTERPRET"] = "1"

import random  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import settings  # noqa: E402

# "ci": small, bounded example counts (the interpreter is slow); "dev": more; "cuda": full shapes.
settings.register_profile("ci", max_examples=10, deadline=None, derandomize=True, print_blob=True)
settings.register_profile("dev", max_examples=50, deadline=None, print_blob=True)
settings.register_profile("cuda", max_examples=100, deadline=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"  # the published vocabulary and mel norms, to check the packaged copies
FIXTURES = Path(__file__).resolve().parent / "fixtures"
ORACLE_DIR = ROOT / ".oracle"
LJ_CLIPS = ("voice_lj.wav", "voice_lj_2.wav")  # the two LJ Speech clips in clvp/data

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def supports_bfloat16() -> bool:
    return not torch.cuda.is_available() or torch.cuda.is_bf16_supported()


@pytest.fixture(autouse=True)
def _seed():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield


@pytest.fixture
def kernels_backend(monkeypatch):
    """Set CLVP_KERNELS for one test: ``kernels_backend("triton")``."""

    def _set(value: str):
        monkeypatch.setenv("CLVP_KERNELS", value)

    return _set


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module of tiny-model tests: on a shared 2-core machine intra-op
    threads make each small op 10-100x slower. Use with ``pytest.mark.usefixtures("one_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
