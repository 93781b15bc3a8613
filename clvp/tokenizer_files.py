"""The tokenizer's files: reading and writing Hugging Face's layout (vocab.json + merges.txt, with
tokenizer_config.json, special_tokens_map.json and added_tokens.json) and reading Tortoise's
tokenizer.json. Written as transformers 4.46.3 writes them (so it loads them), plus our
``text_normalization`` key (which transformers ignores).
"""
from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path

__all__ = ["VOCAB_FILES_NAMES", "TOKENIZER_CONFIG_FILE", "SPECIAL_TOKENS_MAP_FILE", "ADDED_TOKENS_FILE",
           "TORTOISE_TOKENIZER_FILE", "SPECIAL_ATTRIBUTES", "EXTRA_SPECIAL_ATTRIBUTES",
           "ALL_SPECIAL_ATTRIBUTES", "special_token_content", "parse_hf_layout",
           "read_hf_layout", "read_tortoise_file", "read_packaged_vocabulary", "read_saved_settings",
           "vocabulary_files", "write_vocabulary", "write_settings"]

VOCAB_FILES_NAMES = {"vocab_file": "vocab.json", "merges_file": "merges.txt"}
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_MAP_FILE = "special_tokens_map.json"
ADDED_TOKENS_FILE = "added_tokens.json"
TORTOISE_TOKENIZER_FILE = "tokenizer.json"
SPECIAL_ATTRIBUTES = ("bos_token", "eos_token", "unk_token", "pad_token")  # CLVP's, always saved
# transformers' other special-token attributes (None unless set, e.g. by add_special_tokens), and the
# order of all of them in ``all_special_tokens``
EXTRA_SPECIAL_ATTRIBUTES = ("sep_token", "cls_token", "mask_token")
ALL_SPECIAL_ATTRIBUTES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
# The settings read back from a tokenizer_config.json; its other keys (tokenizer_class, auto_map, ...)
# carry no setting of ours.
INIT_KEYS = {"errors", "unk_token", "bos_token", "eos_token", "pad_token", "add_prefix_space", "add_bos_token",
             "add_eos_token", "text_normalization", "additional_special_tokens", "model_max_length", "padding_side",
             "truncation_side", "clean_up_tokenization_spaces", "split_special_tokens", *EXTRA_SPECIAL_ATTRIBUTES}


def special_token_content(token) -> str | None:
    """A special token given as a str, as a saved AddedToken dict, or as an object with ``.content``."""
    if token is None or isinstance(token, str):
        return token
    if isinstance(token, dict) and "content" in token:
        return token["content"]
    if hasattr(token, "content"):
        return token.content
    raise TypeError(f"a special token must be a str (or a dict with 'content'), got {type(token).__name__}")


# ------------------------------------------------------------------------------ the vocabulary
def parse_hf_layout(vocab_text: str, merges_text: str) -> tuple[dict[str, int], list[tuple[str, ...]]]:
    """The texts of vocab.json and merges.txt -> (vocabulary: token -> id, merges)."""
    encoder = json.loads(vocab_text)
    if not isinstance(encoder, dict) or not all(isinstance(v, int) for v in encoder.values()):
        raise ValueError("vocab.json must map tokens to integer ids")
    # transformers: the first line (#version) is skipped, and so is the last element of the split,
    # which is empty when the file ends with a newline.
    merges = [tuple(line.split()) for line in merges_text.split("\n")[1:-1]]
    return encoder, merges


def read_hf_layout(vocab_file, merges_file):
    with open(vocab_file, encoding="utf-8") as f:
        vocab_text = f.read()
    with open(merges_file, encoding="utf-8") as f:
        merges_text = f.read()
    return parse_hf_layout(vocab_text, merges_text)


def read_packaged_vocabulary():
    """The real CLVP vocabulary shipped in clvp/data (255 tokens, 215 merges)."""
    data = resources.files("clvp.data")
    return parse_hf_layout(data.joinpath("vocab.json").read_text(encoding="utf-8"),
                           data.joinpath("merges.txt").read_text(encoding="utf-8"))


def read_tortoise_file(tokenizer_file):
    """Tortoise's tokenizer.json (a ``tokenizers`` BPE file) -> vocabulary and merges."""
    with open(tokenizer_file, encoding="utf-8") as f:
        data = json.load(f)
    model = data.get("model") if isinstance(data, dict) else None
    if not isinstance(model, dict) or model.get("type", "BPE") != "BPE" or "vocab" not in model:
        raise ValueError(f"{tokenizer_file} is not a BPE tokenizer.json (no model.vocab of type BPE)")
    merges = [tuple(m.split()) if isinstance(m, str) else tuple(m) for m in model.get("merges", [])]
    return dict(model["vocab"]), merges


def write_vocabulary(save_directory, encoder: dict[str, int], merges, filename_prefix: str | None = None
                     ) -> tuple[str, str]:
    """Write vocab.json and merges.txt into an existing directory; -> their paths."""
    if not os.path.isdir(save_directory):
        raise ValueError(f"save_directory {str(save_directory)!r} is not an existing directory")
    prefix = filename_prefix + "-" if filename_prefix else ""
    vocab_file = os.path.join(save_directory, prefix + VOCAB_FILES_NAMES["vocab_file"])
    merges_file = os.path.join(save_directory, prefix + VOCAB_FILES_NAMES["merges_file"])
    with open(vocab_file, "w", encoding="utf-8") as f:
        f.write(json.dumps(encoder, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    with open(merges_file, "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        for merge in merges:
            f.write(" ".join(merge) + "\n")
    return vocab_file, merges_file


def vocabulary_files(folder: Path) -> dict[str, Path]:
    """The vocabulary files in a folder, as the tokenizer's keyword arguments: vocab_file + merges_file
    (preferred) or tokenizer_file."""
    vocab, merges = folder / VOCAB_FILES_NAMES["vocab_file"], folder / VOCAB_FILES_NAMES["merges_file"]
    if vocab.is_file() and merges.is_file():
        return {"vocab_file": vocab, "merges_file": merges}
    if (folder / TORTOISE_TOKENIZER_FILE).is_file():
        return {"tokenizer_file": folder / TORTOISE_TOKENIZER_FILE}
    raise FileNotFoundError(f"{folder} has neither vocab.json + merges.txt nor tokenizer.json")


# ------------------------------------------------------------------------------ the settings
def read_saved_settings(folder: Path) -> dict:
    """The tokenizer's keyword arguments saved in a folder's tokenizer_config.json,
    special_tokens_map.json and added_tokens.json (each read when present)."""
    init: dict = {}
    config_file = folder / TOKENIZER_CONFIG_FILE
    if config_file.is_file():
        config = json.loads(config_file.read_text(encoding="utf-8"))
        init.update((key, value) for key, value in config.items() if key in INIT_KEYS)
        if "added_tokens_decoder" in config:
            init["added_tokens_decoder"] = {int(k): special_token_content(v)
                                            for k, v in config["added_tokens_decoder"].items()}
    special_file = folder / SPECIAL_TOKENS_MAP_FILE
    if special_file.is_file():
        for key, value in json.loads(special_file.read_text(encoding="utf-8")).items():
            if key == "additional_special_tokens":
                init[key] = [special_token_content(v) for v in value]
            elif key in ALL_SPECIAL_ATTRIBUTES:
                init[key] = special_token_content(value)
    added_file = folder / ADDED_TOKENS_FILE
    if added_file.is_file():
        decoder = dict(init.get("added_tokens_decoder") or {})
        for tok, idx in json.loads(added_file.read_text(encoding="utf-8")).items():
            decoder.setdefault(int(idx), tok)
        init["added_tokens_decoder"] = decoder
    return init


def _added_token(token: str, special: bool | None) -> dict:
    """An AddedToken as transformers saves it (special_tokens_map.json's entries have no "special")."""
    entry = {"content": token, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False}
    if special is not None:
        entry["special"] = special
    return entry


def write_settings(save_directory, *, settings: dict, special_tokens: dict[str, str | None],
                   additional_special_tokens: list[str], added_tokens_encoder: dict[str, int], vocab_size: int
                   ) -> list[str]:
    """Write tokenizer_config.json, special_tokens_map.json and (for added tokens past the base
    vocabulary) added_tokens.json into an existing directory; -> their paths.

    ``settings``: the plain constructor settings (add_bos_token, errors, padding_side, ...);
    ``special_tokens``: {"bos_token": ..., ...} (None for an unset one)."""
    all_special = {t for t in [*special_tokens.values(), *additional_special_tokens] if t is not None}
    added_tokens_decoder = {i: t for t, i in added_tokens_encoder.items()}
    config = {
        **settings,
        **special_tokens,
        "added_tokens_decoder": {str(i): _added_token(t, t in all_special)
                                 for i, t in sorted(added_tokens_decoder.items())},
        **({"additional_special_tokens": list(additional_special_tokens)} if additional_special_tokens else {}),
        "tokenizer_class": "ClvpTokenizer",
    }
    special_map: dict = {a: _added_token(t, None) for a, t in special_tokens.items() if t is not None}
    if additional_special_tokens:
        special_map["additional_special_tokens"] = list(additional_special_tokens)
    paths = [os.path.join(save_directory, n) for n in (TOKENIZER_CONFIG_FILE, SPECIAL_TOKENS_MAP_FILE)]
    for path, obj in zip(paths, (config, special_map)):
        with open(path, "w", encoding="utf-8") as f:
            f.write(json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    beyond = {t: i for t, i in added_tokens_encoder.items() if i >= vocab_size}
    if beyond:
        path = os.path.join(save_directory, ADDED_TOKENS_FILE)
        with open(path, "w", encoding="utf-8") as f:
            f.write(json.dumps(beyond, ensure_ascii=False) + "\n")
        paths.append(path)
    return paths
