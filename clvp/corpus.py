"""Whole books and corpora: every record split into chunks, each chunk's candidates generated and
ranked, one JSONL line per chunk; resumable, and sharded over ``torchrun`` processes.

Input (``read_records``): a plain text file is one record (id: the file's stem, the whole text); a
``.jsonl`` / ``.ndjson`` file holds one JSON object a line with ``id``, ``text`` and optionally
``voice`` (a path or a list of paths of one voice; relative paths are tried from the working
folder, then from the JSONL file's folder). Records without a voice use ``--voice`` (default: the
bundled LJ Speech clip). Ids must be unique: (id, chunk index) is what a re-run skips.

Work: each record is cut by ``clvp.text_split.split_text`` (under the model's token limit, about 200
characters a chunk); the chunks of all records, in input order, are the run's work units. Rank 0
lists the units without a line yet (all of them in a fresh run) and broadcasts the list; its i-th
unit runs on rank ``i % world_size`` (unit k on rank k % N in a fresh run; a resumed run deals out
what is left, so no rank waits long at the final barrier). A unit's sampling seed is a hash of the
global seed, the record id and the chunk index (``chunk_seed``), so its result does not depend on
how the work is split.

Output, one JSON line per unit: ``{"id", "chunk", "text", "voice", "seed", "codes": [best ``top``
code lists], "scores": [their CLVP scores], "model", "settings"}``; a record with bad input gives
``{"id", "chunk": null or the chunk index, "error": message}`` instead (empty text, a JSONL line that
does not parse: chunk null; an unreadable voice file, a chunk generation refuses: per chunk), and
the run goes on. Error lines count as done: delete them (or use another ``--out``) to retry.

Crash safety: every line is written whole by one ``os.write`` on an ``O_APPEND`` descriptor, then
fsynced; a torn last line (a crash mid-write) is cut off on resume, so a crash loses at most the
unit in flight. A re-run with the same ``--out`` skips the units found in ``--out`` and in any
shard file ``<out>.rank<r>-of-<N>.jsonl``, and gives identical lines for the rest.

Distributed (``torchrun --nproc_per_node=N -m clvp.corpus ...``, or ``clvp rank --texts`` under
torchrun): each rank loads its own model (``cuda:LOCAL_RANK`` on GPUs, NCCL; gloo on the CPU) and
appends to its shard; after a barrier rank 0 merges ``--out`` and all shards in input order into
``--out`` (a temporary file, then ``os.replace``) and removes the shards, so the output equals a
single-process run's. A single-process run ends with the same merge. A rank's progress bar exists
on rank 0 only, counting every rank's finished chunks (it reads the other shards as they grow).
"""
from __future__ import annotations

import argparse
import copy
import datetime
import hashlib
import json
import os
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from .audio import load_audio
from .candidates import PRESETS, generate_candidates
from .configuration import tiny_config
from .data import path as data_path
from .loading import resolve_device, resolve_dtype
from .modeling import ClvpModelForConditionalGeneration
from .processing import ClvpProcessor
from .text_split import split_text

__all__ = ["Record", "Unit", "read_records", "work_units", "chunk_seed", "generate_corpus", "merge_outputs",
           "shard_path", "add_corpus_arguments", "run_corpus", "main"]

JSONL_SUFFIXES = (".jsonl", ".ndjson")
DEFAULT_CANDIDATES = 16  # as `clvp rank`
VOICE_CACHE = 8  # voices whose features stay loaded


@dataclass
class Record:
    id: str
    text: str | None
    voice: list[str] | None = None
    error: str | None = None  # bad input found while reading (the record then gives one error line)


@dataclass
class Unit:
    """One line of output: a chunk of a record, or a record's error."""
    id: str
    chunk: int | None
    text: str | None
    voice: list[str] | None
    error: str | None = None

    @property
    def key(self) -> tuple:
        return (self.id, self.chunk)


# ---- input --------------------------------------------------------------------------------------

def _resolve_voice(value, base: Path) -> list[str]:
    paths = [value] if isinstance(value, str) else value
    if not isinstance(paths, list) or not paths or not all(isinstance(p, str) and p for p in paths):
        raise ValueError(f"voice must be a path or a non-empty list of paths, got {value!r}")
    out = []
    for p in paths:
        q = Path(p)
        if not q.is_absolute() and not q.exists() and (base / q).exists():
            q = base / q
        out.append(str(q))
    return out


def read_records(path) -> list[Record]:
    """Records of a plain text file (one, id = the file stem) or a JSONL file (one a line, module
    docstring). A bad line becomes a record with ``error`` set; a repeated id is a ValueError."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"texts file {path} does not exist")
    raw = path.read_text(encoding="utf-8")
    if path.suffix.lower() not in JSONL_SUFFIXES:
        return [Record(id=path.stem, text=raw)]
    records, seen = [], {}
    for n, line in enumerate(raw.split("\n"), 1):  # not splitlines: U+2028 may sit inside a JSON string
        if not line.strip():
            continue
        fallback = f"{path.stem}:{n}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            records.append(Record(id=fallback, text=None, error=f"line {n} is not valid JSON: {err}"))
            continue
        if not isinstance(obj, dict):
            records.append(Record(id=fallback, text=None, error=f"line {n} is not a JSON object"))
            continue
        rid = obj.get("id", fallback)
        rid = rid if isinstance(rid, str) else json.dumps(rid)
        if rid in seen:
            raise ValueError(f"{path}: id {rid!r} on line {n} was already used on line {seen[rid]}; ids must be unique")
        seen[rid] = n
        text, error, voice = obj.get("text"), None, None
        if not isinstance(text, str):
            error, text = f"line {n}: 'text' must be a string, got {type(text).__name__}", None
        if obj.get("voice") is not None:
            try:
                voice = _resolve_voice(obj["voice"], path.parent)
            except ValueError as err:
                error = f"line {n}: {err}"
        records.append(Record(id=rid, text=text, voice=voice, error=error))
    return records


def work_units(records: list[Record], tokenizer, *, max_tokens: int, target_chars: int = 200,
               max_chars: int = 300) -> list[Unit]:
    """All records' chunks in input order (a record with bad input: one error unit, chunk None)."""
    units = []
    for r in records:
        if r.error is not None:
            units.append(Unit(r.id, None, None, r.voice, r.error))
            continue
        chunks = split_text(r.text, tokenizer, max_tokens=max_tokens, target_chars=target_chars, max_chars=max_chars)
        if not chunks:
            units.append(Unit(r.id, None, None, r.voice, "empty text"))
            continue
        units.extend(Unit(r.id, i, c, r.voice) for i, c in enumerate(chunks))
    return units


def chunk_seed(seed: int, record_id: str, chunk: int | None) -> int:
    """The sampling seed of one chunk: a hash of (global seed, record id, chunk index), in [0, 2**63)."""
    digest = hashlib.sha256(json.dumps([int(seed), record_id, chunk]).encode()).digest()
    return int.from_bytes(digest[:8], "big") & (2**63 - 1)


# ---- output files ---------------------------------------------------------------------------------

def shard_path(out_path, rank: int, world_size: int) -> Path:
    out_path = Path(out_path)
    return out_path.with_name(f"{out_path.name}.rank{rank}-of-{world_size}.jsonl")


def _shard_files(out_path: Path) -> list[Path]:
    return sorted(out_path.parent.glob(f"{out_path.name}.rank*-of-*.jsonl"))


def _line_key(line: bytes):
    """(id, chunk) of a complete output line, or None if it does not parse."""
    try:
        obj = json.loads(line)
        return (obj["id"], obj["chunk"])
    except (ValueError, KeyError, TypeError):
        return None


def _read_lines(path: Path, *, repair: bool = False) -> list[tuple[tuple, bytes]]:
    """The complete lines of ``path`` as (key, line); a torn last line is ignored (and with ``repair``
    cut off the file, so that the next append starts a fresh line)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    end = data.rfind(b"\n") + 1
    if end < len(data) and repair:
        with open(path, "r+b") as f:
            f.truncate(end)
            f.flush()
            os.fsync(f.fileno())
    out = []
    for line in data[:end].splitlines(keepends=True):
        key = _line_key(line)
        if key is not None:
            out.append((key, line))
    return out


def _encode(obj: dict) -> bytes:
    return (json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


def _append(fd: int, line: bytes) -> None:
    """One whole line with one write on an O_APPEND descriptor, then fsync."""
    written = os.write(fd, line)
    while written < len(line):  # a short write (disk full, signal): finish it; resume cuts a torn tail
        written += os.write(fd, line[written:])
    os.fsync(fd)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    try:
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:  # pragma: no cover - filesystems without directory fsync
        pass


def merge_outputs(out_path, units: list[Unit]) -> dict:
    """Rewrite ``out_path`` from itself and every shard file: the units' lines in input order, then any
    other lines found (another input's) in their order; remove the shards. Returns counts."""
    out_path = Path(out_path)
    shards = _shard_files(out_path)
    wanted = {u.key for u in units}
    found, extra, extra_keys = {}, [], set()
    for src in [out_path, *shards]:
        for key, line in _read_lines(src):
            if key in wanted:
                found.setdefault(key, line)
            elif key not in extra_keys:
                extra_keys.add(key)
                extra.append(line)
    ordered = [found[u.key] for u in units if u.key in found]
    _write_atomic(out_path, b"".join(ordered + extra))
    for s in shards:
        s.unlink()
    return {"lines": len(ordered) + len(extra), "missing": len(units) - len(ordered), "other": len(extra)}


class _ShardWatcher:
    """Rank 0's view of the other ranks' progress: new complete lines of their shard files."""

    def __init__(self, paths: list[Path], wanted: set, seen: set):
        self.offsets = {p: 0 for p in paths}
        self.wanted, self.seen = wanted, seen

    def poll(self) -> int:
        new = 0
        for p, off in self.offsets.items():
            try:
                with open(p, "rb") as f:
                    f.seek(off)
                    data = f.read()
            except FileNotFoundError:
                continue
            end = data.rfind(b"\n") + 1
            self.offsets[p] = off + end
            for line in data[:end].splitlines():
                key = _line_key(line)
                if key in self.wanted and key not in self.seen:
                    self.seen.add(key)
                    new += 1
        return new


# ---- the run ------------------------------------------------------------------------------------

def _voice_features(fe, paths, device, dtype):
    clips = [load_audio(p, fe.sampling_rate) for p in paths]
    feats = fe(clips, sampling_rate=fe.sampling_rate, return_tensors="pt", device=device)["input_features"]
    return feats.to(dtype)  # (K, 80, frames)


def generate_corpus(model, tokenizer, feature_extractor, records, out_path, *, seed: int, candidates: int,
                    batch_size: int, preset: str | None = None, max_new_tokens: int | None = None, top: int = 10,
                    progress: bool = True, rank: int = 0, world_size: int = 1, voice=None,
                    model_name: str | None = None) -> dict:
    """Generate and rank the candidates of every chunk of ``records`` (``read_records``) that has no
    line yet, appending one JSONL line per chunk (module docstring); ends with ``--out`` merged in
    input order. With ``world_size > 1`` the process group must be initialised: rank 0 lists the units
    without a line and broadcasts the list, this rank does its entries ``rank, rank + world_size, ...``
    into its shard file, and rank 0 merges after a barrier.
    ``voice``: paths of the voice for records without one (default: the bundled LJ Speech clip).
    Returns counts: units, done before, generated, errors, and the merge's."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    if world_size > 1 and not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError("generate_corpus with world_size > 1 needs an initialised torch.distributed process group")
    param = next(model.parameters())
    device, dtype = param.device, param.dtype
    default_voice = [str(v) for v in voice] if voice else [str(data_path("voice_lj.wav"))]
    max_tokens = model.config.decoder_config.max_text_tokens - 3
    units = work_units(records, tokenizer, max_tokens=max_tokens)
    wanted = {u.key for u in units}

    own = out_path if world_size == 1 else shard_path(out_path, rank, world_size)
    _read_lines(own, repair=True)  # cut a torn last line off this rank's own file before appending to it
    if rank == 0:  # what is done: every line of --out and of any shard, of this run's units
        done = set()
        for src in [out_path, *_shard_files(out_path)]:
            done.update(k for k, _ in _read_lines(src))
        pending = [k for k, u in enumerate(units) if u.key not in done]
    else:
        pending = None
    if world_size > 1:  # one view of the remaining work for all ranks, dealt out round-robin
        box = [pending]
        dist.broadcast_object_list(box, src=0)
        pending = box[0]
    mine = [units[k] for i, k in enumerate(pending) if i % world_size == rank]
    pending_keys = {units[k].key for k in pending}
    done = wanted - pending_keys

    settings = {"candidates": candidates, "batch_size": batch_size, "preset": preset, "max_new_tokens": max_new_tokens,
                "seed": seed, "top": top, "dtype": str(dtype).replace("torch.", "")}
    bar = tqdm(total=len(units), initial=len(done), desc="chunks", unit="chunk", disable=not progress or rank != 0,
               dynamic_ncols=True, file=sys.stderr)
    others = [shard_path(out_path, r, world_size) for r in range(world_size) if r != rank] if world_size > 1 else []
    watcher = _ShardWatcher(others, wanted, set(done)) if rank == 0 else None
    voices: OrderedDict = OrderedDict()
    generated = errors = 0
    fd = os.open(own, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        for unit in mine:
            line = _run_unit(unit, model, tokenizer, feature_extractor, voices, default_voice, device, dtype,
                             seed=seed, candidates=candidates, batch_size=batch_size, preset=preset,
                             max_new_tokens=max_new_tokens, top=top, settings=settings, model_name=model_name)
            _append(fd, _encode(line))
            generated += 1
            errors += "error" in line
            if watcher is not None:
                watcher.seen.add(unit.key)
                bar.update(1 + watcher.poll())
    finally:
        os.close(fd)
    if world_size > 1:
        if rank == 0:
            work = dist.barrier(async_op=True)
            while not work.is_completed():
                bar.update(watcher.poll())
                time.sleep(0.2)
            work.wait()
            bar.update(watcher.poll())
        else:
            dist.barrier()
    bar.close()
    summary = {"units": len(units), "done_before": len(done), "generated": generated, "errors": errors}
    if rank == 0:
        summary.update(merge_outputs(out_path, units))
    return summary


def _run_unit(unit, model, tokenizer, fe, voices, default_voice, device, dtype, *, seed, candidates, batch_size,
              preset, max_new_tokens, top, settings, model_name) -> dict:
    if unit.error is not None:
        return {"id": unit.id, "chunk": unit.chunk, "error": unit.error}
    voice = unit.voice or default_voice
    key = tuple(voice)
    if key not in voices:
        try:
            voices[key] = _voice_features(fe, voice, device, dtype)
        except Exception as err:  # any unreadable voice file: this chunk's error, not the run's
            voices[key] = err
        if len(voices) > VOICE_CACHE:
            voices.popitem(last=False)
    feats = voices[key]
    base = {"id": unit.id, "chunk": unit.chunk, "text": unit.text, "voice": voice}
    if isinstance(feats, Exception):
        return {**base, "error": f"voice: {' '.join(str(feats).split())}"}
    s = chunk_seed(seed, unit.id, unit.chunk)
    try:
        ids = tokenizer(unit.text, return_tensors="pt")["input_ids"].to(device)  # (1, T)
        ranked = generate_candidates(model, ids, feats, num_candidates=candidates, batch_size=batch_size,
                                     preset=preset, seed=s, max_new_tokens=max_new_tokens, progress=False)
    except ValueError as err:  # input generation refuses (e.g. text the tokenizer cannot fit)
        return {**base, "seed": s, "error": " ".join(str(err).split())}
    n = min(top, ranked.codes.shape[0])
    return {**base, "seed": s, "codes": ranked.codes[:n].tolist(), "scores": [float(x) for x in ranked.scores[:n]],
            "model": model_name, "settings": settings}


# ---- command line -------------------------------------------------------------------------------

def add_corpus_arguments(parser: argparse.ArgumentParser) -> None:
    """``--texts FILE`` for ``clvp rank`` (and ``python -m clvp.corpus``)."""
    parser.add_argument("--texts", default=None,
                        help="a text file (one record) or JSONL (id, text, optional voice per line): split into "
                             "chunks, one JSONL line per chunk in --out; resumable; shards under torchrun")


def _dist_env() -> tuple[int, int, int]:
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)))


def run_corpus(args, load_model_and_front_end) -> int:
    """``clvp rank --texts FILE --out OUT ...``: read the records, load the model, generate (sharded
    over ranks under torchrun). ``load_model_and_front_end(args)`` returns (model, tokenizer,
    feature_extractor, model_dir) for ``args.device`` (set here to this rank's device)."""
    if not getattr(args, "out", None):
        raise ValueError("--texts needs --out FILE (the JSONL the chunks' results are appended to)")
    rank, world_size, local_rank = _dist_env()
    args = copy.copy(args)
    device = resolve_device(args.device) or torch.device("cpu")
    if device.type == "cuda" and world_size > 1:
        device = torch.device("cuda", local_rank % torch.cuda.device_count())  # ranks share GPUs if fewer
        torch.cuda.set_device(device)
    args.device = str(device)
    records = read_records(args.texts)  # before the process group: a missing file fails every rank alike
    started = False
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=datetime.timedelta(hours=2))
        started = True
    try:
        model, tokenizer, fe, model_dir = load_model_and_front_end(args)
        candidates = args.candidates or (PRESETS[args.preset]["num_candidates"] if args.preset in PRESETS else None) \
            or DEFAULT_CANDIDATES
        t0 = time.perf_counter()
        summary = generate_corpus(
            model, tokenizer, fe, records, args.out, seed=args.seed, candidates=candidates, batch_size=args.batch_size,
            preset=args.preset, max_new_tokens=args.max_new_tokens, top=args.top, progress=True, rank=rank,
            world_size=world_size, voice=args.voice, model_name=str(model_dir) if model_dir else None,
        )
        if rank == 0:
            print(f"{summary['units']} chunks of {len(records)} records: {summary['done_before']} done before, "
                  f"{summary['generated']} now on rank 0 of {world_size} ({summary['errors']} errors) in "
                  f"{time.perf_counter() - t0:.1f} s; wrote {args.out} ({summary['lines']} lines, "
                  f"{summary['missing']} missing)", flush=True)
    finally:
        if started:
            dist.destroy_process_group()
    return 0


def _load(args):
    """The model and front end for ``python -m clvp.corpus`` (as ``clvp rank`` loads them)."""
    model_dir = Path(args.model) if args.model else None
    device = torch.device(args.device)
    dtype = resolve_dtype(args.dtype) or torch.float32
    if model_dir is None:  # a small random model, the same on every rank
        torch.manual_seed(args.seed)
        model = ClvpModelForConditionalGeneration(tiny_config()).eval().to(device=device, dtype=dtype)
        processor = ClvpProcessor(tokenizer=None, feature_extractor=None)
        return model, processor.tokenizer, type(processor.feature_extractor)(mel_norms="tortoise"), None
    if not (model_dir / "config.json").is_file():
        raise ValueError(f"{model_dir} has no config.json; point --model at a folder saved by save_pretrained")
    model = ClvpModelForConditionalGeneration.from_pretrained(model_dir, dtype=dtype, device=device)
    processor = ClvpProcessor.from_pretrained(model_dir)
    return model, processor.tokenizer, processor.feature_extractor, model_dir


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m clvp.corpus",
                                description="Generate and rank speech-code candidates for every chunk of a book or "
                                            "corpus (the options of `clvp rank`, plus --texts).")
    p.add_argument("--model", default=None, help="folder with config.json + model.safetensors (default: a small "
                                                  "random model)")
    p.add_argument("--device", default=None, help="cpu (default), cuda (each rank its cuda:LOCAL_RANK)")
    p.add_argument("--dtype", default=None, help="fp32 (default), bf16 or fp16")
    p.add_argument("--voice", nargs="+", default=None, help="reference clips for records without a voice")
    p.add_argument("--candidates", type=int, default=None,
                   help=f"candidates per chunk (default: the preset's, or {DEFAULT_CANDIDATES})")
    p.add_argument("--batch-size", type=int, default=16, help="candidates generated per batch")
    p.add_argument("--preset", default=None, help="Tortoise preset: ultra_fast, fast, standard, high_quality")
    p.add_argument("--max-new-tokens", type=int, default=None, help="most codes per candidate")
    p.add_argument("--seed", type=int, default=0, help="global seed (each chunk's seed is derived from it)")
    p.add_argument("--top", type=int, default=10, help="best candidates kept per chunk")
    p.add_argument("--out", required=True, help="JSONL output (appended to; a re-run resumes)")
    add_corpus_arguments(p)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if not args.texts:
        print("python -m clvp.corpus: error: --texts FILE is required", file=sys.stderr)
        return 2
    try:
        return run_corpus(args, _load)
    except (FileNotFoundError, ValueError) as err:
        if os.environ.get("CLVP_DEBUG"):
            raise
        print(f"python -m clvp.corpus: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
