"""transformers' own CLVP test machinery against clvp's classes (docs/parity.md §9).

Runs ``tests/transformers_suite/run.py``: the transformers 4.46.3 sdist's shared test mixins over our
CLVP test modules, once with transformers' Clvp classes (the control) and once with clvp's. Every test
the control passes must pass for clvp, except the base-class machinery listed in
``tests/transformers_suite/exclusions.toml``. About five minutes on two CPU cores; it needs the
package index once (the sdist, parameterized, pytest-timeout, and the oracle when ``.oracle/`` is
missing) and fails, never skips, when that download fails.
"""
import json
import subprocess
import sys

from conftest import ROOT

RUN = ROOT / "tests" / "transformers_suite" / "run.py"


def test_clvp_passes_what_transformers_passes(tmp_path):
    report = tmp_path / "suite.json"
    done = subprocess.run(
        [sys.executable, str(RUN), "--json", str(report)], cwd=ROOT, capture_output=True, text=True, timeout=1800
    )
    assert done.returncode != 2, f"the transformers suite harness could not run:\n{done.stderr[-4000:]}"
    results = json.loads(report.read_text())
    control = results["runs"]["transformers"]["tests"]
    assert sum(outcome == "passed" for outcome, _ in control.values()) >= 100, "the control run passed too few tests"
    gaps = results["verdict"]["gaps"]
    listing = "\n".join(f"{test_id}: {outcome}: {message}" for test_id, outcome, message in gaps)
    assert not gaps, f"{len(gaps)} tests pass with transformers' Clvp classes and fail with clvp's:\n{listing}"
    assert done.returncode == 0, done.stdout[-4000:]
