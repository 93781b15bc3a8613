"""``get_speech_features`` on 16 candidates x 250 codes, default-size CLVP, ours vs transformers.

Run from the repository root: ``python -m bench.bench_model``. Writes bench/results/model-cpu.md.

The CLVP re-ranking step of Tortoise: the speech encoder (20 layers, hidden 768, 12 heads, speech
vocab 8192) over 16 candidate code sequences of 250 codes. Both models hold the same random weights:
transformers 4.46.3 (from .oracle/, installed by .ci/run, put on ``sys.path`` here only, when present) builds the
default model, saves it with its ``save_pretrained``, and ours loads that folder. Rows:

* transformers float32 (the anchor; it cannot run CLVP in bfloat16, docs/model.md §6.1.10);
* ours float32: target >= 1.1x faster than transformers;
* ours bfloat16 (``from_pretrained(..., dtype=torch.bfloat16)``): target >= 4x faster than
  transformers float32.

Warm timings: one warm-up call, then at least ``REPEAT`` calls; the median is reported.
Compute floor (docs/speed.md §3): the speech encoder on 16 x 250 codes is ~0.95 TFLOP:
4.4 s at this CPU's measured 216 GFLOP/s fp32, 1.1 s at 840 GFLOP/s bf16.
"""
from __future__ import annotations

import gc
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from clvp.bench._common import (bench_parser, conditions, import_oracle, markdown_table, progress, results_dir, time_fn,
                                write_result)

BATCH, CODES, SPEECH_VOCAB = 16, 250, 8192
REPEAT = 3
TARGET = {"float32": 1.1, "bfloat16": 4.0}


def speech_encoder_flop(cfg, batch: int, length: int) -> float:
    """Matmul FLOPs of one speech-encoder pass (2 per multiply-add), projection included."""
    h, inter, layers = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    tokens = batch * length
    per_layer = 2 * tokens * (4 * h * h + h * 2 * inter + inter * h) + 4 * batch * length * length * h
    return layers * per_layer + 2 * batch * h * cfg.projection_dim


def gemm_ceilings(m: int = BATCH * CODES, k: int = 768, n: int = 3072, reps: int = 3) -> dict:
    """GFLOP/s of one encoder-shaped matrix product (fc1: 4000 x 768 x 3072) per dtype on this CPU."""
    out = {}
    for dtype in (torch.float32, torch.bfloat16):
        a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
        t = time_fn(lambda: a @ b, warmup=1, repeat=reps)
        out[str(dtype).replace("torch.", "")] = 2 * m * k * n / t["median"] / 1e9
    return out


def cpu_isa() -> str:
    """What torch dispatches to, and whether the CPU has native bfloat16 matrix instructions."""
    flags = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    bf16 = sorted(f for f in flags if f in ("avx512_bf16", "amx_bf16", "amx_tile"))
    return f"torch CPU capability {torch.backends.cpu.get_cpu_capability()}; native bf16 instructions: {', '.join(bf16) or 'none'}"


def main(argv=None):
    global REPEAT
    parser = bench_parser("get_speech_features, 16 x 250 codes: ours vs transformers")
    parser.add_argument("--repeat", type=int, default=REPEAT, help="timed calls per variant after the warm-up (>= 3)")
    args = parser.parse_args(argv)
    REPEAT = max(3, args.repeat)
    load_start = " ".join(f"{x:.2f}" for x in os.getloadavg())
    torch.manual_seed(0)
    ids = torch.randint(0, SPEECH_VOCAB, (BATCH, CODES))
    transformers = import_oracle()
    rows, notes = [], []
    timings, outputs = {}, {}

    with tempfile.TemporaryDirectory(prefix="clvp_bench_") as tmp:
        t0 = time.perf_counter()
        if transformers is not None:
            from transformers import ClvpConfig as HFConfig
            from transformers import ClvpEncoderConfig as HFEncoderConfig
            from transformers import ClvpModelForConditionalGeneration as HFModel

            hf = HFModel(HFConfig(speech_config=HFEncoderConfig(vocab_size=SPEECH_VOCAB).to_dict())).eval()
            hf.save_pretrained(tmp)
            build = f"transformers {transformers.__version__} built the default model (speech vocab 8192) and saved it"
        else:
            from clvp import ClvpConfig, ClvpModelForConditionalGeneration

            ClvpModelForConditionalGeneration(ClvpConfig()).save_pretrained(tmp)
            build = "transformers not available: ours only, random weights from our own init"
            hf = None
        notes.append(f"Weights: {build} in {time.perf_counter() - t0:.0f} s; ours loads the same folder.")

        from clvp import ClvpModelForConditionalGeneration

        ours32 = ClvpModelForConditionalGeneration.from_pretrained(tmp)
        ours16 = ClvpModelForConditionalGeneration.from_pretrained(tmp, dtype=torch.bfloat16)
        cfg = ours32.config.speech_config
        flop = speech_encoder_flop(cfg, BATCH, CODES)

        variants = []
        if hf is not None:
            variants.append(("transformers", "float32", lambda: hf.get_speech_features(speech_ids=ids)))
        variants.append(("ours", "float32", lambda: ours32.get_speech_features(speech_ids=ids)))
        variants.append(("ours", "bfloat16", lambda: ours16.get_speech_features(speech_ids=ids)))
        with torch.inference_mode():
            for impl, dtype, fn in variants:  # warm-up, and the outputs for the agreement check
                outputs[(impl, dtype)] = fn().float()
            # Interleaved repetitions (A B C A B C ...): on a shared machine, load that comes and
            # goes then perturbs every variant alike instead of whichever ran at the time.
            runs = {(impl, dtype): [] for impl, dtype, _ in variants}
            for rep in range(REPEAT):
                for impl, dtype, fn in variants:
                    cpu0 = time.process_time()
                    t = time_fn(fn, warmup=0, repeat=1)
                    cpu = time.process_time() - cpu0
                    runs[(impl, dtype)].append((t["median"], cpu))
                    progress(f"rep {rep}: {impl} {dtype} {t['median']:.2f} s wall, {cpu:.2f} s CPU")
            for key, pairs in runs.items():
                wall = [w for w, _ in pairs]
                timings[key] = {"median": statistics.median(wall), "min": min(wall), "max": max(wall), "n": len(wall),
                                "cpu": statistics.median(c for _, c in pairs)}
            ceilings = gemm_ceilings()
        del hf
        gc.collect()

    base = timings.get(("transformers", "float32"))
    for (impl, dtype), t in timings.items():
        speedup = base["median"] / t["median"] if base else float("nan")
        cpu_speedup = base["cpu"] / t["cpu"] if base else float("nan")
        target = "" if impl == "transformers" else f">= {TARGET[dtype]}x vs transformers fp32"
        met = "" if impl == "transformers" or base is None else ("yes" if speedup >= TARGET[dtype] else "NO")
        rows.append([impl, dtype, t["median"], t["min"], t["max"], t["n"], flop / t["median"] / 1e9,
                     f"{speedup:.2f}x" if base else "n/a", t["cpu"], f"{cpu_speedup:.2f}x" if base else "n/a",
                     target, met])
    table = markdown_table(
        ["impl", "dtype", "median s", "min s", "max s", "reps", "GFLOP/s", "speed-up vs HF fp32",
         "median CPU s", "CPU-time speed-up", "target", "met"], rows
    )
    if ("transformers", "float32") in outputs:
        ref = outputs[("transformers", "float32")]
        d32 = (outputs[("ours", "float32")] - ref).abs().max().item()
        cos = torch.nn.functional.cosine_similarity(outputs[("ours", "bfloat16")], ref, dim=-1).min().item()
        notes.append(f"Agreement: ours fp32 vs transformers fp32 max |diff| {d32:.2e} "
                     f"(embeddings of norm ~{ref.norm(dim=-1).mean():.1f}); "
                     f"ours bf16 vs transformers fp32 min cosine similarity {cos:.6f}.")
    notes.append("Matrix-product ceilings measured here (4000 x 768 @ 768 x 3072): "
                 + ", ".join(f"{k} {v:.3g} GFLOP/s" for k, v in ceilings.items()) + ". " + cpu_isa() + ".")
    if "none" in cpu_isa():
        notes.append("This CPU has no native bfloat16 matrix instructions (no AVX-512 BF16 / AMX), so torch emulates "
                     "bf16 matrix products at a small fraction of fp32 speed (ceilings above). The 4x bf16 target was "
                     "set for a CPU with AVX-512 BF16 (docs/speed.md §3: 840 GFLOP/s bf16); on this machine it cannot be "
                     "met by bf16 arithmetic, and bf16 weights only pay off if matmuls are computed in fp32 "
                     "(F.linear(x.float(), W.float()) costs about the fp32 time here).")
    notes.append(f"FLOPs: {flop / 1e12:.3f} TFLOP per call (matmuls of 20 layers incl. attention, 16 x 250 codes). "
                 "Floors from docs/speed.md §3: 4.4 s fp32 (216 GFLOP/s), 1.1 s bf16 (840 GFLOP/s).")
    notes.append("Timings may be perturbed: the 2 cores are shared with other engineers' jobs (load averages at "
                 "start and end in the conditions). The 'median CPU s' column (this process's CPU time per call, "
                 "both threads) is less sensitive to other processes than wall time; re-run if min and max spread widely.")
    info = conditions(
        "cpu",
        oracle=f"transformers {transformers.__version__}" if transformers else "not installed",
        shape=f"speech_ids ({BATCH}, {CODES}), vocab {SPEECH_VOCAB}",
        config="default ClvpConfig (speech encoder: 20 layers, hidden 768, 12 heads, intermediate 1536)",
        timing=f"1 warm-up each, then {REPEAT} reps interleaved across variants, median; torch.inference_mode()",
        cpu_isa=cpu_isa(),
        torch_threads=torch.get_num_threads(),
        load_average_start=load_start,
        load_average_end=" ".join(f"{x:.2f}" for x in os.getloadavg()),
    )
    write_result("model", "CLVP get_speech_features, 16 x 250 codes, CPU: ours vs transformers 4.46.3", info, table,
                 "\n\n".join(notes), suffix="-cpu", results=results_dir(args))


if __name__ == "__main__":
    main()
