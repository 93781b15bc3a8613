"""Hypothesis strategies shared by the kernel and property tests (one place, capped sizes)."""
import torch
from hypothesis import strategies as st

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
dtypes = st.sampled_from(FLOAT_DTYPES)


# ---- rotary_attention (kernels/rotary_attention.py) ------------------------------------------
# Small shapes for Triton's interpreter: several key blocks (BLOCK_N = 16 there) and odd tails.
ROTARY_ATTENTION_MASKS = ("none", "lengths", "random", "late")  # "late": only the last keys kept


@st.composite
def rotary_attention_cases(draw, max_batch: int = 3, max_heads: int = 3, max_len: int = 70):
    """One fused-attention case: shapes, rotary width, layout, mask kind and dtype (tensors built from ``seed``)."""
    head_dim = draw(st.sampled_from((32, 64)))
    return dict(
        batch=draw(st.integers(1, max_batch)),
        heads=draw(st.integers(1, max_heads)),
        length=draw(st.integers(1, max_len)),
        head_dim=head_dim,
        rot_dim=draw(st.sampled_from((0, 16, 32, head_dim))),  # 0 = no rotary (conditioning encoder)
        layout=draw(st.sampled_from(("bthd", "bhtd"))),  # "bthd": permuted views of (B, T, H, D)
        mask=draw(st.sampled_from(ROTARY_ATTENTION_MASKS)),
        mask_dtype=draw(st.sampled_from((torch.bool, torch.int64, torch.float32))),
        scale=draw(st.sampled_from((None, 0.3))),
        dtype=draw(dtypes),
        seed=draw(st.integers(0, 2**16)),
    )


@st.composite
def rotary_attention_grad_cases(draw, max_batch: int = 2, max_heads: int = 2, max_len: int = 40):
    """One fused-attention *backward* case, the keys of :func:`rotary_attention_cases`. Smaller than
    the forward's (the interpreter runs three kernels, the dK/dV and dQ ones over every block pair);
    up to 40 positions still cross 3 key blocks and 2 query blocks of the interpreter's tiles, and
    D = 40 is not a power of two (channel groups padded: R/2 = 20 -> 32, D - R = 24 -> 32)."""
    head_dim = draw(st.sampled_from((16, 32, 40, 64)))
    return dict(
        batch=draw(st.integers(1, max_batch)),
        heads=draw(st.integers(1, max_heads)),
        length=draw(st.integers(1, max_len)),
        head_dim=head_dim,
        rot_dim=draw(st.sampled_from((0, 8, 16, head_dim))),  # 0: no rotary; R = D: no pass-through channels
        layout=draw(st.sampled_from(("bthd", "bhtd"))),
        mask=draw(st.sampled_from(ROTARY_ATTENTION_MASKS)),
        mask_dtype=draw(st.sampled_from((torch.bool, torch.int64, torch.float32))),
        scale=draw(st.sampled_from((None, 0.3))),
        dtype=draw(dtypes),
        seed=draw(st.integers(0, 2**16)),
    )


# ---- decode_attention (kernels/decode_attention.py) ------------------------------------------
# Small shapes for Triton's interpreter: ragged per-row lengths against a static cache, several
# key tiles per chunk (BLOCK_N down to 16) and more chunks than keys so that empty chunks occur.
DECODE_ATTENTION_LAYOUTS = ("contiguous", "padded", "bthd")  # cache layouts; see test_decode_attention.py


@st.composite
def decode_attention_cases(draw, max_batch: int = 4, max_heads: int = 3, max_t: int = 70):
    """One cached-decode case: shapes, per-row lengths, split count and tile, layout, dtype (tensors from ``seed``)."""
    batch = draw(st.integers(1, max_batch))
    t_max = draw(st.integers(1, max_t))
    lengths = draw(st.lists(st.integers(1, t_max), min_size=batch, max_size=batch))
    if draw(st.booleans()):  # the extremes in one batch: a row that has only its own token, a full row
        lengths[0] = 1
        lengths[-1] = t_max
    return dict(
        batch=batch,
        heads=draw(st.integers(1, max_heads)),
        t_max=t_max,
        head_dim=draw(st.sampled_from((16, 32, 64, 128))),
        lengths=lengths,
        lengths_dtype=draw(st.sampled_from((torch.int32, torch.int64))),
        num_splits=draw(st.sampled_from((1, 2, 3, 8))),  # 8 chunks of >= 16 keys: empty chunks
        block_n=draw(st.sampled_from((16, 32, 64))),
        layout=draw(st.sampled_from(DECODE_ATTENTION_LAYOUTS)),
        scale=draw(st.sampled_from((None, 0.3))),
        dtype=draw(dtypes),
        seed=draw(st.integers(0, 2**16)),
    )


# ---- log_mel (kernels/log_mel.py) and ClvpFeatureExtractor (clvp/feature_extraction.py) ------
# Small n_fft for Triton's interpreter (it pays per op, so a few big tiles), odd hops and lengths,
# clips shorter than n_fft / 2 (the reflect padding folds more than once), quiet and silent stretches
# (the 1e-5 clamp), and bin splits of the kernel's split path.
LOG_MEL_SIGNALS = ("noise", "tones", "quiet", "gated")  # see tests/test_log_mel.py::make_waveforms


@st.composite
def log_mel_cases(draw, max_batch: int = 3, max_len: int = 700):
    """One log-mel case: STFT/mel parameters, clip shapes, signal kind, layout (tensors built from ``seed``)."""
    n_fft = draw(st.sampled_from((16, 32, 64, 96, 128)))  # 96: tables not a power of two (masked tails)
    return dict(
        batch=draw(st.integers(1, max_batch)),
        length=draw(st.integers(1, max_len)),
        n_fft=n_fft,
        hop_length=draw(st.integers(1, n_fft + 7)),
        n_mels=draw(st.sampled_from((4, 10, 23, 40))),
        sampling_rate=draw(st.sampled_from((4000, 8000, 16000, 22050))),
        norms=draw(st.booleans()),
        signal=draw(st.sampled_from(LOG_MEL_SIGNALS)),
        wav_dtype=draw(st.sampled_from((torch.float32, torch.float32, torch.float16))),
        strided=draw(st.booleans()),  # clips read through a non-unit stride
        k_split=draw(st.sampled_from((None, 2, 3))),
        seed=draw(st.integers(0, 2**16)),
    )


@st.composite
def clip_batches(draw, max_clips: int = 4, max_len: int = 3000):
    """Lengths of a batch of clips and where one chosen clip sits in it (batch-independence property)."""
    lengths = draw(st.lists(st.integers(1, max_len), min_size=1, max_size=max_clips))
    return dict(
        lengths=lengths,
        index=draw(st.integers(0, len(lengths) - 1)),
        padding=draw(st.sampled_from(("longest", "max_length"))),
        seed=draw(st.integers(0, 2**16)),
    )


# ---- tokenizer (clvp/tokenization.py, clvp/normalizer.py, clvp/processing.py) -----------------
# Texts mixing letters, digits, punctuation inside and outside the vocabulary, whitespace runs,
# non-ASCII (accents, typographic quotes, CJK) and whole pieces the normalizer rewrites
# (abbreviations, ordinals, years, money) or the tokenizer keeps whole (added tokens).
TEXT_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,;:!?'\"-()/$_@#\t\néüß’—中"
TEXT_PIECES = ("mr.", "Mrs.", "dr.", "st.", "co.", "1st", "22nd", "1995", "2005", "$1.50", "1,000", "3.14", "£5",
               "<|endoftext|>", "[STOP]", "[UNK]", "don't", "I'm", "  ", "café")
# Characters whose normalised form stays inside the CLVP vocabulary (a decode gives it back).
VOCAB_TEXT_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,;:!?'-()/\"\t\néü’—"


def clvp_texts(max_pieces: int = 12, alphabet: str = TEXT_ALPHABET, pieces=TEXT_PIECES):
    """A text built from runs of ``alphabet`` and whole ``pieces``."""
    part = st.one_of(st.text(alphabet=alphabet, max_size=10), st.sampled_from(pieces)) if pieces else \
        st.text(alphabet=alphabet, max_size=10)
    return st.lists(part, max_size=max_pieces).map("".join)


def vocab_texts(max_pieces: int = 12):
    """Texts whose normalised form uses only characters of the CLVP vocabulary (round-trips)."""
    return clvp_texts(max_pieces, VOCAB_TEXT_ALPHABET, ("mr.", "1st", "1995", "$1.50", "1,000", "3.14", "don't"))


# ---- text splitting (clvp/text_split.py) -----------------------------------------------------
# Long texts from words, numbers, abbreviations, quotes and punctuation, joined by runs of
# whitespace: sentence and clause boundaries, quoted passages, numbers that must stay whole, and
# now and then a long word; no single word exceeds the chunk limits (so no cut lands inside one).
SPLIT_WORDS = ("the", "wolf", "grandmother", "Little", "Red", "Riding", "Hood", "said", "and", "a", "I", "Mr.",
               "Dr.", "J.", "e.g.", "3.14", "1,000", "$1.50", "1995", "22nd", "don't", "café", "—", "-", "(aside)",
               "supercalifragilisticexpialidocious", "über", "中文")
SPLIT_PUNCT = ("", "", "", "", ".", ",", ";", ":", "!", "?", "...", ".\"", ",\"", "!\"", "—", ")")
SPLIT_SPACES = (" ", " ", " ", " ", "  ", "\n", "\n\n", "\t", " \n ")


@st.composite
def long_texts(draw, max_words: int = 400):
    """A text of up to ``max_words`` words with punctuation, quotes and whitespace runs between them."""
    n = draw(st.integers(0, max_words))
    letters = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ'", min_size=1,
                      max_size=draw(st.sampled_from((8, 30))))
    word = st.one_of(st.sampled_from(SPLIT_WORDS), letters)
    parts = []
    for _ in range(n):
        w = draw(word)
        if draw(st.integers(0, 9)) == 0:
            w = ("\"" if draw(st.booleans()) else "“") + w
        parts.append(w + draw(st.sampled_from(SPLIT_PUNCT)) + draw(st.sampled_from(SPLIT_SPACES)))
    return draw(st.sampled_from(("", " ", "\n"))) + "".join(parts)


def split_limits():
    """(max_tokens, target_chars, max_chars) for split_text: the defaults and tight ones."""
    return st.one_of(
        st.just((401, 200, 300)),
        st.tuples(st.integers(60, 401), st.integers(20, 200), st.integers(80, 300)),
    )
