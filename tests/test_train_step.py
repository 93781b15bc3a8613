"""The training-step benchmark (bench/bench_train_step.py) runs end to end: ``--tiny`` on the CPU."""
import re
import subprocess
import sys

from conftest import ROOT


def test_bench_train_step_tiny_runs(tmp_path):
    res = subprocess.run([sys.executable, "-m", "clvp.bench.bench_train_step", "--tiny", "--save", "--results",
                          str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    text = (tmp_path / "train_step-tiny.md").read_text()
    for field in ("device", "torch", "dtype", "shapes", "matmul_peak"):
        assert f"- {field}: " in text, field
    rows = re.findall(r"^\| (speech encoder fwd\+bwd|contrastive step \(whole model\)) \| (\w+) \| ([\d.]+) \|", text,
                      flags=re.M)
    assert [(r[0], r[1]) for r in rows] == [("speech encoder fwd+bwd", "eager"), ("contrastive step (whole model)",
                                                                                 "eager")]
    assert all(float(r[2]) > 0 for r in rows)
