"""The decode-step benchmark (bench/bench_decode_step.py) runs end to end.

Its figures need a GPU (targets: docs/speed.md §7.2); here ``--tiny`` (a 2-layer decoder,
small shapes) checks that every part of it runs on the CPU: our step, transformers' step, our
generation, the same step compiled as one graph in gpt-fast's loop, and transformers' generation when
the oracle is installed, and that the greedy generations it times agree code for code.
"""
import re
import subprocess
import sys

from conftest import ORACLE_DIR, ROOT


def test_bench_decode_step_tiny_runs(tmp_path):
    res = subprocess.run([sys.executable, "-m", "clvp.bench.bench_decode_step", "--tiny", "--save", "--results",
                          str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    text = (tmp_path / "decode_step-tiny.md").read_text()
    assert res.stdout.strip() == text.strip()  # stdout carries the table alone; progress goes to stderr
    for field in ("device", "torch", "dtype", "copy_bandwidth", "model"):
        assert f"- {field}: " in text, field
    rows = [line for line in text.splitlines() if re.match(r"\| \d+ \| \d+ \|", line)]
    assert len(rows) == 2  # (B, ctx) = (1, 16), (4, 32)
    for row in rows:
        eager_ms = row.split("|")[7].strip()
        assert float(eager_ms) > 0
    assert "| ours |" in text
    # the gpt-fast recipe (the step compiled as one graph) runs and gives our greedy codes
    assert "| ours, torch.compile aot_eager (a tracing check, not a timing) |" in text
    assert "ours, torch.compile aot_eager (a tracing check, not a timing): codes equal to ours at 1.000 of positions" in text
    if ORACLE_DIR.is_dir():  # transformers' columns filled, and its greedy codes equal ours
        assert "| transformers |" in text
        assert "transformers: codes equal to ours at 1.000 of positions" in text
