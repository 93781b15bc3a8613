"""Waveform to normalised log-mel spectrogram (CLVP's feature front end, docs/model.md §4).

Per clip: centred STFT with reflect padding (``n_fft // 2`` samples each side), analysis window
(periodic Hann for CLVP), power 2, mel projection, ``log(clamp(mel, 1e-5))``, division by the
per-mel norms. Hugging Face's NumPy extractor does the FFT in float64; the float32 FFT rounding
matters only in the quiet low decades that survive the 1e-5 clamp (about 6e-5 in the log domain on
real speech; see ``bench/results/log_mel-cpu.md``), so the reference upcasts the DFT by default.

File layout: eager reference (fallback and oracle), then the Triton kernel, then its launcher.
"""
from __future__ import annotations

import functools
from typing import Optional

import torch

from ._checks import FLOAT_DTYPES, check_same_device, check_shape, check_tensor, check_triton
from ._triton import launch, tl, triton, triton_interpreter

LOG_CLAMP = 1e-5  # log(max(mel, 1e-5)): Tortoise's and Hugging Face's floor
_REF_FRAMES = 128  # frames per DFT call in the reference on the CPU (cache-sized blocks)


def reflect_indices(length: int, pad: int, device=None) -> torch.Tensor:
    """Source index of every sample of ``np.pad(x, pad, mode="reflect")`` for a clip of ``length``.

    Reflection about the end samples (no repeat), folded as often as needed, so clips shorter than
    the pad work as they do in NumPy (``torch``'s reflect pad refuses them). A 1-sample clip repeats.
    """
    p = torch.arange(-pad, length + pad, device=device)
    period = max(2 * (length - 1), 1)
    j = p.abs() % period
    return torch.where(j >= length, period - j, j)  # (length + 2 * pad,)


def log_mel_ref(waveforms, window, mel_filters, mel_norms=None, *, n_fft, hop_length, upcast=True):
    """Eager reference: centred reflect-padded STFT, power 2, mel projection, log clamp, norm division.

    Arguments:
        waveforms: (B, N) float clips, already padded or truncated to a common length N >= 1.
        window: (n_fft,) analysis window (periodic Hann for CLVP).
        mel_filters: (n_fft // 2 + 1, n_mels) filter bank.
        mel_norms: (n_mels,) divisors, or None.
        upcast: run framing, window and DFT in float64 (as Hugging Face's NumPy extractor does);
            False keeps everything in float32 (the plain ``torch.stft`` + mel path).
    Returns:
        (B, n_mels, 1 + N // hop_length) float32 (``1 + (N + 2 * (n_fft // 2) - n_fft) // hop``).
    The spectrum goes to complex64 before the power and the mel product in both modes: the filters
    and the power are non-negative, so that sum has no cancellation and float32 costs < 1e-6 in
    the log (the DFT is where the precision goes). On the CPU the bins above the last non-zero
    filter row are dropped before the power.
    Memory traffic per clip (6 s, 1024/256): reads 0.5 MB of samples but materialises the framed
    signal and its spectrum, 517 x 1024 x 8 B = 4.2 MB each in float64, hence the blocks on the CPU.
    """
    if waveforms.dim() != 2 or waveforms.shape[1] < 1:
        raise ValueError(f"waveforms must be (B, N) with N >= 1, got {tuple(waveforms.shape)}")
    dtype = torch.float64 if upcast else torch.float32
    device = waveforms.device
    half = n_fft // 2
    win = window.to(device=device, dtype=dtype)
    fb = mel_filters.to(device=device, dtype=torch.float32)  # (n_freq, n_mels)
    n_used = fb.shape[0]
    if device.type == "cpu":  # skip the bins no filter reaches (above 8 kHz: 372 of 513 for CLVP)
        n_used = int(fb.abs().sum(1).nonzero().max()) + 1 if bool(fb.any()) else 1
    fb = fb[:n_used]  # (n_used, n_mels)
    batch, n = waveforms.shape
    n_frames = 1 + (n + 2 * half - n_fft) // hop_length
    out = torch.empty((batch, fb.shape[1], n_frames), dtype=torch.float32, device=device)  # (B, n_mels, frames)
    # On the CPU, DFT blocks of ~_REF_FRAMES frames: the framed float64 signal and its spectrum then stay
    # in cache (whole 6 s clips at once run ~2x slower, bound by memory, not by the FFT).
    frames_per_call = _REF_FRAMES if device.type == "cpu" else n_frames
    clips_per_call = max(1, frames_per_call // n_frames) if device.type == "cpu" else batch
    for b0 in range(0, batch, clips_per_call):
        wav = waveforms[b0 : b0 + clips_per_call]  # (b, N); the window product below casts to dtype
        if n > half:  # the common case: one reflection (a concatenation is twice as fast as F.pad here)
            left, right = wav[:, 1 : half + 1].flip(-1), wav[:, n - 1 - half : n - 1].flip(-1)
            padded = torch.cat([left, wav, right], dim=-1)  # (b, N + 2 * half)
        else:
            padded = wav[:, reflect_indices(n, half, device)]
        frames = padded.unfold(-1, n_fft, hop_length)  # (b, frames, n_fft), a view
        for t0 in range(0, n_frames, frames_per_call):
            block = frames[:, t0 : t0 + frames_per_call] * win  # (b, f, n_fft) in dtype: win is dtype, promotion
            # complex64 after the DFT, as Hugging Face stores its float64 FFT
            spec = torch.fft.rfft(block, dim=-1)[..., :n_used].to(torch.complex64)  # (b, f, n_used)
            sq = torch.view_as_real(spec).square()  # (b, f, n_used, 2): re², im²
            power = sq[..., 0] + sq[..., 1]  # (b, f, n_used); faster than spec.real.square() + ...
            out[b0 : b0 + clips_per_call, :, t0 : t0 + frames_per_call] = (power @ fb).transpose(1, 2)
    out = out.clamp_(min=LOG_CLAMP).log_()
    if mel_norms is not None:
        out /= mel_norms.to(device=device, dtype=torch.float32)[None, :, None]
    return out


# ----------------------------------------------------------------------------------------------
# Triton kernel
# ----------------------------------------------------------------------------------------------
#
# The DFT of a real frame x[0..N) (windowed) needs only the bins 0..H, H = N/2, and it folds
# twice (Q = N/4, θ = 2πkn/N):
#   1. time symmetry: with a[n] = x[n] + x[N-n], b[n] = x[n] - x[N-n] (0 < n < H; a[0] = x[0],
#      a[H] = x[H]), Re X[k] = Σ_{n=0..H} a[n] cos θ and Im X[k] = -Σ_{n=1..H-1} b[n] sin θ;
#   2. bin symmetry: cos(2π(H-k)n/N) = (-1)^n cos θ and sin(2π(H-k)n/N) = -(-1)^n sin θ, so with
#      the even-n and odd-n halves Ce, Co (of a·cos) and Se, So (of b·sin), for 0 <= k < Q:
#      |X[k]|² = (Ce + Co)² + (Se + So)²  and  |X[H-k]|² = (Ce - Co)² + (Se - So)².
# So four (frames x Q) @ (Q x Q) products give every bin but X[Q] (a short reduction), a quarter
# of the direct DFT's multiply-adds. The even term n = H (x[H] cos πk = ±x[H]) is added apart so
# that the tables stay Q x Q (a power of two for power-of-two n_fft). The products run as IEEE
# float32 dots: TF32 or bf16 would lose the quiet decades that survive the 1e-5 clamp.
#
# Split over bins (K_SPLIT > 1, for a few clips on a big GPU): each program sums the mel
# contributions of a slice of bins into its own slot of a workspace; the last program of a frame
# tile (an atomic counter) adds the slots in a fixed order, finishes the log and resets the
# counter to 0 for the next launch, so the workspace needs no clearing and the result is
# deterministic.


@triton.jit
def _load_samples(WAV_B, stride_wav_l, frame_start, n, n_samples, period, mask):
    """Windowless samples wav[reflect(frame_start + n)] for a (BLOCK_T, BLOCK) tile; 0 where masked."""
    p = frame_start[:, None] + n[None, :]  # position in the unpadded clip, may be < 0 or >= N
    j = tl.abs(p) % period  # reflect about sample 0 ...
    j = tl.where(j >= n_samples, period - j, j)  # ... and about sample N-1 (period 2(N-1))
    return tl.load(WAV_B + j * stride_wav_l, mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _folded_tiles(WAV_B, stride_wav_l, WINDOW, stride_window, frame_start, offs_m, in_t, n_samples, period,
                  N_FFT: tl.constexpr):
    """(BLOCK_T, BLOCK_M) tiles a and b of the windowed frames for even n = 2m and odd n = 2m + 1 (m < Q).

    a[n] = x[n] + x[N - n], b[n] = x[n] - x[N - n], except a[0] = b[0] = x[0] (x[N] is outside the
    frame; b[0] only ever meets sin 0 = 0). Zero for m >= Q and for frames past the end.
    """
    in_m = offs_m < N_FFT // 4
    n_e = 2 * offs_m
    n_o = n_e + 1
    ld = in_t[:, None] & in_m[None, :]
    w_e = tl.load(WINDOW + n_e * stride_window, mask=in_m, other=0.0).to(tl.float32)
    w_em = tl.load(WINDOW + (N_FFT - n_e) * stride_window, mask=in_m & (offs_m > 0), other=0.0).to(tl.float32)
    w_o = tl.load(WINDOW + n_o * stride_window, mask=in_m, other=0.0).to(tl.float32)
    w_om = tl.load(WINDOW + (N_FFT - n_o) * stride_window, mask=in_m, other=0.0).to(tl.float32)
    x_e = _load_samples(WAV_B, stride_wav_l, frame_start, n_e, n_samples, period, ld) * w_e[None, :]
    x_em = _load_samples(WAV_B, stride_wav_l, frame_start, N_FFT - n_e, n_samples, period,
                         ld & (offs_m[None, :] > 0)) * w_em[None, :]
    x_o = _load_samples(WAV_B, stride_wav_l, frame_start, n_o, n_samples, period, ld) * w_o[None, :]
    x_om = _load_samples(WAV_B, stride_wav_l, frame_start, N_FFT - n_o, n_samples, period, ld) * w_om[None, :]
    return x_e + x_em, x_e - x_em, x_o + x_om, x_o - x_om


@triton.jit
def _store_log_mel(OUT_B, NORMS, stride_norms, stride_out_m, stride_out_t, mel, offs_t, offs_mel, in_mel, mask,
                   HAS_NORMS: tl.constexpr, LOG_CLAMP: tl.constexpr):
    """log(max(mel, LOG_CLAMP)) / norms for a (BLOCK_T, BLOCK_MEL) tile, stored transposed as (mels, frames)."""
    out = tl.log(tl.maximum(mel, LOG_CLAMP))
    if HAS_NORMS:
        norms = tl.load(NORMS + offs_mel * stride_norms, mask=in_mel, other=1.0)
        out = out / norms.to(tl.float32)[None, :]
    tl.store(OUT_B + offs_mel[None, :] * stride_out_m + offs_t[:, None] * stride_out_t, out, mask=mask)


@triton.jit
def _log_mel_kernel(
    WAV, WINDOW, TABLES, FB, NORMS, OUT, WS, COUNT,
    stride_wav_b, stride_wav_l,  # WAV: (B, N) clips
    stride_window,  # WINDOW: (N_FFT,) float32 or float64, used in float32
    stride_fb_f, stride_fb_m,  # FB: (N_FFT // 2 + 1, n_mels) float32 or float64
    stride_norms,  # NORMS: (n_mels,) float32 or float64 (unused without HAS_NORMS)
    stride_out_b, stride_out_m, stride_out_t,  # OUT: (B, n_mels, n_frames) float32
    n_samples, period, n_frames, n_mels, hop_length, k_chunks_per_split,  # period = max(2 (N - 1), 1)
    N_FFT: tl.constexpr,
    QP: tl.constexpr,  # Q = N_FFT // 4 rounded up to the blocks: TABLES is (4, QP, QP)
    HAS_NORMS: tl.constexpr,
    LOG_CLAMP: tl.constexpr,  # the floor under the mel energies before the log (module constant LOG_CLAMP)
    K_SPLIT: tl.constexpr,  # programs per frame tile along the bins (1 = no workspace)
    BLOCK_T: tl.constexpr,  # frames per program
    BLOCK_M: tl.constexpr,  # folded samples per step (the dots' reduction dim)
    BLOCK_K: tl.constexpr,  # bins per step
    BLOCK_MEL: tl.constexpr,  # n_mels rounded up to a power of two >= 16
):
    """Normalised log-mel of BLOCK_T frames of one clip (or their mel sums over one bin slice)."""
    pid_t = tl.program_id(0)
    pid_k = tl.program_id(1)
    pid_b = tl.program_id(2).to(tl.int64)
    HALF: tl.constexpr = N_FFT // 2
    Q: tl.constexpr = N_FFT // 4
    WAV_B = WAV + pid_b * stride_wav_b

    offs_t = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)  # (BLOCK_T,) frame indices
    in_t = offs_t < n_frames
    frame_start = offs_t * hop_length - HALF  # first sample of each frame in the unpadded clip
    offs_mel = tl.arange(0, BLOCK_MEL)
    in_mel = offs_mel < n_mels

    # x[H]: each frame's centre sample, the even term n = H that the Q x Q tables leave out
    x_mid = _load_samples(WAV_B, stride_wav_l, frame_start, tl.full([1], HALF, tl.int32), n_samples, period,
                          in_t[:, None])
    x_mid = tl.sum(x_mid, axis=1) * tl.load(WINDOW + HALF * stride_window).to(tl.float32)  # (BLOCK_T,)

    mel = tl.zeros([BLOCK_T, BLOCK_MEL], dtype=tl.float32)  # Σ_k |X[k]|² fb[k, m] over this slice
    k_begin = pid_k * k_chunks_per_split * BLOCK_K
    k_end = tl.minimum(k_begin + k_chunks_per_split * BLOCK_K, QP)
    for k0 in range(k_begin, k_end, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)  # (BLOCK_K,) bins k < Q (and, mirrored, H - k)
        c_e = tl.zeros([BLOCK_T, BLOCK_K], dtype=tl.float32)  # Σ_even a cos
        s_e = tl.zeros([BLOCK_T, BLOCK_K], dtype=tl.float32)  # Σ_even b sin
        c_o = tl.zeros([BLOCK_T, BLOCK_K], dtype=tl.float32)  # Σ_odd a cos
        s_o = tl.zeros([BLOCK_T, BLOCK_K], dtype=tl.float32)  # Σ_odd b sin
        for m0 in range(0, QP, BLOCK_M):
            offs_m = m0 + tl.arange(0, BLOCK_M)  # (BLOCK_M,): even n = 2m, odd n = 2m + 1
            a_e, b_e, a_o, b_o = _folded_tiles(WAV_B, stride_wav_l, WINDOW, stride_window, frame_start, offs_m,
                                               in_t, n_samples, period, N_FFT)  # (BLOCK_T, BLOCK_M) each
            tab = TABLES + offs_m[:, None] * QP + offs_k[None, :]  # (BLOCK_M, BLOCK_K) table tile
            c_e = tl.dot(a_e, tl.load(tab), c_e, input_precision="ieee")
            s_e = tl.dot(b_e, tl.load(tab + QP * QP), s_e, input_precision="ieee")
            c_o = tl.dot(a_o, tl.load(tab + 2 * QP * QP), c_o, input_precision="ieee")
            s_o = tl.dot(b_o, tl.load(tab + 3 * QP * QP), s_o, input_precision="ieee")
        sign_k = (1 - 2 * (offs_k % 2)).to(tl.float32)  # cos(2πk·H/N) = (-1)^k
        c_e += x_mid[:, None] * sign_k[None, :]
        re = c_e + c_o
        im = s_e + s_o
        p_lo = re * re + im * im  # |X[k]|², (BLOCK_T, BLOCK_K)
        re = c_e - c_o
        im = s_e - s_o
        p_hi = re * re + im * im  # |X[H - k]|²
        in_k = (offs_k < Q)[:, None] & in_mel[None, :]
        fb_lo = tl.load(FB + offs_k[:, None] * stride_fb_f + offs_mel[None, :] * stride_fb_m, mask=in_k, other=0.0)
        fb_hi = tl.load(FB + (HALF - offs_k)[:, None] * stride_fb_f + offs_mel[None, :] * stride_fb_m, mask=in_k,
                        other=0.0)  # rows H - k: the mirrored bins
        mel = tl.dot(p_lo, fb_lo.to(tl.float32), mel, input_precision="ieee")
        mel = tl.dot(p_hi, fb_hi.to(tl.float32), mel, input_precision="ieee")

    if pid_k == 0:
        # bin Q (self-paired): Re X[Q] = Σ_m a[2m] (-1)^m + x[H] (-1)^Q, Im X[Q] = -Σ_m b[2m+1] (-1)^m
        re_q = x_mid * (1 - 2 * (Q % 2))
        im_q = tl.zeros([BLOCK_T], dtype=tl.float32)
        for m0 in range(0, QP, BLOCK_M):
            offs_m = m0 + tl.arange(0, BLOCK_M)
            a_e, b_e, a_o, b_o = _folded_tiles(WAV_B, stride_wav_l, WINDOW, stride_window, frame_start, offs_m,
                                               in_t, n_samples, period, N_FFT)
            sign_m = (1 - 2 * (offs_m % 2)).to(tl.float32)
            re_q += tl.sum(a_e * sign_m[None, :], axis=1)
            im_q += tl.sum(b_o * sign_m[None, :], axis=1)
        fb_q = tl.load(FB + Q * stride_fb_f + offs_mel * stride_fb_m, mask=in_mel, other=0.0).to(tl.float32)
        mel += (re_q * re_q + im_q * im_q)[:, None] * fb_q[None, :]

    out_mask = in_t[:, None] & in_mel[None, :]
    OUT_B = OUT + pid_b * stride_out_b
    if K_SPLIT > 1:
        # publish this slice's sums, then let the last program of the tile finish it
        ws_tile = WS + ((pid_b * tl.num_programs(0) + pid_t) * K_SPLIT) * BLOCK_T * BLOCK_MEL
        offs_tile = tl.arange(0, BLOCK_T)[:, None] * BLOCK_MEL + offs_mel[None, :]
        tl.store(ws_tile + pid_k * BLOCK_T * BLOCK_MEL + offs_tile, mel)
        tl.debug_barrier()  # every thread's stores precede the (release) counter increment
        count_ptr = COUNT + pid_b * tl.num_programs(0) + pid_t
        arrived = tl.atomic_add(count_ptr, 1, sem="acq_rel")
        if arrived == K_SPLIT - 1:
            mel = tl.zeros([BLOCK_T, BLOCK_MEL], dtype=tl.float32)
            for s in range(K_SPLIT):  # fixed order: deterministic sums
                mel += tl.load(ws_tile + s * BLOCK_T * BLOCK_MEL + offs_tile, cache_modifier=".cg")
            _store_log_mel(OUT_B, NORMS, stride_norms, stride_out_m, stride_out_t, mel, offs_t, offs_mel, in_mel,
                           out_mask, HAS_NORMS, LOG_CLAMP)
            tl.atomic_xchg(count_ptr, 0)  # ready for the next launch
    else:
        _store_log_mel(OUT_B, NORMS, stride_norms, stride_out_m, stride_out_t, mel, offs_t, offs_mel, in_mel,
                       out_mask, HAS_NORMS, LOG_CLAMP)


# Launch configuration (heuristic, not autotuned: no GPU has timed it yet). On CUDA, 16-frame
# tiles and bin splits until about 2 programs per SM: one 6 s clip is 33 tiles, too few for 132 SMs.
_CUDA_BLOCKS = dict(BLOCK_T=16, BLOCK_M=32, BLOCK_K=64, num_warps=4)
# the interpreter pays per op, not per element: few big tiles
_INTERPRETER_BLOCKS = dict(BLOCK_T=64, BLOCK_M=128, BLOCK_K=128)


def _blocks(n_fft: int, blocks: dict) -> dict:
    """``blocks`` with BLOCK_M and BLOCK_K no larger than n_fft / 4 needs (at least 16, tl.dot's minimum)."""
    q = max(16, triton.next_power_of_2(n_fft // 4))
    return {**blocks, "BLOCK_M": min(blocks["BLOCK_M"], q), "BLOCK_K": min(blocks["BLOCK_K"], q)}


def _cuda_blocks(n_fft: int) -> dict:
    """The CUDA launch's blocks and options for ``n_fft`` (what bench/compile_sm90.py compiles)."""
    return _blocks(n_fft, _CUDA_BLOCKS)


def _padded_quarter(n_fft: int, blocks: dict) -> int:
    """QP: n_fft / 4 rounded up to a multiple of the larger of BLOCK_M and BLOCK_K (the tables' side)."""
    step = max(blocks["BLOCK_M"], blocks["BLOCK_K"])
    return triton.cdiv(n_fft // 4, step) * step


@functools.lru_cache(maxsize=16)
def _dft_tables(n_fft: int, qp: int, device: torch.device) -> torch.Tensor:
    """(4, qp, qp) float32: cos/sin(2π k n / n_fft) for even n = 2m, then odd n = 2m + 1; m, k < n_fft/4.

    Angles reduced exactly in integers ((k·n) mod n_fft) and evaluated in float64 before rounding.
    """
    q = n_fft // 4
    m = torch.arange(q, dtype=torch.int64)
    k = torch.arange(q, dtype=torch.int64)
    tables = torch.zeros(4, qp, qp, dtype=torch.float64)
    for i, n in enumerate((2 * m, 2 * m + 1)):
        theta = (n[:, None] * k[None, :] % n_fft).double() * (2 * torch.pi / n_fft)  # (q, q)
        tables[2 * i, :q, :q] = torch.cos(theta)
        tables[2 * i + 1, :q, :q] = torch.sin(theta)
    return tables.to(device=device, dtype=torch.float32).contiguous()


_COUNTERS: dict = {}  # (device, stream) -> int32 counters, left at 0 by every launch


def _counters(device: torch.device, n: int) -> torch.Tensor:
    stream = torch.cuda.current_stream(device).cuda_stream if device.type == "cuda" else 0
    key = (str(device), stream)
    buf = _COUNTERS.get(key)
    if buf is None or buf.numel() < n:
        buf = torch.zeros(max(n, 1024), dtype=torch.int32, device=device)
        _COUNTERS[key] = buf
    return buf


# ----------------------------------------------------------------------------------------------
# Launcher
# ----------------------------------------------------------------------------------------------


def log_mel(waveforms, window, mel_filters, mel_norms=None, *, n_fft, hop_length, k_split=None):
    """Fused normalised log-mel (Triton): one launch from samples to features.

    Same semantics as :func:`log_mel_ref` (reflect padding by index arithmetic, so any N >= 1).

    Arguments:
        waveforms: (B, N) float32/float16/bfloat16 clips (any strides), N >= 1, on CUDA (or the
            CPU under ``TRITON_INTERPRET=1``).
        window: (n_fft,) analysis window, float32 or float64 (converted in registers: no cast launch).
        mel_filters: (n_fft // 2 + 1, n_mels) filter bank, float32 or float64, any strides.
        mel_norms: (n_mels,) float32 or float64 divisors, or None.
        n_fft: a multiple of 4, at least 16. hop_length: >= 1.
        k_split: programs per frame tile along the frequency bins (None: from the SM count on
            CUDA, 1 under the interpreter). Tests force > 1 to exercise the split path.
    Returns:
        (B, n_mels, 1 + N // hop_length) float32 (n_fft even).
    Numerics: the DFT, power and mel products in IEEE float32 (no TF32). Error in the log domain
    against Hugging Face's float64 extractor on the LJ Speech clips (6 s, measured in Triton's
    interpreter): 6.7e-5 before the norms, 1.1e-5 after Tortoise's; torch's float32 FFT gives 6.1e-5.
    The split path (k_split > 1) is deterministic: slices are summed in a fixed order.
    """
    op = "log_mel"
    check_triton(op, "kernels.log_mel_ref")
    check_tensor(waveforms, "waveforms", dims=("B", "N"), dtypes=FLOAT_DTYPES, op=op)
    if not isinstance(n_fft, int) or n_fft < 16 or n_fft % 4:
        raise ValueError(f"{op}: n_fft={n_fft!r} is not supported by the Triton kernel; "
                         "it needs a multiple of 4, >= 16")
    if not isinstance(hop_length, int) or hop_length < 1:
        raise ValueError(f"{op}: hop_length must be a positive integer, got {hop_length!r}")
    B, n_samples = waveforms.shape
    if n_samples < 1:
        raise ValueError(f"{op}: waveforms must hold at least one sample per clip")
    check_shape(window, "window", (n_fft,), doc="(n_fft,)", op=op)
    check_shape(mel_filters, "mel_filters", (n_fft // 2 + 1, "n_mels"), doc="(n_fft // 2 + 1, n_mels)", op=op)
    n_mels = mel_filters.shape[1]
    if mel_norms is not None:
        check_shape(mel_norms, "mel_norms", (n_mels,), doc="(n_mels,)", op=op)
    check_same_device(op, waveforms=waveforms, window=window, mel_filters=mel_filters, mel_norms=mel_norms)
    for name, t in (("window", window), ("mel_filters", mel_filters), ("mel_norms", mel_norms)):
        if t is not None:  # read as float32 in registers
            check_tensor(t, name, dtypes=(torch.float32, torch.float64), op=op)

    device = waveforms.device
    n_frames = 1 + (n_samples + 2 * (n_fft // 2) - n_fft) // hop_length
    out = torch.empty((B, n_mels, n_frames), dtype=torch.float32, device=device)
    if B == 0:
        return out
    interpreting = triton_interpreter()
    blocks = _blocks(n_fft, _INTERPRETER_BLOCKS if interpreting or not waveforms.is_cuda else _CUDA_BLOCKS)
    qp = _padded_quarter(n_fft, blocks)
    # while torch.compile traces, cached tables would be fake tensors left in the cache: build them in the graph
    tables = (_dft_tables.__wrapped__ if torch.compiler.is_compiling() else _dft_tables)(n_fft, qp, device)
    t_tiles = triton.cdiv(n_frames, blocks["BLOCK_T"])
    k_chunks = qp // blocks["BLOCK_K"]
    if k_split is None:
        k_split = 1
        if waveforms.is_cuda and not interpreting:
            sms = torch.cuda.get_device_properties(device).multi_processor_count
            while k_split < k_chunks and B * t_tiles * k_split * 2 <= 2 * sms:
                k_split *= 2
    k_split = max(1, min(int(k_split), k_chunks))
    chunks_per_split = triton.cdiv(k_chunks, k_split)
    block_mel = max(16, triton.next_power_of_2(n_mels))
    if k_split > 1:
        ws = torch.empty(B * t_tiles * k_split * blocks["BLOCK_T"] * block_mel, dtype=torch.float32, device=device)
        # traced: fresh zeroed counters in the graph (the shared buffer is state a graph cannot hold)
        count = torch.zeros(B * t_tiles, dtype=torch.int32, device=device) if torch.compiler.is_compiling() \
            else _counters(device, B * t_tiles)
    else:
        ws = count = out  # never read
    norms = mel_norms if mel_norms is not None else window  # never read without norms

    grid = (t_tiles, k_split, B)
    launch(_log_mel_kernel)[grid](
        waveforms, window, tables, mel_filters, norms, out, ws, count,
        *waveforms.stride(), window.stride(0), *mel_filters.stride(), norms.stride(0), *out.stride(),
        n_samples, max(2 * (n_samples - 1), 1), n_frames, n_mels, hop_length, chunks_per_split,
        N_FFT=n_fft, QP=qp, HAS_NORMS=mel_norms is not None, LOG_CLAMP=LOG_CLAMP, K_SPLIT=k_split,
        BLOCK_MEL=block_mel, **blocks,
    )
    return out


# The launcher registered as the op ``clvp::log_mel`` (what ``kernels.log_mel`` calls on the Triton
# path): torch.compile traces it as one node with the fake implementation below, and the AOT pass
# (inductor) sees the kernel through ``launch``.
@torch.library.triton_op("clvp::log_mel", mutates_args=())
def log_mel_op(waveforms: torch.Tensor, window: torch.Tensor, mel_filters: torch.Tensor,
               mel_norms: Optional[torch.Tensor], n_fft: int, hop_length: int) -> torch.Tensor:
    """:func:`log_mel` as a torch.library op: waveforms (B, N) -> (B, n_mels, 1 + N // hop_length) float32."""
    return log_mel(waveforms, window, mel_filters, mel_norms, n_fft=n_fft, hop_length=hop_length)


@log_mel_op.register_fake
def _log_mel_fake(waveforms, window, mel_filters, mel_norms, n_fft, hop_length):
    n_frames = 1 + (waveforms.shape[1] + 2 * (n_fft // 2) - n_fft) // hop_length
    b, n_mels = waveforms.shape[0], mel_filters.shape[1]
    return waveforms.new_empty((b, n_mels, n_frames), dtype=torch.float32)  # (B, n_mels, frames)
