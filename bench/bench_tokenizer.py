"""The text front end: 1000 sentences through ``ClvpTokenizer``, ours against transformers 4.46.3.

Run: ``python -m clvp.bench.bench_tokenizer [--save]``.

Input: the sentences of clvp/data/riding_hood.txt (split after . ! ?), repeated to 1000
(about 90 characters each), on the real CLVP vocabulary. Timed in one process, CPU only (this is
host work; there is nothing for a GPU to do):

* ``tok(sentences)``: ids and attention masks as lists (no padding);
* ``tok(sentences, padding=True, return_tensors="pt")``: one padded (1000, T) tensor;
* the English normalizer alone, and our BPE alone (``tokenizers``' ``encode_batch_fast`` on the
  already-normalised sentences), to show where the time goes.

The oracle (transformers 4.46.3 and its tokenizers 0.20.3, in ``.oracle/``) is imported here only,
after ours, by putting ``.oracle`` first on ``sys.path``; our ``tokenizers`` is already loaded by
then, and transformers' slow ``ClvpTokenizer`` does not use it. Without ``.oracle`` only ours is
timed. Both outputs are checked equal before timing. Median (and min) of repeated calls after one warm-up.
"""
from __future__ import annotations

import os
import re

from clvp.bench._common import (bench_parser, conditions, import_oracle, markdown_table, results_dir, time_fn,
                                write_result)
from clvp.data import path as data_path
from clvp.normalizer import EnglishNormalizer
from clvp.tokenization import ClvpTokenizer

TEXT = data_path("riding_hood.txt")
VOCAB, MERGES = data_path("vocab.json"), data_path("merges.txt")  # the same vocabulary in HF's layout
N_SENTENCES = 1000
TARGET = 4.0  # docs/speed.md §7.1: at least 4x faster than transformers


def sentences(n: int = N_SENTENCES) -> list[str]:
    text = TEXT.read_text(encoding="utf-8")
    found = [s for line in text.splitlines() if line.strip() for s in re.split(r"(?<=[.!?])\s+", line.strip()) if s]
    return (found * (n // len(found) + 1))[:n]


def load_oracle():
    """transformers 4.46.3's ClvpTokenizer and EnglishNormalizer, or None when .oracle is missing."""
    transformers = import_oracle()  # .oracle stays on sys.path: transformers imports some of its modules lazily
    if transformers is None:
        return None
    from transformers import ClvpTokenizer as HFClvpTokenizer
    from transformers.models.clvp.number_normalizer import EnglishNormalizer as HFEnglishNormalizer

    tok = HFClvpTokenizer(str(VOCAB), str(MERGES))
    return transformers.__version__, tok, HFEnglishNormalizer()


def main(argv=None) -> None:
    args = bench_parser(__doc__.splitlines()[0]).parse_args(argv)
    import tokenizers

    texts = sentences()
    ours = ClvpTokenizer()
    normalizer = EnglishNormalizer()
    normalized = [normalizer(t) for t in texts]
    oracle = load_oracle()

    def timed(fn, repeat):
        return time_fn(fn, warmup=1, repeat=repeat, min_time=1.0)

    def ms(t):
        return f"{t['median'] * 1e3:.1f} ({t['min'] * 1e3:.1f})"

    def ratio(slow, fast):
        return f"{slow['median'] / fast['median']:.1f}x ({slow['min'] / fast['min']:.1f}x)"

    rows = []
    runs = {
        "tok(sentences)": (lambda t: t(texts), 15),
        'tok(sentences, padding=True, return_tensors="pt")':
            (lambda t: t(texts, padding=True, return_tensors="pt"), 15),
    }
    for name, (fn, repeat) in runs.items():
        t_ours = timed(lambda: fn(ours), repeat)
        if oracle is not None:
            hf_tok = oracle[1]
            a, b = fn(ours), fn(hf_tok)
            assert [list(map(int, r)) for r in a["input_ids"]] == [list(map(int, r)) for r in b["input_ids"]], name
            assert [list(map(int, r)) for r in a["attention_mask"]] == [list(map(int, r)) for r in b["attention_mask"]]
            t_hf = timed(lambda: fn(hf_tok), 7)
            rows.append([name, ms(t_hf), ms(t_ours), ratio(t_hf, t_ours)])
        else:
            rows.append([name, "n/a (no .oracle)", ms(t_ours), "n/a"])

    t_norm = timed(lambda: [normalizer(t) for t in texts], 15)
    t_bpe = timed(lambda: ours._backend.encode_batch_fast(normalized, add_special_tokens=False), 15)
    if oracle is not None:
        hf_norm = oracle[2]
        assert [hf_norm(t) for t in texts] == normalized
        t_hf_norm = timed(lambda: [hf_norm(t) for t in texts], 7)
        rows.append(["English normalizer alone", ms(t_hf_norm), ms(t_norm), ratio(t_hf_norm, t_norm)])
    else:
        rows.append(["English normalizer alone", "n/a (no .oracle)", ms(t_norm), "n/a"])
    rows.append(["BPE alone (ours: tokenizers.encode_batch_fast)", "", ms(t_bpe), ""])

    info = conditions(
        "cpu",
        tokenizers=tokenizers.__version__,
        oracle=f"transformers {oracle[0]} (slow ClvpTokenizer)" if oracle else "not installed (.oracle missing)",
        input=f"{N_SENTENCES} sentences of riding_hood.txt, {sum(map(len, texts))} characters",
        cpu_count=os.cpu_count(),
        load_average=" / ".join(f"{x:.1f}" for x in os.getloadavg()),
    )
    table = markdown_table(["call", "transformers 4.46.3, ms: median (min)", "ours, ms: median (min)",
                            "speed-up: median (min)"], rows)
    notes = (
        f"Target (docs/speed.md §7.1): at least {TARGET:.0f}x faster than transformers on 1000 sentences. Ids and masks were "
        "checked equal to transformers' before timing. Wall time of repeated calls (at least 1 s of them) after one "
        "warm-up, median and min; "
        "the machine is shared, so its load average is recorded. No GPU is involved: tokenization is host work."
    )
    if oracle is None:
        notes += "\n\n.oracle (transformers 4.46.3) is not installed here, so only ours was timed."
    write_result("tokenizer", "ClvpTokenizer: 1000 sentences, ours vs transformers 4.46.3", info, table, notes,
                 suffix="-cpu", results=results_dir(args))


if __name__ == "__main__":
    main()
