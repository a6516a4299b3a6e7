"""`devise words`: the vocabulary's word vectors become points of the `words` collection."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from model.words import WordVectors, alphabetic_vocabulary, unit
from qdrant.schema import WORDS
from qdrant.store import Store

BATCH = 4096


@dataclass
class VocabularySummary:
    words: int
    source: str
    dim: int
    seconds: float
    replaced: bool


def load_vocabulary(
    store: Store, words: WordVectors, top: int | None = 100_000, progress: bool = True
) -> VocabularySummary:
    """Upsert the `top` most frequent alphabetic words (all of them when None). Idempotent:
    a word's point id is its frequency rank, so a rerun overwrites the same points."""
    t0 = time.perf_counter()
    meta = store.get_meta()
    old = meta.get("words") or {}
    replaced = bool(old) and (old.get("source") != words.source or old.get("dim") != words.dim)
    if replaced:
        store.drop_words()  # another word space: its points would be meaningless now
    store.ensure_collections({}, words.dim)
    chosen = list(alphabetic_vocabulary(words, top))
    with tqdm(total=len(chosen), desc="words", unit="word", disable=not progress) as bar:
        for start in range(0, len(chosen), BATCH):
            part = chosen[start : start + BATCH]
            ranks = [r for r, _ in part]
            keys = [w for _, w in part]
            vecs = unit(np.asarray(words.kv[keys], dtype=np.float32))
            store.upsert_words(ranks, keys, vecs, words.source)
            bar.update(len(part))
    if not replaced and old.get("count", 0) > len(chosen):
        # A smaller --top than before: drop nothing, the extra rarer words stay searchable.
        count = store.count(WORDS)
    else:
        count = len(chosen)
    meta = store.get_meta()
    meta["words"] = {"source": words.source, "dim": words.dim, "count": count}
    store.set_meta(meta)
    store.flush()
    return VocabularySummary(count, words.source, words.dim, time.perf_counter() - t0, replaced)
