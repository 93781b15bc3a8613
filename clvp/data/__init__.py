"""Files the package ships (their sources and licences: docs/data.md).

* ``vocab.json`` + ``merges.txt`` (Hugging Face's layout) and ``tokenizer.json`` (Tortoise's): CLVP's
  text vocabulary: 255 byte-level BPE tokens and 215 merges.
* ``mel_norms.json``: the 80 per-bin log-mel normalisers of the real checkpoint's feature extractor.
* ``voice_lj.wav``, ``voice_lj_2.wav``: two LJ Speech clips (public domain, 22.05 kHz mono), the demo's
  voice and the benchmarks' speech.
* ``riding_hood.txt``: a public-domain English text, the tokenizer benchmark's input.
"""
from importlib import resources
from pathlib import Path


def path(name: str) -> Path:
    """The file system path of the packaged data file ``name`` (e.g. ``path("voice_lj.wav")``)."""
    found = Path(str(resources.files(__name__) / name))
    if not found.is_file():
        raise FileNotFoundError(f"clvp.data has no file {name!r}")
    return found
