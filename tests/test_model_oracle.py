"""Live comparison with the oracle, transformers 4.46.3 in .oracle/ (installed by .ci/run; docs/parity.md §3).

Skipped when that folder is missing (CI relies on the committed fixtures of tests/test_model.py).
transformers never enters this process: each oracle step runs in a subprocess with
``PYTHONPATH=.oracle``.

* transformers -> ours: ``tests/golden/make_model.py --random-seed S`` builds a fresh random small
  config (sizes, heads, rotary width, biases drawn from S), saves it with transformers'
  ``save_pretrained`` plus its outputs; every check of tests/test_model.py then runs on it.
  One seed is fixed (reproducible), one is new on every run (``CLVP_ORACLE_SEED`` pins it).
* ours -> transformers: our ``save_pretrained`` output loads in transformers with no missing,
  unexpected or mis-shaped tensor, the same config, and the same embeddings and similarities.
"""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import ORACLE_DIR, ROOT
from _asserts import assert_close_verbose
from test_model import CASE_DIRS, CHECKS, Golden

pytestmark = [
    pytest.mark.oracle,
    pytest.mark.skipif(not ORACLE_DIR.is_dir(), reason=f"oracle (transformers 4.46.3) not installed in {ORACLE_DIR}"),
]
ATOL = 1e-4
FRESH_SEED = int(os.environ.get("CLVP_ORACLE_SEED", random.SystemRandom().randrange(10_000, 2**31)))


def run_oracle(args: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ORACLE_DIR))
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"oracle subprocess failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc


SEEDS = (7, FRESH_SEED)


@pytest.fixture(scope="module")
def random_cases(tmp_path_factory):
    """One oracle subprocess writes every random case (importing transformers dominates its time)."""
    out = tmp_path_factory.mktemp("oracle_cases")
    run_oracle(["tests/golden/make_model.py", "--out", str(out), "--random-seed", *map(str, SEEDS)])
    return out


@pytest.mark.parametrize("seed", SEEDS, ids=["seed7", f"fresh{FRESH_SEED}"])
@torch.no_grad()
def test_fresh_random_config_matches_oracle(seed, random_cases):
    g = Golden(random_cases / f"model_random_{seed}")
    assert g.meta["oracle"]["transformers"] == "4.46.3"
    model = g.model()
    for name, check in CHECKS.items():
        try:
            check(g, model)
        except AssertionError as err:
            raise AssertionError(f"seed {seed} (CLVP_ORACLE_SEED={seed} reproduces), check {name!r}: {err}") from None


_LOAD_IN_ORACLE = textwrap.dedent(
    """
    import json, sys, torch
    from safetensors.torch import load_file, save_file
    from transformers import ClvpConfig, ClvpEncoderConfig, ClvpModelForConditionalGeneration
    folder, inputs, out = sys.argv[1:4]
    model, info = ClvpModelForConditionalGeneration.from_pretrained(folder, output_loading_info=True)
    model.eval()
    ins = load_file(inputs)
    with torch.no_grad():
        o = model(input_ids=ins["text_ids"], input_features=ins["features"], attention_mask=ins["text_mask"],
                  return_loss=True)
        res = {
            "text": model.get_text_features(input_ids=ins["text_ids"], attention_mask=ins["text_mask"]),
            "speech": model.get_speech_features(speech_ids=ins["speech_ids"], attention_mask=ins["speech_mask"]),
            "logits_per_text": o.logits_per_text, "loss": o.loss,
            "cond": model.conditioning_encoder(input_features=ins["features"], input_ids=ins["text_ids"],
                                               attention_mask=ins["text_mask"]),
        }
    save_file({k: v.contiguous() for k, v in res.items()}, out)
    speech = ClvpEncoderConfig.from_pretrained(folder, config_type="speech_config")
    print(json.dumps({
        "loading_info": {k: [str(x) for x in v] for k, v in info.items()},
        "config": ClvpConfig.from_pretrained(folder).to_dict(),
        "speech_vocab_via_config_type": speech.vocab_size,
    }))
    """
)


@torch.no_grad()
def test_our_checkpoint_loads_in_oracle(tmp_path):
    g = Golden(CASE_DIRS[0])
    model = g.model()
    model.save_pretrained(tmp_path / "ours")
    names = ("text_ids", "text_mask", "speech_ids", "speech_mask", "features")
    save_file({n: g.i(n).contiguous() for n in names}, str(tmp_path / "inputs.safetensors"))
    script = tmp_path / "load_in_oracle.py"
    script.write_text(_LOAD_IN_ORACLE)
    proc = run_oracle([str(script), str(tmp_path / "ours"), str(tmp_path / "inputs.safetensors"),
                       str(tmp_path / "out.safetensors")])
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["loading_info"] == {"missing_keys": [], "unexpected_keys": [], "mismatched_keys": [],
                                      "error_msgs": []}
    # the config transformers reads back equals ours, field by field
    ours = json.loads(model.config.to_json_string(use_diff=False))  # JSON form, like the report (id2label keys)
    theirs = report["config"]
    for sub in ("text_config", "speech_config", "decoder_config"):
        for key, value in ours[sub].items():
            assert theirs[sub].get(key, value) == value, f"{sub}.{key}: transformers read {theirs[sub].get(key)!r}"
    assert theirs["projection_dim"] == ours["projection_dim"]
    assert report["speech_vocab_via_config_type"] == model.config.speech_config.vocab_size
    res = load_file(str(tmp_path / "out.safetensors"))
    o = model(input_ids=g.i("text_ids"), input_features=g.i("features"), attention_mask=g.i("text_mask"),
              return_loss=True)
    pairs = {
        "text": model.get_text_features(input_ids=g.i("text_ids"), attention_mask=g.i("text_mask")),
        "speech": model.get_speech_features(speech_ids=g.i("speech_ids"), attention_mask=g.i("speech_mask")),
        "logits_per_text": o.logits_per_text, "loss": o.loss,
        "cond": model.conditioning_encoder(input_features=g.i("features"), input_ids=g.i("text_ids"),
                                           attention_mask=g.i("text_mask")),
    }
    for name, ours_t in pairs.items():
        assert_close_verbose(ours_t, res[name], atol=ATOL, what=f"ours saved, transformers loaded: {name}")


_RMSNORM_IN_ORACLE = textwrap.dedent(
    """
    import sys, torch
    from safetensors.torch import load_file, save_file
    from transformers.models.clvp.modeling_clvp import ClvpRMSNorm
    ins = load_file(sys.argv[1])
    norm = ClvpRMSNorm(ins["weight"].shape[0], eps=1e-6).to(ins["x"].dtype)
    norm.weight.data.copy_(ins["weight"])
    with torch.no_grad():
        save_file({"y": norm(ins["x"]).contiguous()}, sys.argv[2])
    """
)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_rmsnorm_on_the_cpu_rounds_like_the_oracle(tmp_path, dtype):
    """The 16-bit CPU RMSNorm (blocks of rows, float32 inside; clvp/model.py) against transformers'
    ClvpRMSNorm in the same dtype: the same two roundings, so equal except where the mean square
    (ours from the norm squared) differs in its last bit: one unit in the last place of the
    normalised value, which the weight product (weights up to 1.5) can carry to two of the result,
    on at most 1e-4 of the elements. Rows not a multiple of the block size; with and without autograd."""
    from clvp.model import ClvpRMSNorm

    gen = torch.Generator().manual_seed(11)
    x = (torch.randn(3, 333, 768, generator=gen) * 3).to(dtype)  # 999 rows: 3 full blocks and a partial one
    weight = (torch.rand(768, generator=gen) + 0.5).to(dtype)
    save_file({"x": x, "weight": weight}, str(tmp_path / "in.safetensors"))
    script = tmp_path / "rmsnorm_oracle.py"
    script.write_text(_RMSNORM_IN_ORACLE)
    run_oracle([str(script), str(tmp_path / "in.safetensors"), str(tmp_path / "out.safetensors")])
    want = load_file(str(tmp_path / "out.safetensors"))["y"]
    norm = ClvpRMSNorm(768).to(dtype)
    norm.weight.data.copy_(weight)
    with torch.no_grad():
        got = norm(x)
    assert torch.equal(norm(x), got)  # the autograd formula gives the same numbers
    ulp = torch.finfo(dtype).eps * want.float().abs().clamp(min=torch.finfo(dtype).tiny)
    diff = (got.float() - want.float()).abs()
    assert diff.le(2 * ulp).all(), diff.max().item()
    assert diff.gt(0).float().mean().item() <= 1e-4
