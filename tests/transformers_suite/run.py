"""Run transformers' own CLVP test machinery against this library, beside a control run.

    python tests/transformers_suite/run.py [--save] [--json PATH] [-k EXPR] [--tests-from DIR]

What it does (docs/parity.md §9):

1. Downloads the transformers 4.46.3 source distribution from the package index with pip into
   ``tests/transformers_suite/.cache/`` (ignored by git), checks its sha256, and extracts the shared
   test mixins from its ``tests/`` folder into a package ``hf_tests`` (the name must end in "tests":
   transformers' ``get_tests_dir`` walks up to such a folder). The sdist does not ship two files the
   mixins read: ``tests/utils/test_configuration_utils.py`` (replaced by a one-line import of
   ``common_config_kwargs.py``) and ``tests/fixtures/sample_text.txt`` (replaced by the story in
   ``clvp/data/riding_hood.txt``).
2. Installs the test-only packages the mixins import (``parameterized``; ``pytest-timeout`` so a hung
   test cannot stall the run) into the same cache folder, and the oracle into ``.oracle/`` when it is
   missing (the command of ``.ci/run``).
3. Runs pytest twice in subprocesses, offline (``HF_HUB_OFFLINE=1``, ``TRANSFORMERS_OFFLINE=1``), on
   the same test modules (``clvp_*.py`` here): once with transformers' Clvp classes (the control) and
   once with clvp's, which ``harness.py`` also writes into transformers' namespace.
4. Compares: every test the control passes must pass for clvp too, except those listed in
   ``exclusions.toml`` (transformers' base-class machinery this library does not carry). Prints the
   per-file counts and the gaps grouped by cause; ``--save`` writes them to
   ``bench/results/transformers_suite.md``.

Exit status: 0 when there is no gap, 1 when some test passes in the control and fails for clvp
without an exclusion, 2 when the harness itself could not run (download, hash, control crashed).

``--tests-from DIR`` runs the real ``tests/models/clvp/test_*.py`` of a transformers v4.46.3 source
checkout in DIR instead of our modules, with the same substitution (it needs that checkout, which a
machine without GitHub access cannot get, and ``datasets`` with its cached LibriSpeech sample).
"""
import argparse
import datetime
import fnmatch
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import time
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from importlib import metadata
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CACHE = HERE / ".cache"
ORACLE = ROOT / ".oracle"
RESULTS = ROOT / "bench" / "results" / "transformers_suite.md"
EXCLUSIONS = HERE / "exclusions.toml"

VERSION = "4.46.3"
SDIST = f"transformers-{VERSION}.tar.gz"
SDIST_SHA256 = "8ee4b3ae943fe33e82afff8e837f4b052058b07ca9be3cb5b729ed31295f72cc"
MIXINS = (
    "test_configuration_common.py",
    "test_feature_extraction_common.py",
    "test_sequence_feature_extraction_common.py",
    "test_modeling_common.py",
    "test_processing_common.py",
    "test_tokenization_common.py",
)
TEST_DEPS = ("parameterized==0.9.0", "pytest-timeout==2.3.1")
ORACLE_PINS = (f"transformers=={VERSION}", "tokenizers==0.20.3", "huggingface_hub==0.26.5")
SUITE = (
    "clvp_configuration.py",
    "clvp_tokenization.py",
    "clvp_feature_extraction.py",
    "clvp_processing.py",
    "clvp_modeling.py",
)
RUNS = ("transformers", "clvp")  # the control first


class HarnessError(RuntimeError):
    """The harness could not run (as opposed to a test failing)."""


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def pip(*args: str) -> None:
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise HarnessError(f"`{' '.join(cmd)}` failed (is the package index reachable?):\n{done.stderr[-2000:]}")


def fetch_sdist() -> Path:
    """The verified sdist in the cache, downloaded with pip when missing."""
    CACHE.mkdir(exist_ok=True)
    path = CACHE / SDIST
    if not path.exists():
        pip("download", "--no-deps", "--no-binary", ":all:", f"transformers=={VERSION}", "-d", str(CACHE))
    if not path.exists():
        raise HarnessError(f"pip reported success but {SDIST} is not in {CACHE}")
    found = sha256(path)
    if found != SDIST_SHA256:
        path.unlink()
        raise HarnessError(f"{SDIST} has sha256 {found}, expected {SDIST_SHA256}; the file was removed")
    return path


def extract_mixins(sdist: Path) -> Path:
    """Writes the mixins package ``hf_tests`` under the cache; returns the folder to put on the path."""
    target = CACHE / "mixins"
    package = target / "hf_tests"
    if package.exists():
        shutil.rmtree(package)
    (package / "utils").mkdir(parents=True)
    (package / "fixtures").mkdir()
    prefix = f"transformers-{VERSION}/tests/"
    with tarfile.open(sdist) as tar:
        for name in MIXINS:
            member = tar.getmember(prefix + name)
            (package / name).write_bytes(tar.extractfile(member).read())
    (package / "__init__.py").write_text("")
    (package / "utils" / "__init__.py").write_text("")
    (package / "utils" / "test_configuration_utils.py").write_text(
        "from common_config_kwargs import config_common_kwargs  # noqa: F401\n"
    )
    shutil.copy(ROOT / "clvp" / "data" / "riding_hood.txt", package / "fixtures" / "sample_text.txt")
    return target


def install_deps() -> Path:
    deps = CACHE / "deps"
    stamp = deps / ".installed"
    if stamp.exists() and stamp.read_text() == "\n".join(TEST_DEPS):
        return deps
    if deps.exists():
        shutil.rmtree(deps)
    pip("install", "--no-deps", "--target", str(deps), *TEST_DEPS)
    stamp.write_text("\n".join(TEST_DEPS))
    return deps


def ensure_oracle() -> None:
    if not (ORACLE / "transformers").is_dir():
        pip("install", "--no-deps", "--target", str(ORACLE), *ORACLE_PINS)


def load_exclusions() -> dict:
    """``{pattern: reason}`` of both tables (machinery not carried, deliberate differences); a pattern
    is ``file::Class::test`` with fnmatch wildcards."""
    with open(EXCLUSIONS, "rb") as f:
        tables = tomllib.load(f)
    table = {**tables["exclude"], **tables.get("deliberate", {})}
    for pattern, reason in table.items():
        if pattern.count("::") != 2 or not reason.strip():
            raise HarnessError(f"exclusions.toml: {pattern!r} needs the form file::Class::test and a reason")
    return table


def excluded(test_id: str, exclusions: dict):
    return next((p for p in exclusions if fnmatch.fnmatchcase(test_id, p)), None)


def start_pytest(impl: str, files: list, pythonpath: list, rootdir: Path, keyword: str, timeout: int) -> dict:
    """Starts one pytest run in a subprocess; ``finish_pytest`` waits for it."""
    report = CACHE / f"junit-{impl}.xml"
    report.unlink(missing_ok=True)
    log = CACHE / f"pytest-{impl}.log"
    env = dict(os.environ)
    env.update(
        CLVP_SUITE_IMPL=impl,
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        PYTHONPATH=os.pathsep.join([str(p) for p in pythonpath] + [p for p in [env.get("PYTHONPATH")] if p]),
    )
    if rootdir == HERE:  # our modules read nothing from the Hugging Face cache; keep the user's out
        env["HF_HOME"] = str(CACHE / "hf_home")
    if "TRITON_INTERPRET" not in env and shutil.which("nvidia-smi") is None:
        env["TRITON_INTERPRET"] = "1"  # as tests/conftest.py: Triton's interpreter without a GPU
    cmd = [
        sys.executable, "-m", "pytest", *map(str, files),
        "-c", str(CACHE / "pytest.ini"), "--rootdir", str(rootdir), "--confcutdir", str(rootdir),
        "-p", "harness", "-p", "no:cacheprovider", "-q", "--no-header", "-rN",
        f"--junitxml={report}", f"--timeout={timeout}",
    ]  # fmt: skip
    if keyword:
        cmd += ["-k", keyword]
    with open(log, "w") as out:
        process = subprocess.Popen(cmd, cwd=CACHE, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
    return {"impl": impl, "process": process, "report": report, "log": log, "start": time.perf_counter()}


def finish_pytest(run: dict) -> dict:
    """Waits for a run; returns ``{"tests": {test_id: (outcome, message first line)}, "wall_s", ...}``."""
    code = run["process"].wait()
    wall = time.perf_counter() - run["start"]
    tail = run["log"].read_text(errors="replace")[-3000:]
    if not run["report"].exists():
        raise HarnessError(f"the {run['impl']} run wrote no report (exit {code}):\n{tail}")
    return {"tests": parse_junit(run["report"]), "wall_s": wall, "exit": code, "tail": tail}


def clean(message: str) -> str:
    """A message's first line without what differs between runs and machines (paths, addresses)."""
    message = re.sub(r"(?<![\w.])/(?:[\w.+-]+/)*[\w.+-]+", "<path>", message)
    return re.sub(r"0x[0-9a-f]{6,}", "<address>", message)[:200]


def parse_junit(path: Path) -> dict:
    results = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        module, _, cls = case.get("classname", "").rpartition(".")
        test_id = f"{module.rpartition('.')[2]}.py::{cls}::{case.get('name')}"
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[child.tag]
                message = (child.get("message") or child.text or "").strip().splitlines()
                message = clean(message[0]) if message else ""
                break
        results[test_id] = (outcome, message)
    return results


def compare(control: dict, ours: dict, exclusions: dict) -> dict:
    gaps, excused, unused = [], [], set(exclusions)
    for test_id, (outcome, _) in sorted(control.items()):
        if outcome != "passed":
            continue
        mine, message = ours.get(test_id, ("missing", "not collected in the clvp run"))
        if mine == "passed":
            continue
        pattern = excluded(test_id, exclusions)
        if pattern:
            excused.append((test_id, pattern, message))
            unused.discard(pattern)
        else:
            gaps.append((test_id, mine, message))
    extra = sorted(t for t, (o, _) in ours.items() if o == "passed" and control.get(t, ("",))[0] != "passed")
    return {"gaps": gaps, "excused": excused, "unused_exclusions": sorted(unused), "clvp_only_passes": extra}


def per_file(results: dict) -> dict:
    counts = defaultdict(Counter)
    for test_id, (outcome, _) in results.items():
        counts[test_id.split("::")[0]][outcome] += 1
    return counts


def render(runs: dict, verdict: dict, conditions: dict) -> str:
    control, ours = runs["transformers"]["tests"], runs["clvp"]["tests"]
    cc, oc = per_file(control), per_file(ours)
    modules = conditions["modules"]
    lines = [
        "# transformers' CLVP test machinery: control (transformers 4.46.3) vs clvp",
        "",
        "Written by `python tests/transformers_suite/run.py --save` (docs/parity.md §9). The same test",
        f"modules in both runs ({modules}); only the Clvp classes differ. A gap is a test the control",
        "passes and clvp does not, without an entry in `tests/transformers_suite/exclusions.toml`.",
        "",
        "Conditions: " + "; ".join(f"{k} {v}" for k, v in conditions.items() if k != "modules") + ".",
        "",
        "| file | control passed | control failed | control skipped | clvp passed | clvp failed | clvp skipped | gaps | excluded |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    gap_files = Counter(g[0].split("::")[0] for g in verdict["gaps"])
    exc_files = Counter(e[0].split("::")[0] for e in verdict["excused"])
    files = sorted(set(cc) | set(oc))
    for f in files + ["total"]:
        c = sum(cc.values(), Counter()) if f == "total" else cc[f]
        o = sum(oc.values(), Counter()) if f == "total" else oc[f]
        g = sum(gap_files.values()) if f == "total" else gap_files[f]
        e = sum(exc_files.values()) if f == "total" else exc_files[f]
        lines.append(
            f"| {f} | {c['passed']} | {c['failed'] + c['error']} | {c['skipped']} | "
            f"{o['passed']} | {o['failed'] + o['error']} | {o['skipped']} | {g} | {e} |"
        )
    lines += ["", f"Wall time: control {runs['transformers']['wall_s']:.0f} s, clvp {runs['clvp']['wall_s']:.0f} s.", ""]
    lines += [f"## Gaps: passed in the control, failed for clvp ({len(verdict['gaps'])})", ""]
    if not verdict["gaps"]:
        lines.append("None.")
    by_cause = defaultdict(list)
    for test_id, outcome, message in verdict["gaps"]:
        by_cause[message or outcome].append(test_id)
    for cause, tests in sorted(by_cause.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        lines.append(f"- `{cause}` ({len(tests)})")
        lines += [f"  - {t}" for t in tests]
    lines += ["", f"## Excluded (base-class machinery or deliberate differences, see exclusions.toml) "
              f"({len(verdict['excused'])})", ""]
    for test_id, pattern, message in verdict["excused"]:
        lines.append(f"- {test_id} ({pattern}): {message}")
    failed = [(t, m) for t, (o, m) in sorted(control.items()) if o in ("failed", "error")]
    lines += ["", f"## Failed in the control, so not counted ({len(failed)})", ""]
    lines += [f"- {t}: {m}" for t, m in failed]
    if verdict["clvp_only_passes"]:
        lines += ["", f"## Passed for clvp but not in the control ({len(verdict['clvp_only_passes'])})", ""]
        lines += [f"- {t} (control: {control.get(t, ('not collected',))[0]})" for t in verdict["clvp_only_passes"]]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--save", action="store_true", help=f"write the report to {RESULTS.relative_to(ROOT)}")
    parser.add_argument("--json", type=Path, help="also write the raw results and verdict as JSON here")
    parser.add_argument("-k", dest="keyword", default="", help="pytest -k expression, for both runs")
    parser.add_argument("--serial", action="store_true", help="run the control, then clvp (default: both at once)")
    parser.add_argument("--timeout", type=int, default=300, help="seconds per test before pytest-timeout stops it")
    parser.add_argument(
        "--tests-from", type=Path, help="a transformers v4.46.3 source checkout: run its tests/models/clvp/test_*.py"
    )
    args = parser.parse_args(argv)
    if args.serial is False and (os.cpu_count() or 1) < 2:
        args.serial = True  # one core: two runs at once only contend
    if args.timeout <= 0:
        parser.error(f"--timeout must be a positive number of seconds, got {args.timeout}")
    if args.tests_from is not None and not sorted((args.tests_from / "tests" / "models" / "clvp").glob("test_*.py")):
        parser.error(f"--tests-from needs a transformers source checkout with tests/models/clvp/test_*.py, got {args.tests_from}")
    started = {}
    try:
        CACHE.mkdir(exist_ok=True)
        ensure_oracle()
        deps = install_deps()
        if args.tests_from is not None:
            clvp_tests = args.tests_from.resolve() / "tests" / "models" / "clvp"
            files = sorted(clvp_tests.glob("test_*.py"))
            pythonpath, rootdir = [HERE, deps, args.tests_from.resolve(), ORACLE], args.tests_from.resolve()
            source, modules = "a transformers source checkout", "its tests/models/clvp/test_*.py"
        else:
            sdist = fetch_sdist()
            mixins = extract_mixins(sdist)
            files = [HERE / name for name in SUITE]
            pythonpath, rootdir = [HERE, mixins, deps, ORACLE], HERE
            source = f"the shared mixins of {SDIST} (sha256 {SDIST_SHA256})"
            modules = "`tests/transformers_suite/clvp_*.py` over the sdist's shared mixins"
        exclusions = load_exclusions()
        (CACHE / "pytest.ini").write_text("[pytest]\npython_files = clvp_*.py test_*.py\njunit_family = xunit1\n")
        runs = {}
        for impl in RUNS:  # both at once on two or more cores unless --serial
            print(f"running the {impl} classes ...", flush=True)
            started[impl] = start_pytest(impl, files, pythonpath, rootdir, args.keyword, args.timeout)
            if args.serial:
                runs[impl] = finish_pytest(started[impl])
        for impl in RUNS:
            runs[impl] = runs.get(impl) or finish_pytest(started[impl])
            counts = Counter(o for o, _ in runs[impl]["tests"].values())
            print(f"  {impl}: {dict(counts)} in {runs[impl]['wall_s']:.0f} s", flush=True)
        if not any(o == "passed" for o, _ in runs["transformers"]["tests"].values()):
            raise HarnessError("the control passed no test: the harness is broken\n" + runs["transformers"]["tail"])
    except HarnessError as exc:
        print(f"transformers suite: {exc}", file=sys.stderr)
        return 2
    finally:
        for run in started.values():  # never leave a run behind (an error, or Ctrl-C, in the other)
            if run["process"].poll() is None:
                run["process"].kill()
                run["process"].wait()
    conditions = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "modules": modules,
        "tests from": source,
        "transformers": VERSION,
        "runs": "one after the other" if args.serial else "both at once",
        "torch": metadata.version("torch"),
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, no GPU" if shutil.which("nvidia-smi") is None else platform.machine(),
    }
    verdict = compare(runs["transformers"]["tests"], runs["clvp"]["tests"], exclusions)
    text = render(runs, verdict, conditions)
    print(text)
    if args.save:
        RESULTS.write_text(text)
        print(f"written: {RESULTS.relative_to(ROOT)}")
    if args.json:
        args.json.write_text(json.dumps({"conditions": conditions, "verdict": verdict, "runs": runs}, indent=1, default=list))
    return 1 if verdict["gaps"] else 0


if __name__ == "__main__":
    sys.exit(main())
