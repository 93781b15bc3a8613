"""Corpus runs: chunks per second of ``python -m clvp.corpus`` in 1 process and under
``torchrun --nproc_per_node=2`` (gloo), on the CPU.

    python -m clvp.bench.bench_corpus [--save] [--full] [--copies N] [--candidates N] [--max-new-tokens N]

Input: clvp/data/riding_hood.txt as ``--copies`` records (default 2; 18 chunks each), a small
random model saved to a temporary folder (``tiny_config()``; ``--full``: the default config, the real
checkpoint's sizes with random weights), ``--candidates`` candidates per chunk (default 2) of
``--max-new-tokens`` codes (default 16; ``--full`` 8), one batch each. Each layout runs the command
as a user would, in a fresh output file: the wall time includes start-up (imports, model load);
"generation" is the time rank 0 reports from its first chunk to the merged output (all ranks done).
Layouts (``OMP_NUM_THREADS``): 1 process with all the CPU's threads, 1 process with half of them,
and 2 processes with half each. The merged outputs of all layouts are checked byte-identical. On a
small model, threads cost more than they give (OpenMP's synchronisation per tiny product, worse on
a loaded machine), so compare 2 processes with the faster of the 1-process rows.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from clvp.bench._common import bench_parser, conditions, markdown_table, progress, results_dir, write_result
from clvp.configuration import ClvpConfig, tiny_config
from clvp.data import path as data_path
from clvp.modeling import ClvpModelForConditionalGeneration


def run_layout(folder: Path, processes: int, threads: int, options: list[str]) -> dict:
    out = folder / f"out-{processes}x{threads}.jsonl"
    launcher = [sys.executable] if processes == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    cmd = [*launcher, "-m", "clvp.corpus", "--model", "model", "--texts", "texts.jsonl", "--out", out.name, *options]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=folder, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    m = re.search(r"(\d+) chunks of .* in ([0-9.]+) s", proc.stdout)
    return {"wall": wall, "chunks": int(m.group(1)), "generation": float(m.group(2)), "output": out.read_bytes()}


def main(argv=None) -> None:
    parser = bench_parser(__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="the default config (real sizes, random weights)")
    parser.add_argument("--copies", type=int, default=2, help="records: copies of riding_hood.txt")
    parser.add_argument("--candidates", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=None)
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda (every process on the GPU)")
    args = parser.parse_args(argv)
    new = args.max_new_tokens or (8 if args.full else 16)
    cores = os.cpu_count() or 1
    text = data_path("riding_hood.txt").read_text(encoding="utf-8")
    options = ["--candidates", str(args.candidates), "--batch-size", str(args.candidates), "--max-new-tokens", str(new),
               "--top", "1", "--seed", "0", "--device", args.device]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        progress(f"saving a random {'full-size' if args.full else 'tiny'} model")
        torch.manual_seed(0)
        config = ClvpConfig() if args.full else tiny_config()
        ClvpModelForConditionalGeneration(config).eval().save_pretrained(folder / "model")
        (folder / "texts.jsonl").write_text(
            "".join(json.dumps({"id": f"copy{i}", "text": text}) + "\n" for i in range(args.copies)), encoding="utf-8")
        results = {}
        half = max(1, cores // 2)
        for processes, threads in dict.fromkeys([(1, cores), (1, half), (2, half)]):
            progress(f"{processes} process(es), {threads} thread(s) each")
            results[processes, threads] = run_layout(folder, processes, threads, options)
    outputs = [r["output"] for r in results.values()]
    identical = all(o == outputs[0] for o in outputs)
    rows = []
    for (processes, threads), r in results.items():
        rows.append([f"{processes} process{'es (torchrun, gloo)' if processes > 1 else ''}",
                     threads, r["chunks"], f"{r['wall']:.1f}", f"{r['generation']:.2f}",
                     f"{r['chunks'] / r['generation']:.2f}", f"{r['chunks'] / r['wall']:.2f}"])
    rate = {k: r["chunks"] / r["generation"] for k, r in results.items()}
    base = max(v for k, v in rate.items() if k[0] == 1)
    two = rate[2, half]
    info = conditions(
        args.device,
        model=f"{'ClvpConfig() (full size)' if args.full else 'tiny_config()'}, random weights, float32",
        input=f"{args.copies} x riding_hood.txt, {rows[0][2]} chunks",
        settings=f"{args.candidates} candidates per chunk, {new} codes each, batch {args.candidates}",
        cpu_count=cores,
        load_average=" / ".join(f"{x:.1f}" for x in os.getloadavg()),
        outputs_identical=identical,
    )
    table = markdown_table(["layout", "threads each", "chunks", "wall s (with start-up)", "generation s",
                            "chunks/s (generation)", "chunks/s (wall)"], rows)
    notes = (f"2 processes vs the faster 1-process row: {two / base:.2f}x in chunks per second "
             "of generation. The merged outputs of all layouts were "
             f"{'byte-identical' if identical else 'DIFFERENT (a bug)'}. Wall time includes each process's start-up "
             "(importing torch, loading the model), which dominates the tiny model's short runs.")
    write_result("corpus", "Corpus runs: chunks per second, 1 process vs torchrun with 2", info, table, notes,
                 suffix="-cuda" if args.device.startswith("cuda") else "-cpu", results=results_dir(args))
    if not identical:
        raise SystemExit("outputs differ between the layouts")


if __name__ == "__main__":
    main()
