"""`devise words`: the vocabulary's word vectors become points of the `words` collection.

The vocabulary has three kinds of entries (payload `kind`):
- `word`: the most frequent single words, by rank;
- `label`: every class label a model in the index knows, as a whole phrase, whatever its
  frequency (ImageNet's 1000 for conse, the checkpoint's for devise);
- `hypernym`: those labels' WordNet hypernyms that a person uses as a tag (`dog`, `drink`).
A phrase's vector is the unit mean of its words' unit vectors, as for labels in training.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from model.vocab.hierarchy import ConceptSet
from model.vocab.words import WordVectors, alphabetic_vocabulary, unit
from qdrant.schema import CONCEPT_RANK, WORDS
from qdrant.store import Store

BATCH = 4096
log = logging.getLogger(__name__)


@dataclass
class VocabularySummary:
    words: int
    source: str
    dim: int
    seconds: float
    replaced: bool
    concepts: int = 0


def load_vocabulary(
    store: Store,
    words: WordVectors,
    top: int | None = 100_000,
    progress: bool = True,
    concepts: Sequence[ConceptSet] = (),
) -> VocabularySummary:
    """Upsert the `top` most frequent alphabetic words (all of them when None), then the
    labels and hypernyms of `concepts`. Idempotent: a word's point id is its frequency rank
    and a concept's is derived from its name, so a rerun overwrites the same points."""
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
    n_concepts = add_concepts(store, words, concepts)
    if not replaced and old.get("count", 0) > len(chosen):
        # A smaller --top than before: drop nothing, the extra rarer words stay searchable.
        count = store.count(WORDS)
    else:
        count = len(chosen)
    meta = store.get_meta()
    meta["words"] = {
        "source": words.source,
        "dim": words.dim,
        "count": count,
        "concepts": max(n_concepts, int(old.get("concepts", 0)) if not replaced else 0),
        # concepts named as now: a name several synsets share is qualified (`crane (bird)`)
        "qualified": bool(n_concepts) or bool(old.get("qualified")),
    }
    store.set_meta(meta)
    store.flush()
    return VocabularySummary(
        count, words.source, words.dim, time.perf_counter() - t0, replaced, n_concepts
    )


def add_concepts(store: Store, words: WordVectors, concepts: Sequence[ConceptSet]) -> int:
    """Upsert every label and hypernym of `concepts` that has a vector in `words`."""
    names: list[str] = []
    kinds: list[str] = []
    vecs: list[np.ndarray] = []
    where: dict[str, int] = {}
    for cs in concepts:
        for c in cs.concepts:
            key = c.name.lower()
            if key in where:
                if c.kind == "label":  # a label of any model is a label
                    kinds[where[key]] = "label"
                continue
            vec = words.label_vector(c.phrase)  # `crane (bird)`: crane and bird
            if vec is None:
                continue
            where[key] = len(names)
            names.append(c.name)
            kinds.append(c.kind)
            vecs.append(vec)
    for start in range(0, len(names), BATCH):
        stop = start + BATCH
        store.upsert_words(
            [CONCEPT_RANK] * len(names[start:stop]),
            names[start:stop],
            np.stack(vecs[start:stop]).astype(np.float32),
            words.source,
            kinds[start:stop],
        )
    return len(names)


def concepts_for(models: dict[str, dict[str, Any]]) -> list[ConceptSet]:
    """The labels and hypernyms the index's models know, from the meta's `models` records:
    ImageNet-1k's for conse and clip, the checkpoint's labels for devise."""
    from model.vocab.hierarchy import imagenet_concepts, label_concepts

    out: list[ConceptSet] = []
    if "conse" in models or "clip" in models:
        out.append(imagenet_concepts())
    ckpt = (models.get("devise") or {}).get("checkpoint")
    if ckpt:
        try:
            from model.checkpoint import read_meta

            labels = [str(x) for x in read_meta(Path(ckpt)).get("labels") or []]
        except (OSError, ValueError) as e:
            log.warning("no devise labels in the vocabulary: cannot read %s (%s)", ckpt, e)
            labels = []
        if labels:
            out.append(label_concepts(labels))
    return out
