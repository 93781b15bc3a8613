"""The decoder's whole decode step and a whole 16 x 150 generation, against their memory floors
and transformers (docs/speed.md §6.1; targets §7.2).

Run from the repository root: ``python -m bench.bench_decode_step``. ``--tiny`` swaps in a 2-layer
decoder and small shapes: a quick check that the benchmark runs, not a measurement.

Both parts use the default-size ``ClvpDecoderConfig`` (30 layers x 1024, 16 heads, vocab 8194) with
random weights: transformers 4.46.3 (from ``.oracle`` when present, in this process only) builds
and saves it with a fixed seed and ours loads that folder, so both hold the same weights.

Step (B in 1, 16, 64 x context 128, 512, 1000 on CUDA; B in 1, 4, 16 x context 128, 512 on the CPU):
one new token per row against a cache already holding ``ctx`` tokens, through the ``_Decoder`` that
``generate`` runs; its slot is rewritten every call so the context stays fixed. Variants:

* ``ours graph`` (CUDA only): the step captured in a CUDA graph (Triton decode attention);
* ``ours eager``: the same step without the graph (on CUDA bound by ~800 kernel launches);
* ``transformers``: ``ClvpForCausalLM`` forward of one token with its tuple cache of ``ctx`` tokens
  (the same past every call, so the context stays fixed too).

Time per step = wall time of 20 back-to-back steps (device synchronised at the end) / 20, median
of 5 such runs (on the CPU 3 steps, median of 3 runs). Floor = the step's bytes (every weight once + the K/V of B x ctx tokens) / the
device's measured copy bandwidth (a 1 GiB copy, read + write bytes).

Generation (CUDA; on the CPU only with ``--tiny``): 16 rows of the same 60-token prompt, greedy,
``max_new_tokens = min_new_tokens = 150`` (exactly 150 codes, checked): ours (``generate``, its step in
a CUDA graph), ours through gpt-fast's recipe (the same step under ``torch.compile(mode="reduce-overhead",
fullgraph=True)`` in a plain greedy loop, ``CompiledGreedy``) and transformers' ``generate``; floor = the sum over the 150 steps of (weights + K/V at that context) / copy bandwidth,
the 52 ms of docs/speed.md §4 at 3.0 TB/s.

Targets on an H100 (bfloat16): step at B = 16, ctx 512 <= 0.7 ms; 16 x 150 within 2x of its floor.
"""
from __future__ import annotations

import os
import re
import statistics
import tempfile
import time

import torch

from clvp.bench._common import (bench_parser, conditions, copy_bandwidth, import_oracle, markdown_table, progress,
                                results_dir, sync, write_result)

STEP_CALLS, STEP_RUNS = 20, 5
CPU_STEP_CALLS, CPU_STEP_RUNS = 3, 3  # a default-size step takes 0.1-1 s on the CPU
GEN_BATCH, GEN_PROMPT, GEN_NEW = 16, 60, 150


def per_call(fn, device) -> float:
    """Median over runs of (wall time of back-to-back calls) / calls, in seconds."""
    calls, runs = (STEP_CALLS, STEP_RUNS) if device.type == "cuda" else (CPU_STEP_CALLS, CPU_STEP_RUNS)
    for _ in range(3):
        fn()
    sync(device)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        sync(device)
        times.append((time.perf_counter() - t0) / calls)
    return statistics.median(times)


def weight_bytes(lm) -> int:
    """Bytes a decode step reads of weights: every decoder parameter but the position table, which
    it reads one row of, and the token table, which it reads B rows of."""
    skip = {"model.decoder.input_embeds_layer.weight", "model.decoder.position_embeds_layer.weight"}
    return sum(p.numel() * p.element_size() for n, p in lm.named_parameters() if n not in skip)


def kv_bytes(cfg, batch: int, ctx: int, dtype) -> int:
    """K and V of ``ctx`` cached tokens for ``batch`` rows, every layer."""
    return 2 * cfg.num_hidden_layers * batch * ctx * cfg.hidden_size * torch.finfo(dtype).bits // 8


class OurStep:
    """One decode step at a fixed context, through generate's ``_Decoder``."""

    def __init__(self, lm, batch: int, ctx: int, graph: bool):
        from clvp.generation import _Decoder

        dtype, device = lm.lm_head.weight.dtype, lm.lm_head.weight.device
        self.ctx = ctx
        self.dec = _Decoder(lm, batch, ctx + 1, use_cuda_graph=graph)
        with torch.no_grad():
            self.dec.prefill(torch.randn(batch, ctx, lm.config.hidden_size, dtype=dtype, device=device))  # (B, ctx, C)
        self.tokens = torch.zeros(batch, dtype=torch.long, device=device)  # (B,)

    @torch.no_grad()
    def __call__(self):
        self.dec.pos = self.ctx
        return self.dec.step(self.tokens, self.ctx + 1)[0]


class TheirStep:
    """transformers' ClvpForCausalLM forward of one token against a tuple cache of ``ctx`` tokens."""

    def __init__(self, hf_lm, batch: int, ctx: int):
        device = next(hf_lm.parameters()).device
        vocab = hf_lm.config.vocab_size
        with torch.no_grad():
            ids = torch.randint(0, vocab - 2, (batch, ctx), device=device)  # (B, ctx)
            out = hf_lm(input_ids=ids, use_cache=True, return_dict=True)
        self.past = out.past_key_values
        if hasattr(self.past, "to_legacy_cache"):
            self.past = self.past.to_legacy_cache()
        self.lm = hf_lm
        self.ids = torch.zeros(batch, 1, dtype=torch.long, device=device)  # (B, 1)
        self.position = torch.full((batch, 1), ctx, dtype=torch.long, device=device)  # (B, 1)

    @torch.no_grad()
    def __call__(self):
        return self.lm(input_ids=self.ids, past_key_values=self.past, position_ids=self.position, use_cache=True).logits


class CompiledGreedy:
    """gpt-fast's recipe on our weights: generate's decode step (``_Decoder._step_body``) under
    ``torch.compile(mode="reduce-overhead", fullgraph=True)`` (inductor kernels replayed as CUDA graphs),
    the KV caches marked as static addresses so the graphs may write them, and a plain greedy loop
    that suppresses the stop code (as ``min_new_tokens`` does). On the CPU (``--tiny``) the step is
    traced with the ``aot_eager`` backend instead: a check that it compiles as one graph, not a timing."""

    def __init__(self, lm, ids, new: int, device):
        from clvp.generation import _Decoder

        b, self.prompt = ids.shape
        self.new, self.eos = new, lm.config.eos_token_id
        self.dec = _Decoder(lm, b, self.prompt + new, use_cuda_graph=False)
        for cache in self.dec.caches:  # the graphs write the caches in place: their addresses must not move
            torch._dynamo.mark_static_address(cache.k)
            torch._dynamo.mark_static_address(cache.v)
        if device.type == "cuda":
            self.body = torch.compile(self.dec._step_body, mode="reduce-overhead", fullgraph=True)
        else:
            self.body = torch.compile(self.dec._step_body, backend="aot_eager", fullgraph=True)
        with torch.no_grad():
            self.x = lm.model.decoder.embed(input_ids=ids)  # (B, P, C), positions 0..P-1
        self.out = torch.empty(b, new, dtype=torch.long, device=device)  # (B, new)

    @torch.no_grad()
    def __call__(self):
        dec = self.dec
        logits, _ = dec.prefill(self.x)  # (B, V); rewrites cache slots 0..P-1
        for k in range(self.new):
            logits[:, self.eos] = float("-inf")
            nxt = logits.argmax(-1)  # (B,)
            self.out[:, k] = nxt
            if k == self.new - 1:
                break
            dec.tokens.copy_(nxt)
            dec.position.fill_(self.prompt + k)
            dec.slot.fill_(dec.pos)
            dec.pos += 1
            torch.compiler.cudagraph_mark_step_begin()
            logits = self.body().clone()  # the graph's output buffer is rewritten by the next replay
        return self.out


def build_models(transformers, cfg_kwargs: dict, dtype, device, tmp: str):
    """(ours, theirs or None, how the weights were made): the same weights in both when possible."""
    from clvp import ClvpDecoderConfig, ClvpForCausalLM

    torch.manual_seed(0)
    if transformers is not None:
        hf = transformers.ClvpForCausalLM(transformers.ClvpDecoderConfig(**cfg_kwargs)).eval()
        hf.save_pretrained(tmp)
        hf = hf.to(device=device, dtype=dtype)
        made = f"transformers {transformers.__version__} built the decoder (seed 0) and saved it; ours loads it"
    else:
        ClvpForCausalLM(ClvpDecoderConfig(**cfg_kwargs)).eval().save_pretrained(tmp)
        hf = None
        made = "transformers not available: ours built the decoder (seed 0)"
    ours = ClvpForCausalLM.from_pretrained(tmp, dtype=dtype, device=device)
    return ours, hf, made


def bench_steps(ours, hf, shapes, device, copy_bw):
    cfg, dtype = ours.config, ours.lm_head.weight.dtype
    graph_ok = device.type == "cuda"
    rows = []
    for batch, ctx in shapes:
        nbytes = weight_bytes(ours) + kv_bytes(cfg, batch, ctx, dtype)
        floor = nbytes / copy_bw
        row = [batch, ctx, nbytes / 1e6, floor * 1e3]
        timed = {}
        if graph_ok:
            timed["graph"] = per_call(OurStep(ours, batch, ctx, graph=True), device)
        timed["eager"] = per_call(OurStep(ours, batch, ctx, graph=False), device)
        if hf is not None:
            try:
                timed["transformers"] = per_call(TheirStep(hf, batch, ctx), device)
            except Exception as err:  # the baseline failing must not hide our figures
                progress(f"transformers step failed at B={batch}, ctx={ctx}: {type(err).__name__}: {err}")
        for key in ("graph", "eager", "transformers"):
            t = timed.get(key)
            row += ["-", "-"] if t is None else [t * 1e3, f"{floor / t * 100:.0f}%"]
        best = timed.get("graph", timed["eager"])
        row.append(f"{timed['transformers'] / best:.2f}x" if "transformers" in timed else "-")
        rows.append(row)
        progress(" ".join(str(v) for v in row))
        if device.type == "cuda":
            torch.cuda.empty_cache()
    headers = ["B", "ctx", "MB / step", "floor ms", "ours graph ms", "(% of floor speed)", "ours eager ms",
               "(% of floor speed)", "transformers ms", "(% of floor speed)", "ours (best) vs transformers"]
    return markdown_table(headers, rows)


def bench_generation(ours, hf, device, copy_bw, prompt: int, new: int, batch: int, strict: bool = False):
    cfg, dtype = ours.config, ours.lm_head.weight.dtype
    floor = sum(weight_bytes(ours) + kv_bytes(cfg, batch, prompt + k, dtype) for k in range(new)) / copy_bw
    torch.manual_seed(0)
    ids = torch.randint(0, cfg.vocab_size - 2, (1, prompt), device=device).repeat(batch, 1)  # (B, P), one prompt
    rows, outs = [], {}

    def ours_run():
        return ours.generate(input_ids=ids, do_sample=False, max_new_tokens=new, min_new_tokens=new)

    def hf_run():
        from transformers import GenerationConfig

        gc_ = GenerationConfig(do_sample=False, max_new_tokens=new, min_new_tokens=new,
                               bos_token_id=cfg.bos_token_id, eos_token_id=cfg.eos_token_id,
                               pad_token_id=cfg.eos_token_id)
        with torch.no_grad():
            return hf.generate(input_ids=ids, generation_config=gc_)

    def compiled_run():
        if "compiled" not in state:
            state["compiled"] = CompiledGreedy(ours, ids, new, device)
        return state["compiled"]()

    state = {}
    compiled_name = ("ours, torch.compile reduce-overhead (gpt-fast recipe)" if device.type == "cuda"
                     else "ours, torch.compile aot_eager (a tracing check, not a timing)")
    variants = [("ours", ours_run), (compiled_name, compiled_run)]
    variants += [("transformers", hf_run)] if hf is not None else []
    timed = {}
    for name, fn in variants:
        try:
            out = fn()  # warm-up (graph capture, Triton compilation, torch.compile)
            seq = out if isinstance(out, torch.Tensor) else out.sequences
            assert seq.shape[1] >= new, f"{name}: {seq.shape[1]} codes, expected {new}"
            outs[name] = seq[:, -new:].clone()
            times = []
            for _ in range(3):
                sync(device)
                t0 = time.perf_counter()
                fn()
                sync(device)
                times.append(time.perf_counter() - t0)
            timed[name] = statistics.median(times)
        except Exception as err:
            progress(f"{name} generation failed: {type(err).__name__}: {err}")
            if strict:  # --tiny is the check that every variant runs
                raise
    for name, t in timed.items():
        vs = f"{timed['transformers'] / t:.2f}x" if "transformers" in timed else "-"
        rows.append([name, t * 1e3, floor * 1e3, f"{t / floor:.2f}x", vs])
    agree = " ".join(
        f"{name}: codes equal to ours at {(codes == outs['ours']).float().mean().item():.3f} of positions."
        for name, codes in outs.items() if name != "ours" and "ours" in outs)
    table = markdown_table(["variant", "wall ms (median of 3)", "floor ms", "time / floor", "vs transformers"], rows)
    return table, agree


def main(argv=None):
    parser = bench_parser(__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="2-layer decoder, small shapes: checks the benchmark runs")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    transformers = import_oracle()
    if args.tiny:
        cfg_kwargs = dict(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, n_inner=128, vocab_size=200,
                          max_position_embeddings=128, max_text_tokens=64, bos_token_id=198, eos_token_id=199)
        shapes = [(1, 16), (4, 32)]
        gen = (8, 6, 4)
    elif device.type == "cuda":
        cfg_kwargs = {}
        shapes = [(b, c) for b in (1, 16, 64) for c in (128, 512, 1000)]
        gen = (GEN_PROMPT, GEN_NEW, GEN_BATCH)
    else:
        cfg_kwargs = {}
        shapes = [(b, c) for b in (1, 4, 16) for c in (128, 512)]
        gen = None  # 16 x 150 on this CPU takes minutes per variant: bench_generation covers the CPU
    copy_bw = copy_bandwidth(device, 2**30 if device.type == "cuda" and not args.tiny else 2**28)
    with tempfile.TemporaryDirectory(prefix="clvp_bench_") as tmp:
        ours, hf, made = build_models(transformers, cfg_kwargs, dtype, device, tmp)
        step_table = bench_steps(ours, hf, shapes, device, copy_bw)
        gen_table, agree = bench_generation(ours, hf, device, copy_bw, *gen, strict=args.tiny) if gen else (None, "")
    cfg = ours.config
    info = conditions(
        device, dtype=str(dtype).replace("torch.", ""),
        model=f"ClvpDecoderConfig: {cfg.num_hidden_layers} layers x {cfg.hidden_size}, {cfg.num_attention_heads} heads, "
              f"inner {cfg.n_inner or 4 * cfg.hidden_size}, vocab {cfg.vocab_size}; random weights" + (" (--tiny)" if args.tiny else ""),
        weights=made,
        copy_bandwidth=f"{copy_bw / 1e9:.1f} GB/s (large copy, read + write bytes)",
        step=(f"{STEP_CALLS} back-to-back steps (synchronised at the end) per run, median of {STEP_RUNS} runs, after 3 warm-up steps"
              if device.type == "cuda" else
              f"{CPU_STEP_CALLS} back-to-back steps per run, median of {CPU_STEP_RUNS} runs, after 3 warm-up steps"),
        generation=(f"{gen[2]} rows x the same {gen[0]}-token prompt, greedy, exactly {gen[1]} new codes; median of 3 after a warm-up"
                    if gen else "not run on the CPU (see generation-cpu.md)"),
        load_average=" / ".join(f"{x:.1f}" for x in os.getloadavg()),
    )
    notes = (
        "Floor = bytes / copy bandwidth: every decoder weight once (the two embedding tables excepted: a step "
        "reads a few rows of them) plus K and V of B x ctx cached tokens. '% of floor speed' = floor / time. "
        "Targets (docs/speed.md §7.2, H100, bfloat16): step at B = 16, ctx 512 <= 0.7 ms; 16 x 150 generation within 2x of "
        "its floor (52 ms at 3.0 TB/s, docs/speed.md §4)."
    )
    if device.type != "cuda":
        notes += " No CUDA on this machine: no graph-captured step, and the Triton decode kernel is not in these times."
    if gen_table:
        notes += f"\n\n### Generation: {gen[2]} x {gen[1]} codes\n{gen_table}\n" + (f"\n{agree}\n" if agree else "")
    if args.tiny:
        suffix = "-tiny"
    elif device.type == "cuda":
        suffix = "-" + re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name().lower()).strip("-")
    else:
        suffix = "-cpu"
    write_result("decode_step", "Decode step and 16 x 150 generation against their memory floors", info, step_table,
                 notes, suffix=suffix, results=results_dir(args))


if __name__ == "__main__":
    main()
