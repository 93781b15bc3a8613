"""Bad inputs through the command line: each is one line on stderr, exit status 2, no traceback,
refused before any work where it can be (``python -m clvp ...`` in a subprocess)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from clvp.configuration import tiny_config
from clvp.modeling import ClvpModelForConditionalGeneration

from conftest import ROOT

ESC = "\x1b"


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    model = root / "tiny"
    ClvpModelForConditionalGeneration(tiny_config()).save_pretrained(model)
    # a model whose config has a wrong-typed field
    bad_cfg = root / "bad_cfg"
    shutil.copytree(model, bad_cfg)
    data = json.loads((bad_cfg / "config.json").read_text())
    data["decoder_config"]["hidden_size"] = "64"
    (bad_cfg / "config.json").write_text(json.dumps(data))
    # a config.json that is not JSON
    not_json = root / "not_json"
    shutil.copytree(model, not_json)
    (not_json / "config.json").write_text("{nope")
    # a sharded checkpoint whose index points outside the folder
    escape = root / "escape"
    shutil.copytree(model, escape)
    (escape / "model.safetensors").unlink()
    (escape / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": os.path.join(os.pardir, os.pardir, "etc", "passwd")}}))
    (root / "no_config").mkdir()
    (root / "not_audio.wav").write_text("this is not audio\n")
    (root / "not_json.json").write_text("[[1, 2")
    (root / "cands_bad.json").write_text(json.dumps({"candidates": [{}]}))
    (root / "codes_outside.json").write_text(json.dumps([[1, 2, 99999]]))
    (root / "codes_bool.json").write_text(json.dumps([[True, 2]]))
    (root / "codes_empty.json").write_text(json.dumps([[]]))
    (root / "codes_ok.json").write_text(json.dumps([[1, 2, 3]]))
    (root / "garbage.pth").write_bytes(b"not a checkpoint")
    (root / "a_file").write_text("x")
    return root


M = "{root}/tiny"
FAST = ["--candidates", "1", "--batch-size", "1", "--max-new-tokens", "2"]

# (id, argv with {root}, fragment of the one stderr line)
CASES = [
    ("no-command", [], "the following arguments are required: command"),
    ("unknown-command", ["speak"], "invalid choice: 'speak'"),
    ("candidates-not-int", ["rank", "--model", M, "--candidates", "abc"], "argument --candidates: invalid int value: 'abc'"),
    ("candidates-zero", ["rank", "--model", M, "--candidates", "0"], "--candidates must be an integer >= 1, got 0"),
    ("batch-size-negative", ["rank", "--model", M, "--batch-size", "-1"], "--batch-size must be an integer >= 1"),
    ("max-new-tokens-zero", ["rank", "--model", M, "--max-new-tokens", "0"], "--max-new-tokens must be an integer >= 1"),
    ("top-zero", ["demo", "--top", "0"], "--top must be an integer >= 1"),
    ("seed-negative", ["demo", "--seed", "-5"], "--seed must be an integer >= 0"),
    ("seed-huge", ["demo", "--seed", str(2**70)], "--seed must be an integer in 0..2**63-1"),
    ("preset-unknown", ["rank", "--model", M, "--preset", "nope"], "unknown --preset 'nope'; choose one of ultra_fast"),
    ("text-empty", ["rank", "--model", M, "--text", ""], "--text '' is empty"),
    ("text-blank", ["demo", "--text", "  \t "], "is empty; give the text to speak"),
    ("text-control-chars-only", ["rank", "--model", M, "--text", f"{ESC}\x07\x08"],
     "--text '\\x1b\\x07\\x08' has nothing to speak"),
    ("text-invisible", ["rank", "--model", M, "--text", "\u200b", *FAST], "--text '\\u200b' has nothing to speak"),
    ("text-too-long-with-control-chars", ["rank", "--model", M, "--text", f"hi{ESC}[2J there " * 200, *FAST],
     "--text 'hi\\x1b[2J there hi\\x1b[2J there"),
    ("voice-missing", ["rank", "--model", M, "--voice", "{root}/missing.wav"], "missing.wav' does not exist"),
    ("voice-not-audio", ["rank", "--model", M, "--voice", "{root}/not_audio.wav", *FAST], "as audio"),
    ("out-missing-folder", ["rank", "--model", M, "--out", "{root}/missing/ranked.json"], "the folder"),
    ("out-is-folder", ["rank", "--model", M, "--out", "{root}"], "is a folder; give a file name"),
    ("model-missing", ["rank", "--model", "{root}/nowhere"], "model folder"),
    ("model-no-config", ["rank", "--model", "{root}/no_config"], "has no config.json"),
    ("model-config-wrong-type", ["rank", "--model", "{root}/bad_cfg", *FAST],
     "config.json: decoder_config: ClvpDecoderConfig.hidden_size must be an integer"),
    ("model-config-not-json", ["rank", "--model", "{root}/not_json", *FAST], "is not valid JSON"),
    ("model-shard-escapes", ["rank", "--model", "{root}/escape", *FAST], "outside the model folder"),
    ("device-unknown", ["rank", "--model", M, "--device", "tpu"], "unknown device 'tpu'"),
    ("dtype-unknown", ["rank", "--model", M, "--dtype", "int8"], "unknown dtype 'int8'"),
    ("max-new-tokens-huge", ["rank", "--model", M, "--candidates", "1", "--max-new-tokens", "1000000000"],
     "new codes fit"),
    ("score-codes-missing", ["score", "--model", M, "--text", "hi", "--codes", "{root}/missing.json"], "does not exist"),
    ("score-codes-not-json", ["score", "--model", M, "--text", "hi", "--codes", "{root}/not_json.json"], "is not valid JSON"),
    ("score-candidates-bad", ["score", "--model", M, "--text", "hi", "--codes", "{root}/cands_bad.json"],
     "'candidates' must be a list of objects with a 'codes' list"),
    ("score-code-outside", ["score", "--model", M, "--text", "hi", "--codes", "{root}/codes_outside.json"],
     "holds code 99999, outside the speech vocabulary"),
    ("score-code-bool", ["score", "--model", M, "--text", "hi", "--codes", "{root}/codes_bool.json"], "integer code lists"),
    ("score-codes-empty", ["score", "--model", M, "--text", "hi", "--codes", "{root}/codes_empty.json"], "integer code lists"),
    ("score-text-empty", ["score", "--model", M, "--text", "", "--codes", "{root}/codes_ok.json"], "is empty"),
    ("score-text-control", ["score", "--model", M, "--text", f"{ESC}\x07\t", "--codes", "{root}/codes_ok.json"],
     "--text '\\x1b\\x07\\t' has nothing to score against"),
    ("convert-missing", ["convert-tortoise", "--autoregressive", "{root}/nope.pth", "--clvp", "{root}/nope.pth",
                         "--out", "{root}/conv"], "does not exist"),
    ("convert-garbage", ["convert-tortoise", "--autoregressive", "{root}/garbage.pth", "--clvp", "{root}/garbage.pth",
                         "--out", "{root}/conv"], "cannot read"),
    ("convert-out-is-file", ["convert-tortoise", "--autoregressive", "{root}/garbage.pth", "--clvp", "{root}/garbage.pth",
                             "--out", "{root}/a_file"], "is a file; convert-tortoise writes a folder"),
    ("bench-unknown", ["bench", "--only", "nope"], "unknown benchmark 'nope'"),
]


def _run(argv):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("CLVP_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "clvp", *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env=env)


@pytest.fixture(scope="module")
def results(dirs):
    """All rows run at once, a few at a time (each is a fresh interpreter)."""
    argvs = {name: [a.format(root=dirs) for a in argv] for name, argv, _ in CASES}
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        futures = {name: pool.submit(_run, argv) for name, argv in argvs.items()}
        return {name: f.result() for name, f in futures.items()}


@pytest.mark.parametrize("name,argv,fragment", CASES, ids=[c[0] for c in CASES])
def test_bad_cli_input_is_one_line_exit_2(results, name, argv, fragment):
    res = results[name]
    lines = res.stderr.splitlines()
    assert res.returncode == 2, (name, res.returncode, res.stderr[-2000:])
    assert "Traceback" not in res.stderr, res.stderr
    assert len(lines) == 1, res.stderr
    assert fragment in lines[0], lines[0]
    assert lines[0].startswith("clvp"), lines[0]
    assert ESC not in res.stderr and "\x07" not in res.stderr  # control characters always escaped


def test_table_is_large_enough():
    assert len(CASES) >= 25


def test_out_in_a_missing_folder_is_refused_before_any_work(results):
    res = results["out-missing-folder"]
    assert res.returncode == 2
    assert "generating candidates" not in res.stderr  # no progress bar: nothing was generated
    assert "Generating" not in res.stdout  # not even the banner: refused before loading the model


def test_out_is_written_atomically(dirs):
    out = dirs / "ranked.json"
    res = _run(["rank", "--model", str(dirs / "tiny"), *FAST, "--out", str(out)])
    assert res.returncode == 0, res.stderr
    assert json.loads(out.read_text())["candidates"][0]["rank"] == 1
    assert not [p for p in dirs.iterdir() if p.name.startswith(".ranked.json.")]  # no temp file left behind
