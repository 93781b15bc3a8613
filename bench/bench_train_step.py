"""Training steps through the kernels: forward + backward of the speech encoder on 16 x 250 codes, and
one contrastive step of the composite model, fused rotary attention (Triton) against eager SDPA.

    python -m clvp.bench.bench_train_step [--save] [--tiny]

On CUDA (bfloat16 autocast) each row is timed with the Triton kernels (``CLVP_KERNELS=triton``) and
with the eager reference (rotate, then ``scaled_dot_product_attention``: ``CLVP_KERNELS=eager``),
and reported as TFLOP/s against the dense matrix-product peak measured in the same run. On the CPU
only the eager path can run (Triton's interpreter is for correctness, not speed): it is timed in
float32 against the CPU's measured float32 product rate, so the table exists before a GPU run.
``--tiny`` runs a 2-layer model on small shapes: a check that the benchmark works (CI runs it).

FLOPs (2 per multiply-add) of an encoder pass: per layer 2 * B*T * (4C^2 + C*2I + I*C) for the
projections and 4 * B*T^2 * C for q k^T and p v; a training step is forward + backward, counted as
3x the forward (the backward computes two products for every forward one).
"""
from __future__ import annotations

import contextlib
import os

import torch

from clvp.bench._common import (bench_parser, conditions, cuda_time, markdown_table, progress, results_dir, time_fn,
                                write_result)

BATCH, CODES = 16, 250


def encoder_flop(cfg, batch: int, length: int) -> float:
    """Matrix-product FLOPs of one encoder forward (2 per multiply-add)."""
    h, inter = cfg.hidden_size, cfg.intermediate_size
    tokens = batch * length
    per_layer = 2 * tokens * (4 * h * h + h * 2 * inter + inter * h) + 4 * batch * length * length * h
    return cfg.num_hidden_layers * per_layer + 2 * batch * h * cfg.projection_dim


def matmul_peak(device, dtype) -> float:
    """FLOP/s of a large square product in ``dtype`` on ``device``, measured now."""
    n = 8192 if device.type == "cuda" else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    seconds = cuda_time(lambda: a @ b)[0] if device.type == "cuda" else time_fn(lambda: a @ b, repeat=3)["median"]
    return 2 * n**3 / seconds


@contextlib.contextmanager
def kernels_mode(mode: str):
    old = os.environ.get("CLVP_KERNELS")
    os.environ["CLVP_KERNELS"] = mode
    try:
        yield
    finally:
        if old is None:
            del os.environ["CLVP_KERNELS"]
        else:
            os.environ["CLVP_KERNELS"] = old


def build(tiny: bool, device):
    from clvp import ClvpConfig, ClvpDecoderConfig, ClvpEncoderConfig, ClvpModelForConditionalGeneration

    torch.manual_seed(0)
    if tiny:
        enc = dict(vocab_size=256, hidden_size=64, intermediate_size=96, projection_dim=32, num_hidden_layers=2,
                   num_attention_heads=2)
        dec = ClvpDecoderConfig(vocab_size=258, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                                num_mel_attn_blocks=2, max_position_embeddings=64, max_text_tokens=32,
                                bos_token_id=256, eos_token_id=257)
        config = ClvpConfig(text_config=ClvpEncoderConfig(**enc), speech_config=ClvpEncoderConfig(**enc),
                            decoder_config=dec, projection_dim=32)
    else:
        config = ClvpConfig()
    return ClvpModelForConditionalGeneration(config).to(device).train()


def main(argv=None):
    parser = bench_parser(__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="2-layer model, small shapes: checks the benchmark runs")
    parser.add_argument("--batch", type=int, default=None, help=f"sequences per step (default {BATCH}; 2 with --tiny)")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    batch = args.batch or (2 if args.tiny else BATCH)
    codes = 24 if args.tiny else CODES
    model = build(args.tiny, device)
    speech_cfg = model.config.speech_config
    vocab = speech_cfg.vocab_size
    ids = torch.randint(0, vocab, (batch, codes), device=device)  # (B, T) speech codes
    text = torch.randint(1, 200, (batch, 20), device=device)  # (B, 20) text ids
    feats = torch.randn(batch, 80, 100, device=device)  # (B, 80, frames) reference clips
    cuda = device.type == "cuda"
    dtype = torch.bfloat16 if cuda else torch.float32
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if cuda else contextlib.nullcontext

    def encoder_step():
        with autocast():
            loss = model.speech_encoder_model(input_ids=ids).embeds.float().square().mean()
        loss.backward()

    def contrastive_step():
        with autocast():
            loss = model(input_ids=text, input_features=feats, return_loss=True).loss
        loss.backward()

    peak = matmul_peak(device, dtype)
    flop = 3 * encoder_flop(speech_cfg, batch, codes)
    modes = ("triton", "eager") if cuda else ("eager",)
    rows = []
    for name, step, step_flop in (("speech encoder fwd+bwd", encoder_step, flop),
                                  ("contrastive step (whole model)", contrastive_step, None)):
        for mode in modes:
            progress(f"{name}: {mode}")
            with kernels_mode(mode):
                if cuda:
                    seconds = cuda_time(step)[0]
                else:
                    seconds = time_fn(step, warmup=1, repeat=2 if not args.tiny else 3)["median"]
            model.zero_grad(set_to_none=True)
            tflops = step_flop / seconds / 1e12 if step_flop else None
            rows.append([name, mode, f"{seconds * 1e3:.1f}",
                         f"{tflops:.3g}" if tflops else "", f"{100 * tflops * 1e12 / peak:.0f}%" if tflops else ""])
    info = conditions(
        device, dtype="bfloat16 autocast" if cuda else "float32", model="--tiny (2 layers)" if args.tiny else
        "default ClvpConfig (encoders 20 layers x 768, 12 heads; decoder 30 layers x 1024)",
        shapes=f"speech encoder: {batch} x {codes} codes; contrastive: {batch} texts of 20 tokens, {batch} clips of "
               f"100 frames", matmul_peak=f"{peak / 1e12:.3g} TFLOP/s ({str(dtype).replace('torch.', '')}, measured now)",
        timing="triton.testing.do_bench median" if cuda else "median of timed steps after one warm-up",
        load_average=" / ".join(f"{x:.1f}" for x in os.getloadavg()),
    )
    notes = ("TFLOP/s counts the speech encoder's matrix products (forward x 3); '% of peak' divides by the "
             "matrix-product rate measured in the same run.")
    if not cuda:
        notes += (" No CUDA device here: only the eager path ran (the Triton kernels need a GPU to be timed); "
                  "no GPU figure is recorded.")
    suffix = "-tiny" if args.tiny else ("-cuda" if cuda else "-cpu")
    write_result("train_step", "Training steps: fused rotary attention vs eager SDPA", info,
                 markdown_table(["step", "kernels", "ms", "TFLOP/s", "% of matmul peak"], rows), notes,
                 suffix=suffix, results=results_dir(args))


if __name__ == "__main__":
    main()
