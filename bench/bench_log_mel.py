"""Benchmark the log-mel front end: ``ClvpFeatureExtractor`` against transformers' NumPy extractor on
the CPU, and (with CUDA) the fused Triton kernel against the ``torch.stft`` + mel path on the GPU.

    python -m clvp.bench.bench_log_mel [--save]   # --save writes bench/results/log_mel-cpu.md
                                                  # (and log_mel-cuda.md when a GPU is present)

Inputs are real speech: the two LJ Speech clips of clvp/data tiled to 1 x 6 s, 16 x 6 s
and 1 x 30 s at 22.05 kHz (the 30 s case with ``max_length`` = 30 s). transformers 4.46.3 runs in a
worker subprocess with ``PYTHONPATH=.oracle`` (``_common.ORACLE``; the library never imports it) on
the same clips; its calls alternate with ours, round by round, so both see the same load on this
shared machine (median and minimum of the rounds are reported). Its features come back so that the
error of each path is reported beside its time. Ours is timed with torch's default thread count and
with one thread.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from clvp.bench._common import (ORACLE, bench_parser, conditions, cuda_time, markdown_table, progress, results_dir,
                                time_fn, write_result)
from clvp.data import path as data_path
from clvp.feature_extraction import ClvpFeatureExtractor, hann_window, tortoise_mel_norms
from clvp.kernels.log_mel import LOG_CLAMP, log_mel_ref

LJ = [data_path("voice_lj.wav"), data_path("voice_lj_2.wav")]
SR = 22050
CASES = [("1 x 6 s", 1, 6), ("16 x 6 s", 16, 6), ("1 x 30 s", 1, 30)]
REPEAT, MIN_TIME = 9, 2.0
# Each round runs every implementation in a burst: one untimed call, then BURST timed ones. After a
# call, NumPy's BLAS threads (in transformers' process) and torch's OpenMP workers keep spinning for
# up to ~0.2 s and tax whichever call comes next; the untimed call absorbs that, so the timed calls
# measure the steady state of repeated calls, as when a user extracts batch after batch.
BURST = 3

# A worker in the oracle's environment: runs transformers' extractor on request, so that its calls
# interleave with ours and both see the same machine load (this machine is shared). Protocol: one
# case name per line in, the call's wall and CPU seconds per line out; "quit" saves its features.
HF_WORKER = r"""
import json, sys, time
import numpy as np
from transformers import ClvpFeatureExtractor, __version__
from transformers.utils import logging
logging.set_verbosity_error()
data = np.load(sys.argv[1])
fe = ClvpFeatureExtractor(mel_norms=[float(v) for v in data["norms"]])
names = json.loads(str(data["names"]))
clips = {name: list(data[name]) for name in names}
feats = {}
print(__version__, flush=True)
for line in sys.stdin:
    name = line.strip()
    if name == "quit":
        break
    t0, c0 = time.perf_counter(), time.process_time()
    out = fe(clips[name], sampling_rate=22050, return_tensors="np", max_length=clips[name][0].shape[0])
    print(time.perf_counter() - t0, time.process_time() - c0, flush=True)
    feats.setdefault(name, out["input_features"])
np.savez(sys.argv[2], **feats)
"""


class TransformersWorker:
    """transformers' extractor in a subprocess (PYTHONPATH=.oracle); ``time(name)`` runs one call."""

    def __init__(self, inputs: dict[str, np.ndarray], norms, tmp: Path):
        self.out = tmp / "hf_out.npz"
        src = tmp / "hf_in.npz"
        np.savez(src, names=json.dumps(list(inputs)), norms=np.asarray(norms), **inputs)
        env = {**os.environ, "PYTHONPATH": str(ORACLE)}
        self.proc = subprocess.Popen([sys.executable, "-c", HF_WORKER, str(src), str(self.out)], env=env, cwd=ORACLE.parent,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.version = self.proc.stdout.readline().strip()

    def time(self, name: str) -> tuple[float, float]:
        self.proc.stdin.write(name + "\n")
        self.proc.stdin.flush()
        wall, cpu = self.proc.stdout.readline().split()
        return float(wall), float(cpu)

    def close(self) -> dict[str, np.ndarray]:
        self.proc.stdin.write("quit\n")
        self.proc.stdin.flush()
        self.proc.wait(timeout=120)
        with np.load(self.out) as z:
            return {k: z[k] for k in z.files}


def make_clips(batch: int, seconds: int) -> np.ndarray:
    """(batch, seconds * SR) float32 real speech: the LJ clips tiled, each row from its own offset."""
    speech = np.concatenate([sf.read(str(p), dtype="float32")[0] for p in LJ])
    n = seconds * SR
    rows = [np.resize(np.roll(speech, -i * 37_000), n) for i in range(batch)]
    return np.stack(rows).astype(np.float32)


def _timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def _stats(samples: list[tuple[float, float]]) -> str:
    wall = [w for w, _ in samples]
    cpu = [c for _, c in samples]
    return f"{statistics.median(wall) * 1e3:.1f} (min {min(wall) * 1e3:.1f}), CPU {statistics.median(cpu) * 1e3:.1f}"


def _ratio(base, ours) -> str:
    med = lambda xs, i: statistics.median(x[i] for x in xs)  # noqa: E731
    wall_min = min(w for w, _ in base) / min(w for w, _ in ours)
    return f"{med(base, 0) / med(ours, 0):.1f}x (min/min {wall_min:.1f}x), CPU {med(base, 1) / med(ours, 1):.1f}x"


def tone_precision(fe) -> float:
    """max |float32 path - float64 path| (log domain, no norms) on a hard case for float32: a
    full-scale 200 Hz tone over white noise at 1e-4, 6 s."""
    t = np.arange(6 * SR) / SR
    x = np.sin(2 * np.pi * 200 * t) + 1e-4 * np.random.default_rng(0).standard_normal(t.size)
    wav = torch.from_numpy(x.astype(np.float32))[None]  # (1, N)
    window = torch.tensor(hann_window(fe.n_fft), dtype=torch.float64)
    filters = torch.tensor(fe.mel_filters, dtype=torch.float32)
    kw = dict(n_fft=fe.n_fft, hop_length=fe.hop_length)
    exact = log_mel_ref(wav, window, filters, None, upcast=True, **kw)
    return (log_mel_ref(wav, window, filters, None, upcast=False, **kw) - exact).abs().max().item()


def bench_cpu(inputs, fe):
    """Our extractor (float64 FFT) and the float32 torch path against transformers, calls interleaved."""
    window = torch.tensor(hann_window(fe.n_fft), dtype=torch.float64)
    filters = torch.tensor(fe.mel_filters, dtype=torch.float32)
    norms = torch.tensor(fe.mel_norms, dtype=torch.float32)
    kw = dict(n_fft=fe.n_fft, hop_length=fe.hop_length)
    threads = torch.get_num_threads()
    thread_counts = sorted({threads, 1}, reverse=True)
    with tempfile.TemporaryDirectory() as tmp:
        hf = TransformersWorker(inputs, fe.mel_norms, Path(tmp)) if ORACLE.is_dir() else None
        nan = (float("nan"), float("nan"))
        times = {(name, t): {"hf": [], "ours": [], "f32": []} for name in inputs for t in thread_counts}
        ours_feats, f32_feats = {}, {}
        # One phase per thread count (OpenMP workers keep spinning after a parallel region, so mixing
        # thread counts within a round would let one phase tax the next); within a phase, rounds
        # alternate ours, the float32 path and transformers under the same load.
        for t in thread_counts:
            torch.set_num_threads(t)
            for name, clips in inputs.items():
                clip_list, wav = list(clips), torch.from_numpy(clips)
                n = clips.shape[1]
                ours = lambda: fe(clip_list, sampling_rate=SR, return_tensors="np", max_length=n)  # noqa: E731
                f32 = lambda: log_mel_ref(wav, window, filters, norms, upcast=False, **kw)  # noqa: E731
                ours_feats[name], f32_feats[name] = ours().input_features, f32().numpy()  # warm-up
                if hf:
                    hf.time(name)
                tm, start = times[(name, t)], time.perf_counter()
                while len(tm["ours"]) < REPEAT or time.perf_counter() - start < MIN_TIME:
                    for key, fn in (("ours", lambda: _timed(ours)), ("f32", lambda: _timed(f32)),
                                    ("hf", (lambda: hf.time(name)) if hf else (lambda: nan))):
                        fn()  # untimed
                        tm[key] += [fn() for _ in range(BURST)]
        torch.set_num_threads(threads)
        hf_feats = hf.close() if hf else None
    rows = []
    for name in inputs:
        err = lambda f: f"{np.abs(f - hf_feats[name]).max():.2g}" if hf_feats else "n/a"  # noqa: E731
        for t in thread_counts:
            tm = times[(name, t)]
            rows.append([name, t, _stats(tm["hf"]) if hf else "n/a", _stats(tm["ours"]),
                         _ratio(tm["hf"], tm["ours"]) if hf else "n/a", err(ours_feats[name]),
                         _stats(tm["f32"]), err(f32_feats[name])])
    headers = ["clips", "torch threads", "transformers ms", "ours ms (extractor, float64 FFT)", "speed-up",
               "ours max |Δ| vs HF", "torch float32 path ms", "float32 max |Δ| vs HF"]
    note = f"transformers {hf.version} (NumPy, float64 FFT, Python loop over frames)" if hf else \
        "transformers not installed in .oracle/: its column is empty"
    return markdown_table(headers, rows), note


def torch_stft_log_mel(wav, window, filters, norms, n_fft, hop_length):
    """Baseline (ii) of docs/speed.md §6.3: torch.stft (cuFFT) + |.|² + mel matmul + log clamp, float32."""
    spec = torch.stft(wav, n_fft, hop_length, window=window, center=True, pad_mode="reflect", return_complex=True)
    mel = torch.matmul(filters.T, spec.real.square() + spec.imag.square())  # (B, n_mels, frames)
    return torch.log(mel.clamp(min=LOG_CLAMP)) / norms[None, :, None]


def bench_cuda(inputs, fe):
    """Triton kernel vs torch.stft + mel (float32) on the GPU; errors against the float64 reference."""
    from clvp.kernels.log_mel import log_mel

    device = torch.device("cuda")
    window = torch.tensor(hann_window(fe.n_fft), dtype=torch.float64, device=device)
    filters = torch.tensor(fe.mel_filters, dtype=torch.float32, device=device)
    norms = torch.tensor(fe.mel_norms, dtype=torch.float32, device=device)
    kw = dict(n_fft=fe.n_fft, hop_length=fe.hop_length)
    rows = []
    for name, clips in inputs.items():
        wav = torch.from_numpy(clips).to(device)
        ref64 = log_mel_ref(wav, window, filters, norms, **kw)
        window32 = window.float()
        tri = cuda_time(lambda: log_mel(wav, window, filters, norms, **kw))[0]
        torch_path = cuda_time(lambda: torch_stft_log_mel(wav, window32, filters, norms, **kw))[0]
        err = (log_mel(wav, window, filters, norms, **kw) - ref64).abs().max().item()
        err_t = (torch_stft_log_mel(wav, window32, filters, norms, **kw) - ref64).abs().max().item()
        out_bytes = ref64.numel() * 4
        gbs = (wav.numel() * 4 + out_bytes) / tri / 1e9
        extractor = time_fn(lambda: fe(list(clips), sampling_rate=SR, return_tensors="pt", device=device,
                                       max_length=clips.shape[1]), device=device, warmup=2, repeat=REPEAT)
        rows.append([name, f"{torch_path * 1e6:.1f}", f"{tri * 1e6:.1f}", f"{torch_path / tri:.2f}x", f"{gbs:.1f}",
                     f"{err_t:.2g}", f"{err:.2g}", f"{extractor['median'] * 1e3:.2f}"])
    headers = ["clips", "torch.stft + mel µs", "Triton µs", "speed-up", "Triton GB/s (samples in + features out)",
               "torch.stft max |Δ| vs float64 ref", "Triton max |Δ| vs float64 ref", "extractor end to end ms"]
    return markdown_table(headers, rows)


def main(argv=None):
    args = bench_parser(__doc__.splitlines()[0]).parse_args(argv)
    fe = ClvpFeatureExtractor(mel_norms="tortoise")
    assert fe.mel_norms == tortoise_mel_norms()
    inputs = {name: make_clips(b, s) for name, b, s in CASES}
    shapes = ", ".join(f"{name} ({c.shape[1]} samples, {1 + c.shape[1] // fe.hop_length} frames)"
                       for name, c in inputs.items())
    load_before = os.getloadavg()[0]
    table, hf_note = bench_cpu(inputs, fe)
    load = f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after (1-min load average on {os.cpu_count()} cores)"
    info = conditions("cpu", machine_load=load, dtype="float32 in/out (float64 FFT on the CPU)", shapes=shapes,
                      config="n_fft 1024, hop 256, 80 mels, 0-8 kHz, Tortoise mel norms", baseline=hf_note,
                      timing=f"1 warm-up, then rounds (>= {REPEAT} timed calls each and >= {MIN_TIME} s) in which "
                             f"every implementation runs one untimed call then {BURST} timed ones (the untimed call "
                             "absorbs the previous implementation's spinning BLAS / OpenMP threads); wall clock "
                             "median (min) and the median CPU time of the calling process (all its threads)")
    cuda_note = ""
    if torch.cuda.is_available():
        cuda_table = bench_cuda(inputs, fe)
        cuda_info = conditions("cuda", dtype="float32", shapes=shapes,
                               timing="triton.testing.do_bench median (L2 flushed)")
        name = torch.cuda.get_device_name().lower().replace(" ", "-")
        write_result("log_mel", "Log-mel: Triton kernel vs torch.stft + mel (GPU)", cuda_info, cuda_table,
                     suffix="-cuda", results=results_dir(args))
        cuda_note = f"GPU comparison written to bench/results/log_mel-cuda.md ({name})."
    else:
        cuda_note = ("CUDA is not available on this machine: the GPU comparison (Triton kernel vs torch.stft + mel, "
                     "target >= 3x for one 6 s clip on an H100) could not run, and no GPU figure is recorded.")
        progress(cuda_note)
    tone_err = tone_precision(fe)
    notes = f"""
- Ratio target (docs/speed.md §7.1): >= 10x faster than transformers for 16 x 6 s on the CPU. Not reached with the
  float64 FFT on this machine: torch's float64 rfft alone costs ~2.4 µs per 1024-point frame here
  (~1.2 ms per 6 s clip and core; float32 ~1.4 µs), i.e. ~20 ms of FFT for 16 clips on one core, while
  transformers took ~190 ms on an idle machine at the start of this work (docs/speed.md §3: 12 ms a clip).
  The float32 path is ~1.5-2x faster but 20-60x less exact: within 1e-4 on these speech clips, but
  {tone_err:.1e} (float32 path minus float64 path) on a full-scale 200 Hz tone over noise at 1e-4, whose
  quiet bins survive the 1e-5 clamp; so float64 stays the default.
- "ours" is the whole `ClvpFeatureExtractor.__call__` (input checks, padding, features, NumPy out).
  Its FFT runs in float64 like transformers; the "torch float32 path" row is `log_mel_ref(upcast=False)`
  (framing + float32 FFT + mel only), for the precision/speed trade-off: float32 costs ~6e-5 in the
  log domain before the norms on real speech, float64 ~1e-6.
- The machine is shared (2 cores, a VM whose speed drifts): each round runs every path in a burst (one
  untimed call, then {BURST} timed), medians and minimums both shown.
- Precision of the Triton kernel's float32 DFT (measured on the CPU in Triton's interpreter, whose tl.dot
  is NumPy float32 arithmetic; not a GPU figure): on the two LJ clips at 6 s, max |Δ| vs transformers
  6.7e-5 on the raw log-mel (no norms) and 1.1e-5 after Tortoise's norms; torch's float32 FFT path
  gives 6.1e-5 on the same clips (tests/test_log_mel.py checks frames 0-43 at 1e-4 on every run).
- {cuda_note}
"""
    write_result("log_mel", "Log-mel front end: ClvpFeatureExtractor vs transformers (CPU)", info, table, notes,
                 suffix="-cpu", results=results_dir(args))


if __name__ == "__main__":
    main()
