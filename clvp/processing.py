"""``ClvpProcessor``: the CLVP feature extractor and tokenizer behind one call (Hugging Face's API).

``processor(text=..., raw_speech=..., sampling_rate=..., return_tensors="pt")`` gives
``input_ids`` and ``attention_mask`` from the tokenizer and ``input_features`` from the feature
extractor, ready for ``ClvpModelForConditionalGeneration``.

The attention mask: with text, ``attention_mask`` is always the *text* mask and the feature
extractor's mask over audio samples is dropped, as in transformers 4.46.3 (transformers 5.x let the
audio mask overwrite the text one until #47127; the model reads ``attention_mask`` as the text's, so
an audio mask there gives text positions up to 132,300). Call ``processor.feature_extractor``
directly for the audio mask. Without text the extractor's output comes back unchanged, mask included.

Keyword arguments go, as in transformers, to every part whose ``__call__`` takes them
(``return_tensors``, ``padding``, ``truncation``, ``max_length``, ``pad_to_multiple_of`` and
``return_attention_mask`` to both); ``text_kwargs={...}`` / ``audio_kwargs={...}`` send them to one part
only (a text ``max_length`` counts tokens, an audio one samples). ``device=`` computes the features
there and moves the text tensors there too. A keyword neither part takes is a TypeError.
"""
from __future__ import annotations

import inspect
import json
import os
import re
import warnings
from pathlib import Path

from .atomic import atomic_folder
from .batch import BatchEncoding
from .feature_extraction import ClvpFeatureExtractor
from .tokenization import ClvpTokenizer

__all__ = ["ClvpProcessor"]

# an ASCII character the normaliser keeps (all but '"'): a text holding one tokenizes to at least one id
_HAS_KEPT_ASCII = re.compile(r'[\x00-\x21\x23-\x7f]')


def _parameters(fn) -> set[str]:
    return {name for name, p in inspect.signature(fn).parameters.items()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)} - {"self"}


class ClvpProcessor:
    """Wraps a ``ClvpFeatureExtractor`` and a ``ClvpTokenizer`` (both None: the defaults, i.e. the real
    CLVP vocabulary and Hugging Face's default extractor settings)."""

    feature_extractor_class = "ClvpFeatureExtractor"
    tokenizer_class = "ClvpTokenizer"
    attributes = ["feature_extractor", "tokenizer"]
    model_input_names = ["input_ids", "input_features", "attention_mask"]

    def __init__(self, feature_extractor=None, tokenizer=None):
        feature_extractor = ClvpFeatureExtractor() if feature_extractor is None else feature_extractor
        tokenizer = ClvpTokenizer() if tokenizer is None else tokenizer
        if not isinstance(feature_extractor, ClvpFeatureExtractor):
            raise TypeError(f"feature_extractor must be a ClvpFeatureExtractor, got {type(feature_extractor).__name__}")
        if not isinstance(tokenizer, ClvpTokenizer):
            raise TypeError(f"tokenizer must be a ClvpTokenizer, got {type(tokenizer).__name__}")
        self.feature_extractor = feature_extractor
        self.tokenizer = tokenizer
        self._text_keys = _parameters(type(tokenizer).__call__) - {"text"}
        self._audio_keys = _parameters(type(feature_extractor).__call__) - {"raw_speech", "sampling_rate"}

    def __call__(self, *args, text=None, raw_speech=None, sampling_rate=None, text_kwargs=None, audio_kwargs=None,
                 **kwargs):
        """Tokenize ``text`` and/or extract features of ``raw_speech`` (see the module docstring)."""
        if args:
            raise TypeError("pass the inputs by keyword: processor(text=..., raw_speech=..., sampling_rate=...)")
        if text is None and raw_speech is None:
            raise ValueError("give text=, raw_speech= or both")
        unknown = sorted(set(kwargs) - self._text_keys - self._audio_keys)
        if unknown:
            raise TypeError(f"unexpected keyword argument(s) {unknown}: the tokenizer takes {sorted(self._text_keys)}, "
                            f"the feature extractor {sorted(self._audio_keys)}")
        t_kwargs = {k: v for k, v in kwargs.items() if k in self._text_keys}
        t_kwargs.update(text_kwargs or {})
        a_kwargs = {k: v for k, v in kwargs.items() if k in self._audio_keys}
        a_kwargs.update(audio_kwargs or {})
        device = a_kwargs.get("device")

        encodings = None
        if text is not None:
            self._check_text_gives_ids(text, t_kwargs.get("is_split_into_words", False))
            encodings = self.tokenizer(text, **t_kwargs)
            if device is not None and t_kwargs.get("return_tensors") == "pt":
                encodings = encodings.to(device)
        if raw_speech is None:
            return encodings
        features = self.feature_extractor(raw_speech, sampling_rate=sampling_rate, **a_kwargs)
        if encodings is None:
            return features
        out = BatchEncoding({k: v for k, v in features.items() if k != "attention_mask"})  # the audio mask is dropped
        out["input_ids"] = encodings["input_ids"]
        if "attention_mask" in encodings:
            out["attention_mask"] = encodings["attention_mask"]
        return out

    def _check_text_gives_ids(self, text, is_split_into_words: bool) -> None:
        """Raise a ValueError if a text tokenizes to no ids (empty, or only characters the normaliser
        drops, e.g. non-ASCII in "hf" mode): the model would get an empty or all-padding row. A text with
        an ASCII character other than '"' always gives an id, so only the others are tokenized here.
        Layouts the tokenizer does not take are left to its TypeError."""
        if is_split_into_words:
            if isinstance(text, (list, tuple)) and text and all(isinstance(t, (list, tuple)) for t in text):
                empty = [i for i, words in enumerate(text) if len(words) == 0]
                if empty:
                    raise ValueError(f"text[{empty[0]}] is an empty list of words: it tokenized to no ids; "
                                     "every text needs at least one word")
            elif isinstance(text, (list, tuple)) and len(text) == 0:
                raise ValueError("text is an empty list of words: it tokenized to no ids; give at least one word")
            return
        if isinstance(text, str):
            texts, names = [text], ["text"]
        elif isinstance(text, (list, tuple)) and all(isinstance(t, str) for t in text):
            if len(text) == 0:
                raise ValueError("text is an empty list: give at least one text (a str or a list of str)")
            texts, names = text, [f"text[{i}]" for i in range(len(text))]
        else:
            return  # the tokenizer raises its TypeError
        for name, t in zip(names, texts):
            if _HAS_KEPT_ASCII.search(t):
                continue
            if self.tokenizer(t, add_special_tokens=False, return_attention_mask=False)["input_ids"]:
                continue
            if not t:
                raise ValueError(f"{name} is empty: it tokenized to no ids; give at least one word")
            dropped = sorted(set(t))
            shown = ", ".join(f"{c!r} (U+{ord(c):04X})" for c in dropped[:10]) + (", ..." if len(dropped) > 10 else "")
            raise ValueError(
                f"{name} tokenized to no ids: the normaliser (text_normalization="
                f"{self.tokenizer.text_normalization!r}) dropped every character of it: {shown}. It keeps ASCII "
                "(the 'hf' mode drops all other characters; 'tortoise' transliterates accented Latin letters) and "
                "removes '\"'; give text with at least one letter, digit, space or punctuation mark"
            )

    def decode(self, *args, **kwargs) -> str:
        """``ClvpTokenizer.decode``."""
        return self.tokenizer.decode(*args, **kwargs)

    def batch_decode(self, *args, **kwargs) -> list[str]:
        """``ClvpTokenizer.batch_decode``."""
        return self.tokenizer.batch_decode(*args, **kwargs)

    def save_pretrained(self, save_directory) -> list[str]:
        """Write the feature extractor's preprocessor_config.json and the tokenizer's files into one
        directory, each config marked ``"processor_class": "ClvpProcessor"`` as transformers does.
        Both parts in one all-or-nothing step (clvp/atomic.py)."""
        # as transformers, the parts themselves are marked (a reloaded extractor then equals this one)
        self.feature_extractor._processor_class = type(self).__name__
        with atomic_folder(save_directory) as folder:
            files = list(self.feature_extractor.save_pretrained(folder))
            files += list(self.tokenizer.save_pretrained(folder))
            for name in ("preprocessor_config.json", "tokenizer_config.json"):
                path = os.path.join(folder, name)
                if os.path.isfile(path):
                    with open(path, encoding="utf-8") as f:
                        config = json.load(f)
                    config["processor_class"] = type(self).__name__
                    with open(path, "w", encoding="utf-8") as f:
                        f.write(json.dumps(config, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
        return [os.path.join(save_directory, os.path.relpath(f, folder)) for f in files]

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs) -> "ClvpProcessor":
        """Load both parts from one local directory; each keyword goes to the part(s) whose constructor
        takes it (e.g. ``pad_token=`` to the tokenizer, ``padding_value=`` to the feature extractor).

        A folder without ``preprocessor_config.json`` (or without ``vocab.json`` / ``tokenizer.json``),
        such as one written by ``model.save_pretrained`` or ``clvp convert-tortoise``, gets the packaged
        part instead (Tortoise's mel norms; the real CLVP vocabulary), with a warning that says so."""
        fe_keys = _parameters(ClvpFeatureExtractor.__init__)
        tok_keys = _parameters(ClvpTokenizer.__init__) - {"vocab_file", "merges_file", "tokenizer_file"}
        unknown = sorted(set(kwargs) - fe_keys - tok_keys)
        if unknown:
            raise TypeError(f"unexpected keyword argument(s) {unknown}: the tokenizer takes {sorted(tok_keys)}, "
                            f"the feature extractor {sorted(fe_keys)}")
        fe_kwargs = {k: v for k, v in kwargs.items() if k in fe_keys}
        tok_kwargs = {k: v for k, v in kwargs.items() if k in tok_keys}
        folder = Path(pretrained_model_name_or_path)
        packaged = []
        if folder.is_dir() and not (folder / "preprocessor_config.json").is_file():
            # a model folder from save_pretrained or convert-tortoise holds no processor files: use the
            # real checkpoint's extractor settings (Tortoise's mel norms), as the clvp command does
            fe_kwargs.setdefault("mel_norms", "tortoise")
            feature_extractor = ClvpFeatureExtractor(**fe_kwargs)
            packaged.append("feature extractor (Tortoise's mel norms)")
        else:
            feature_extractor = ClvpFeatureExtractor.from_pretrained(pretrained_model_name_or_path, **fe_kwargs)
        if folder.is_dir() and not any((folder / name).is_file() for name in ("vocab.json", "tokenizer.json")):
            tokenizer = ClvpTokenizer(**tok_kwargs)
            packaged.append("tokenizer (the real CLVP vocabulary)")
        else:
            tokenizer = ClvpTokenizer.from_pretrained(pretrained_model_name_or_path, **tok_kwargs)
        if packaged:
            warnings.warn(f"{folder} holds no processor files; using the packaged {' and '.join(packaged)}. "
                          "processor.save_pretrained(folder) writes them there.", UserWarning, stacklevel=2)
        return cls(feature_extractor, tokenizer)

    def __repr__(self) -> str:
        return f"ClvpProcessor:\n- feature_extractor: {self.feature_extractor!r}\n- tokenizer: {self.tokenizer!r}"
