"""The ``clvp`` command (also ``python -m clvp``): demo, rank, score, convert-tortoise, bench.

Errors a person can act on (missing file, unreadable audio, a folder without config.json, an unknown
dtype or device) print one line and exit with status 2, without a traceback (CLVP_DEBUG=1 shows it).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

EXIT_USAGE = 2
DEMO_CANDIDATES = 6  # small enough to run in seconds on a CPU
RANK_CANDIDATES = 16  # as Tortoise's ultra_fast preset


class CliError(Exception):
    """An error the user can act on: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (exit status 2), like every other error."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {_printable(' '.join(str(message).split()))}\n")


def _check_out_file(out) -> None:
    """``--out FILE`` before any work: its folder exists and is writable, and it is not a folder."""
    if out is None:
        return
    path = Path(out)
    if str(out) == "" or path.is_dir() or str(out).endswith(("/", os.sep)):
        raise CliError(f"--out '{_printable(str(out))}' is a folder; give a file name such as ranked.json")
    parent = path.parent
    if not parent.is_dir():
        raise CliError(f"--out '{_printable(str(out))}': the folder '{_printable(str(parent))}' does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise CliError(f"--out '{_printable(str(out))}': the folder '{_printable(str(parent))}' is not writable")
    if path.exists() and not os.access(path, os.W_OK):
        raise CliError(f"--out '{_printable(str(out))}' exists and is not writable")


def _write_atomic(path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and ``os.replace``, so
    that an interrupted run never leaves a half-written file."""
    import tempfile

    path = Path(path)
    if path.exists():
        mode = path.stat().st_mode & 0o777
    else:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask  # what a plain open() would give
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _positive(name: str, value, minimum: int = 1) -> None:
    if value is not None and value < minimum:
        raise CliError(f"{name} must be an integer >= {minimum}, got {value}")


def _check_text(text: str, purpose: str = "speak") -> None:
    """--text before any work: something printable to say (control characters alone are not text;
    echoed, they are escaped so that they cannot drive the terminal)."""
    if not text.strip():
        raise CliError(f"--text '{_printable(text)}' is empty; give the text to {purpose}")
    if not any(c.isprintable() and not c.isspace() for c in text):
        raise CliError(f"--text '{_printable(text)}' has nothing to {purpose}: only spaces and control or invisible "
                       "characters; give words")


def _text_ids(tok, text: str, device, limit: int | None = None):
    """Tokenize --text; refuse text with nothing to speak (one line naming the text, escaped)."""
    if not text.strip():
        raise CliError(f"--text '{_printable(text)}' is empty; give the text to speak")
    ids = tok(text, return_tensors="pt")["input_ids"].to(device)  # (1, T)
    if ids.shape[-1] == 0:
        raise CliError(f"--text '{_printable(text)}' tokenized to no tokens; give words to speak")
    if limit is not None and ids.shape[-1] > limit:
        shown = _printable(text if len(text) <= 60 else text[:57] + "...")
        raise CliError(f"--text '{shown}' is {ids.shape[-1]} tokens long; the model takes at most {limit}: split the text")
    return ids


def _resources():
    from importlib import resources

    return resources.files("clvp.data")


def default_dtype(device_type: str) -> str:
    """The --dtype used when none is given: bf16 on CUDA (the kernels' tensor-core path; float32 there
    runs the attention on the eager reference unless TF32 is allowed, see kernels/__init__.py), fp32
    elsewhere (CPUs without bf16 instructions emulate it, slower than float32)."""
    return "bf16" if device_type == "cuda" else "fp32"


def _device_and_dtype(device: str | None, dtype: str | None):
    import torch

    from .loading import resolve_device, resolve_dtype, warn_if_slow_half

    dev = resolve_device(device) or torch.device("cpu")
    dt = resolve_dtype(dtype if dtype is not None else default_dtype(dev.type))
    warn_if_slow_half(dt, dev)
    return dev, dt


def _load_front_end(model_dir: Path | None):
    """Tokenizer and feature extractor: the model folder's own files when present, else the packaged
    real CLVP vocabulary and Tortoise's mel norms (``ClvpProcessor.from_pretrained`` decides)."""
    import warnings

    from .processing import ClvpProcessor

    if model_dir is None:
        processor = ClvpProcessor(tokenizer=None, feature_extractor=None)
        return processor.tokenizer, type(processor.feature_extractor)(mel_norms="tortoise")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        processor = ClvpProcessor.from_pretrained(model_dir)
    for w in caught:
        print(f"note: {w.message}")
    return processor.tokenizer, processor.feature_extractor


def _load_model(model_dir: Path | None, device, dtype, seed: int):
    import torch

    from .configuration import tiny_config
    from .modeling import ClvpModelForConditionalGeneration

    if model_dir is None:
        torch.manual_seed(seed)
        model = ClvpModelForConditionalGeneration(tiny_config()).eval()
        return model.to(device=device, dtype=dtype)
    if not model_dir.is_dir():
        raise CliError(f"model folder {model_dir} does not exist")
    if not (model_dir / "config.json").is_file():
        raise CliError(f"{model_dir} has no config.json; point --model at a folder saved by save_pretrained or convert-tortoise")
    return ClvpModelForConditionalGeneration.from_pretrained(model_dir, dtype=dtype, device=device)


def _check_int8(args, device, dtype) -> None:
    """--int8 runs on the CPU in float32 or bfloat16 only: refuse before loading anything."""
    import torch

    if getattr(args, "int8", False):
        if device.type != "cpu":
            raise CliError(f"--int8 runs on the CPU only, got --device {device}; drop --int8 or use --device cpu")
        if dtype not in (torch.float32, torch.bfloat16):
            raise CliError(f"--int8 needs --dtype fp32 or bf16, got {str(dtype).replace('torch.', '')}")


def _decoder_weights(args, model):
    """The decoder's weights for generation: int8 when asked (--int8); otherwise, on the CPU in float32
    or bfloat16, packed for oneDNN (clvp/packing.py: same numbers, faster steps) unless --no-pack."""
    if getattr(args, "int8", False):
        from .quantize import int8_weight_only

        return int8_weight_only(model)
    from .packing import can_pack, pack_decoder_weights

    model.eval()
    if getattr(args, "no_pack", False) or not can_pack(model):
        return model
    return pack_decoder_weights(model)


def _voice_features(fe, paths, device):
    from .audio import load_audio

    clips = [load_audio(p, fe.sampling_rate) for p in paths]
    feats = fe(clips, sampling_rate=fe.sampling_rate, return_tensors="pt", device=device)["input_features"]
    return feats  # (K, 80, frames)


def _print_table(ranked, top: int, stop_code_free_len):
    rows = []
    for r in range(min(top, ranked.codes.shape[0])):
        codes = ranked.codes[r].tolist()
        preview = " ".join(str(c) for c in codes[:8]) + (" ..." if len(codes) > 8 else "")
        rows.append((r + 1, int(ranked.order[r]), float(ranked.scores[r]), stop_code_free_len(ranked.codes[r]), preview))
    print("Candidates, best first. CLVP score: how well the candidate's speech codes match the text (higher is a")
    print("better match). codes: how many speech codes the candidate has before its stop code (each stands for")
    print("1024 audio samples, about 46 ms at 22.05 kHz). cand: the candidate's index in generation order.")
    print(f"{'rank':>4}  {'cand':>4}  {'CLVP score':>10}  {'codes':>5}  first codes")
    for rank, cand, score, n, preview in rows:
        print(f"{rank:>4}  {cand:>4}  {score:>10.4f}  {n:>5}  {preview}")


def _printable(text: str) -> str:
    """``text`` with control characters escaped, so echoing it cannot drive the terminal."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _speech_length(fix_codes):
    """Codes before the filler that replaced the stop code (83 ... 45 45 248)."""
    def length(row):
        values = row.tolist()
        filler = fix_codes[0]
        n = len(values)
        # the tail is filler, then the three fixing codes
        end = n - 3 if values[-3:] == list(fix_codes[1:]) else n
        while end > 0 and values[end - 1] == filler:
            end -= 1
        return end

    return length


def _rank(args, *, demo: bool):
    import torch

    from . import kernels
    from .candidates import PRESETS

    model_dir = Path(args.model) if args.model else None
    device, dtype = _device_and_dtype(args.device, args.dtype)
    _check_rank_args(args, model_dir)
    _check_int8(args, device, dtype)
    voices = args.voice or [str(_resources() / "voice_lj.wav")]
    # --preset sets the candidate count unless --candidates is given; the demo alone has a small default
    candidates = args.candidates
    if candidates is None:
        candidates = PRESETS[args.preset]["num_candidates"] if args.preset in PRESETS else None
    candidates = candidates or (DEMO_CANDIDATES if demo else RANK_CANDIDATES)
    if demo:
        where = "a small randomly initialised model" if model_dir is None else f"the model in {model_dir}"
        print(f"CLVP demo on {_printable(where)} ({device.type}, {str(dtype).replace('torch.', '')})")
        if model_dir is None:
            print("The weights are random, so the codes are noise and the ranking is arbitrary: this shows the pipeline,")
            print("not speech. Point it at a real checkpoint with --model DIR (see README: convert-tortoise).")
    print(f"Generating {candidates} candidates in batches of {args.batch_size} for {_printable(args.text)!r} in the voice of "
          f"{', '.join(_printable(Path(v).name) for v in voices)}, then ranking them by CLVP score.", flush=True)

    timings = {}
    t0 = time.perf_counter()
    model = _decoder_weights(args, _load_model(model_dir, device, dtype, args.seed))
    tok, fe = _load_front_end(model_dir)
    timings["load model"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    ids = _text_ids(tok, args.text, device, model.config.decoder_config.max_text_tokens - 3)  # (1, T)
    timings["tokenize"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    feats = _voice_features(fe, voices, device).to(dtype)
    timings["log-mel"] = time.perf_counter() - t0

    ranked = model.generate_candidates(
        ids, feats, num_candidates=candidates, batch_size=args.batch_size, preset=args.preset, seed=args.seed,
        max_new_tokens=args.max_new_tokens, progress=True,
    )
    timings.update(ranked.timings)

    print(f'text: "{_printable(args.text)}"  ({ids.shape[1]} tokens)  voice: {", ".join(_printable(Path(v).name) for v in voices)}')
    _print_table(ranked, args.top, _speech_length(model.config.decoder_config.decoder_fixing_codes))
    print("stage times: " + ", ".join(f"{k} {v * 1e3:.0f} ms" for k, v in timings.items()))
    print(f"kernel path: {kernels.describe(torch.empty(0, device=device))} (CLVP_KERNELS={kernels.backend()})")
    if getattr(args, "out", None):
        out = {
            "text": args.text, "voices": voices, "model": str(model_dir) if model_dir else None,
            "candidates": [
                {"rank": r + 1, "candidate": int(ranked.order[r]), "score": float(ranked.scores[r]),
                 "codes": ranked.codes[r].tolist()}
                for r in range(ranked.codes.shape[0])
            ],
        }
        _write_atomic(args.out, json.dumps(out, indent=1) + "\n")
        print(f"wrote {_printable(str(args.out))}")
    return 0


def _check_rank_args(args, model_dir: Path | None) -> None:
    """Every argument of demo / rank checked before any work (loading, tokenizing, generating)."""
    from .candidates import PRESETS

    _positive("--candidates", args.candidates)
    _positive("--batch-size", args.batch_size)
    _positive("--max-new-tokens", args.max_new_tokens)
    _positive("--top", args.top)
    _positive("--seed", args.seed, 0)
    if args.seed >= 2**63:
        raise CliError(f"--seed must be an integer in 0..2**63-1, got {args.seed}")
    if args.preset is not None and args.preset not in PRESETS:
        raise CliError(f"unknown --preset '{_printable(args.preset)}'; choose one of {', '.join(PRESETS)}")
    _check_text(args.text)
    for v in args.voice or []:
        if not Path(v).is_file():
            raise CliError(f"--voice: audio file '{_printable(v)}' does not exist")
    _check_out_file(getattr(args, "out", None))
    if model_dir is not None:
        if not model_dir.is_dir():
            raise CliError(f"model folder {_printable(str(model_dir))} does not exist")
        if not (model_dir / "config.json").is_file():
            raise CliError(f"{_printable(str(model_dir))} has no config.json; point --model at a folder saved by "
                           "save_pretrained or convert-tortoise")


def cmd_demo(args):
    return _rank(args, demo=True)


def _load_for_corpus(args):
    """(model, tokenizer, feature extractor, model folder) for ``clvp.corpus.run_corpus``; ``args.device``
    is already this rank's device."""
    model_dir = Path(args.model) if args.model else None
    device, dtype = _device_and_dtype(args.device, args.dtype)
    _check_int8(args, device, dtype)
    model = _decoder_weights(args, _load_model(model_dir, device, dtype, args.seed))
    tok, fe = _load_front_end(model_dir)
    return model, tok, fe, model_dir


def cmd_rank(args):
    if args.texts:  # a book or a corpus: chunks, one JSONL line each, resumable, sharded under torchrun
        from .corpus import run_corpus

        _check_rank_args(args, Path(args.model) if args.model else None)
        return run_corpus(args, _load_for_corpus)
    return _rank(args, demo=False)


def cmd_score(args):
    import torch

    model_dir = Path(args.model)
    device, dtype = _device_and_dtype(args.device, args.dtype)
    path = Path(args.codes)
    shown = _printable(str(path))
    _check_text(args.text, "score against")
    if not path.is_file():
        raise CliError(f"codes file {shown} does not exist")
    if not model_dir.is_dir():
        raise CliError(f"model folder {_printable(str(model_dir))} does not exist")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CliError(f"{shown} is not valid JSON: {err}") from None
    except OSError as err:
        raise CliError(f"cannot read {shown}: {err.strerror or err}") from None
    if isinstance(data, dict) and "candidates" in data:
        cands = data["candidates"]
        if not (isinstance(cands, list) and all(isinstance(c, dict) and "codes" in c for c in cands)):
            raise CliError(f"{shown}: 'candidates' must be a list of objects with a 'codes' list (as 'clvp rank --out' writes)")
        data = [c["codes"] for c in cands]
    if not (isinstance(data, list) and data and all(
            isinstance(r, list) and r and all(isinstance(c, int) and not isinstance(c, bool) for c in r) for r in data)):
        raise CliError(f"{shown} must hold a non-empty list of non-empty integer code lists (or the JSON written by 'clvp rank --out')")
    width = max(len(r) for r in data)
    model = _load_model(model_dir, device, dtype, 0)
    tok, _ = _load_front_end(model_dir)
    stop = model.config.decoder_config.eos_token_id
    # pad ragged rows with the stop code and fix them as generation does (a no-op on already-fixed codes)
    codes = torch.tensor([[stop] + r + [stop] * (width - len(r)) for r in data], device=device)
    codes = model.fix_speech_decoder_output(codes)
    vocab = model.config.speech_config.vocab_size
    most = model.config.decoder_config.max_position_embeddings
    if width > most:
        raise CliError(f"{shown} holds a list of {width} codes; the decoder makes at most {most} (max_position_embeddings)")
    bad = next((c for r in data for c in r if not 0 <= c < vocab), None)
    if bad is not None:
        raise CliError(f"{shown} holds code {bad}, outside the speech vocabulary 0..{vocab - 1}")
    ids = _text_ids(tok, args.text, device)
    ids, _ = model.pad_text(ids)  # as generation pads the text it scores against
    with torch.no_grad():
        text = model.get_text_features(input_ids=ids)
        speech = model.get_speech_features(speech_ids=codes)
        logits, _, _, _ = model.similarity(text, speech)
    scores = logits[0]
    print(f"{'cand':>4}  {'CLVP score':>10}")
    for i in torch.argsort(scores, descending=True).tolist():
        print(f"{i:>4}  {float(scores[i]):>10.4f}")
    return 0


def cmd_convert(args):
    from .convert import convert_tortoise

    for p in (args.autoregressive, args.clvp):
        if not Path(p).is_file():
            raise CliError(f"checkpoint {_printable(str(p))} does not exist")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CliError(f"--out '{_printable(str(out))}' is a file; convert-tortoise writes a folder")
    if not out.exists() and not out.parent.is_dir():
        raise CliError(f"--out '{_printable(str(out))}': the folder '{_printable(str(out.parent))}' does not exist")
    if not os.access(out if out.exists() else out.parent, os.W_OK | os.X_OK):
        raise CliError(f"--out '{_printable(str(out))}' is not writable")
    if args.config and not Path(args.config).exists():
        raise CliError(f"--config '{_printable(str(args.config))}' does not exist")
    config = None
    if args.config:
        from .configuration import ClvpConfig

        config = ClvpConfig.from_pretrained(args.config)
    model = convert_tortoise(args.autoregressive, args.clvp, args.out, config=config)
    n = sum(v.numel() for v in model.state_dict().values())
    print(f"converted {len(model.state_dict())} tensors ({n:,} elements) to {args.out} (config.json + model.safetensors)")
    return 0


def cmd_bench(args):
    import importlib

    from .bench._common import IN_CHECKOUT

    if args.save and args.results is None and not IN_CHECKOUT:
        raise CliError("--save writes into bench/results/ of a source checkout; this is an installed package, "
                       "so give --results DIR")
    if args.results is not None and args.results.exists() and not args.results.is_dir():
        raise CliError(f"--results '{_printable(str(args.results))}' is a file, not a folder")
    options = (["--save"] if args.save else []) + (["--results", str(args.results)] if args.results else [])
    for name in args.only or BENCHMARKS:
        if name not in ALL_BENCHMARKS:
            raise CliError(f"unknown benchmark '{_printable(name)}'; choose from {', '.join(ALL_BENCHMARKS)}")
        module = importlib.import_module(f"clvp.bench.bench_{name}")
        print(f"## bench_{name}\n", flush=True)
        module.main(options)  # its own defaults, not clvp's command line
    return 0


BENCHMARKS = ("rotary_attention", "decode_attention", "log_mel")  # the kernel microbenchmarks: `clvp bench`
ALL_BENCHMARKS = BENCHMARKS + ("tokenizer", "model", "generation", "decode_step", "train_step", "normalizer", "corpus")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="clvp", description="CLVP (Tortoise TTS) candidate generation and ranking, with Triton kernels.")
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp, model_required: bool):
        sp.add_argument("--model", required=model_required, help="folder with config.json + model.safetensors")
        sp.add_argument("--device", default=None, help="cpu (default), cuda or cuda:N")
        sp.add_argument("--dtype", default=None, help="fp32, bf16 or fp16 (default: bf16 on CUDA, fp32 on the CPU)")

    def ranking(sp, fallback_candidates, default_batch, default_new):
        sp.add_argument("--text", default="The quick brown fox jumps over the lazy dog.", help="text to speak")
        sp.add_argument("--voice", nargs="+", default=None, help="reference clips of one voice (any rate / channels)")
        sp.add_argument("--candidates", type=int, default=None,
                        help=f"number of candidates to sample (default: the preset's, or {fallback_candidates} without one)")
        sp.add_argument("--batch-size", type=int, default=default_batch, help="candidates generated per batch")
        sp.add_argument("--preset", default=None, help="Tortoise preset: ultra_fast, fast, standard, high_quality")
        sp.add_argument("--max-new-tokens", type=int, default=default_new, help="most codes per candidate")
        sp.add_argument("--seed", type=int, default=0, help="sampling seed")
        sp.add_argument("--top", type=int, default=10, help="rows of the ranked table to print")
        sp.add_argument("--out", default=None, help="write the ranked codes and scores to this JSON file")
        sp.add_argument("--int8", action="store_true",
                        help="CPU only: the speech decoder multiplies with int8 weights (faster steps, approximate; "
                             "see clvp/quantize.py)")
        sp.add_argument("--no-pack", action="store_true",
                        help="CPU: keep the speech decoder's weights dense (by default they are packed for oneDNN's "
                             "product, faster steps with the same numbers; see clvp/packing.py)")

    d = sub.add_parser("demo", help="the whole pipeline on a small random model (no download needed)")
    common(d, model_required=False)
    ranking(d, fallback_candidates=DEMO_CANDIDATES, default_batch=3, default_new=40)
    d.set_defaults(func=cmd_demo)

    r = sub.add_parser("rank", help="generate candidates for a text in a voice and rank them by CLVP score")
    common(r, model_required=True)
    ranking(r, fallback_candidates=RANK_CANDIDATES, default_batch=16, default_new=None)
    r.add_argument("--texts", default=None,
                   help="a text file (one record) or JSONL (id, text, optional voice per line): split into chunks, "
                        "one JSONL line per chunk in --out (--top candidates each); resumable; sharded under torchrun")
    r.set_defaults(func=cmd_rank)

    s = sub.add_parser("score", help="score given candidate codes against a text")
    common(s, model_required=True)
    s.add_argument("--text", required=True)
    s.add_argument("--codes", required=True, help="JSON list of code lists, or the file 'clvp rank --out' writes")
    s.set_defaults(func=cmd_score)

    c = sub.add_parser("convert-tortoise", help="convert Tortoise's autoregressive.pth + clvp2.pth to the HF layout")
    c.add_argument("--autoregressive", required=True)
    c.add_argument("--clvp", required=True)
    c.add_argument("--out", required=True)
    c.add_argument("--config", default=None, help="config.json to use instead of sizes read off the tensors")
    c.set_defaults(func=cmd_convert)

    b = sub.add_parser("bench", help="run the kernel microbenchmarks and print their tables")
    b.add_argument("--only", nargs="+", default=None,
                   help=f"benchmarks to run (default: {', '.join(BENCHMARKS)}; also {', '.join(ALL_BENCHMARKS[3:])})")
    b.add_argument("--save", action="store_true", help="also write each table to bench/results/ (source checkout) "
                                                       "or to --results DIR")
    b.add_argument("--results", type=Path, default=None, help="folder for --save")
    b.set_defaults(func=cmd_bench)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (CliError, FileNotFoundError, ValueError, TypeError) as err:
        if os.environ.get("CLVP_DEBUG"):
            raise
        _error_line(args.command, str(err))
        return EXIT_USAGE
    except OSError as err:  # permissions, a full disk, a folder where a file was expected, ...
        if os.environ.get("CLVP_DEBUG"):
            raise
        where = f" ({err.filename})" if getattr(err, "filename", None) else ""
        _error_line(args.command, f"{err.strerror or err}{where}")
        return EXIT_USAGE
    except Exception as err:  # anything else is still one line; CLVP_DEBUG=1 shows the traceback
        if os.environ.get("CLVP_DEBUG"):
            raise
        _error_line(args.command, f"{type(err).__name__}: {err} (set CLVP_DEBUG=1 for the traceback)")
        return EXIT_USAGE


def _error_line(command: str, message: str) -> None:
    """One line on stderr, control characters escaped."""
    print(f"clvp {command}: error: {_printable(' '.join(message.split()))}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
