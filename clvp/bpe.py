"""CLVP's byte-level BPE core: a vocabulary, its merges and the added (special) tokens -> ids and back.

The merges run in Rust (the ``tokenizers`` library) behind GPT-2's pre-tokenization regex and byte ->
unicode map; this file adds what transformers 4.46.3's slow ``ClvpTokenizer`` does around them:

* added tokens (``<|endoftext|>``, ``[STOP]``, ``[UNK]``) are cut out of the text first and kept whole;
* the BPE token "Ġ" (a lone space) is ``[SPACE]``'s id when the vocabulary has ``[SPACE]``;
* a character, or a merge result, outside the vocabulary becomes ``[UNK]``.

Text normalization is not done here: ``encode_batch`` and ``tokenize`` take the normalizer to apply to
every piece between added tokens (clvp/normalizer.py). Padding and truncation: clvp/padding.py.
"""
from __future__ import annotations

import re
from typing import Callable, Sequence

from tokenizers import Tokenizer, models, pre_tokenizers

__all__ = ["ByteLevelBPE", "bytes_to_unicode", "number_added_tokens", "token_bytes"]

SPACE_TOKEN = "[SPACE]"
BPE_SPACE = "\u0120"  # "Ġ": GPT-2's byte map sends a space there


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable unicode character map (a space becomes "Ġ")."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


BYTE_ENCODER = bytes_to_unicode()
BYTE_DECODER = {c: b for b, c in BYTE_ENCODER.items()}


def token_bytes(token: str) -> bytes:
    """A vocabulary token's bytes (a character outside the byte map stands for its UTF-8)."""
    return b"".join(bytes([BYTE_DECODER[c]]) if c in BYTE_DECODER else c.encode("utf-8") for c in token)


def number_added_tokens(vocab: dict[str, int], saved: list[tuple[int, str]], special_tokens: list[str]
                        ) -> dict[str, int]:
    """Added tokens -> ids as transformers numbers them: the ``saved`` (id, token) pairs at their ids,
    then each special token not added yet at its vocabulary id, or, outside the vocabulary, at the
    next free id len(vocabulary + added)."""
    added = {tok: idx for idx, tok in sorted(saved)}
    for tok in special_tokens:
        if tok not in added:
            added[tok] = vocab[tok] if tok in vocab else len(vocab.keys() | added.keys())
    return added


class ByteLevelBPE:
    """Encode and decode with one vocabulary (``vocab``: token -> id, the base vocabulary), its
    ``merges`` and the ``added_tokens`` (token -> id, the special tokens among them). Read-only after
    construction; pickles without the Rust object, which is rebuilt on load."""

    def __init__(self, vocab: dict[str, int], merges: list[tuple[str, ...]], added_tokens: dict[str, int],
                 unk_token: str, strip: dict[str, tuple[bool, bool]] | None = None):
        self.vocab = vocab
        self.merges = merges
        self.added_tokens = added_tokens
        self.unk_token = unk_token
        # added token -> (lstrip, rstrip): the whitespace before / after it is dropped, as transformers
        # does for an AddedToken made with lstrip=True / rstrip=True
        self.strip = dict(strip or {})
        self._build()

    def _build(self) -> None:
        vocab = self.vocab
        self.unk_id = self.added_tokens.get(self.unk_token, vocab.get(self.unk_token))
        self.has_space_token = SPACE_TOKEN in vocab
        bpe_vocab = dict(vocab)
        bpe_vocab.setdefault(self.unk_token, self.unk_id)
        if self.has_space_token:  # transformers maps the BPE token "Ġ" (a lone space) to "[SPACE]"
            bpe_vocab[BPE_SPACE] = vocab[SPACE_TOKEN]
        pairs = []
        for merge in self.merges:
            if len(merge) != 2:  # transformers keeps such lines as ranks that can never apply
                continue
            for piece in (merge[0], merge[1], merge[0] + merge[1]):
                bpe_vocab.setdefault(piece, self.unk_id)  # a piece outside the vocabulary is [UNK] there too
            pairs.append(merge)
        backend = Tokenizer(models.BPE(vocab=bpe_vocab, merges=pairs, unk_token=self.unk_token, fuse_unk=False))
        # GPT-2's regex ('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+), then bytes.
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        self.backend = backend
        self.id_bytes = {i: token_bytes(t) for t, i in vocab.items()}  # the decode table (last token wins an id)
        self.added_names = {i: t for t, i in self.added_tokens.items()}
        # Longest first, so an added token that contains another is cut out whole.
        specials = sorted(self.added_tokens, key=len, reverse=True)
        self._special_re = re.compile("|".join(re.escape(t) for t in specials)) if specials else None
        self._special_first_chars = {t[0] for t in specials if t}

    def __getstate__(self) -> dict:
        # The Rust BPE is rebuilt rather than pickled: its serialisation keeps one token per id, and
        # "Ġ" shares [SPACE]'s id here.
        return {"vocab": self.vocab, "merges": self.merges, "added_tokens": self.added_tokens,
                "unk_token": self.unk_token, "strip": self.strip}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._build()

    def __len__(self) -> int:
        """Size of the vocabulary with the added tokens."""
        return len(self.vocab.keys() | self.added_tokens.keys())

    # ---------------------------------------------------------------------------------- encoding
    def split_specials(self, text: str, split_special_tokens: bool = False) -> list:
        """[str | int]: the pieces of text between the added tokens, and those tokens' ids."""
        if (split_special_tokens or self._special_re is None
                or not any(c in text for c in self._special_first_chars)):  # the common case: one piece
            return [text]
        out, last, stripped = [], 0, []
        for m in self._special_re.finditer(text):
            if m.start() > last:
                out.append(text[last : m.start()])
            if m.group(0) in self.strip:
                stripped.append((len(out), *self.strip[m.group(0)]))
            out.append(self.added_tokens[m.group(0)])
            last = m.end()
        if last < len(text):
            out.append(text[last:])
        for i, lstrip, rstrip in stripped:
            if lstrip and i > 0 and isinstance(out[i - 1], str):
                out[i - 1] = out[i - 1].rstrip()
            if rstrip and i + 1 < len(out) and isinstance(out[i + 1], str):
                out[i + 1] = out[i + 1].lstrip()
        return [part for part in out if part != ""]

    def encode_batch(self, texts: Sequence[str], normalize: Callable[[str], str], add_prefix_space: bool = False,
                     split_special_tokens: bool = False) -> list[list[int]]:
        """Ids of each text (no bos/eos added), all BPE work in one ``tokenizers`` batch call."""
        pieces: list[str] = []  # the normalised text pieces of every text, in order, for one Rust call
        plans: list = []  # per text: an index into pieces (no added token in it), or [(is_special, id or index)]
        for text in texts:
            if add_prefix_space:
                text = " " + text
            parts = self.split_specials(text, split_special_tokens)
            if len(parts) == 1 and isinstance(parts[0], str):
                plans.append(len(pieces))
                pieces.append(normalize(parts[0]))
                continue
            plan = []
            for part in parts:
                if isinstance(part, int):
                    plan.append((True, part))
                else:
                    plan.append((False, len(pieces)))
                    pieces.append(normalize(part))
            plans.append(plan)
        encoded = [e.ids for e in self.backend.encode_batch_fast(pieces, add_special_tokens=False)] if pieces else []
        out = []
        for plan in plans:
            if isinstance(plan, int):
                out.append(encoded[plan])
                continue
            ids = []
            for is_special, value in plan:
                if is_special:
                    ids.append(value)
                else:
                    ids.extend(encoded[value])
            out.append(ids)
        return out

    def tokenize(self, text: str, normalize: Callable[[str], str], split_special_tokens: bool = False) -> list[str]:
        """Text -> tokens as transformers' ``tokenize`` gives them: "[SPACE]" for a space, and a character
        outside the vocabulary as itself (it becomes [UNK] only as an id)."""
        tokens = []
        for part in self.split_specials(text, split_special_tokens):
            if isinstance(part, int):
                tokens.append(self.added_names[part])
                continue
            piece = normalize(part)
            enc = self.backend.encode(piece, add_special_tokens=False)
            for tok_id, tok, (start, end) in zip(enc.ids, enc.tokens, enc.offsets):
                if tok_id == self.unk_id and tok == self.unk_token:
                    tok = "".join(BYTE_ENCODER[b] for b in piece[start:end].encode("utf-8"))
                elif tok == BPE_SPACE and self.has_space_token:
                    tok = SPACE_TOKEN
                tokens.append(tok)
        return tokens

    # ---------------------------------------------------------------------------------- decoding
    def decode(self, ids: Sequence[int], *, skip_ids=(), alone=(), errors: str = "replace",
               spaces_between_special_tokens: bool = True) -> str:
        """Ids -> text, as transformers 4.46.3: the bytes of consecutive tokens decoded together, with
        ``bytes.decode``'s ``errors``; an added token in ``alone`` is a text of its own, and the texts are
        joined by a space (or by nothing, with ``spaces_between_special_tokens=False``). Ids in
        ``skip_ids`` are left out."""
        sub_texts, current = [], []
        for i in ids:
            if i in skip_ids:
                continue
            if i in self.added_names:
                tok = self.added_names[i]
                if tok in alone:
                    if current:
                        s = b"".join(current).decode("utf-8", errors=errors)
                        if s:
                            sub_texts.append(s)
                        current = []
                    sub_texts.append(tok)
                    continue
                current.append(token_bytes(tok))
            elif i in self.id_bytes:
                current.append(self.id_bytes[i])
            else:
                raise ValueError(f"token id {i} is not in the vocabulary (ids 0..{len(self) - 1})")
        if current:
            sub_texts.append(b"".join(current).decode("utf-8", errors=errors))
        return (" " if spaces_between_special_tokens else "").join(sub_texts)
