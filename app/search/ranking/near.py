"""The honest fallback of a concept no photo carries (conse): photos of something near it.

When no indexed photo holds mass under a word's concept (`horse`: the classifier calls
darknet's horses an ox, a water buffalo, a camel), the photos that hold mass under a *near*
concept answer it: the widest WordNet hypernym above the concept that spans at most
`NEAR_CLASSES` ImageNet classes (horse -> ungulate, 17 classes; lion -> big cat). Each is
scored by that near mass times the cosine of its conse vector to the word, so a photo of a
lion the classifier is sure of never comes above a weak photo of horses: the lion has no
mass near `horse` at all. The photos with no near evidence follow, marked weak (ranked as
before: cosine weighed by the classifier's confidence), so a face can show where evidence
ends.
"""

from __future__ import annotations

import functools
from dataclasses import replace

import numpy as np
import numpy.typing as npt

from app.search.answers import ImageResult
from app.search.ranking.cosine import conse_images
from qdrant.filters import SearchFilter
from qdrant.store import Store

Float32Array = npt.NDArray[np.float32]

#: a near concept spans at most this many ImageNet classes: ungulate (17) and big cat (6)
#: are near; mammal (218) is not. Chosen on darknet's and scikit-image's photos: at 40 the
#: horses are under ungulate, the eagle is not near `horse`
NEAR_CLASSES = 40
#: the photos read for near evidence: the nearest by cosine (the near concept is no
#: keyword in the payload)
NEAR_CANDIDATES = 500


@functools.lru_cache(maxsize=1)
def _classes_under() -> dict[str, frozenset[int]]:
    """WordNet node (wnid) -> the ImageNet-1k classes under it (itself included)."""
    from model.vocab.hierarchy import _hierarchy_data

    under: dict[str, set[int]] = {}
    for i, cls in enumerate(_hierarchy_data()["classes"]):
        for node in (cls["wnid"], *cls["ancestors"]):
            under.setdefault(node, set()).add(i)
    return {k: frozenset(v) for k, v in under.items()}


@functools.lru_cache(maxsize=256)
def near_concept(key: str) -> tuple[str, npt.NDArray[np.float32]]:
    """(the near node's name, a (1000,) 0/1 mask of its classes) for concept `key` (a wnid):
    the widest hypernym of it spanning at most NEAR_CLASSES classes, else the concept."""
    from model.vocab.hierarchy import _hierarchy_data, _nodes

    under = _classes_under()
    classes = _hierarchy_data()["classes"]
    members = under.get(key, frozenset())
    mask = np.zeros(len(classes), np.float32)
    if not members:
        return key, mask
    cls = classes[min(members)]
    chain = [cls["wnid"], *cls["ancestors"]]
    best = key
    for node in chain[chain.index(key) :] if key in chain else [key]:
        if len(under[node]) > NEAR_CLASSES:
            break
        best = node
    mask[sorted(under[best])] = 1.0
    return str(_nodes().get(best, {}).get("name", best)), mask


def near_images(
    store: Store, key: str, name: str, vector: Float32Array, k: int, flt: SearchFilter
) -> tuple[list[ImageResult], list[str]]:
    """Images for concept `key` (shown as `name`) that no photo carries: those with mass
    under its near concept first, by that mass times their cosine to the word; then the
    rest, marked weak. The notes say which."""
    from model.embedders.conse import top_probs
    from model.vocab.hierarchy import MIN_MASS

    near_name, mask = near_concept(key)
    plain = replace(flt, min_score=None)
    hits = store.search_images("conse", vector, max(k, NEAR_CANDIDATES), plain)
    scored = []
    for h in hits:
        mass = float(top_probs(h.payload.get("conse_top") or []) @ mask)
        if mass >= MIN_MASS:
            scored.append((mass * max(float(h.score), 0.0), h))
    scored.sort(key=lambda t: -t[0])
    floor = flt.min_score
    strong = [ImageResult.of(h, s) for s, h in scored if floor is None or s >= floor][:k]
    seen = {r.path for r in strong}
    weak = [
        replace(r, weak=True)
        for r in conse_images(store, vector, k + len(strong), flt, None)
        if r.path not in seen
    ]
    if strong:
        what = f"something near it ({near_name})" if near_name != name else "a trace of it"
        note = f"no photo shows '{name}'; {len(strong)} with {what} first, weaker matches after"
    else:
        note = f"no photo shows '{name}' or anything near it: weaker matches only"
    return (strong + weak)[:k], [note]
