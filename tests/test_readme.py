"""Every command in README.md is run here (the pytest command itself is what runs this file).

The commands run in a scratch folder holding what they name: ``clvp-model`` (a small random model
saved with its tokenizer and feature extractor), ``voice.wav`` (an LJ Speech clip) and small
synthetic Tortoise checkpoints ``autoregressive.pth`` / ``clvp2.pth``.
"""
import re
import shlex
import shutil
import subprocess
import sys

import pytest
import torch

from clvp import ClvpModelForConditionalGeneration, ClvpProcessor
from clvp.configuration import tiny_config

from conftest import ROOT, SHARED_DATA
from test_convert import tortoise_autoregressive, tortoise_clvp

README = (ROOT / "README.md").read_text()


def blocks(lang):
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def bash_commands():
    cmds = []
    for block in blocks("bash"):
        for line in block.strip().splitlines():
            cmds.extend(part.strip() for part in line.split("&&"))
    return cmds


@pytest.fixture
def workdir(tmp_path):
    d = tmp_path
    torch.manual_seed(0)
    ClvpModelForConditionalGeneration(tiny_config()).save_pretrained(d / "clvp-model")
    ClvpProcessor().save_pretrained(d / "clvp-model")
    shutil.copy(ROOT / "clvp" / "data" / "voice_lj.wav", d / "voice.wav")
    torch.save(tortoise_autoregressive(), d / "autoregressive.pth")
    torch.save(tortoise_clvp(), d / "clvp2.pth")
    return d


def test_readme_names_the_ci_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    test_line = next(b for b in blocks("bash") if "pytest" in b).strip()
    assert test_line.replace("pip install", "python -m pip install") in ci


def test_pip_commands_resolve(tmp_path):
    for cmd in bash_commands():
        if cmd.startswith("pip install"):
            args = shlex.split(cmd)[2:]
            res = subprocess.run(
                [sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", "--no-index", "--no-build-isolation",
                 *args], cwd=ROOT, capture_output=True, text=True, timeout=300,
            )
            assert res.returncode == 0, res.stderr[-2000:]


def test_clvp_commands_run(workdir, monkeypatch):
    monkeypatch.setenv("CLVP_BENCH_RESULTS", str(workdir / "bench-results"))  # leave bench/results/ alone
    ran = 0
    for cmd in bash_commands():
        if not cmd.startswith("clvp "):
            continue
        args = shlex.split(cmd)[1:]
        res = subprocess.run([sys.executable, "-m", "clvp", *args], cwd=workdir, capture_output=True, text=True,
                             timeout=600)
        assert res.returncode == 0, f"{cmd}\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}"
        ran += 1
    assert ran >= 5
    assert (workdir / "result.json").is_file()
    assert any((workdir / "bench-results").iterdir())


def test_python_example_runs(workdir, monkeypatch):
    monkeypatch.chdir(workdir)
    code = blocks("python")
    assert code, "README has no python example"
    for snippet in code:
        exec(compile(snippet, "README.md", "exec"), {})


def test_demo_reports_random_weights_and_kernel_path(workdir):
    res = subprocess.run([sys.executable, "-m", "clvp", "demo", "--candidates", "2", "--batch-size", "1",
                          "--max-new-tokens", "8"], cwd=workdir, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    assert "weights are random" in res.stdout and "--model DIR" in res.stdout
    assert "kernel path:" in res.stdout and "stage times:" in res.stdout
    assert "generating candidates" in res.stderr  # the progress bar, since there is more than one batch


@pytest.mark.parametrize("args, message", [
    (["rank", "--model", "missing-dir", "--text", "hi"], "does not exist"),
    (["rank", "--model", ".", "--text", "hi"], "no config.json"),
    (["rank", "--model", "clvp-model", "--text", "hi", "--voice", "nope.wav"], "does not exist"),
    (["rank", "--model", "clvp-model", "--text", "hi", "--voice", "autoregressive.pth"], "cannot read"),
    (["demo", "--dtype", "fp8"], "unknown dtype"),
    (["demo", "--device", "tpu9"], "device"),
])
def test_cli_errors_are_one_line_exit_2(workdir, args, message):
    res = subprocess.run([sys.executable, "-m", "clvp", *args], cwd=workdir, capture_output=True, text=True, timeout=300)
    assert res.returncode == 2, (res.stdout, res.stderr)
    err = res.stderr.strip().splitlines()
    assert len(err) == 1 and message in err[0] and "Traceback" not in res.stderr
