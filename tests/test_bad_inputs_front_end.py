"""Bad input to the text and audio front end is refused up front: a ValueError or TypeError (or
FileNotFoundError for a missing file) whose message names what is wrong, never a deep torch / NumPy
error, a hang, unbounded memory, NaN features or a plausible wrong result.

One table of bad inputs through the public entry points (feature extractor, ``load_audio``,
processor, tokenizer, normaliser), each row the error class and a fragment of the message; then the
fixed behaviours: stereo (samples, channels) refused without allocating, integer PCM scaled as
soundfile reads it, samples of absurd magnitude refused, text that tokenizes to nothing refused by
the processor (the tokenizer itself still returns no ids, as transformers does).
"""
import tracemalloc
import warnings

import numpy as np
import pytest
import soundfile as sf
import torch

from clvp.audio import load_audio
from clvp.audio_input import MAX_SAMPLE_MAGNITUDE
from clvp.feature_extraction import ClvpFeatureExtractor
from clvp.normalizer import EnglishNormalizer
from clvp.processing import ClvpProcessor
from clvp.tokenization import ClvpTokenizer

SR = 22050
FE = ClvpFeatureExtractor()
TOK = ClvpTokenizer()
PROC = ClvpProcessor(FE, TOK)
HF = EnglishNormalizer()


def fe(x, **kw):
    return FE(x, **{"sampling_rate": SR, **kw})


def clip(n=1000, value=0.1, dtype=np.float32):
    return np.full(n, value, dtype)


def with_sample(value, index=7, n=100):
    x = np.zeros(n, np.float32)
    x[index] = value
    return x


def wav(tmp_path, data, name="a.wav", rate=SR, subtype=None):
    path = tmp_path / name
    sf.write(str(path), data, rate, subtype=subtype)
    return path


def text_file(tmp_path):
    path = tmp_path / "notes.wav"
    path.write_text("this is not audio")
    return path


def empty_wav(tmp_path):
    return wav(tmp_path, np.zeros(0, np.float32), "empty.wav")


def float_wav(tmp_path, value):
    data = np.zeros(500, np.float32)
    data[10] = value
    return wav(tmp_path, data, "float.wav", subtype="FLOAT")


# (id, call taking tmp_path, error class, message fragment)
CASES = [
    # ---- feature extractor: layouts
    ("stereo (samples, channels) array", lambda t: fe(np.zeros((22050, 2), np.float32)), ValueError,
     "looks like (samples, channels)"),
    ("stereo (samples, channels) tensor", lambda t: fe(torch.zeros(44100, 2)), ValueError, "x.mean(axis=1)"),
    ("stereo frames as nested lists", lambda t: fe(np.zeros((1000, 2)).tolist()), ValueError,
     "2-D list of lists of shape (1000, 2)"),
    ("column (samples, 1) as a 2-D batch", lambda t: fe(np.zeros((500, 1), np.float32)), ValueError,
     "500 clips of 1 samples"),
    ("3-D array", lambda t: fe(np.zeros((2, 2, 500), np.float32)), ValueError, "3-D array"),
    ("0-D array", lambda t: fe(np.array(0.5)), ValueError, "0-D array"),
    ("numpy scalar", lambda t: fe(np.float32(0.5)), TypeError, "raw_speech of type float32"),
    ("None", lambda t: fe(None), TypeError, "raw_speech of type NoneType"),
    ("a path string", lambda t: fe("speech.wav"), TypeError, "raw_speech of type str"),
    ("a dict", lambda t: fe({"array": clip()}), TypeError, "raw_speech of type dict"),
    ("empty list", lambda t: fe([]), ValueError, "raw_speech is empty"),
    ("empty clip", lambda t: fe(np.zeros(0, np.float32)), ValueError, "clip 0 is empty"),
    ("a stereo clip in a list", lambda t: fe([clip(), np.zeros((2, 500), np.float32)]), ValueError,
     "clip 1 has shape (2, 500): more than one channel"),
    ("a number in a list of clips", lambda t: fe([clip(), np.float32(1.0)]), ValueError, "clip 1 is a single number"),
    ("ragged nested clip", lambda t: fe([[[0.1], [0.1, 0.2]]]), ValueError, "not a flat sequence of samples"),
    ("strings as samples", lambda t: fe(["ab", "cd"]), ValueError, "not a flat sequence of numbers"),
    ("object dtype", lambda t: fe(np.array([0.1, None])), ValueError, "got dtype object"),
    ("complex samples", lambda t: fe(np.zeros(10, np.complex64)), ValueError, "complex"),
    # ---- feature extractor: sample values and dtypes
    ("NaN sample", lambda t: fe([clip(), with_sample(np.nan)]), ValueError,
     "clip 1 has 1 NaN or infinite samples (the first at index 7)"),
    ("inf sample", lambda t: fe(with_sample(np.inf)), ValueError, "NaN or infinite"),
    ("-inf tensor sample", lambda t: fe(torch.from_numpy(with_sample(-np.inf))), ValueError, "NaN or infinite"),
    ("NaN in float16 tensor", lambda t: fe(torch.tensor([0.0, float("nan")], dtype=torch.float16)), ValueError,
     "NaN or infinite"),
    ("huge finite sample 3e38", lambda t: fe([clip(), clip(), with_sample(3e38, index=3)]), ValueError,
     "clip 2 has 1 samples of magnitude above 10000"),
    ("sample 1e5", lambda t: fe(with_sample(-1e5)), ValueError, "magnitude above 10000 (the first, -100000, at index 7)"),
    ("int64 array", lambda t: fe(np.zeros(100, np.int64)), TypeError, "integer dtype int64, which is no PCM"),
    ("int8 array", lambda t: fe(np.zeros(100, np.int8)), TypeError, "integer dtype int8"),
    ("uint16 array", lambda t: fe(np.zeros(100, np.uint16)), TypeError, "integer dtype uint16"),
    ("int64 tensor", lambda t: fe(torch.zeros(100, dtype=torch.int64)), TypeError, "integer dtype int64"),
    # ---- feature extractor: arguments
    ("other sampling rate", lambda t: fe(clip(), sampling_rate=16000), ValueError, "sampling_rate=16000 Hz does not match"),
    ("sampling rate as str", lambda t: fe(clip(), sampling_rate="22050"), TypeError,
     "sampling_rate must be an integer number of Hz"),
    ("return_tensors='tf'", lambda t: fe(clip(), return_tensors="tf"), ValueError, "return_tensors='tf'"),
    ("padding='shortest'", lambda t: fe(clip(), padding="shortest"), ValueError, "padding='shortest'"),
    ("max_length=0", lambda t: fe(clip(), max_length=0), ValueError, "max_length must be a positive integer"),
    ("max_length=1.5", lambda t: fe(clip(), max_length=1.5), ValueError, "max_length must be a positive integer"),
    ("pad_to_multiple_of=0", lambda t: fe(clip(), pad_to_multiple_of=0), ValueError, "pad_to_multiple_of must be"),
    ("padding_value=NaN", lambda t: fe(clip(), padding_value=float("nan")), ValueError, "padding_value must be a finite"),
    ("padding_value='0'", lambda t: fe(clip(), padding_value="0"), ValueError, "padding_value must be a finite"),
    ("unknown device", lambda t: fe(clip(), device="gpu9"), ValueError, "device='gpu9' is not a torch device"),
    ("absent GPU", lambda t: fe(clip(), device="cuda:97"), ValueError, "is not available here"),
    # ---- load_audio
    ("missing file", lambda t: load_audio(t / "nope.wav"), FileNotFoundError, "does not exist"),
    ("a directory", lambda t: load_audio(t), FileNotFoundError, "is a directory"),
    ("path None", lambda t: load_audio(None), TypeError, "path must be a str or os.PathLike"),
    ("not audio", lambda t: load_audio(text_file(t)), ValueError, "cannot read"),
    ("no samples", lambda t: load_audio(empty_wav(t)), ValueError, "holds no samples"),
    ("NaN in a float WAV", lambda t: load_audio(float_wav(t, np.nan)), ValueError, "NaN or infinite"),
    ("huge float WAV sample", lambda t: load_audio(float_wav(t, 3e30)), ValueError, "magnitude 3e+30, above 10000"),
    ("sampling_rate=0", lambda t: load_audio(t / "x.wav", sampling_rate=0), ValueError,
     "sampling_rate must be a positive integer"),
    ("sampling_rate='22k'", lambda t: load_audio(t / "x.wav", sampling_rate="22k"), ValueError,
     "sampling_rate must be a positive integer"),
    # ---- processor
    ("empty text", lambda t: PROC(text=""), ValueError, "text is empty: it tokenized to no ids"),
    ("only non-ASCII text", lambda t: PROC(text="日本語"), ValueError, "text tokenized to no ids"),
    ("only quotes in a batch", lambda t: PROC(text=["hello", '""']), ValueError, "text[1] tokenized to no ids"),
    ("empty batch of texts", lambda t: PROC(text=[]), ValueError, "text is an empty list"),
    ("empty word list", lambda t: PROC(text=[["a"], []], is_split_into_words=True), ValueError,
     "text[1] is an empty list of words"),
    ("text and stereo audio", lambda t: PROC(text="hi", raw_speech=np.zeros((22050, 2), np.float32), sampling_rate=SR),
     ValueError, "looks like (samples, channels)"),
    ("neither text nor audio", lambda t: PROC(), ValueError, "give text=, raw_speech= or both"),
    ("positional input", lambda t: PROC("hi"), TypeError, "pass the inputs by keyword"),
    ("unknown keyword", lambda t: PROC(text="hi", temperature=1.0), TypeError, "unexpected keyword argument"),
    ("text as int", lambda t: PROC(text=5), TypeError, "text must be a str or a list of str"),
    # ---- tokenizer
    ("tokenizer: None", lambda t: TOK(None), ValueError, "text is required"),
    ("tokenizer: bytes", lambda t: TOK(b"hi"), TypeError, "text must be a str or a list of str"),
    ("tokenizer: list with int", lambda t: TOK(["a", 3]), TypeError, "containing int"),
    ("tokenizer: return_tensors='tf'", lambda t: TOK("a", return_tensors="tf"), ValueError, "return_tensors must be"),
    ("tokenizer: padding_side='up'", lambda t: TOK("a", padding_side="up"), ValueError, "padding_side must be"),
    ("tokenizer: bad id in decode", lambda t: TOK.decode([10 ** 9]), ValueError, "is not in the vocabulary"),
    ("tokenizer: text_pair batch of another length", lambda t: TOK(["a", "b"], ["c"]), ValueError,
     "text_pair must have one text per text"),
    ("tokenizer: one text_pair for a batch", lambda t: TOK(["a", "b"], "c"), TypeError,
     "text_pair must be a list with one text per text"),
    ("tokenizer: text_pair int", lambda t: TOK("a", 5), TypeError, "text_pair must be a str or a list of str"),
    ("tokenizer: stride=-1", lambda t: TOK("a", stride=-1), ValueError, "stride must be an integer >= 0"),
    ("tokenizer: overflow without max_length", lambda t: TOK("a", truncation=True, return_overflowing_tokens=True),
     ValueError, "return_overflowing_tokens=True needs max_length"),
    ("tokenizer: overflow of longest_first pairs", lambda t: TOK("a b", "c d", truncation=True, max_length=2,
                                                                 return_overflowing_tokens=True),
     ValueError, "cannot be used with truncation='longest_first' on text pairs"),
    ("tokenizer: token types without special tokens", lambda t: TOK("a", return_token_type_ids=True,
                                                                     add_special_tokens=False),
     ValueError, "return_token_type_ids=True needs add_special_tokens=True"),
    ("tokenizer: pad without input_ids", lambda t: TOK.pad({"attention_mask": [[1]]}), ValueError,
     "encoded_inputs must include 'input_ids'"),
    ("tokenizer: pad of a str", lambda t: TOK.pad("abc"), TypeError, "encoded_inputs must be a dict"),
    ("tokenizer: encode of a float list", lambda t: TOK.encode([1.5]), TypeError, "a text must be a str"),
    ("tokenizer: add_special_tokens key", lambda t: ClvpTokenizer().add_special_tokens({"foo_token": "x"}), ValueError,
     "are not special-token attributes"),
    ("tokenizer: add_special_tokens= at construction", lambda t: ClvpTokenizer(add_special_tokens=False), TypeError,
     "names the method add_special_tokens"),
    ("tokenizer: verbose='yes'", lambda t: ClvpTokenizer(verbose="yes"), TypeError, "verbose must be True or False"),
    ("tokenizer: model_input_names str", lambda t: ClvpTokenizer(model_input_names="input_ids"), ValueError,
     "model_input_names must be a list of str"),
    # ---- feature extractor pad()
    ("pad: no input_features", lambda t: FE.pad({"input_values": [[0.0]]}), ValueError,
     "must include 'input_features'"),
    ("pad: max_length padding without max_length", lambda t: FE.pad({"input_features": [[0.0]]}, padding="max_length"),
     ValueError, "padding='max_length' needs max_length"),
    ("pad: truncation without max_length", lambda t: FE.pad({"input_features": [[0.0]]}, truncation=True),
     ValueError, "truncation=True needs max_length"),
    ("pad: return_tensors='tf'", lambda t: FE.pad({"input_features": [[0.0]]}, return_tensors="tf"), ValueError,
     "return_tensors='tf' is not supported"),
    ("pad: ragged rows as 'pt'", lambda t: FE.pad({"input_features": [[0.0], [0.0, 1.0]]}, padding=False,
                                                 return_tensors="pt"),
     ValueError, "cannot make one tensor of rows of different lengths"),
    ("pad: fields of other batch sizes", lambda t: FE.pad({"input_features": [[0.0]], "attention_mask": [[1], [1]]}),
     ValueError, "every field needs one entry per row"),
    # ---- normaliser
    ("normaliser: int", lambda t: HF(5), TypeError, "takes a str"),
    ("normaliser: bytes", lambda t: HF(b"abc"), TypeError, "takes a str"),
    ("normaliser: unknown mode", lambda t: EnglishNormalizer("unidecode"), ValueError, "text_normalization must be one of"),
]


@pytest.mark.parametrize("call, error, fragment", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_refused_with_a_message(call, error, fragment, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(error) as info:
            call(tmp_path)
    assert type(info.value) is error, repr(info.value)
    assert fragment in str(info.value), str(info.value)


def test_the_table_is_large():
    assert len(CASES) >= 30


# ---------------------------------------------------------------------------------------------
# the fixed behaviours
# ---------------------------------------------------------------------------------------------

def test_stereo_is_refused_before_allocating(monkeypatch):
    # one second of soundfile-layout stereo was 22,050 clips of 2 samples padded to 6 s each: 23.5 GB
    stereo = np.random.default_rng(0).uniform(-0.5, 0.5, (SR, 2)).astype(np.float32)
    import clvp.audio_input

    def no_conversion(*args):
        raise AssertionError("a clip was converted before the layout was checked")

    with monkeypatch.context() as patch:  # the shape alone decides: not one clip is converted
        patch.setattr(clvp.audio_input, "as_clip", no_conversion)
        with pytest.raises(ValueError, match="looks like"):
            fe(stereo)
        with pytest.raises(ValueError, match="looks like"):
            fe(torch.from_numpy(stereo))
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=r"x\.mean\(axis=1\)"):
            fe(stereo)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, peak  # nothing the size of the audio, let alone of the padding
    # the hinted fixes work, and give one row per real clip
    mixed = fe(stereo.mean(axis=1), return_tensors="np")
    assert mixed.input_features.shape == (1, 80, 517)
    as_list = fe([stereo[:, 0], stereo[:, 1]], return_tensors="np")
    assert as_list.input_features.shape == (2, 80, 517)
    # (channels, samples) cannot be told from a batch of equal-length clips: one clip per row
    np.testing.assert_array_equal(fe(stereo.T, return_tensors="np").input_features, as_list.input_features)


def test_two_d_batches_still_accepted():
    rng = np.random.default_rng(1)
    batch = (rng.standard_normal((3, 800)) * 0.1).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # mel filters above the 2 kHz Nyquist are empty
        small = ClvpFeatureExtractor(sampling_rate=4000, n_fft=128, hop_length=32, feature_size=10,
                                     default_audio_length=1)
        out = small(batch, sampling_rate=4000, return_tensors="np").input_features
        ref = small(list(batch), sampling_rate=4000, return_tensors="np").input_features
        square = small(np.zeros((3, 3), np.float32), sampling_rate=4000, return_tensors="np").input_features
        one = small(np.zeros((1, 1), np.float32), sampling_rate=4000, return_tensors="np").input_features
    np.testing.assert_array_equal(out, ref)
    assert square.shape[0] == 3 and one.shape[0] == 1


@pytest.mark.parametrize("dtype, offset, scale", [(np.int16, 0, 32768.0), (np.int32, 0, 2.0**31), (np.uint8, 128, 128.0)])
def test_integer_pcm_is_scaled_as_soundfile_reads_it(dtype, offset, scale, tmp_path):
    info = np.iinfo(dtype)
    rng = np.random.default_rng(2)
    pcm = rng.integers(info.min, info.max, 3000, dtype=dtype, endpoint=True)
    expected = ((pcm.astype(np.float64) - offset) / scale).astype(np.float32)
    features = fe(pcm, return_tensors="np").input_features
    np.testing.assert_array_equal(features, fe(expected, return_tensors="np").input_features)
    tensor_features = fe(torch.from_numpy(pcm), return_tensors="np").input_features
    np.testing.assert_array_equal(tensor_features, features)
    if dtype is not np.uint8:  # soundfile writes int16 / int32 arrays as they are: read back as float32
        path = wav(tmp_path, pcm, "pcm.wav", subtype={np.int16: "PCM_16", np.int32: "PCM_32"}[dtype])
        read, _ = sf.read(str(path), dtype="float32")
        np.testing.assert_array_equal(read, expected)


def test_largest_sane_samples_are_accepted():
    x = with_sample(MAX_SAMPLE_MAGNITUDE) * 1.0
    x[8] = -3.0  # clipped audio: a few units
    out = fe(x, return_tensors="np").input_features
    assert np.isfinite(out).all()


def test_tokenizer_keeps_returning_no_ids_for_empty_text():
    # transformers' behaviour: the tokenizer does not raise; only the processor does
    assert TOK("")["input_ids"] == []
    assert TOK("日本語")["input_ids"] == []
    assert TOK(["a", ""])["input_ids"] == [[14], []]


def test_processor_names_the_dropped_characters():
    with pytest.raises(ValueError) as info:
        PROC(text="«日本»")
    message = str(info.value)
    for ch in "«日本»":
        assert repr(ch) in message
    assert "U+65E5" in message and "text_normalization='hf'" in message
    assert PROC(text="café")["input_ids"]  # one kept character is enough
    assert PROC(text=" ")["input_ids"] == [2]  # a space is an id


def test_normaliser_bounded_on_long_digit_runs():
    assert HF("1" * 200_000) == "number out of range"
    assert EnglishNormalizer("tortoise")("9" * 1000) == " ".join(["nine"] * 1000)
