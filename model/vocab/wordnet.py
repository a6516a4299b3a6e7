"""A minimal reader of WordNet 3.0's noun files (`data.noun`, `index.noun`).

Only what the tag vocabulary needs: a synset's lemma names and its hypernyms. In WordNet's
database format a noun synset's offset (the number in an ImageNet wnid, `n02106662`) is the
byte offset of its line in `data.noun`, so one `seek` reads it. Lines are

    offset lex_filenum ss_type w_cnt word lex_id [word lex_id...] p_cnt [ptr...] | gloss

with `w_cnt` in hex and each pointer `symbol offset pos source/target`. `@` is a hypernym and
`@i` an instance hypernym. Nothing here is needed at run time for the ImageNet classes: their
chains ship in `imagenet_hierarchy.json` (see `model/vocab/derive.py`). This reader serves a
user's own labels where WordNet is installed (Debian's `wordnet-base`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_WORDNET_DIR = Path("/usr/share/wordnet")


@dataclass(frozen=True)
class Synset:
    offset: int
    lemmas: tuple[str, ...]
    hypernyms: tuple[int, ...]

    @property
    def wnid(self) -> str:
        return f"n{self.offset:08d}"

    @property
    def name(self) -> str:
        """The first lemma, as a person writes it: `German_shepherd` -> `German shepherd`."""
        return self.lemmas[0]


def wordnet_dir() -> Path | None:
    """WordNet's folder ($DEVISE_WORDNET_DIR, else Debian's), or None when not installed."""
    env = os.environ.get("DEVISE_WORDNET_DIR")
    root = Path(env) if env else DEFAULT_WORDNET_DIR
    return root if (root / "data.noun").is_file() and (root / "index.noun").is_file() else None


def _lemma(raw: str) -> str:
    # adjective markers such as "(a)" only occur in data.adj, but strip them defensively
    return raw.split("(")[0].replace("_", " ")


def parse_line(line: str) -> Synset:
    head = line.split(" | ", 1)[0].split()
    offset = int(head[0])
    w_cnt = int(head[3], 16)
    lemmas = tuple(_lemma(head[4 + 2 * i]) for i in range(w_cnt))
    pos = 4 + 2 * w_cnt
    p_cnt = int(head[pos])
    hypers = []
    for i in range(p_cnt):
        symbol, target, target_pos = head[pos + 1 + 4 * i : pos + 4 + 4 * i]
        if symbol in ("@", "@i") and target_pos == "n":
            hypers.append(int(target))
    return Synset(offset, lemmas, tuple(hypers))


class WordNet:
    """Noun synsets read on demand from one WordNet folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._data = (root / "data.noun").open("rb")
        self._cache: dict[int, Synset] = {}
        self._index: dict[str, tuple[int, ...]] | None = None

    def close(self) -> None:
        self._data.close()

    def synset(self, offset: int) -> Synset:
        found = self._cache.get(offset)
        if found is None:
            self._data.seek(offset)
            found = parse_line(self._data.readline().decode("utf-8"))
            if found.offset != offset:
                raise ValueError(f"{self.root}/data.noun has no synset at offset {offset}")
            self._cache[offset] = found
        return found

    def senses(self, lemma: str) -> tuple[int, ...]:
        """The noun synset offsets of a lemma, most frequent sense first; () if unknown."""
        if self._index is None:
            index: dict[str, tuple[int, ...]] = {}
            with (self.root / "index.noun").open(encoding="utf-8") as f:
                for line in f:
                    if line.startswith(" "):
                        continue  # the licence header
                    parts = line.split()
                    synset_cnt = int(parts[2])
                    index[parts[0]] = tuple(int(x) for x in parts[-synset_cnt:])
            self._index = index
        return self._index.get(lemma.strip().lower().replace(" ", "_").replace("-", "_"), ())

    def ancestors(self, offset: int) -> list[int]:
        """Every hypernym above a synset (all paths), nearest first, each once."""
        seen: dict[int, None] = {}
        frontier = list(self.synset(offset).hypernyms)
        while frontier:
            nxt: list[int] = []
            for o in frontier:
                if o not in seen:
                    seen[o] = None
                    nxt.extend(self.synset(o).hypernyms)
            frontier = nxt
        return list(seen)

    def depth(self, offset: int) -> int:
        """Length of the shortest hypernym path up to a root (entity is 0)."""
        d, frontier = 0, [offset]
        while True:
            if any(not self.synset(o).hypernyms for o in frontier):
                return d
            frontier = [h for o in frontier for h in self.synset(o).hypernyms]
            d += 1
