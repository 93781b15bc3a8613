"""What every benchmark shares: its command line, timing with warm-up and synchronisation, and its
recorded conditions.

Run a benchmark with ``python -m clvp.bench.bench_rotary_attention`` (or ``clvp bench --only
rotary_attention``). It prints a markdown table with the conditions (device, versions, dtype, shapes,
date) so no number is quoted without them, progress goes to stderr, and ``--save`` also writes the
table to ``bench/results/<stem>-<device>.md`` in a source checkout (or to ``--results DIR``).
"""
from __future__ import annotations

import argparse
import functools
import datetime as _dt
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
# bench/results/ exists to be committed from a source checkout; an installed package has no such
# folder to write into (site-packages is not the user's), so there --save needs --results DIR.
IN_CHECKOUT = (HERE.parent / "pyproject.toml").is_file()
# transformers 4.46.3, installed into a checkout by .ci/run; CLVP_ORACLE points elsewhere (bench/gpu.sh installs
# it from carried wheels on a machine without a package index)
ORACLE = Path(os.environ.get("CLVP_ORACLE") or HERE.parent / ".oracle")


def bench_parser(description: str) -> argparse.ArgumentParser:
    """The options every benchmark takes: ``--save`` and ``--results DIR``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--save", action="store_true",
                        help="also write the table to bench/results/ (in a source checkout) or to --results DIR")
    parser.add_argument("--results", type=Path, default=None, help="folder for --save (default: bench/results/)")
    return parser


def results_dir(args) -> Path | None:
    """Where ``write_result`` writes for these parsed options: None (print only) without ``--save``."""
    if not args.save:
        return None
    if args.results is not None:
        return args.results
    if not IN_CHECKOUT:
        raise SystemExit("--save without --results needs a source checkout (bench/results/ is there); "
                         "give --results DIR")
    return HERE / "results"


def progress(message: str) -> None:
    """A progress line on stderr, so stdout carries only the result tables."""
    print(message, file=sys.stderr, flush=True)


def import_oracle():
    """transformers 4.46.3 from .oracle, put on ``sys.path`` in this benchmark process only; None
    (with a message) when it is missing or does not import. (bench_log_mel runs it in a worker
    subprocess instead, with ``PYTHONPATH=ORACLE``.)"""
    if not ORACLE.is_dir():
        return None
    if str(ORACLE) not in sys.path:
        sys.path.insert(0, str(ORACLE))
    try:
        import transformers

        transformers.logging.set_verbosity_error()
        return transformers
    except Exception as err:  # pragma: no cover - depends on the machine
        progress(f"oracle in {ORACLE} does not import ({err}); timing ours only")
        return None


def device_name(device: str | torch.device = "cpu") -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU: {cpu}, {torch.get_num_threads()} threads"


CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")  # what decides the CPU's product speeds


def cpu_flags() -> dict:
    """Which of ``CPU_FLAGS`` /proc/cpuinfo lists for this CPU: {flag: bool}, empty when unreadable."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                return {f: f in flags for f in CPU_FLAGS}
    except OSError:
        pass
    return {}


def conditions(device: str | torch.device = "cpu", **extra) -> dict:
    """The facts a benchmark figure is meaningless without (on a CPU also its matrix-instruction flags)."""
    try:
        import triton

        triton_version = triton.__version__
    except Exception:
        triton_version = "not installed"
    info = {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "device": device_name(device),
        "torch": torch.__version__,
        "triton": triton_version,
        "python": platform.python_version(),
        "CLVP_KERNELS": os.environ.get("CLVP_KERNELS", "auto"),
        "TRITON_INTERPRET": os.environ.get("TRITON_INTERPRET", "0"),
    }
    if torch.device(device).type == "cpu":
        flags = cpu_flags()
        info["cpu_flags"] = ", ".join(f"{f} {'yes' if flags[f] else 'no'}" for f in CPU_FLAGS) if flags else "unknown"
    else:  # every GPU table carries the card's own ceilings, measured in the same process
        info.update(device_ceilings(str(torch.device(device))))
    info.update({k: str(v) for k, v in extra.items()})
    return info


@functools.cache
def device_ceilings(device: str) -> dict:
    """The measured copy bandwidth and matrix-product peaks of a CUDA device (once per process)."""
    dev = torch.device(device)
    bf16, fp32 = matmul_peak(torch.bfloat16, dev), matmul_peak(torch.float32, dev)
    return {
        "measured_copy_bandwidth": f"{copy_bandwidth(dev) / 1e9:.0f} GB/s (1 GiB device-to-device copy, read + write)",
        "measured_matmul_peak": f"bf16 {bf16 / 1e12:.0f} TFLOP/s, fp32 {fp32 / 1e12:.1f} TFLOP/s "
                                f"(8192^3 product; fp32 with allow_tf32={torch.backends.cuda.matmul.allow_tf32})",
    }


def matmul_peak(dtype, device) -> float:
    """Measured FLOP/s of a large square matrix product in ``dtype`` (the compute ceiling quoted against)."""
    device = torch.device(device)
    n = 8192 if device.type == "cuda" else (2048 if dtype == torch.float32 else 512)  # CPUs without
    # AVX-512 BF16 / FP16 emulate 16-bit matmuls at well under 1 GFLOP/s: keep that measurement short
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    if device.type == "cuda":
        t = cuda_time(lambda: a @ b)[0]
    else:
        t = time_fn(lambda: a @ b, warmup=1, repeat=3)["median"]
    return 2.0 * n**3 / t


def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_fn(fn, *, device="cpu", warmup: int = 1, repeat: int = 5, min_time: float = 0.0) -> dict:
    """Median / min / max wall time in seconds of ``fn()`` after ``warmup`` calls.

    On CUDA prefer ``triton.testing.do_bench`` for microsecond kernels (``cuda_time``); this is for
    CPU work and whole pipelines. Synchronises the device around every call.
    """
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    start_all = time.perf_counter()
    while len(times) < repeat or (time.perf_counter() - start_all) < min_time:
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return {"median": statistics.median(times), "min": min(times), "max": max(times), "n": len(times)}


def cuda_time(fn, *, quantiles=(0.5, 0.2, 0.8)) -> tuple[float, float, float]:
    """Kernel time in seconds on CUDA with ``triton.testing.do_bench`` (flushes L2 between reps)."""
    from triton.testing import do_bench

    ms = do_bench(fn, quantiles=list(quantiles))
    return tuple(m / 1e3 for m in ms)


def copy_bandwidth(device, nbytes: int = 2**30) -> float:
    """Bytes per second of an ``nbytes`` copy on ``device``, read + write counted."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).fill_(1.0)
    dst = torch.empty_like(src)
    if torch.device(device).type == "cuda":
        seconds = cuda_time(lambda: dst.copy_(src))[0]
    else:
        seconds = time_fn(lambda: dst.copy_(src), warmup=1, repeat=5)["median"]
    del src, dst
    return 2 * nbytes / seconds


def markdown_table(headers: list[str], rows: list[list]) -> str:
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_result(stem: str, title: str, info: dict, table: str, notes: str = "", *, suffix: str = "",
                 results: Path | None = None) -> Path | None:
    """Print the result; with ``results`` (see ``results_dir``) also write ``<results>/<stem><suffix>.md``
    (suffix e.g. ``-cpu`` / ``-cuda``) atomically: a reader sees the old file or the new one."""
    cond = "\n".join(f"- {k}: {v}" for k, v in info.items())
    text = f"# {title}\n\n## Conditions\n{cond}\n\n## Results\n{table}\n"
    if notes:
        text += f"\n{notes.strip()}\n"
    print(text, flush=True)
    if results is None:
        return None
    results.mkdir(parents=True, exist_ok=True)
    path = results / f"{stem}{suffix}.md"
    fd, tmp = tempfile.mkstemp(dir=results, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    progress(f"wrote {path}")
    return path
