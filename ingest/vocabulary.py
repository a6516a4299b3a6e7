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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
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
    #: what an ingest summary has, so the app's job reports a vocabulary load as it does one
    failed: dict[str, int] = field(default_factory=dict)

    def line(self) -> str:
        """What `devise words` prints."""
        return (
            f"{self.words} words and {self.concepts} labels and hypernyms from {self.source} "
            f"({self.dim} d) in {self.seconds:.1f}s"
            + (" (replaced the previous vocabulary)" if self.replaced else "")
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "words": self.words, "concepts": self.concepts, "source": self.source,
            "dim": self.dim, "seconds": round(self.seconds, 3), "replaced": self.replaced,
        }  # fmt: skip


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


def reload_vocabulary(
    store: Store, source: str | None, top: int | None, progress: bool = False
) -> VocabularySummary:
    """`devise words`, wherever it runs (the CLI's process, or the app that holds the index):
    the `top` most frequent words of `source` (all when None), by default the word space the
    index's DeViSE model was trained in, with the labels and hypernyms of the index's models."""
    from model.vocab.words import load_words

    models = store.get_meta().get("models") or {}
    if source is None:
        source = (models.get("devise") or {}).get("words") or "glove-6b-50d"
    return load_vocabulary(
        store, load_words(source), top, progress=progress, concepts=concepts_for(models)
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


#: How many of the most frequent words (stop words left out) CLIP's tag vocabulary takes
#: beside every label and hypernym: `$DEVISE_CLIP_TAG_WORDS` overrides it.
CLIP_TAG_WORDS = 2_000
#: The words collection's named vector for CLIP's prompted text vectors of its entries.
CLIP_WORD_VECTOR = "clip"


def clip_tag_words() -> int:
    import os

    raw = os.environ.get("DEVISE_CLIP_TAG_WORDS", "").strip()
    return int(raw) if raw.isdigit() else CLIP_TAG_WORDS


@dataclass
class ClipVocabularySummary:
    entries: int
    seconds: float
    model: str
    #: read from the cache a previous index of the same model wrote (`clip_words_cache`)
    cached: bool = False


def clip_tag_entries(store: Store, top: int) -> list[tuple[int | str, str, str]]:
    """(point id, name, kind) of every label and hypernym in the vocabulary and of its `top`
    most frequent words that are not stop words."""
    from gensim.parsing.preprocessing import STOPWORDS

    from qdrant.filters import SearchFilter
    from qdrant.schema import word_point_id

    out: list[tuple[int | str, str, str]] = []
    for rec in store.scroll_words(SearchFilter(kinds=("label", "hypernym"))):
        word, kind = str(rec.payload.get("word")), str(rec.payload.get("kind"))
        out.append((word_point_id(CONCEPT_RANK, word, kind), word, kind))
    words: list[tuple[int, str]] = []
    # stop words and non-words are skipped, so read past `top` ranks; frequent ranks are dense
    for rec in store.scroll_words(SearchFilter(max_rank=3 * top + 500)):
        word = str(rec.payload.get("word"))
        if word.isalpha() and word not in STOPWORDS and len(word) > 1:
            words.append((int(rec.payload.get("rank", 0)), word))
    words.sort()
    out += [(word_point_id(rank, word, "word"), word, "word") for rank, word in words[:top]]
    return out


def clip_words_cache(clip: Any, names: Sequence[str]) -> Path | None:
    """Where CLIP's vectors of these tag words are kept for every index on this machine
    (`~/.cache/devise-search/clip-words`, or `$DEVISE_CACHE`): keyed by the weights'
    identity, the prompts and the words. None for weights known by no content hash (a
    test's random tower): their vectors are never shared."""
    import hashlib
    import json

    from model.paths import default_cache_dir

    if ":sha256:" not in str(clip.content_id):
        return None
    key = json.dumps([clip.content_id, list(clip.templates), list(names)]).encode()
    return default_cache_dir() / "clip-words" / f"{hashlib.sha256(key).hexdigest()[:32]}.npy"


def _read_cached(path: Path | None, shape: tuple[int, int]) -> np.ndarray | None:
    """The cached vectors at `path` when they are whole and of `shape`; None otherwise."""
    if path is None or not path.is_file():
        return None
    try:
        vecs = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        log.warning("ignoring an unreadable CLIP word cache %s: %s", path, e)
        return None
    if vecs.shape != shape or vecs.dtype != np.float32 or not np.isfinite(vecs).all():
        return None
    return vecs


def _keep(path: Path | None, vecs: np.ndarray) -> None:
    """Write `vecs` to the cache (aside, then renamed); a cache that cannot be written only
    costs the next index the embedding."""
    if path is None:
        return
    import os

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            np.save(f, np.asarray(vecs, np.float32), allow_pickle=False)
        os.replace(tmp, path)
    except OSError as e:
        log.warning("CLIP's tag word vectors not cached in %s: %s", path.parent, e)
    finally:
        tmp.unlink(missing_ok=True)


def embed_clip_vocabulary(
    store: Store,
    clip: Any,
    progress: bool = True,
    top: int | None = None,
    announce: Callable[[], None] | None = None,
) -> ClipVocabularySummary | None:
    """CLIP's prompted text vectors of the tag vocabulary (labels, hypernyms and the most
    frequent words), stored once as the words' named vector `clip` and recorded with the
    model's identity; None when they are already there for this model. They are read from
    the machine's cache where another index of the same model put them (`clip_words_cache`),
    else embedded (`announce` is called first: a wait of seconds to a minute) and cached."""
    meta = store.get_meta()
    words_meta = meta.get("words") or {}
    done = words_meta.get("clip") or {}
    if done.get("id") == clip.content_id and done.get("entries"):
        return None
    t0 = time.perf_counter()
    entries = clip_tag_entries(store, clip_tag_words() if top is None else top)
    if not entries:
        return None
    store.ensure_word_vector(CLIP_WORD_VECTOR, clip.dim)
    names = [name for _, name, _ in entries]
    cache = clip_words_cache(clip, names)
    vecs = _read_cached(cache, (len(names), clip.dim))
    cached = vecs is not None
    if vecs is None:
        if announce is not None:
            announce()
        with tqdm(
            total=len(names) * len(clip.templates),
            desc="clip tag vocabulary",
            unit="prompt",
            disable=not progress,
        ) as bar:
            vecs = clip.embed_texts(names, progress=bar)  # batched by prompt length inside
        _keep(cache, vecs)
    store.update_word_vectors([pid for pid, _, _ in entries], CLIP_WORD_VECTOR, vecs)
    meta = store.get_meta()
    words_meta = dict(meta.get("words") or {})
    seconds = time.perf_counter() - t0
    words_meta["clip"] = {"id": clip.content_id, "entries": len(entries), "seconds": seconds}
    meta["words"] = words_meta
    store.set_meta(meta)
    store.flush()
    return ClipVocabularySummary(len(entries), seconds, clip.content_id, cached)
