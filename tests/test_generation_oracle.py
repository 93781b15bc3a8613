"""Live comparison with transformers 4.46.3 on fresh random models (needs .oracle/, installed by .ci/run).

Each example runs ``tests/golden/make_generation.py --random-seed S`` in a subprocess with the oracle
on ``PYTHONPATH`` (the library never imports transformers), which builds a random small model, saves
it, and records the oracle's greedy / beam / sampling sequences; the comparisons are the fixture
tests' own (tests/test_generation.py).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import ORACLE_DIR, ROOT

pytestmark = [
    pytest.mark.oracle,
    pytest.mark.skipif(not ORACLE_DIR.is_dir(), reason=f"the oracle (transformers 4.46.3) is not installed in {ORACLE_DIR}"),
]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models on a shared machine
    yield
    torch.set_num_threads(before)


def _make_random(seed: int, out) -> "os.PathLike":
    env = dict(os.environ, PYTHONPATH=str(ORACLE_DIR), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "tests/golden/make_generation.py", "--out", str(out), "--random-seed", str(seed)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out / "generation_random"


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**16))
def test_random_models_match_live_oracle(tmp_path_factory, seed):
    import test_generation as t

    folder = _make_random(seed, tmp_path_factory.mktemp(f"gen{seed}"))
    meta = json.loads((folder / "golden.json").read_text())
    assert meta["oracle"]["transformers"] == "4.46.3"
    try:
        for case_name, case in meta["cases"].items():
            if case["call"] == "composite":
                t.check_composite_case(folder, case_name)
            else:
                t.check_decoder_case(folder, case_name)
    finally:
        t._model.cache_clear()
        t._golden.cache_clear()
