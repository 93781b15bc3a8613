"""The prepared GPU command (bench/gpu.sh) keeps working: its --dry-run runs every step it can on the
CPU at tiny shapes, from the source tree with the package staged the way the GPU run stages it."""
import os
import subprocess

from conftest import ROOT


def test_gpu_script_dry_run():
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    res = subprocess.run(["bash", str(ROOT / "bench" / "gpu.sh"), "--dry-run"], cwd="/", capture_output=True,
                         text=True, timeout=900, env=env)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "gpu.sh: " in res.stdout and "torch " in res.stdout
    staged = res.stdout.split("clvp.kernels from ", 1)[1].split()[0]
    assert not staged.startswith(str(ROOT)), staged  # the staged package, as on a machine without an install
    for title in ("Fused rotary attention", "decode_attention", "Decode step", "Training steps", "Corpus runs"):
        assert f"# {title}" in res.stdout, title
    assert "Traceback" not in res.stderr
