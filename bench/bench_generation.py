"""Speech-code generation, default-size CLVP, batch 4 and 16: ours vs transformers, per step and prefill.

Run from the repository root: ``python -m bench.bench_generation`` (``--profile`` adds a
torch.profiler table of our float32 decode steps; ``--batches``, ``--long``, ``--repeat`` trade
precision for time). Writes bench/results/generation-cpu.md.

Both models hold the same random weights: transformers 4.46.3 (from .oracle/, installed by .ci/run, put on
``sys.path`` in this benchmark process only, when present) builds the default model with a fixed
seed (speech vocab 8192), saves it with its ``save_pretrained``, and ours loads that folder.

The work, identical in both: ``generate(input_ids=<the same text B times>, input_features=<one 6 s
clip>, do_sample=False, max_new_tokens=N, min_new_tokens=N)``; ``min_new_tokens`` forbids the stop
code, so both produce exactly N codes per row (checked), then the CLVP text and speech encoders score
them. Greedy over B identical texts is a valid batch in both. Rows, per batch size:

* transformers float32 (it cannot run CLVP in bfloat16, docs/model.md §6.1.10);
* ours float32, ours bfloat16, with the decoder's weights packed (``clvp.packing``, as the CLI runs
  generation on the CPU); the same step with dense weights is timed alone beside them;
* ours int8: the float32 model with ``clvp.quantize.int8_weight_only`` (int8 decoder weights,
  bfloat16 activations into the product; see that module).

Per-step time = (t(long) - t(short)) / (long - short), the method of docs/speed.md §3. Prefill is
timed on its own: the decoder's forward over the (B, L, C) prompt embeddings (L = the 32-token
text's prompt, 37 positions), ours through ``_Decoder.prefill`` (cache filled, logits of the last
position), transformers' ``ClvpForCausalLM`` forward with ``use_cache=True`` (logits of every position).

Floors, measured in the same run over our model's decoder weights: "weight read" reads every weight
and bias once (``torch.sum`` per tensor: the machine's read bandwidth); "weight products" runs the
step's bare matrix products (30 x [q, k, v, out, c_fc, c_proj] + lm_head on (B, in) rows) back to
back through the model's own product code (``PackedLinear`` for the float32 and bfloat16 models, which
run packed as the CLI runs them, ``Int8Linear`` for int8), so the
step's distance to it is the cost of everything else in the step (attention, norms, activations, the
Python loop). The prefill floor is the same products on (B * L, in) rows.

The machine is shared (2 cores): variants run in interleaved rounds and the best round is reported
(other work only adds time), with the median beside it.
"""
from __future__ import annotations

import os
import statistics
import tempfile
import time

import torch

from clvp.bench._common import bench_parser, conditions, import_oracle, markdown_table, progress, results_dir, write_result
from clvp.generation import _Decoder
from clvp.packing import PackedLinear, pack_decoder_weights
from clvp.products import Conv1D, affine
from clvp.quantize import Int8Linear, int8_weight_only

BATCHES, TEXT_LEN, SHORT, LONG = (4, 16), 32, 8, 64
PROMPT_LEN = TEXT_LEN + 5  # conditioning latent, bos, the text, 2 eos, start code
SPEECH_VOCAB = 8192
REPEAT = 3
STEP_CONTEXT = 64  # cached tokens when a decode step is timed alone (~ the middle of the 64-code runs)
TARGET = {"float32": 1.25, "bfloat16": 3.0, "int8": 3.0}  # total speed-up over transformers float32
STEP_TARGET = 1.2  # decode step / weight read floor (the weight-streaming floor)


def decoder_products(model):
    """The modules of every matrix product of one decode step, in order, as ``(module, weight (out, in)
    or None, bias)``: ``Int8Linear`` and ``PackedLinear`` modules run themselves; for the others the
    GPT-2 Conv1D weights, stored (in, out) column-major, are viewed transposed (the nn.Linear layout)."""
    out = []
    for parent, name in model.speech_decoder_model.product_slots():
        mod = getattr(parent, name)
        if isinstance(mod, (Int8Linear, PackedLinear)):
            out.append((mod, None, mod.bias))
        else:
            w = mod.weight.t() if isinstance(mod, Conv1D) else mod.weight
            out.append((mod, w.detach(), mod.bias.detach()))
    return out


def decoder_matmuls(model):
    """(weight (out, in), bias) of every float matrix product of one decode step (see decoder_products)."""
    return [(w, b) for _, w, b in decoder_products(model) if w is not None]


@torch.no_grad()
def weight_products_step(prods, x_by_dim):
    """One step's matrix products alone, on (rows, in) inputs, as the model computes them."""
    for mod, w, b in prods:
        if w is None:
            mod(x_by_dim[mod.in_features])
        else:
            affine(x_by_dim[w.shape[1]], w, b)


@torch.no_grad()
def weight_read_step(prods):
    """Every decoder weight (int8 values and scales for int8) and bias read once and nothing else."""
    for mod, w, b in prods:
        if w is None:  # int8 summed as int32 words: same bytes, but torch.sum over int8 itself is compute-bound
            mod.weight_int8.view(torch.int32).sum()
            mod.weight_scale.sum()
        else:
            w.sum()
        b.sum()


def weight_bytes(prods) -> int:
    total = 0
    for mod, w, b in prods:
        tensors = [mod.weight_int8, mod.weight_scale, b] if w is None else [w, b]
        total += sum(t.numel() * t.element_size() for t in tensors)
    return total


def model_dtype(model) -> torch.dtype:
    return model.speech_decoder_model.final_norm.weight.dtype


class DecodeStepAlone:
    """One decode step of ``model``'s decoder alone (``batch`` rows, the cache holding ``STEP_CONTEXT``
    tokens), through the same ``_Decoder`` that ``generate`` runs; the slot is rewritten every call
    so the context stays fixed."""

    def __init__(self, model, batch):
        lm = model.speech_decoder_model
        self.dec = _Decoder(lm, batch, STEP_CONTEXT + 1)
        with torch.no_grad():
            self.dec.prefill(torch.randn(batch, STEP_CONTEXT, lm.config.hidden_size, dtype=model_dtype(model)))  # (B, ctx, C)
        self.tokens = torch.zeros(batch, dtype=torch.long)  # (B,)

    @torch.no_grad()
    def __call__(self):
        self.dec.pos = STEP_CONTEXT
        self.dec.step(self.tokens, STEP_CONTEXT + 1)


class PrefillAlone:
    """The decoder's prefill over ``batch`` x ``PROMPT_LEN`` prompt embeddings (fresh caches each call)."""

    def __init__(self, model, batch, hf=False):
        lm = model.speech_decoder_model
        dtype = lm.lm_head.weight.dtype if hf else model_dtype(model)
        self.lm, self.hf, self.batch = lm, hf, batch
        self.x = torch.randn(batch, PROMPT_LEN, lm.config.hidden_size, dtype=dtype)  # (B, L, C)

    @torch.no_grad()
    def __call__(self):
        if self.hf:
            return self.lm(inputs_embeds=self.x, use_cache=True)
        return _Decoder(self.lm, self.batch, PROMPT_LEN + 1).prefill(self.x)


def profile_steps(model, ids, feats, n_steps: int = 8):
    """Where a float32 decode step's time goes: torch.profiler over generate(8 codes) minus the prefill."""
    from torch.profiler import ProfilerActivity, profile

    kwargs = dict(do_sample=False, max_new_tokens=n_steps, min_new_tokens=n_steps)
    model.generate(input_ids=ids, input_features=feats, **kwargs)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        model.generate(input_ids=ids, input_features=feats, **kwargs)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20)


def agreement(a: torch.Tensor, b: torch.Tensor) -> str:
    """'x.xxx equal; first divergence per row [..]' between two (B, N) code tensors."""
    eq = a == b
    first = [int((~row).nonzero()[0]) if (~row).any() else "-" for row in eq]
    return f"{eq.float().mean().item():.3f} equal, first divergence per row {first}"


def main(argv=None):
    parser = bench_parser(__doc__.splitlines()[0])
    parser.add_argument("--profile", action="store_true", help="print a torch.profiler table of our float32 steps")
    parser.add_argument("--repeat", type=int, default=REPEAT, help="interleaved timing rounds (the best is reported)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--batches", type=int, nargs="+", default=list(BATCHES), help="batch sizes to run")
    parser.add_argument("--long", type=int, nargs="+", default=None,
                        help=f"codes of the long run per batch size (default {LONG} for each)")
    parser.add_argument("--no-oracle", action="store_true", help="skip transformers (ours and the floors only)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    longs = dict(zip(args.batches, args.long or [LONG] * len(args.batches)))
    if len(longs) != len(args.batches) or any(n <= SHORT for n in longs.values()):
        raise ValueError(f"--long needs one value > {SHORT} per batch size, got {args.long}")
    load_start = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    from clvp import ClvpModelForConditionalGeneration

    torch.manual_seed(0)
    text = torch.randint(1, 255, (1, TEXT_LEN))  # the same text in every row; no 0 (pad) inside
    feats = torch.randn(1, 80, 517)  # one 6 s clip's log-mel frames
    transformers = None if args.no_oracle else import_oracle()
    codes = {}

    with tempfile.TemporaryDirectory(prefix="clvp_bench_") as tmp:
        t0 = time.perf_counter()
        if transformers is not None:
            from transformers import ClvpConfig as HFConfig
            from transformers import ClvpEncoderConfig as HFEncoderConfig
            from transformers import ClvpModelForConditionalGeneration as HFModel
            from transformers import GenerationConfig as HFGenerationConfig

            torch.manual_seed(0)
            hf = HFModel(HFConfig(speech_config=HFEncoderConfig(vocab_size=SPEECH_VOCAB).to_dict())).eval()
            hf.save_pretrained(tmp)
            build = f"transformers {transformers.__version__} built the default model (seed 0, speech vocab 8192) and saved it"
            dc = hf.config.decoder_config

            def hf_generate(b):
                def call(n):
                    gc_ = HFGenerationConfig(bos_token_id=dc.bos_token_id, eos_token_id=dc.eos_token_id,
                                             pad_token_id=dc.eos_token_id, return_dict_in_generate=True,
                                             do_sample=False, max_new_tokens=n, min_new_tokens=n)
                    with torch.no_grad():
                        return hf.generate(input_ids=text.repeat(b, 1), input_features=feats, generation_config=gc_)
                return call
        else:
            from clvp import ClvpConfig

            torch.manual_seed(0)
            ClvpModelForConditionalGeneration(ClvpConfig()).eval().save_pretrained(tmp)
            build = "ours built the default model (seed 0) and saved it (transformers not run)"
            hf = None
        setup_s = time.perf_counter() - t0

        dense = {"float32": ClvpModelForConditionalGeneration.from_pretrained(tmp),
                 "bfloat16": ClvpModelForConditionalGeneration.from_pretrained(tmp, dtype=torch.bfloat16)}
        ours = {"float32": pack_decoder_weights(ClvpModelForConditionalGeneration.from_pretrained(tmp)),
                "bfloat16": pack_decoder_weights(ClvpModelForConditionalGeneration.from_pretrained(tmp, dtype=torch.bfloat16)),
                "int8": int8_weight_only(ClvpModelForConditionalGeneration.from_pretrained(tmp))}

        def ours_generate(model, b):
            return lambda n: model.generate(input_ids=text.repeat(b, 1), input_features=feats, do_sample=False,
                                            max_new_tokens=n, min_new_tokens=n)

        variants = []  # (batch, name, fn)
        streams = {}  # (batch, kind, dtype) -> (one call's work, bytes)
        for b in args.batches:
            if hf is not None:
                variants.append((b, "transformers float32", hf_generate(b)))
                streams[(b, "prefill", "transformers float32")] = (PrefillAlone(hf, b, hf=True), 0)
            variants += [(b, f"ours {dt}", ours_generate(m, b)) for dt, m in ours.items()]
            for dt, model in ours.items():
                prods = decoder_products(model)
                # packed weights are opaque to torch.sum: the read floor reads the same values dense
                read = decoder_products(dense[dt]) if dt in dense else prods
                dtype = model_dtype(model)
                nbytes = weight_bytes(read)
                xs = {d: torch.randn(b, d, dtype=dtype) for d in (1024, 4096)}  # (B, in)
                xp = {d: torch.randn(b * PROMPT_LEN, d, dtype=dtype) for d in (1024, 4096)}  # (B * L, in)
                streams[(b, "products", dt)] = (lambda p=prods, x=xs: weight_products_step(p, x), nbytes)
                streams[(b, "read", dt)] = (lambda p=read: weight_read_step(p), nbytes)
                streams[(b, "step alone", dt)] = (DecodeStepAlone(model, b), nbytes)
                if dt in dense:
                    streams[(b, "dense step alone", dt)] = (DecodeStepAlone(dense[dt], b), nbytes)
                streams[(b, "prefill products", dt)] = (lambda p=prods, x=xp: weight_products_step(p, x), nbytes)
                streams[(b, "prefill", f"ours {dt}")] = (PrefillAlone(model, b), nbytes)

        def run(b, name, fn, n):
            out = fn(n)
            assert out.speech_ids.shape == (b, n), f"{name}: {tuple(out.speech_ids.shape)} codes, expected {(b, n)}"
            codes[(b, name, n)] = out.speech_ids

        for b, name, fn in variants:  # warm-up (the first timed round checks the shapes)
            run(b, name, fn, SHORT)
            progress(f"warm-up: batch {b} {name}")
        # interleaved rounds: on a shared machine a load change then hits every variant alike
        times = {(b, name, n): [] for b, name, _ in variants for n in (SHORT, longs[b])}
        times.update({key: [] for key in streams})
        for r in range(args.repeat):
            for b, name, fn in variants:
                for n in (SHORT, longs[b]):
                    t0 = time.perf_counter()
                    run(b, name, fn, n)  # exactly n codes per row, checked
                    times[(b, name, n)].append(time.perf_counter() - t0)
                    progress(f"round {r}: batch {b:2d} {name:22s} {n:3d} codes: {times[(b, name, n)][-1]:.3f} s")
            for key, (fn, _) in streams.items():
                fn()
                for _ in range(3):
                    t0 = time.perf_counter()
                    fn()
                    times[key].append(time.perf_counter() - t0)
                progress(f"round {r}: batch {key[0]} {key[1]} {key[2]}: {min(times[key][-3:]) * 1e3:.1f} ms (best of 3)")
        best = {key: min(v) for key, v in times.items()}
        med = {key: statistics.median(v) for key, v in times.items()}
        profile_table = profile_steps(ours["float32"], text.repeat(4, 1), feats) if args.profile else None

    # Best of the rounds: on a shared machine other work only ever adds time, so the minimum is the
    # least perturbed figure; the per-round median difference is shown beside it.
    def per_step(b, name):
        return (best[(b, name, longs[b])] - best[(b, name, SHORT)]) / (longs[b] - SHORT)

    def per_step_median(b, name):
        pairs = zip(times[(b, name, longs[b])], times[(b, name, SHORT)])
        return statistics.median(x - y for x, y in pairs) / (longs[b] - SHORT)

    headers = ["batch", "variant", f"t({SHORT}) s", "t(long) s", "per step ms", "(median) ms", "step / products",
               "step / read", "step speed-up", "prefill ms", "(median) ms", "prefill / products", "prefill speed-up",
               "total speed-up", "meets target"]
    rows = []
    anchor = "transformers float32" if hf is not None else None
    for b, name, _ in variants:
        dt = name.split()[-1]
        step, total = per_step(b, name), best[(b, name, longs[b])]
        pre, pre_med = best[(b, "prefill", name)], med[(b, "prefill", name)]
        if name.startswith("ours"):
            vs_products = f"{step / best[(b, 'products', dt)]:.2f}x"
            vs_read = f"{step / best[(b, 'read', dt)]:.2f}x"
            pre_vs = f"{pre / best[(b, 'prefill products', dt)]:.2f}x"
        else:
            vs_products = vs_read = pre_vs = "-"
        if anchor and name != anchor:
            step_up = f"{per_step(b, anchor) / step:.2f}x"
            pre_up = f"{best[(b, 'prefill', anchor)] / pre:.2f}x"
            total_up = best[(b, anchor, longs[b])] / total
            ok = total_up >= TARGET[dt] and (step / best[(b, 'read', dt)] <= STEP_TARGET)
            meets = "yes" if ok else f"no (targets {TARGET[dt]}x total, step <= {STEP_TARGET}x read)"
            total_up = f"{total_up:.2f}x"
        else:
            step_up = pre_up = total_up = meets = "-"
        rows.append([b, name, best[(b, name, SHORT)], total, step * 1e3, per_step_median(b, name) * 1e3, vs_products,
                     vs_read, step_up, pre * 1e3, pre_med * 1e3, pre_vs, pre_up, total_up, meets])
    for (b, kind, dt), (_, nbytes) in streams.items():
        if kind in ("products", "read", "step alone", "dense step alone", "prefill products"):
            label = {"products": "weight products (floor)", "read": "weight read (floor)",
                     "step alone": f"decode step alone (context {STEP_CONTEXT})",
                     "dense step alone": f"decode step alone, dense weights (context {STEP_CONTEXT})",
                     "prefill products": f"prefill products, {b} x {PROMPT_LEN} rows (floor)"}[kind]
            t = best[(b, kind, dt)]
            gbs = f"{nbytes / t / 1e9:.1f} GB/s"
            alone = kind.endswith("step alone")
            ratio_p = f"{t / best[(b, 'products', dt)]:.2f}x" if alone else (gbs if kind != "read" else "-")
            ratio_r = f"{t / best[(b, 'read', dt)]:.2f}x" if alone else (gbs if kind == "read" else "-")
            row_ms = [t * 1e3, med[(b, kind, dt)] * 1e3] if kind != "prefill products" else ["-", "-"]
            pre_ms = [t * 1e3, med[(b, kind, dt)] * 1e3] if kind == "prefill products" else ["-", "-"]
            rows.append([b, f"ours {dt}: {label}", "-", "-", *row_ms, ratio_p, ratio_r, "-", *pre_ms, "-", "-", "-", "-"])

    agree = []
    for b in args.batches:
        n = longs[b]
        ref = codes[(b, "ours float32", n)]
        parts = [f"int8 vs ours float32: {agreement(codes[(b, 'ours int8', n)], ref)}",
                 f"bfloat16 vs ours float32: {agreement(codes[(b, 'ours bfloat16', n)], ref)}"]
        if anchor:
            parts.insert(0, f"ours float32 vs transformers: {agreement(ref, codes[(b, anchor, n)])}")
        agree.append(f"- batch {b}, {n}-code run: " + "; ".join(parts))
    load_end = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    info = conditions(
        "cpu",
        model="default ClvpConfig (decoder 30 layers x 1024, 16 heads, vocab 8194; speech vocab 8192), random weights",
        weights=build,
        work=f"generate: B x the same {TEXT_LEN}-token text, one 1x80x517 clip, greedy, max_new_tokens = "
             f"min_new_tokens = N; N in ({SHORT}, long), long = " + ", ".join(f"{n} at batch {b}" for b, n in longs.items())
             + "; CLVP scoring included",
        timing=f"best of {args.repeat} interleaved rounds (every variant once per round) after one warm-up call each; "
               f"per step = (best t(long) - best t({SHORT})) / (long - {SHORT}), '(median)' = median over rounds of "
               f"that round's difference; prefill, floors and step alone: best (and median) of 3 per round",
        setup_s=f"{setup_s:.1f}",
        torch_threads=torch.get_num_threads(),
        load_average=f"{load_start} at start, {load_end} at end (1 / 5 / 15 min; the machine is shared)",
    )
    notes = "\n".join(x for x in [
        "No CUDA on this machine: CPU only (eager torch paths; the Triton kernels need a GPU).",
        "Codes (long run; greedy, random default weights, whose nearly flat logits make near-ties common, so "
        "any rounding flips some: the token-exact parity checks are the fixture tests):",
        *agree,
        "Floors, over our model's decoder weights, 30 x (q, k, v, out 1024x1024, c_fc 1024x4096, c_proj "
        "4096x1024) + lm_head 1024x8194 with biases: 'weight products' runs those products alone on (B, in) "
        "rows through the model's own product code (float32 and bfloat16: PackedLinear, oneDNN's linear op "
        "over weights packed by clvp.packing.pack_decoder_weights, as the CLI runs generation on the CPU; int8: "
        "Int8Linear, torch's _weight_int8pack_mm); 'weight read' only reads them (torch.sum per dense tensor), "
        "the machine's bandwidth floor, the target's measure ('step / read' <= 1.2x). GB/s counts the weights' "
        "bytes (int8: a quarter of float32's, plus scales). 'step / products' is what the step spends outside "
        "its products. Neither floor counts the KV cache a step reads (at context 64: 4% of the float32 "
        "weights' bytes at batch 4, 16% at batch 16), so the ratios to them overstate the distance slightly. "
        "'dense weights': the same step through clvp.products.affine on the unpacked model (float32: oneDNN's "
        "linear op on the dense weight up to 64 rows; bfloat16: F.linear).",
        "'per step' of a generate row is a difference of whole calls, so it also carries what grows with the "
        "number of codes outside the decoder (the CLVP speech encoder scores long codes instead of 8); "
        f"'decode step alone' times one step of the same decoder loop in isolation (context {STEP_CONTEXT}).",
        f"Prefill: the decoder alone over B x {PROMPT_LEN} prompt embeddings (ours: cache filled, last logits; "
        "transformers: its ClvpForCausalLM forward with use_cache=True, logits of every position).",
    ] if x)
    if profile_table:
        notes += "\n\n### torch.profiler, ours float32, generate(8 codes), batch 4\n```\n" + profile_table + "\n```\n"
    write_result("generation", "Generation: default-size CLVP, batch 4 and 16, forced codes, CPU: per step and prefill",
                 info, markdown_table(headers, rows), notes, suffix="-cpu", results=results_dir(args))


if __name__ == "__main__":
    main()
