"""CLIP's byte-level BPE tokenizer, without importing torch or open_clip.

CLIP (Radford et al., 2021, section 2.4) reads text with a lower-cased byte pair encoding
of 49,152 symbols, wrapped in start- and end-of-text tokens and padded to 77. open_clip's
`SimpleTokenizer` does exactly that but returns a torch tensor, so importing it costs a
process the whole of torch (about a second) before a text query can start. This module
reads the same merge table (the `bpe_simple_vocab_16e6.txt.gz` that open_clip ships) and
gives the same ids as numpy; `tests/test_clip_real.py` checks it id for id against
open_clip's own tokenizer.

The steps, as the paper and the merge file define them:
1. clean: repair mojibake (ftfy), unescape HTML twice, collapse whitespace, lower-case;
2. split into pieces: a contraction, a run of letters, one digit, or a run of other
   non-space characters;
3. map each piece's UTF-8 bytes to printable characters (a fixed byte-to-character table),
   mark its last character as a word end (`</w>`), and merge adjacent symbols, lowest
   merge rank first, until no ranked pair is left;
4. look each symbol up in the vocabulary: 256 byte characters, the same with `</w>`, one
   symbol per merge, then the two special tokens.
"""

from __future__ import annotations

import functools
import gzip
import html
from pathlib import Path

import numpy as np
import numpy.typing as npt

#: merges used by CLIP: the vocabulary is 49,152 symbols = 512 byte symbols + merges + 2
VOCAB_SIZE = 49_152
_PIECES = (
    r"""<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
)


@functools.cache
def byte_characters() -> tuple[str, ...]:
    """The printable character standing for each byte value 0..255: printable Latin-1
    bytes stand for themselves, the others for code points from 256 up, in byte order."""
    keep = [*range(33, 127), *range(161, 173), *range(174, 256)]
    kept = set(keep)
    table: dict[int, int] = {b: b for b in keep}
    extra = 256
    for b in range(256):
        if b not in kept:
            table[b] = extra
            extra += 1
    return tuple(chr(table[b]) for b in range(256))


class ClipBPE:
    """Text -> CLIP token ids (numpy int64), as open_clip's default tokenizer gives them."""

    def __init__(self, merges_file: Path, context_length: int = 77) -> None:
        import regex

        lines = gzip.open(merges_file).read().decode("utf-8").split("\n")
        merges = [tuple(line.split()) for line in lines[1 : VOCAB_SIZE - 256 - 2 + 1]]
        # the vocabulary lists the printable bytes' characters first (each its own code
        # point, below 256), then the others' stand-ins (256 up): code point order
        chars = sorted(byte_characters(), key=ord)
        symbols = chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges]
        symbols += ["<start_of_text>", "<end_of_text>"]
        self.ids = {s: i for i, s in enumerate(symbols)}
        self._merges = merges
        self.ranks = {(m[0], m[1]): i for i, m in enumerate(merges)}
        self.sot = self.ids["<start_of_text>"]
        self.eot = self.ids["<end_of_text>"]
        self.context_length = context_length
        self._pieces = regex.compile(_PIECES, regex.IGNORECASE)
        self._cache: dict[str, list[int]] = {}

    @staticmethod
    def clean(text: str) -> str:
        import ftfy

        text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
        return " ".join(text.split()).lower()

    def _merge(self, piece: str) -> list[int]:
        """One piece's symbol ids after byte-pair merging."""
        hit = self._cache.get(piece)
        if hit is not None:
            return hit
        if piece in ("<start_of_text>", "<end_of_text>"):
            return [self.ids[piece]]
        chars = byte_characters()
        word = [chars[b] for b in piece.encode("utf-8")]
        word[-1] += "</w>"
        while len(word) > 1:
            ranked = [
                (self.ranks[(a, b)], i)
                for i, (a, b) in enumerate(zip(word, word[1:], strict=False))
                if (a, b) in self.ranks
            ]
            if not ranked:
                break
            first, second = self._merges[min(ranked)[0]]
            merged: list[str] = []
            i = 0
            while i < len(word):
                if i + 1 < len(word) and word[i] == first and word[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        ids = [self.ids[s] for s in word]
        self._cache[piece] = ids
        return ids

    def encode(self, text: str) -> list[int]:
        out: list[int] = []
        for piece in self._pieces.findall(self.clean(text)):
            out += self._merge(piece)
        return out

    def __call__(self, texts: list[str]) -> npt.NDArray[np.int64]:
        """(N, context_length) ids: start, the text's symbols, end, zero padding; a text
        too long is cut and still ends with the end-of-text token."""
        n = self.context_length
        out = np.zeros((len(texts), n), dtype=np.int64)
        for row, text in enumerate(texts):
            ids = [self.sot, *self.encode(text), self.eot]
            if len(ids) > n:
                ids = ids[:n]
                ids[-1] = self.eot
            out[row, : len(ids)] = ids
        return out
