"""Images by cosine to a query vector: plain nearest images, and conse's nearest images weighed
by the classifier's confidence; and a text's vector, the mean of its words' vectors as the
index's vocabulary holds them."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import numpy.typing as npt

from app.search.answers import ImageResult
from app.search.errors import BadQueryError
from qdrant.filters import SearchFilter
from qdrant.store import Hit, Store

Float32Array = npt.NDArray[np.float32]

# conse's nearest images are weighed by the classifier's confidence among this many nearest
# by cosine (at least 4 per result asked for)
CONSE_CANDIDATES = 100
TOKEN = re.compile(r"[A-Za-z]+(?:[-'][A-Za-z]+)*")


def nearest_images(
    store: Store,
    model: str,
    vector: Float32Array,
    k: int,
    flt: SearchFilter,
    exclude: str | None = None,
) -> list[ImageResult]:
    """The `k` images nearest `vector` in `model`'s space, less the one at path `exclude`."""
    if model == "conse":
        return conse_images(store, vector, k, flt, exclude)
    hits: list[Hit] = store.search_images(model, vector, k + (1 if exclude else 0), flt)
    out = [ImageResult.of(h) for h in hits if not (exclude and h.payload.get("path") == exclude)]
    return out[:k]


def conse_images(
    store: Store,
    vector: Float32Array,
    k: int,
    flt: SearchFilter,
    exclude: str | None,
    evidence: float | None = None,
) -> list[ImageResult]:
    """conse's nearest images, each cosine weighed by the classifier's confidence in
    the picture: its top-T probability mass (from `conse_top`). A picture the classifier
    cannot read (noise, a page of text, a screenshot) spreads its probability over
    unrelated classes, and the mean of their word vectors lies near every animal's (a
    hub): unweighed, noise came first for "similar to eagle" and for "a horse". The
    candidates are the nearest by cosine; the score floor applies to the weighed score.
    With `evidence` (a word's query), a picture whose cosine to it is below that is a weaker
    match: it follows every other, marked weak.
    """
    plain = replace(flt, min_score=None)
    pool = max(4 * k, CONSE_CANDIDATES) + (1 if exclude else 0)
    scored = []
    for h in store.search_images("conse", vector, pool, plain):
        if exclude and h.payload.get("path") == exclude:
            continue
        top = h.payload.get("conse_top")
        # a point from before conse_top was stored (embedded again on the next ingest)
        confidence = sum(float(p) for _, p in top) if top else 1.0
        scored.append((float(h.score) * confidence, h))
    scored.sort(key=lambda t: -t[0])
    floor = flt.min_score
    out = [ImageResult.of(h, s) for s, h in scored if floor is None or s >= floor]
    if evidence is not None:
        near = {str(h.payload.get("path")) for _, h in scored if float(h.score) >= evidence}
        out = [r for r in out if r.path in near] + [
            replace(r, weak=True) for r in out if r.path not in near
        ]
    return out[:k]


def phrase_vectors(
    store: Store, texts: Sequence[str]
) -> tuple[list[Float32Array | None], list[str]]:
    """Each text's unit mean word vector from the index (None when it has no known word),
    and the unknown words; one vocabulary lookup for all the texts."""
    token_lists = []
    for text in texts:
        tokens = [t.lower() for t in TOKEN.findall(text)]
        if not tokens:
            raise BadQueryError(f"no word in the query {text!r}: use letters, such as 'dog'")
        token_lists.append(tokens)
    every = {t for tokens in token_lists for t in tokens}
    parts = {p for t in every if "-" in t for p in t.split("-") if p}
    found = store.find_words(sorted(every | parts))
    out: list[Float32Array | None] = []
    unknown: list[str] = []
    for tokens in token_lists:
        # like a label: a hyphenated word whole if known, else its known parts
        tokens = [
            p for t in tokens for p in ([t] if t in found or "-" not in t else t.split("-")) if p
        ]
        unknown += [t for t in dict.fromkeys(tokens) if t not in found and t not in unknown]
        known = [found[t] for t in tokens if t in found]
        if not known:
            out.append(None)
            continue
        vecs = np.stack(known).astype(np.float32)
        vecs /= np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
        mean = vecs.mean(axis=0)
        out.append((mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32))
    return out, unknown
