"""clvp/corpus.py: books and corpora, chunked, resumable and sharded over torchrun (gloo, CPU).

One tiny random model and one small corpus (a book of several chunks, short records, and bad ones:
empty text, an unreadable voice, a line that is not JSON) serve every test. The reference is a
single-process ``python -m clvp.corpus`` run; the others must give its exact bytes.
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from clvp import corpus
from clvp.configuration import tiny_config
from clvp.data import path as data_path
from clvp.modeling import ClvpModelForConditionalGeneration

SETTINGS = ["--candidates", "2", "--batch-size", "2", "--max-new-tokens", "6", "--top", "2", "--seed", "7"]
BOOK = data_path("riding_hood.txt").read_text(encoding="utf-8")[:1300]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("corpus")
    torch.manual_seed(0)
    ClvpModelForConditionalGeneration(tiny_config()).save_pretrained(d / "tiny")
    (d / "broken.wav").write_bytes(b"RIFF not really a wav file")
    lines = [
        json.dumps({"id": "book", "text": BOOK}),
        json.dumps({"id": "empty", "text": "  \n "}),
        json.dumps({"id": "short", "text": "Hello there, wolf."}),
        json.dumps({"id": "badvoice", "text": "This one has a voice file that cannot be read.", "voice": "broken.wav"}),
        "{not json",
        json.dumps({"id": "two voices", "text": "The end. Nobody lived happily ever after.",
                    "voice": [str(data_path("voice_lj.wav")), str(data_path("voice_lj_2.wav"))]}),
    ]
    (d / "texts.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return d


def run(workdir, out, *prefix, env=None, check=True):
    cmd = [*prefix, "-m", "clvp.corpus", "--model", "tiny", "--texts", "texts.jsonl", "--out", out, *SETTINGS]
    proc = subprocess.run([sys.executable, *cmd] if not prefix else cmd, cwd=workdir, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=120)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def reference(workdir):
    run(workdir, "reference.jsonl")
    return (workdir / "reference.jsonl").read_bytes()


def lines_of(data: bytes):
    return [json.loads(x) for x in data.splitlines()]


def test_bad_records_are_reported_and_do_not_stop_the_run(reference):
    rows = lines_of(reference)
    by_id = {}
    for r in rows:
        by_id.setdefault(r["id"], []).append(r)
    assert [r["chunk"] for r in by_id["book"]] == list(range(len(by_id["book"]))) and len(by_id["book"]) >= 5
    assert " ".join(r["text"] for r in by_id["book"]) == " ".join(BOOK.split())
    assert by_id["empty"] == [{"id": "empty", "chunk": None, "error": "empty text"}]
    (bad,) = by_id["badvoice"]
    assert bad["chunk"] == 0 and bad["error"].startswith("voice: cannot read") and "codes" not in bad
    (not_json,) = [r for r in rows if r["id"] == "texts:5"]
    assert not_json["chunk"] is None and "not valid JSON" in not_json["error"]
    for r in by_id["short"] + by_id["two voices"] + by_id["book"]:  # the records after the bad ones ran
        assert len(r["codes"]) == 2 and len(r["codes"][0]) == 6 and r["scores"] == sorted(r["scores"], reverse=True)
        assert r["seed"] == corpus.chunk_seed(7, r["id"], r["chunk"]) and r["model"] == "tiny"
    assert len({r["seed"] for r in rows if "seed" in r}) == len([r for r in rows if "seed" in r])
    assert [r["id"] for r in rows] == ["book"] * len(by_id["book"]) + ["empty", "short", "badvoice", "texts:5",
                                                                       "two voices"]


def test_torchrun_two_ranks_match_a_single_process(workdir, reference):
    proc = run(workdir, "dist.jsonl", sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node=2")
    assert (workdir / "dist.jsonl").read_bytes() == reference
    assert not list(workdir.glob("dist.jsonl.rank*"))  # merged, then removed
    n = len(reference.splitlines())
    assert f"{n}/{n}" in proc.stderr and "wrote dist.jsonl" in proc.stdout  # rank 0's bar counted every rank


def test_torchrun_resumes_from_a_rank_shard(workdir, reference):
    """A rank that died (its shard holds some lines and a torn one) resumes; rank 0 merges it in."""
    rows = reference.splitlines(keepends=True)
    units = [(r["id"], r["chunk"]) for r in lines_of(reference)]
    # rank 1 of 2 had written its first two units, then died mid-line
    shard = corpus.shard_path(workdir / "resumed.jsonl", 1, 2)
    shard.write_bytes(b"".join(rows[k] for k in range(1, len(units), 2)[:2]) + rows[5][:17])
    run(workdir, "resumed.jsonl", sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2")
    assert (workdir / "resumed.jsonl").read_bytes() == reference


KILLABLE = textwrap.dedent("""
    import sys, time
    from clvp import corpus
    real = corpus.generate_candidates
    def slow(*args, **kwargs):
        time.sleep(0.4)
        return real(*args, **kwargs)
    corpus.generate_candidates = slow
    sys.exit(corpus.main(sys.argv[1:]))
""")


def test_killed_run_resumes_without_duplicates_or_gaps(workdir, reference):
    out = workdir / "killed.jsonl"
    (workdir / "killable.py").write_text(KILLABLE)
    cmd = [sys.executable, "killable.py", "--model", "tiny", "--texts", "texts.jsonl", "--out", out.name, *SETTINGS]
    proc = subprocess.Popen(cmd, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and (not out.exists() or out.read_bytes().count(b"\n") < 3):
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    partial = out.read_bytes()
    n = partial.count(b"\n")
    assert 3 <= n < len(reference.splitlines()), "the run was not killed mid-way"
    assert reference.startswith(partial[: partial.rfind(b"\n") + 1])
    with open(out, "ab") as f:  # as if the kill had hit the middle of a write
        f.write(reference.splitlines(keepends=True)[n][:25])
    run(workdir, out.name)
    assert out.read_bytes() == reference


def test_resume_skips_finished_chunks(workdir, reference, monkeypatch, tmp_path):
    calls = []
    real = corpus.generate_candidates

    def counting(*args, **kwargs):
        calls.append(kwargs["seed"])
        return real(*args, **kwargs)

    monkeypatch.setattr(corpus, "generate_candidates", counting)
    model, tok, fe, _ = corpus._load(argparse.Namespace(model=str(workdir / "tiny"), device="cpu", dtype=None, seed=7))
    records = corpus.read_records(workdir / "texts.jsonl")
    for r in records:  # voice paths as the subprocess saw them, relative to the corpus folder
        r.voice = [str(workdir / v) if not os.path.isabs(v) else v for v in r.voice] if r.voice else None
    out = tmp_path / "inproc.jsonl"
    kw = dict(seed=7, candidates=2, batch_size=2, max_new_tokens=6, top=2, progress=False, model_name="tiny")
    ref_rows = lines_of(reference)
    generating = [r for r in ref_rows if "codes" in r]

    s = corpus.generate_corpus(model, tok, fe, records, out, **kw)
    assert len(calls) == len(generating) and s["generated"] == len(ref_rows) and s["missing"] == 0

    def strip_voice(rows):  # the in-process run names the bad voice by its absolute path
        return [{k: v for k, v in r.items() if k not in ("voice", "error")} for r in rows]

    assert strip_voice(lines_of(out.read_bytes())) == strip_voice(ref_rows)
    done = out.read_bytes()
    keep = done.splitlines(keepends=True)[:-3]
    out.write_bytes(b"".join(keep) + b'{"id":"tw')  # last three lost, a torn line
    calls.clear()
    s = corpus.generate_corpus(model, tok, fe, records, out, **kw)
    assert s["done_before"] == len(ref_rows) - 3 and s["generated"] == 3
    assert len(calls) == sum("codes" in r for r in ref_rows[-3:])
    assert out.read_bytes() == done
    calls.clear()
    s = corpus.generate_corpus(model, tok, fe, records, out, **kw)
    assert calls == [] and s["generated"] == 0 and out.read_bytes() == done


def test_seeds_and_records(tmp_path):
    assert corpus.chunk_seed(1, "a", 0) != corpus.chunk_seed(1, "a", 1) != corpus.chunk_seed(2, "a", 1)
    assert corpus.chunk_seed(1, "a", 0) == corpus.chunk_seed(1, "a", 0) < 2**63
    book = tmp_path / "my book.txt"
    book.write_text("Chapter one.\n\nIt was a dark night.")
    (rec,) = corpus.read_records(book)
    assert rec.id == "my book" and rec.text.startswith("Chapter one.") and rec.voice is None
    dup = tmp_path / "dup.jsonl"
    dup.write_text('{"id": "x", "text": "a"}\n{"id": "x", "text": "b"}\n')
    with pytest.raises(ValueError, match="already used"):
        corpus.read_records(dup)
    with pytest.raises(FileNotFoundError):
        corpus.read_records(tmp_path / "missing.txt")
    assert corpus.shard_path(tmp_path / "o.jsonl", 1, 4).name == "o.jsonl.rank1-of-4.jsonl"
