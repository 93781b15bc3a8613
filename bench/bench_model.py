"""The text and speech encoders, default-size CLVP: ours against transformers and against their own
matrix-product floor, in float32 and bfloat16.

Run from the repository root: ``python -m bench.bench_model`` (or ``clvp bench --only model``);
``--save`` writes bench/results/model-cpu.md.

Workloads: ``get_speech_features`` on 16 candidates x 250 codes (Tortoise's re-ranking step: the
speech encoder, 20 layers, hidden 768, 12 heads, intermediate 1536, speech vocab 8192) and
``get_text_features`` on 16 texts x 100 tokens (the text encoder, the same sizes). Both models hold
the same random weights: transformers 4.46.3 (from .oracle/, put on ``sys.path`` here only, when
present) builds the default model and saves it with its ``save_pretrained``; ours loads that folder,
once in float32 and once with ``dtype=torch.bfloat16``.

Variants per encoder, timed in interleaved rounds (every variant once per round, so that load from
other processes perturbs all of them alike):

* transformers float32, the anchor (it cannot run CLVP in bfloat16, docs/model.md §6.1.10);
* ours float32 and ours bfloat16;
* the **floor** of each: the same encoder pass's matrix products, bare, in the same dtype and with
  the same weights: q, k, v, out_proj, fc1 and fc2 of every layer and the final projection through
  ``clvp.products.affine`` (the model's own product code, so bfloat16 takes the path bfloat16
  weights take on this CPU), plus attention's two products per layer (QK^T and PV over the B * H
  heads) through ``torch.bmm``. Where this CPU has no native 16-bit matrix instructions those two
  run in float32, as ``affine`` does its products (a bfloat16 ``bmm`` is emulated about 100x slower).

Reported per row: best and median wall time over the rounds, median process CPU time per call (both
threads; less sensitive to other processes than wall time), and the ratios ours / floor (best wall
and median CPU) and transformers / ours (best wall). Target (docs/speed.md §9): ours within 1.2x
of its floor.
"""
from __future__ import annotations

import gc
import os
import statistics
import tempfile
import time

import torch

from clvp.bench._common import (bench_parser, conditions, cpu_flags, import_oracle, markdown_table, progress,
                                results_dir, time_fn, write_result)
from clvp.products import affine, cpu_has_fast_half

BATCH, CODES, SPEECH_VOCAB = 16, 250, 8192
TEXT_TOKENS = 100
REPEAT = 3
FLOOR_TARGET = 1.2  # ours / floor
TRANSFORMERS_TARGET = {"float32": 1.1}  # transformers float32 / ours float32 (docs/speed.md §7.1)


def encoder_flop(cfg, batch: int, length: int) -> float:
    """Matmul FLOPs of one encoder pass (2 per multiply-add): q, k, v, out_proj, fc1 (to 2I), fc2,
    QK^T and PV of every layer, and the final projection."""
    h, inter, layers = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    tokens = batch * length
    per_layer = 2 * tokens * (4 * h * h + h * 2 * inter + inter * h) + 4 * batch * length * length * h
    return layers * per_layer + 2 * batch * h * cfg.projection_dim


def product_floor(encoder, batch: int, length: int, dtype: torch.dtype):
    """A function that runs one pass of ``encoder``'s matrix products, bare, for (batch, length)
    tokens in ``dtype``: the layers' six products and the final projection through ``affine``
    with the encoder's own weights, and attention's QK^T and PV through ``torch.bmm``."""
    cfg = encoder.config
    c, inter, heads = cfg.hidden_size, cfg.intermediate_size, cfg.num_attention_heads
    d = c // heads
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(batch, length, c, generator=gen).to(dtype)  # (B, T, C): the projections' input
    h = torch.randn(batch, length, inter, generator=gen).to(dtype)  # (B, T, I): fc2's input
    pooled = torch.randn(batch, c, generator=gen).to(dtype)  # (B, C): the projection's input
    attn_dtype = dtype if cpu_has_fast_half(dtype) else torch.float32
    q = torch.randn(batch * heads, length, d, generator=gen).to(attn_dtype)  # (B*H, T, D)
    probs = torch.rand(batch * heads, length, length, generator=gen).to(attn_dtype)  # (B*H, T, T)
    layers = [(layer.self_attn, layer.mlp) for layer in encoder.layers]

    def run():
        for attn, mlp in layers:
            for lin in (attn.q_proj, attn.k_proj, attn.v_proj, attn.out_proj, mlp.fc1.proj):
                affine(x, lin.weight, lin.bias)
            affine(h, mlp.fc2.weight, mlp.fc2.bias)
            torch.bmm(q, q.transpose(1, 2))  # QK^T: (B*H, T, T)
            torch.bmm(probs, q)  # PV: (B*H, T, D)
        affine(pooled, encoder.projection.weight, None)

    return run


def gemm_ceilings(m: int = BATCH * CODES, k: int = 768, n: int = 3072, reps: int = 3) -> dict:
    """GFLOP/s of one encoder-shaped product (fc1: 4000 x 768 x 3072) in float32, and of a smaller
    one (512 x 768 x 768) in bfloat16 (emulated on CPUs without bf16 instructions: the large one
    would take minutes)."""
    out = {}
    for dtype, (mm, kk, nn) in ((torch.float32, (m, k, n)), (torch.bfloat16, (512, 768, 768))):
        a, b = torch.randn(mm, kk, dtype=dtype), torch.randn(kk, nn, dtype=dtype)
        t = time_fn(lambda: a @ b, warmup=1, repeat=reps)
        out[f"{str(dtype).replace('torch.', '')} ({mm} x {kk} @ {kk} x {nn})"] = 2 * mm * kk * nn / t["median"] / 1e9
    return out


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv=None):
    global REPEAT
    parser = bench_parser("text and speech encoders: ours vs transformers vs their matrix-product floor")
    parser.add_argument("--repeat", type=int, default=REPEAT, help="interleaved rounds after the warm-up (>= 3)")
    args = parser.parse_args(argv)
    REPEAT = max(3, args.repeat)
    load_start = loadavg()
    torch.manual_seed(0)
    transformers = import_oracle()
    notes = []

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

        ours = {"float32": ClvpModelForConditionalGeneration.from_pretrained(tmp),
                "bfloat16": ClvpModelForConditionalGeneration.from_pretrained(tmp, dtype=torch.bfloat16)}
        cfg = ours["float32"].config
        speech_ids = torch.randint(0, SPEECH_VOCAB, (BATCH, CODES))  # (B, T)
        text_ids = torch.randint(1, cfg.text_config.vocab_size, (BATCH, TEXT_TOKENS))  # (B, T)
        encoders = {  # name -> (shape, length, config, ours' call, transformers' call, our encoder module)
            "speech": (f"{BATCH} x {CODES} codes", CODES, cfg.speech_config,
                       lambda m: m.get_speech_features(speech_ids=speech_ids),
                       lambda: hf.get_speech_features(speech_ids=speech_ids), "speech_encoder_model"),
            "text": (f"{BATCH} x {TEXT_TOKENS} tokens", TEXT_TOKENS, cfg.text_config,
                     lambda m: m.get_text_features(input_ids=text_ids),
                     lambda: hf.get_text_features(input_ids=text_ids), "text_encoder_model"),
        }

        variants = {}  # (encoder, impl, dtype) -> fn
        for enc, (_, length, _, ours_call, hf_call, attr) in encoders.items():
            if hf is not None:
                variants[(enc, "transformers", "float32")] = hf_call
            for dtype, model in ours.items():
                variants[(enc, "ours", dtype)] = lambda call=ours_call, model=model: call(model)
                variants[(enc, "floor", dtype)] = product_floor(getattr(model, attr), BATCH, length,
                                                                getattr(torch, dtype))
        outputs, runs = {}, {key: [] for key in variants}
        with torch.inference_mode():
            for key, fn in variants.items():  # warm-up, and the outputs for the agreement check
                out = fn()
                if key[1] != "floor":
                    outputs[key] = out.float()
            # Interleaved rounds (A B C ... A B C ...): load that comes and goes perturbs every variant alike.
            for rep in range(REPEAT):
                for key, fn in variants.items():
                    cpu0 = time.process_time()
                    wall = time_fn(fn, warmup=0, repeat=1)["median"]
                    cpu = time.process_time() - cpu0
                    runs[key].append((wall, cpu))
                    progress(f"round {rep}: {' '.join(key)} {wall:.2f} s wall, {cpu:.2f} s CPU (load {loadavg()})")
            ceilings = gemm_ceilings()
        del hf
        gc.collect()

    def stat(key):
        pairs = runs.get(key)
        if not pairs:
            return None
        wall = [w for w, _ in pairs]
        return {"best": min(wall), "median": statistics.median(wall), "cpu": statistics.median(c for _, c in pairs)}

    rows, met_all = [], []
    for enc, (shape, length, ecfg, *_rest) in encoders.items():
        flop = encoder_flop(ecfg, BATCH, length)
        hf_t = stat((enc, "transformers", "float32"))
        for dtype in ours:
            o, f = stat((enc, "ours", dtype)), stat((enc, "floor", dtype))
            ratio, ratio_cpu = o["best"] / f["best"], o["cpu"] / f["cpu"]
            met = "yes" if ratio <= FLOOR_TARGET else "NO"
            met_all.append(f"{enc} {dtype}: {met}")
            rows.append([
                enc, shape, dtype, o["best"], o["median"], o["cpu"], f["best"], f["cpu"],
                hf_t["best"] if hf_t else "n/a",
                f"{ratio:.3f}", f"{ratio_cpu:.3f}",
                f"{hf_t['best'] / o['best']:.2f}x" if hf_t else "n/a",
                f"{flop / f['best'] / 1e9:.0f}", met,
            ])
    table = markdown_table(
        ["encoder", "shape", "dtype", "ours best s", "ours median s", "ours CPU s", "floor best s", "floor CPU s",
         "transformers fp32 best s", "ours/floor (best wall)", "ours/floor (CPU)", "transformers/ours",
         "floor GFLOP/s", f"<= {FLOOR_TARGET}x floor"], rows)

    for enc in encoders:
        ref = outputs.get((enc, "transformers", "float32"))
        if ref is None:
            continue
        d32 = (outputs[(enc, "ours", "float32")] - ref).abs().max().item()
        cos = torch.nn.functional.cosine_similarity(outputs[(enc, "ours", "bfloat16")], ref, dim=-1).min().item()
        notes.append(f"Agreement ({enc}): ours fp32 vs transformers fp32 max |diff| {d32:.2e} (embeddings of norm "
                     f"~{ref.norm(dim=-1).mean():.1f}); ours bf16 vs transformers fp32 min cosine similarity {cos:.6f}.")
    notes.append("Floor: the encoder pass's matrix products, bare, in the row's dtype, timed in the same rounds: "
                 "q, k, v, out_proj, fc1, fc2 and the projection through clvp.products.affine with the model's own "
                 "weights (bfloat16 weights take affine's float32 path on a CPU without bf16 instructions), and "
                 "QK^T and PV per layer through torch.bmm (float32 where bf16 products are emulated). "
                 "'transformers fp32' is the anchor for both dtypes (transformers cannot run CLVP in bfloat16).")
    notes.append("Matrix-product ceilings measured here: " + ", ".join(f"{k} {v:.3g} GFLOP/s" for k, v in ceilings.items())
                 + ". " + cpu_isa() + ".")
    notes.append("Timings are perturbed by other processes on the 2 shared cores (load averages in the conditions); "
                 "ratios come from one run's interleaved rounds, the 'CPU' ratio from this process's CPU time "
                 "(both threads), which other processes disturb less than wall time.")
    info = conditions(
        "cpu",
        oracle=f"transformers {transformers.__version__}" if transformers else "not installed",
        shapes=f"speech_ids ({BATCH}, {CODES}) vocab {SPEECH_VOCAB}; text input_ids ({BATCH}, {TEXT_TOKENS})",
        config="default ClvpConfig (each encoder: 20 layers, hidden 768, 12 heads, intermediate 1536, rotary 32 of 64)",
        timing=f"1 warm-up each, then {REPEAT} rounds interleaved across variants; best and median wall, median "
               "CPU; torch.inference_mode()",
        cpu_isa=cpu_isa(),
        torch_threads=torch.get_num_threads(),
        load_average_start=load_start,
        load_average_end=loadavg(),
        result=", ".join(met_all),
    )
    write_result("model", "CLVP text and speech encoders, CPU: ours vs transformers 4.46.3 vs the matrix-product floor",
                 info, table, "\n\n".join(notes), suffix="-cpu", results=results_dir(args))


def cpu_isa() -> str:
    """What torch dispatches to, and whether the CPU has native bfloat16 matrix instructions."""
    flags = cpu_flags()
    bf16 = [f for f in ("avx512_bf16", "amx_bf16", "amx_tile") if flags.get(f)]
    return f"torch CPU capability {torch.backends.cpu.get_cpu_capability()}; native bf16 instructions: {', '.join(bf16) or 'none'}"


if __name__ == "__main__":
    main()
