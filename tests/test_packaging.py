"""What gets installed: everything under the one name ``clvp``, beside Hugging Face's stack.

The repository keeps ``kernels/`` and ``bench/`` as top-level folders; pyproject.toml maps them to
``clvp.kernels`` and ``clvp.bench`` (docs/packaging.md). These tests build and install the package the
ways a user does and run it from outside the checkout, where the repository root is not on
``sys.path`` to hide a wrong layout.
"""
import os
import re
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from conftest import ROOT

DEMO = ["demo", "--candidates", "2", "--batch-size", "1", "--max-new-tokens", "4"]


def run(cmd, cwd, **kw):
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600, **kw)
    assert res.returncode == 0, f"{cmd}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res


def outside_env():
    """The environment without the checkout on PYTHONPATH."""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    return env


def hf_kernels_installed() -> bool:
    """Whether Hugging Face's ``kernels`` is importable outside the checkout (inside it, the current
    directory's kernels/ folder comes first on sys.path: docs/packaging.md)."""
    probe = "import importlib.util as u; s = u.find_spec('kernels'); print(s.origin if s else '')"
    res = subprocess.run([sys.executable, "-c", probe], cwd=os.sep, capture_output=True, text=True, env=outside_env())
    return res.returncode == 0 and res.stdout.strip() not in ("", str(ROOT / "kernels" / "__init__.py"))


@pytest.mark.skipif(not hf_kernels_installed(),
                    reason="needs Hugging Face's `kernels` package installed (pip install kernels; .ci/run does)")
def test_beside_hugging_face_kernels_package(tmp_path):
    """`kernels` stays Hugging Face's package, and clvp works next to it from any directory."""
    probe = ("import kernels, clvp.kernels as ours; "
             "print(kernels.__file__); print(ours.__file__); print(hasattr(kernels, 'get_kernel'))")
    theirs, ours, has_api = run([sys.executable, "-c", probe], tmp_path, env=outside_env()).stdout.split()
    assert "site-packages" in theirs and Path(theirs).parent != ROOT / "kernels"
    assert has_api == "True", "import kernels no longer gives Hugging Face's package"
    # ours: the checkout's kernels/ folder (editable install) or site-packages/clvp/kernels (wheel)
    assert Path(ours).parent == ROOT / "kernels" or Path(ours).parent.parent.name == "clvp", ours
    res = run([sys.executable, "-m", "clvp", *DEMO], tmp_path, env=outside_env())
    assert "rank" in res.stdout and "kernel path:" in res.stdout


def _build_wheel(out: Path) -> Path:
    """A wheel of the repository's files, built in a copy (setuptools' build/ folder in the checkout
    would otherwise keep files deleted since and put them in the wheel)."""
    src = out.parent / "src"
    for path in tracked_text_files("."):
        (src / path.relative_to(ROOT)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, src / path.relative_to(ROOT))
    base = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(src)]
    res = subprocess.run(base + ["--no-build-isolation"], capture_output=True, text=True, timeout=600)
    if res.returncode != 0:  # the environment lacks a recent setuptools: let pip fetch one
        run(base, out)
    wheels = list(out.glob("clvp_triton-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_wheel_installs_only_clvp(tmp_path):
    """A wheel built from the repository, in a fresh venv, runs `clvp demo` from an empty directory and
    puts nothing into site-packages but ``clvp`` and its dist-info."""
    wheel = _build_wheel(tmp_path / "dist")
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(env_dir)  # reuses the installed torch
    python = env_dir / "bin" / "python"
    run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index", str(wheel)],
        tmp_path)
    site = Path(run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                    tmp_path).stdout.strip())
    record = next(site.glob("clvp_triton-*.dist-info")) / "RECORD"
    top_level = {line.split(",")[0].split("/")[0] for line in record.read_text().splitlines() if line}
    top_level = {name for name in top_level if name != ".."}  # the console script, bin/clvp, listed one folder up
    assert top_level == {"clvp", record.parent.name}, sorted(top_level)

    empty = tmp_path / "empty"
    empty.mkdir()
    where = run([str(python), "-c", "import clvp, clvp.kernels, clvp.bench; print(clvp.__file__)"], empty,
                env=outside_env()).stdout.strip()
    assert Path(where).is_relative_to(site), where  # the wheel's copy, not the checkout
    res = run([str(env_dir / "bin" / "clvp"), *DEMO], empty, env=outside_env())
    assert "kernel path:" in res.stdout
    # an installed package has no bench/results/ to write into: --save needs a folder, said in one line
    res = subprocess.run([str(env_dir / "bin" / "clvp"), "bench", "--only", "decode_attention", "--save"], cwd=empty,
                         capture_output=True, text=True, timeout=600, env=outside_env())
    assert res.returncode == 2 and "--results DIR" in res.stderr and len(res.stderr.strip().splitlines()) == 1


# What would make a clone elsewhere fail or point a reader outside it: a parent-relative path, a
# machine path, the folder beside the checkout that this project's data was first copied from.
OUTSIDE = re.compile(r"\.\./|(?<![\w.])/(work|home|root|mnt|Users)/|shared/(data|docs)|ROOT\.parent\b")
# Documents that are not in the repository, and issue-tracker numbers, cited from code or docs.
CITATION = re.compile(r"(?<!docs/)\b(reference|performance|style)\.md\b|\b[Ii]ssues? #?[0-9]+\b")


def tracked_text_files(*folders):
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", *folders], cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:  # not a git checkout (an sdist, say): every file under the folders
        return sorted(p for f in folders for p in (ROOT / f).rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    return [ROOT / name for name in out.stdout.split("\0") if name and (ROOT / name).is_file()]


@pytest.mark.parametrize("folder", ["tests", "bench"])
def test_tests_and_benchmarks_read_only_the_repository(folder):
    found = []
    for path in tracked_text_files(folder):
        if path.suffix not in (".py", ".md", ".json", ".txt", ".sh"):
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if OUTSIDE.search(line):
                found.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not found, "paths outside the repository:\n" + "\n".join(found)


def test_no_citation_outside_the_repository():
    found = []
    for path in tracked_text_files("clvp", "kernels", "tests", "bench", "docs", "README.md", ".ci", "pyproject.toml"):
        if path.suffix not in (".py", ".md", ".toml", "") or path.name == "golden.json":
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if CITATION.search(line) or OUTSIDE.search(line):
                found.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not found, "citations of documents outside the repository, issue numbers or machine paths:\n" + \
        "\n".join(found)
