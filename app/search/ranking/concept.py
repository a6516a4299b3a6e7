"""Images under an ImageNet concept (conse), ranked by the classifier's probability mass under
it: a query that names a concept (`dog`, `drink`) is answered by what the pictures show, not by
how near the word's vector lies."""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import numpy.typing as npt

from app.search.answers import ImageResult
from app.search.ranking.near import near_images
from app.search.regions import region_evidence
from qdrant.filters import SearchFilter
from qdrant.store import Hit, Store

log = logging.getLogger(__name__)
Float32Array = npt.NDArray[np.float32]

# a concept query reads this many images under the concept before ordering them by mass
CONCEPT_CANDIDATES = 500


def concept_query(store: Store, text: str) -> int | None:
    """The ImageNet concept (label or hypernym) a whole query names, when the index's
    conse points carry their concepts; else None (plain word-vector search)."""
    from model.vocab.hierarchy import imagenet_concepts

    found = imagenet_concepts().find(text)
    if found is None:
        return None
    first = next(iter(store.scroll_images(batch=1)), None)
    if first is None or "conse_top" not in first.payload:
        log.info("conse points carry no concepts (an older index): re-ingest to search by them")
        return None
    return found


def other_senses(text: str, concept: int) -> list[str]:
    """A note when the query's name is shared (`crane`: the bird and the machine): which
    sense answered, and how to ask for the others."""
    from model.vocab.hierarchy import imagenet_concepts

    cs = imagenet_concepts()
    others = [cs.concepts[i].name for i in cs.named(text) if i != concept]
    if not others:
        return []
    ask = " or ".join(f"'{name}'" for name in others)
    return [f"{text!r} read as {cs.concepts[concept].name}; for the other sense search {ask}"]


def concept_images(
    store: Store, concept: int, vector: Float32Array, k: int, flt: SearchFilter
) -> tuple[list[ImageResult], list[str]]:
    """Images under a concept, best first by the probability mass of their classes under
    it (hedging): a German shepherd is a `dog` although GloVe puts the breed's name far
    from `dog`. The score is that mass, or a detector's score (a face: `person`) where
    higher; fewer than `k` under it are followed by the nearest other images, also scored
    by their (smaller) mass. With none under it, the photos of something near it answer
    (`near.near_images`), and the notes (the second item) say so."""
    from model.embedders.conse import top_probs
    from model.vocab.hierarchy import MIN_MASS, imagenet_concepts

    cs = imagenet_concepts()
    c = cs.concepts[concept]
    members = cs.members[concept]
    # points ingested before concepts were keyed by wnid hold lower-case names: an
    # unshared name still finds them (a shared one would mix its senses)
    keys = (c.key,) if c.plain.lower() in cs.senses else (c.key, c.plain.lower())
    plain = replace(flt, min_score=None)  # the floor applies to the mass, not the cosine
    under = store.search_images(
        "conse", vector, max(k, CONCEPT_CANDIDATES), replace(plain, concepts=keys)
    )
    seen = {str(h.id) for h in under}
    if len(under) < k:
        rest = store.search_images("conse", vector, k + len(under), plain)
        under = under + [h for h in rest if str(h.id) not in seen]

    boxes: dict[str, list[list[float]]] = {}

    def mass(h: Hit) -> float:
        by_classes = float(top_probs(h.payload.get("conse_top") or []) @ members)
        detected = h.payload.get("detected") or {}
        whole = max(by_classes, float(detected.get(c.key, 0.0)))
        # a region holding it (weighing less than the whole photo): where it is, kept
        part, where = region_evidence(h.payload, members)
        if part > whole:
            boxes[str(h.id)] = where
            return part
        return whole

    scored = sorted(((mass(h), float(h.score), h) for h in under), key=lambda t: t[:2])
    # images with next to no mass under the concept are not answers; when none has any,
    # the plain word-vector search is the better guess, and the answer says so
    scored = [t for t in scored if t[0] >= MIN_MASS]
    if not scored:
        return near_images(store, c.key, c.name, vector, k, flt)
    out = [
        replace(ImageResult.of(h, m), boxes=boxes.get(str(h.id), []))
        for m, _, h in reversed(scored)
        if flt.min_score is None or m >= flt.min_score
    ]
    return out[:k], []
