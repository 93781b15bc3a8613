"""Every command in README.md is run here (the pytest command itself is what runs this file).

They run in a scratch folder, in the README's order: the Python example first (it saves the small
random model ``clvp-model`` the commands use), then every shell line. The only things put there
beforehand are what a user downloads: Tortoise's release files ``autoregressive.pth`` /
``clvp2.pth``, as small synthetic stand-ins.
"""
import os
import re
import shlex
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from clvp import ClvpModelForConditionalGeneration

from conftest import ROOT
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


def shell_env():
    """The README's ``python`` and ``clvp`` are this interpreter's."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("readme")
    torch.save(tortoise_autoregressive(), d / "autoregressive.pth")
    torch.save(tortoise_clvp(), d / "clvp2.pth")
    return d


@pytest.fixture(scope="module")
def walkthrough(workdir):
    """The README's Python example, run as written in ``workdir``; returns the warnings it raised."""
    code = blocks("python")
    assert code, "README has no python example"
    here = os.getcwd()
    os.chdir(workdir)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for snippet in code:
                exec(compile(snippet, "README.md", "exec"), {})
    finally:
        os.chdir(here)
    return [str(w.message) for w in caught]


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


def test_python_example_runs(walkthrough, workdir):
    """It works on a folder made the way the README says: the model alone, no processor files."""
    assert (workdir / "clvp-model" / "config.json").is_file()
    assert not (workdir / "clvp-model" / "preprocessor_config.json").exists()
    assert any("packaged" in m and "vocabulary" in m and "mel norms" in m for m in walkthrough), walkthrough


def test_fine_tuning_example_trains_and_saves(walkthrough, workdir):
    """The fine-tuning example moved the encoders' weights (gradients reached them) and saved a loadable model."""
    from safetensors.torch import load_file

    before = load_file(str(workdir / "clvp-model" / "model.safetensors"))
    after = load_file(str(workdir / "clvp-model-finetuned" / "model.safetensors"))
    assert before.keys() == after.keys()
    for key in ("text_encoder_model.layers.0.self_attn.q_proj.weight", "speech_encoder_model.layers.1.input_rmsnorm.weight",
                "logit_scale"):
        assert not torch.equal(before[key], after[key]), key
    ClvpModelForConditionalGeneration.from_pretrained(workdir / "clvp-model-finetuned")


def test_shell_commands_run(walkthrough, workdir):
    results = ROOT / "bench" / "results"
    before = {p.name: p.stat().st_mtime_ns for p in results.iterdir()}
    ran = 0
    for cmd in bash_commands():
        if cmd.startswith("pip install") or "pytest" in cmd:
            continue  # the install and test commands: test_pip_commands_resolve, and this run itself
        res = subprocess.run(["bash", "-c", cmd], cwd=workdir, env=shell_env(), capture_output=True, text=True,
                             timeout=600)
        assert res.returncode == 0, f"{cmd}\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}"
        ran += 1
        if cmd.startswith("clvp bench"):
            assert res.stdout.lstrip().startswith("## bench_"), res.stdout[:500]  # tables only, no progress
    assert ran >= 7
    assert (workdir / "voice.wav").is_file() and (workdir / "result.json").is_file()
    assert (workdir / "clvp-model-converted" / "model.safetensors").is_file()
    assert {p.name: p.stat().st_mtime_ns for p in results.iterdir()} == before  # no --save: nothing written


def test_bench_save_writes_only_where_asked(tmp_path):
    res = subprocess.run([sys.executable, "-m", "clvp", "bench", "--only", "decode_attention", "--save", "--results",
                          str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    written = tmp_path / "decode_attention-cpu.md"
    assert written.read_text().strip() in res.stdout
    assert oct(written.stat().st_mode & 0o777) == "0o644" and [p.name for p in tmp_path.iterdir()] == [written.name]


def test_demo_reports_random_weights_and_kernel_path(workdir):
    res = subprocess.run([sys.executable, "-m", "clvp", "demo", "--candidates", "2", "--batch-size", "1",
                          "--max-new-tokens", "8"], cwd=workdir, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    assert "weights are random" in res.stdout and "--model DIR" in res.stdout
    assert "kernel path:" in res.stdout and "stage times:" in res.stdout
    assert "generating candidates" in res.stderr and "2/2" in res.stderr  # the progress bar, batch by batch
    plan = res.stdout.index("Generating 2 candidates in batches of 1")
    assert plan < res.stdout.index("rank  cand")  # says what it will do before it does it
    assert "higher is a" in res.stdout and "before its stop code" in res.stdout  # the columns explained


def test_demo_single_batch_shows_progress_and_preset_sets_count(workdir):
    res = subprocess.run([sys.executable, "-m", "clvp", "demo", "--preset", "ultra_fast", "--batch-size", "16",
                          "--max-new-tokens", "4"], cwd=workdir, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    assert "Generating 16 candidates in batches of 16" in res.stdout  # the preset's count: --candidates not given
    assert "16/16" in res.stderr  # one batch still shows its progress
    assert len(re.findall(r"^ +\d+ +\d+ +-?\d+\.\d{4} ", res.stdout, flags=re.M)) == 10  # --top 10 rows of 16


def test_demo_escapes_control_characters(workdir):
    res = subprocess.run([sys.executable, "-m", "clvp", "demo", "--candidates", "1", "--batch-size", "1",
                          "--max-new-tokens", "4", "--text", "hi\x1b[2Jthere"], cwd=workdir, capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    assert "\x1b" not in res.stdout and "hi\\x1b[2Jthere" in res.stdout


@pytest.mark.parametrize("args, message", [
    (["rank", "--model", "missing-dir", "--text", "hi"], "does not exist"),
    (["rank", "--model", ".", "--text", "hi"], "no config.json"),
    (["rank", "--model", "clvp-model", "--text", "hi", "--voice", "nope.wav"], "does not exist"),
    (["rank", "--model", "clvp-model", "--text", "hi", "--voice", "autoregressive.pth"], "cannot read"),
    (["demo", "--dtype", "fp8"], "unknown dtype"),
    (["demo", "--device", "tpu9"], "device"),
])
def test_cli_errors_are_one_line_exit_2(walkthrough, workdir, args, message):
    res = subprocess.run([sys.executable, "-m", "clvp", *args], cwd=workdir, capture_output=True, text=True, timeout=300)
    assert res.returncode == 2, (res.stdout, res.stderr)
    err = res.stderr.strip().splitlines()
    assert len(err) == 1 and message in err[0] and "Traceback" not in res.stderr
